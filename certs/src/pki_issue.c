/*
 * Certificate issuance on wolfSSL's certificate generation (wc_MakeCert_ex +
 * wc_SignCert_ex). We hand wolfSSL pre-encoded pieces (subject and issuer
 * Name, validity, subjectAltName) so the bytes are exactly what we intend and
 * the issuer Name matches the CA's subject byte for byte (RFC 5280 §7.1).
 */
#include "pki_wc.h"

#include <aegis/err.h>

#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <errno.h>
#include <string.h>
#include <time.h>

/* Backdating of not_before for clock skew between issuer and verifiers. */
#define SKEW_SECONDS (5 * 60)
/* Default lifetimes: a fleet CA outlives the leaves it signs by far; leaves
 * are renewed yearly (agents re-enroll, servers are re-issued). */
#define CA_LIFETIME_SECONDS (10LL * 365 * 86400)
#define LEAF_LIFETIME_SECONDS (365LL * 86400)
/* RFC 5280 §4.1.2.2: serials are positive and at most 20 octets; 16 random
 * bytes make collisions irrelevant. */
#define SERIAL_LEN 16
/* RFC 5280 Appendix A: ub-common-name is 64. */
#define CN_MAX 64
/* Room for a certificate body and signature besides the SAN extension. */
#define CERT_DER_BASE 2048

static const char *const role_ou[] = {
    [AEGIS_ROLE_CA] = "aegis-ca",       [AEGIS_ROLE_SERVER] = "aegis-server",
    [AEGIS_ROLE_AGENT] = "aegis-agent", [AEGIS_ROLE_OPERATOR] = "aegis-operator",
    [AEGIS_ROLE_SELF] = "aegis-self",
};

const char *aegis_cert_role_ou(enum aegis_cert_role role)
{
    if ((unsigned)role >= sizeof(role_ou) / sizeof(role_ou[0]))
        return NULL;
    return role_ou[role];
}

int aegis_cert_role_from_ou(const char *ou, enum aegis_cert_role *prole)
{
    unsigned i;

    if (!ou || !prole)
        return -EINVAL;
    for (i = 0; i < sizeof(role_ou) / sizeof(role_ou[0]); i++) {
        if (strcmp(ou, role_ou[i]) == 0) {
            *prole = (enum aegis_cert_role)i;
            return 0;
        }
    }
    return AEGIS_ERR_NOT_FOUND;
}

static int cn_ok(const char *cn)
{
    size_t n, i;

    if (!cn)
        return 0;
    n = strlen(cn);
    if (n == 0 || n > CN_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        /* No control characters: they end up in logs and shell output. */
        if ((unsigned char)cn[i] < 0x20 || cn[i] == 0x7f)
            return 0;
    }
    return 1;
}

/* Copies the contents of a DER Name (the RDN sequence inside its outer
 * SEQUENCE, which wolfSSL writes itself) into wolfSSL's raw-name slot.
 * wolfSSL measures the slot with strlen(), so a name containing a zero byte
 * cannot be passed this way; ours never do (short-form lengths, no empty
 * values). */
static int set_raw_name(byte *slot, size_t cap, const uint8_t *name, size_t len)
{
    struct der cur = {name, len};
    struct der_tlv t;

    if (aegis_pki_der_expect(&cur, DER_SEQUENCE, &t) != 0 || cur.len != 0)
        return AEGIS_ERR_MALFORMED;
    if (t.len == 0 || t.len >= cap || memchr(t.val, 0, t.len) != NULL)
        return AEGIS_ERR_UNSUPPORTED;
    memcpy(slot, t.val, t.len);
    slot[t.len] = 0;
    return 0;
}

static int set_time(byte *slot, int *pslot_len, int64_t t)
{
    uint8_t enc[17];
    size_t n;
    int rv = aegis_pki_time_encode(t, enc, &n);

    if (rv != 0)
        return rv;
    memcpy(slot, enc, n);
    *pslot_len = (int)n;
    return 0;
}

static int validate(const struct aegis_cert_spec *spec, int self_signed)
{
    if ((unsigned)spec->role > AEGIS_ROLE_SELF || !cn_ok(spec->common_name))
        return -EINVAL;
    if ((spec->n_dns && !spec->dns_names) || (spec->n_ips && !spec->ips))
        return -EINVAL;
    if (spec->role == AEGIS_ROLE_SERVER && spec->n_dns + spec->n_ips == 0)
        return -EINVAL;
    /* A CA and an enrollment bootstrap certificate are self-signed; the
     * other roles are issued by the fleet CA. */
    if (self_signed != (spec->role == AEGIS_ROLE_CA || spec->role == AEGIS_ROLE_SELF))
        return -EINVAL;
    return 0;
}

