/*
 * gRPC call semantics (rpc_call.c) end to end: a client and a server
 * endpoint over the in-memory network with a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tpki pki;

struct fx {
    struct tnet net;
    struct tsvc svc;
    struct tcli cli;
    struct aegis_rpc_handler handlers[TSVC_NHANDLERS];
    struct aegis_endpoint_config scfg, ccfg;
    struct aegis_conn *conn;
};

static void fx_setup(struct fx *f, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    tsvc_handlers(&f->svc, f->handlers);
    tpki_server_tls(&pki, &f->scfg.tls);
    f->scfg.handlers = f->handlers;
    f->scfg.nhandlers = TSVC_NHANDLERS;
    tsvc_conn_callbacks(&f->svc, &f->scfg.callbacks);
    f->scfg.user_data = &f->svc;
    tpki_client_tls(&pki, &pki.client, &f->ccfg.tls);
    tcli_conn_callbacks(&f->cli, &f->ccfg.callbacks);
    f->ccfg.user_data = &f->cli;
    tnet_init(&f->net, &f->scfg, &f->ccfg, seed);
}

static int cond_established(void *arg)
{
    struct fx *f = arg;
    return f->cli.established > 0 || f->cli.closed > 0;
}

static void fx_connect(struct fx *f)
{
    f->conn = tnet_connect(&f->net);
    assert_true(tnet_run(&f->net, 5 * AEGIS_NS_PER_S, cond_established, f));
    assert_int_equal(f->cli.established, 1);
}

static void fx_teardown(struct fx *f)
{
    tnet_free(&f->net);
}

static int cond_done(void *arg)
{
    return ((struct tres *)arg)->done;
}

static int cond_srv_no_calls(void *arg)
{
    return aegis_endpoint_call_count(((struct fx *)arg)->net.srv) == 0;
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

static void start(struct fx *f, const char *path, enum aegis_rpc_shape shape,
                  const struct aegis_call_opts *opts, struct tres *r)
{
    int rv = aegis_call_start(f->conn, path, shape, opts, &tres_callbacks, r, &r->call);
    assert_int_equal(rv, 0);
}

static void test_unary_metadata_trailers(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 1);
    fx_connect(&f);
    /* the client sees the server's identity, pinned */
    assert_true(f.cli.peer.chains_to_ca);
    assert_string_equal(f.cli.peer.subject_cn, "control");
    assert_string_equal(f.cli.peer.pin, pki.server_pin);
    struct aegis_metadata md[] = {{"x-req", (const uint8_t *)"hello-md", 8}};
    struct aegis_call_opts o = {.metadata = md, .nmetadata = 1};
    struct tres r = {0};
    start(&f, "/test.Echo/Unary", AEGIS_RPC_UNARY, &o, &r);
    assert_int_equal(aegis_call_send(r.call, (const uint8_t *)"ping", 4), 0);
    /* unary: a second message is refused locally */
    assert_int_equal(aegis_call_send(r.call, (const uint8_t *)"x", 1), AEGIS_ERR_STATE);
    assert_int_equal(aegis_call_close_send(r.call), 0);
    assert_true(tnet_run(&f.net, 5 * AEGIS_NS_PER_S, cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_OK);
    assert_int_equal(r.nmsgs, 1);
    assert_int_equal(r.bytes, 4);
    assert_int_equal(r.headers, 1);
    assert_string_equal(r.trailer, "hello-md");
    /* the server saw the client's identity */
    assert_int_equal(f.svc.handshakes, 1);
    assert_string_equal(f.svc.last_peer.subject_cn, "agent-1");
    assert_string_equal(f.svc.last_peer.pin, pki.client_pin);
    assert_true(f.svc.last_peer.chains_to_ca);
    assert_false(f.svc.last_peer.self_signed);
    /* everything is released on both sides */
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_int_equal(f.svc.closed, 1);
    assert_int_equal(f.svc.last_status, AEGIS_GRPC_OK);
    fx_teardown(&f);
}

