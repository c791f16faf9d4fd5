/*
 * gRPC calls on HTTP/3 (gRPC PROTOCOL-HTTP2 mapped to HTTP/3, DESIGN §2):
 * headers and trailers, message framing, status, deadlines, cancellation,
 * send queues and receive backpressure. No third-party header: HTTP/3 goes
 * through h3_conn.c, QUIC through quic_conn.c, wire details through
 * grpc_wire.h.
 *
 * Receive flow control: bytes a message is made of are returned to QUIC
 * (stream and connection credit) as the deframer absorbs them, but the
 * deframer is not fed while the application has paused the call: bytes that
 * arrive then wait in `pend`, uncredited, so the peer can have at most one
 * stream window outstanding and then stalls.
 */
#include "transport_int.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Limits on received metadata: gRPC's common default header list size is
 * 8 KiB; we keep the decoded form under twice that. */
#define MD_MAX_BYTES (16u * 1024u)
#define MD_MAX_ENTRIES 64
/* Outgoing metadata entries per call (HTTP/3 field lines we build). */
#define NV_MAX 64
#define ZSTD_LEVEL 3
/* A client's cancel that reaches the server this close to the call's
 * deadline is reported as DEADLINE_EXCEEDED there (the client's timer and
 * ours start one network latency apart). */
#define DEADLINE_GRACE_NS (100 * AEGIS_NS_PER_MS)

static const char CT_GRPC[] = "application/grpc+proto";

/* ---- small helpers ---- */

static void conn_dirty(struct aegis_call *call)
{
    ep_mark_dirty(call->conn);
}

static size_t queue_limit(const struct aegis_call *call)
{
    return call->conn->ep->send_queue_limit;
}

static void set_status(struct aegis_call *call, int code, const char *msg, int local)
{
    if (call->status_set)
        return;
    call->status_set = 1;
    call->status = code;
    if (msg && (!call->status_msg || local)) {
        char *m = aegis_strdup(call->conn->ep->mem, msg);
        if (m) {
            aegis_free(call->conn->ep->mem, call->status_msg);
            call->status_msg = m;
        }
    }
    call->status_local = local ? 1 : 0;
    conn_dirty(call);
}

/* Metadata arena entry: u16 keylen, key, NUL, u32 vallen, value, NUL. */
static int md_append(const struct aegis_mem *mem, uint8_t **buf, size_t *len, size_t *cap,
                     const char *k, size_t klen, const uint8_t *v, size_t vlen)
{
    size_t need = 2 + klen + 1 + 4 + vlen + 1;
    if (klen > UINT16_MAX || vlen > UINT32_MAX)
        return -EINVAL;
    if (*len + need > *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        while (ncap < *len + need)
            ncap *= 2;
        uint8_t *nb = aegis_realloc(mem, *buf, ncap);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = ncap;
    }
    uint8_t *p = *buf + *len;
    uint16_t kl = (uint16_t)klen;
    uint32_t vl = (uint32_t)vlen;
    memcpy(p, &kl, 2);
    memcpy(p + 2, k, klen);
    p[2 + klen] = 0;
    memcpy(p + 3 + klen, &vl, 4);
    if (vlen)
        memcpy(p + 7 + klen, v, vlen);
    p[7 + klen + vlen] = 0;
    *len += need;
    return 0;
}

/* Walks the arena: fills up to max entries starting at entry index `from`. */
static size_t md_list(const uint8_t *buf, size_t len, size_t from, struct aegis_metadata *out,
                      size_t max)
{
    size_t off = 0, idx = 0, n = 0;
    while (off < len && n < max) {
        uint16_t kl;
        uint32_t vl;
        memcpy(&kl, buf + off, 2);
        memcpy(&vl, buf + off + 3 + kl, 4);
        if (idx >= from) {
            out[n].key = (const char *)buf + off + 2;
            out[n].value = buf + off + 7 + kl;
            out[n].value_len = vl;
            n++;
        }
        idx++;
        off += 8u + (size_t)kl + (size_t)vl;
    }
    return n;
}

static int md_store_received(struct aegis_call *call, const uint8_t *name, size_t nlen,
                             const uint8_t *value, size_t vlen)
{
    const struct aegis_mem *mem = call->conn->ep->mem;
    if (call->md_n >= MD_MAX_ENTRIES || call->md_len + nlen + vlen > MD_MAX_BYTES)
        return AEGIS_ERR_LIMIT;
    if (!grpc_metadata_key_ok((const char *)name, nlen))
        return 0; /* reserved or malformed keys are not handed to the app */
    int rv;
    if (grpc_metadata_key_is_bin((const char *)name, nlen)) {
        size_t cap = vlen * 3 / 4 + 3;
        uint8_t *tmp = aegis_malloc(mem, cap);
        if (!tmp)
            return -ENOMEM;
        long d = grpc_base64_decode((const char *)value, vlen, tmp, cap);
        if (d < 0) {
            aegis_free(mem, tmp);
            return 0; /* undecodable -bin value: dropped */
        }
        rv = md_append(mem, &call->md_buf, &call->md_len, &call->md_cap, (const char *)name, nlen,
                       tmp, (size_t)d);
        aegis_free(mem, tmp);
    } else {
        if (!grpc_metadata_value_ok((const char *)value, vlen))
            return 0;
        rv = md_append(mem, &call->md_buf, &call->md_len, &call->md_cap, (const char *)name, nlen,
                       value, vlen);
    }
    if (rv == 0)
        call->md_n++;
    return rv;
}

