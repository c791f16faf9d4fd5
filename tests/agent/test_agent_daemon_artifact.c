/*
 * Artifact verification: signed statement, then size and SHA-256 of the
 * content, then bounded zstd decompression. Tampered, truncated, wrongly
 * signed and oversized inputs are refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "agent_artifact.h"
#include "agent_msg.h"
#include "agent_test_util.h"
#include "agentd_test_keys.h"

#include <aegis/err.h>
#include <aegis/pki.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include <cmocka.h>

static struct tkey ak, rogue;
static struct agent_artifact_key trusted[1];

struct hdr {
    Aegis__V1__ArtifactHeader h;
    uint8_t *st;
    uint8_t sig[64];
};

static void make_hdr(struct hdr *o, const struct tkey *k, const uint8_t sha[32], uint64_t size,
                     int compression, uint64_t usize, int kind)
{
    Aegis__V1__ArtifactStatement st = AEGIS__V1__ARTIFACT_STATEMENT__INIT;
    st.name = "web-segmentation";
    st.kind = (Aegis__V1__ArtifactKind)kind;
    st.size = size;
    st.sha256.data = (uint8_t *)sha;
    st.sha256.len = 32;
    st.compression = (Aegis__V1__Compression)compression;
    st.uncompressed_size = usize;
    st.version = "1.4.2";
    size_t len = 0;
    assert_int_equal(agent_msg_pack(&st, NULL, &o->st, &len), 0);
    tkey_sign(k, o->st, len, o->sig);
    aegis__v1__artifact_header__init(&o->h);
    o->h.statement.data = o->st;
    o->h.statement.len = len;
    o->h.signature.data = o->sig;
    o->h.signature.len = 64;
    o->h.signing_key_id = (char *)k->id;
}

static void free_hdr(struct hdr *o)
{
    aegis_free(NULL, o->st);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t sha[32] = {7};
    struct hdr h;
    struct agent_artifact_meta m;
    char why[512];
    make_hdr(&h, &ak, sha, 100, 0, 0, 1);
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 1, NULL, &m, why, sizeof(why)), 0);
    assert_string_equal(m.name, "web-segmentation");
    assert_int_equal(m.size, 100);
    assert_int_equal(m.uncompressed_size, 100);
    assert_string_equal(m.version, "1.4.2");
    /* the command named another artifact */
    uint8_t other[32] = {8};
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, other, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_PERMISSION);
    /* kind differs from the command's */
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 4, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_PERMISSION);
    /* statement changed after signing */
    h.st[h.h.statement.len - 1] ^= 1;
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_SIGNATURE);
    assert_non_null(strstr(why, "bad signature"));
    free_hdr(&h);
    /* signed by a key the agent does not trust */
    make_hdr(&h, &rogue, sha, 100, 0, 0, 1);
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_SIGNATURE);
    assert_non_null(strstr(why, "unknown key"));
    h.h.signing_key_id = ak.id; /* claims the trusted id */
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_SIGNATURE);
    free_hdr(&h);
    /* over the 1 GiB cap */
    make_hdr(&h, &ak, sha, 100, 1, (UINT64_C(1) << 30) + 1, 1);
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_TOO_LARGE);
    free_hdr(&h);
    /* unspecified kind */
    make_hdr(&h, &ak, sha, 100, 0, 0, 0);
    assert_int_equal(
        agent_artifact_verify_header(&h.h, trusted, 1, sha, 0, NULL, &m, why, sizeof(why)),
        AEGIS_ERR_MALFORMED);
    free_hdr(&h);
}