static void test_all_shapes(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 2);
    fx_connect(&f);
    struct tres cs = {0}, ss = {0}, bd = {0};
    /* client streaming: 10 messages of 1000 bytes */
    start(&f, "/test.Echo/ClientStream", AEGIS_RPC_CLIENT_STREAMING, NULL, &cs);
    uint8_t buf[1000];
    memset(buf, 'a', sizeof(buf));
    for (int i = 0; i < 10; i++)
        assert_int_equal(aegis_call_send(cs.call, buf, sizeof(buf)), 0);
    aegis_call_close_send(cs.call);
    /* server streaming: 100 KiB in 1 KiB messages */
    start(&f, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, NULL, &ss);
    aegis_call_send(ss.call, (const uint8_t *)"102400/1024", 11);
    aegis_call_close_send(ss.call);
    /* bidi: 5 echoes */
    start(&f, "/test.Echo/Bidi", AEGIS_RPC_BIDI, NULL, &bd);
    for (int i = 0; i < 5; i++)
        assert_int_equal(aegis_call_send(bd.call, buf, 100), 0);
    aegis_call_close_send(bd.call);
    struct tres all[3];
    struct many m = {all, 3};
    for (int i = 0; i < 60 && !(cs.done && ss.done && bd.done); i++)
        tnet_run(&f.net, 100 * AEGIS_NS_PER_MS, NULL, NULL);
    (void)m;
    assert_true(cs.done && ss.done && bd.done);
    assert_int_equal(cs.status, AEGIS_GRPC_OK);
    assert_int_equal(cs.nmsgs, 1);
    assert_int_equal(ss.status, AEGIS_GRPC_OK);
    assert_int_equal(ss.nmsgs, 100);
    assert_int_equal(ss.bytes, 102400);
    assert_int_equal(bd.status, AEGIS_GRPC_OK);
    assert_int_equal(bd.nmsgs, 5);
    assert_string_equal(bd.message, "bye");
    fx_teardown(&f);
}

static void test_status_paths(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 3);
    fx_connect(&f);
    struct tres fail = {0}, unimpl = {0}, big = {0};
    start(&f, "/test.Echo/Fail", AEGIS_RPC_UNARY, NULL, &fail);
    aegis_call_send(fail.call, (const uint8_t *)"x", 1);
    aegis_call_close_send(fail.call);
    start(&f, "/test.Nope/Missing", AEGIS_RPC_UNARY, NULL, &unimpl);
    aegis_call_send(unimpl.call, (const uint8_t *)"x", 1);
    aegis_call_close_send(unimpl.call);
    /* a message of exactly the limit is fine to queue; one byte more is
     * refused locally; the server refuses oversize on receipt (Download
     * asks it to send a message over the client's limit below) */
    start(&f, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL, &big);
    uint8_t *m = calloc(1, AEGIS_TRANSPORT_MAX_MESSAGE + 1);
    assert_non_null(m);
    assert_int_equal(aegis_call_send(big.call, m, AEGIS_TRANSPORT_MAX_MESSAGE + 1),
                     AEGIS_ERR_TOO_LARGE);
    assert_int_equal(aegis_call_send(big.call, m, AEGIS_TRANSPORT_MAX_MESSAGE), 0);
    aegis_call_close_send(big.call);
    for (int i = 0; i < 200 && !(fail.done && unimpl.done && big.done); i++)
        tnet_run(&f.net, 100 * AEGIS_NS_PER_MS, NULL, NULL);
    free(m);
    assert_true(fail.done);
    assert_int_equal(fail.status, AEGIS_GRPC_PERMISSION_DENIED);
    assert_string_equal(fail.message, "not allowed: 100% \xe2\x9c\x97");
    assert_int_equal(fail.headers, 0); /* trailers-only */
    assert_true(unimpl.done);
    assert_int_equal(unimpl.status, AEGIS_GRPC_UNIMPLEMENTED);
    assert_non_null(strstr(unimpl.message, "/test.Nope/Missing"));
    assert_true(big.done);
    assert_int_equal(big.status, AEGIS_GRPC_OK);
    assert_int_equal(big.bytes, AEGIS_TRANSPORT_MAX_MESSAGE);
    fx_teardown(&f);
}

