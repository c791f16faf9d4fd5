/*
 * aegis-control against a real PostgreSQL and the real daemon binary: enrollment, the
 * handshake identity hook, auth-first, Authenticate failures (each audited), version rule,
 * operator authorization negatives, metrics and health.
 */
#include "ctl_svc_harness.h"
#include "ctl_test_util.h"

#include <aegis/err.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct th_pki pki;
static struct th_daemon dmn;
static struct th_client *op;
static const char *dsn;

static int setup(void **state)
{
    (void)state;
    dsn = test_dsn();
    th_pki_make(&pki);
    /* A short challenge lifetime so the stale-challenge case needs only a moment. */
    const char *extra[] = {"--challenge-ttl-ms", "300", NULL};
    th_daemon_start(&dmn, &pki, dsn, extra);
    char why[160];
    op = th_connect(&dmn, &pki, pki.op_cert, pki.op_key, why, sizeof(why));
    if (!op)
        fail_msg("operator refused: %s", why);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_close(op);
    int st = th_daemon_stop(&dmn);
    th_pki_free(&pki);
    assert_int_equal(st, 0); /* SIGTERM drains and exits 0 */
    return 0;
}

static void enroll_ok(struct th_agent *a, const char *host)
{
    th_agent_new(a, host);
    const char *tok = th_op_token(op, 1, 3600, "env", "test", NULL);
    assert_int_equal(th_enroll(a, &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
}

static void test_enroll_valid(void **state)
{
    (void)state;
    struct th_agent a;
    th_agent_new(&a, "host-valid");
    const char *tok = th_op_token(op, 2, 3600, "env", "prod", NULL);
    Aegis__V1__EnrollResponse *resp = NULL;
    assert_int_equal(th_enroll(&a, &dmn, &pki, tok, &resp), AEGIS_GRPC_OK);
    assert_non_null(resp);
    /* The certificate is for exactly the key this client used in its TLS handshake. */
    struct aegis_cert_info info;
    assert_int_equal(aegis_cert_info_pem(a.cert, strlen(a.cert), &info), 0);
    uint8_t *spki;
    size_t sl;
    assert_int_equal(aegis_key_spki_der(a.key, &spki, &sl), 0);
    char pin[AEGIS_PIN_STRLEN];
    assert_int_equal(aegis_pin_from_spki(spki, sl, pin), 0);
    aegis_free(NULL, spki);
    assert_string_equal(info.pin, pin);
    assert_string_equal(info.subject_cn, a.agent_id);
    assert_string_equal(info.subject_ou, "aegis-agent");
    assert_false(info.self_signed);
    assert_int_equal(aegis_cert_verify(a.cert, strlen(a.cert), pki.ca_pem, strlen(pki.ca_pem),
                                       (int64_t)(aegis_wallclock() / AEGIS_NS_PER_S)),
                     0);
    assert_string_equal(resp->server_pins[0], pki.server_pin);
    assert_int_equal(resp->command_signing_public_key.len, 32);
    assert_int_equal(strlen(resp->command_signing_key_id), 16);
    assert_int_equal(resp->n_artifact_signing_keys, 1);
    assert_string_equal(resp->artifact_signing_keys[0]->key_id, pki.artifact_key_id);
    assert_non_null(resp->labels);
    assert_int_equal(resp->labels->n_entries, 1);
    assert_string_equal(resp->labels->entries[0]->key, "env");
    assert_string_equal(resp->labels->entries[0]->value, "prod");
    th_msg_free(&resp->base);
    assert_true(th_wait_audit(op, "enroll", a.agent_id, NULL, 1, 5 * AEGIS_NS_PER_S) >= 1);

    /* The enrolled certificate is accepted at once and authenticates. */
    char why[160];
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    if (!c)
        fail_msg("enrolled agent refused: %s", why);
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    th_close(c);
    th_agent_free(&a);
}

static void test_enroll_refused_tokens(void **state)
{
    (void)state;
    struct th_agent a, b, c, d;
    char tid[37];
    /* used up: max_uses 1 */
    const char *tok = th_op_token(op, 1, 3600, NULL, NULL, NULL);
    char secret[128];
    snprintf(secret, sizeof(secret), "%s", tok);
    th_agent_new(&a, "host-u1");
    th_agent_new(&b, "host-u2");
    assert_int_equal(th_enroll(&a, &dmn, &pki, secret, NULL), AEGIS_GRPC_OK);
    assert_int_equal(th_enroll(&b, &dmn, &pki, secret, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_true(th_wait_audit(op, "enroll", NULL, "token used up", 1, 5 * AEGIS_NS_PER_S) >= 1);

    /* revoked */
    tok = th_op_token(op, 5, 3600, NULL, NULL, tid);
    snprintf(secret, sizeof(secret), "%s", tok);
    Aegis__V1__RevokeTokenRequest rt = AEGIS__V1__REVOKE_TOKEN_REQUEST__INIT;
    rt.token_id = tid;
    Aegis__V1__RevokeTokenResponse *rr;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/RevokeToken", &rt.base,
                              &aegis__v1__revoke_token_response__descriptor,
                              (ProtobufCMessage **)&rr, &st),
                     AEGIS_GRPC_OK);
    assert_false(rr->already_revoked);
    th_msg_free(&rr->base);
    th_agent_new(&c, "host-r1");
    assert_int_equal(th_enroll(&c, &dmn, &pki, secret, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_true(th_wait_audit(op, "enroll", NULL, "token revoked", 1, 5 * AEGIS_NS_PER_S) >= 1);

    /* expired (moved into the past in the database) */
    tok = th_op_token(op, 5, 3600, NULL, NULL, tid);
    snprintf(secret, sizeof(secret), "%s", tok);
    char sql[256], out[64];
    snprintf(sql, sizeof(sql),
             "UPDATE enrollment_tokens SET created_at = now() - interval '2 hours',"
             " expires_at = now() - interval '1 hour' WHERE id = '%s' RETURNING 1",
             tid);
    assert_int_equal(test_query(dsn, sql, out, sizeof(out)), 0);
    th_agent_new(&d, "host-e1");
    assert_int_equal(th_enroll(&d, &dmn, &pki, secret, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_true(th_wait_audit(op, "enroll", NULL, "token expired", 1, 5 * AEGIS_NS_PER_S) >= 1);
    /* unknown */
    assert_int_equal(th_enroll(&d, &dmn, &pki, "aegis_nosuchtoken", NULL),
                     AEGIS_GRPC_PERMISSION_DENIED);
    /* The refused agents got no certificate. */
    assert_null(b.cert);
    assert_null(c.cert);
    assert_null(d.cert);
    th_agent_free(&a);
    th_agent_free(&b);
    th_agent_free(&c);
    th_agent_free(&d);
}

static void test_auth_first(void **state)
{
    (void)state;
    struct th_agent a;
    enroll_ok(&a, "host-first");
    char why[160];
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    assert_non_null(c);
    struct th_status st;
    ProtobufCMessage *resp;
    Aegis__V1__AckRequest ack = AEGIS__V1__ACK_REQUEST__INIT;
    ack.command_id = (char *)"6b0c7f7e-9f51-4b8e-9a41-2f2f1b0c0d0e";
    ack.sequence = 1;
    ack.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED;
    assert_int_equal(th_unary(c, "/aegis.v1.AgentService/Ack", &ack.base,
                              &aegis__v1__ack_response__descriptor, &resp, &st),
                     AEGIS_GRPC_UNAUTHENTICATED);
    Aegis__V1__SubscribeRequest sub = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    struct th_call *k =
        th_call_start(c, "/aegis.v1.AgentService/Subscribe", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &sub.base);
    th_call_close_send(k);
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_UNAUTHENTICATED);
    th_call_free(k);
    Aegis__V1__FetchArtifactRequest fr = AEGIS__V1__FETCH_ARTIFACT_REQUEST__INIT;
    uint8_t sha[32] = {0};
    fr.sha256.data = sha;
    fr.sha256.len = 32;
    k = th_call_start(c, "/aegis.v1.AgentService/FetchArtifact", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &fr.base);
    th_call_close_send(k);
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_UNAUTHENTICATED);
    th_call_free(k);
    k = th_call_start(c, "/aegis.v1.AgentService/ReportTelemetry", AEGIS_RPC_CLIENT_STREAMING);
    th_call_close_send(k);
    assert_true(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_UNAUTHENTICATED);
    th_call_free(k);
    /* After Authenticate the same Ack reaches the handler (no such delivery). */
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    assert_int_equal(th_unary(c, "/aegis.v1.AgentService/Ack", &ack.base,
                              &aegis__v1__ack_response__descriptor, &resp, &st),
                     AEGIS_GRPC_NOT_FOUND);
    th_close(c);
    th_agent_free(&a);
}

static void test_auth_failures_audited(void **state)
{
    (void)state;
    struct th_agent a;
    enroll_ok(&a, "host-fail");
    char why[160];
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    assert_non_null(c);
    assert_int_equal(th_auth(c, &a, TH_AUTH_BAD_SIG, 0, NULL), AEGIS_GRPC_UNAUTHENTICATED);
    assert_true(
        th_wait_audit(op, "auth_failed", a.agent_id, "bad signature", 1, 5 * AEGIS_NS_PER_S) >= 1);
    /* A correct proof, then a replay of it against a fresh challenge. */
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    assert_int_equal(th_auth(c, &a, TH_AUTH_REPLAY, 0, NULL), AEGIS_GRPC_UNAUTHENTICATED);
    assert_true(
        th_wait_audit(op, "auth_failed", a.agent_id, "bad signature", 2, 5 * AEGIS_NS_PER_S) >= 2);
    /* A proof after the challenge expired (the daemon runs with a 300 ms lifetime). */
    assert_int_equal(th_auth(c, &a, TH_AUTH_SLOW, 600 * AEGIS_NS_PER_MS, NULL),
                     AEGIS_GRPC_UNAUTHENTICATED);
    assert_true(
        th_wait_audit(op, "auth_failed", a.agent_id, "stale nonce", 1, 5 * AEGIS_NS_PER_S) >= 1);
    /* machine-id mismatch */
    assert_int_equal(th_auth(c, &a, TH_AUTH_WRONG_MID, 0, NULL), AEGIS_GRPC_PERMISSION_DENIED);
    assert_true(th_wait_audit(op, "auth_failed", a.agent_id, "machine-id mismatch", 1,
                              5 * AEGIS_NS_PER_S) >= 1);
    th_close(c);
    th_agent_free(&a);
}

static void test_version_rule(void **state)
{
    (void)state;
    struct th_agent a;
    enroll_ok(&a, "host-ver");
    char why[160];
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    assert_non_null(c);
    snprintf(a.version, sizeof(a.version), "0.0.9");
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_FAILED_PRECONDITION);
    assert_true(th_wait_audit(op, "auth_failed", a.agent_id, "downgrade refused", 1,
                              5 * AEGIS_NS_PER_S) >= 1);
    snprintf(a.version, sizeof(a.version), "0.10.0"); /* numeric, not lexical, comparison */
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    Aegis__V1__GetAgentRequest g = AEGIS__V1__GET_AGENT_REQUEST__INIT;
    g.agent_id = a.agent_id;
    Aegis__V1__GetAgentResponse *gr;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/GetAgent", &g.base,
                              &aegis__v1__get_agent_response__descriptor, (ProtobufCMessage **)&gr,
                              &st),
                     AEGIS_GRPC_OK);
    assert_string_equal(gr->agent->version, "0.10.0");
    assert_int_equal(gr->agent->status, AEGIS__V1__AGENT_STATUS__AGENT_STATUS_ONLINE);
    assert_string_equal(gr->agent->connected_instance, dmn.instance);
    th_msg_free(&gr->base);
    snprintf(a.version, sizeof(a.version), "0.9.0");
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_FAILED_PRECONDITION);
    th_close(c);
    th_agent_free(&a);
}