static void test_content(void **state)
{
    (void)state;
    char dir[256], part[512], blob[512];
    agent_test_mkdtemp(dir, sizeof(dir));
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7);
    struct agent_artifact_meta m;
    memset(&m, 0, sizeof(m));
    m.size = m.uncompressed_size = sizeof(data);
    assert_int_equal(aegis_sha256_hash(data, sizeof(data), m.sha256), 0);
    assert_int_equal(agent_artifact_paths(dir, m.sha256, part, blob, sizeof(part)), 0);
    char why[512];
    /* resume: chunks must continue the file exactly */
    assert_int_equal(agent_artifact_part_size(part), 0);
    assert_int_equal(agent_artifact_append(part, 0, data, 1000, m.size), 0);
    assert_int_equal(agent_artifact_part_size(part), 1000);
    assert_int_equal(agent_artifact_append(part, 500, data + 500, 10, m.size), AEGIS_ERR_MALFORMED);
    assert_int_equal(agent_artifact_append(part, 1000, data, 2001, m.size), AEGIS_ERR_TOO_LARGE);
    /* truncated */
    assert_int_equal(agent_artifact_verify_file(&m, part, why, sizeof(why)), AEGIS_ERR_MALFORMED);
    assert_non_null(strstr(why, "truncated"));
    assert_int_equal(agent_artifact_append(part, 1000, data + 1000, 2000, m.size), 0);
    assert_int_equal(agent_artifact_verify_file(&m, part, why, sizeof(why)), 0);
    /* tampered: same size, one bit flipped */
    uint8_t bad[3000];
    memcpy(bad, data, sizeof(bad));
    bad[1234] ^= 0x10;
    assert_int_equal(agent_test_write(part, bad, sizeof(bad)), 0);
    assert_int_equal(agent_artifact_verify_file(&m, part, why, sizeof(why)), AEGIS_ERR_SIGNATURE);
    assert_non_null(strstr(why, "SHA-256"));
    /* too long */
    uint8_t longer[3001] = {0};
    assert_int_equal(agent_test_write(part, longer, sizeof(longer)), 0);
    assert_int_equal(agent_artifact_verify_file(&m, part, why, sizeof(why)), AEGIS_ERR_MALFORMED);
    /* uncompressed copy */
    assert_int_equal(agent_test_write(part, data, sizeof(data)), 0);
    char out[600];
    snprintf(out, sizeof(out), "%s/out", dir);
    assert_int_equal(agent_artifact_decompress(&m, part, out, 0600, why, sizeof(why)), 0);
    assert_int_equal(agent_test_file_size(out), sizeof(data));
    agent_test_rmtree(dir);
}

static void test_zstd(void **state)
{
    (void)state;
    char dir[256], in[512], out[512], why[512];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(in, sizeof(in), "%s/in.zst", dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    size_t n = 200000;
    uint8_t *raw = calloc(1, n); /* compresses ~1000:1: a small bomb */
    for (size_t i = 0; i < n; i += 4096)
        raw[i] = (uint8_t)i;
    size_t cap = ZSTD_compressBound(n);
    uint8_t *z = malloc(cap);
    size_t zl = ZSTD_compress(z, cap, raw, n, 3);
    assert_false(ZSTD_isError(zl));
    assert_int_equal(agent_test_write(in, z, zl), 0);
    struct agent_artifact_meta m;
    memset(&m, 0, sizeof(m));
    m.compression = 1;
    m.size = zl;
    m.uncompressed_size = n;
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)), 0);
    uint8_t *got = NULL;
    size_t gl = 0;
    assert_int_equal(agent_test_read(out, &got, &gl), 0);
    assert_int_equal(gl, n);
    assert_memory_equal(got, raw, n);
    free(got);
    /* declared smaller than the real output: stops at the cap */
    m.uncompressed_size = n / 2;
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)),
                     AEGIS_ERR_TOO_LARGE);
    /* declared larger: refused at the end */
    m.uncompressed_size = n + 1;
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)),
                     AEGIS_ERR_DECOMPRESS);
    /* truncated frame */
    m.uncompressed_size = n;
    assert_int_equal(agent_test_write(in, z, zl / 2), 0);
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)),
                     AEGIS_ERR_DECOMPRESS);
    /* not zstd at all */
    assert_int_equal(agent_test_write(in, raw, 100), 0);
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)),
                     AEGIS_ERR_DECOMPRESS);
    /* a declared size over the hard cap */
    m.uncompressed_size = (UINT64_C(1) << 30) + 1;
    assert_int_equal(agent_artifact_decompress(&m, in, out, 0600, why, sizeof(why)),
                     AEGIS_ERR_TOO_LARGE);
    free(raw);
    free(z);
    agent_test_rmtree(dir);
}

int main(void)
{
    tkey_make(&ak);
    tkey_make(&rogue);
    memcpy(trusted[0].id, ak.id, sizeof(trusted[0].id));
    memcpy(trusted[0].pub, ak.pub, 32);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_content),
        cmocka_unit_test(test_zstd),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tkey_free(&ak);
    tkey_free(&rogue);
    return rv;
}
