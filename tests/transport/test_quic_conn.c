/*
 * QUIC connection behaviour (quic_conn.c, quic_endpoint.c) over the
 * in-memory network: loss and reordering, client address change, idle
 * timeout vs keep-alive, graceful shutdown, stateless reset, Retry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct tpki pki;

static uint32_t fnv(uint32_t h, const uint8_t *p, size_t n)
{
    if (!h)
        h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

struct many {
    struct tres *r;
    size_t n;
};

static int cond_all_done(void *arg)
{
    struct many *m = arg;
    for (size_t i = 0; i < m->n; i++)
        if (!m->r[i].done)
            return 0;
    return 1;
}

/* 10 % loss both ways plus reordering, from the first packet on. */
static void test_loss_and_reordering(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 42);
    f.net.loss_pct = 10;
    f.net.reorder_pct = 20;
    assert_true(tfx_connect(&f, 30 * AEGIS_NS_PER_S));
    enum { N = 100 };
    struct tres r[N + 2];
    memset(r, 0, sizeof(r));
    uint32_t want[N];
    for (int i = 0; i < N; i++) {
        uint8_t msg[300];
        for (size_t k = 0; k < sizeof(msg); k++)
            msg[k] = (uint8_t)(i * 7 + (int)k);
        want[i] = fnv(0, msg, sizeof(msg));
        assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                          &tres_callbacks, &r[i], &r[i].call),
                         0);
        assert_int_equal(aegis_call_send(r[i].call, msg, sizeof(msg)), 0);
        aegis_call_close_send(r[i].call);
    }
    /* a 1 MiB server stream and a bidi echo alongside */
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING,
                                      NULL, &tres_callbacks, &r[N], &r[N].call),
                     0);
    aegis_call_send(r[N].call, (const uint8_t *)"1048576/4096", 12);
    aegis_call_close_send(r[N].call);
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Bidi", AEGIS_RPC_BIDI, NULL,
                                      &tres_callbacks, &r[N + 1], &r[N + 1].call),
                     0);
    uint32_t bidi_want = 0;
    for (int i = 0; i < 20; i++) {
        uint8_t msg[1000];
        memset(msg, i, sizeof(msg));
        bidi_want = fnv(bidi_want, msg, sizeof(msg));
        assert_int_equal(aegis_call_send(r[N + 1].call, msg, sizeof(msg)), 0);
    }
    aegis_call_close_send(r[N + 1].call);
    struct many m = {r, N + 2};
    assert_true(tnet_run(&f.net, 120 * AEGIS_NS_PER_S, cond_all_done, &m));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].status, AEGIS_GRPC_OK);
        assert_int_equal(r[i].hash, want[i]);
    }
    assert_int_equal(r[N].status, AEGIS_GRPC_OK);
    assert_int_equal(r[N].bytes, 1048576);
    assert_int_equal(r[N + 1].status, AEGIS_GRPC_OK);
    assert_int_equal(r[N + 1].hash, bidi_want);
    assert_true(f.net.dropped > 10); /* the loss really happened */
    tfx_free(&f);
}

/* The client's address changes (NAT rebinding) in the middle of a call. */
static void test_client_address_change(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 7);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    struct tres r = {0};
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Bidi", AEGIS_RPC_BIDI, NULL,
                                      &tres_callbacks, &r, &r.call),
                     0);
    uint8_t msg[500];
    memset(msg, 3, sizeof(msg));
    for (int i = 0; i < 5; i++)
        aegis_call_send(r.call, msg, sizeof(msg));
    tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(r.nmsgs, 5);
    tnet_set_nat(&f.net, 50123);
    for (int i = 0; i < 5; i++)
        aegis_call_send(r.call, msg, sizeof(msg));
    aegis_call_close_send(r.call);
    assert_true(tnet_run(&f.net, 10 * AEGIS_NS_PER_S, tres_cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_OK);
    assert_int_equal(r.nmsgs, 10);
    assert_int_equal(f.cli.closed, 0);
    /* the server now talks to the new address */
    assert_non_null(f.svc.last_conn);
    const struct aegis_path *p = aegis_conn_path(f.svc.last_conn);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&p->remote)->sin_port), 50123);
    tfx_free(&f);

    /* active migration: the client moves to a new local address itself */
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 17);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    struct tres r2 = {0};
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Bidi", AEGIS_RPC_BIDI, NULL,
                                      &tres_callbacks, &r2, &r2.call),
                     0);
    aegis_call_send(r2.call, msg, sizeof(msg));
    tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
    struct aegis_path np = f.net.cli_path;
    ((struct sockaddr_in *)&np.local)->sin_port = htons(40077);
    assert_int_equal(aegis_conn_migrate(f.conn, &np, f.net.now), 0);
    f.net.cli_path = np;
    aegis_call_send(r2.call, msg, sizeof(msg));
    aegis_call_close_send(r2.call);
    assert_true(tnet_run(&f.net, 10 * AEGIS_NS_PER_S, tres_cond_done, &r2));
    assert_int_equal(r2.status, AEGIS_GRPC_OK);
    assert_int_equal(r2.nmsgs, 2);
    p = aegis_conn_path(f.svc.last_conn);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&p->remote)->sin_port), 40077);
    tfx_free(&f);
}

