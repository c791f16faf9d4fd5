/*
 * HTTP/3 (RFC 9114) through nghttp3: the only file that includes it.
 * Maps nghttp3's callbacks onto calls (rpc_call.c) and its write API onto
 * the QUIC write loop (quic_conn.c).
 *
 * Memory per connection is kept low on purpose: no QPACK dynamic table in
 * either direction (gRPC headers are few and mostly static-table hits), and
 * a bounded header section size.
 */
#include <nghttp3/nghttp3.h>

#include "transport_int.h"

#include <aegis/err.h>

#include <errno.h>
#include <string.h>

/* Largest header or trailer section we accept (metadata is small in Aegis;
 * gRPC's default is 8 KiB, we allow twice that). */
#define MAX_FIELD_SECTION (16u * 1024u)
#define MAX_NV 64

_Static_assert(sizeof(nghttp3_vec) == sizeof(struct tvec), "vec layout");
_Static_assert(sizeof(nghttp3_mem) == sizeof(struct aegis_mem), "mem layout");

static int cb_acked_stream_data(nghttp3_conn *h3, int64_t sid, uint64_t datalen, void *ud,
                                void *sud)
{
    (void)h3;
    (void)sid;
    (void)ud;
    if (sud)
        call_acked(sud, datalen);
    return 0;
}

static int cb_stream_close(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)h3;
    (void)sid;
    (void)ud;
    if (sud)
        call_stream_closed(sud, code);
    return 0;
}

