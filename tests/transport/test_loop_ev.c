/*
 * The libev glue over real UDP sockets on 127.0.0.1 (ephemeral ports):
 * handshake, unary call, a 4 MiB server stream, a refused client, and
 * connection counts back to zero. Every wait is bounded by a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <string.h>

static struct tpki pki;

/* Runs the loop until cond or `seconds` of real time. */
static int run_until(struct ev_loop *loop, int (*cond)(void *), void *arg, double seconds)
{
    aegis_tstamp end = aegis_now() + (aegis_tstamp)(seconds * 1e9);
    while (!cond(arg)) {
        if (aegis_now() > end)
            return 0;
        ev_run(loop, EVRUN_ONCE);
    }
    return 1;
}

/* A periodic wake-up so EVRUN_ONCE never blocks past the deadline. */
static void tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static int cond_est(void *arg)
{
    struct tcli *c = arg;
    return c->established || c->closed;
}

static int cond_closed(void *arg)
{
    return ((struct tcli *)arg)->closed > 0;
}

struct two {
    struct tres *a, *b;
};

static int cond_two(void *arg)
{
    struct two *t = arg;
    return t->a->done && t->b->done;
}

static void test_udp_end_to_end(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    ev_timer t;
    ev_timer_init(&t, tick, 0.05, 0.05);
    ev_timer_start(loop, &t);

    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.scfg.is_server = 1;
    struct aegis_ev *srv = NULL, *cli = NULL;
    assert_int_equal(aegis_ev_new(loop, &f.scfg, "127.0.0.1:0", &srv), 0);
    assert_int_equal(aegis_ev_new(loop, &f.ccfg, "127.0.0.1:0", &cli), 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%u", aegis_ev_port(srv));
    struct aegis_conn *conn = NULL;
    assert_int_equal(aegis_ev_connect(cli, target, "localhost", &conn), 0);
    assert_true(run_until(loop, cond_est, &f.cli, 5.0));
    assert_int_equal(f.cli.established, 1);
    assert_string_equal(f.svc.last_peer.subject_cn, "agent-1");

    struct tres u = {0}, d = {0};
    assert_int_equal(aegis_call_start(conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                      &tres_callbacks, &u, &u.call),
                     0);
    aegis_call_send(u.call, (const uint8_t *)"hello", 5);
    aegis_call_close_send(u.call);
    assert_int_equal(aegis_call_start(conn, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, NULL,
                                      &tres_callbacks, &d, &d.call),
                     0);
    aegis_call_send(d.call, (const uint8_t *)"4194304/65536", 13);
    aegis_call_close_send(d.call);
    struct two tw = {&u, &d};
    assert_true(run_until(loop, cond_two, &tw, 10.0));
    assert_int_equal(u.status, AEGIS_GRPC_OK);
    assert_int_equal(u.bytes, 5);
    assert_int_equal(d.status, AEGIS_GRPC_OK);
    assert_int_equal(d.bytes, 4194304);
    print_message("gso=%d\n", aegis_ev_gso(srv));

    /* close from the client: the server hears it */
    assert_int_equal(aegis_conn_close(conn, 0x100, "bye"), 0);
    assert_true(run_until(loop, cond_closed, &f.cli, 5.0));
    struct aegis_endpoint *sep = aegis_ev_endpoint(srv);
    for (int i = 0; i < 200 && f.svc.srv_closed == 0; i++)
        ev_run(loop, EVRUN_ONCE);
    assert_int_equal(f.svc.srv_closed, 1);
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_PEER_APP);
    assert_string_equal(f.svc.srv_why.reason, "bye");
    (void)sep;
    aegis_ev_del(cli);
    aegis_ev_del(srv);
    ev_timer_stop(loop, &t);
    ev_loop_destroy(loop);
}

static void test_udp_refused_client(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.05, 0.05);
    ev_timer_start(loop, &t);
    struct tfx f;
    tfx_config(&f, &pki, &pki.rogue_client);
    f.scfg.is_server = 1;
    struct aegis_ev *srv = NULL, *cli = NULL;
    assert_int_equal(aegis_ev_new(loop, &f.scfg, "127.0.0.1:0", &srv), 0);
    assert_int_equal(aegis_ev_new(loop, &f.ccfg, "127.0.0.1:0", &cli), 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%u", aegis_ev_port(srv));
    struct aegis_conn *conn = NULL;
    assert_int_equal(aegis_ev_connect(cli, target, NULL, &conn), 0);
    assert_true(run_until(loop, cond_closed, &f.cli, 5.0));
    assert_int_equal(f.cli.established, 0);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_TLS_ALERT);
    assert_string_equal(f.cli.why.reason, "certificate not issued by the trusted CA");
    aegis_ev_del(cli);
    aegis_ev_del(srv);
    ev_timer_stop(loop, &t);
    ev_loop_destroy(loop);
}

static void test_parse_addr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t l;
    assert_int_equal(aegis_parse_addr("127.0.0.1:443", &ss, &l), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(aegis_parse_addr("[::1]:0", &ss, &l), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(aegis_parse_addr("localhost:1", &ss, &l), -EINVAL);
    assert_int_equal(aegis_parse_addr("1.2.3.4:70000", &ss, &l), -EINVAL);
    assert_int_equal(aegis_parse_addr("1.2.3.4", &ss, &l), -EINVAL);
}

int main(void)
{
    tpki_make(&pki);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_udp_end_to_end),
        cmocka_unit_test(test_udp_refused_client),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tpki_free(&pki);
    return rv;
}
