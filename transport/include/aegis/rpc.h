/*
 * gRPC calls over an aegis_conn (DESIGN §2). Messages are opaque bytes: the
 * transport knows nothing about protobuf.
 *
 * Lifecycle of an aegis_call: created by aegis_call_start (client) or handed
 * to a handler's on_call (server); valid until its on_close callback returns;
 * the library frees it afterwards. Every call gets exactly one on_close, also
 * when its connection dies (UNAVAILABLE) or the endpoint shuts down.
 *
 * Backpressure: on_message is called for one whole message at a time. QUIC
 * stream credit for a message is extended when on_message returns 0
 * (consumed). Returning AEGIS_CALL_PAUSE also consumes the message but stops
 * delivery: no further message is delivered and no further credit is
 * extended until aegis_call_resume, so a paused receiver stalls its sender
 * after at most one stream window. On the sending side each call has a queue
 * bound (send_queue_limit): aegis_call_send returns -EAGAIN when the bytes
 * queued and not yet acknowledged would exceed it, and on_writable fires when
 * the queue has drained below half of it.
 */
#ifndef AEGIS_RPC_H
#define AEGIS_RPC_H

#include <aegis/grpc_status.h>
#include <aegis/rpc_shape.h>
#include <aegis/transport.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct aegis_call;

/* enum aegis_rpc_shape (AEGIS_RPC_UNARY, ...) is in <aegis/rpc_shape.h>, shared with proto/. */

/* One metadata entry. Keys are lower-case; keys ending in "-bin" carry
 * arbitrary bytes (base64 on the wire, raw here). Borrowed wherever passed. */
struct aegis_metadata {
    const char *key;
    const uint8_t *value;
    size_t value_len;
};

/* Returned by on_message to consume the message and pause delivery. */
#define AEGIS_CALL_PAUSE 1

/* Final outcome of a call, handed to on_close (borrowed for its duration). */
struct aegis_call_status {
    int code;                              /* enum aegis_grpc_status */
    const char *message;                   /* decoded grpc-message, "" if none */
    const struct aegis_metadata *trailers; /* client: trailing metadata */
    size_t ntrailers;
    int local; /* 1: decided locally (deadline, cancel, conn loss) */
};

/* Per-call callbacks (copied by aegis_call_start / aegis_call_set_callbacks).
 * Each may be NULL. A non-zero return (other than AEGIS_CALL_PAUSE from
 * on_message) cancels the call with CANCELLED. Inside any of them the
 * application may call every aegis_call_* function on this or other calls;
 * it never frees anything. */
struct aegis_call_callbacks {
    /* Client: the response headers (initial metadata) arrived. */
    int (*on_headers)(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                      void *user_data);
    /* One whole message; msg is valid only during the callback. */
    int (*on_message)(struct aegis_call *call, const uint8_t *msg, size_t len, void *user_data);
    /* The peer finished sending (client half-closed; server sent trailers). */
    void (*on_half_close)(struct aegis_call *call, void *user_data);
    /* The send queue drained below half its bound after -EAGAIN. */
    void (*on_writable)(struct aegis_call *call, void *user_data);
    /* The call is over; status is borrowed. The call pointer is invalid
     * after return. */
    void (*on_close)(struct aegis_call *call, const struct aegis_call_status *status,
                     void *user_data);
};

/* A server handler, registered by method path and shape at endpoint
 * creation. on_call runs when a request's headers arrived and validated; it
 * must call aegis_call_set_callbacks (else messages are dropped) and may
 * answer at once (aegis_call_finish). A non-zero return finishes the call
 * with INTERNAL. request metadata is borrowed for the callback. */
struct aegis_rpc_handler {
    const char *path; /* "/pkg.Service/Method" */
    enum aegis_rpc_shape shape;
    int (*on_call)(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                   void *user_data);
    void *user_data;
};

struct aegis_call_opts {
    /* Absolute deadline (same clock as `now`), 0 = none. Sent as
     * grpc-timeout; both sides end the call with DEADLINE_EXCEEDED. */
    aegis_tstamp deadline;
    const struct aegis_metadata *metadata; /* copied */
    size_t nmetadata;
    /* Compress outgoing messages with zstd (grpc-encoding: zstd). */
    int compress;
};

