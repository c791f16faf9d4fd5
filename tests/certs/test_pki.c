/*
 * Unit tests for aegis_pki: keys, PEM, signatures, issuance for every role,
 * certificate facts, pins, chain checks, malformed input and allocation
 * failure. Interoperability with an independent implementation (openssl) is
 * covered by certs_cli_test.sh.
 */
#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/pki.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <aegis/base64.h>

/* PEM armour of a PKCS#8 private key; test keys are made at run time. */
#define PK_LABEL                                                                                   \
    "PRIVATE"                                                                                      \
    " KEY"
#define PK_BEGIN "-----BEGIN " PK_LABEL "-----\n"
#define PK_END "-----END " PK_LABEL "-----\n"

/* A fixed "now" inside every default validity window used below. */
#define T_2030 1893456000LL /* 2030-01-01T00:00:00Z */
#define T_2031 1924992000LL /* 2031-01-01T00:00:00Z */
#define T_2040 2208988800LL /* 2040-01-01T00:00:00Z */
#define T_2055 2682374400LL /* 2055-01-01T00:00:00Z: GeneralizedTime territory */
/* Bound on the allocation-failure sweeps: issuing does a few dozen
 * allocations at most; the loop stops as soon as one run sees no failure. */
#define SWEEP_MAX 200

static const enum aegis_key_algo algos[] = {AEGIS_KEY_ED25519, AEGIS_KEY_P256};

struct fleet {
    struct aegis_key *ca_key;
    char *ca_pem;
    size_t ca_len;
};

static uint8_t *spki_of(const struct aegis_key *k, size_t *plen)
{
    uint8_t *der = NULL;
    assert_int_equal(aegis_key_spki_der(k, &der, plen), 0);
    return der;
}

static void fleet_init(struct fleet *f, enum aegis_key_algo algo, const char *cn, int64_t nb,
                       int64_t na)
{
    struct aegis_cert_spec spec = {0};
    uint8_t *spki;
    size_t spki_len;

    assert_int_equal(aegis_key_generate(NULL, algo, &f->ca_key), 0);
    spki = spki_of(f->ca_key, &spki_len);
    spec.role = AEGIS_ROLE_CA;
    spec.common_name = cn;
    spec.not_before = nb;
    spec.not_after = na;
    assert_int_equal(
        aegis_cert_issue(NULL, &spec, spki, spki_len, f->ca_key, NULL, &f->ca_pem, &f->ca_len), 0);
    assert_int_equal(strlen(f->ca_pem), f->ca_len);
    aegis_free(NULL, spki);
}

static void fleet_free(struct fleet *f)
{
    aegis_key_del(f->ca_key);
    aegis_free(NULL, f->ca_pem);
}

/* Issues a leaf for a fresh key of `algo`; returns the PEM, key in *pkey. */
static char *issue_leaf(const struct fleet *f, enum aegis_key_algo algo,
                        const struct aegis_cert_spec *spec, struct aegis_key **pkey, size_t *plen)
{
    struct aegis_key *k;
    uint8_t *spki;
    size_t spki_len;
    char *pem = NULL;

    assert_int_equal(aegis_key_generate(NULL, algo, &k), 0);
    spki = spki_of(k, &spki_len);
    assert_int_equal(aegis_cert_issue(NULL, spec, spki, spki_len, f->ca_key, f->ca_pem, &pem, plen),
                     0);
    aegis_free(NULL, spki);
    if (pkey)
        *pkey = k;
    else
        aegis_key_del(k);
    return pem;
}

static void key_pem_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
        struct aegis_key *k, *k2;
        char *pem;
        size_t len, l1, l2;
        uint8_t *s1, *s2;

        assert_int_equal(aegis_key_generate(NULL, algos[i], &k), 0);
        assert_int_equal(aegis_key_algo(k), algos[i]);
        assert_int_equal(aegis_key_to_pem(k, &pem, &len), 0);
        assert_int_equal(strlen(pem), len);
        assert_non_null(strstr(pem, PK_BEGIN));
        assert_non_null(strstr(pem, PK_END));
        assert_int_equal(aegis_key_from_pem(NULL, pem, len, &k2), 0);
        assert_int_equal(aegis_key_algo(k2), algos[i]);
        s1 = spki_of(k, &l1);
        s2 = spki_of(k2, &l2);
        /* Ed25519 SPKI is 44 bytes, P-256 (uncompressed, named curve) 91. */
        assert_int_equal(l1, algos[i] == AEGIS_KEY_ED25519 ? 44 : 91);
        assert_int_equal(l1, l2);
        assert_memory_equal(s1, s2, l1);
        aegis_free(NULL, s1);
        aegis_free(NULL, s2);
        aegis_free(NULL, pem);
        aegis_key_del(k);
        aegis_key_del(k2);
    }
    aegis_key_del(NULL); /* accepts NULL */
}