/* Keep-alive holds an idle connection open; without it (or when the path
 * goes dark) the idle timeout closes it on both sides. */
static void test_idle_vs_keepalive(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 8);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    tnet_run(&f.net, 300 * AEGIS_NS_PER_S, NULL, NULL); /* five idle timeouts */
    assert_int_equal(f.cli.closed, 0);
    assert_int_equal(f.svc.srv_closed, 0);
    assert_true(aegis_conn_is_established(f.conn));
    /* the path goes dark: both sides time out as idle */
    f.net.drop_all = 1;
    tnet_run(&f.net, 120 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.cli.closed, 1);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_IDLE);
    assert_int_equal(f.svc.srv_closed, 1);
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_IDLE);
    assert_int_equal(aegis_endpoint_conn_count(f.net.cli), 0);
    assert_int_equal(aegis_endpoint_conn_count(f.net.srv), 0);
    tfx_free(&f);

    /* keep-alive disabled on both sides: idle timeout after 60 s */
    tfx_config(&f, &pki, &pki.client);
    f.scfg.keepalive_ns = UINT64_MAX;
    f.ccfg.keepalive_ns = UINT64_MAX;
    tfx_start(&f, 9);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    tnet_run(&f.net, 50 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.cli.closed, 0);
    tnet_run(&f.net, 20 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.cli.closed, 1);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_IDLE);
    tfx_free(&f);
}

/* Only the client sends keep-alives by default: a server does not PING on
 * its own, so a client without keep-alive is closed by the idle timeout,
 * and a server configured with a keep-alive holds such a client. */
static void test_server_keepalive_default_off(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.keepalive_ns = UINT64_MAX;
    tfx_start(&f, 21);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    const struct aegis_transport_stats *ss = aegis_endpoint_stats(f.net.srv);
    tnet_run(&f.net, 2 * AEGIS_NS_PER_S, NULL, NULL);
    uint64_t sent0 = ss->pkts_sent;
    tnet_run(&f.net, 50 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(ss->pkts_sent, sent0); /* silence: no PING from the server */
    tnet_run(&f.net, 20 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.svc.srv_closed, 1);
    assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_IDLE);
    assert_int_equal(f.cli.closed, 1);
    tfx_free(&f);

    /* the server's own keep-alive, when configured, holds the same client */
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.keepalive_ns = UINT64_MAX;
    f.scfg.keepalive_ns = 20 * AEGIS_NS_PER_S;
    tfx_start(&f, 22);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    tnet_run(&f.net, 300 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.svc.srv_closed, 0);
    assert_int_equal(f.cli.closed, 0);
    assert_true(aegis_conn_is_established(f.conn));
    tfx_free(&f);
}

struct est_watch {
    struct tfx *f;
    int want;
};

static int cond_est_n(void *arg)
{
    struct est_watch *w = arg;
    return w->f->cli.established >= w->want || w->f->cli.closed > 0;
}

/* The endpoint's timer heap with many connections: 24 connections opened
 * 2 s apart, no keep-alive anywhere, so each one's idle timeout fires 60 s
 * after it went quiet, and the server must close them one by one, in order,
 * each inside its own window. */
static void test_idle_timers_in_order(void **state)
{
    (void)state;
    enum { N = 24 };
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.ccfg.keepalive_ns = UINT64_MAX;
    tfx_start(&f, 24);
    aegis_tstamp at[N];
    for (int i = 0; i < N; i++) {
        tnet_connect(&f.net);
        struct est_watch w = {&f, i + 1};
        assert_true(tnet_run(&f.net, 5 * AEGIS_NS_PER_S, cond_est_n, &w));
        at[i] = f.net.now;
        /* 2 s apart, measured from establishment */
        tnet_run(&f.net, at[i] + 2 * AEGIS_NS_PER_S - f.net.now, NULL, NULL);
    }
    assert_int_equal(f.cli.closed, 0);
    for (int i = 0; i < N; i++) {
        aegis_tstamp before = at[i] + 59 * AEGIS_NS_PER_S + AEGIS_NS_PER_S / 2;
        if (before > f.net.now)
            tnet_run(&f.net, before - f.net.now, NULL, NULL);
        assert_true(f.svc.srv_closed <= i);
        tnet_run(&f.net, at[i] + 61 * AEGIS_NS_PER_S - f.net.now, NULL, NULL);
        assert_int_equal(f.svc.srv_closed, i + 1);
        assert_int_equal(f.svc.srv_why.kind, AEGIS_CLOSE_IDLE);
    }
    assert_int_equal(aegis_endpoint_conn_count(f.net.srv), 0);
    tfx_free(&f);
}