static int cb_recv_data(nghttp3_conn *h3, int64_t sid, const uint8_t *data, size_t len, void *ud,
                        void *sud)
{
    (void)h3;
    struct aegis_conn *c = ud;
    if (!sud) {
        /* A stream we already gave up on: credit and drop. */
        qconn_credit(c, sid, len);
        return 0;
    }
    return call_recv_data(sud, data, len) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int cb_deferred_consume(nghttp3_conn *h3, int64_t sid, size_t consumed, void *ud, void *sud)
{
    (void)h3;
    (void)sud;
    qconn_credit(ud, sid, consumed);
    return 0;
}

static int cb_begin_headers(nghttp3_conn *h3, int64_t sid, void *ud, void *sud)
{
    struct aegis_conn *c = ud;
    if (sud || !c->is_server)
        return 0;
    struct aegis_call *call = call_server_new(c, sid);
    if (!call)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    nghttp3_conn_set_stream_user_data(h3, sid, call);
    qconn_set_stream_data(c, sid, call);
    return 0;
}

static int recv_field(int64_t sid, nghttp3_rcbuf *name, nghttp3_rcbuf *value, void *sud,
                      int trailer)
{
    (void)sid;
    if (!sud)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name);
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    return call_recv_header(sud, n.base, n.len, v.base, v.len, trailer) == 0
               ? 0
               : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int cb_recv_header(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *ud, void *sud)
{
    (void)h3;
    (void)token;
    (void)flags;
    (void)ud;
    return recv_field(sid, name, value, sud, 0);
}

static int cb_recv_trailer(nghttp3_conn *h3, int64_t sid, int32_t token, nghttp3_rcbuf *name,
                           nghttp3_rcbuf *value, uint8_t flags, void *ud, void *sud)
{
    (void)h3;
    (void)token;
    (void)flags;
    (void)ud;
    return recv_field(sid, name, value, sud, 1);
}

static int cb_end_headers(nghttp3_conn *h3, int64_t sid, int fin, void *ud, void *sud)
{
    (void)h3;
    (void)sid;
    (void)fin;
    (void)ud;
    if (!sud)
        return 0;
    return call_end_headers(sud, 0) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int cb_end_trailers(nghttp3_conn *h3, int64_t sid, int fin, void *ud, void *sud)
{
    (void)h3;
    (void)sid;
    (void)fin;
    (void)ud;
    if (!sud)
        return 0;
    return call_end_headers(sud, 1) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int cb_end_stream(nghttp3_conn *h3, int64_t sid, void *ud, void *sud)
{
    (void)h3;
    (void)sid;
    (void)ud;
    if (!sud)
        return 0;
    return call_end_stream(sud) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int cb_stop_sending(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)h3;
    (void)sud;
    qconn_shutdown_stream_read(ud, sid, code);
    return 0;
}

static int cb_reset_stream(nghttp3_conn *h3, int64_t sid, uint64_t code, void *ud, void *sud)
{
    (void)h3;
    (void)sud;
    qconn_shutdown_stream_write(ud, sid, code);
    return 0;
}

static int cb_shutdown(nghttp3_conn *h3, int64_t id, void *ud)
{
    (void)h3;
    struct aegis_conn *c = ud;
    if (!c->is_server) {
        if (!c->goaway_recv)
            c->goaway_recv = 1;
        call_goaway(c, id);
    }
    return 0;
}

static nghttp3_ssize read_data(nghttp3_conn *h3, int64_t sid, nghttp3_vec *vec, size_t veccnt,
                               uint32_t *pflags, void *ud, void *sud)
{
    (void)h3;
    (void)sid;
    (void)ud;
    if (!sud) {
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
        return 0;
    }
    long n = call_read_data(sud, (struct tvec *)vec, veccnt, pflags);
    if (n == -EAGAIN)
        return NGHTTP3_ERR_WOULDBLOCK;
    return n;
}

static const nghttp3_data_reader data_reader = {read_data};

int h3_new(struct aegis_conn *c)
{
    (void)c;
    return 0; /* created lazily by h3_ensure once streams can be opened */
}

int h3_ensure(struct aegis_conn *c)
{
    if (c->h3)
        return 0;
    nghttp3_callbacks cb = {0};
    cb.acked_stream_data = cb_acked_stream_data;
    cb.stream_close = cb_stream_close;
    cb.recv_data = cb_recv_data;
    cb.deferred_consume = cb_deferred_consume;
    cb.begin_headers = cb_begin_headers;
    cb.recv_header = cb_recv_header;
    cb.end_headers = cb_end_headers;
    cb.recv_trailer = cb_recv_trailer;
    cb.end_trailers = cb_end_trailers;
    cb.stop_sending = cb_stop_sending;
    cb.reset_stream = cb_reset_stream;
    cb.end_stream = cb_end_stream;
    cb.shutdown = cb_shutdown;
    nghttp3_settings s;
    nghttp3_settings_default(&s);
    s.max_field_section_size = MAX_FIELD_SECTION;
    s.qpack_max_dtable_capacity = 0;
    s.qpack_encoder_max_dtable_capacity = 0;
    s.qpack_blocked_streams = 0;
    const nghttp3_mem *mem = (const nghttp3_mem *)c->ep->mem;
    int rv = c->is_server ? nghttp3_conn_server_new(&c->h3, &cb, &s, mem, c)
                          : nghttp3_conn_client_new(&c->h3, &cb, &s, mem, c);
    if (rv != 0) {
        c->h3 = NULL;
        return -ENOMEM;
    }
    if (c->is_server) {
        nghttp3_conn_set_max_client_streams_bidi(c->h3, c->ep->max_streams);
        nghttp3_conn_set_max_concurrent_streams(c->h3, (size_t)c->ep->max_streams);
    }
    int64_t ctrl, enc, dec;
    if (qconn_open_uni(c, &ctrl) != 0 || qconn_open_uni(c, &enc) != 0 ||
        qconn_open_uni(c, &dec) != 0)
        goto fail;
    if (nghttp3_conn_bind_control_stream(c->h3, ctrl) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->h3, enc, dec) != 0)
        goto fail;
    ep_mark_dirty(c);
    return 0;
fail:
    nghttp3_conn_del(c->h3);
    c->h3 = NULL;
    return AEGIS_ERR_HTTP3;
}

void h3_del(struct aegis_conn *c)
{
    nghttp3_conn_del(c->h3);
    c->h3 = NULL;
}

long h3_read_stream(struct aegis_conn *c, int64_t sid, const uint8_t *data, size_t len, int fin)
{
    if (!c->h3 && h3_ensure(c) != 0)
        return -(long)H3_INTERNAL_ERROR;
    nghttp3_ssize n = nghttp3_conn_read_stream(c->h3, sid, data, len, fin);
    if (n < 0)
        return -(long)nghttp3_err_infer_quic_app_error_code((int)n);
    return (long)n;
}

long h3_writev(struct aegis_conn *c, int64_t *psid, int *pfin, struct tvec *vec, size_t n)
{
    nghttp3_ssize r = nghttp3_conn_writev_stream(c->h3, psid, pfin, (nghttp3_vec *)vec, n);
    return r < 0 ? AEGIS_ERR_HTTP3 : (long)r;
}

int h3_add_write_offset(struct aegis_conn *c, int64_t sid, size_t n)
{
    return nghttp3_conn_add_write_offset(c->h3, sid, n) == 0 ? 0 : AEGIS_ERR_HTTP3;
}

int h3_add_ack_offset(struct aegis_conn *c, int64_t sid, uint64_t n)
{
    if (!c->h3)
        return 0;
    return nghttp3_conn_add_ack_offset(c->h3, sid, n) == 0 ? 0 : AEGIS_ERR_HTTP3;
}

void h3_block_stream(struct aegis_conn *c, int64_t sid)
{
    nghttp3_conn_block_stream(c->h3, sid);
}

int h3_unblock_stream(struct aegis_conn *c, int64_t sid)
{
    if (!c->h3)
        return 0;
    return nghttp3_conn_unblock_stream(c->h3, sid) == 0 ? 0 : AEGIS_ERR_HTTP3;
}

void h3_shutdown_stream_write(struct aegis_conn *c, int64_t sid)
{
    nghttp3_conn_shutdown_stream_write(c->h3, sid);
}

int h3_shutdown_stream_read(struct aegis_conn *c, int64_t sid)
{
    if (!c->h3)
        return 0;
    return nghttp3_conn_shutdown_stream_read(c->h3, sid) == 0 ? 0 : AEGIS_ERR_HTTP3;
}

int h3_close_stream(struct aegis_conn *c, int64_t sid, uint64_t code)
{
    if (!c->h3)
        return 0;
    int rv = nghttp3_conn_close_stream(c->h3, sid, code);
    if (rv == 0 || rv == NGHTTP3_ERR_STREAM_NOT_FOUND)
        return 0;
    return AEGIS_ERR_HTTP3;
}

int h3_resume_stream(struct aegis_conn *c, int64_t sid)
{
    if (!c->h3)
        return 0;
    return nghttp3_conn_resume_stream(c->h3, sid) == 0 ? 0 : AEGIS_ERR_HTTP3;
}

static size_t to_nv(nghttp3_nv *out, const struct h3_nv *in, size_t n)
{
    if (n > MAX_NV)
        n = MAX_NV;
    for (size_t i = 0; i < n; i++) {
        out[i].name = in[i].name;
        out[i].namelen = in[i].namelen;
        out[i].value = in[i].value;
        out[i].valuelen = in[i].valuelen;
        out[i].flags = NGHTTP3_NV_FLAG_NONE;
    }
    return n;
}

static int map_err(int rv)
{
    if (rv == 0)
        return 0;
    if (rv == NGHTTP3_ERR_NOMEM)
        return -ENOMEM;
    if (rv == NGHTTP3_ERR_CONN_CLOSING)
        return AEGIS_ERR_STATE;
    return AEGIS_ERR_HTTP3;
}

int h3_submit_request(struct aegis_conn *c, int64_t sid, const struct h3_nv *nv, size_t n,
                      struct aegis_call *call)
{
    nghttp3_nv a[MAX_NV];
    size_t k = to_nv(a, nv, n);
    return map_err(nghttp3_conn_submit_request(c->h3, sid, a, k, &data_reader, call));
}

int h3_submit_response(struct aegis_conn *c, int64_t sid, const struct h3_nv *nv, size_t n,
                       int with_body)
{
    nghttp3_nv a[MAX_NV];
    size_t k = to_nv(a, nv, n);
    return map_err(nghttp3_conn_submit_response(c->h3, sid, a, k, with_body ? &data_reader : NULL));
}

int h3_submit_trailers(struct aegis_conn *c, int64_t sid, const struct h3_nv *nv, size_t n)
{
    nghttp3_nv a[MAX_NV];
    size_t k = to_nv(a, nv, n);
    return map_err(nghttp3_conn_submit_trailers(c->h3, sid, a, k));
}

int h3_shutdown(struct aegis_conn *c)
{
    if (!c->h3)
        return 0;
    int rv = nghttp3_conn_submit_shutdown_notice(c->h3);
    if (rv == 0)
        rv = nghttp3_conn_shutdown(c->h3);
    return map_err(rv);
}

int h3_is_drained(struct aegis_conn *c)
{
    return !c->h3 || nghttp3_conn_is_drained(c->h3);
}

int h3_writable(struct aegis_conn *c, int64_t sid)
{
    return c->h3 && nghttp3_conn_is_stream_writable(c->h3, sid);
}