static void test_authz_negatives(void **state)
{
    (void)state;
    struct th_agent a;
    enroll_ok(&a, "host-authz");
    char why[160];
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    assert_non_null(c);
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    struct th_status st;
    ProtobufCMessage *resp;
    Aegis__V1__ListAgentsRequest la = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    /* An agent cannot call OperatorService, even authenticated. */
    assert_int_equal(th_unary(c, "/aegis.v1.OperatorService/ListAgents", &la.base,
                              &aegis__v1__list_agents_response__descriptor, &resp, &st),
                     AEGIS_GRPC_PERMISSION_DENIED);
    Aegis__V1__RevokeAgentRequest rv = AEGIS__V1__REVOKE_AGENT_REQUEST__INIT;
    rv.agent_id = a.agent_id;
    assert_int_equal(th_unary(c, "/aegis.v1.OperatorService/RevokeAgent", &rv.base,
                              &aegis__v1__revoke_agent_response__descriptor, &resp, &st),
                     AEGIS_GRPC_PERMISSION_DENIED);
    th_close(c);
    /* An operator cannot call AgentService. */
    Aegis__V1__AckRequest ack = AEGIS__V1__ACK_REQUEST__INIT;
    assert_int_equal(th_unary(op, "/aegis.v1.AgentService/Ack", &ack.base,
                              &aegis__v1__ack_response__descriptor, &resp, &st),
                     AEGIS_GRPC_PERMISSION_DENIED);
    /* A self-signed certificate may call Enroll only. */
    struct th_agent b;
    th_agent_new(&b, "host-self");
    c = th_connect(&dmn, &pki, b.self_cert, b.key_pem, why, sizeof(why));
    assert_non_null(c);
    assert_int_equal(th_unary(c, "/aegis.v1.OperatorService/ListAgents", &la.base,
                              &aegis__v1__list_agents_response__descriptor, &resp, &st),
                     AEGIS_GRPC_UNAUTHENTICATED);
    th_close(c);
    /* A fleet certificate whose key was never enrolled is refused at the handshake. */
    c = th_connect(&dmn, &pki, pki.agentca_cert, pki.agentca_key, why, sizeof(why));
    assert_null(c);
    assert_non_null(strstr(why, "unknown agent key"));
    assert_true(th_wait_audit(op, "rpc_denied", NULL, NULL, 3, 5 * AEGIS_NS_PER_S) >= 3);
    th_agent_free(&a);
    th_agent_free(&b);
}