/* A keep-alive that cannot fire before the idle timeout is refused. */
static void test_keepalive_config_checked(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    struct aegis_endpoint *ep = NULL;
    f.ccfg.keepalive_ns = 60 * AEGIS_NS_PER_S;
    f.ccfg.idle_timeout_ns = 60 * AEGIS_NS_PER_S;
    assert_int_equal(aegis_endpoint_new(&f.ccfg, &ep), AEGIS_ERR_CONFIG);
    assert_null(ep);
    f.ccfg.keepalive_ns = 0; /* default 15 s */
    f.ccfg.idle_timeout_ns = 10 * AEGIS_NS_PER_S;
    assert_int_equal(aegis_endpoint_new(&f.ccfg, &ep), AEGIS_ERR_CONFIG);
    f.ccfg.keepalive_ns = 3 * AEGIS_NS_PER_S;
    assert_int_equal(aegis_endpoint_new(&f.ccfg, &ep), 0);
    aegis_endpoint_del(ep);
    /* a server's default (no keep-alive) fits any idle timeout */
    f.scfg.is_server = 1;
    f.scfg.idle_timeout_ns = 5 * AEGIS_NS_PER_S;
    ep = NULL;
    assert_int_equal(aegis_endpoint_new(&f.scfg, &ep), 0);
    aegis_endpoint_del(ep);
}

/* GOAWAY: running calls finish, new ones get UNAVAILABLE, then the
 * connection closes cleanly. */
static void test_graceful_shutdown(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 10);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    struct tres a = {0}, b = {0};
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Bidi", AEGIS_RPC_BIDI, NULL,
                                      &tres_callbacks, &a, &a.call),
                     0);
    aegis_call_send(a.call, (const uint8_t *)"one", 3);
    tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(a.nmsgs, 1);
    assert_int_equal(aegis_endpoint_shutdown(f.net.srv, f.net.now), 0);
    /* started before the client heard of the GOAWAY: rejected */
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                      &tres_callbacks, &b, &b.call),
                     0);
    aegis_call_send(b.call, (const uint8_t *)"x", 1);
    aegis_call_close_send(b.call);
    assert_true(tnet_run(&f.net, 2 * AEGIS_NS_PER_S, tres_cond_done, &b));
    assert_int_equal(b.status, AEGIS_GRPC_UNAVAILABLE);
    assert_int_equal(f.cli.goaway, 1);
    /* after GOAWAY, new calls are refused at once */
    struct tres c = {0};
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                      &tres_callbacks, &c, &c.call),
                     AEGIS_ERR_STATE);
    /* the running call still works and finishes */
    assert_false(a.done);
    aegis_call_send(a.call, (const uint8_t *)"two", 3);
    aegis_call_close_send(a.call);
    assert_true(tnet_run(&f.net, 2 * AEGIS_NS_PER_S, tres_cond_done, &a));
    assert_int_equal(a.status, AEGIS_GRPC_OK);
    assert_int_equal(a.nmsgs, 2);
    tnet_run(&f.net, 5 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.cli.closed, 1);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_PEER_APP);
    assert_int_equal(f.cli.why.code, 0x100); /* H3_NO_ERROR */
    assert_int_equal(aegis_endpoint_conn_count(f.net.srv), 0);
    tfx_free(&f);
}

/* A server that lost its state answers with a stateless reset; the
 * client sees the connection end at once instead of waiting for idle. */
