/* Test service (see tsvc.h). */
#include "tsvc.h"

#include <aegis/err.h>

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- server handlers ---- */

static void srv_on_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct tsvc *s = ud;
    s->closed++;
    s->last_status = st->code;
    if (st->code == AEGIS_GRPC_DEADLINE_EXCEEDED)
        s->deadline_seen++;
    if (st->code == AEGIS_GRPC_CANCELLED)
        s->cancelled_seen++;
    if (s->held == call)
        s->held = NULL;
}

/* Unary: echo the request; trailer x-echo = request metadata x-req. */
static int unary_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)ud;
    if (aegis_call_send(call, msg, len) != 0)
        return -1;
    const char *echo = aegis_call_get_data(call);
    struct aegis_metadata tr[2] = {
        {"x-echo", (const uint8_t *)(echo ? echo : ""), echo ? strlen(echo) : 0},
        {"x-bin-bin", (const uint8_t *)"\x00\xff\x10", 3},
    };
    return aegis_call_finish(call, AEGIS_GRPC_OK, NULL, tr, 2);
}

static void free_echo(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    free(aegis_call_get_data(call));
    srv_on_close(call, st, ud);
}

static int on_unary(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    struct tsvc *s = ud;
    s->calls++;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(md[i].key, "x-req") == 0) {
            char *v = malloc(md[i].value_len + 1);
            if (!v)
                return -1;
            memcpy(v, md[i].value, md[i].value_len);
            v[md[i].value_len] = 0;
            aegis_call_set_data(call, v);
        }
    }
    struct aegis_call_callbacks cb = {.on_message = unary_msg, .on_close = free_echo};
    aegis_call_set_callbacks(call, &cb, s);
    return 0;
}

/* Client streaming: count messages and bytes, answer "<n>:<bytes>". */
struct cs_state {
    struct tsvc *s;
    int n;
    size_t bytes;
};

static int cs_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)msg;
    struct cs_state *st = ud;
    st->n++;
    st->bytes += len;
    return 0;
}

static void cs_half(struct aegis_call *call, void *ud)
{
    struct cs_state *st = ud;
    char out[64];
    int k = snprintf(out, sizeof(out), "%d:%zu", st->n, st->bytes);
    aegis_call_send(call, (const uint8_t *)out, (size_t)k);
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static void cs_close(struct aegis_call *call, const struct aegis_call_status *stt, void *ud)
{
    struct cs_state *st = ud;
    srv_on_close(call, stt, st->s);
    free(st);
}

static int on_client_stream(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                            void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    struct cs_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -1;
    st->s = s;
    struct aegis_call_callbacks cb = {
        .on_message = cs_msg, .on_half_close = cs_half, .on_close = cs_close};
    aegis_call_set_callbacks(call, &cb, st);
    return 0;
}

/* Server streaming ("Download"): request "<total>/<chunk>"; the server
 * streams total bytes in chunks, honouring -EAGAIN and on_writable. */
struct dl_state {
    struct tsvc *s;
    size_t left, chunk;
    uint8_t *buf;
};

static void dl_pump(struct aegis_call *call, struct dl_state *st)
{
    for (int i = 0; i < 100000 && st->left; i++) {
        size_t k = st->left < st->chunk ? st->left : st->chunk;
        int rv = aegis_call_send(call, st->buf, k);
        if (rv == -EAGAIN)
            return;
        if (rv != 0) {
            aegis_call_cancel(call);
            return;
        }
        st->left -= k;
        st->s->stream_total += k;
        size_t q = aegis_call_queued(call);
        if (q > st->s->max_queued)
            st->s->max_queued = q;
    }
    if (!st->left)
        aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static int dl_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct dl_state *st = ud;
    char req[64];
    if (len >= sizeof(req))
        return -1;
    memcpy(req, msg, len);
    req[len] = 0;
    unsigned long total = 0, chunk = 0;
    if (sscanf(req, "%lu/%lu", &total, &chunk) != 2 || chunk == 0)
        return -1;
    st->left = total;
    st->chunk = chunk;
    st->buf = malloc(chunk);
    if (!st->buf)
        return -1;
    for (size_t i = 0; i < chunk; i++)
        st->buf[i] = (uint8_t)i;
    dl_pump(call, st);
    return 0;
}

static void dl_writable(struct aegis_call *call, void *ud)
{
    dl_pump(call, ud);
}

static void dl_close(struct aegis_call *call, const struct aegis_call_status *stt, void *ud)
{
    struct dl_state *st = ud;
    srv_on_close(call, stt, st->s);
    free(st->buf);
    free(st);
}

static int on_download(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    struct dl_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -1;
    st->s = s;
    if (s->compress_download)
        s->compress_rv = aegis_call_set_compress(call, 1);
    struct aegis_call_callbacks cb = {
        .on_message = dl_msg, .on_writable = dl_writable, .on_close = dl_close};
    aegis_call_set_callbacks(call, &cb, st);
    return 0;
}

/* Bidi: echo every message; finish on half-close. */
static int bidi_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)ud;
    return aegis_call_send(call, msg, len) == 0 ? 0 : -1;
}