static void test_resource_exhausted(void **state)
{
    (void)state;
    struct fx f;
    memset(&f, 0, sizeof(f));
    tsvc_handlers(&f.svc, f.handlers);
    tpki_server_tls(&pki, &f.scfg.tls);
    f.scfg.handlers = f.handlers;
    f.scfg.nhandlers = TSVC_NHANDLERS;
    f.scfg.user_data = &f.svc;
    f.scfg.max_message = 1000; /* server accepts at most 1000 bytes */
    tpki_client_tls(&pki, &pki.client, &f.ccfg.tls);
    tcli_conn_callbacks(&f.cli, &f.ccfg.callbacks);
    f.ccfg.user_data = &f.cli;
    f.ccfg.max_message = 500; /* client accepts at most 500 bytes */
    tnet_init(&f.net, &f.scfg, &f.ccfg, 4);
    fx_connect(&f);
    struct tres up = {0}, down = {0};
    uint8_t buf[400];
    memset(buf, 1, sizeof(buf));
    /* upload: 400 fits the client's send limit but we use Unary with 400;
     * server limit is 1000, so send via client stream 3 x 400 then a big
     * one over the server's limit (client's own send cap is 500). */
    start(&f, "/test.Echo/ClientStream", AEGIS_RPC_CLIENT_STREAMING, NULL, &up);
    assert_int_equal(aegis_call_send(up.call, buf, 400), 0);
    aegis_call_close_send(up.call);
    /* download: the server sends 800-byte messages, over the client's 500 */
    start(&f, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, NULL, &down);
    aegis_call_send(down.call, (const uint8_t *)"1600/800", 8);
    aegis_call_close_send(down.call);
    for (int i = 0; i < 50 && !(up.done && down.done); i++)
        tnet_run(&f.net, 100 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_true(up.done && down.done);
    assert_int_equal(up.status, AEGIS_GRPC_OK);
    assert_int_equal(down.status, AEGIS_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(down.nmsgs, 0);
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    /* the server's Download call ended as cancelled by the client */
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    fx_teardown(&f);
}

static void test_many_calls_concurrent(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 5);
    fx_connect(&f);
    enum { TOTAL = 1000, WAVE = 200 };
    struct tres *r = calloc(TOTAL, sizeof(*r));
    assert_non_null(r);
    size_t peak_srv = 0;
    for (int base = 0; base < TOTAL; base += WAVE) {
        for (int i = base; i < base + WAVE; i++) {
            start(&f, "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL, &r[i]);
            char msg[16];
            int k = snprintf(msg, sizeof(msg), "m%d", i);
            assert_int_equal(aegis_call_send(r[i].call, (const uint8_t *)msg, (size_t)k), 0);
            aegis_call_close_send(r[i].call);
        }
        /* 200 started at once: 100 run concurrently (the stream limit),
         * the rest wait for stream credit */
        assert_true(aegis_endpoint_call_count(f.net.cli) >= WAVE);
        struct many m = {&r[base], WAVE};
        for (int s = 0; s < 2000 && !cond_all_done(&m); s++) {
            tnet_run(&f.net, 2 * AEGIS_NS_PER_MS, NULL, NULL);
            size_t c = aegis_endpoint_call_count(f.net.srv);
            if (c > peak_srv)
                peak_srv = c;
        }
        assert_true(cond_all_done(&m));
    }
    for (int i = 0; i < TOTAL; i++) {
        assert_int_equal(r[i].status, AEGIS_GRPC_OK);
        assert_int_equal(r[i].nmsgs, 1);
    }
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_true(peak_srv >= 100);
    assert_true(peak_srv <= AEGIS_TRANSPORT_MAX_STREAMS);
    assert_int_equal(f.svc.calls, TOTAL);
    free(r);
    fx_teardown(&f);
}

static void test_deadline_both_sides(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 6);
    fx_connect(&f);
    struct tres r = {0};
    struct aegis_call_opts o = {.deadline = f.net.now + 200 * AEGIS_NS_PER_MS};
    start(&f, "/test.Echo/Slow", AEGIS_RPC_BIDI, &o, &r);
    assert_int_equal(aegis_call_send(r.call, (const uint8_t *)"x", 1), 0);
    assert_true(tnet_run(&f.net, 2 * AEGIS_NS_PER_S, cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_DEADLINE_EXCEEDED);
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.svc.deadline_seen, 1);
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    fx_teardown(&f);
}

static void test_cancel_both_sides(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 7);
    fx_connect(&f);
    /* client cancels */
    struct tres a = {0};
    start(&f, "/test.Echo/Slow", AEGIS_RPC_BIDI, NULL, &a);
    aegis_call_send(a.call, (const uint8_t *)"x", 1);
    tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_int_equal(f.svc.calls, 1);
    assert_int_equal(aegis_call_cancel(a.call), 0);
    assert_int_equal(aegis_call_cancel(a.call), AEGIS_ERR_STATE);
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    assert_true(a.done);
    assert_int_equal(a.status, AEGIS_GRPC_CANCELLED);
    assert_int_equal(f.svc.cancelled_seen, 1);
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    /* server cancels */
    struct tres b = {0};
    start(&f, "/test.Echo/Slow", AEGIS_RPC_BIDI, NULL, &b);
    aegis_call_send(b.call, (const uint8_t *)"x", 1);
    tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_non_null(f.svc.held);
    assert_int_equal(aegis_call_cancel(f.svc.held), 0);
    tnet_run(&f.net, 1 * AEGIS_NS_PER_S, NULL, NULL);
    assert_true(b.done);
    assert_int_equal(b.status, AEGIS_GRPC_CANCELLED);
    assert_int_equal(f.svc.cancelled_seen, 2);
    assert_int_equal(aegis_endpoint_call_count(f.net.srv), 0);
    assert_int_equal(aegis_endpoint_call_count(f.net.cli), 0);
    fx_teardown(&f);
}

