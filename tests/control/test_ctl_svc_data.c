/*
 * Bulk data with the real daemon: artifact upload (signature, SHA-256 and size checked),
 * download with resume from an offset, assignment and per-host status; policy push, promote
 * and roll back reaching the agent as ApplyPolicy commands; telemetry through COPY with
 * duplicate batches counted as committed, then queried.
 */
#include "ctl_svc_harness.h"
#include "ctl_test_util.h"

#include <aegis/err.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct th_pki pki;
static struct th_daemon dmn;
static struct th_client *op;
static const char *dsn;
static struct th_agent agent;
static struct th_client *ac;

/* Not a multiple of the 64 KiB storage chunk, uploaded in 50 000-byte pieces. */
#ifndef CONTENT_LEN
#    define CONTENT_LEN 200000u
#endif
static uint8_t content[CONTENT_LEN];
static uint8_t content_sha[32];

static int setup(void **state)
{
    (void)state;
    dsn = test_dsn();
    th_pki_make(&pki);
    th_daemon_start(&dmn, &pki, dsn, NULL);
    char why[160];
    op = th_connect(&dmn, &pki, pki.op_cert, pki.op_key, why, sizeof(why));
    if (!op)
        fail_msg("operator refused: %s", why);
    th_agent_new(&agent, "data-host");
    const char *tok = th_op_token(op, 1, 3600, "role", "web", NULL);
    assert_int_equal(th_enroll(&agent, &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
    ac = th_agent_connect(&agent, &dmn, &pki, why, sizeof(why));
    assert_non_null(ac);
    assert_int_equal(th_auth(ac, &agent, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    for (size_t i = 0; i < CONTENT_LEN; i++)
        content[i] = (uint8_t)(i * 7 + (i >> 9));
    assert_int_equal(aegis_sha256_hash(content, CONTENT_LEN, content_sha), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_close(ac);
    th_close(op);
    int st = th_daemon_stop(&dmn);
    th_agent_free(&agent);
    th_pki_free(&pki);
    assert_int_equal(st, 0);
    return 0;
}

enum flaw { UP_OK, UP_BAD_SIG, UP_BAD_SHA, UP_UNKNOWN_KEY };

/* upload_blob uploads len bytes of data as artifact name, cut into piece-byte messages,
 * waiting at most wait_ns for the answer. */
static int upload_blob(const uint8_t *data, size_t len, const char *name, size_t piece,
                       enum flaw flaw, uint64_t wait_ns, Aegis__V1__UploadArtifactResponse **presp)
{
    uint8_t sha[32];
    assert_int_equal(aegis_sha256_hash(data, len, sha), 0);
    Aegis__V1__ArtifactStatement s = AEGIS__V1__ARTIFACT_STATEMENT__INIT;
    s.name = (char *)name;
    s.kind = AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE;
    s.size = len;
    s.uncompressed_size = len;
    s.sha256.data = sha;
    s.sha256.len = 32;
    s.version = (char *)"1.0";
    uint8_t *sb, *sig;
    size_t sl, gl;
    assert_int_equal(aegis_proto_pack(&s.base, NULL, &sb, &sl), 0);
    assert_int_equal(aegis_key_sign(pki.artifact_key, sb, sl, &sig, &gl), 0);
    if (flaw == UP_BAD_SIG)
        sig[3] ^= 1;
    Aegis__V1__ArtifactHeader h = AEGIS__V1__ARTIFACT_HEADER__INIT;
    h.statement.data = sb;
    h.statement.len = sl;
    h.signature.data = sig;
    h.signature.len = gl;
    h.signing_key_id = flaw == UP_UNKNOWN_KEY ? (char *)"0123456789abcdef" : pki.artifact_key_id;
    struct th_call *k =
        th_call_start(op, "/aegis.v1.OperatorService/UploadArtifact", AEGIS_RPC_CLIENT_STREAMING);
    Aegis__V1__UploadArtifactRequest m = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__INIT;
    m.part_case = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_HEADER;
    m.header = &h;
    th_call_send(k, &m.base);
    uint8_t *tmp = malloc(len);
    assert_non_null(tmp);
    memcpy(tmp, data, len);
    if (flaw == UP_BAD_SHA)
        tmp[len - 1] ^= 0xff;
    for (size_t off = 0; off < len && (flaw == UP_OK || flaw == UP_BAD_SHA); off += piece) {
        m.part_case = AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_CHUNK;
        m.chunk.data = tmp + off;
        m.chunk.len = len - off < piece ? len - off : piece;
        th_call_send(k, &m.base);
    }
    th_call_close_send(k);
    struct th_status st;
    assert_true(th_call_wait_end(k, wait_ns, &st));
    if (presp) {
        *presp = NULL;
        if (st.code == AEGIS_GRPC_OK)
            assert_int_equal(th_call_next(k, &aegis__v1__upload_artifact_response__descriptor,
                                          (ProtobufCMessage **)presp, 0),
                             1);
    }
    th_call_free(k);
    free(tmp);
    aegis_free(NULL, sb);
    aegis_free(NULL, sig);
    return st.code;
}

static int upload(enum flaw flaw, Aegis__V1__UploadArtifactResponse **presp)
{
    return upload_blob(content, CONTENT_LEN, "test-blob", 50000, flaw, 20 * AEGIS_NS_PER_S, presp);
}

/* Content that ends exactly on a 64 KiB storage chunk: the last message makes the server
 * store a chunk (pausing the call) while the client's end of stream is already there. The
 * answer must come promptly, not at the connection's next keep-alive (15 s). */
static void test_artifact_upload_exact_chunks(void **state)
{
    (void)state;
    static uint8_t blob[2 * 65536];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 13 + 1);
    Aegis__V1__UploadArtifactResponse *ur;
    assert_int_equal(
        upload_blob(blob, sizeof(blob), "exact-blob", 65536, UP_OK, 5 * AEGIS_NS_PER_S, &ur),
        AEGIS_GRPC_OK);
    assert_int_equal(ur->artifact->size, sizeof(blob));
    th_msg_free(&ur->base);
    /* and again: already present, answered from the end of the stream */
    assert_int_equal(
        upload_blob(blob, sizeof(blob), "exact-blob", 65536, UP_OK, 5 * AEGIS_NS_PER_S, &ur),
        AEGIS_GRPC_OK);
    assert_true(ur->already_present);
    th_msg_free(&ur->base);
}

/* fetch downloads from offset; returns the bytes received into buf and checks the header. */
static size_t fetch(uint64_t offset, uint8_t *buf, size_t cap)
{
    Aegis__V1__FetchArtifactRequest req = AEGIS__V1__FETCH_ARTIFACT_REQUEST__INIT;
    req.sha256.data = content_sha;
    req.sha256.len = 32;
    req.offset = offset;
    struct th_call *k =
        th_call_start(ac, "/aegis.v1.AgentService/FetchArtifact", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &req.base);
    th_call_close_send(k);
    size_t got = 0;
    int first = 1;
    Aegis__V1__ArtifactChunk *ch;
    for (int i = 0; i < 1000; i++) {
        int r = th_call_next(k, &aegis__v1__artifact_chunk__descriptor, (ProtobufCMessage **)&ch,
                             10 * AEGIS_NS_PER_S);
        if (r != 1)
            break;
        if (first) {
            assert_non_null(ch->header);
            /* What the agent checks: the signature over the statement, then the statement. */
            uint8_t *spki;
            size_t sl;
            assert_int_equal(aegis_key_spki_der(pki.artifact_key, &spki, &sl), 0);
            assert_int_equal(
                aegis_spki_verify(spki, sl, ch->header->statement.data, ch->header->statement.len,
                                  ch->header->signature.data, ch->header->signature.len),
                0);
            aegis_free(NULL, spki);
            assert_string_equal(ch->header->signing_key_id, pki.artifact_key_id);
            first = 0;
        } else {
            assert_null(ch->header);
        }
        assert_int_equal(ch->offset, offset + got);
        assert_true(ch->data.len <= 64 * 1024);
        assert_true(got + ch->data.len <= cap);
        memcpy(buf + got, ch->data.data, ch->data.len);
        got += ch->data.len;
        th_msg_free(&ch->base);
    }
    struct th_status st;
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_OK);
    th_call_free(k);
    return got;
}

static void test_artifact_upload_download_resume(void **state)
{
    (void)state;
    assert_int_equal(upload(UP_BAD_SIG, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_int_equal(upload(UP_UNKNOWN_KEY, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_int_equal(upload(UP_BAD_SHA, NULL), AEGIS_GRPC_INVALID_ARGUMENT);
    assert_true(th_wait_audit(op, "artifact_upload", NULL, "bad artifact signature", 1,
                              5 * AEGIS_NS_PER_S) >= 1);
    Aegis__V1__UploadArtifactResponse *ur;
    assert_int_equal(upload(UP_OK, &ur), AEGIS_GRPC_OK);
    assert_false(ur->already_present);
    assert_int_equal(ur->artifact->size, CONTENT_LEN);
    assert_memory_equal(ur->artifact->sha256.data, content_sha, 32);
    th_msg_free(&ur->base);
    assert_int_equal(upload(UP_OK, &ur), AEGIS_GRPC_OK);
    assert_true(ur->already_present);
    th_msg_free(&ur->base);

    Aegis__V1__ListArtifactsRequest lr = AEGIS__V1__LIST_ARTIFACTS_REQUEST__INIT;
    lr.name_prefix = (char *)"test-";
    Aegis__V1__ListArtifactsResponse *la;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListArtifacts", &lr.base,
                              &aegis__v1__list_artifacts_response__descriptor,
                              (ProtobufCMessage **)&la, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(la->n_artifacts, 1);
    assert_string_equal(la->artifacts[0]->name, "test-blob");
    assert_int_equal(la->artifacts[0]->kind, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE);
    th_msg_free(&la->base);

    static uint8_t buf[CONTENT_LEN];
    memset(buf, 0, sizeof(buf));
    assert_int_equal(fetch(0, buf, sizeof(buf)), CONTENT_LEN);
    assert_memory_equal(buf, content, CONTENT_LEN);
    /* Resume mid-chunk: only the rest comes, starting exactly there. */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(fetch(100001, buf, sizeof(buf)), CONTENT_LEN - 100001);
    assert_memory_equal(buf, content + 100001, CONTENT_LEN - 100001);
    /* Past the end: OUT_OF_RANGE. */
    Aegis__V1__FetchArtifactRequest req = AEGIS__V1__FETCH_ARTIFACT_REQUEST__INIT;
    req.sha256.data = content_sha;
    req.sha256.len = 32;
    req.offset = CONTENT_LEN + 1;
    struct th_call *k =
        th_call_start(ac, "/aegis.v1.AgentService/FetchArtifact", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &req.base);
    th_call_close_send(k);
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_OUT_OF_RANGE);
    th_call_free(k);
}

static struct th_call *subscribe(uint64_t after)
{
    Aegis__V1__SubscribeRequest sub = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    sub.after_sequence = after;
    struct th_call *k =
        th_call_start(ac, "/aegis.v1.AgentService/Subscribe", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &sub.base);
    th_call_close_send(k);
    return k;
}

static Aegis__V1__Command *next_cmd(struct th_call *k)
{
    Aegis__V1__SignedCommand *sc;
    if (th_call_next(k, &aegis__v1__signed_command__descriptor, (ProtobufCMessage **)&sc,
                     5 * AEGIS_NS_PER_S) != 1)
        return NULL;
    Aegis__V1__Command *c = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, sc->command.data,
                                        sc->command.len, 1 << 20, NULL, (ProtobufCMessage **)&c),
                     0);
    th_msg_free(&sc->base);
    return c;
}

static void ack_ok(Aegis__V1__Command *c)
{
    Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
    req.command_id = c->id;
    req.sequence = c->sequence;
    req.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
    ProtobufCMessage *r;
    struct th_status st;
    assert_int_equal(th_unary(ac, "/aegis.v1.AgentService/Ack", &req.base,
                              &aegis__v1__ack_response__descriptor, &r, &st),
                     AEGIS_GRPC_OK);
    th_msg_free(r);
}

static int host_state(void)
{
    Aegis__V1__GetArtifactStatusRequest req = AEGIS__V1__GET_ARTIFACT_STATUS_REQUEST__INIT;
    req.sha256.data = content_sha;
    req.sha256.len = 32;
    Aegis__V1__GetArtifactStatusResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/GetArtifactStatus", &req.base,
                              &aegis__v1__get_artifact_status_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    int s = resp->n_hosts == 1 ? (int)resp->hosts[0]->state : -1;
    if (resp->n_hosts == 1)
        assert_string_equal(resp->hosts[0]->agent_id, agent.agent_id);
    th_msg_free(&resp->base);
    return s;
}

static void test_artifact_assign_status(void **state)
{
    (void)state;
    struct th_call *sub = subscribe(0);
    Aegis__V1__AssignArtifactRequest req = AEGIS__V1__ASSIGN_ARTIFACT_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    t.selector = (char *)"role=web";
    req.sha256.data = content_sha;
    req.sha256.len = 32;
    req.target = &t;
    Aegis__V1__AssignArtifactResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/AssignArtifact", &req.base,
                              &aegis__v1__assign_artifact_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(resp->assigned, 1);
    char cmd_id[37];
    snprintf(cmd_id, sizeof(cmd_id), "%s", resp->command_id);
    th_msg_free(&resp->base);
    assert_int_equal(host_state(), AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_PENDING);
    Aegis__V1__Command *c = next_cmd(sub);
    assert_non_null(c);
    assert_string_equal(c->id, cmd_id);
    assert_int_equal(c->payload_case, AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT);
    assert_memory_equal(c->load_artifact->sha256.data, content_sha, 32);
    assert_string_equal(c->load_artifact->name, "test-blob");
    ack_ok(c);
    aegis_proto_free(&c->base, NULL);
    assert_int_equal(host_state(), AEGIS__V1__ARTIFACT_STATE__ARTIFACT_STATE_LOADED);
    th_call_free(sub);
}

static int push(uint32_t ttl, uint32_t port, Aegis__V1__PushPolicyResponse **presp)
{
    Aegis__V1__PushPolicyRequest req = AEGIS__V1__PUSH_POLICY_REQUEST__INIT;
    Aegis__V1__MapSnapshot s = AEGIS__V1__MAP_SNAPSHOT__INIT;
    Aegis__V1__Rule r = AEGIS__V1__RULE__INIT;
    Aegis__V1__Rule *rp[1] = {&r};
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    char *ids[1] = {agent.agent_id};
    r.id = 1;
    r.cidr = (char *)"10.10.20.0/24";
    r.proto = AEGIS__V1__RULE_PROTO__RULE_PROTO_TCP;
    r.port = port;
    s.service_id = 7;
    s.n_edges = 1;
    s.edges = rp;
    s.ttl_seconds = ttl;
    s.egress_mode = AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_ALLOW_LIST;
    t.n_agent_ids = 1;
    t.agent_ids = ids;
    req.snapshot = &s;
    req.target = &t;
    req.comment = (char *)"test";
    struct th_status st;
    return th_unary(op, "/aegis.v1.OperatorService/PushPolicy", &req.base,
                    &aegis__v1__push_policy_response__descriptor, (ProtobufCMessage **)presp, &st);
}

static void expect_apply(struct th_call *sub, uint64_t version, uint32_t port, int rollback)
{
    Aegis__V1__Command *c = next_cmd(sub);
    assert_non_null(c);
    assert_int_equal(c->payload_case, AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY);
    assert_int_equal(c->apply_policy->policy_version, version);
    assert_int_equal(c->apply_policy->snapshot->version, version);
    assert_int_equal(c->apply_policy->snapshot->service_id, 7);
    assert_int_equal(c->apply_policy->snapshot->edges[0]->port, port);
    assert_int_equal(c->apply_policy->rollback, rollback);
    ack_ok(c);
    aegis_proto_free(&c->base, NULL);
}

static int policy_state_of(uint64_t version)
{
    Aegis__V1__ListPoliciesRequest req = AEGIS__V1__LIST_POLICIES_REQUEST__INIT;
    req.service_id = 7;
    Aegis__V1__ListPoliciesResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListPolicies", &req.base,
                              &aegis__v1__list_policies_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    int s = -1;
    for (size_t i = 0; i < resp->n_policies; i++)
        if (resp->policies[i]->version == version)
            s = resp->policies[i]->state;
    th_msg_free(&resp->base);
    return s;
}

static void test_policy_push_promote_rollback(void **state)
{
    (void)state;
    Aegis__V1__PushPolicyResponse *pr;
    assert_int_equal(push(10, 443, &pr), AEGIS_GRPC_INVALID_ARGUMENT); /* TTL under 60 s */
    assert_int_equal(push(300, 443, &pr), AEGIS_GRPC_OK);
    assert_int_equal(pr->policy->version, 1);
    assert_int_equal(pr->policy->snapshot->version, 1);
    assert_int_equal(pr->policy->state, AEGIS__V1__POLICY_STATE__POLICY_STATE_DRAFT);
    th_msg_free(&pr->base);
    assert_int_equal(push(300, 8443, &pr), AEGIS_GRPC_OK);
    assert_int_equal(pr->policy->version, 2);
    th_msg_free(&pr->base);

    struct th_call *sub = subscribe(0);
    /* drain what earlier tests left (acked already) - nothing should come */
    Aegis__V1__PromotePolicyRequest pq = AEGIS__V1__PROMOTE_POLICY_REQUEST__INIT;
    pq.service_id = 7;
    pq.version = 1;
    Aegis__V1__PromotePolicyResponse *pp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/PromotePolicy", &pq.base,
                              &aegis__v1__promote_policy_response__descriptor,
                              (ProtobufCMessage **)&pp, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(pp->targeted_agents, 1);
    assert_int_equal(pp->policy->state, AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED);
    th_msg_free(&pp->base);
    expect_apply(sub, 1, 443, 0);
    pq.version = 2;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/PromotePolicy", &pq.base,
                              &aegis__v1__promote_policy_response__descriptor,
                              (ProtobufCMessage **)&pp, &st),
                     AEGIS_GRPC_OK);
    th_msg_free(&pp->base);
    expect_apply(sub, 2, 8443, 0);
    assert_int_equal(policy_state_of(2), AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED);
    assert_int_equal(policy_state_of(1), AEGIS__V1__POLICY_STATE__POLICY_STATE_DRAFT);

    Aegis__V1__RollbackPolicyRequest rq = AEGIS__V1__ROLLBACK_POLICY_REQUEST__INIT;
    rq.service_id = 7;
    Aegis__V1__RollbackPolicyResponse *rr;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/RollbackPolicy", &rq.base,
                              &aegis__v1__rollback_policy_response__descriptor,
                              (ProtobufCMessage **)&rr, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(rr->policy->version, 1);
    th_msg_free(&rr->base);
    expect_apply(sub, 1, 443, 1);
    assert_int_equal(policy_state_of(1), AEGIS__V1__POLICY_STATE__POLICY_STATE_PROMOTED);
    assert_int_equal(policy_state_of(2), AEGIS__V1__POLICY_STATE__POLICY_STATE_ROLLED_BACK);
    /* Nothing left to roll back to. */
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/RollbackPolicy", &rq.base,
                              &aegis__v1__rollback_policy_response__descriptor,
                              (ProtobufCMessage **)&rr, &st),
                     AEGIS_GRPC_NOT_FOUND);
    assert_true(th_wait_audit(op, "policy_rollback", NULL, NULL, 1, 5 * AEGIS_NS_PER_S) >= 1);
    th_call_free(sub);
}