/* Fills the validity window of c from spec (see aegis_cert_spec). */
static int set_validity(Cert *c, const struct aegis_cert_spec *spec)
{
    int64_t nb = spec->not_before, na = spec->not_after;
    int rv;

    if (nb == 0)
        nb = (int64_t)time(NULL) - SKEW_SECONDS;
    if (na == 0) {
        int64_t life = spec->role == AEGIS_ROLE_CA ? CA_LIFETIME_SECONDS : LEAF_LIFETIME_SECONDS;
        na = nb > AEGIS_PKI_TIME_MAX - life ? AEGIS_PKI_TIME_MAX : nb + life;
    }
    if (na <= nb)
        return -EINVAL;
    if ((rv = set_time(c->beforeDate, &c->beforeDateSz, nb)) != 0 ||
        (rv = set_time(c->afterDate, &c->afterDateSz, na)) != 0)
        return rv;
    return 0;
}

static void set_usage(Cert *c, enum aegis_cert_role role)
{
    /* RFC 5280 §4.2.1.3, §4.2.1.9, §4.2.1.12. */
    switch (role) {
    case AEGIS_ROLE_CA:
        c->isCA = 1;
        /* pathLenConstraint 0: the fleet CA signs end-entity certificates
         * only, so a leaked leaf key can never act as an intermediate. */
        c->pathLen = 0;
        c->pathLenSet = 1;
        c->keyUsage = KEYUSE_KEY_CERT_SIGN | KEYUSE_CRL_SIGN;
        break;
    case AEGIS_ROLE_SERVER:
        c->basicConstSet = 1; /* CA:FALSE stated explicitly */
        c->keyUsage = KEYUSE_DIGITAL_SIG;
        c->extKeyUsage = EXTKEYUSE_SERVER_AUTH;
        break;
    case AEGIS_ROLE_AGENT:
    case AEGIS_ROLE_OPERATOR:
    case AEGIS_ROLE_SELF:
        c->basicConstSet = 1;
        c->keyUsage = KEYUSE_DIGITAL_SIG;
        c->extKeyUsage = EXTKEYUSE_CLIENT_AUTH;
        break;
    }
}