/* A client that closes its connection without error while a call is open
 * has given up on the call: the server sees CANCELLED, however the close
 * and the stream's STOP_SENDING were ordered; a close with an error code
 * is a lost connection: UNAVAILABLE. */
static void test_close_with_open_call(void **state)
{
    (void)state;
    static const struct {
        uint64_t code;
        int want;
    } cases[] = {{0x100 /* H3_NO_ERROR */, AEGIS_GRPC_CANCELLED},
                 {0x102 /* H3_INTERNAL_ERROR */, AEGIS_GRPC_UNAVAILABLE}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fx f;
        fx_setup(&f, 11 + i);
        fx_connect(&f);
        struct tres a = {0};
        start(&f, "/test.Echo/Slow", AEGIS_RPC_BIDI, NULL, &a);
        aegis_call_send(a.call, (const uint8_t *)"x", 1);
        tnet_run(&f.net, 200 * AEGIS_NS_PER_MS, NULL, NULL);
        assert_non_null(f.svc.held);
        f.svc.last_status = -1;
        assert_int_equal(aegis_conn_close(f.conn, cases[i].code, "client done"), 0);
        assert_true(tnet_run(&f.net, 2 * AEGIS_NS_PER_S, cond_srv_no_calls, &f));
        assert_int_equal(f.svc.last_status, cases[i].want);
        assert_true(a.done);
        fx_teardown(&f);
    }
}

/* The client stops reading a server stream: the server's queue stays
 * bounded, the transfer stalls, and resuming completes it. */
