/*
 * The batched hot paths of the daemon (ctl_batch.c) end to end: a fan-out to subscribed
 * agents is pushed from memory (no Subscribe query per agent), acks arriving together run as
 * fewer statements than acks (at most --db-batch-items each) and each reply comes only after
 * its row is committed, and a batch mixing good, unknown and repeated acks answers each one
 * on its own.
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

#define K 12

static struct th_pki pki;
static struct th_daemon dmn;
static struct th_client *op;
static const char *dsn;

static int setup(void **state)
{
    (void)state;
    dsn = test_dsn();
    th_pki_make(&pki);
    /* The metrics page is rebuilt once per sweep; statements of at most 4 items, so a burst
     * of K acks must be split (the limit is enforced, DESIGN §8). */
    const char *extra[] = {"--sweep-interval-ms", "100", "--db-batch-items", "4", NULL};
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
    assert_int_equal(st, 0);
    return 0;
}

/* metric reads one counter of the daemon's /metrics page (-1 if absent). */
static long long metric(const char *name)
{
    static char page[256 * 1024];
    if (th_http_get(dmn.metrics_port, "/metrics", page, sizeof(page)) != 200)
        return -1;
    const char *p = strstr(page, name);
    if (!p)
        return -1;
    return strtoll(p + strlen(name), NULL, 10);
}

/* metric_settled waits until a counter stops at >= want (the page lags a sweep interval). */
static long long metric_at_least(const char *name, long long want)
{
    long long v = -1;
    aegis_tstamp end = aegis_now() + 5 * AEGIS_NS_PER_S;
    while ((v = metric(name)) < want && aegis_now() < end)
        th_run(50 * AEGIS_NS_PER_MS, NULL, NULL);
    return v;
}

static void send_to_label(const char *selector, char id[37], uint32_t *ntargets)
{
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    ra.name = (char *)"noop";
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    t.selector = (char *)selector;
    req.target = &t;
    req.command = &c;
    Aegis__V1__SendCommandResponse *resp;
    struct th_status st;
    assert_int_equal(th_unary(op, "/aegis.v1.OperatorService/SendCommand", &req.base,
                              &aegis__v1__send_command_response__descriptor,
                              (ProtobufCMessage **)&resp, &st),
                     AEGIS_GRPC_OK);
    snprintf(id, 37, "%s", resp->command_id);
    *ntargets = resp->targeted_agents;
    th_msg_free(&resp->base);
}

static struct th_call *ack_start(struct th_client *c, const char *id, uint64_t seq,
                                 Aegis__V1__CommandState s)
{
    Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
    req.command_id = (char *)id;
    req.sequence = seq;
    req.state = s;
    req.detail = (char *)"batched";
    struct th_call *k = th_call_start(c, "/aegis.v1.AgentService/Ack", AEGIS_RPC_UNARY);
    assert_non_null(k);
    assert_int_equal(th_call_send(k, &req.base), 0);
    th_call_close_send(k);
    return k;
}

/* ack_wait returns the recorded state, or -status when the call failed. */
static int ack_wait(struct th_call *k)
{
    Aegis__V1__AckResponse *resp = NULL;
    int got = th_call_next(k, &aegis__v1__ack_response__descriptor, (ProtobufCMessage **)&resp,
                           10 * AEGIS_NS_PER_S);
    struct th_status st;
    assert_int_equal(th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st), 1);
    th_call_free(k);
    if (got != 1)
        return -st.code;
    int r = resp->recorded_state;
    th_msg_free(&resp->base);
    return r;
}

struct fleet {
    struct th_agent a[K];
    struct th_client *c[K];
    struct th_call *sub[K];
};

