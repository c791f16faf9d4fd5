/*
 * Commands end to end with the real daemon: queued while offline, delivered on connect,
 * signed with the command key, acked (duplicates idempotent), redelivered after a missing
 * ack, expired; WatchCommand; revocation closing a live connection within 1 s; two instances
 * on one database routing a command and a revocation across instances.
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

static struct th_pki pki;
static struct th_daemon dmn, dmn2;
static struct th_client *op;
static const char *dsn;

static int setup(void **state)
{
    (void)state;
    dsn = test_dsn();
    th_pki_make(&pki);
    /* Fast redelivery and sweeps so the retry and expiry cases take a moment. */
    const char *extra[] = {"--redeliver-base-ms", "400", "--sweep-interval-ms", "100", NULL};
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
    th_daemon_stop(&dmn2);
    th_pki_free(&pki);
    assert_int_equal(st, 0);
    return 0;
}

static void enroll(struct th_agent *a, const char *host)
{
    th_agent_new(a, host);
    const char *tok = th_op_token(op, 1, 3600, "env", "cmdtest", NULL);
    assert_int_equal(th_enroll(a, &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
}

static struct th_client *online(struct th_agent *a, const struct th_daemon *d)
{
    char why[160];
    struct th_client *c = th_agent_connect(a, d, &pki, why, sizeof(why));
    if (!c)
        fail_msg("agent refused: %s", why);
    assert_int_equal(th_auth(c, a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    return c;
}

static struct th_call *subscribe(struct th_client *c, uint64_t after)
{
    Aegis__V1__SubscribeRequest sub = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    sub.after_sequence = after;
    struct th_call *k =
        th_call_start(c, "/aegis.v1.AgentService/Subscribe", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(k, &sub.base);
    th_call_close_send(k);
    return k;
}

/* send_action sends RunAction "noop" to ids (or selector); returns the command id. */
static void send_action(const char *const *ids, size_t n, const char *selector, uint32_t life,
                        char id[37], uint32_t *ntargets)
{
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    ra.name = (char *)"noop";
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    t.agent_ids = (char **)ids;
    t.n_agent_ids = n;
    t.selector = (char *)(selector ? selector : "");
    req.target = &t;
    req.command = &c;
    req.lifetime_seconds = life;
    Aegis__V1__SendCommandResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/SendCommand", &req.base,
                              &aegis__v1__send_command_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    snprintf(id, 37, "%s", resp->command_id);
    if (ntargets)
        *ntargets = resp->targeted_agents;
    th_msg_free(&resp->base);
}

/* next_command waits for a pushed command, verifies its signature with the key from Enroll
 * and returns it parsed (caller frees). */
static Aegis__V1__Command *next_command(struct th_call *k, const struct th_agent *a,
                                        uint64_t timeout_ns)
{
    Aegis__V1__SignedCommand *sc = NULL;
    if (th_call_next(k, &aegis__v1__signed_command__descriptor, (ProtobufCMessage **)&sc,
                     timeout_ns) != 1)
        return NULL;
    static const uint8_t prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                       0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    uint8_t spki[44];
    memcpy(spki, prefix, 12);
    memcpy(spki + 12, a->command_pub, 32);
    assert_int_equal(aegis_spki_verify(spki, 44, sc->command.data, sc->command.len,
                                       sc->signature.data, sc->signature.len),
                     0);
    assert_int_equal(strlen(sc->key_id), 16);
    Aegis__V1__Command *cmd = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, sc->command.data,
                                        sc->command.len, 1 << 20, NULL, (ProtobufCMessage **)&cmd),
                     0);
    th_msg_free(&sc->base);
    assert_int_equal(cmd->n_agent_ids, 1);
    assert_string_equal(cmd->agent_ids[0], a->agent_id);
    assert_true(cmd->expires_unix_ns > cmd->issued_unix_ns);
    assert_int_equal(cmd->nonce.len, 16);
    return cmd;
}

static int ack(struct th_client *c, const char *id, uint64_t seq, Aegis__V1__CommandState s)
{
    Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
    req.command_id = (char *)id;
    req.sequence = seq;
    req.state = s;
    req.detail = (char *)"done";
    Aegis__V1__AckResponse *resp;
    struct th_status st;
    int code = th_unary(c, "/aegis.v1.AgentService/Ack", &req.base,
                        &aegis__v1__ack_response__descriptor, (ProtobufCMessage **)&resp, &st);
    if (code != AEGIS_GRPC_OK)
        return -code;
    int r = resp->recorded_state;
    th_msg_free(&resp->base);
    return r;
}

/* delivery returns the state and attempts of id's delivery to agent. */
static int delivery(const char *id, const char *agent, uint32_t *attempts)
{
    Aegis__V1__GetCommandRequest req = AEGIS__V1__GET_COMMAND_REQUEST__INIT;
    req.command_id = (char *)id;
    Aegis__V1__GetCommandResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/GetCommand", &req.base,
                              &aegis__v1__get_command_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    int state = -1;
    for (size_t i = 0; i < resp->n_deliveries; i++)
        if (strcmp(resp->deliveries[i]->agent_id, agent) == 0) {
            state = resp->deliveries[i]->state;
            if (attempts)
                *attempts = resp->deliveries[i]->attempts;
        }
    th_msg_free(&resp->base);
    return state;
}

static void test_offline_queue_deliver_ack(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-1");
    char id[37];
    const char *ids[1] = {a.agent_id};
    uint32_t n;
    send_action(ids, 1, NULL, 0, id, &n);
    assert_int_equal(n, 1);
    assert_int_equal(delivery(id, a.agent_id, NULL),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_QUEUED);

    struct th_client *c = online(&a, &dmn);
    struct th_call *k = subscribe(c, 0);
    Aegis__V1__Command *cmd = next_command(k, &a, 5 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    assert_int_equal(cmd->sequence, 1);
    assert_int_equal(cmd->payload_case, AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION);
    assert_string_equal(cmd->run_action->name, "noop");
    uint32_t attempts = 0;
    /* delivered is recorded right after the push */
    aegis_tstamp end = aegis_now() + 5 * AEGIS_NS_PER_S;
    while (delivery(id, a.agent_id, &attempts) !=
               AEGIS__V1__COMMAND_STATE__COMMAND_STATE_DELIVERED &&
           aegis_now() < end)
        th_run(20 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(attempts, 1);
    assert_int_equal(ack(c, id, 1, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED);
    assert_int_equal(ack(c, id, 1, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    /* Duplicates and late, lower states change nothing. */
    assert_int_equal(ack(c, id, 1, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    assert_int_equal(ack(c, id, 1, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    /* Wrong sequence for that id: not found. */
    assert_int_equal(ack(c, id, 7, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     -AEGIS_GRPC_NOT_FOUND);
    /* Durable before the reply: the database already says so. */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deliveries WHERE command_id = '%s' AND status = 'succeeded'",
             id);
    assert_int_equal(th_sql_ll(dsn, sql), 1);
    snprintf(sql, sizeof(sql), "SELECT last_acked_sequence FROM agents WHERE id = '%s'",
             a.agent_id);
    assert_int_equal(th_sql_ll(dsn, sql), 1);
    aegis_proto_free(&cmd->base, NULL);

    /* Live push on the open stream, by label selector. */
    char id2[37];
    send_action(NULL, 0, "env=cmdtest", 0, id2, &n);
    assert_true(n >= 1);
    cmd = next_command(k, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id2);
    assert_int_equal(cmd->sequence, 2);
    assert_int_equal(ack(c, id2, 2, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    aegis_proto_free(&cmd->base, NULL);
    th_call_free(k);
    th_close(c);
    th_agent_free(&a);
}

static void test_redelivery_and_resume(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-2");
    struct th_client *c = online(&a, &dmn);
    struct th_call *k = subscribe(c, 0);
    char id[37];
    const char *ids[1] = {a.agent_id};
    send_action(ids, 1, NULL, 0, id, NULL);
    Aegis__V1__Command *cmd = next_command(k, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    aegis_proto_free(&cmd->base, NULL);
    /* No ack: the same command comes again after the redelivery delay (400 ms here). */
    cmd = next_command(k, &a, 5 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    uint64_t seq = cmd->sequence;
    aegis_proto_free(&cmd->base, NULL);
    uint32_t attempts = 0;
    aegis_tstamp end = aegis_now() + 5 * AEGIS_NS_PER_S;
    do {
        delivery(id, a.agent_id, &attempts);
        if (attempts >= 2)
            break;
        th_run(20 * AEGIS_NS_PER_MS, NULL, NULL);
    } while (aegis_now() < end);
    assert_true(attempts >= 2);
    /* Reconnect: the unacked command comes again after the last acked sequence (0). */
    th_call_free(k);
    th_close(c);
    c = online(&a, &dmn);
    k = subscribe(c, 0);
    cmd = next_command(k, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    aegis_proto_free(&cmd->base, NULL);
    assert_int_equal(ack(c, id, seq, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    /* Resubscribing after the acked sequence sends nothing old. */
    th_call_free(k);
    k = subscribe(c, seq);
    assert_int_equal(th_call_next(k, &aegis__v1__signed_command__descriptor, NULL, 0), -1);
    char id2[37];
    send_action(ids, 1, NULL, 0, id2, NULL);
    cmd = next_command(k, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id2); /* the first thing on the stream is the new one */
    aegis_proto_free(&cmd->base, NULL);
    th_call_free(k);
    th_close(c);
    th_agent_free(&a);
}

/* A command stored after a higher sequence was already acked (two concurrent SendCommands
 * committing out of order) is still delivered: never-sent rows go out whatever the resume
 * point. Simulated by resubscribing far above the queued command's sequence. */
static void test_queued_below_resume_point(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-8");
    char id[37];
    const char *ids[1] = {a.agent_id};
    send_action(ids, 1, NULL, 0, id, NULL);
    struct th_client *c = online(&a, &dmn);
    struct th_call *k = subscribe(c, 50);
    Aegis__V1__Command *cmd = next_command(k, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    assert_int_equal(cmd->sequence, 1);
    aegis_proto_free(&cmd->base, NULL);
    th_call_free(k);
    th_close(c);
    th_agent_free(&a);
}

static void test_expiry(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-3");
    char id[37];
    const char *ids[1] = {a.agent_id};
    send_action(ids, 1, NULL, 1, id, NULL); /* 1 s lifetime, agent offline */
    aegis_tstamp end = aegis_now() + 6 * AEGIS_NS_PER_S;
    int s;
    while ((s = delivery(id, a.agent_id, NULL)) !=
               AEGIS__V1__COMMAND_STATE__COMMAND_STATE_EXPIRED &&
           aegis_now() < end)
        th_run(50 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(s, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_EXPIRED);
    /* Not delivered when the agent comes online; a late ack records nothing new. */
    struct th_client *c = online(&a, &dmn);
    struct th_call *k = subscribe(c, 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(
        th_call_next(k, &aegis__v1__signed_command__descriptor, &m, 500 * AEGIS_NS_PER_MS), -1);
    assert_int_equal(ack(c, id, 1, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_EXPIRED);
    th_call_free(k);
    th_close(c);
    th_agent_free(&a);
}

static void test_watch_command(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-4");
    struct th_client *c = online(&a, &dmn);
    struct th_call *sub = subscribe(c, 0);
    char id[37];
    const char *ids[1] = {a.agent_id};
    send_action(ids, 1, NULL, 0, id, NULL);
    Aegis__V1__WatchCommandRequest wr = AEGIS__V1__WATCH_COMMAND_REQUEST__INIT;
    wr.command_id = id;
    struct th_call *w =
        th_call_start(op, "/aegis.v1.OperatorService/WatchCommand", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(w, &wr.base);
    th_call_close_send(w);
    Aegis__V1__CommandProgress *p = NULL;
    assert_int_equal(th_call_next(w, &aegis__v1__command_progress__descriptor,
                                  (ProtobufCMessage **)&p, 5 * AEGIS_NS_PER_S),
                     1);
    assert_string_equal(p->delivery->agent_id, a.agent_id);
    assert_false(p->done);
    th_msg_free(&p->base);
    Aegis__V1__Command *cmd = next_command(sub, &a, 3 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_int_equal(ack(c, id, cmd->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED),
                     AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    aegis_proto_free(&cmd->base, NULL);
    int done = 0;
    for (int i = 0; i < 20 && !done; i++) {
        if (th_call_next(w, &aegis__v1__command_progress__descriptor, (ProtobufCMessage **)&p,
                         5 * AEGIS_NS_PER_S) != 1)
            break;
        done = p->done;
        if (done) {
            assert_int_equal(p->delivery->state, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
            assert_int_equal(p->state_counts[AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED], 1);
        }
        th_msg_free(&p->base);
    }
    assert_true(done);
    struct th_status st;
    assert_true(th_call_wait_end(w, 5 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_OK);
    th_call_free(w);
    th_call_free(sub);
    th_close(c);
    th_agent_free(&a);
}

static void op_revoke(const char *agent_id)
{
    Aegis__V1__RevokeAgentRequest req = AEGIS__V1__REVOKE_AGENT_REQUEST__INIT;
    req.agent_id = (char *)agent_id;
    req.reason = (char *)"test";
    Aegis__V1__RevokeAgentResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/RevokeAgent", &req.base,
                              &aegis__v1__revoke_agent_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    assert_false(resp->already_revoked);
    th_msg_free(&resp->base);
}

static void test_revocation_closes_live_connection(void **state)
{
    (void)state;
    struct th_agent a;
    enroll(&a, "cmd-host-5");
    struct th_client *c = online(&a, &dmn);
    struct th_call *k = subscribe(c, 0);
    th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    aegis_tstamp t0 = aegis_now();
    op_revoke(a.agent_id);
    char why[160];
    assert_true(th_wait_closed(c, 1 * AEGIS_NS_PER_S, why, sizeof(why)));
    assert_true(aegis_now() - t0 < AEGIS_NS_PER_S);
    assert_non_null(strstr(why, "revoked"));
    th_call_free(k);
    th_close(c);
    /* The next handshake is refused with the same reason. */
    assert_null(th_agent_connect(&a, &dmn, &pki, why, sizeof(why)));
    assert_non_null(strstr(why, "revoked"));
    assert_true(th_wait_audit(op, "revoke", a.agent_id, NULL, 1, 5 * AEGIS_NS_PER_S) >= 1);
    th_agent_free(&a);
}

static void test_two_instances(void **state)
{
    (void)state;
    const char *extra[] = {"--redeliver-base-ms", "400", "--sweep-interval-ms", "100", NULL};
    th_daemon_start(&dmn2, &pki, dsn, extra);
    assert_string_not_equal(dmn.instance, dmn2.instance);
    struct th_agent a, b;
    enroll(&a, "cmd-host-6");
    enroll(&b, "cmd-host-7");
    /* Both agents live on instance 2; the operator talks to instance 1. */
    struct th_client *ca = online(&a, &dmn2);
    struct th_client *cb = online(&b, &dmn2);
    struct th_call *k = subscribe(ca, 0);
    th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    char id[37];
    const char *ids[1] = {a.agent_id};
    aegis_tstamp t0 = aegis_now();
    send_action(ids, 1, NULL, 0, id, NULL);
    Aegis__V1__Command *cmd = next_command(k, &a, 2 * AEGIS_NS_PER_S);
    assert_non_null(cmd);
    assert_string_equal(cmd->id, id);
    assert_true(aegis_now() - t0 < 2 * AEGIS_NS_PER_S);
    aegis_proto_free(&cmd->base, NULL);
    char why[160];
    t0 = aegis_now();
    op_revoke(b.agent_id);
    assert_true(th_wait_closed(cb, 1 * AEGIS_NS_PER_S, why, sizeof(why)));
    assert_true(aegis_now() - t0 < AEGIS_NS_PER_S);
    assert_non_null(strstr(why, "revoked"));
    /* Instance 2 refuses the revoked key too. */
    assert_null(th_agent_connect(&b, &dmn2, &pki, why, sizeof(why)));
    /* SIGTERM drains instance 2: the open Subscribe ends with UNAVAILABLE and a retry hint,
     * the connection closes, and the process exits 0. */
    assert_int_equal(kill(dmn2.pid, SIGTERM), 0);
    struct th_status st;
    assert_true(th_call_wait_end(k, 5 * AEGIS_NS_PER_S, &st));
    assert_int_equal(st.code, AEGIS_GRPC_UNAVAILABLE);
    assert_true(st.retry_after_ms > 0);
    assert_int_equal(th_daemon_reap(&dmn2, 15 * AEGIS_NS_PER_S), 0);
    assert_true(th_wait_closed(ca, 5 * AEGIS_NS_PER_S, why, sizeof(why)));
    /* The drained instance released its agents. */
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM agents WHERE connected_instance IS NOT NULL"
             " AND id = '%s'",
             a.agent_id);
    assert_int_equal(th_sql_ll(dsn, sql), 0);
    th_call_free(k);
    th_close(ca);
    th_close(cb);
    th_agent_free(&a);
    th_agent_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offline_queue_deliver_ack),
        cmocka_unit_test(test_redelivery_and_resume),
        cmocka_unit_test(test_queued_below_resume_point),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_watch_command),
        cmocka_unit_test(test_revocation_closes_live_connection),
        cmocka_unit_test(test_two_instances),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