static void two_keys_differ(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
        struct aegis_key *a, *b;
        uint8_t *sa, *sb;
        size_t la, lb;
        assert_int_equal(aegis_key_generate(NULL, algos[i], &a), 0);
        assert_int_equal(aegis_key_generate(NULL, algos[i], &b), 0);
        sa = spki_of(a, &la);
        sb = spki_of(b, &lb);
        assert_int_equal(la, lb);
        assert_memory_not_equal(sa, sb, la);
        aegis_free(NULL, sa);
        aegis_free(NULL, sb);
        aegis_key_del(a);
        aegis_key_del(b);
    }
}

static void key_from_pem_rejects(void **state)
{
    (void)state;
    struct aegis_key *k = NULL;
    struct fleet f;
    static const char garbage[] = "not a pem at all\n";
    static const char badb64[] = PK_BEGIN "MC4C*QAw\n" PK_END;
    static const char noend[] = PK_BEGIN "MC4CAQAw\n";
    /* Valid base64 of a DER SEQUENCE that is not PKCS#8. */
    static const char notpkcs8[] = PK_BEGIN "MAMCAQA=\n" PK_END;
    /* PKCS#8 with the X25519 OID (1.3.101.110): readable, not a signing key.
     * Built here from its DER (version 0, algorithm, 32-byte key). */
    static const uint8_t x25519_der[48] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06,
                                           0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20};
    char x25519[160];
    size_t xn = (size_t)snprintf(x25519, sizeof(x25519), "%s", PK_BEGIN);
    xn += aegis_base64_encode(x25519_der, sizeof(x25519_der), AEGIS_BASE64_PAD, x25519 + xn,
                              sizeof(x25519) - xn);
    snprintf(x25519 + xn, sizeof(x25519) - xn, "\n%s", PK_END);

    assert_int_equal(aegis_key_from_pem(NULL, garbage, strlen(garbage), &k), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_key_from_pem(NULL, badb64, strlen(badb64), &k), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_key_from_pem(NULL, noend, strlen(noend), &k), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_key_from_pem(NULL, notpkcs8, strlen(notpkcs8), &k), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_key_from_pem(NULL, x25519, strlen(x25519), &k), AEGIS_ERR_UNSUPPORTED);
    fleet_init(&f, AEGIS_KEY_ED25519, "CA", 0, 0);
    /* A certificate is not a private key. */
    assert_int_equal(aegis_key_from_pem(NULL, f.ca_pem, f.ca_len, &k), AEGIS_ERR_UNSUPPORTED);
    fleet_free(&f);
    assert_null(k); /* never written on failure */
    assert_int_equal(aegis_key_from_pem(NULL, NULL, 0, &k), -EINVAL);
    assert_int_equal(aegis_key_generate(NULL, (enum aegis_key_algo)7, &k), -EINVAL);
}

