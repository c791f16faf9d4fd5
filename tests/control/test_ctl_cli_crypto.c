/*
 * aegisctl crypto and compression: base64, SPKI PEM, key
 * files (0600, never overwritten), the signed ArtifactStatement (verified
 * with aegis_spki_verify over the exact bytes), and zstd round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/pki.h>
#include <aegis/v1/artifact.pb-c.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

static char dir[64];

static int setup(void **state)
{
    (void)state;
    return fake_tmpdir(dir, "crypto");
}

static int teardown(void **state)
{
    (void)state;
    return fake_rmtree(dir);
}

/* SHA-256 and key ids are aegis_pki's, tested in tests/certs/test_pki_hash.c. */
static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } b64[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
        char *e = ctl_base64((const uint8_t *)b64[i].in, strlen(b64[i].in));
        assert_string_equal(e, b64[i].out);
        free(e);
    }
}

static void test_spki_pem(void **state)
{
    (void)state;
    struct aegis_key *k = NULL;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_P256, &k), 0);
    uint8_t *der = NULL;
    size_t len = 0;
    assert_int_equal(aegis_key_spki_der(k, &der, &len), 0);
    char *pem = ctl_spki_pem(der, len);
    assert_non_null(pem);
    assert_true(strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    /* lines of at most 64 characters */
    for (char *line = pem, *nl; (nl = strchr(line, '\n')); line = nl + 1)
        assert_true(nl - line <= 64);
    /* aegis_pki reads it back as the same SPKI */
    char p1[AEGIS_PIN_STRLEN], p2[AEGIS_PIN_STRLEN];
    assert_int_equal(aegis_pin_from_pem(pem, strlen(pem), p1), 0);
    assert_int_equal(aegis_pin_from_spki(der, len, p2), 0);
    assert_string_equal(p1, p2);
    free(pem);
    aegis_free(NULL, der);
    aegis_key_del(k);
}

static void test_keygen(void **state)
{
    (void)state;
    char path[128], pub[140];
    snprintf(path, sizeof(path), "%s/artifact.key", dir);
    snprintf(pub, sizeof(pub), "%s.pub", path);
    struct fake f;
    fake_init(&f);
    assert_int_equal(fake_run(&f, "artifacts", "keygen", "--out", path, NULL), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(pub, &sb), 0);
    /* the printed key id is SHA-256(SPKI)[0..8] of the key written */
    char *pem = NULL, *pubpem = NULL;
    size_t pemlen = 0, publen = 0;
    assert_int_equal(ctl_read_file(path, 65536, &pem, &pemlen), 0);
    assert_int_equal(ctl_read_file(pub, 65536, &pubpem, &publen), 0);
    struct aegis_key *k = NULL;
    assert_int_equal(aegis_key_from_pem(NULL, pem, pemlen, &k), 0);
    assert_int_equal(aegis_key_algo(k), AEGIS_KEY_ED25519);
    uint8_t *der = NULL;
    size_t derlen = 0;
    assert_int_equal(aegis_key_spki_der(k, &der, &derlen), 0);
    char id[17], want[64];
    assert_int_equal(aegis_key_id_from_spki(der, derlen, id), 0);
    snprintf(want, sizeof(want), "key id:      %s\n", id);
    assert_non_null(strstr(f.out, want));
    char p1[AEGIS_PIN_STRLEN], p2[AEGIS_PIN_STRLEN];
    assert_int_equal(aegis_pin_from_pem(pubpem, publen, p1), 0);
    assert_int_equal(aegis_pin_from_spki(der, derlen, p2), 0);
    assert_string_equal(p1, p2);

    /* never overwrites: exit 4, files unchanged */
    assert_int_equal(fake_run(&f, "artifacts", "keygen", "--out", path, NULL), CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "already exists; refusing to overwrite"));
    char *again = NULL;
    size_t againlen = 0;
    assert_int_equal(ctl_read_file(path, 65536, &again, &againlen), 0);
    assert_int_equal(againlen, pemlen);
    assert_memory_equal(again, pem, pemlen);
    /* ... also when only the .pub exists */
    char path2[128];
    snprintf(path2, sizeof(path2), "%s/other.key", dir);
    snprintf(pub, sizeof(pub), "%s.pub", path2);
    FILE *fp = fopen(pub, "w");
    fclose(fp);
    assert_int_equal(fake_run(&f, "artifacts", "keygen", "--out", path2, "--json", NULL),
                     CTL_EXIT_INPUT);
    assert_int_equal(access(path2, F_OK), -1);
    /* --out is required */
    assert_int_equal(fake_run(&f, "artifacts", "keygen", NULL), CTL_EXIT_USAGE);
    assert_int_equal(f.ncalls, 0);
    free(again);
    free(pem);
    free(pubpem);
    aegis_free(NULL, der);
    aegis_key_del(k);
    fake_free(&f);
}

