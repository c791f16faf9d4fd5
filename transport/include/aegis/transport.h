/*
 * Aegis transport: gRPC over HTTP/3 over QUIC with mutual TLS (DESIGN §2, §4).
 *
 * This header is the sans-I/O core. An aegis_endpoint owns every QUIC
 * connection of one UDP socket (server) or of one client: the caller hands it
 * received datagrams with their path and the current time, asks it for
 * datagrams to send, and calls it back at its expiry time. It never touches a
 * socket and never reads the clock (STYLE.md "Callbacks and the loop"), which
 * is what lets tests drive a client and a server over an in-memory link with
 * a fake clock. The libev glue in <aegis/transport_ev.h> is one such driver.
 *
 * RPCs on a connection are in <aegis/rpc.h>.
 *
 * Threading: an endpoint and everything reachable from it belong to one
 * thread. Callbacks are invoked from aegis_endpoint_recv, _send,
 * _handle_expiry and from the few API calls documented as doing so.
 *
 * Lifecycle:
 *   endpoint: aegis_endpoint_new ... aegis_endpoint_del (closes nothing
 *     gracefully: call aegis_endpoint_shutdown and drive the loop first).
 *   connection: created by aegis_endpoint_connect (client) or by an incoming
 *     handshake (server, reported through on_accept); valid until its
 *     on_closed callback returns. The endpoint frees it afterwards; never
 *     free a connection yourself.
 */
#ifndef AEGIS_TRANSPORT_H
#define AEGIS_TRANSPORT_H

#include <aegis/log.h>
#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

struct aegis_endpoint;
struct aegis_conn;
struct aegis_rpc_handler; /* <aegis/rpc.h> */

/* Defaults (DESIGN §2 and §8). */
/* Keep-alive PING well under common NAT UDP timeouts (30 s and up); a
 * client default (agents dial out through NATs and firewalls). */
#define AEGIS_TRANSPORT_KEEPALIVE_NS (15 * AEGIS_NS_PER_S)
/* Server default: no PINGs of its own. The client's keep-alives (and their
 * ACKs) keep the path and both idle timers alive; a client that goes silent
 * is closed by the idle timeout. */
#define AEGIS_TRANSPORT_SERVER_KEEPALIVE_NS UINT64_MAX
/* Idle timeout: four missed keep-alives declare the peer gone. */
#define AEGIS_TRANSPORT_IDLE_TIMEOUT_NS (60 * AEGIS_NS_PER_S)
/* Largest gRPC message (DESIGN §8). */
#define AEGIS_TRANSPORT_MAX_MESSAGE (4u * 1024u * 1024u)
/* Concurrent RPCs a peer may open on one connection (DESIGN §8). */
#define AEGIS_TRANSPORT_MAX_STREAMS 100
/* Per-stream receive window: enough for a 64 KiB artifact chunk plus framing
 * in flight twice, small enough that 100 stalled streams stay cheap. */
#define AEGIS_TRANSPORT_STREAM_WINDOW (256u * 1024u)
/* Connection receive window: a few streams at full speed. */
#define AEGIS_TRANSPORT_CONN_WINDOW (1024u * 1024u)
/* Bytes a call may have queued but not yet acknowledged before a send
 * returns -EAGAIN (the bound the flow-control tests assert). */
#define AEGIS_TRANSPORT_SEND_QUEUE (256u * 1024u)
/* Handshakes in progress before the server demands address validation
 * (QUIC Retry), and the hard cap beyond which new ones are refused
 * (DESIGN §8: 1,000). */
#define AEGIS_TRANSPORT_RETRY_THRESHOLD 200
#define AEGIS_TRANSPORT_MAX_HANDSHAKES 1000
/* Length of aegis_endpoint_config.static_secret. */
#define AEGIS_TRANSPORT_SECRET_LEN 32
/* Connections one server endpoint holds at most. */
#define AEGIS_TRANSPORT_MAX_CONNS 100000

/* A UDP path: the local and remote socket addresses of a datagram. */
struct aegis_path {
    struct sockaddr_storage local;
    socklen_t local_len;
    struct sockaddr_storage remote;
    socklen_t remote_len;
};

