/*
 * Internal structures of the transport, shared by its files:
 *   tls_wolfssl.c     wolfSSL (the only file that includes it, with the
 *                     ngtcp2_crypto_wolfssl bridge)
 *   quic_endpoint.c   ngtcp2: endpoint, packet demux, Retry, stateless reset
 *   quic_conn.c       ngtcp2: one connection, its callbacks and write loop
 *   h3_conn.c         nghttp3: HTTP/3 framing of calls
 *   rpc_call.c        gRPC semantics of calls (status, deadlines, queues)
 *   loop_ev.c         libev + UDP sockets
 * No third-party header is included here: their objects appear as opaque
 * struct pointers.
 */
#ifndef AEGIS_TRANSPORT_INT_H
#define AEGIS_TRANSPORT_INT_H

#include <aegis/rpc.h>
#include <aegis/transport.h>

#include "grpc_wire.h"

#include <stdio.h>

struct ngtcp2_conn;
struct nghttp3_conn;
struct cid_entry;
struct tls_ctx;
struct tls_conn;

/* HTTP/3 error codes (RFC 9114 §8.1). */
#define H3_NO_ERROR 0x100u
#define H3_GENERAL_PROTOCOL_ERROR 0x101u
#define H3_INTERNAL_ERROR 0x102u
#define H3_REQUEST_REJECTED 0x10bu
#define H3_REQUEST_CANCELLED 0x10cu
#define H3_MESSAGE_ERROR 0x10eu

/* Same layout as ngtcp2_vec and nghttp3_vec. */
struct tvec {
    uint8_t *base;
    size_t len;
};

/* ---- tls_wolfssl.c ---- */
int tls_ctx_new(const struct aegis_mem *mem, int is_server, const struct aegis_tls_config *cfg,
                struct tls_ctx **pctx);
void tls_ctx_del(struct tls_ctx *ctx);
/* tls_conn_new makes the per-connection TLS object and binds it to conn
 * (conn->q must be set before the handshake starts). */
int tls_conn_new(struct tls_ctx *ctx, struct aegis_conn *conn, const char *sni,
                 struct tls_conn **ptls);
void tls_conn_del(struct tls_conn *tls);
void *tls_conn_native(struct tls_conn *tls);
/* Fills identity from the peer certificate after the handshake. */
void tls_conn_identity(struct tls_conn *tls, struct aegis_peer_identity *id);
/* Client: 0 if the server leaf matches a pin, else AEGIS_ERR_PIN_MISMATCH. */
int tls_conn_check_pins(struct tls_conn *tls, const struct aegis_peer_identity *id);
/* The last verification failure seen during the handshake ("" if none). */
const char *tls_conn_verify_error(const struct tls_conn *tls);
int tls_random(uint8_t *buf, size_t len);
const char *tls_alert_name(uint8_t alert);

/* ---- connections and endpoint ---- */
enum conn_state {
    CS_HANDSHAKE = 0,
    CS_ESTABLISHED = 1,
    CS_CLOSING = 2,  /* we sent CONNECTION_CLOSE; absorbing the peer */
    CS_DRAINING = 3, /* the peer closed; waiting out 3 PTO */
    CS_DEAD = 4,     /* to be freed */
};

struct rpc_handler {
    char *path;
    size_t pathlen;
    enum aegis_rpc_shape shape;
    int (*on_call)(struct aegis_call *, const struct aegis_metadata *, size_t, void *);
    void *user_data;
};

struct send_chunk {
    struct send_chunk *next;
    size_t len;
    size_t cap; /* bytes of data[] allocated */
    uint8_t data[];
};

struct aegis_call {
    struct aegis_conn *conn;
    struct aegis_call *prev, *next; /* conn->calls */
    struct aegis_call *wait_next;   /* conn waiting list (client, no stream yet) */
    int64_t stream_id;              /* -1 until opened */
    int is_server;
    enum aegis_rpc_shape shape;
    char *path;
    struct aegis_call_callbacks cbs;
    void *user_data;
    void *app_data;
    aegis_tstamp deadline;

