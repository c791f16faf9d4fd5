/*
 * Reading certificates: facts for aegis-certs show and the control server,
 * SPKI pins (curl's "sha256//base64" form, DESIGN §4) and chain checks
 * against the fleet CA. Parsing is pki_der.c; wolfCrypt does the hashing and
 * signature checks.
 */
#include "pki_wc.h"

#include <aegis/err.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PIN_PREFIX "sha256//"
#define PIN_PREFIX_LEN 8
#define PIN_B64_LEN 44

int aegis_pin_from_spki(const uint8_t *spki_der, size_t len, char out[AEGIS_PIN_STRLEN])
{
    uint8_t h[AEGIS_SPKI_SHA256_LEN];
    int rv;

    if (!spki_der || !out)
        return -EINVAL;
    if ((rv = aegis_sha256_hash(spki_der, len, h)) != 0)
        return rv;
    memcpy(out, PIN_PREFIX, PIN_PREFIX_LEN);
    aegis_pki_b64_encode(h, sizeof(h), out + PIN_PREFIX_LEN);
    return 0;
}

int aegis_pin_parse(const char *pin, uint8_t out[AEGIS_SPKI_SHA256_LEN])
{
    uint8_t h[AEGIS_SPKI_SHA256_LEN + 3];
    size_t i, n;

    if (!pin || !out)
        return -EINVAL;
    if (strncmp(pin, PIN_PREFIX, PIN_PREFIX_LEN) != 0 ||
        strlen(pin) != PIN_PREFIX_LEN + PIN_B64_LEN)
        return AEGIS_ERR_MALFORMED;
    /* 32 bytes encode as 43 characters and one '='; nothing else (no
     * whitespace, which the general decoder would skip). */
    for (i = PIN_PREFIX_LEN; i < PIN_PREFIX_LEN + PIN_B64_LEN - 1; i++) {
        char ch = pin[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return AEGIS_ERR_MALFORMED;
    }
    if (pin[PIN_PREFIX_LEN + PIN_B64_LEN - 1] != '=')
        return AEGIS_ERR_MALFORMED;
    if (aegis_pki_b64_decode(pin + PIN_PREFIX_LEN, PIN_B64_LEN, h, sizeof(h), &n) != 0 ||
        n != AEGIS_SPKI_SHA256_LEN)
        return AEGIS_ERR_MALFORMED;
    memcpy(out, h, AEGIS_SPKI_SHA256_LEN);
    return 0;
}

/* Decodes the first CERTIFICATE block of pem with the default allocator
 * (these entry points take no allocator; the copy is freed before return). */
static int cert_pem_der(const struct aegis_mem *mem, const char *pem, size_t len, uint8_t **pder,
                        size_t *plen)
{
    int rv;

    if (!pem)
        return -EINVAL;
    rv = aegis_pki_pem_decode(mem, pem, len, "CERTIFICATE", NULL, pder, plen);
    if (rv == AEGIS_ERR_NOT_FOUND || rv == AEGIS_ERR_TOO_LARGE)
        rv = AEGIS_ERR_MALFORMED;
    return rv;
}

int aegis_cert_info_der(const uint8_t *der, size_t len, struct aegis_cert_info *info)
{
    struct aegis_cert_info out;
    struct pki_cert c;
    struct pki_spki spki;
    int rv;

    if (!der || !info)
        return -EINVAL;
    if ((rv = aegis_pki_cert_parse(der, len, &c)) != 0)
        return rv;
    memset(&out, 0, sizeof(out));
    if ((rv = aegis_sha256_hash(c.spki, c.spki_len, out.spki_sha256)) != 0)
        return rv;
    memcpy(out.pin, PIN_PREFIX, PIN_PREFIX_LEN);
    aegis_pki_b64_encode(out.spki_sha256, sizeof(out.spki_sha256), out.pin + PIN_PREFIX_LEN);
    if ((rv = aegis_pki_name_attr(c.subject, c.subject_len, 3, out.subject_cn,
                                  sizeof(out.subject_cn))) != 0 ||
        (rv = aegis_pki_name_attr(c.subject, c.subject_len, 11, out.subject_ou,
                                  sizeof(out.subject_ou))) != 0 ||
        (rv = aegis_pki_name_attr(c.issuer, c.issuer_len, 3, out.issuer_cn,
                                  sizeof(out.issuer_cn))) != 0)
        return rv;
    out.is_ca = c.is_ca;
    out.not_before = c.not_before;
    out.not_after = c.not_after;
    /* Self-signed: same name on both sides and the certificate's own key
     * verifies its signature. An unsupported key type counts as not. */
    if (aegis_pki_bytes_eq(c.subject, c.subject_len, c.issuer, c.issuer_len) &&
        aegis_pki_spki_parse(c.spki, c.spki_len, &spki) == 0) {
        rv = aegis_pki_verify_raw(&spki, c.sig_oid, c.sig_oid_len, c.tbs, c.tbs_len, c.sig,
                                  c.sig_len);
        if (rv == -ENOMEM)
            return rv;
        out.self_signed = rv == 0;
    }
    *info = out;
    return 0;
}

int aegis_cert_info_pem(const char *pem, size_t len, struct aegis_cert_info *info)
{
    uint8_t *der;
    size_t der_len;
    int rv;

    if (!info)
        return -EINVAL;
    if ((rv = cert_pem_der(NULL, pem, len, &der, &der_len)) != 0)
        return rv;
    rv = aegis_cert_info_der(der, der_len, info);
    aegis_free(NULL, der);
    return rv;
}

int aegis_cert_spki_der(const struct aegis_mem *mem, const char *pem, size_t len, uint8_t **pder,
                        size_t *plen)
{
    struct pki_cert c;
    uint8_t *der, *out;
    size_t der_len;
    int rv;

    if (!pder || !plen)
        return -EINVAL;
    if ((rv = cert_pem_der(mem, pem, len, &der, &der_len)) != 0)
        return rv;
    if ((rv = aegis_pki_cert_parse(der, der_len, &c)) == 0) {
        if ((out = aegis_memdup(mem, c.spki, c.spki_len)) != NULL) {
            *pder = out;
            *plen = c.spki_len;
        } else {
            rv = -ENOMEM;
        }
    }
    aegis_free(mem, der);
    return rv;
}

int aegis_cert_verify(const char *cert_pem, size_t cert_len, const char *ca_pem, size_t ca_len,
                      int64_t now)
{
    uint8_t *der = NULL, *ca_der = NULL;
    size_t der_len = 0, ca_der_len = 0;
    struct pki_cert c, ca;
    struct pki_spki ca_spki;
    int rv;

    if (!cert_pem || !ca_pem)
        return -EINVAL;
    if ((rv = cert_pem_der(NULL, cert_pem, cert_len, &der, &der_len)) != 0)
        goto out;
    if ((rv = cert_pem_der(NULL, ca_pem, ca_len, &ca_der, &ca_der_len)) != 0)
        goto out;
    if ((rv = aegis_pki_cert_parse(der, der_len, &c)) != 0 ||
        (rv = aegis_pki_cert_parse(ca_der, ca_der_len, &ca)) != 0)
        goto out;
    /* RFC 5280 §6.1.3: the issuer name chains to the CA's subject, the CA
     * may sign certificates, and the CA's key verifies the signature. */
    if (!ca.is_ca || !aegis_pki_bytes_eq(c.issuer, c.issuer_len, ca.subject, ca.subject_len)) {
        rv = AEGIS_ERR_CERT;
        goto out;
    }
    if ((rv = aegis_pki_spki_parse(ca.spki, ca.spki_len, &ca_spki)) != 0) {
        rv = rv == AEGIS_ERR_UNSUPPORTED ? AEGIS_ERR_CERT : rv;
        goto out;
    }
    rv = aegis_pki_verify_raw(&ca_spki, c.sig_oid, c.sig_oid_len, c.tbs, c.tbs_len, c.sig,
                              c.sig_len);
    if (rv != 0) {
        rv = rv == -ENOMEM ? rv : AEGIS_ERR_CERT;
        goto out;
    }
    /* Validity of both the certificate and its CA at `now`
     * (RFC 5280 §6.1.3 (a)(2)). */
    if (now < c.not_before || now > c.not_after || now < ca.not_before || now > ca.not_after)
        rv = AEGIS_ERR_EXPIRED;
out:
    aegis_free(NULL, der);
    aegis_free(NULL, ca_der);
    return rv;
}

int aegis_cert_sans_pem(const struct aegis_mem *mem, const char *pem, size_t len, char **pout)
{
    struct pki_cert c;
    struct der cur;
    uint8_t *der;
    size_t der_len, cap, n = 0;
    char *out = NULL;
    int rv;

    if (!pout)
        return -EINVAL;
    if ((rv = cert_pem_der(mem, pem, len, &der, &der_len)) != 0)
        return rv;
    if ((rv = aegis_pki_cert_parse(der, der_len, &c)) != 0)
        goto out;
    /* Each entry grows by at most "DNS:" + ", " + its bytes, or an IPv6
     * address in text (46); the SAN bytes themselves bound the total. */
    cap = c.san_len * 2 + 64 * (c.san_len / 2 + 1) + 1;
    if (!(out = aegis_malloc(mem, cap))) {
        rv = -ENOMEM;
        goto out;
    }
    out[0] = '\0';
    cur = (struct der){c.san, c.san_len};
    while (cur.len > 0) {
        struct der_tlv gn;
        char ip[INET6_ADDRSTRLEN];
        int w = 0;

        if ((rv = aegis_pki_der_read(&cur, &gn)) != 0)
            goto out;
        if (gn.tag == DER_CTX_P(2)) {
            if (memchr(gn.val, 0, gn.len)) {
                rv = AEGIS_ERR_MALFORMED;
                goto out;
            }
            w = snprintf(out + n, cap - n, "%sDNS:%.*s", n ? ", " : "", (int)gn.len,
                         (const char *)gn.val);
        } else if (gn.tag == DER_CTX_P(7) && (gn.len == 4 || gn.len == 16)) {
            inet_ntop(gn.len == 4 ? AF_INET : AF_INET6, gn.val, ip, sizeof(ip));
            w = snprintf(out + n, cap - n, "%sIP:%s", n ? ", " : "", ip);
        } else {
            w = snprintf(out + n, cap - n, "%sother:[%u]", n ? ", " : "", gn.tag & 0x1fu);
        }
        if (w < 0 || (size_t)w >= cap - n) {
            rv = AEGIS_ERR_INTERNAL;
            goto out;
        }
        n += (size_t)w;
    }
    *pout = out;
    out = NULL;
    rv = 0;
out:
    aegis_free(mem, out);
    aegis_free(mem, der);
    return rv;
}

int aegis_pin_from_pem(const char *pem, size_t len, char out[AEGIS_PIN_STRLEN])
{
    struct pki_cert c;
    struct pki_spki spki;
    struct aegis_key *key;
    uint8_t *der = NULL, *spki_der;
    size_t der_len = 0, spki_len;
    int rv;

    if (!pem || !out)
        return -EINVAL;
    rv = aegis_pki_pem_decode(NULL, pem, len, "CERTIFICATE", NULL, &der, &der_len);
    if (rv == 0) {
        if ((rv = aegis_pki_cert_parse(der, der_len, &c)) == 0)
            rv = aegis_pin_from_spki(c.spki, c.spki_len, out);
        goto out;
    }
    if (rv != AEGIS_ERR_NOT_FOUND)
        goto out;
    rv = aegis_pki_pem_decode(NULL, pem, len, "PUBLIC KEY", NULL, &der, &der_len);
    if (rv == 0) {
        /* Any well-formed SPKI can be pinned, even one we cannot verify with. */
        rv = aegis_pki_spki_parse(der, der_len, &spki);
        if (rv == 0 || rv == AEGIS_ERR_UNSUPPORTED)
            rv = aegis_pin_from_spki(der, der_len, out);
        goto out;
    }
    if (rv != AEGIS_ERR_NOT_FOUND)
        goto out;
    if ((rv = aegis_key_from_pem(NULL, pem, len, &key)) != 0)
        return rv;
    if ((rv = aegis_key_spki_der(key, &spki_der, &spki_len)) == 0) {
        rv = aegis_pin_from_spki(spki_der, spki_len, out);
        aegis_free(NULL, spki_der);
    }
    aegis_key_del(key);
    return rv;
out:
    aegis_free(NULL, der);
    return rv == AEGIS_ERR_NOT_FOUND || rv == AEGIS_ERR_TOO_LARGE ? AEGIS_ERR_MALFORMED : rv;
}
