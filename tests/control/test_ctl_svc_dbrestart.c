/*
 * PostgreSQL restarts in the middle of traffic: the daemon stays up, RPCs that need the
 * database answer UNAVAILABLE with an aegis-retry-after-ms hint meanwhile, every write that
 * was acknowledged before is still there afterwards, and live streams resume (a command sent
 * after the restart reaches the agent on its old Subscribe stream).
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
static struct th_daemon dmn;
static const char *dsn;

static int setup(void **state)
{
    (void)state;
    dsn = test_dsn();
    th_pki_make(&pki);
    th_daemon_start(&dmn, &pki, dsn, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int st = th_daemon_stop(&dmn);
    th_pki_free(&pki);
    assert_int_equal(st, 0);
    return 0;
}

static int send_noop(struct th_client *op, const char *agent, char id[37], struct th_status *st)
{
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    char *ids[1] = {(char *)agent};
    ra.name = (char *)"noop";
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    t.agent_ids = ids;
    t.n_agent_ids = 1;
    req.target = &t;
    req.command = &c;
    Aegis__V1__SendCommandResponse *resp;
    int code =
        th_unary(op, "/aegis.v1.OperatorService/SendCommand", &req.base,
                 &aegis__v1__send_command_response__descriptor, (ProtobufCMessage **)&resp, st);
    if (code == AEGIS_GRPC_OK) {
        snprintf(id, 37, "%s", resp->command_id);
        th_msg_free(&resp->base);
    }
    return code;
}

static int ack(struct th_client *c, const char *id, uint64_t seq, struct th_status *st)
{
    Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
    req.command_id = (char *)id;
    req.sequence = seq;
    req.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
    ProtobufCMessage *resp;
    int code = th_unary(c, "/aegis.v1.AgentService/Ack", &req.base,
                        &aegis__v1__ack_response__descriptor, &resp, st);
    if (resp)
        th_msg_free(resp);
    return code;
}

static Aegis__V1__Command *next_cmd(struct th_call *k, uint64_t timeout)
{
    Aegis__V1__SignedCommand *sc;
    if (th_call_next(k, &aegis__v1__signed_command__descriptor, (ProtobufCMessage **)&sc,
                     timeout) != 1)
        return NULL;
    Aegis__V1__Command *c = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, sc->command.data,
                                        sc->command.len, 1 << 20, NULL, (ProtobufCMessage **)&c),
                     0);
    th_msg_free(&sc->base);
    return c;
}

static void test_restart_mid_traffic(void **state)
{
    (void)state;
    char why[160];
    struct th_client *op = th_connect(&dmn, &pki, pki.op_cert, pki.op_key, why, sizeof(why));
    assert_non_null(op);
    struct th_agent a;
    th_agent_new(&a, "restart-host");
    const char *tok = th_op_token(op, 1, 3600, NULL, NULL, NULL);
    assert_int_equal(th_enroll(&a, &dmn, &pki, tok, NULL), AEGIS_GRPC_OK);
    struct th_client *c = th_agent_connect(&a, &dmn, &pki, why, sizeof(why));
    assert_non_null(c);
    assert_int_equal(th_auth(c, &a, TH_AUTH_OK, 0, NULL), AEGIS_GRPC_OK);
    Aegis__V1__SubscribeRequest sr = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    struct th_call *sub =
        th_call_start(c, "/aegis.v1.AgentService/Subscribe", AEGIS_RPC_SERVER_STREAMING);
    th_call_send(sub, &sr.base);
    th_call_close_send(sub);

    /* Two commands; the first is acked (acknowledged write) before the restart. */
    char id1[37], id2[37];
    struct th_status st;
    assert_int_equal(send_noop(op, a.agent_id, id1, &st), AEGIS_GRPC_OK);
    assert_int_equal(send_noop(op, a.agent_id, id2, &st), AEGIS_GRPC_OK);
    Aegis__V1__Command *c1 = next_cmd(sub, 5 * AEGIS_NS_PER_S);
    Aegis__V1__Command *c2 = next_cmd(sub, 5 * AEGIS_NS_PER_S);
    assert_non_null(c1);
    assert_non_null(c2);
    assert_int_equal(ack(c, id1, c1->sequence, &st), AEGIS_GRPC_OK);

    /* Restart (immediate mode: in-flight work is cut off) while traffic continues. */
    int fd = test_pgtmp_spawn("restart", "immediate");
    int saw_unavailable = 0, exited = 0, status = -1;
    long retry_ms = -1;
    aegis_tstamp end = aegis_now() + 60 * AEGIS_NS_PER_S;
    while (!exited && aegis_now() < end) {
        Aegis__V1__GetAgentRequest g = AEGIS__V1__GET_AGENT_REQUEST__INIT;
        g.agent_id = a.agent_id;
        ProtobufCMessage *resp;
        int code = th_unary(op, "/aegis.v1.OperatorService/GetAgent", &g.base,
                            &aegis__v1__get_agent_response__descriptor, &resp, &st);
        if (resp)
            th_msg_free(resp);
        if (code == AEGIS_GRPC_UNAVAILABLE) {
            saw_unavailable = 1;
            if (st.retry_after_ms > 0)
                retry_ms = st.retry_after_ms;
        } else if (code != AEGIS_GRPC_OK && code != AEGIS_GRPC_INTERNAL) {
            fail_msg("unexpected status %d (%s) during the restart", code, st.message);
        }
        /* the daemon is still there */
        assert_int_equal(kill(dmn.pid, 0), 0);
        exited = test_child_exited(fd, &status);
        if (!exited)
            th_run(20 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    assert_true(exited);
    assert_int_equal(status, 0);
    assert_true(saw_unavailable);
    assert_true(retry_ms > 0);

    /* Back: the pending ack goes through once the pool has reconnected (retry with a deadline,
     * as an agent honouring retry-after would). */
    int code = -1;
    end = aegis_now() + 30 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        code = ack(c, id2, c2->sequence, &st);
        if (code == AEGIS_GRPC_OK)
            break;
        assert_int_equal(code, AEGIS_GRPC_UNAVAILABLE);
        th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    assert_int_equal(code, AEGIS_GRPC_OK);
    /* Nothing acknowledged was lost. */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deliveries WHERE command_id IN ('%s', '%s')"
             " AND status = 'succeeded'",
             id1, id2);
    assert_int_equal(th_sql_ll(dsn, sql), 2);
    /* The old Subscribe stream still works: a new command arrives on it. */
    char id3[37];
    end = aegis_now() + 10 * AEGIS_NS_PER_S;
    while ((code = send_noop(op, a.agent_id, id3, &st)) != AEGIS_GRPC_OK && aegis_now() < end)
        th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(code, AEGIS_GRPC_OK);
    Aegis__V1__Command *c3 = next_cmd(sub, 10 * AEGIS_NS_PER_S);
    assert_non_null(c3);
    assert_string_equal(c3->id, id3);
    /* /healthz says ok again (the page is refreshed once per sweep interval). */
    char buf[256];
    int hc = 0;
    end = aegis_now() + 5 * AEGIS_NS_PER_S;
    while ((hc = th_http_get(dmn.metrics_port, "/healthz", buf, sizeof(buf))) != 200 &&
           aegis_now() < end)
        th_run(100 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(hc, 200);
    aegis_proto_free(&c1->base, NULL);
    aegis_proto_free(&c2->base, NULL);
    aegis_proto_free(&c3->base, NULL);
    th_call_free(sub);
    th_close(c);
    th_close(op);
    th_agent_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_mid_traffic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