/* Room for a peer SubjectPublicKeyInfo: Ed25519 is 44 bytes, P-256 91 (never RSA). */
#define AEGIS_PEER_SPKI_MAX 160
/* What the TLS handshake proved about the peer's certificate. */
struct aegis_peer_identity {
    int has_cert;            /* 0: the peer presented no certificate */
    uint8_t spki_sha256[32]; /* SHA-256 of the leaf's SubjectPublicKeyInfo */
    char pin[53];            /* the same as "sha256//<base64>" */
    char subject_cn[65];
    char issuer_cn[65];
    int self_signed;       /* subject == issuer and the signature verifies */
    int chains_to_ca;      /* server side: the leaf verified against the trusted CA;
                              client side: the leaf matched a pin */
    char verify_error[64]; /* server: why the chain did not verify ("" if it did) */
    /* Added for aegis-control (Enroll certifies, Authenticate verifies with, exactly
     * this handshake's key; the role travels in the subject OU, FLEET_CONTRACT). */
    char subject_ou[65];                   /* "aegis-agent", "aegis-operator", ...; "" if none */
    uint8_t spki_der[AEGIS_PEER_SPKI_MAX]; /* the leaf's SubjectPublicKeyInfo, DER */
    size_t spki_der_len;                   /* 0 when it did not fit (not Ed25519/P-256) */
};

/* Why a connection ended. */
enum aegis_close_kind {
    AEGIS_CLOSE_LOCAL = 0,     /* we closed it: error (see err) or aegis_conn_close */
    AEGIS_CLOSE_PEER_APP = 1,  /* peer sent an application CONNECTION_CLOSE (code) */
    AEGIS_CLOSE_PEER_QUIC = 2, /* peer sent a transport CONNECTION_CLOSE (code) */
    AEGIS_CLOSE_TLS_ALERT = 3, /* a TLS alert ended it (tls_alert, sent or received) */
    AEGIS_CLOSE_IDLE = 4,      /* idle timeout */
    AEGIS_CLOSE_RESET = 5,     /* stateless reset received */
    AEGIS_CLOSE_HANDSHAKE_TIMEOUT = 6,
};

struct aegis_close_reason {
    enum aegis_close_kind kind;
    int err;           /* local: AEGIS_ERR_* / -errno that caused it, else 0 */
    int by_peer;       /* 1 when the peer initiated the close */
    uint64_t code;     /* QUIC/HTTP3/application error code on the wire */
    uint8_t tls_alert; /* TLS alert number for AEGIS_CLOSE_TLS_ALERT */
    char reason[128];  /* reason phrase (peer's, or ours), NUL-terminated */
};

/* Application error codes carried by CONNECTION_CLOSE from the handshake
 * hook (range chosen clear of HTTP/3's 0x100-0x110). */
#define AEGIS_CLOSE_CODE_REFUSED 0xae01u

/* Connection events. Each may be NULL. Return values: non-zero from
 * on_established closes the connection with AEGIS_CLOSE_CODE_REFUSED. */
struct aegis_conn_callbacks {
    /* Server only: the handshake finished and the peer's certificate is in
     * `peer`. Return 0 to accept, or non-zero to refuse the connection; a
     * refusal may write a reason (NUL-terminated, <= reasonlen bytes) that
     * the client receives in its close reason. Called before any RPC of this
     * connection is dispatched. May call aegis_conn_set_data. */
    int (*on_handshake)(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                        char *reason, size_t reasonlen, void *user_data);
    /* Both sides: the connection is established (client: pins verified and
     * the server's handshake is confirmed). */
    void (*on_established)(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                           void *user_data);
    /* Both sides: the connection is over. Every call on it has already
     * received its on_close. The conn pointer is invalid after return. May
     * not call aegis_endpoint_del. Called for every connection, including
     * server connections whose handshake failed (why says how). */
    void (*on_closed)(struct aegis_conn *conn, const struct aegis_close_reason *why,
                      void *user_data);
    /* Client: the server sent GOAWAY; new calls fail with UNAVAILABLE.
     * A good moment to reconnect. */
    void (*on_goaway)(struct aegis_conn *conn, void *user_data);
};

/* Credentials, as PEM text in memory (borrowed during aegis_endpoint_new,
 * copied inside). Private keys: PKCS#8 or SEC1/PKCS#1 PEM, Ed25519 or P-256. */
struct aegis_tls_config {
    const char *cert_pem; /* our leaf (clients send only the leaf); a client
                             may have none (the server will refuse it) */
    size_t cert_len;
    const char *key_pem;
    size_t key_len;
    /* Server: the CA client certificates must chain to. */
    const char *ca_pem;
    size_t ca_len;
    /* Server: accept any client certificate (self-signed, other CA) at the
     * TLS level and let on_handshake decide from peer->self_signed and
     * peer->chains_to_ca (the Enroll path). A client without a certificate
     * is still refused. */
    int accept_any_client_cert;
    /* Client: 1 or 2 pins "sha256//<base64>" of the server's SPKI. */
    const char *pins[2];
    size_t npins;
    /* Optional: append this endpoint's TLS secrets in SSLKEYLOGFILE (NSS
     * key log) format to this file, created 0600 (NULL = off), so Wireshark
     * can decrypt a capture. For debugging only: anyone with the file can
     * read the traffic. -errno if it cannot be opened; AEGIS_ERR_UNSUPPORTED
     * if wolfSSL was built without HAVE_SECRET_CALLBACK. */
    const char *keylog_path;
};