/* Copies outgoing metadata (validated) into tr_buf, -bin values base64. */
static int md_copy_out(struct aegis_call *call, const struct aegis_metadata *md, size_t n)
{
    const struct aegis_mem *mem = call->conn->ep->mem;
    size_t cap = call->tr_len;
    if (n > NV_MAX - 12)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!md[i].key || (!md[i].value && md[i].value_len))
            return -EINVAL;
        size_t kl = strlen(md[i].key);
        if (!grpc_metadata_key_ok(md[i].key, kl))
            return -EINVAL;
        int rv;
        if (grpc_metadata_key_is_bin(md[i].key, kl)) {
            size_t need = grpc_base64_encode(md[i].value, md[i].value_len, NULL, 0);
            char *tmp = aegis_malloc(mem, need + 1);
            if (!tmp)
                return -ENOMEM;
            grpc_base64_encode(md[i].value, md[i].value_len, tmp, need + 1);
            rv = md_append(mem, &call->tr_buf, &call->tr_len, &cap, md[i].key, kl,
                           (const uint8_t *)tmp, need);
            aegis_free(mem, tmp);
        } else {
            if (!grpc_metadata_value_ok((const char *)md[i].value, md[i].value_len))
                return -EINVAL;
            rv = md_append(mem, &call->tr_buf, &call->tr_len, &cap, md[i].key, kl, md[i].value,
                           md[i].value_len);
        }
        if (rv != 0)
            return rv;
        call->tr_n++;
    }
    return 0;
}

static void nv_set(struct h3_nv *nv, const char *name, const char *value, size_t vlen)
{
    nv->name = (const uint8_t *)name;
    nv->namelen = strlen(name);
    nv->value = (const uint8_t *)value;
    nv->valuelen = vlen;
}

/* Appends the tr_buf entries as field lines. */
static size_t nv_add_md(struct aegis_call *call, struct h3_nv *nv, size_t k)
{
    struct aegis_metadata md[NV_MAX];
    size_t n = md_list(call->tr_buf, call->tr_len, 0, md, NV_MAX - k);
    for (size_t i = 0; i < n; i++) {
        nv[k].name = (const uint8_t *)md[i].key;
        nv[k].namelen = strlen(md[i].key);
        nv[k].value = md[i].value;
        nv[k].valuelen = md[i].value_len;
        k++;
    }
    return k;
}

/* ---- lifecycle ---- */

static struct aegis_call *call_alloc(struct aegis_conn *conn, int is_server)
{
    struct aegis_endpoint *ep = conn->ep;
    struct aegis_call *call = aegis_calloc(ep->mem, 1, sizeof(*call));
    if (!call)
        return NULL;
    call->conn = conn;
    call->is_server = is_server;
    call->stream_id = -1;
    grpc_deframer_init(&call->df, ep->mem, ep->max_message);
    call->next = conn->calls;
    if (conn->calls)
        conn->calls->prev = call;
    conn->calls = call;
    conn->ncalls++;
    ep->ncalls++;
    ep->stats.calls_started++;
    ep->stats.calls_active++;
    return call;
}

void call_free(struct aegis_call *call)
{
    struct aegis_conn *conn = call->conn;
    struct aegis_endpoint *ep = conn->ep;
    if (call->prev)
        call->prev->next = call->next;
    else
        conn->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    if (call->waiting) {
        for (struct aegis_call **pc = &conn->wait_head; *pc; pc = &(*pc)->wait_next) {
            if (*pc == call) {
                *pc = call->wait_next;
                break;
            }
        }
        conn->wait_tail = NULL;
        for (struct aegis_call *w = conn->wait_head; w; w = w->wait_next)
            conn->wait_tail = w;
    }
    if (call->stream_id >= 0 && conn->state < CS_CLOSING && !call->stream_gone)
        qconn_set_stream_data(conn, call->stream_id, NULL);
    conn->ncalls--;
    ep->ncalls--;
    ep->stats.calls_active--;
    grpc_deframer_free(&call->df);
    for (struct send_chunk *ch = call->q_head, *next; ch; ch = next) {
        next = ch->next;
        aegis_free(ep->mem, ch);
    }
    aegis_free(ep->mem, call->spare);
    aegis_free(ep->mem, call->pend);
    aegis_free(ep->mem, call->path);
    aegis_free(ep->mem, call->status_msg);
    aegis_free(ep->mem, call->md_buf);
    aegis_free(ep->mem, call->tr_buf);
    aegis_free(ep->mem, call);
}

void call_conn_cleanup(struct aegis_conn *conn)
{
    grpc_zstd_del(conn->zstd);
    conn->zstd = NULL;
    aegis_free(conn->ep->mem, conn->authority);
    conn->authority = NULL;
}

struct aegis_call *call_server_new(struct aegis_conn *conn, int64_t sid)
{
    struct aegis_call *call = call_alloc(conn, 1);
    if (!call)
        return NULL;
    call->stream_id = sid;
    return call;
}

/* ---- server side: answering ---- */

static int submit_finish(struct aegis_call *call)
{
    struct aegis_conn *conn = call->conn;
    struct h3_nv nv[NV_MAX];
    char st[8];
    size_t k = 0;
    const char *msg = call->status_msg ? call->status_msg : "";
    size_t mlen = strlen(msg);
    size_t elen = grpc_percent_encode(msg, mlen, NULL, 0);
    char *enc = aegis_malloc(conn->ep->mem, elen + 1);
    if (!enc)
        return -ENOMEM;
    grpc_percent_encode(msg, mlen, enc, elen + 1);
    int n = snprintf(st, sizeof(st), "%d", call->status);
    int trailers_only = !call->submitted;
    if (trailers_only) {
        nv_set(&nv[k++], ":status", "200", 3);
        nv_set(&nv[k++], "content-type", CT_GRPC, sizeof(CT_GRPC) - 1);
    }
    nv_set(&nv[k++], "grpc-status", st, (size_t)n);
    if (elen)
        nv_set(&nv[k++], "grpc-message", enc, elen);
    k = nv_add_md(call, nv, k);
    int rv;
    if (trailers_only) {
        rv = h3_submit_response(conn, call->stream_id, nv, k, 0);
        call->submitted = 1;
        call->eof_given = 1;
    } else {
        rv = h3_submit_trailers(conn, call->stream_id, nv, k);
        if (rv == 0)
            h3_resume_stream(conn, call->stream_id);
    }
    aegis_free(conn->ep->mem, enc);
    if (rv == 0)
        call->trailers_submitted = 1;
    conn_dirty(call);
    return rv;
}