/*
 * aegis_call_start (client) starts an RPC on an established or handshaking
 * connection. path and metadata are copied. If the connection is at its
 * stream limit the call waits for a free stream (its deadline still runs).
 * Errors: -EINVAL (bad path/metadata key or value), -ENOMEM, AEGIS_ERR_STATE
 * (server connection, connection closing or GOAWAY received: the caller
 * should treat it as UNAVAILABLE and reconnect). Callable from callbacks.
 */
int aegis_call_start(struct aegis_conn *conn, const char *path, enum aegis_rpc_shape shape,
                     const struct aegis_call_opts *opts, const struct aegis_call_callbacks *cbs,
                     void *user_data, struct aegis_call **pcall);

/* aegis_call_set_callbacks (server, inside on_call) installs callbacks. */
void aegis_call_set_callbacks(struct aegis_call *call, const struct aegis_call_callbacks *cbs,
                              void *user_data);

/*
 * aegis_call_send queues one message (copied). Errors: -EAGAIN (the queue
 * bound would be exceeded; wait for on_writable), AEGIS_ERR_TOO_LARGE
 * (over max_message), AEGIS_ERR_STATE (already half-closed/finished, or a
 * second message on a unary side), -ENOMEM. Callable from callbacks.
 */
int aegis_call_send(struct aegis_call *call, const uint8_t *msg, size_t len);

/* aegis_call_close_send (client) half-closes: no more messages. Returns 0 or
 * AEGIS_ERR_STATE. */
int aegis_call_close_send(struct aegis_call *call);

/*
 * aegis_call_finish (server) ends the call with status and message (copied;
 * percent-encoded on the wire) and trailing metadata (copied). Queued
 * messages are sent first. With nothing sent yet the response is
 * trailers-only. Errors: AEGIS_ERR_STATE (already finished), -EINVAL,
 * -ENOMEM. on_close follows once the peer has the trailers.
 */
int aegis_call_finish(struct aegis_call *call, int status, const char *message,
                      const struct aegis_metadata *trailers, size_t ntrailers);

/* aegis_call_cancel ends the call with CANCELLED on both sides (stream
 * reset). on_close runs later (never inside this function). Returns 0 or
 * AEGIS_ERR_STATE when already over. */
int aegis_call_cancel(struct aegis_call *call);

/*
 * aegis_call_set_compress turns zstd compression of this side's messages on
 * or off (grpc-encoding: zstd; each message is still sent plain when
 * compression would not make it smaller). Server: allowed only when the
 * client listed zstd in grpc-accept-encoding (or sent zstd itself); call it
 * before the first message, e.g. in on_call, to compress a large response
 * stream. Client: the same as aegis_call_opts.compress, which is the usual
 * way. Errors: AEGIS_ERR_UNSUPPORTED (the client does not accept zstd; the
 * call goes on uncompressed), AEGIS_ERR_STATE (headers already sent),
 * -EINVAL. Callable from callbacks.
 */
int aegis_call_set_compress(struct aegis_call *call, int on);

/* aegis_call_resume resumes delivery after AEGIS_CALL_PAUSE. Returns 0. */
int aegis_call_resume(struct aegis_call *call);

/* Accessors (borrowed, valid while the call is). */
const char *aegis_call_path(const struct aegis_call *call);
enum aegis_rpc_shape aegis_call_shape(const struct aegis_call *call);
struct aegis_conn *aegis_call_conn(const struct aegis_call *call);
const struct aegis_peer_identity *aegis_call_peer(const struct aegis_call *call);
aegis_tstamp aegis_call_deadline(const struct aegis_call *call);
/* Bytes queued for sending and not yet acknowledged by the peer. */
size_t aegis_call_queued(const struct aegis_call *call);
void aegis_call_set_data(struct aegis_call *call, void *data);
void *aegis_call_get_data(const struct aegis_call *call);

#ifdef __cplusplus
}
#endif
#endif
