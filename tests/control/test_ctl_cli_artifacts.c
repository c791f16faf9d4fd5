/*
 * aegisctl artifacts upload|list|assign|unassign|status against the scripted
 * RPC fake. Upload is checked message by message: a signed header whose
 * statement verifies and describes the bytes, then chunks of at most 64 KiB
 * that add up to exactly the stored content (zstd frames with --compress).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/grpc_status.h>
#include <aegis/mem.h>
#include <aegis/pki.h>
#include <aegis/v1/operator.pb-c.h>

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static char dir[64], keypath[128], datapath[128];
static uint8_t *data;
static const size_t DATA_LEN = 3 * 65536 + 1234; /* four chunks, the last one short */

static int setup(void **state)
{
    (void)state;
    if (fake_tmpdir(dir, "art") != 0)
        return -1;
    snprintf(keypath, sizeof(keypath), "%s/art.key", dir);
    snprintf(datapath, sizeof(datapath), "%s/blob.bin", dir);
    char id[17], err[256];
    if (ctl_keygen(keypath, id, err, sizeof(err)) != 0)
        return -1;
    data = malloc(DATA_LEN);
    for (size_t i = 0; i < DATA_LEN; i++)
        data[i] = (uint8_t)((i / 7) ^ (i * 13));
    FILE *f = fopen(datapath, "wb");
    if (!f || fwrite(data, 1, DATA_LEN, f) != DATA_LEN)
        return -1;
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(data);
    return fake_rmtree(dir);
}

static void reply_upload(struct fake *f, int already)
{
    Aegis__V1__ArtifactInfo ai = AEGIS__V1__ARTIFACT_INFO__INIT;
    ai.name = (char *)"blob";
    Aegis__V1__UploadArtifactResponse r = AEGIS__V1__UPLOAD_ARTIFACT_RESPONSE__INIT;
    r.artifact = &ai;
    r.already_present = already;
    fake_reply(f, 0, NULL, &r.base);
}

/* Checks the uploaded stream; returns the statement (caller frees). */
static Aegis__V1__ArtifactStatement *check_upload(const struct fake *f, uint8_t **pstored,
                                                  size_t *pstoredlen)
{
    assert_true(f->nup >= 2);
    Aegis__V1__UploadArtifactRequest *h = NULL;
    assert_int_equal(ctl_unpack(&aegis__v1__upload_artifact_request__descriptor, f->up[0],
                                f->uplen[0], (ProtobufCMessage **)&h),
                     0);
    assert_int_equal(h->part_case, AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_HEADER);
    /* the signature verifies over the statement bytes with the operator's key */
    char *pem = NULL;
    size_t pemlen = 0;
    assert_int_equal(ctl_read_file(keypath, 65536, &pem, &pemlen), 0);
    struct aegis_key *k = NULL;
    assert_int_equal(aegis_key_from_pem(NULL, pem, pemlen, &k), 0);
    uint8_t *spki = NULL;
    size_t spkilen = 0;
    assert_int_equal(aegis_key_spki_der(k, &spki, &spkilen), 0);
    assert_int_equal(aegis_spki_verify(spki, spkilen, h->header->statement.data,
                                       h->header->statement.len, h->header->signature.data,
                                       h->header->signature.len),
                     0);
    char id[AEGIS_KEY_ID_STRLEN];
    assert_int_equal(aegis_key_id_from_spki(spki, spkilen, id), 0);
    assert_string_equal(h->header->signing_key_id, id);
    Aegis__V1__ArtifactStatement *st = NULL;
    assert_int_equal(ctl_unpack(&aegis__v1__artifact_statement__descriptor,
                                h->header->statement.data, h->header->statement.len,
                                (ProtobufCMessage **)&st),
                     0);
    /* chunks: at most 64 KiB each, together the stored content */
    uint8_t *stored = malloc(DATA_LEN * 2 + 1024);
    size_t off = 0;
    for (size_t i = 1; i < f->nup; i++) {
        Aegis__V1__UploadArtifactRequest *c = NULL;
        assert_int_equal(ctl_unpack(&aegis__v1__upload_artifact_request__descriptor, f->up[i],
                                    f->uplen[i], (ProtobufCMessage **)&c),
                         0);
        assert_int_equal(c->part_case, AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_CHUNK);
        assert_true(c->chunk.len > 0 && c->chunk.len <= 65536);
        assert_true(off + c->chunk.len <= DATA_LEN * 2 + 1024);
        memcpy(stored + off, c->chunk.data, c->chunk.len);
        off += c->chunk.len;
        ctl_pb_free(&c->base);
    }
    assert_true(st->size == off);
    uint8_t sha[32];
    assert_int_equal(aegis_sha256_hash(stored, off, sha), 0);
    assert_int_equal(st->sha256.len, 32);
    assert_memory_equal(st->sha256.data, sha, 32);
    assert_true(st->uncompressed_size == DATA_LEN);
    assert_true(st->signed_unix_ns == (int64_t)FAKE_NOW_NS);
    ctl_pb_free(&h->base);
    free(pem);
    aegis_free(NULL, spki);
    aegis_key_del(k);
    *pstored = stored;
    *pstoredlen = off;
    return st;
}