/* Event times of this run (a re-sent batch carries the same ones). */
static int64_t tel_base;

static int report(const uint64_t *ids, size_t n, Aegis__V1__TelemetrySummary **psum)
{
    if (!tel_base)
        tel_base = (int64_t)aegis_wallclock() - 60 * (int64_t)AEGIS_NS_PER_S;
    struct th_call *k =
        th_call_start(ac, "/aegis.v1.AgentService/ReportTelemetry", AEGIS_RPC_CLIENT_STREAMING);
    for (size_t i = 0; i < n; i++) {
        Aegis__V1__TelemetryBatch b = AEGIS__V1__TELEMETRY_BATCH__INIT;
        Aegis__V1__Event e = AEGIS__V1__EVENT__INIT;
        Aegis__V1__Event__AttrsEntry at = AEGIS__V1__EVENT__ATTRS_ENTRY__INIT;
        Aegis__V1__Event__AttrsEntry *atp[1] = {&at};
        Aegis__V1__Event *ep[1] = {&e};
        Aegis__V1__Metric m = AEGIS__V1__METRIC__INIT;
        Aegis__V1__Metric *mp[1] = {&m};
        at.key = (char *)"dst";
        at.value = (char *)"10.0.0.1 \"quoted\"\ttab";
        e.kind = (char *)"flow_denied";
        e.time_unix_ns = (int64_t)aegis_wallclock() - 1000;
        e.n_attrs = 1;
        e.attrs = atp;
        m.name = (char *)"aegis_rule_packets_total";
        m.value = 42.5;
        m.time_unix_ns = (int64_t)aegis_wallclock() - 1000;
        m.kind = AEGIS__V1__METRIC_KIND__METRIC_KIND_COUNTER;
        b.batch_id = ids[i];
        b.n_events = 1;
        b.events = ep;
        b.n_metrics = 1;
        b.metrics = mp;
        /* The same batch id always carries the same timestamps (a re-send). */
        e.time_unix_ns = m.time_unix_ns = tel_base + (int64_t)ids[i] * 1000;
        th_call_send(k, &b.base);
    }
    th_call_close_send(k);
    struct th_status st;
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    *psum = NULL;
    if (st.code == AEGIS_GRPC_OK)
        assert_int_equal(th_call_next(k, &aegis__v1__telemetry_summary__descriptor,
                                      (ProtobufCMessage **)psum, 0),
                         1);
    th_call_free(k);
    return st.code;
}