static int submit_response_headers(struct aegis_call *call)
{
    struct h3_nv nv[4];
    size_t k = 0;
    nv_set(&nv[k++], ":status", "200", 3);
    nv_set(&nv[k++], "content-type", CT_GRPC, sizeof(CT_GRPC) - 1);
    if (call->compress)
        nv_set(&nv[k++], "grpc-encoding", "zstd", 4);
    int rv = h3_submit_response(call->conn, call->stream_id, nv, k, 1);
    if (rv == 0)
        call->submitted = 1;
    return rv;
}

/* Server: end the call from inside the transport (errors, deadline). */
static void server_fail(struct aegis_call *call, int code, const char *msg)
{
    if (call->send_closed)
        return;
    call->send_closed = 1;
    call->status = code;
    aegis_free(call->conn->ep->mem, call->status_msg);
    call->status_msg = aegis_strdup(call->conn->ep->mem, msg);
    aegis_free(call->conn->ep->mem, call->tr_buf);
    call->tr_buf = NULL;
    call->tr_len = call->tr_n = 0;
    if (submit_finish(call) != 0) {
        qconn_shutdown_stream(call->conn, call->stream_id, H3_INTERNAL_ERROR);
        return;
    }
    if (!call->remote_fin)
        qconn_shutdown_stream_read(call->conn, call->stream_id, H3_NO_ERROR);
}

/* ---- receiving ---- */

int call_recv_header(struct aegis_call *call, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, int trailer)
{
    const char *n = (const char *)name;
    const char *v = (const char *)value;
#define IS(s) (nlen == sizeof(s) - 1 && memcmp(n, s, nlen) == 0)
    if (call->is_server) {
        if (trailer)
            return 0; /* request trailers carry nothing for gRPC */
        if (IS(":path")) {
            if (call->path || !grpc_path_ok(v, vlen)) {
                call->bad_headers = 1;
                return 0;
            }
            call->path = aegis_malloc(call->conn->ep->mem, vlen + 1);
            if (!call->path)
                return -ENOMEM;
            memcpy(call->path, v, vlen);
            call->path[vlen] = '\0';
        } else if (IS(":method")) {
            if (!(vlen == 4 && memcmp(v, "POST", 4) == 0))
                call->bad_headers = 1;
        } else if (IS("content-type")) {
            if (!grpc_content_type_ok(v, vlen))
                call->bad_headers = 1;
        } else if (IS("grpc-accept-encoding")) {
            if (grpc_accept_encoding_parse(v, vlen) & (1u << GRPC_ENC_ZSTD))
                call->peer_accepts_zstd = 1;
        } else if (IS("grpc-timeout")) {
            uint64_t ns;
            if (grpc_timeout_parse(v, vlen, &ns) == 0)
                call->timeout_hdr_ns = ns ? ns : 1;
        } else if (IS("grpc-encoding")) {
            enum grpc_encoding e = grpc_encoding_parse(v, vlen);
            if (e == GRPC_ENC_ZSTD)
                call->peer_zstd = 1;
            else if (e != GRPC_ENC_IDENTITY)
                call->bad_headers = 1;
        } else if (nlen && n[0] != ':' && !(nlen > 5 && memcmp(n, "grpc-", 5) == 0) && !IS("te") &&
                   !IS("user-agent")) {
            return md_store_received(call, name, nlen, value, vlen);
        }
        return 0;
    }
    /* client: response headers or trailers */
    if (IS(":status")) {
        int code = 0;
        for (size_t i = 0; i < vlen && i < 3; i++)
            code = code * 10 + (v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : 0);
        if (code != 200)
            call->http_status = (uint16_t)(code ? code : 1);
    } else if (IS("content-type")) {
        if (!grpc_content_type_ok(v, vlen))
            call->bad_headers = 1;
    } else if (IS("grpc-status")) {
        int st;
        if (grpc_status_parse(v, vlen, &st) == 0) {
            call->got_status = 1;
            call->status = st;
        } else {
            call->bad_headers = 1;
        }
    } else if (IS("grpc-message")) {
        const struct aegis_mem *mem = call->conn->ep->mem;
        char *m = aegis_malloc(mem, vlen + 1);
        if (!m)
            return -ENOMEM;
        grpc_percent_decode(v, vlen, m, vlen + 1);
        aegis_free(mem, call->status_msg);
        call->status_msg = m;
    } else if (IS("grpc-encoding")) {
        if (grpc_encoding_parse(v, vlen) == GRPC_ENC_ZSTD)
            call->peer_zstd = 1;
    } else if (nlen && n[0] != ':' && !(nlen > 5 && memcmp(n, "grpc-", 5) == 0)) {
        return md_store_received(call, name, nlen, value, vlen);
    }
#undef IS
    return 0;
}

static int md_array(struct aegis_call *call, size_t from, struct aegis_metadata **pmd, size_t *pn)
{
    *pmd = NULL;
    *pn = 0;
    if (call->md_n <= from)
        return 0;
    struct aegis_metadata *md =
        aegis_malloc(call->conn->ep->mem, (call->md_n - from) * sizeof(*md));
    if (!md)
        return -ENOMEM;
    *pn = md_list(call->md_buf, call->md_len, from, md, call->md_n - from);
    *pmd = md;
    return 0;
}