    /* flags */
    unsigned waiting : 1;     /* client: waiting for stream credit */
    unsigned submitted : 1;   /* headers handed to nghttp3 */
    unsigned send_closed : 1; /* app half-closed (client) or finished (server) */
    unsigned eof_given : 1;   /* data reader returned EOF */
    unsigned trailers_submitted : 1;
    unsigned headers_recv : 1;
    unsigned remote_fin : 1;
    unsigned paused : 1;
    unsigned status_set : 1;  /* final status known */
    unsigned notified : 1;    /* on_close delivered */
    unsigned stream_gone : 1; /* QUIC stream closed (or never opened) */
    unsigned want_writable : 1;
    unsigned dispatched : 1; /* server: handler ran */
    unsigned reset_sent : 1;
    unsigned half_close_notified : 1;
    unsigned in_trailers : 1;
    unsigned compress : 1;
    unsigned peer_zstd : 1;         /* peer's grpc-encoding is zstd */
    unsigned peer_accepts_zstd : 1; /* server: zstd in the client's grpc-accept-encoding */
    unsigned bad_headers : 1;
    unsigned nrecv_msgs : 2; /* saturating count for cardinality checks */
    unsigned nsent_msgs : 2;
    unsigned writable_pending : 1;
    unsigned got_status : 1; /* client: grpc-status seen */
    unsigned status_local : 1;

    /* receive */
    struct grpc_deframer df;
    uint8_t *pend; /* bytes received while paused (uncredited) */
    size_t pend_len, pend_cap;
    uint64_t credit_owed; /* consumed bytes not yet returned to QUIC */

    /* send: chunks handed to nghttp3 stay until acknowledged */
    struct send_chunk *q_head, *q_tail, *q_unsent;
    size_t q_head_acked;      /* bytes of q_head already acknowledged */
    size_t queued;            /* bytes in the queue not yet acknowledged */
    struct send_chunk *spare; /* one acknowledged chunk kept for reuse: equal-sized
                                messages then allocate nothing per message */

    /* status */
    int status;
    char *status_msg;
    /* metadata received (request headers on the server, response headers +
     * trailers on the client): a flat arena of key\0value pairs */
    uint8_t *md_buf;
    size_t md_len, md_cap;
    size_t md_n;
    size_t md_trailers_from; /* index of the first trailer entry */
    /* server finish: trailers to send (kept until submitted) */
    uint8_t *tr_buf;
    size_t tr_len;
    size_t tr_n;
    uint64_t timeout_hdr_ns; /* server: parsed grpc-timeout, 0 none */
    uint16_t http_status;    /* client: a :status other than 200 */
};

struct aegis_conn {
    struct aegis_endpoint *ep;
    struct aegis_conn *prev, *next; /* ep->conns */
    struct aegis_conn *dirty_next;
    int dirty;
    int redirty;  /* output queued while already on the dirty list */
    int rewrites; /* consecutive send-loop passes without output */
    size_t heap_idx;
    aegis_tstamp expiry;

    struct ngtcp2_conn *q;
    struct nghttp3_conn *h3;
    struct tls_conn *tls;
    int is_server;
    enum conn_state state;
    int hs_counted;     /* counted in handshakes_in_progress */
    int hook_ok;        /* server: on_handshake accepted */
    int established_cb; /* on_established delivered */
    int goaway_recv;    /* 1 received, 2 reported to the application */
    int shutdown_started;
    int h3_ready;
    struct aegis_peer_identity peer;
    struct aegis_path path;
    struct aegis_close_reason why;
    int why_set;
    /* closing: the CONNECTION_CLOSE packet we replay */
    uint8_t *close_pkt;
    size_t close_pktlen;
    unsigned close_replays;
    int close_pending_send;
    aegis_tstamp close_deadline;
    /* a close requested by the application or a callback, done at the next
     * safe point */
    int want_close;
    int want_close_app; /* 1 application error, 0 transport/TLS */
    uint64_t want_close_code;
    uint8_t want_close_alert;
    char want_close_reason[101];

    struct aegis_call *calls;
    size_t ncalls;
    struct aegis_call *wait_head, *wait_tail;
    void *app_data;
    FILE *qlog;
    struct cid_entry *cids; /* our entries in the endpoint's CID map */
    uint8_t odcid[20];      /* server: the client's first DCID, also in the CID map */
    size_t odcidlen;
    int reset_recv;         /* a stateless reset ended it */
    int confirmed;          /* client: HANDSHAKE_DONE received */
    int pins_ok;            /* client: server leaf matched a pin */
    struct grpc_zstd *zstd; /* per-connection codec, created on first use */
    char *authority;        /* client: :authority of requests */
};