static void test_list_agents_and_tokens(void **state)
{
    (void)state;
    struct th_status st;
    Aegis__V1__ListAgentsRequest la = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    la.selector = (char *)"env=test";
    page.limit = 2;
    la.page = &page;
    Aegis__V1__ListAgentsResponse *r1, *r2;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListAgents", &la.base,
                              &aegis__v1__list_agents_response__descriptor,
                              (ProtobufCMessage **)&r1, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(r1->n_agents, 2);
    assert_true(r1->page->next_page_token[0] != '\0');
    for (size_t i = 0; i < r1->n_agents; i++) {
        assert_int_equal(r1->agents[i]->labels->n_entries, 1);
        assert_string_equal(r1->agents[i]->labels->entries[0]->value, "test");
        assert_int_equal(r1->agents[i]->spki_sha256.len, 32);
    }
    page.page_token = r1->page->next_page_token;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListAgents", &la.base,
                              &aegis__v1__list_agents_response__descriptor,
                              (ProtobufCMessage **)&r2, &st),
                     AEGIS_GRPC_OK);
    assert_true(r2->n_agents >= 1);
    /* ordered by id, pages do not overlap */
    assert_true(strcmp(r2->agents[0]->agent_id, r1->agents[1]->agent_id) > 0);
    th_msg_free(&r1->base);
    th_msg_free(&r2->base);
    /* status filter: nobody is revoked in this daemon's database */
    Aegis__V1__ListAgentsRequest lr = AEGIS__V1__LIST_AGENTS_REQUEST__INIT;
    lr.status = AEGIS__V1__AGENT_STATUS__AGENT_STATUS_REVOKED;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListAgents", &lr.base,
                              &aegis__v1__list_agents_response__descriptor,
                              (ProtobufCMessage **)&r1, &st),
                     AEGIS_GRPC_OK);
    assert_int_equal(r1->n_agents, 0);
    th_msg_free(&r1->base);
    lr.selector = (char *)"bad selector";
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListAgents", &lr.base,
                              &aegis__v1__list_agents_response__descriptor,
                              (ProtobufCMessage **)&r1, &st),
                     AEGIS_GRPC_INVALID_ARGUMENT);

    Aegis__V1__ListTokensRequest lt = AEGIS__V1__LIST_TOKENS_REQUEST__INIT;
    Aegis__V1__ListTokensResponse *t1, *t2;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListTokens", &lt.base,
                              &aegis__v1__list_tokens_response__descriptor,
                              (ProtobufCMessage **)&t1, &st),
                     AEGIS_GRPC_OK);
    lt.include_inactive = 1;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/ListTokens", &lt.base,
                              &aegis__v1__list_tokens_response__descriptor,
                              (ProtobufCMessage **)&t2, &st),
                     AEGIS_GRPC_OK);
    /* used-up, revoked and expired tokens only show with include_inactive */
    assert_true(t2->n_tokens >= t1->n_tokens + 3);
    for (size_t i = 0; i < t2->n_tokens; i++)
        assert_string_equal(t2->tokens[i]->secret, ""); /* never listed */
    for (size_t i = 0; i < t1->n_tokens; i++)
        assert_false(t1->tokens[i]->revoked);
    th_msg_free(&t1->base);
    th_msg_free(&t2->base);
}