static void fleet_up(struct fleet *f, const char *label)
{
    char why[160];
    for (int i = 0; i < K; i++) {
        char host[32];
        snprintf(host, sizeof(host), "%s-%d", label, i);
        th_agent_new(&f->a[i], host);
        const char *tok = th_op_token(op, 1, 3600, "batch", label, NULL);
        assert_int_equal(th_enroll(&f->a[i], &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
        f->c[i] = th_agent_connect(&f->a[i], &dmn, &pki, why, sizeof(why));
        if (!f->c[i])
            fail_msg("agent refused: %s", why);
        assert_int_equal(th_auth(f->c[i], &f->a[i], TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
        Aegis__V1__SubscribeRequest sr = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
        f->sub[i] =
            th_call_start(f->c[i], "/aegis.v1.AgentService/Subscribe", AEGIS_RPC_SERVER_STREAMING);
        th_call_send(f->sub[i], &sr.base);
        th_call_close_send(f->sub[i]);
    }
}

static void fleet_down(struct fleet *f)
{
    for (int i = 0; i < K; i++) {
        th_call_free(f->sub[i]);
        th_close(f->c[i]);
        th_agent_free(&f->a[i]);
    }
}

/* next_seq waits for a pushed command on agent i's stream and returns its sequence. */
static uint64_t next_seq(struct fleet *f, int i, const char *want_id)
{
    Aegis__V1__SignedCommand *sc = NULL;
    assert_int_equal(th_call_next(f->sub[i], &aegis__v1__signed_command__descriptor,
                                  (ProtobufCMessage **)&sc, 10 * AEGIS_NS_PER_S),
                     1);
    Aegis__V1__Command *cmd = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, sc->command.data,
                                        sc->command.len, 1 << 20, NULL, (ProtobufCMessage **)&cmd),
                     0);
    assert_string_equal(cmd->id, want_id);
    assert_string_equal(cmd->agent_ids[0], f->a[i].agent_id);
    uint64_t seq = cmd->sequence;
    aegis_proto_free(&cmd->base, NULL);
    th_msg_free(&sc->base);
    return seq;
}

static long long rows_in(const char *id, const char *status)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deliveries WHERE command_id = '%s' AND status = '%s'", id,
             status);
    return th_sql_ll(dsn, sql);
}

