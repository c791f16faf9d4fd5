/*
 * The TLS library the transport uses (wolfSSL) accepts the chains aegis_pki
 * makes: its certificate manager verifies server, agent and operator
 * certificates against the fleet CA for both algorithms, and refuses a rogue
 * CA's and an expired certificate. A second, independent verifier next to
 * openssl in certs_cli_test.sh; this file only calls wolfSSL to check.
 */
#include <aegis/pki.h>

#include <wolfssl/options.h>

#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

struct ca {
    struct aegis_key *key;
    char *pem;
    size_t len;
};

static void ca_make(struct ca *ca, enum aegis_key_algo algo)
{
    struct aegis_cert_spec spec = {0};
    uint8_t *spki;
    size_t spki_len;

    assert_int_equal(aegis_key_generate(NULL, algo, &ca->key), 0);
    assert_int_equal(aegis_key_spki_der(ca->key, &spki, &spki_len), 0);
    spec.role = AEGIS_ROLE_CA;
    spec.common_name = "Aegis Fleet CA";
    assert_int_equal(
        aegis_cert_issue(NULL, &spec, spki, spki_len, ca->key, NULL, &ca->pem, &ca->len), 0);
    aegis_free(NULL, spki);
}

static void ca_free(struct ca *ca)
{
    aegis_key_del(ca->key);
    aegis_free(NULL, ca->pem);
}

static char *leaf(const struct ca *ca, enum aegis_key_algo algo, enum aegis_cert_role role,
                  int64_t nb, int64_t na, size_t *plen)
{
    static const char *const dns[] = {"control.example"};
    static const char *const ips[] = {"127.0.0.1"};
    struct aegis_cert_spec spec = {0};
    struct aegis_key *k;
    uint8_t *spki;
    size_t spki_len;
    char *pem;

    assert_int_equal(aegis_key_generate(NULL, algo, &k), 0);
    assert_int_equal(aegis_key_spki_der(k, &spki, &spki_len), 0);
    spec.role = role;
    spec.common_name = "leaf";
    spec.not_before = nb;
    spec.not_after = na;
    if (role == AEGIS_ROLE_SERVER) {
        spec.dns_names = dns;
        spec.n_dns = 1;
        spec.ips = ips;
        spec.n_ips = 1;
    }
    assert_int_equal(aegis_cert_issue(NULL, &spec, spki, spki_len, ca->key, ca->pem, &pem, plen),
                     0);
    aegis_free(NULL, spki);
    aegis_key_del(k);
    return pem;
}

static int cm_verify(const struct ca *ca, const char *pem, size_t len)
{
    WOLFSSL_CERT_MANAGER *cm = wolfSSL_CertManagerNew();
    int rv;

    assert_non_null(cm);
    assert_int_equal(wolfSSL_CertManagerLoadCABuffer(cm, (const unsigned char *)ca->pem,
                                                     (long)ca->len, WOLFSSL_FILETYPE_PEM),
                     WOLFSSL_SUCCESS);
    rv = wolfSSL_CertManagerVerifyBuffer(cm, (const unsigned char *)pem, (long)len,
                                         WOLFSSL_FILETYPE_PEM);
    wolfSSL_CertManagerFree(cm);
    return rv;
}

static void wolfssl_accepts_our_chains(void **state)
{
    static const enum aegis_key_algo algos[] = {AEGIS_KEY_ED25519, AEGIS_KEY_P256};
    static const enum aegis_cert_role roles[] = {AEGIS_ROLE_SERVER, AEGIS_ROLE_AGENT,
                                                 AEGIS_ROLE_OPERATOR};
    (void)state;

    for (size_t c = 0; c < 2; c++) {
        struct ca ca, rogue;
        char *pem;
        size_t len;

        ca_make(&ca, algos[c]);
        ca_make(&rogue, algos[c]);
        for (size_t s = 0; s < 2; s++) {
            for (size_t r = 0; r < 3; r++) {
                pem = leaf(&ca, algos[s], roles[r], 0, 0, &len);
                assert_int_equal(cm_verify(&ca, pem, len), WOLFSSL_SUCCESS);
                /* Same CA name, other key: refused. */
                assert_int_not_equal(cm_verify(&rogue, pem, len), WOLFSSL_SUCCESS);
                aegis_free(NULL, pem);
            }
        }
        /* Expired in 2001. */
        pem = leaf(&ca, algos[c], AEGIS_ROLE_AGENT, 946684800, 978307200, &len);
        assert_int_equal(cm_verify(&ca, pem, len), ASN_AFTER_DATE_E);
        aegis_free(NULL, pem);
        ca_free(&ca);
        ca_free(&rogue);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wolfssl_accepts_our_chains),
    };
    int rv;

    wolfSSL_Init();
    rv = cmocka_run_group_tests(tests, NULL, NULL);
    wolfSSL_Cleanup();
    return rv;
}