static void test_upload(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    reply_upload(&f, 0);
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "blob", "--kind",
                              "file", "--signing-key", keypath, NULL),
                     0);
    assert_string_equal(f.path[0], "/aegis.v1.OperatorService/UploadArtifact");
    assert_int_equal(f.nup, 1 + 4);
    uint8_t *stored = NULL;
    size_t storedlen = 0;
    Aegis__V1__ArtifactStatement *st = check_upload(&f, &stored, &storedlen);
    assert_string_equal(st->name, "blob");
    assert_int_equal(st->kind, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE);
    assert_int_equal(st->compression, AEGIS__V1__COMPRESSION__COMPRESSION_NONE);
    assert_int_equal(storedlen, DATA_LEN);
    assert_memory_equal(stored, data, DATA_LEN);
    char hex[65], want[160];
    ctl_fmt_hex(st->sha256.data, 32, hex, sizeof(hex));
    snprintf(want, sizeof(want), "sha256: %s\n", hex);
    assert_non_null(strstr(f.out, want));
    assert_non_null(strstr(f.out, "uploaded blob (193.2 KiB, file, signed by key "));
    /* not a terminal: plain progress lines */
    assert_non_null(strstr(f.err, "upload: 0/197842 (0%)\n"));
    assert_non_null(strstr(f.err, "upload: 197842/197842 (100%)\n"));
    ctl_pb_free(&st->base);
    free(stored);
    fake_free(&f);

    /* --compress, key from the environment, --json */
    fake_init(&f);
    f.env[0][0] = "AEGIS_SIGNING_KEY";
    f.env[0][1] = keypath;
    f.nenv = 1;
    reply_upload(&f, 1);
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "blob", "--kind",
                              "agent_binary", "--version", "1.2.0", "--compress", "--json", NULL),
                     0);
    st = check_upload(&f, &stored, &storedlen);
    assert_int_equal(st->compression, AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD);
    assert_string_equal(st->version, "1.2.0");
    assert_true(storedlen < DATA_LEN);
    uint8_t *back = malloc(DATA_LEN);
    assert_int_equal(ZSTD_decompress(back, DATA_LEN, stored, storedlen), DATA_LEN);
    assert_memory_equal(back, data, DATA_LEN);
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "already_present", &v));
    assert_true(json_object_get_boolean(v));
    json_object_put(o);
    assert_string_equal(f.err, ""); /* --json: no progress noise */
    free(back);
    free(stored);
    ctl_pb_free(&st->base);
    fake_free(&f);
}