struct aegis_endpoint_config {
    int is_server;
    const struct aegis_mem *mem; /* NULL = default; also handed to ngtcp2/nghttp3 */
    const struct aegis_log *log; /* NULL = silent */
    struct aegis_tls_config tls;
    /* 0 = the defaults above. */
    uint64_t keepalive_ns; /* PING after this long without traffic; UINT64_MAX
                              disables; 0 = AEGIS_TRANSPORT_KEEPALIVE_NS (client)
                              or AEGIS_TRANSPORT_SERVER_KEEPALIVE_NS (server, off).
                              Keep it well under idle_timeout_ns (a third or less)
                              and under the NAT's UDP timeout (15-25 s is safe). */
    uint64_t idle_timeout_ns;
    uint64_t handshake_timeout_ns;
    size_t max_message;
    uint64_t max_streams;
    uint64_t stream_window;
    uint64_t conn_window;
    size_t send_queue_limit;
    size_t retry_threshold; /* server; SIZE_MAX disables Retry */
    size_t max_handshakes;  /* server */
    size_t max_conns;       /* server */
    size_t max_udp_payload; /* 0 = 1452 */
    /* Server: RPC handlers (copied at creation; the strings too). */
    const struct aegis_rpc_handler *handlers;
    size_t nhandlers;
    /* Server: AEGIS_TRANSPORT_SECRET_LEN secret bytes from which stateless
     * reset tokens (RFC 9000 §10.3) and Retry tokens are derived (copied).
     * Keep the same secret across restarts: after a crash the new process
     * then resets its predecessor's connections, so clients reconnect at once
     * instead of waiting out their idle timeout. NULL = random per endpoint. */
    const uint8_t *static_secret;
    size_t static_secret_len;
    /* Optional: directory for one qlog file per connection (NULL = off). */
    const char *qlog_dir;
    struct aegis_conn_callbacks callbacks;
    void *user_data;
};

/* Counters since creation (cheap to read; plain fields). */
struct aegis_transport_stats {
    uint64_t conns_accepted, conns_closed, conns_active;
    uint64_t handshakes_ok, handshakes_failed;
    uint64_t handshakes_failed_tls, handshakes_failed_refused, handshakes_failed_timeout;
    uint64_t handshakes_in_progress;
    uint64_t retries_sent, stateless_resets_sent, packets_dropped;
    uint64_t calls_started, calls_active;
    uint64_t pkts_recv, pkts_sent, bytes_recv, bytes_sent;
};

/*
 * aegis_endpoint_new creates a client or server endpoint. Copies everything
 * in cfg (PEM text, pins, handler table). Errors: -EINVAL (bad argument),
 * -ENOMEM, AEGIS_ERR_CERT (certificate or key unparsable, or key does not
 * match the certificate), AEGIS_ERR_MALFORMED (a pin is not
 * "sha256//<44 base64>"), AEGIS_ERR_CONFIG (server without CA, client
 * without pins, zero limits, keepalive_ns not below idle_timeout_ns,
 * max_udp_payload outside 1200..1500), AEGIS_ERR_UNSUPPORTED (keylog requested but
 * not compiled in). Not callable from callbacks.
 */
int aegis_endpoint_new(const struct aegis_endpoint_config *cfg, struct aegis_endpoint **pep);

/* aegis_endpoint_del frees the endpoint, every connection and call on it
 * without sending anything and without invoking callbacks. NULL is fine.
 * Not callable from callbacks. */
void aegis_endpoint_del(struct aegis_endpoint *ep);

/*
 * aegis_endpoint_recv processes one received UDP datagram that arrived on
 * path at time now. Borrows data. Unknown packets may cause a stateless
 * reset, a version negotiation or a Retry to be queued. Invokes callbacks.
 * Returns 0; malformed or unwanted datagrams are dropped and counted, never
 * an error. -EINVAL for bad arguments.
 */
int aegis_endpoint_recv(struct aegis_endpoint *ep, const struct aegis_path *path,
                        const uint8_t *data, size_t len, aegis_tstamp now);

/*
 * aegis_endpoint_send writes the next datagram(s) to send into buf (cap
 * bytes, at least 1500). Up to max_segments datagrams of the same path may be
 * written back to back (for UDP GSO): all but the last are *psegsize bytes.
 * Returns the total number of bytes written (0 = nothing to send now) and
 * fills *path. Call it until it returns 0 after every recv/expiry/API call.
 * May invoke callbacks (writable). Errors: -EINVAL.
 */