struct ep_timer {
    aegis_tstamp expiry; /* == conn->expiry */
    struct aegis_conn *conn;
};

/* Stateless answers (resets, refusals, Retry, version negotiation) waiting to be sent, a ring.
 * A server restarted under thousands of agents answers each of their packets with a reset;
 * the event loop drains the ring after every receive batch (32 datagrams), so a ring larger
 * than a batch never drops one. A client only ever sends a few. */
#define EP_STASH_SERVER 64
#define EP_STASH_CLIENT 4

struct ep_stash {
    struct aegis_path path;
    size_t len;
    uint8_t buf[1500];
};

struct aegis_endpoint {
    const struct aegis_mem *mem;
    const struct aegis_log *log;
    int is_server;
    int shutting_down;
    struct tls_ctx *tls;
    /* copied config */
    uint64_t keepalive_ns, idle_timeout_ns, handshake_timeout_ns;
    size_t max_message;
    uint64_t max_streams, stream_window, conn_window;
    size_t send_queue_limit, retry_threshold, max_handshakes, max_conns, max_udp_payload;
    struct rpc_handler *handlers;
    size_t nhandlers;
    char *qlog_dir;
    struct aegis_conn_callbacks cbs;
    void *user_data;

    struct aegis_conn *conns;
    size_t nconns;
    size_t ncalls;
    /* connection-ID map: open hashing, chains of cid entries */
    struct cid_entry **cid_buckets;
    size_t cid_nbuckets, cid_count;
    /* timer heap of connections by expiry; each slot carries its key, so
     * sifting compares within the array instead of touching every
     * connection on the way (10,000 idle connections: one sift per packet) */
    struct ep_timer *heap;
    size_t nheap, heap_cap;
    /* connections with something to send */
    struct aegis_conn *dirty_head;
    /* stateless packets (Retry, reset, VN) waiting to go out */
    struct ep_stash *stash; /* ring of stash_cap: stash_head is the oldest */
    size_t nstash, stash_head, stash_cap;
    uint8_t secret[32];
    aegis_tstamp now; /* the latest `now` handed to an entry point */
    struct aegis_transport_stats stats;
};

/* ---- quic_endpoint.c ---- */
void ep_mark_dirty(struct aegis_conn *conn);
void ep_timer_update(struct aegis_conn *conn);
int ep_cid_add(struct aegis_endpoint *ep, const uint8_t *cid, size_t len, struct aegis_conn *conn);
void ep_cid_remove(struct aegis_endpoint *ep, const uint8_t *cid, size_t len);
void ep_cid_remove_conn(struct aegis_endpoint *ep, struct aegis_conn *conn);
struct rpc_handler *ep_find_handler(struct aegis_endpoint *ep, const char *path, size_t len);

/* ---- quic_conn.c ---- */
int qconn_server_new(struct aegis_endpoint *ep, const struct aegis_path *path, const uint8_t *pkt,
                     size_t len, const uint8_t *odcid, size_t odcidlen, int retried,
                     aegis_tstamp now, struct aegis_conn **pconn);
int qconn_client_new(struct aegis_endpoint *ep, const struct aegis_path *path, const char *sni,
                     aegis_tstamp now, struct aegis_conn **pconn);
void qconn_del(struct aegis_conn *conn);
int qconn_read(struct aegis_conn *conn, const struct aegis_path *path, const uint8_t *pkt,
               size_t len, aegis_tstamp now);
long qconn_write(struct aegis_conn *conn, uint8_t *buf, size_t cap, size_t max_segments,
                 struct aegis_path *path, size_t *psegsize, aegis_tstamp now);