static void test_stateless_reset(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    tfx_start(&f, 11);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    /* simulate a server restart with the same static secret: drop every
     * connection without telling anyone */
    struct aegis_endpoint *srv = f.net.srv;
    struct aegis_conn *sc = f.svc.last_conn;
    assert_non_null(sc);
    /* closing with a local code makes the server forget; the client is
     * kept from hearing the CONNECTION_CLOSE by a brief blackhole */
    f.net.drop_all = 1;
    aegis_conn_close(sc, 0x100, "restart");
    tnet_run(&f.net, 10 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(aegis_endpoint_conn_count(srv), 0);
    f.net.drop_all = 0;
    struct tres r = {0};
    assert_int_equal(aegis_call_start(f.conn, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                      &tres_callbacks, &r, &r.call),
                     0);
    aegis_call_send(r.call, (const uint8_t *)"x", 1);
    aegis_call_close_send(r.call);
    assert_true(tnet_run(&f.net, 5 * AEGIS_NS_PER_S, tres_cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_UNAVAILABLE);
    assert_int_equal(f.cli.closed, 1);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_RESET);
    assert_true(aegis_endpoint_stats(srv)->stateless_resets_sent >= 1);
    tfx_free(&f);
}

/* A restarted server hears from thousands of agents it no longer knows, many
 * packets per receive batch: every one of them gets its reset, not the first
 * eight (the old fixed stash dropped the rest, and each agent whose reset was
 * dropped waited for its probe timeouts: a 53 s restart storm at 10,000). */
static void test_many_resets_in_one_batch(void **state)
{
    (void)state;
    enum { N = 48 };
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.scfg.is_server = 1;
    struct aegis_endpoint *srv = NULL;
    assert_int_equal(aegis_endpoint_new(&f.scfg, &srv), 0);
    struct aegis_path path;
    memset(&path, 0, sizeof(path));
    struct sockaddr_in *l = (struct sockaddr_in *)&path.local,
                       *r = (struct sockaddr_in *)&path.remote;
    l->sin_family = r->sin_family = AF_INET;
    l->sin_addr.s_addr = r->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->sin_port = htons(4433);
    path.local_len = path.remote_len = sizeof(struct sockaddr_in);
    aegis_tstamp now = 1000 * AEGIS_NS_PER_S;
    for (int i = 0; i < N; i++) {
        uint8_t pkt[60]; /* a keep-alive-sized short-header packet */
        memset(pkt, 0x33, sizeof(pkt));
        pkt[0] = 0x40;
        pkt[1] = (uint8_t)i; /* its own unknown connection id */
        r->sin_port = htons((uint16_t)(20000 + i));
        assert_int_equal(aegis_endpoint_recv(srv, &path, pkt, sizeof(pkt), now), 0);
    }
    int sent = 0;
    uint8_t buf[1500];
    struct aegis_path out;
    size_t seg;
    while (aegis_endpoint_send(srv, buf, sizeof(buf), 1, &out, &seg, now) > 0)
        sent++;
    assert_int_equal(sent, N);
    assert_int_equal(aegis_endpoint_stats(srv)->stateless_resets_sent, N);
    aegis_endpoint_del(srv); /* tfx_config allocated nothing else */
}

static int cond_client_closed(void *arg)
{
    return ((struct tfx *)arg)->cli.closed;
}

/* A server process that died (kill -9) and came back as a new endpoint
 * resets its predecessor's connections only if it derives reset tokens from
 * the same static secret: then the client learns at once, otherwise it
 * would wait for its idle timeout (a restart storm, bench/README.md). */
static void test_restart_with_static_secret(void **state)
{
    (void)state;
    uint8_t secret[AEGIS_TRANSPORT_SECRET_LEN], other[AEGIS_TRANSPORT_SECRET_LEN];
    memset(secret, 0x5a, sizeof(secret));
    memset(other, 0xa5, sizeof(other));
    for (int same = 0; same <= 1; same++) {
        struct tfx f;
        tfx_config(&f, &pki, &pki.client);
        f.scfg.static_secret = secret;
        f.scfg.static_secret_len = sizeof(secret);
        tfx_start(&f, 30 + (uint64_t)same);
        assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
        /* The process vanishes without a word; a new one binds the address. */
        aegis_endpoint_del(f.net.srv);
        f.net.srv = NULL;
        if (!same)
            f.scfg.static_secret = other;
        assert_int_equal(aegis_endpoint_new(&f.scfg, &f.net.srv), 0);
        /* The client is idle: its next keep-alive PING (a short packet)
         * must be enough to provoke the reset. */
        aegis_tstamp t0 = f.net.now;
        tnet_run(&f.net, 20 * AEGIS_NS_PER_S, cond_client_closed, &f);
        assert_true(aegis_endpoint_stats(f.net.srv)->stateless_resets_sent >= 1);
        if (same) {
            assert_int_equal(f.cli.closed, 1);
            assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_RESET);
            assert_true(f.net.now - t0 <= AEGIS_TRANSPORT_KEEPALIVE_NS + AEGIS_NS_PER_S);
        } else {
            /* The reset is not recognised: still waiting for the idle timeout. */
            assert_int_equal(f.cli.closed, 0);
        }
        tfx_free(&f);
    }
    /* A secret of the wrong length is refused. */
    struct tfx g;
    tfx_config(&g, &pki, &pki.client);
    g.scfg.static_secret = secret;
    g.scfg.static_secret_len = 16;
    struct aegis_endpoint *ep = NULL;
    assert_int_equal(aegis_endpoint_new(&g.scfg, &ep), -EINVAL);
    assert_null(ep);
}