long aegis_endpoint_send(struct aegis_endpoint *ep, uint8_t *buf, size_t cap, size_t max_segments,
                         struct aegis_path *path, size_t *psegsize, aegis_tstamp now);

/* aegis_endpoint_expiry returns when aegis_endpoint_handle_expiry must next
 * be called (AEGIS_TSTAMP_NEVER if never). */
aegis_tstamp aegis_endpoint_expiry(const struct aegis_endpoint *ep);

/* aegis_endpoint_handle_expiry runs timers due at now (QUIC loss recovery,
 * keep-alive, idle timeout, RPC deadlines, closing periods). Invokes
 * callbacks. Returns 0. */
int aegis_endpoint_handle_expiry(struct aegis_endpoint *ep, aegis_tstamp now);

/*
 * aegis_endpoint_shutdown starts a graceful shutdown of every connection
 * (HTTP/3 GOAWAY): running calls finish, new ones get UNAVAILABLE; each
 * connection closes once its calls are done. A server endpoint also stops
 * accepting connections. Returns 0.
 */
int aegis_endpoint_shutdown(struct aegis_endpoint *ep, aegis_tstamp now);

/* Number of connections (including closing ones) and of live calls. */
size_t aegis_endpoint_conn_count(const struct aegis_endpoint *ep);
size_t aegis_endpoint_call_count(const struct aegis_endpoint *ep);

/* aegis_endpoint_stats returns the counters (borrowed, live). */
const struct aegis_transport_stats *aegis_endpoint_stats(const struct aegis_endpoint *ep);

/*
 * aegis_endpoint_connect (client) starts a connection to path->remote from
 * path->local. The connection reports on_established or on_closed later.
 * server_name is sent as SNI (may be NULL). Errors: -EINVAL, -ENOMEM,
 * AEGIS_ERR_STATE (not a client endpoint or shutting down), AEGIS_ERR_TLS,
 * AEGIS_ERR_QUIC. Not callable from callbacks of the same connection.
 */
int aegis_endpoint_connect(struct aegis_endpoint *ep, const struct aegis_path *path,
                           const char *server_name, aegis_tstamp now, struct aegis_conn **pconn);

/* aegis_conn_set_data/get_data: one pointer of application state per
 * connection, never touched by the library. */
void aegis_conn_set_data(struct aegis_conn *conn, void *data);
void *aegis_conn_get_data(const struct aegis_conn *conn);

/* aegis_conn_peer returns the peer identity (valid once the handshake is
 * done; has_cert = 0 before). Borrowed; lives as long as conn. */
const struct aegis_peer_identity *aegis_conn_peer(const struct aegis_conn *conn);

/* aegis_conn_path returns the connection's current path (it changes when the
 * client migrates). Borrowed. */
const struct aegis_path *aegis_conn_path(const struct aegis_conn *conn);

/* aegis_conn_is_established: 1 between on_established and the start of the
 * close. */
int aegis_conn_is_established(const struct aegis_conn *conn);

/* aegis_conn_call_count returns the number of live calls on conn. */
size_t aegis_conn_call_count(const struct aegis_conn *conn);

/*
 * aegis_conn_close closes the connection now with application error code
 * `code` and a reason phrase the peer receives (copied, truncated to 100
 * bytes). Every call gets on_close (UNAVAILABLE), then on_closed runs at
 * the next send/expiry. Callable from callbacks (the close is deferred).
 * Returns 0 or AEGIS_ERR_STATE when already closing.
 */
int aegis_conn_close(struct aegis_conn *conn, uint64_t code, const char *reason);

/* aegis_conn_shutdown: graceful shutdown of one connection (see
 * aegis_endpoint_shutdown). Callable from callbacks. */
int aegis_conn_shutdown(struct aegis_conn *conn);

/* aegis_conn_migrate (client) moves the connection to a new local address
 * (e.g. a new interface) and validates it: the connection survives.
 * Errors: AEGIS_ERR_STATE (not established), AEGIS_ERR_QUIC. */
int aegis_conn_migrate(struct aegis_conn *conn, const struct aegis_path *path, aegis_tstamp now);

/* aegis_close_kind_name: "local", "peer-app", ... Static string. */
const char *aegis_close_kind_name(enum aegis_close_kind kind);

/* aegis_close_reason_format writes a one-line description such as
 * "tls-alert=42 (bad certificate) by peer" into buf. Returns buf. */
char *aegis_close_reason_format(const struct aegis_close_reason *why, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