static void test_fanout_pushed_and_acks_batched(void **state)
{
    (void)state;
    static struct fleet f;
    fleet_up(&f, "fan");
    /* Every stream has been pumped once at Subscribe; the fan-out must add no pump. */
    long long pumps = metric_at_least("aegis_db_batch_items_total{batch=\"pump\"} ", K);
    assert_true(pumps >= K);
    long long ack_items0 = metric("aegis_db_batch_items_total{batch=\"ack\"} ");
    long long ack_stmts0 = metric("aegis_db_batch_statements_total{batch=\"ack\"} ");
    assert_true(ack_items0 >= 0 && ack_stmts0 >= 0);

    char id[37];
    uint32_t n = 0;
    send_to_label("batch=fan", id, &n);
    assert_int_equal(n, K);
    uint64_t seq[K];
    for (int i = 0; i < K; i++)
        seq[i] = next_seq(&f, i, id);
    /* Stored as delivered in the same statement that created them. */
    assert_int_equal(rows_in(id, "delivered"), K);

    /* All acks leave in one client loop turn. */
    struct th_call *k[K];
    for (int i = 0; i < K; i++)
        k[i] = ack_start(f.c[i], id, seq[i], AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
    for (int i = 0; i < K; i++) {
        assert_int_equal(ack_wait(k[i]), AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
        /* Committed before the reply: at least this many rows are durable already. */
        assert_true(rows_in(id, "succeeded") >= i + 1);
    }
    assert_int_equal(rows_in(id, "succeeded"), K);

    long long ack_items =
        metric_at_least("aegis_db_batch_items_total{batch=\"ack\"} ", ack_items0 + K);
    long long ack_stmts = metric("aegis_db_batch_statements_total{batch=\"ack\"} ");
    assert_int_equal(ack_items - ack_items0, K);
    /* Fewer statements than acks, but never more than 4 acks in one. */
    assert_true(ack_stmts - ack_stmts0 < K);
    assert_true(ack_stmts - ack_stmts0 >= K / 4);
    assert_int_equal(metric("aegis_db_batch_items_total{batch=\"pump\"} "), pumps);
    assert_int_equal(metric("aegis_db_batch_failed_total{batch=\"ack\"} "), 0);
    fleet_down(&f);
}

static void test_mixed_batch_answers_each(void **state)
{
    (void)state;
    static struct fleet f;
    fleet_up(&f, "mix");
    char id[37];
    uint32_t n = 0;
    send_to_label("batch=mix", id, &n);
    assert_int_equal(n, K);
    uint64_t seq[K];
    for (int i = 0; i < K; i++)
        seq[i] = next_seq(&f, i, id);
    /* In one turn: agents 0..3 ack RECEIVED and SUCCEEDED together (collapse to succeeded),
     * 4..7 ack a sequence they do not have (not found), 8..11 ack RECEIVED only. */
    struct th_call *k[2 * K];
    int nk = 0;
    for (int i = 0; i < K; i++) {
        if (i < 4) {
            k[nk++] =
                ack_start(f.c[i], id, seq[i], AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED);
            k[nk++] =
                ack_start(f.c[i], id, seq[i], AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
        } else if (i < 8) {
            k[nk++] = ack_start(f.c[i], id, seq[i] + 100,
                                AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
        } else {
            k[nk++] =
                ack_start(f.c[i], id, seq[i], AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED);
        }
    }
    nk = 0;
    for (int i = 0; i < K; i++) {
        if (i < 4) {
            int r1 = ack_wait(k[nk++]), r2 = ack_wait(k[nk++]);
            /* The RECEIVED reply says received or (same statement) succeeded; never less. */
            assert_true(r1 == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED ||
                        r1 == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
            assert_int_equal(r2, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED);
        } else if (i < 8) {
            assert_int_equal(ack_wait(k[nk++]), -AEGIS_GRPC_NOT_FOUND);
        } else {
            assert_int_equal(ack_wait(k[nk++]), AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED);
        }
    }
    assert_int_equal(rows_in(id, "succeeded"), 4);
    assert_int_equal(rows_in(id, "delivered"), 4);
    assert_int_equal(rows_in(id, "acked"), 4);
    /* The resume point moved for the agents that acked a real delivery, not for the rest. */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM agents a JOIN deliveries d ON d.agent_id = a.id"
             " WHERE d.command_id = '%s' AND a.last_acked_sequence = d.sequence",
             id);
    assert_int_equal(th_sql_ll(dsn, sql), 8);
    fleet_down(&f);
}

/* A wake-up that never came (a pump the database refused, a NOTIFY missed) leaves a
 * delivery queued for a subscribed agent: the sweep's safety net pushes it anyway. The
 * row is put back to queued behind the daemon's back, with no NOTIFY. */
static void test_stale_queued_row_pushed_by_sweep(void **state)
{
    (void)state;
    static struct fleet f;
    fleet_up(&f, "stale");
    char id[37];
    uint32_t n = 0;
    send_to_label("batch=stale", id, &n);
    assert_int_equal(n, K);
    for (int i = 0; i < K; i++)
        (void)next_seq(&f, i, id);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "WITH u AS (UPDATE deliveries SET status = 'queued', delivered_at = NULL,"
             " next_retry_at = NULL, updated_at = now() - interval '1 minute'"
             " WHERE command_id = '%s' AND agent_id = '%s' RETURNING 1) SELECT count(*) FROM u",
             id, f.a[0].agent_id);
    assert_int_equal(th_sql_ll(dsn, sql), 1);
    /* Pushed again on the same stream (sweeps run every 100 ms here), and marked delivered. */
    (void)next_seq(&f, 0, id);
    assert_int_equal(rows_in(id, "queued"), 0);
    assert_int_equal(rows_in(id, "delivered"), K);
    fleet_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fanout_pushed_and_acks_batched),
        cmocka_unit_test(test_mixed_batch_answers_each),
        cmocka_unit_test(test_stale_queued_row_pushed_by_sweep),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