static void sign_verify(void **state)
{
    (void)state;
    static const uint8_t msg[] = "nonce|server_time|host_id";
    struct aegis_key *k[2];
    uint8_t *spki[2], *sig[2];
    size_t spki_len[2], siglen[2];

    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(aegis_key_generate(NULL, algos[i], &k[i]), 0);
        spki[i] = spki_of(k[i], &spki_len[i]);
        assert_int_equal(aegis_key_sign(k[i], msg, sizeof(msg), &sig[i], &siglen[i]), 0);
        if (algos[i] == AEGIS_KEY_ED25519)
            assert_int_equal(siglen[i], 64);
        else
            assert_in_range(siglen[i], 8, 72);
        assert_int_equal(
            aegis_spki_verify(spki[i], spki_len[i], msg, sizeof(msg), sig[i], siglen[i]), 0);
        /* Another message, a flipped signature bit, a truncated signature. */
        assert_int_equal(
            aegis_spki_verify(spki[i], spki_len[i], msg, sizeof(msg) - 1, sig[i], siglen[i]),
            AEGIS_ERR_SIGNATURE);
        sig[i][siglen[i] / 2] ^= 0x01;
        assert_int_equal(
            aegis_spki_verify(spki[i], spki_len[i], msg, sizeof(msg), sig[i], siglen[i]),
            AEGIS_ERR_SIGNATURE);
        sig[i][siglen[i] / 2] ^= 0x01;
        assert_int_equal(
            aegis_spki_verify(spki[i], spki_len[i], msg, sizeof(msg), sig[i], siglen[i] - 1),
            AEGIS_ERR_SIGNATURE);
    }
    /* A signature under the other key (and algorithm) does not verify. */
    assert_int_equal(aegis_spki_verify(spki[0], spki_len[0], msg, sizeof(msg), sig[1], siglen[1]),
                     AEGIS_ERR_SIGNATURE);
    assert_int_equal(aegis_spki_verify(spki[1], spki_len[1], msg, sizeof(msg), sig[0], siglen[0]),
                     AEGIS_ERR_SIGNATURE);
    /* Malformed SPKI. */
    assert_int_equal(
        aegis_spki_verify(spki[0], spki_len[0] - 1, msg, sizeof(msg), sig[0], siglen[0]),
        AEGIS_ERR_MALFORMED);
    for (size_t i = 0; i < 2; i++) {
        aegis_free(NULL, spki[i]);
        aegis_free(NULL, sig[i]);
        aegis_key_del(k[i]);
    }
}

static void check_role(const struct fleet *f, enum aegis_key_algo algo, enum aegis_cert_role role,
                       const char *ou)
{
    static const char *const dns[] = {"control.example", "localhost"};
    static const char *const ips[] = {"127.0.0.1", "::1"};
    struct aegis_cert_spec spec = {0};
    struct aegis_cert_info info, ca_info;
    struct aegis_key *k;
    char *pem, *sans = NULL, pin[AEGIS_PIN_STRLEN];
    uint8_t *spki, *cspki, h[AEGIS_SPKI_SHA256_LEN];
    size_t len, spki_len, cspki_len;
    enum aegis_cert_role back;

    spec.role = role;
    spec.common_name = "leaf-01";
    spec.not_before = T_2030;
    spec.not_after = T_2031;
    if (role == AEGIS_ROLE_SERVER) {
        spec.dns_names = dns;
        spec.n_dns = 2;
        spec.ips = ips;
        spec.n_ips = 2;
    }
    pem = issue_leaf(f, algo, &spec, &k, &len);
    assert_int_equal(aegis_cert_info_pem(pem, len, &info), 0);
    assert_int_equal(aegis_cert_info_pem(f->ca_pem, f->ca_len, &ca_info), 0);
    assert_string_equal(info.subject_cn, "leaf-01");
    assert_string_equal(info.subject_ou, ou);
    assert_string_equal(info.issuer_cn, ca_info.subject_cn);
    assert_int_equal(info.is_ca, 0);
    assert_int_equal(info.self_signed, 0);
    assert_int_equal(info.not_before, T_2030);
    assert_int_equal(info.not_after, T_2031);
    assert_int_equal(aegis_cert_role_from_ou(info.subject_ou, &back), 0);
    assert_int_equal(back, role);
    /* The certificate carries the key's SPKI and the pin is its hash. */
    spki = spki_of(k, &spki_len);
    assert_int_equal(aegis_cert_spki_der(NULL, pem, len, &cspki, &cspki_len), 0);
    assert_int_equal(spki_len, cspki_len);
    assert_memory_equal(spki, cspki, spki_len);
    assert_int_equal(aegis_pin_from_spki(spki, spki_len, pin), 0);
    assert_string_equal(pin, info.pin);
    assert_int_equal(aegis_pin_parse(info.pin, h), 0);
    assert_memory_equal(h, info.spki_sha256, sizeof(h));
    assert_int_equal(aegis_cert_verify(pem, len, f->ca_pem, f->ca_len, T_2030 + 3600), 0);
    assert_int_equal(aegis_cert_sans_pem(NULL, pem, len, &sans), 0);
    if (role == AEGIS_ROLE_SERVER)
        assert_string_equal(sans, "DNS:control.example, DNS:localhost, IP:127.0.0.1, IP:::1");
    else
        assert_string_equal(sans, "");
    aegis_free(NULL, sans);
    aegis_free(NULL, spki);
    aegis_free(NULL, cspki);
    aegis_free(NULL, pem);
    aegis_key_del(k);
}