int qconn_handle_expiry(struct aegis_conn *conn, aegis_tstamp now);
aegis_tstamp qconn_expiry(struct aegis_conn *conn);
struct ngtcp2_conn *qconn_ngtcp2(struct aegis_conn *conn);
/* Safe-point work: deferred closes, reaping calls, reporting on_closed. */
void qconn_after(struct aegis_conn *conn, aegis_tstamp now);
/* Stream helpers for the h3/rpc layers. */
void qconn_credit(struct aegis_conn *conn, int64_t stream_id, uint64_t n);
int qconn_open_stream(struct aegis_conn *conn, int64_t *psid, void *user);
void qconn_shutdown_stream(struct aegis_conn *conn, int64_t sid, uint64_t code);
void qconn_shutdown_stream_read(struct aegis_conn *conn, int64_t sid, uint64_t code);
void qconn_shutdown_stream_write(struct aegis_conn *conn, int64_t sid, uint64_t code);
void qconn_request_close(struct aegis_conn *conn, int app, uint64_t code, uint8_t alert,
                         const char *reason);
int qconn_migrate(struct aegis_conn *conn, const struct aegis_path *path, aegis_tstamp now);
int qconn_open_uni(struct aegis_conn *conn, int64_t *psid);
void qconn_set_stream_data(struct aegis_conn *conn, int64_t sid, void *data);

/* ---- h3_conn.c ---- */
int h3_new(struct aegis_conn *conn);
void h3_del(struct aegis_conn *conn);
/* Feeds stream data; returns bytes consumed by HTTP/3 framing (to credit). */
long h3_read_stream(struct aegis_conn *conn, int64_t sid, const uint8_t *data, size_t len, int fin);
long h3_writev(struct aegis_conn *conn, int64_t *psid, int *pfin, struct tvec *vec, size_t n);
int h3_add_write_offset(struct aegis_conn *conn, int64_t sid, size_t n);
int h3_add_ack_offset(struct aegis_conn *conn, int64_t sid, uint64_t n);
void h3_block_stream(struct aegis_conn *conn, int64_t sid);
int h3_unblock_stream(struct aegis_conn *conn, int64_t sid);
void h3_shutdown_stream_write(struct aegis_conn *conn, int64_t sid);
int h3_shutdown_stream_read(struct aegis_conn *conn, int64_t sid);
int h3_close_stream(struct aegis_conn *conn, int64_t sid, uint64_t code);
int h3_resume_stream(struct aegis_conn *conn, int64_t sid);
struct h3_nv;
int h3_submit_request(struct aegis_conn *conn, int64_t sid, const struct h3_nv *nv, size_t n,
                      struct aegis_call *call);
int h3_submit_response(struct aegis_conn *conn, int64_t sid, const struct h3_nv *nv, size_t n,
                       int with_body);
int h3_submit_trailers(struct aegis_conn *conn, int64_t sid, const struct h3_nv *nv, size_t n);
/* Creates the HTTP/3 layer once QUIC can open streams (idempotent). */
int h3_ensure(struct aegis_conn *conn);
int h3_shutdown(struct aegis_conn *conn);
int h3_is_drained(struct aegis_conn *conn);
int h3_writable(struct aegis_conn *conn, int64_t sid);

/* ---- rpc_call.c ---- (called by h3_conn.c) */
struct aegis_call *call_server_new(struct aegis_conn *conn, int64_t sid);
int call_recv_header(struct aegis_call *call, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, int trailer);
int call_end_headers(struct aegis_call *call, int trailer);
int call_recv_data(struct aegis_call *call, const uint8_t *data, size_t len);
int call_end_stream(struct aegis_call *call);
void call_stream_closed(struct aegis_call *call, uint64_t code);
void call_stream_reset(struct aegis_call *call, uint64_t code);
long call_read_data(struct aegis_call *call, struct tvec *vec, size_t n, uint32_t *pflags);
void call_acked(struct aegis_call *call, uint64_t n);
/* conn-level hooks */
void call_conn_failed(struct aegis_conn *conn, int code, const char *msg);
void call_open_waiting(struct aegis_conn *conn);
void call_goaway(struct aegis_conn *conn, int64_t last_id);
void call_reap(struct aegis_conn *conn);
aegis_tstamp call_next_deadline(struct aegis_conn *conn);
void call_handle_deadlines(struct aegis_conn *conn, aegis_tstamp now);
void call_free(struct aegis_call *call);
void call_conn_cleanup(struct aegis_conn *conn);
/* Builds the header list for nghttp3: fills names/values into nva slots. */
struct h3_nv {
    const uint8_t *name;
    size_t namelen;
    const uint8_t *value;
    size_t valuelen;
};

#endif