static void bidi_half(struct aegis_call *call, void *ud)
{
    (void)ud;
    aegis_call_finish(call, AEGIS_GRPC_OK, "bye", NULL, 0);
}

static int on_bidi(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    struct aegis_call_callbacks cb = {
        .on_message = bidi_msg, .on_half_close = bidi_half, .on_close = srv_on_close};
    aegis_call_set_callbacks(call, &cb, s);
    return 0;
}

/* Fail: trailers-only error with a message that needs percent-encoding. */
static int on_fail(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    struct aegis_call_callbacks cb = {.on_close = srv_on_close};
    aegis_call_set_callbacks(call, &cb, s);
    return aegis_call_finish(call, AEGIS_GRPC_PERMISSION_DENIED, "not allowed: 100% \xe2\x9c\x97",
                             NULL, 0);
}

/* Slow: never answers by itself (deadline and cancel tests). */
static int on_slow(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    s->held = call;
    struct aegis_call_callbacks cb = {.on_close = srv_on_close};
    aegis_call_set_callbacks(call, &cb, s);
    return 0;
}

/* Sink: a client stream the server reads slowly: pauses after each
 * message; the test resumes it through tsvc.held. */
static int sink_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)msg;
    struct tsvc *s = ud;
    s->stream_total += len;
    return AEGIS_CALL_PAUSE;
}

static void sink_half(struct aegis_call *call, void *ud)
{
    (void)ud;
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static int on_sink(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct tsvc *s = ud;
    s->calls++;
    s->held = call;
    struct aegis_call_callbacks cb = {
        .on_message = sink_msg, .on_half_close = sink_half, .on_close = srv_on_close};
    aegis_call_set_callbacks(call, &cb, s);
    return 0;
}

void tsvc_handlers(struct tsvc *s, struct aegis_rpc_handler out[TSVC_NHANDLERS])
{
    struct aegis_rpc_handler h[TSVC_NHANDLERS] = {
        {"/test.Echo/Unary", AEGIS_RPC_UNARY, on_unary, s},
        {"/test.Echo/ClientStream", AEGIS_RPC_CLIENT_STREAMING, on_client_stream, s},
        {"/test.Echo/Download", AEGIS_RPC_SERVER_STREAMING, on_download, s},
        {"/test.Echo/Bidi", AEGIS_RPC_BIDI, on_bidi, s},
        {"/test.Echo/Fail", AEGIS_RPC_UNARY, on_fail, s},
        {"/test.Echo/Slow", AEGIS_RPC_BIDI, on_slow, s},
        {"/test.Echo/Sink", AEGIS_RPC_CLIENT_STREAMING, on_sink, s},
        {"/test.Echo/Unary2", AEGIS_RPC_UNARY, on_unary, s},
    };
    memcpy(out, h, sizeof(h));
}

static int srv_on_handshake(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                            char *reason, size_t rlen, void *ud)
{
    struct tsvc *s = ud;
    s->handshakes++;
    s->last_peer = *peer;
    s->last_conn = conn;
    if (s->refuse) {
        snprintf(reason, rlen, "agent %s is revoked", peer->subject_cn);
        return -1;
    }
    return 0;
}

static void srv_on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    struct tsvc *s = ud;
    if (s->last_conn == conn)
        s->last_conn = NULL;
    s->srv_closed++;
    s->srv_why = *why;
}