static void test_upload_errors(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--kind", "file",
                              "--signing-key", keypath, NULL),
                     2);
    assert_non_null(strstr(f.err, "--name NAME is required"));
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "x", "--kind", "exe",
                              "--signing-key", keypath, NULL),
                     2);
    assert_non_null(strstr(f.err, "bad --kind \"exe\""));
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "x", "--kind",
                              "agent_binary", "--signing-key", keypath, NULL),
                     2);
    assert_non_null(strstr(f.err, "needs --version"));
    assert_int_equal(
        fake_run(&f, "artifacts", "upload", datapath, "--name", "x", "--kind", "file", NULL), 2);
    assert_non_null(strstr(f.err, "no signing key"));
    /* local input problems: exit 4 */
    assert_int_equal(fake_run(&f, "artifacts", "upload", "/nonexistent/f", "--name", "x", "--kind",
                              "file", "--signing-key", keypath, NULL),
                     4);
    assert_non_null(strstr(f.err, "cannot read /nonexistent/f"));
    char pubpath[140];
    snprintf(pubpath, sizeof(pubpath), "%s.pub", keypath); /* a public key cannot sign */
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "x", "--kind", "file",
                              "--signing-key", pubpath, NULL),
                     4);
    assert_non_null(strstr(f.err, "not a usable private key"));
    assert_int_equal(fake_run(&f, "artifacts", "upload", dir, "--name", "x", "--kind", "file",
                              "--signing-key", keypath, NULL),
                     4);
    assert_non_null(strstr(f.err, "not a regular file"));
    assert_int_equal(f.ncalls, 0);
    /* the server refuses */
    fake_reply(&f, AEGIS_GRPC_INVALID_ARGUMENT, "unknown signing key", NULL);
    assert_int_equal(fake_run(&f, "artifacts", "upload", datapath, "--name", "x", "--kind", "file",
                              "--signing-key", keypath, NULL),
                     1);
    assert_non_null(strstr(f.err, "UploadArtifact: INVALID_ARGUMENT: unknown signing key"));
    fake_free(&f);
}