static void test_metrics_and_health(void **state)
{
    (void)state;
    /* The page is re-rendered once per sweep interval (1 s): wait for the refused handshake
     * of the previous test to show. */
    char *buf = malloc(256 * 1024);
    assert_non_null(buf);
    int found = 0;
    aegis_tstamp end = aegis_now() + 5 * AEGIS_NS_PER_S;
    while (!found && aegis_now() < end) {
        assert_int_equal(th_http_get(dmn.metrics_port, "/metrics", buf, 256 * 1024), 200);
        found = strstr(buf, "aegis_handshakes_total{outcome=\"refused_unknown\"} 1") != NULL;
        if (!found)
            th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    assert_true(found);
    assert_non_null(strstr(buf, "aegis_rpcs_total{method=\"/aegis.v1.AgentService/Enroll\""));
    assert_non_null(strstr(buf, "aegis_db_queue_depth"));
    assert_non_null(strstr(buf, "aegis_connected_agents"));
    assert_int_equal(th_http_get(dmn.metrics_port, "/healthz", buf, 4096), 200);
    assert_non_null(strstr(buf, "ok"));
    assert_int_equal(th_http_get(dmn.metrics_port, "/nope", buf, 4096), 404);
    free(buf);
}

static void test_sighup_reloads_artifact_keys(void **state)
{
    (void)state;
    struct aegis_key *k2;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &k2), 0);
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/artifact-keys", pki.dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    th_write_pubkey(k2, dir, "second.pub");
    aegis_key_del(k2);
    assert_int_equal(kill(dmn.pid, SIGHUP), 0);
    assert_true(th_log_wait(&dmn, "event=reloaded artifact_keys=2", 5 * AEGIS_NS_PER_S));
    struct th_agent a;
    th_agent_new(&a, "host-hup");
    const char *tok = th_op_token(op, 1, 3600, NULL, NULL, NULL);
    Aegis__V1__EnrollResponse *resp = NULL;
    assert_int_equal(th_enroll(&a, &dmn, &pki, tok, &resp), AEGIS_GRPC_OK);
    assert_int_equal(resp->n_artifact_signing_keys, 2);
    th_msg_free(&resp->base);
    th_agent_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enroll_valid),
        cmocka_unit_test(test_enroll_refused_tokens),
        cmocka_unit_test(test_auth_first),
        cmocka_unit_test(test_auth_failures_audited),
        cmocka_unit_test(test_version_rule),
        cmocka_unit_test(test_authz_negatives),
        cmocka_unit_test(test_list_agents_and_tokens),
        cmocka_unit_test(test_metrics_and_health),
        cmocka_unit_test(test_sighup_reloads_artifact_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