int aegis_cert_issue(const struct aegis_mem *mem, const struct aegis_cert_spec *spec,
                     const uint8_t *subject_spki_der, size_t spki_len,
                     const struct aegis_key *issuer_key, const char *issuer_cert_pem, char **ppem,
                     size_t *plen)
{
    struct aegis_key *ik = (struct aegis_key *)issuer_key; /* wolfCrypt is not const */
    struct pki_spki subj, iss;
    struct pki_pub pub;
    struct pki_cert ca;
    uint8_t *ca_der = NULL, *issuer_spki = NULL, *der = NULL;
    size_t ca_der_len = 0, issuer_spki_len = 0, der_cap;
    uint8_t name[256], keyid[AEGIS_PKI_KEYID_LEN];
    struct dbuf nb = {name, sizeof(name), 0, 0};
    Cert *c = NULL;
    WC_RNG rng;
    int rv, ret, have_pub = 0, have_rng = 0, self_signed = issuer_cert_pem == NULL;

    memset(&ca, 0, sizeof(ca));
    if (!spec || !subject_spki_der || !issuer_key || !ppem || !plen)
        return -EINVAL;
    if ((rv = validate(spec, self_signed)) != 0)
        return rv;
    if ((rv = aegis_pki_spki_parse(subject_spki_der, spki_len, &subj)) != 0)
        return rv;
    if ((rv = aegis_key_spki_der(issuer_key, &issuer_spki, &issuer_spki_len)) != 0)
        return rv;
    /* issuer_spki is allocated by the key's allocator. */
    if ((rv = aegis_pki_spki_parse(issuer_spki, issuer_spki_len, &iss)) != 0)
        goto out;

    if (!(c = aegis_calloc(mem, 1, sizeof(*c)))) {
        rv = -ENOMEM;
        goto out;
    }
    if ((ret = wc_InitCert_ex(c, NULL, INVALID_DEVID)) != 0) {
        rv = aegis_pki_wc_err(ret);
        goto out;
    }

    if (self_signed) {
        if (!aegis_pki_bytes_eq(subject_spki_der, spki_len, issuer_spki, issuer_spki_len)) {
            rv = -EINVAL;
            goto out;
        }
    } else {
        struct pki_spki ca_spki;
        rv = aegis_pki_pem_decode(mem, issuer_cert_pem, strlen(issuer_cert_pem), "CERTIFICATE",
                                  NULL, &ca_der, &ca_der_len);
        if (rv != 0) {
            rv = rv == -ENOMEM ? rv : AEGIS_ERR_MALFORMED;
            goto out;
        }
        if ((rv = aegis_pki_cert_parse(ca_der, ca_der_len, &ca)) != 0)
            goto out;
        /* The issuer certificate must be a CA and belong to issuer_key. */
        if (!ca.is_ca || aegis_pki_spki_parse(ca.spki, ca.spki_len, &ca_spki) != 0 ||
            !aegis_pki_bytes_eq(ca.spki, ca.spki_len, issuer_spki, issuer_spki_len)) {
            rv = AEGIS_ERR_CERT;
            goto out;
        }
        if ((rv = set_raw_name(c->issRaw, sizeof(c->issRaw), ca.subject, ca.subject_len)) != 0)
            goto out;
    }

    if ((rv = aegis_pki_name_encode(role_ou[spec->role], spec->common_name, &nb)) != 0)
        goto out;
    if ((rv = set_raw_name(c->sbjRaw, sizeof(c->sbjRaw), nb.p, nb.len)) != 0)
        goto out;
    if (self_signed && (rv = set_raw_name(c->issRaw, sizeof(c->issRaw), nb.p, nb.len)) != 0)
        goto out;
    if ((rv = set_validity(c, spec)) != 0)
        goto out;
    if (spec->n_dns + spec->n_ips > 0) {
        struct dbuf sb = {c->altNames, sizeof(c->altNames), 0, 0};
        if ((rv = aegis_pki_san_encode(spec, &sb)) != 0)
            goto out;
        c->altNamesSz = (int)sb.len;
    }
    set_usage(c, spec->role);

    /* Key identifiers (RFC 5280 §4.2.1.1-2): the AKID repeats the issuer's
     * SKID as written in its certificate, so path building matches even for
     * a CA we did not make. */
    if ((rv = aegis_pki_keyid(&subj, keyid)) != 0)
        goto out;
    memcpy(c->skid, keyid, sizeof(keyid));
    c->skidSz = (int)sizeof(keyid);
    if (!self_signed) {
        if (ca.skid && ca.skid_len > 0 && ca.skid_len <= sizeof(c->akid)) {
            memcpy(c->akid, ca.skid, ca.skid_len);
            c->akidSz = (int)ca.skid_len;
        } else {
            if ((rv = aegis_pki_keyid(&iss, keyid)) != 0)
                goto out;
            memcpy(c->akid, keyid, sizeof(keyid));
            c->akidSz = (int)sizeof(keyid);
        }
    }

    /* Positive, minimal DER INTEGER: top bit clear, first octet non-zero. */
    if ((rv = aegis_pki_random(c->serial, SERIAL_LEN)) != 0)
        goto out;
    c->serial[0] = (byte)((c->serial[0] & 0x7f) | 0x01);
    c->serialSz = SERIAL_LEN;
    c->sigType = iss.algo == AEGIS_KEY_ED25519 ? CTC_ED25519 : CTC_SHA256wECDSA;
    c->selfSigned = self_signed;

    if ((rv = aegis_pki_pub_load(&subj, &pub)) != 0)
        goto out;
    have_pub = 1;
    if ((rv = aegis_pki_rng_init(&rng)) != 0)
        goto out;
    have_rng = 1;
    der_cap = CERT_DER_BASE + (size_t)c->altNamesSz;
    if (!(der = aegis_malloc(mem, der_cap))) {
        rv = -ENOMEM;
        goto out;
    }
    ret = wc_MakeCert_ex(
        c, der, (word32)der_cap, subj.algo == AEGIS_KEY_ED25519 ? ED25519_TYPE : ECC_TYPE,
        subj.algo == AEGIS_KEY_ED25519 ? (void *)&pub.u.ed : (void *)&pub.u.ec, &rng);
    if (ret < 0) {
        rv = aegis_pki_wc_err(ret) == -ENOMEM ? -ENOMEM : AEGIS_ERR_CRYPTO;
        goto out;
    }
    ret =
        wc_SignCert_ex(c->bodySz, c->sigType, der, (word32)der_cap,
                       iss.algo == AEGIS_KEY_ED25519 ? ED25519_TYPE : ECC_TYPE,
                       iss.algo == AEGIS_KEY_ED25519 ? (void *)&ik->u.ed : (void *)&ik->u.ec, &rng);
    if (ret < 0) {
        rv = aegis_pki_wc_err(ret) == -ENOMEM ? -ENOMEM : AEGIS_ERR_CRYPTO;
        goto out;
    }
    rv = aegis_pki_pem_encode(mem, "CERTIFICATE", der, (size_t)ret, ppem, plen);
out:
    aegis_free(mem, der);
    if (have_rng)
        wc_FreeRng(&rng);
    if (have_pub)
        aegis_pki_pub_free(&pub);
    aegis_free(mem, c);
    aegis_free(mem, ca_der);
    aegis_free(issuer_key->mem, issuer_spki);
    return rv;
}