static void test_telemetry_copy_and_query(void **state)
{
    (void)state;
    /* A tail started first sees what arrives afterwards. */
    Aegis__V1__TailTelemetryRequest tr = AEGIS__V1__TAIL_TELEMETRY_REQUEST__INIT;
    Aegis__V1__TelemetryFilter tf = AEGIS__V1__TELEMETRY_FILTER__INIT;
    char *names[1] = {(char *)"aegis_rule_packets_total"};
    tf.n_metric_names = 1;
    tf.metric_names = names;
    tf.no_events = 1;
    tr.filter = &tf;
    struct th_call *tail =
        th_call_start(op, "/aegis.v1.OperatorService/TailTelemetry", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(tail, &tr.base);
    th_call_close_send(tail);
    th_run(300 * AEGIS_NS_PER_MS, NULL, NULL); /* let the tail take its starting point */
    Aegis__V1__TelemetrySummary *sum;
    uint64_t ids[2] = {1, 2};
    assert_int_equal(report(ids, 2, &sum), AEGIS_GRPC_OK);
    assert_int_equal(sum->n_committed_batch_ids, 2);
    assert_int_equal(sum->committed_batch_ids[0], 1);
    assert_int_equal(sum->committed_batch_ids[1], 2);
    th_msg_free(&sum->base);
    /* A re-sent batch counts as committed and stores nothing twice. */
    assert_int_equal(report(ids, 1, &sum), AEGIS_GRPC_OK);
    assert_int_equal(sum->n_committed_batch_ids, 1);
    th_msg_free(&sum->base);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM telemetry WHERE agent_id = '%s'",
             agent.agent_id);
    assert_int_equal(th_sql_ll(dsn, sql), 4);

    Aegis__V1__QueryTelemetryRequest q = AEGIS__V1__QUERY_TELEMETRY_REQUEST__INIT;
    Aegis__V1__TelemetryFilter f = AEGIS__V1__TELEMETRY_FILTER__INIT;
    char *aid[1] = {agent.agent_id};
    f.n_agent_ids = 1;
    f.agent_ids = aid;
    f.no_metrics = 1;
    q.filter = &f;
    Aegis__V1__QueryTelemetryResponse *qr;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/QueryTelemetry", &q.base,
                              &aegis__v1__query_telemetry_response__descriptor,
                              (ProtobufCMessage **)&qr, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(qr->n_records, 2);
    assert_int_equal(qr->records[0]->item_case, AEGIS__V1__TELEMETRY_RECORD__ITEM_EVENT);
    assert_string_equal(qr->records[0]->event->kind, "flow_denied");
    assert_int_equal(qr->records[0]->event->n_attrs, 1);
    assert_string_equal(qr->records[0]->event->attrs[0]->value, "10.0.0.1 \"quoted\"\ttab");
    th_msg_free(&qr->base);
    Aegis__V1__TelemetryRecord *rec = NULL;
    assert_int_equal(th_call_next(tail, &aegis__v1__telemetry_record__descriptor,
                                  (ProtobufCMessage **)&rec, 5 * AEGIS_NS_PER_S),
                     1);
    assert_int_equal(rec->item_case, AEGIS__V1__TELEMETRY_RECORD__ITEM_METRIC);
    assert_string_equal(rec->metric->name, "aegis_rule_packets_total");
    assert_true(rec->metric->value == 42.5);
    assert_string_equal(rec->agent_id, agent.agent_id);
    th_msg_free(&rec->base);
    th_call_free(tail);
}