static void server_dispatch(struct aegis_call *call)
{
    struct aegis_conn *conn = call->conn;
    struct aegis_endpoint *ep = conn->ep;
    if (call->bad_headers || !call->path) {
        server_fail(call, AEGIS_GRPC_INTERNAL, "malformed gRPC request headers");
        return;
    }
    if (!conn->hook_ok) {
        server_fail(call, AEGIS_GRPC_UNAVAILABLE, "connection not accepted");
        return;
    }
    struct rpc_handler *h = ep_find_handler(ep, call->path, strlen(call->path));
    if (!h) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %s", call->path);
        server_fail(call, AEGIS_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    call->shape = h->shape;
    /* answer compressed when asked compressed (grpc-encoding is per
     * direction, but a zstd sender surely accepts zstd) */
    call->compress = call->peer_zstd;
    if (call->peer_zstd)
        call->peer_accepts_zstd = 1;
    if (call->timeout_hdr_ns) {
        uint64_t d = ep->now + call->timeout_hdr_ns;
        call->deadline = d < ep->now ? AEGIS_TSTAMP_NEVER - 1 : d;
    }
    call->dispatched = 1;
    struct aegis_metadata *md;
    size_t n;
    if (md_array(call, 0, &md, &n) != 0) {
        server_fail(call, AEGIS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    int rv = h->on_call(call, md, n, h->user_data);
    aegis_free(ep->mem, md);
    if (rv != 0 && !call->send_closed)
        server_fail(call, AEGIS_GRPC_INTERNAL, "handler failed");
}

int call_end_headers(struct aegis_call *call, int trailer)
{
    if (call->is_server) {
        if (!trailer && !call->dispatched && !call->send_closed)
            server_dispatch(call);
        return 0;
    }
    if (call->status_set)
        return 0;
    if (call->http_status) {
        /* not a gRPC answer: map the HTTP status (gRPC http-grpc-status-mapping) */
        int st = AEGIS_GRPC_UNKNOWN;
        switch (call->http_status) {
        case 400:
            st = AEGIS_GRPC_INTERNAL;
            break;
        case 401:
            st = AEGIS_GRPC_UNAUTHENTICATED;
            break;
        case 403:
            st = AEGIS_GRPC_PERMISSION_DENIED;
            break;
        case 404:
            st = AEGIS_GRPC_UNIMPLEMENTED;
            break;
        case 429:
        case 502:
        case 503:
        case 504:
            st = AEGIS_GRPC_UNAVAILABLE;
            break;
        }
        char msg[64];
        snprintf(msg, sizeof(msg), "HTTP status %u from the server", call->http_status);
        set_status(call, st, msg, 1);
        qconn_shutdown_stream(call->conn, call->stream_id, H3_REQUEST_CANCELLED);
        return 0;
    }
    if (call->bad_headers) {
        set_status(call, AEGIS_GRPC_INTERNAL, "malformed gRPC response headers", 1);
        qconn_shutdown_stream(call->conn, call->stream_id, H3_REQUEST_CANCELLED);
        return 0;
    }
    if (!trailer) {
        call->headers_recv = 1;
        /* Trailers-only response (grpc-status in the only header block): its metadata are
         * the trailers (gRPC PROTOCOL-HTTP2 "Trailers-Only"). */
        call->md_trailers_from = call->got_status ? 0 : call->md_n;
        if (!call->got_status && call->cbs.on_headers) {
            struct aegis_metadata *md;
            size_t n;
            if (md_array(call, 0, &md, &n) != 0)
                return -ENOMEM;
            int rv = call->cbs.on_headers(call, md, n, call->user_data);
            aegis_free(call->conn->ep->mem, md);
            if (rv != 0)
                aegis_call_cancel(call);
        }
    }
    return 0;
}

static int deliver(struct aegis_call *call, const uint8_t *msg, size_t len, int compressed)
{
    struct aegis_conn *conn = call->conn;
    const struct aegis_mem *mem = conn->ep->mem;
    uint8_t *plain = NULL;
    size_t plainlen = 0;
    if (compressed) {
        if (!call->peer_zstd)
            return AEGIS_ERR_MALFORMED;
        if (!conn->zstd) {
            int rv = grpc_zstd_new(mem, ZSTD_LEVEL, &conn->zstd);
            if (rv != 0)
                return rv;
        }
        int rv =
            grpc_zstd_decompress(conn->zstd, msg, len, conn->ep->max_message, &plain, &plainlen);
        if (rv != 0)
            return rv;
        msg = plain;
        len = plainlen;
    }
    if (call->nrecv_msgs < 3)
        call->nrecv_msgs++;
    int single =
        call->is_server
            ? (call->shape == AEGIS_RPC_UNARY || call->shape == AEGIS_RPC_SERVER_STREAMING)
            : (call->shape == AEGIS_RPC_UNARY || call->shape == AEGIS_RPC_CLIENT_STREAMING);
    int rv = 0;
    if (single && call->nrecv_msgs > 1) {
        rv = AEGIS_ERR_LIMIT;
    } else if (call->cbs.on_message && !call->status_set) {
        int r = call->cbs.on_message(call, msg, len, call->user_data);
        if (r == AEGIS_CALL_PAUSE)
            call->paused = 1;
        else if (r != 0)
            aegis_call_cancel(call);
    }
    aegis_free(mem, plain);
    return rv;
}

/* Receive-side failure: the peer sent something we cannot take. */
static void recv_fail(struct aegis_call *call, int err)
{
    int code = AEGIS_GRPC_INTERNAL;
    const char *msg = "malformed message";
    if (err == AEGIS_ERR_TOO_LARGE) {
        code = AEGIS_GRPC_RESOURCE_EXHAUSTED;
        msg = "message larger than the limit";
    } else if (err == AEGIS_ERR_LIMIT) {
        msg = "too many messages for this method";
    } else if (err == AEGIS_ERR_DECOMPRESS) {
        msg = "cannot decompress message";
    } else if (err == -ENOMEM) {
        code = AEGIS_GRPC_RESOURCE_EXHAUSTED;
        msg = "out of memory";
    }
    if (call->is_server) {
        server_fail(call, code, msg);
        set_status(call, code, msg, 1);
    } else {
        set_status(call, code, msg, 1);
        qconn_shutdown_stream(call->conn, call->stream_id, H3_REQUEST_CANCELLED);
    }
}

static int pend_append(struct aegis_call *call, const uint8_t *data, size_t len)
{
    if (call->pend_len + len > call->pend_cap) {
        size_t ncap = call->pend_cap ? call->pend_cap : 4096;
        while (ncap < call->pend_len + len)
            ncap *= 2;
        uint8_t *p = aegis_realloc(call->conn->ep->mem, call->pend, ncap);
        if (!p)
            return -ENOMEM;
        call->pend = p;
        call->pend_cap = ncap;
    }
    memcpy(call->pend + call->pend_len, data, len);
    call->pend_len += len;
    return 0;
}

/* Feeds bytes to the deframer until done or paused; returns bytes used. */
static size_t feed(struct aegis_call *call, const uint8_t *data, size_t len)
{
    size_t used = 0;
    while (used < len && !call->paused && !call->status_set &&
           !(call->is_server && call->send_closed)) {
        int done = 0, compressed = 0;
        const uint8_t *msg;
        size_t mlen;
        long n =
            grpc_deframer_feed(&call->df, data + used, len - used, &done, &msg, &mlen, &compressed);
        if (n < 0) {
            recv_fail(call, (int)n);
            qconn_credit(call->conn, call->stream_id, len - used);
            return len;
        }
        used += (size_t)n;
        if (done) {
            int rv = deliver(call, msg, mlen, compressed);
            if (rv != 0)
                recv_fail(call, rv);
        }
        qconn_credit(call->conn, call->stream_id, (uint64_t)n);
    }
    return used;
}

static void finish_recv(struct aegis_call *call);

int call_recv_data(struct aegis_call *call, const uint8_t *data, size_t len)
{
    if (call->status_set || (call->is_server && call->send_closed) ||
        (call->is_server && !call->dispatched)) {
        qconn_credit(call->conn, call->stream_id, len);
        return 0;
    }
    if (call->paused || call->pend_len)
        return pend_append(call, data, len);
    size_t used = feed(call, data, len);
    if (used < len) {
        if (call->status_set || (call->is_server && call->send_closed)) {
            qconn_credit(call->conn, call->stream_id, len - used);
            return 0;
        }
        return pend_append(call, data + used, len - used);
    }
    return 0;
}

static void drain_pend(struct aegis_call *call)
{
    if (call->paused)
        return;
    if (call->pend_len) {
        size_t used = feed(call, call->pend, call->pend_len);
        if (used >= call->pend_len || call->status_set) {
            if (used < call->pend_len)
                qconn_credit(call->conn, call->stream_id, call->pend_len - used);
            call->pend_len = 0;
        } else {
            memmove(call->pend, call->pend + used, call->pend_len - used);
            call->pend_len -= used;
        }
    }
    if (!call->pend_len && !call->paused && call->remote_fin)
        finish_recv(call);
}

static void finish_recv(struct aegis_call *call)
{
    if (call->half_close_notified)
        return;
    call->half_close_notified = 1;
    if (call->status_set)
        return;
    if (grpc_deframer_partial(&call->df)) {
        recv_fail(call, AEGIS_ERR_MALFORMED);
        return;
    }
    if (call->is_server) {
        if (call->dispatched && call->cbs.on_half_close)
            call->cbs.on_half_close(call, call->user_data);
        return;
    }
    if (call->cbs.on_half_close)
        call->cbs.on_half_close(call, call->user_data);
    if (!call->got_status) {
        set_status(call, AEGIS_GRPC_INTERNAL, "stream ended without grpc-status", 0);
    } else {
        set_status(call, call->status, NULL, 0);
    }
    if (!call->send_closed || !call->eof_given) {
        /* The server is done; stop sending what it will not read. */
        call->send_closed = 1;
        qconn_shutdown_stream_write(call->conn, call->stream_id, H3_NO_ERROR);
    }
}

int call_end_stream(struct aegis_call *call)
{
    call->remote_fin = 1;
    if (call->paused || call->pend_len)
        return 0; /* finish after the application drained */
    finish_recv(call);
    return 0;
}

void call_stream_reset(struct aegis_call *call, uint64_t code)
{
    if (call->status_set || (call->is_server && call->trailers_submitted && call->eof_given))
        return;
    aegis_tstamp now = call->conn->ep->now;
    if (call->is_server && call->deadline && now + DEADLINE_GRACE_NS >= call->deadline)
        /* gRPC has no wire code for "deadline": a cancel that arrives at
         * the deadline is the client's deadline firing first. */
        set_status(call, AEGIS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", 1);
    else if (code == H3_REQUEST_REJECTED)
        set_status(call, AEGIS_GRPC_UNAVAILABLE, "request rejected by the server", 1);
    else
        set_status(call, AEGIS_GRPC_CANCELLED, "cancelled by the peer", 1);
    if (call->stream_id >= 0 && !call->reset_sent) {
        call->reset_sent = 1;
        qconn_shutdown_stream(call->conn, call->stream_id, H3_REQUEST_CANCELLED);
    }
}

void call_stream_closed(struct aegis_call *call, uint64_t code)
{
    call->stream_gone = 1;
    if (call->status_set)
        return;
    /* Everything arrived but the application has not taken it all yet:
     * the call ends when it has (drain_pend). */
    if (call->remote_fin && !call->half_close_notified && code == H3_NO_ERROR)
        return;
    if (call->is_server) {
        if (call->trailers_submitted && code == H3_NO_ERROR)
            set_status(call, call->status, call->status_msg, 0);
        else
            set_status(call, AEGIS_GRPC_CANCELLED, "stream closed before the call finished", 1);
        return;
    }
    if (code == H3_REQUEST_REJECTED)
        set_status(call, AEGIS_GRPC_UNAVAILABLE, "request rejected by the server", 1);
    else if (code == H3_REQUEST_CANCELLED)
        set_status(call, AEGIS_GRPC_CANCELLED, "cancelled by the peer", 1);
    else
        set_status(call, AEGIS_GRPC_INTERNAL, "stream closed without grpc-status", 1);
}

/* ---- sending ---- */

long call_read_data(struct aegis_call *call, struct tvec *vec, size_t n, uint32_t *pflags)
{
    size_t k = 0;
    while (k < n && call->q_unsent) {
        vec[k].base = call->q_unsent->data;
        vec[k].len = call->q_unsent->len;
        call->q_unsent = call->q_unsent->next;
        k++;
    }
    if (!call->q_unsent && call->send_closed) {
        *pflags |= 0x01u; /* NGHTTP3_DATA_FLAG_EOF */
        if (call->is_server)
            *pflags |= 0x02u; /* NGHTTP3_DATA_FLAG_NO_END_STREAM: trailers follow */
        call->eof_given = 1;
    }
    if (k == 0 && !call->eof_given)
        return -EAGAIN;
    return (long)k;
}

void call_acked(struct aegis_call *call, uint64_t n)
{
    const struct aegis_mem *mem = call->conn->ep->mem;
    while (n && call->q_head) {
        struct send_chunk *ch = call->q_head;
        size_t left = ch->len - call->q_head_acked;
        size_t take = n < left ? (size_t)n : left;
        call->q_head_acked += take;
        call->queued -= take;
        n -= take;
        if (call->q_head_acked == ch->len) {
            call->q_head = ch->next;
            if (!call->q_head)
                call->q_tail = NULL;
            call->q_head_acked = 0;
            if (!call->spare) {
                call->spare = ch;
            } else if (ch->cap > call->spare->cap) {
                aegis_free(mem, call->spare);
                call->spare = ch;
            } else {
                aegis_free(mem, ch);
            }
        }
    }
    if (call->want_writable && call->queued <= queue_limit(call) / 2) {
        call->want_writable = 0;
        call->writable_pending = 1;
        conn_dirty(call);
    }
}

static void submit_request(struct aegis_call *call)
{
    struct aegis_conn *conn = call->conn;
    struct aegis_endpoint *ep = conn->ep;
    struct h3_nv nv[NV_MAX];
    char tmo[16];
    size_t k = 0;
    nv_set(&nv[k++], ":method", "POST", 4);
    nv_set(&nv[k++], ":scheme", "https", 5);
    nv_set(&nv[k++], ":path", call->path, strlen(call->path));
    const char *auth = conn->authority ? conn->authority : "localhost";
    nv_set(&nv[k++], ":authority", auth, strlen(auth));
    nv_set(&nv[k++], "content-type", CT_GRPC, sizeof(CT_GRPC) - 1);
    nv_set(&nv[k++], "te", "trailers", 8);
    if (call->deadline) {
        uint64_t left = call->deadline > ep->now ? call->deadline - ep->now : 1;
        size_t tl = grpc_timeout_format(left, tmo);
        nv_set(&nv[k++], "grpc-timeout", tmo, tl);
    }
    if (call->compress)
        nv_set(&nv[k++], "grpc-encoding", "zstd", 4);
    nv_set(&nv[k++], "grpc-accept-encoding", "identity,zstd", 13);
    k = nv_add_md(call, nv, k);
    int rv = h3_submit_request(conn, call->stream_id, nv, k, call);
    if (rv != 0) {
        set_status(call, AEGIS_GRPC_INTERNAL, "cannot submit request", 1);
        qconn_shutdown_stream(conn, call->stream_id, H3_REQUEST_CANCELLED);
        return;
    }
    call->submitted = 1;
    conn_dirty(call);
}

void call_open_waiting(struct aegis_conn *conn)
{
    if (!conn->h3 || conn->state >= CS_CLOSING)
        return;
    while (conn->wait_head) {
        struct aegis_call *call = conn->wait_head;
        int64_t sid;
        if (qconn_open_stream(conn, &sid, call) != 0)
            return;
        conn->wait_head = call->wait_next;
        if (!conn->wait_head)
            conn->wait_tail = NULL;
        call->wait_next = NULL;
        call->waiting = 0;
        call->stream_id = sid;
        call->stream_gone = 0;
        submit_request(call);
    }
}

void call_goaway(struct aegis_conn *conn, int64_t last_id)
{
    for (struct aegis_call *call = conn->calls; call; call = call->next) {
        if (call->status_set)
            continue;
        if (call->waiting) {
            set_status(call, AEGIS_GRPC_UNAVAILABLE, "server is shutting down (GOAWAY)", 1);
        } else if (call->stream_id >= last_id) {
            set_status(call, AEGIS_GRPC_UNAVAILABLE, "server is shutting down (GOAWAY)", 1);
            qconn_shutdown_stream(conn, call->stream_id, H3_REQUEST_CANCELLED);
        }
    }
    while (conn->wait_head) {
        struct aegis_call *w = conn->wait_head;
        conn->wait_head = w->wait_next;
        w->wait_next = NULL;
        w->waiting = 0;
        w->stream_gone = 1;
    }
    conn->wait_tail = NULL;
}

void call_conn_failed(struct aegis_conn *conn, int code, const char *msg)
{
    for (struct aegis_call *call = conn->calls; call; call = call->next) {
        set_status(call, code, msg && *msg ? msg : "connection closed", 1);
        call->stream_gone = 1;
        call->waiting = 0;
        call->wait_next = NULL;
    }
    conn->wait_head = conn->wait_tail = NULL;
}

aegis_tstamp call_next_deadline(struct aegis_conn *conn)
{
    aegis_tstamp d = AEGIS_TSTAMP_NEVER;
    for (struct aegis_call *call = conn->calls; call; call = call->next)
        if (call->deadline && !call->status_set && call->deadline < d)
            d = call->deadline;
    return d;
}

void call_handle_deadlines(struct aegis_conn *conn, aegis_tstamp now)
{
    for (struct aegis_call *call = conn->calls; call; call = call->next) {
        if (!call->deadline || call->status_set || call->deadline > now)
            continue;
        if (call->is_server) {
            server_fail(call, AEGIS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
            set_status(call, AEGIS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", 1);
            continue;
        }
        set_status(call, AEGIS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", 1);
        if (call->waiting) {
            call->stream_gone = 1;
        } else if (call->stream_id >= 0 && !call->reset_sent) {
            call->reset_sent = 1;
            qconn_shutdown_stream(conn, call->stream_id, H3_REQUEST_CANCELLED);
        }
    }
}

void call_reap(struct aegis_conn *conn)
{
    struct aegis_call *next;
    for (struct aegis_call *call = conn->calls; call; call = next) {
        next = call->next;
        if (call->writable_pending && !call->status_set) {
            call->writable_pending = 0;
            if (call->cbs.on_writable)
                call->cbs.on_writable(call, call->user_data);
        }
        if (!call->paused && !call->status_set &&
            (call->pend_len || (call->remote_fin && !call->half_close_notified)))
            drain_pend(call);
        if (call->status_set && !call->notified) {
            call->notified = 1;
            if (call->waiting)
                call->stream_gone = 1;
            struct aegis_metadata *md = NULL;
            size_t n = 0;
            if (!call->is_server)
                md_array(call, call->md_trailers_from, &md, &n);
            struct aegis_call_status st = {
                .code = call->status,
                .message = call->status_msg ? call->status_msg : "",
                .trailers = md,
                .ntrailers = n,
                .local = call->status_local,
            };
            if (call->cbs.on_close && (!call->is_server || call->dispatched))
                call->cbs.on_close(call, &st, call->user_data);
            aegis_free(conn->ep->mem, md);
        }
        /* A stream we gave up on may still be open: the peer must finish
         * or reset it. Either way the call leaves once the stream is gone. */
        if (call->notified && (call->stream_gone || call->stream_id < 0))
            call_free(call);
    }
}

/* ---- public API ---- */

int aegis_call_start(struct aegis_conn *conn, const char *path, enum aegis_rpc_shape shape,
                     const struct aegis_call_opts *opts, const struct aegis_call_callbacks *cbs,
                     void *user_data, struct aegis_call **pcall)
{
    if (!conn || !path || !pcall || (unsigned)shape > AEGIS_RPC_BIDI)
        return -EINVAL;
    if (!grpc_path_ok(path, strlen(path)))
        return -EINVAL;
    if (conn->is_server || conn->state >= CS_CLOSING || conn->want_close || conn->goaway_recv ||
        conn->shutdown_started)
        return AEGIS_ERR_STATE;
    struct aegis_endpoint *ep = conn->ep;
    struct aegis_call *call = call_alloc(conn, 0);
    if (!call)
        return -ENOMEM;
    call->shape = shape;
    call->path = aegis_strdup(ep->mem, path);
    if (!call->path) {
        call->notified = 1;
        call_free(call);
        return -ENOMEM;
    }
    if (cbs)
        call->cbs = *cbs;
    call->user_data = user_data;
    if (opts) {
        call->deadline = opts->deadline;
        call->compress = opts->compress ? 1 : 0;
        int rv = md_copy_out(call, opts->metadata, opts->nmetadata);
        if (rv != 0) {
            call_free(call);
            return rv;
        }
    }
    call->waiting = 1;
    if (conn->wait_tail)
        conn->wait_tail->wait_next = call;
    else
        conn->wait_head = call;
    conn->wait_tail = call;
    call_open_waiting(conn);
    conn_dirty(call);
    ep_timer_update(conn);
    *pcall = call;
    return 0;
}

void aegis_call_set_callbacks(struct aegis_call *call, const struct aegis_call_callbacks *cbs,
                              void *user_data)
{
    if (!call)
        return;
    if (cbs)
        call->cbs = *cbs;
    else
        memset(&call->cbs, 0, sizeof(call->cbs));
    call->user_data = user_data;
}

int aegis_call_send(struct aegis_call *call, const uint8_t *msg, size_t len)
{
    if (!call || (!msg && len))
        return -EINVAL;
    struct aegis_conn *conn = call->conn;
    struct aegis_endpoint *ep = conn->ep;
    if (call->status_set || call->send_closed || conn->state >= CS_CLOSING)
        return AEGIS_ERR_STATE;
    if (len > ep->max_message)
        return AEGIS_ERR_TOO_LARGE;
    int single =
        call->is_server
            ? (call->shape == AEGIS_RPC_UNARY || call->shape == AEGIS_RPC_CLIENT_STREAMING)
            : (call->shape == AEGIS_RPC_UNARY || call->shape == AEGIS_RPC_SERVER_STREAMING);
    if (single && call->nsent_msgs >= 1)
        return AEGIS_ERR_STATE;
    if (call->queued && call->queued + GRPC_FRAME_HEADER_LEN + len > queue_limit(call)) {
        call->want_writable = 1;
        return -EAGAIN;
    }
    const uint8_t *body = msg;
    size_t blen = len;
    uint8_t *z = NULL;
    int compressed = 0;
    if (call->compress && len > 0) {
        if (!conn->zstd && grpc_zstd_new(ep->mem, ZSTD_LEVEL, &conn->zstd) != 0)
            return -ENOMEM;
        size_t zlen;
        if (grpc_zstd_compress(conn->zstd, msg, len, &z, &zlen) == 0 && zlen < len) {
            body = z;
            blen = zlen;
            compressed = 1;
        }
    }
    size_t need = GRPC_FRAME_HEADER_LEN + blen;
    struct send_chunk *ch = NULL;
    if (call->spare && call->spare->cap >= need && call->spare->cap <= 2 * need + 4096) {
        ch = call->spare;
        call->spare = NULL;
    } else {
        ch = aegis_malloc(ep->mem, sizeof(*ch) + need);
        if (ch)
            ch->cap = need;
    }
    if (!ch) {
        aegis_free(ep->mem, z);
        return -ENOMEM;
    }
    if (call->is_server && !call->submitted) {
        int rv = submit_response_headers(call);
        if (rv != 0) {
            aegis_free(ep->mem, z);
            aegis_free(ep->mem, ch);
            return rv;
        }
    }
    ch->next = NULL;
    ch->len = GRPC_FRAME_HEADER_LEN + blen;
    grpc_frame_header(ch->data, compressed, (uint32_t)blen);
    if (blen)
        memcpy(ch->data + GRPC_FRAME_HEADER_LEN, body, blen);
    aegis_free(ep->mem, z);
    if (call->q_tail)
        call->q_tail->next = ch;
    else
        call->q_head = ch;
    call->q_tail = ch;
    if (!call->q_unsent)
        call->q_unsent = ch;
    call->queued += ch->len;
    if (call->nsent_msgs < 3)
        call->nsent_msgs++;
    if (call->submitted)
        h3_resume_stream(conn, call->stream_id);
    conn_dirty(call);
    return 0;
}

int aegis_call_close_send(struct aegis_call *call)
{
    if (!call)
        return -EINVAL;
    if (call->is_server || call->send_closed || call->status_set)
        return AEGIS_ERR_STATE;
    call->send_closed = 1;
    if (call->submitted)
        h3_resume_stream(call->conn, call->stream_id);
    conn_dirty(call);
    return 0;
}

int aegis_call_finish(struct aegis_call *call, int status, const char *message,
                      const struct aegis_metadata *trailers, size_t ntrailers)
{
    if (!call || status < 0 || status > AEGIS_GRPC_STATUS_MAX)
        return -EINVAL;
    if (!call->is_server || call->send_closed || call->status_set)
        return AEGIS_ERR_STATE;
    const struct aegis_mem *mem = call->conn->ep->mem;
    int rv = md_copy_out(call, trailers, ntrailers);
    if (rv != 0) {
        aegis_free(mem, call->tr_buf);
        call->tr_buf = NULL;
        call->tr_len = call->tr_n = 0;
        return rv;
    }
    char *m = aegis_strdup(mem, message ? message : "");
    if (!m)
        return -ENOMEM;
    aegis_free(mem, call->status_msg);
    call->status_msg = m;
    call->status = status;
    call->send_closed = 1;
    rv = submit_finish(call);
    if (rv != 0) {
        qconn_shutdown_stream(call->conn, call->stream_id, H3_INTERNAL_ERROR);
        set_status(call, AEGIS_GRPC_INTERNAL, "cannot send trailers", 1);
        return rv;
    }
    if (!call->remote_fin)
        qconn_shutdown_stream_read(call->conn, call->stream_id, H3_NO_ERROR);
    return 0;
}

int aegis_call_cancel(struct aegis_call *call)
{
    if (!call)
        return -EINVAL;
    if (call->status_set)
        return AEGIS_ERR_STATE;
    set_status(call, AEGIS_GRPC_CANCELLED, "cancelled", 1);
    if (call->waiting) {
        call->stream_gone = 1;
    } else if (call->stream_id >= 0 && !call->reset_sent) {
        call->reset_sent = 1;
        qconn_shutdown_stream(call->conn, call->stream_id, H3_REQUEST_CANCELLED);
    }
    return 0;
}

int aegis_call_resume(struct aegis_call *call)
{
    if (!call)
        return -EINVAL;
    if (call->paused) {
        call->paused = 0;
        conn_dirty(call);
    }
    return 0;
}

const char *aegis_call_path(const struct aegis_call *call)
{
    return call->path ? call->path : "";
}

enum aegis_rpc_shape aegis_call_shape(const struct aegis_call *call)
{
    return call->shape;
}

struct aegis_conn *aegis_call_conn(const struct aegis_call *call)
{
    return call->conn;
}

const struct aegis_peer_identity *aegis_call_peer(const struct aegis_call *call)
{
    return &call->conn->peer;
}

aegis_tstamp aegis_call_deadline(const struct aegis_call *call)
{
    return call->deadline;
}

size_t aegis_call_queued(const struct aegis_call *call)
{
    return call->queued;
}

void aegis_call_set_data(struct aegis_call *call, void *data)
{
    call->app_data = data;
}

void *aegis_call_get_data(const struct aegis_call *call)
{
    return call->app_data;
}

int aegis_call_set_compress(struct aegis_call *call, int on)
{
    if (!call)
        return -EINVAL;
    /* grpc-encoding travels in the headers: too late once they are out. */
    if (call->submitted || call->status_set)
        return AEGIS_ERR_STATE;
    if (!on) {
        call->compress = 0;
        return 0;
    }
    /* gRPC: send compressed only what the peer said it accepts. */
    if (call->is_server && !call->peer_accepts_zstd)
        return AEGIS_ERR_UNSUPPORTED;
    call->compress = 1;
    return 0;
}