static void test_statement_signature(void **state)
{
    (void)state;
    struct aegis_key *k = NULL;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &k), 0);
    char *pem = NULL;
    size_t pemlen = 0;
    uint8_t *spki = NULL;
    size_t spkilen = 0;
    assert_int_equal(aegis_key_to_pem(k, &pem, &pemlen), 0);
    assert_int_equal(aegis_key_spki_der(k, &spki, &spkilen), 0);
    struct ctl_statement st = {.name = "web-seg",
                               .kind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_POLICY_BUNDLE,
                               .size = 1234,
                               .compression = AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD,
                               .uncompressed_size = 5678,
                               .version = "1.2.3",
                               .signed_unix_ns = (int64_t)FAKE_NOW_NS};
    for (int i = 0; i < 32; i++)
        st.sha256[i] = (uint8_t)(0xa0 + i);
    uint8_t *stmt = NULL, *sig = NULL;
    size_t stmtlen = 0, siglen = 0;
    char id[17], err[256], wantid[17];
    assert_int_equal(
        ctl_statement_sign(&st, pem, pemlen, &stmt, &stmtlen, &sig, &siglen, id, err, sizeof(err)),
        0);
    assert_int_equal(siglen, 64);
    assert_int_equal(aegis_key_id_from_spki(spki, spkilen, wantid), 0);
    assert_string_equal(id, wantid);
    /* the signature covers exactly the statement bytes */
    assert_int_equal(aegis_spki_verify(spki, spkilen, stmt, stmtlen, sig, siglen), 0);
    stmt[stmtlen / 2] ^= 1;
    assert_int_equal(aegis_spki_verify(spki, spkilen, stmt, stmtlen, sig, siglen),
                     AEGIS_ERR_SIGNATURE);
    stmt[stmtlen / 2] ^= 1;
    /* and the bytes are the statement we described */
    Aegis__V1__ArtifactStatement *s = NULL;
    assert_int_equal(ctl_unpack(&aegis__v1__artifact_statement__descriptor, stmt, stmtlen,
                                (ProtobufCMessage **)&s),
                     0);
    assert_string_equal(s->name, "web-seg");
    assert_int_equal(s->kind, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_POLICY_BUNDLE);
    assert_int_equal(s->size, 1234);
    assert_int_equal(s->uncompressed_size, 5678);
    assert_int_equal(s->compression, AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD);
    assert_int_equal(s->sha256.len, 32);
    assert_memory_equal(s->sha256.data, st.sha256, 32);
    assert_string_equal(s->version, "1.2.3");
    assert_true(s->signed_unix_ns == (int64_t)FAKE_NOW_NS);
    ctl_pb_free(&s->base);
    aegis_free(NULL, stmt);
    aegis_free(NULL, sig);

    /* a P-256 key and garbage are refused as local input */
    struct aegis_key *p = NULL;
    char *ppem = NULL;
    size_t ppemlen = 0;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_P256, &p), 0);
    assert_int_equal(aegis_key_to_pem(p, &ppem, &ppemlen), 0);
    assert_int_equal(ctl_statement_sign(&st, ppem, ppemlen, &stmt, &stmtlen, &sig, &siglen, id, err,
                                        sizeof(err)),
                     CTL_EXIT_INPUT);
    assert_non_null(strstr(err, "not Ed25519"));
    assert_int_equal(
        ctl_statement_sign(&st, "junk", 4, &stmt, &stmtlen, &sig, &siglen, id, err, sizeof(err)),
        CTL_EXIT_INPUT);
    assert_non_null(strstr(err, "not a usable private key"));
    aegis_free(NULL, ppem);
    aegis_key_del(p);
    aegis_free(NULL, pem);
    aegis_free(NULL, spki);
    aegis_key_del(k);
}

static void test_zstd_roundtrip(void **state)
{
    (void)state;
    /* compressible but not trivial, larger than one zstd input block */
    size_t n = 300000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 27) & 0x0f;
    FILE *in = tmpfile(), *out = tmpfile();
    assert_int_equal(fwrite(data, 1, n, in), n);
    uint64_t usize = 0;
    assert_int_equal(ctl_zstd_file(in, out, &usize), 0);
    assert_true(usize == n);
    fseeko(out, 0, SEEK_END);
    long clen = ftell(out);
    fseeko(out, 0, SEEK_SET);
    assert_true(clen > 0 && (size_t)clen < n);
    uint8_t *comp = malloc((size_t)clen);
    assert_int_equal(fread(comp, 1, (size_t)clen, out), (size_t)clen);
    /* one frame that declares its size, as the agent requires */
    assert_true(ZSTD_getFrameContentSize(comp, (size_t)clen) == n);
    uint8_t *back = malloc(n);
    assert_int_equal(ZSTD_decompress(back, n, comp, (size_t)clen), n);
    assert_memory_equal(back, data, n);
    /* empty input is fine too */
    FILE *e = tmpfile(), *eo = tmpfile();
    assert_int_equal(ctl_zstd_file(e, eo, &usize), 0);
    assert_true(usize == 0);
    fclose(e);
    fclose(eo);
    fclose(in);
    fclose(out);
    free(data);
    free(comp);
    free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_spki_pem),
        cmocka_unit_test_setup_teardown(test_keygen, setup, teardown),
        cmocka_unit_test(test_statement_signature),
        cmocka_unit_test(test_zstd_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