static void issue_all_roles(void **state)
{
    (void)state;
    for (size_t c = 0; c < 2; c++) {
        struct fleet f;
        struct aegis_cert_info info;
        fleet_init(&f, algos[c], "Aegis Fleet CA", T_2030 - 86400, T_2040);
        assert_int_equal(aegis_cert_info_pem(f.ca_pem, f.ca_len, &info), 0);
        assert_string_equal(info.subject_cn, "Aegis Fleet CA");
        assert_string_equal(info.subject_ou, "aegis-ca");
        assert_string_equal(info.issuer_cn, "Aegis Fleet CA");
        assert_int_equal(info.is_ca, 1);
        assert_int_equal(info.self_signed, 1);
        assert_int_equal(info.not_before, T_2030 - 86400);
        assert_int_equal(info.not_after, T_2040);
        /* The CA verifies itself (a trust anchor). */
        assert_int_equal(aegis_cert_verify(f.ca_pem, f.ca_len, f.ca_pem, f.ca_len, T_2030), 0);
        /* Subject keys of both algorithms under a CA of either algorithm:
         * Enroll issues for whatever key the agent brings. */
        for (size_t s = 0; s < 2; s++) {
            check_role(&f, algos[s], AEGIS_ROLE_SERVER, "aegis-server");
            check_role(&f, algos[s], AEGIS_ROLE_AGENT, "aegis-agent");
            check_role(&f, algos[s], AEGIS_ROLE_OPERATOR, "aegis-operator");
        }
        fleet_free(&f);
    }
}

static void self_signed_leaf(void **state)
{
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        struct aegis_cert_spec spec = {0};
        struct aegis_cert_info info;
        struct aegis_key *k;
        uint8_t *spki;
        size_t spki_len, len;
        char *pem;

        assert_int_equal(aegis_key_generate(NULL, algos[i], &k), 0);
        spki = spki_of(k, &spki_len);
        spec.role = AEGIS_ROLE_SELF;
        spec.common_name = "host-1234";
        assert_int_equal(aegis_cert_issue(NULL, &spec, spki, spki_len, k, NULL, &pem, &len), 0);
        assert_int_equal(aegis_cert_info_pem(pem, len, &info), 0);
        assert_int_equal(info.self_signed, 1);
        assert_int_equal(info.is_ca, 0);
        assert_string_equal(info.subject_ou, "aegis-self");
        /* Defaults: not_before about now - 5 min, one year of validity. */
        int64_t now = (int64_t)time(NULL);
        assert_in_range(info.not_before, now - 400, now);
        assert_int_equal(info.not_after - info.not_before, 365LL * 86400);
        /* Not a CA, so nothing verifies against it, not even itself. */
        assert_int_equal(aegis_cert_verify(pem, len, pem, len, now), AEGIS_ERR_CERT);
        aegis_free(NULL, pem);
        aegis_free(NULL, spki);
        aegis_key_del(k);
    }
}