static void test_flow_control_stall(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 8);
    fx_connect(&f);
    struct tres r = {.pause_after = 10};
    start(&f, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, NULL, &r);
    /* 8 MiB in 16 KiB messages */
    aegis_call_send(r.call, (const uint8_t *)"8388608/16384", 13);
    aegis_call_close_send(r.call);
    tnet_run(&f.net, 2 * AEGIS_NS_PER_S, NULL, NULL);
    /* paused after 10 messages: the server got at most one stream window
     * beyond what was consumed onto the wire, and its queue respects the
     * bound */
    assert_int_equal(r.nmsgs, 10);
    size_t sent_stalled = f.svc.stream_total;
    assert_true(sent_stalled <
                10 * 16384 + AEGIS_TRANSPORT_STREAM_WINDOW + AEGIS_TRANSPORT_SEND_QUEUE + 16384);
    assert_true(f.svc.max_queued <= AEGIS_TRANSPORT_SEND_QUEUE);
    tnet_run(&f.net, 2 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(f.svc.stream_total, sent_stalled); /* truly stalled */
    /* resume repeatedly until done */
    for (int i = 0; i < 10000 && !r.done; i++) {
        aegis_call_resume(r.call);
        tnet_run(&f.net, 20 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    assert_true(r.done);
    assert_int_equal(r.status, AEGIS_GRPC_OK);
    assert_int_equal(r.bytes, 8388608);
    assert_true(f.svc.max_queued <= AEGIS_TRANSPORT_SEND_QUEUE);
    fx_teardown(&f);
}

/* A server that finishes a call from on_half_close, delivered only when it
 * resumes a paused stream, must have its reply sent at once: the callbacks
 * run inside the send loop, and their output used to wait for the next
 * packet or timer (a keep-alive 15 s away in the daemon). */
static void test_reply_from_resume_not_deferred(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 11);
    fx_connect(&f);
    struct tres r = {0};
    start(&f, "/test.Echo/Sink", AEGIS_RPC_CLIENT_STREAMING, NULL, &r);
    assert_int_equal(aegis_call_send(r.call, (const uint8_t *)"x", 1), 0);
    assert_int_equal(aegis_call_close_send(r.call), 0);
    /* The server consumed and paused on the message; the FIN is in. */
    tnet_run(&f.net, 500 * AEGIS_NS_PER_MS, NULL, NULL);
    assert_non_null(f.svc.held);
    assert_int_equal(f.svc.stream_total, 1);
    assert_false(r.done);
    aegis_tstamp t0 = f.net.now;
    assert_int_equal(aegis_call_resume(f.svc.held), 0);
    assert_true(tnet_run(&f.net, 30 * AEGIS_NS_PER_S, cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_OK);
    /* One trip across the link plus scheduling, never a timer's wait. */
    print_message("reply after resume: %llu us (one-way delay %llu us)\n",
                  (unsigned long long)((f.net.now - t0) / 1000),
                  (unsigned long long)(f.net.delay / 1000));
    assert_true(f.net.now - t0 <= 2 * f.net.delay + 5 * AEGIS_NS_PER_MS);
    fx_teardown(&f);
}

/* The server pauses a client stream: the client's send returns -EAGAIN
 * once its queue bound is reached. */
static void test_client_send_bound(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 9);
    fx_connect(&f);
    struct tres r = {0};
    start(&f, "/test.Echo/Sink", AEGIS_RPC_CLIENT_STREAMING, NULL, &r);
    uint8_t buf[16384];
    memset(buf, 7, sizeof(buf));
    int sent = 0, eagain = 0;
    for (int i = 0; i < 200; i++) {
        int rv = aegis_call_send(r.call, buf, sizeof(buf));
        if (rv == -EAGAIN) {
            eagain = 1;
            tnet_run(&f.net, 50 * AEGIS_NS_PER_MS, NULL, NULL);
            continue;
        }
        assert_int_equal(rv, 0);
        sent++;
        assert_true(aegis_call_queued(r.call) <= AEGIS_TRANSPORT_SEND_QUEUE);
    }
    assert_true(eagain);
    assert_true(aegis_call_queued(r.call) <= AEGIS_TRANSPORT_SEND_QUEUE);
    /* the server consumed only its first message */
    assert_int_equal(f.svc.stream_total, sizeof(buf));
    fx_teardown(&f);
}

/* A server compresses a response stream it chose to (the client advertises
 * zstd in grpc-accept-encoding without compressing its own request); too
 * late once the headers are out. */
static void test_server_stream_compression(void **state)
{
    (void)state;
    size_t sent[2];
    for (int on = 0; on <= 1; on++) {
        struct fx f;
        fx_setup(&f, 12);
        fx_connect(&f);
        f.svc.compress_download = on;
        struct tres r = {0};
        start(&f, "/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, NULL, &r);
        uint64_t before = aegis_endpoint_stats(f.net.srv)->bytes_sent;
        aegis_call_send(r.call, (const uint8_t *)"1048576/65536", 13);
        aegis_call_close_send(r.call);
        assert_true(tnet_run(&f.net, 10 * AEGIS_NS_PER_S, cond_done, &r));
        assert_int_equal(r.status, AEGIS_GRPC_OK);
        assert_int_equal(r.bytes, 1048576);
        assert_int_equal(r.nmsgs, 16);
        if (on)
            assert_int_equal(f.svc.compress_rv, 0);
        sent[on] = (size_t)(aegis_endpoint_stats(f.net.srv)->bytes_sent - before);
        /* Let the server's side end (its on_close frees the handler's state). */
        assert_true(tnet_run(&f.net, 5 * AEGIS_NS_PER_S, cond_srv_no_calls, &f));
        fx_teardown(&f);
    }
    print_message("server bytes for 1 MiB: plain %zu, zstd %zu\n", sent[0], sent[1]);
    assert_true(sent[0] >= 1048576);
    assert_true(sent[1] < 1048576 / 10);
}

static void test_zstd_compression(void **state)
{
    (void)state;
    struct fx f;
    fx_setup(&f, 10);
    fx_connect(&f);
    enum { LEN = 200000 };
    uint8_t *msg = malloc(LEN);
    assert_non_null(msg);
    for (size_t i = 0; i < LEN; i++)
        msg[i] = (uint8_t)("aegis "[i % 6]);
    uint32_t want = 2166136261u;
    for (size_t i = 0; i < LEN; i++)
        want = (want ^ msg[i]) * 16777619u;
    struct tres r = {0};
    struct aegis_call_opts o = {.compress = 1};
    start(&f, "/test.Echo/Unary", AEGIS_RPC_UNARY, &o, &r);
    assert_int_equal(aegis_call_send(r.call, msg, LEN), 0);
    /* compressed on the wire: far fewer bytes queued than the message */
    assert_true(aegis_call_queued(r.call) < LEN / 10);
    aegis_call_close_send(r.call);
    uint64_t before = aegis_endpoint_stats(f.net.cli)->bytes_sent;
    assert_true(tnet_run(&f.net, 5 * AEGIS_NS_PER_S, cond_done, &r));
    assert_int_equal(r.status, AEGIS_GRPC_OK);
    assert_int_equal(r.bytes, LEN);
    assert_int_equal(r.hash, want);
    assert_true(aegis_endpoint_stats(f.net.cli)->bytes_sent - before < LEN / 4);
    free(msg);
    fx_teardown(&f);
}

int main(void)
{
    tpki_make(&pki);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_metadata_trailers),
        cmocka_unit_test(test_all_shapes),
        cmocka_unit_test(test_status_paths),
        cmocka_unit_test(test_resource_exhausted),
        cmocka_unit_test(test_many_calls_concurrent),
        cmocka_unit_test(test_deadline_both_sides),
        cmocka_unit_test(test_cancel_both_sides),
        cmocka_unit_test(test_close_with_open_call),
        cmocka_unit_test(test_flow_control_stall),
        cmocka_unit_test(test_reply_from_resume_not_deferred),
        cmocka_unit_test(test_client_send_bound),
        cmocka_unit_test(test_zstd_compression),
        cmocka_unit_test(test_server_stream_compression),
    };
    int rv = cmocka_run_group_tests(tests, NULL, NULL);
    tpki_free(&pki);
    return rv;
}