static void test_list_assign_status(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    uint8_t sha[32];
    const char *hex = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    ctl_parse_sha256(hex, sha);
    Aegis__V1__ArtifactInfo ai = AEGIS__V1__ARTIFACT_INFO__INIT;
    ai.name = (char *)"seg";
    ai.kind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_POLICY_BUNDLE;
    ai.size = 2048;
    ai.sha256.data = sha;
    ai.sha256.len = 32;
    ai.uploaded_unix_ns = (int64_t)FAKE_NOW_NS;
    ai.uploaded_by = (char *)"alice";
    ai.assigned_hosts = 3;
    Aegis__V1__ArtifactInfo *as[] = {&ai};
    Aegis__V1__ListArtifactsResponse lr = AEGIS__V1__LIST_ARTIFACTS_RESPONSE__INIT;
    lr.n_artifacts = 1;
    lr.artifacts = as;
    fake_reply(&f, 0, NULL, &lr.base);
    assert_int_equal(
        fake_run(&f, "artifacts", "list", "--kind", "policy_bundle", "--prefix", "se", NULL), 0);
    Aegis__V1__ListArtifactsRequest *lq =
        (void *)fake_request(&f, 0, &aegis__v1__list_artifacts_request__descriptor);
    assert_int_equal(lq->kind, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_POLICY_BUNDLE);
    assert_string_equal(lq->name_prefix, "se");
    ctl_pb_free(&lq->base);
    const char *cells[] = {
        "SHA256", "NAME", "KIND", "SIZE",          "UPLOADED", "BY",
        "HOSTS",  hex,    "seg",  "policy_bundle", "2.0 KiB",  "2026-11-23T07:00:00Z",
        "alice",  "3"};
    char *want = fake_expect_table(7, cells, 2);
    assert_string_equal(f.out, want);
    free(want);

    Aegis__V1__AssignArtifactResponse ar = AEGIS__V1__ASSIGN_ARTIFACT_RESPONSE__INIT;
    ar.assigned = 2;
    ar.command_id = (char *)"cmd-9";
    fake_reply(&f, 0, NULL, &ar.base);
    assert_int_equal(fake_run(&f, "artifacts", "assign", hex, "--agent", "a1", "--selector",
                              "env=prod", "--fetch-only", NULL),
                     0);
    Aegis__V1__AssignArtifactRequest *aq =
        (void *)fake_request(&f, 1, &aegis__v1__assign_artifact_request__descriptor);
    assert_memory_equal(aq->sha256.data, sha, 32);
    assert_int_equal(aq->target->n_agent_ids, 1);
    assert_string_equal(aq->target->selector, "env=prod");
    assert_true(aq->fetch_only);
    ctl_pb_free(&aq->base);
    assert_string_equal(f.out, "assigned to 2 new host(s); command cmd-9\n");

    Aegis__V1__UnassignArtifactResponse ur = AEGIS__V1__UNASSIGN_ARTIFACT_RESPONSE__INIT;
    ur.unassigned = 1;
    fake_reply(&f, 0, NULL, &ur.base);
    assert_int_equal(fake_run(&f, "artifacts", "unassign", hex, "--agent", "a1", NULL), 0);
    assert_string_equal(f.out, "unassigned from 1 host(s); command -\n");
    assert_int_equal(fake_run(&f, "artifacts", "assign", hex, NULL), 2); /* no target */
    assert_int_equal(fake_run(&f, "artifacts", "assign", "beef", "--agent", "a", NULL), 2);

    Aegis__V1__ArtifactHostStatus h1 = AEGIS__V1__ARTIFACT_HOST_STATUS__INIT;
    h1.agent_id = (char *)"a1";
    h1.host_id = (char *)"web-1";
    h1.state = AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_FAILED;
    h1.detail = (char *)"bad signature";
    h1.bytes_fetched = 100;
    Aegis__V1__ArtifactHostStatus *hs[] = {&h1};
    Aegis__V1__GetArtifactStatusResponse sr = AEGIS__V1__GET_ARTIFACT_STATUS_RESPONSE__INIT;
    sr.artifact = &ai;
    sr.n_hosts = 1;
    sr.hosts = hs;
    fake_reply(&f, 0, NULL, &sr.base);
    assert_int_equal(fake_run(&f, "artifacts", "status", hex, "--state", "failed", NULL), 0);
    Aegis__V1__GetArtifactStatusRequest *sq =
        (void *)fake_request(&f, 3, &aegis__v1__get_artifact_status_request__descriptor);
    assert_int_equal(sq->state, AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_FAILED);
    ctl_pb_free(&sq->base);
    assert_non_null(strstr(f.out, "artifact: seg (policy_bundle, 2.0 KiB)\n"));
    const char *hcells[] = {"AGENT", "HOST",  "STATE",  "FETCHED", "UPDATED", "DETAIL",
                            "a1",    "web-1", "failed", "100 B",   "-",       "bad signature"};
    want = fake_expect_table(6, hcells, 2);
    assert_non_null(strstr(f.out, want));
    free(want);
    fake_reply(&f, 0, NULL, &sr.base);
    assert_int_equal(fake_run(&f, "artifacts", "status", hex, "--json", NULL), 0);
    struct json_object *o = fake_json(&f), *v;
    assert_true(json_object_object_get_ex(o, "artifact", &v));
    assert_true(json_object_object_get_ex(v, "name", &v));
    assert_string_equal(json_object_get_string(v), "seg");
    assert_true(json_object_object_get_ex(o, "hosts", &v));
    assert_true(json_object_object_get_ex(json_object_array_get_idx(v, 0), "state", &v));
    assert_string_equal(json_object_get_string(v), "failed");
    json_object_put(o);
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload),
        cmocka_unit_test(test_upload_errors),
        cmocka_unit_test(test_list_assign_status),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