static void verify_rejects(void **state)
{
    (void)state;
    struct fleet f, rogue;
    struct aegis_cert_spec spec = {0};
    struct aegis_key *k;
    char *good, *rogue_leaf, *expired, *tampered, *pos;
    size_t glen, rlen, elen;

    /* Same CA name, different key: only the signature tells them apart. */
    fleet_init(&f, AEGIS_KEY_ED25519, "Aegis Fleet CA", T_2030 - 86400, T_2040);
    fleet_init(&rogue, AEGIS_KEY_ED25519, "Aegis Fleet CA", T_2030 - 86400, T_2040);
    spec.role = AEGIS_ROLE_AGENT;
    spec.common_name = "agent-7";
    spec.not_before = T_2030;
    spec.not_after = T_2031;
    good = issue_leaf(&f, AEGIS_KEY_ED25519, &spec, NULL, &glen);
    rogue_leaf = issue_leaf(&rogue, AEGIS_KEY_ED25519, &spec, NULL, &rlen);
    assert_int_equal(aegis_cert_verify(good, glen, f.ca_pem, f.ca_len, T_2030 + 1), 0);
    assert_int_equal(aegis_cert_verify(rogue_leaf, rlen, f.ca_pem, f.ca_len, T_2030 + 1),
                     AEGIS_ERR_CERT);
    assert_int_equal(aegis_cert_verify(rogue.ca_pem, rogue.ca_len, f.ca_pem, f.ca_len, T_2030),
                     AEGIS_ERR_CERT);
    /* Outside the leaf's window, before and after. */
    assert_int_equal(aegis_cert_verify(good, glen, f.ca_pem, f.ca_len, T_2030 - 1),
                     AEGIS_ERR_EXPIRED);
    assert_int_equal(aegis_cert_verify(good, glen, f.ca_pem, f.ca_len, T_2031 + 1),
                     AEGIS_ERR_EXPIRED);
    /* A leaf that expired in the past, checked now. */
    spec.not_before = 946684800; /* 2000-01-01 */
    spec.not_after = 978307200;  /* 2001-01-01 */
    expired = issue_leaf(&f, AEGIS_KEY_ED25519, &spec, NULL, &elen);
    assert_int_equal(aegis_cert_verify(expired, elen, f.ca_pem, f.ca_len, (int64_t)time(NULL)),
                     AEGIS_ERR_EXPIRED);
    /* A leaf is not an issuer. */
    assert_int_equal(aegis_cert_verify(good, glen, good, glen, T_2030 + 1), AEGIS_ERR_CERT);
    /* Tamper with the subject CN inside the signed part. */
    tampered = aegis_strdup(NULL, good);
    assert_non_null(tampered);
    {
        /* Flip one base64 character in the middle of the body: either the
         * DER no longer parses or the signature no longer matches. */
        int rv;
        pos = tampered + glen / 2;
        *pos = *pos == 'A' ? 'B' : 'A';
        rv = aegis_cert_verify(tampered, glen, f.ca_pem, f.ca_len, T_2030 + 1);
        assert_true(rv == AEGIS_ERR_CERT || rv == AEGIS_ERR_MALFORMED);
    }
    assert_int_equal(aegis_cert_verify("junk", 4, f.ca_pem, f.ca_len, 0), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_cert_verify(good, glen, "junk", 4, 0), AEGIS_ERR_MALFORMED);

    /* Issuing with a CA certificate that does not belong to the key. */
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &k), 0);
    {
        uint8_t *spki;
        size_t spki_len, len;
        char *pem = NULL;
        spki = spki_of(k, &spki_len);
        assert_int_equal(
            aegis_cert_issue(NULL, &spec, spki, spki_len, f.ca_key, rogue.ca_pem, &pem, &len),
            AEGIS_ERR_CERT);
        /* A leaf certificate as issuer. */
        assert_int_equal(aegis_cert_issue(NULL, &spec, spki, spki_len, f.ca_key, good, &pem, &len),
                         AEGIS_ERR_CERT);
        assert_null(pem);
        aegis_free(NULL, spki);
    }
    aegis_key_del(k);
    aegis_free(NULL, tampered);
    aegis_free(NULL, good);
    aegis_free(NULL, rogue_leaf);
    aegis_free(NULL, expired);
    fleet_free(&f);
    fleet_free(&rogue);
}

static void issue_rejects_bad_specs(void **state)
{
    (void)state;
    static const char *const bad_dns[] = {"-bad.example"};
    static const char *const bad_dns2[] = {"a..b"};
    static const char *const bad_ip[] = {"300.1.1.1"};
    static const char *const ok_dns[] = {"ok.example"};
    static const char *many[40];
    char cn65[66], cn64[65];
    struct fleet f;
    struct aegis_cert_spec spec = {0};
    struct aegis_key *k;
    uint8_t *spki;
    size_t spki_len, len;
    char *pem = NULL;

    fleet_init(&f, AEGIS_KEY_P256, "CA", 0, 0);
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_P256, &k), 0);
    spki = spki_of(k, &spki_len);