void tsvc_conn_callbacks(struct tsvc *s, struct aegis_conn_callbacks *cbs)
{
    (void)s;
    memset(cbs, 0, sizeof(*cbs));
    cbs->on_handshake = srv_on_handshake;
    cbs->on_closed = srv_on_closed;
}

/* ---- client side ---- */

static int tres_headers(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                        void *ud)
{
    (void)call;
    (void)md;
    (void)n;
    struct tres *r = ud;
    r->headers++;
    return 0;
}

static int tres_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct tres *r = ud;
    r->nmsgs++;
    r->bytes += len;
    if (!r->hash)
        r->hash = 2166136261u;
    for (size_t i = 0; i < len; i++)
        r->hash = (r->hash ^ msg[i]) * 16777619u;
    if (r->pause_after && r->nmsgs % r->pause_after == 0)
        return AEGIS_CALL_PAUSE;
    return 0;
}

static void tres_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct tres *r = ud;
    r->done = 1;
    r->status = st->code;
    snprintf(r->message, sizeof(r->message), "%s", st->message);
    for (size_t i = 0; i < st->ntrailers; i++)
        if (strcmp(st->trailers[i].key, "x-echo") == 0)
            snprintf(r->trailer, sizeof(r->trailer), "%.*s", (int)st->trailers[i].value_len,
                     (const char *)st->trailers[i].value);
    r->call = NULL;
}

const struct aegis_call_callbacks tres_callbacks = {
    .on_headers = tres_headers, .on_message = tres_msg, .on_close = tres_close};

static void cli_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                            void *ud)
{
    (void)conn;
    struct tcli *c = ud;
    c->established++;
    c->peer = *peer;
}

static void cli_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    (void)conn;
    struct tcli *c = ud;
    c->closed++;
    c->why = *why;
}

static void cli_goaway(struct aegis_conn *conn, void *ud)
{
    (void)conn;
    struct tcli *c = ud;
    c->goaway++;
}

void tcli_conn_callbacks(struct tcli *c, struct aegis_conn_callbacks *cbs)
{
    (void)c;
    memset(cbs, 0, sizeof(*cbs));
    cbs->on_established = cli_established;
    cbs->on_closed = cli_closed;
    cbs->on_goaway = cli_goaway;
}

/* ---- fixture ---- */

void tfx_config(struct tfx *f, const struct tpki *pki, const struct tcred *client_cred)
{
    memset(f, 0, sizeof(*f));
    tsvc_handlers(&f->svc, f->handlers);
    tpki_server_tls(pki, &f->scfg.tls);
    f->scfg.handlers = f->handlers;
    f->scfg.nhandlers = TSVC_NHANDLERS;
    tsvc_conn_callbacks(&f->svc, &f->scfg.callbacks);
    f->scfg.user_data = &f->svc;
    tpki_client_tls(pki, client_cred, &f->ccfg.tls);
    tcli_conn_callbacks(&f->cli, &f->ccfg.callbacks);
    f->ccfg.user_data = &f->cli;
}

void tfx_start(struct tfx *f, uint64_t seed)
{
    tnet_init(&f->net, &f->scfg, &f->ccfg, seed);
}

static int cond_conn_settled(void *arg)
{
    struct tfx *f = arg;
    return f->cli.established > 0 || f->cli.closed > 0;
}

int tfx_connect(struct tfx *f, aegis_tstamp limit)
{
    f->conn = tnet_connect(&f->net);
    return tnet_run(&f->net, limit, cond_conn_settled, f) && f->cli.established > 0;
}

static int cond_no_calls(void *arg)
{
    struct tfx *f = arg;
    return (!f->net.srv || aegis_endpoint_call_count(f->net.srv) == 0) &&
           (!f->net.cli || aegis_endpoint_call_count(f->net.cli) == 0);
}

void tfx_free(struct tfx *f)
{
    /* let calls still finishing (last ACKs) end, so the service's per-call
     * state is released through on_close (endpoint_del runs no callbacks) */
    if (!f->net.drop_all)
        tnet_run(&f->net, 10 * AEGIS_NS_PER_S, cond_no_calls, f);
    tnet_free(&f->net);
}

int tres_cond_done(void *arg)
{
    return ((struct tres *)arg)->done;
}