/* Holds one handshake in progress on the server: a second client, outside
 * the simulated network, sends only its first Initial. Returns it. */
static struct aegis_endpoint *hold_one_handshake(struct tfx *f)
{
    struct aegis_path p2 = f->net.cli_path;
    ((struct sockaddr_in *)&p2.local)->sin_port = htons(40002);
    struct aegis_endpoint *other = NULL;
    assert_int_equal(aegis_endpoint_new(&f->ccfg, &other), 0);
    struct aegis_conn *stuck = NULL;
    assert_int_equal(aegis_endpoint_connect(other, &p2, "localhost", f->net.now, &stuck), 0);
    uint8_t buf[1500];
    struct aegis_path path;
    size_t seg;
    long n = aegis_endpoint_send(other, buf, sizeof(buf), 1, &path, &seg, f->net.now);
    assert_true(n > 0);
    struct aegis_path at_srv = {.local = path.remote,
                                .local_len = path.remote_len,
                                .remote = path.local,
                                .remote_len = path.local_len};
    aegis_endpoint_recv(f->net.srv, &at_srv, buf, (size_t)n, f->net.now);
    assert_int_equal(aegis_endpoint_stats(f->net.srv)->handshakes_in_progress, 1);
    /* the server's answers are lost */
    for (int i = 0; i < 100 && aegis_endpoint_send(f->net.srv, buf, sizeof(buf), 1, &path, &seg,
                                                   f->net.now) > 0;
         i++)
        ;
    return other;
}

/* Past the Retry threshold new handshakes must validate their address
 * (and still succeed); past the hard cap they are refused with a reason. */
static void test_retry_and_cap(void **state)
{
    (void)state;
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.scfg.retry_threshold = 1;
    tfx_start(&f, 12);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S)); /* 0 in progress: no Retry */
    assert_int_equal(aegis_endpoint_stats(f.net.srv)->retries_sent, 0);
    tfx_free(&f);

    tfx_config(&f, &pki, &pki.client);
    f.scfg.retry_threshold = 1;
    tfx_start(&f, 14);
    struct aegis_endpoint *other = hold_one_handshake(&f);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    assert_true(aegis_endpoint_stats(f.net.srv)->retries_sent >= 1);
    aegis_endpoint_del(other);
    tfx_free(&f);

    tfx_config(&f, &pki, &pki.client);
    f.scfg.max_handshakes = 1;
    tfx_start(&f, 15);
    other = hold_one_handshake(&f);
    assert_false(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    aegis_endpoint_del(other);
    assert_int_equal(f.cli.why.kind, AEGIS_CLOSE_PEER_QUIC);
    assert_int_equal(f.cli.why.code, 0x2); /* CONNECTION_REFUSED */
    assert_string_equal(f.cli.why.reason, "server busy: too many handshakes in progress");
    tfx_free(&f);
}

/* qlog: one file per connection in the configured directory. */
static void test_qlog_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/aegis-qlog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct tfx f;
    tfx_config(&f, &pki, &pki.client);
    f.scfg.qlog_dir = dir;
    tfx_start(&f, 18);
    assert_true(tfx_connect(&f, 5 * AEGIS_NS_PER_S));
    aegis_conn_close(f.conn, 0x100, "bye");
    tnet_run(&f.net, 5 * AEGIS_NS_PER_S, NULL, NULL);
    tfx_free(&f);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size > 100);
        assert_non_null(strstr(e->d_name, ".sqlog"));
        unlink(path);
        files++;
    }
    closedir(d);
    rmdir(dir);
    assert_int_equal(files, 1); /* the server's one connection */
}

int main(void)
{
    tpki_make(&pki);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_and_reordering),
        cmocka_unit_test(test_client_address_change),
        cmocka_unit_test(test_idle_vs_keepalive),
        cmocka_unit_test(test_server_keepalive_default_off),
        cmocka_unit_test(test_keepalive_config_checked),
        cmocka_unit_test(test_idle_timers_in_order),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_stateless_reset),
        cmocka_unit_test(test_restart_with_static_secret),
        cmocka_unit_test(test_many_resets_in_one_batch),
        cmocka_unit_test(test_retry_and_cap),
        cmocka_unit_test(test_qlog_files),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tpki_free(&pki);
    return rv;
}