#define ISSUE(s) aegis_cert_issue(NULL, (s), spki, spki_len, f.ca_key, f.ca_pem, &pem, &len)
    spec.role = AEGIS_ROLE_SERVER; /* no SANs */
    spec.common_name = "srv";
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.dns_names = bad_dns;
    spec.n_dns = 1;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.dns_names = bad_dns2;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.dns_names = ok_dns;
    spec.ips = bad_ip;
    spec.n_ips = 1;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.n_ips = 0;
    for (size_t i = 0; i < 40; i++)
        many[i] = "x.example";
    spec.dns_names = many;
    spec.n_dns = 33;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.n_dns = 32; /* the limit itself is fine */
    assert_int_equal(ISSUE(&spec), 0);
    aegis_free(NULL, pem);
    pem = NULL;
    spec.dns_names = ok_dns;
    spec.n_dns = 1;
    /* Roles that do not fit an issuer certificate. */
    spec.role = AEGIS_ROLE_CA;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.role = AEGIS_ROLE_SELF;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.role = AEGIS_ROLE_AGENT;
    /* Common name limits (RFC 5280 ub-common-name = 64). */
    memset(cn65, 'a', 65);
    cn65[65] = '\0';
    memset(cn64, 'a', 64);
    cn64[64] = '\0';
    spec.common_name = cn65;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.common_name = "";
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.common_name = "bad\nname";
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.common_name = cn64;
    assert_int_equal(ISSUE(&spec), 0);
    {
        struct aegis_cert_info info;
        assert_int_equal(aegis_cert_info_pem(pem, len, &info), 0);
        assert_string_equal(info.subject_cn, cn64);
    }
    aegis_free(NULL, pem);
    pem = NULL;
    /* Validity: empty or inverted window, out of the encodable range. */
    spec.common_name = "agent";
    spec.not_before = T_2031;
    spec.not_after = T_2030;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.not_after = T_2031;
    assert_int_equal(ISSUE(&spec), -EINVAL);
    spec.not_before = -700000000; /* 1947 */
    assert_int_equal(ISSUE(&spec), -EINVAL);
    /* Self-signed with someone else's public key. */
    {
        uint8_t *ca_spki;
        size_t ca_spki_len;
        struct aegis_cert_spec self = {0};
        self.role = AEGIS_ROLE_SELF;
        self.common_name = "x";
        ca_spki = spki_of(f.ca_key, &ca_spki_len);
        assert_int_equal(aegis_cert_issue(NULL, &self, ca_spki, ca_spki_len, k, NULL, &pem, &len),
                         -EINVAL);
        aegis_free(NULL, ca_spki);
    }
    /* Subject SPKI: truncated, and an algorithm we do not issue for
     * (X25519, 1.3.101.110). */
    spec.not_before = 0;
    spec.not_after = 0;
    assert_int_equal(
        aegis_cert_issue(NULL, &spec, spki, spki_len - 3, f.ca_key, f.ca_pem, &pem, &len),
        AEGIS_ERR_MALFORMED);
    {
        uint8_t x25519[44] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                              0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00};
        x25519[12] = 9;
        assert_int_equal(
            aegis_cert_issue(NULL, &spec, x25519, sizeof(x25519), f.ca_key, f.ca_pem, &pem, &len),
            AEGIS_ERR_UNSUPPORTED);
    }
    /* A P-256 point that is not on the curve. */
    {
        uint8_t bad[91];
        memcpy(bad, spki, 91);
        bad[90] ^= 0x01;
        assert_int_equal(
            aegis_cert_issue(NULL, &spec, bad, sizeof(bad), f.ca_key, f.ca_pem, &pem, &len),
            AEGIS_ERR_MALFORMED);
    }
    assert_null(pem);
#undef ISSUE
    aegis_free(NULL, spki);
    aegis_key_del(k);
    fleet_free(&f);
}

static void generalized_time_after_2049(void **state)
{
    (void)state;
    struct fleet f;
    struct aegis_cert_spec spec = {0};
    struct aegis_cert_info info;
    char *pem;
    size_t len;

    fleet_init(&f, AEGIS_KEY_ED25519, "CA", T_2030, T_2055 + 86400);
    spec.role = AEGIS_ROLE_OPERATOR;
    spec.common_name = "alice";
    spec.not_before = T_2040;
    spec.not_after = T_2055;
    pem = issue_leaf(&f, AEGIS_KEY_ED25519, &spec, NULL, &len);
    assert_int_equal(aegis_cert_info_pem(pem, len, &info), 0);
    assert_int_equal(info.not_before, T_2040);
    assert_int_equal(info.not_after, T_2055);
    assert_int_equal(aegis_cert_verify(pem, len, f.ca_pem, f.ca_len, T_2055 - 1), 0);
    assert_int_equal(aegis_cert_verify(pem, len, f.ca_pem, f.ca_len, T_2055 + 1),
                     AEGIS_ERR_EXPIRED);
    aegis_free(NULL, pem);
    fleet_free(&f);
}