static void test_artifact_unassign(void **state)
{
    (void)state;
    Aegis__V1__UnassignArtifactRequest req = AEGIS__V1__UNASSIGN_ARTIFACT_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    char *ids[1] = {agent.agent_id};
    t.agent_ids = ids;
    t.n_agent_ids = 1;
    req.sha256.data = content_sha;
    req.sha256.len = 32;
    req.target = &t;
    Aegis__V1__UnassignArtifactResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/UnassignArtifact", &req.base,
                              &aegis__v1__unassign_artifact_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(resp->unassigned, 1);
    assert_int_equal(strlen(resp->command_id), 36);
    th_msg_free(&resp->base);
    assert_int_equal(host_state(), -1); /* no host left */
    struct th_call *sub = subscribe(0);
    int found = 0;
    for (int i = 0; i < 10 && !found; i++) {
        Aegis__V1__Command *c = next_cmd(sub);
        if (!c)
            break;
        found = c->payload_case == AEGIS__V1__COMMAND__PAYLOAD_UNLOAD_ARTIFACT &&
                memcmp(c->unload_artifact->sha256.data, content_sha, 32) == 0;
        ack_ok(c);
        aegis_proto_free(&c->base, NULL);
    }
    assert_true(found);
    th_call_free(sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_artifact_upload_download_resume),
        cmocka_unit_test(test_artifact_assign_status),
        cmocka_unit_test(test_policy_push_promote_rollback),
        cmocka_unit_test(test_telemetry_copy_and_query),
        cmocka_unit_test(test_artifact_unassign),
        cmocka_unit_test(test_artifact_upload_exact_chunks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