static void pin_format_and_parse(void **state)
{
    (void)state;
    uint8_t h[AEGIS_SPKI_SHA256_LEN];
    char pin[AEGIS_PIN_STRLEN];
    /* SHA-256 of the empty string, a well-known value. */
    static const char empty_pin[] = "sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    assert_int_equal(aegis_pin_from_spki((const uint8_t *)"", 0, pin), 0);
    assert_string_equal(pin, empty_pin);
    assert_int_equal(strlen(pin), AEGIS_PIN_STRLEN - 1);
    assert_int_equal(aegis_pin_parse(empty_pin, h), 0);
    assert_int_equal(h[0], 0xe3);
    assert_int_equal(h[31], 0x55);

    assert_int_equal(aegis_pin_parse("sha256//", h), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("sha1//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("SHA256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU==", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF!=", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hS uFU=", h),
                     AEGIS_ERR_MALFORMED);
    /* Non-canonical last character (stray low bits) is refused. */
    assert_int_equal(aegis_pin_parse("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=", h),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_pin_parse(NULL, h), -EINVAL);
}

static void pin_from_pem_kinds(void **state)
{
    (void)state;
    struct fleet f;
    struct aegis_cert_info info;
    char *key_pem, p1[AEGIS_PIN_STRLEN], p2[AEGIS_PIN_STRLEN];
    size_t key_len;

    fleet_init(&f, AEGIS_KEY_P256, "CA", 0, 0);
    assert_int_equal(aegis_cert_info_pem(f.ca_pem, f.ca_len, &info), 0);
    assert_int_equal(aegis_pin_from_pem(f.ca_pem, f.ca_len, p1), 0);
    assert_string_equal(p1, info.pin);
    assert_int_equal(aegis_key_to_pem(f.ca_key, &key_pem, &key_len), 0);
    assert_int_equal(aegis_pin_from_pem(key_pem, key_len, p2), 0);
    assert_string_equal(p2, info.pin);
    assert_int_equal(aegis_pin_from_pem("nothing", 7, p2), AEGIS_ERR_MALFORMED);
    aegis_free(NULL, key_pem);
    fleet_free(&f);
}

static void roles_and_ous(void **state)
{
    (void)state;
    enum aegis_cert_role r;
    assert_string_equal(aegis_cert_role_ou(AEGIS_ROLE_OPERATOR), "aegis-operator");
    assert_null(aegis_cert_role_ou((enum aegis_cert_role)99));
    assert_int_equal(aegis_cert_role_from_ou("aegis-agent", &r), 0);
    assert_int_equal(r, AEGIS_ROLE_AGENT);
    assert_int_equal(aegis_cert_role_from_ou("aegis-agentX", &r), AEGIS_ERR_NOT_FOUND);
    assert_int_equal(aegis_cert_role_from_ou("", &r), AEGIS_ERR_NOT_FOUND);
}

/* Every truncation of a valid certificate is refused cleanly. */
static void truncated_der_is_refused(void **state)
{
    (void)state;
    struct fleet f;
    struct aegis_cert_info info;
    uint8_t *der = NULL;
    size_t n = 0;

    fleet_init(&f, AEGIS_KEY_ED25519, "CA", 0, 0);
    {
        /* Decode the PEM body here, independently of the library's decoder. */
        const char *b = strchr(f.ca_pem, '\n') + 1;
        const char *e = strstr(b, "-----END");
        static const char tbl[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        uint32_t acc = 0;
        int bits = 0;
        der = malloc((size_t)(e - b));
        assert_non_null(der);
        for (const char *p = b; p < e; p++) {
            const char *q = *p ? strchr(tbl, *p) : NULL;
            if (!q)
                continue;
            acc = (acc << 6) | (uint32_t)(q - tbl);
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                der[n++] = (uint8_t)(acc >> bits);
            }
        }
    }
    assert_int_equal(aegis_cert_info_der(der, n, &info), 0);
    assert_int_equal(info.is_ca, 1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(aegis_cert_info_der(der, i, &info), AEGIS_ERR_MALFORMED);
    /* Trailing bytes after the certificate are refused too. */
    {
        uint8_t *longer = malloc(n + 1);
        assert_non_null(longer);
        memcpy(longer, der, n);
        longer[n] = 0;
        assert_int_equal(aegis_cert_info_der(longer, n + 1, &info), AEGIS_ERR_MALFORMED);
        free(longer);
    }
    free(der);
    fleet_free(&f);
}

/* Fails each allocation of aegis_cert_issue in turn: the call returns
 * -ENOMEM (or succeeds once the sweep passes the last allocation), never
 * crashes, and leaves nothing allocated. */
static void issue_allocation_failures(void **state)
{
    (void)state;
    for (size_t a = 0; a < 2; a++) {
        struct fleet f;
        struct aegis_key *k;
        struct aegis_cert_spec spec = {0};
        static const char *const dns[] = {"control.example"};
        uint8_t *spki;
        size_t spki_len;
        unsigned long i;
        int done = 0;

        fleet_init(&f, algos[a], "CA", 0, 0);
        assert_int_equal(aegis_key_generate(NULL, algos[a], &k), 0);
        spki = spki_of(k, &spki_len);
        spec.role = AEGIS_ROLE_SERVER;
        spec.common_name = "control.example";
        spec.dns_names = dns;
        spec.n_dns = 1;
        for (i = 1; i <= SWEEP_MAX && !done; i++) {
            struct aegis_failmem fm;
            char *pem = NULL;
            size_t len = 0;
            int rv;

            aegis_failmem_init(&fm, NULL, i, 0);
            rv = aegis_cert_issue(&fm.mem, &spec, spki, spki_len, f.ca_key, f.ca_pem, &pem, &len);
            if (fm.nfailed == 0) {
                assert_int_equal(rv, 0);
                done = 1;
            } else {
                assert_int_equal(rv, -ENOMEM);
                assert_null(pem);
            }
            aegis_free(&fm.mem, pem);
            assert_int_equal(fm.live, 0);
        }
        assert_true(done);
        assert_true(i > 2); /* at least one allocation was failed */
        aegis_free(NULL, spki);
        aegis_key_del(k);
        fleet_free(&f);
    }
}

/* The same sweep over the key functions, whose allocator is the key's. */
static void key_allocation_failures(void **state)
{
    (void)state;
    for (size_t a = 0; a < 2; a++) {
        int done = 0;
        for (unsigned long i = 1; i <= SWEEP_MAX && !done; i++) {
            struct aegis_failmem fm;
            struct aegis_key *k = NULL, *k2 = NULL;
            char *pem = NULL;
            uint8_t *spki = NULL, *sig = NULL;
            size_t len = 0, spki_len = 0, siglen = 0;
            int rv;

            aegis_failmem_init(&fm, NULL, i, 0);
            rv = aegis_key_generate(&fm.mem, algos[a], &k);
            if (rv == 0)
                rv = aegis_key_to_pem(k, &pem, &len);
            if (rv == 0)
                rv = aegis_key_from_pem(&fm.mem, pem, len, &k2);
            if (rv == 0)
                rv = aegis_key_spki_der(k2, &spki, &spki_len);
            if (rv == 0)
                rv = aegis_key_sign(k2, (const uint8_t *)"m", 1, &sig, &siglen);
            if (fm.nfailed == 0) {
                assert_int_equal(rv, 0);
                assert_int_equal(
                    aegis_spki_verify(spki, spki_len, (const uint8_t *)"m", 1, sig, siglen), 0);
                done = 1;
            } else {
                assert_int_equal(rv, -ENOMEM);
            }
            aegis_free(&fm.mem, sig);
            aegis_free(&fm.mem, spki);
            aegis_free(&fm.mem, pem);
            aegis_key_del(k2);
            aegis_key_del(k);
            assert_int_equal(fm.live, 0);
        }
        assert_true(done);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_pem_round_trip),
        cmocka_unit_test(two_keys_differ),
        cmocka_unit_test(key_from_pem_rejects),
        cmocka_unit_test(sign_verify),
        cmocka_unit_test(issue_all_roles),
        cmocka_unit_test(self_signed_leaf),
        cmocka_unit_test(verify_rejects),
        cmocka_unit_test(issue_rejects_bad_specs),
        cmocka_unit_test(generalized_time_after_2049),
        cmocka_unit_test(pin_format_and_parse),
        cmocka_unit_test(pin_from_pem_kinds),
        cmocka_unit_test(roles_and_ous),
        cmocka_unit_test(truncated_der_is_refused),
        cmocka_unit_test(issue_allocation_failures),
        cmocka_unit_test(key_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
