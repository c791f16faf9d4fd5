/*
 * ctl_server: the aegis-control daemon's shared state and the plumbing every RPC service uses
 * (DESIGN §3-§6, FLEET_CONTRACT.md).
 *
 * One process, one thread, one libev loop. The transport endpoint (aegis_ev) and the database
 * pool (ctl_db) both run on it; nothing blocks the loop after start-up.
 *
 * Object lifetimes
 *  - struct ctl_conn: one per QUIC connection, created in the handshake hook and released when
 *    the connection is closed AND no RPC context refers to it any more (a database answer may
 *    arrive after the connection died).
 *  - struct ctl_rpc: one per call, created in on_call, released when the call is closed AND no
 *    database request of it is outstanding. rpc->call is NULL once the call is over: database
 *    callbacks check it before touching the call.
 */
#ifndef CTL_SERVER_H
#define CTL_SERVER_H

#include "ctl_artcache.h"
#include "ctl_batch.h"
#include "ctl_db.h"
#include "ctl_loop.h"

#include <aegis/log.h>
#include <aegis/mem.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport.h>

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

struct aegis_ev;
struct ctl_metrics;
struct ctl_art_load;

/* ---- limits and defaults (every one has a flag) ----------------------------------------- */

/* FLEET_CONTRACT: the Authenticate challenge is valid for 30 s. */
#define CTL_DEFAULT_CHALLENGE_TTL (30 * AEGIS_NS_PER_S)
/* FLEET_CONTRACT: commands delivered but not acked within 30 s are re-sent, then backing off
 * exponentially up to 10 minutes so a wedged agent costs little. */
#define CTL_DEFAULT_REDELIVER_BASE (30 * AEGIS_NS_PER_S)
#define CTL_DEFAULT_REDELIVER_MAX (600 * AEGIS_NS_PER_S)
/* Redelivery and expiry are checked once a second: fine enough for second-granular expiry,
 * one cheap indexed query per instance. */
#define CTL_DEFAULT_SWEEP_INTERVAL (1 * AEGIS_NS_PER_S)
/* DESIGN §8: command lifetime 24 h. */
#define CTL_DEFAULT_COMMAND_LIFETIME_S (24u * 3600u)
/* DESIGN §3: enrollment tokens default to 24 h. */
#define CTL_DEFAULT_TOKEN_TTL_S (24u * 3600u)
/* Heartbeat of the control_instances row: other instances (and operators) see a dead one. */
#define CTL_DEFAULT_HEARTBEAT (10 * AEGIS_NS_PER_S)
/* SIGTERM drain: streams are ended at once, unary calls get this long to finish. */
#define CTL_DEFAULT_DRAIN_TIMEOUT (10 * AEGIS_NS_PER_S)
/* Commands pushed per Subscribe pump (one query); the rest follow when these are written. */
#define CTL_SUB_BATCH 100
/* Artifact chunk (DESIGN §8) and cap (DESIGN §8: 1 GiB). */
#define CTL_ARTIFACT_CHUNK (64u * 1024u)
#define CTL_ARTIFACT_MAX ((uint64_t)1 << 30)
/* Paging: default and cap from common.proto. */
#define CTL_PAGE_DEFAULT 100u
#define CTL_PAGE_MAX 1000u
/* Artifact-signing public keys trusted at once. */
#define CTL_MAX_ARTIFACT_KEYS 16
/* Targets of one SendCommand (ids listed explicitly). */
#define CTL_MAX_TARGET_IDS 10000u

/* NOTIFY channels of ours (besides CTL_CHANNEL_AGENTS from ctl_schema.h). */
#define CTL_CHANNEL_COMMANDS "aegis_commands"     /* payload: agent id with new deliveries */
#define CTL_CHANNEL_DELIVERIES "aegis_deliveries" /* payload: command id whose state changed */
#define CTL_CHANNEL_TELEMETRY "aegis_telemetry"   /* payload: agent id that sent telemetry */

/* ---- configuration ------------------------------------------------------------------------ */

struct ctl_config {
    char listen[128];  /* ADDR:PORT */
    char dsn[1024];    /* libpq conninfo */
    char pki_dir[512]; /* ca.pem ca.key server.pem server.key command.key */
    char artifact_pubkeys[CTL_MAX_ARTIFACT_KEYS][512];
    size_t n_artifact_pubkeys;
    char instance_id[37];     /* UUID; random when not given */
    char metrics_listen[128]; /* "127.0.0.1:9464"; "" = off */
    char extra_pin[64];       /* a second server pin handed out at Enroll (rotation) */
    enum aegis_log_level log_level;
    unsigned db_conns;
    size_t db_queue_max;
    aegis_tstamp challenge_ttl;
    aegis_tstamp redeliver_base;
    aegis_tstamp redeliver_max;
    aegis_tstamp sweep_interval;
    aegis_tstamp heartbeat;
    aegis_tstamp drain_timeout;
    unsigned command_lifetime_s;
    size_t max_message;
    size_t max_handshakes;
    size_t max_conns;
    size_t artifact_cache_bytes; /* ctl_artcache budget; 0 = off */
    size_t db_batch_items;       /* items per batched statement; 0 = CTL_BATCH_DEFAULT_MAX_ITEMS */
    size_t db_batch_queue;       /* items waiting per batch; 0 = CTL_BATCH_DEFAULT_QUEUE_MAX */
};

/* ---- identities ----------------------------------------------------------------------------- */

enum ctl_role {
    CTL_ROLE_NONE = 0,
    CTL_ROLE_ENROLL = 1,   /* self-signed certificate: may call Enroll only */
    CTL_ROLE_AGENT = 2,    /* fleet certificate, SPKI enrolled and not revoked */
    CTL_ROLE_OPERATOR = 4, /* fleet certificate with OU aegis-operator */
};

/* A small open-addressing hash table keyed by up to 36 bytes (SPKI hashes, agent ids). */
struct ctl_map_entry {
    uint8_t key[36];
    uint8_t keylen; /* 0 = empty slot */
    uint8_t tomb;   /* deleted */
    void *value;    /* ctl_conn * in the agent map */
    char agent_id[37];
    int revoked;
};
struct ctl_map {
    struct ctl_map_entry *slots;
    size_t cap, count, used;
    const struct aegis_mem *mem;
};
int ctl_map_put(struct ctl_map *m, const void *key, size_t keylen, struct ctl_map_entry **pe);
struct ctl_map_entry *ctl_map_get(const struct ctl_map *m, const void *key, size_t keylen);
void ctl_map_del(struct ctl_map *m, const void *key, size_t keylen);
void ctl_map_free(struct ctl_map *m);

struct ctl_rpc;

struct ctl_conn {
    struct ctl_server *srv;
    struct aegis_conn *conn; /* NULL once closed */
    enum ctl_role role;
    char agent_id[37]; /* agents: from the enrolled set (= certificate CN) */
    char name[65];     /* operators: certificate CN; agents: agent id */
    int authenticated;
    uint8_t spki_sha256[32];
    uint8_t spki_der[AEGIS_PEER_SPKI_MAX];
    size_t spki_der_len;
    struct ctl_rpc *sub; /* the live Subscribe stream, if any */
    unsigned refs;       /* RPC contexts pointing here */
    struct ctl_conn *prev, *next;
    uint64_t serial;
};

/* ---- RPC contexts --------------------------------------------------------------------------- */

struct ctl_handler {
    const char *path;
    unsigned roles; /* CTL_ROLE_* bits allowed to call */
    int needs_auth; /* agents: only after Authenticate */
    const ProtobufCMessageDescriptor *input;
    /* Single-request methods (unary, server streaming): the request is unpacked into
     * rpc->req, then start runs. */
    void (*start)(struct ctl_rpc *r);
    /* Streaming requests: every message, raw (bounded by the transport's max_message). */
    int (*on_msg)(struct ctl_rpc *r, const uint8_t *msg, size_t len);
    void (*on_half_close)(struct ctl_rpc *r);
    void (*on_writable)(struct ctl_rpc *r);
    /* Called once when the call is over (before the context may be freed). */
    void (*on_closed)(struct ctl_rpc *r);
    /* Frees rpc->state. */
    void (*free_state)(struct ctl_rpc *r);
    unsigned index; /* metrics slot */
    enum aegis_rpc_shape shape;
};

struct ctl_rpc {
    struct ctl_server *srv;
    struct ctl_conn *cc;
    struct aegis_call *call; /* NULL once the call is over */
    const struct ctl_handler *h;
    ProtobufCMessage *req;
    void *state;
    unsigned pending; /* database requests in flight */
    int finished;     /* aegis_call_finish was called */
    int got_msg;
    aegis_tstamp started;
    struct ctl_rpc *prev, *next;   /* server-wide list */
    int stream;                    /* long-lived: ended by the SIGTERM drain */
    void *cmd_job;                 /* ctl_svc_cmd.c, while a command is being created */
    char watch_key[64];            /* WatchCommand/TailTelemetry: what NOTIFY wakes it for */
    struct ctl_rpc *wprev, *wnext; /* srv->watchers, while it is one */
    int watching;
    int deferred, defer_half, defer_writable; /* events handled on the next loop turn */
    struct ctl_rpc *defer_next;
};

/* ---- the server ------------------------------------------------------------------------------ */

struct ctl_artifact_key {
    char key_id[17];
    uint8_t spki[AEGIS_PEER_SPKI_MAX];
    size_t spki_len;
    uint8_t raw[32];
};

/* The per-loop-turn batches of the hot paths (one statement for many agents, ctl_batch.h). */
struct ctl_batches {
    struct ctl_batch *audit;       /* ctl_audit rows */
    struct ctl_batch *disconnect;  /* agents.connected_instance cleared when a connection ends */
    struct ctl_batch *auth_load;   /* Authenticate: the agents row */
    struct ctl_batch *auth_update; /* Authenticate: version, last_seen, connected_instance */
    struct ctl_batch *pump;        /* Subscribe: pending commands, marked delivered */
    struct ctl_batch *ack;         /* Ack */
};

struct ctl_server {
    const struct aegis_mem *mem;
    struct aegis_log log;
    struct ctl_config cfg;
    void *ev_loop; /* struct ev_loop * */
    struct ctl_loop *loop;
    struct ctl_db *db;
    struct ctl_batches batch;
    struct ctl_artcache *artcache;
    struct ctl_art_load *art_loads; /* chunk reads in flight (ctl_svc_data.c) */
    struct aegis_ev *tev;
    struct ctl_timer *sweep_timer, *heartbeat_timer, *defer_timer;
    struct ctl_rpc *defer_head; /* calls with deferred half-close/writable events */
    int pumps_deferred;         /* some Subscribe pump was refused: the sweep walks the streams */

    /* PKI */
    char *ca_pem, *server_pem;
    size_t ca_len, server_len;
    struct aegis_key *ca_key, *server_key, *command_key;
    char server_pin[AEGIS_PIN_STRLEN];
    uint8_t command_pub[32];
    char command_key_id[17];
    /* Stateless-reset/Retry secret, the same across restarts (pki/quic-secret). */
    uint8_t quic_secret[32];
    struct ctl_artifact_key artifact_keys[CTL_MAX_ARTIFACT_KEYS];
    size_t n_artifact_keys;

    /* identities: SPKI hash -> (agent id, revoked); agent id -> live ctl_conn */
    struct ctl_map idents;
    struct ctl_map agents_here;
    int idents_loaded;

    struct ctl_conn *conns; /* every live connection */
    struct ctl_rpc *rpcs;   /* every RPC context */
    /* Operator streams woken by NOTIFY (WatchCommand, TailTelemetry): a handful,
     * walked per notification instead of every agent's Subscribe stream. */
    struct ctl_rpc *watchers;
    uint64_t conn_serial;

    struct ctl_handler *handlers;
    size_t nhandlers;

    int draining;
    int stop;
    aegis_tstamp drain_deadline;
    struct ctl_metrics *metrics;

    /* counters for metrics */
    uint64_t hs_ok_agent, hs_ok_operator, hs_ok_enroll, hs_refused_unknown, hs_refused_revoked,
        hs_refused_other;
    uint64_t *rpc_counts; /* nhandlers * 17 */
    uint64_t telemetry_rows;
    uint64_t cmd_latency_buckets[12]; /* ack latency histogram (see ctl_metrics.c) */
    uint64_t cmd_latency_count;
    double cmd_latency_sum;
};

/* ---- ctl_server.c ------------------------------------------------------------------------- */

int ctl_server_start(struct ctl_server *srv);  /* after config and PKI: db, identities, endpoint */
void ctl_server_drain(struct ctl_server *srv); /* SIGTERM */
int ctl_server_drained(const struct ctl_server *srv);
void ctl_server_stop(struct ctl_server *srv); /* frees everything started */

/* The handlers of each service (ctl_svc_agent.c, ctl_svc_oper*.c), looked up by path. */
const struct ctl_handler *ctl_svc_agent_handlers(size_t *pn);
const struct ctl_handler *ctl_svc_oper_handlers(size_t *pn);

/* RPC helpers. ctl_rpc_db submits a query for r; cb runs only if the call is still open. */
typedef void (*ctl_rpc_db_cb)(struct ctl_rpc *r, int rv, const struct ctl_db_result *res);
int ctl_rpc_db(struct ctl_rpc *r, const char *sql, int nparams, const char *const *values,
               const int *lengths, const int *formats, ctl_rpc_db_cb cb);
/* ctl_rpc_db_soft is ctl_rpc_db for long-lived streams: a refused submission (database down,
 * queue full) is returned without ending the call, so the stream can retry later. */
int ctl_rpc_db_soft(struct ctl_rpc *r, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *formats, ctl_rpc_db_cb cb);
/* ctl_rpc_batch adds one item for r to batch b (values copied). cb runs with the item's rows
 * only if the call is still open. A refusal (AEGIS_ERR_LIMIT: overloaded) is returned and,
 * unless soft, answers the call UNAVAILABLE with a retry-after hint. */
typedef void (*ctl_rpc_batch_cb)(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                                 int row, int nrows);
int ctl_rpc_batch(struct ctl_rpc *r, struct ctl_batch *b, const char *const *values,
                  ctl_rpc_batch_cb cb, int soft);
/* ctl_rpc_hold keeps r allocated (for a wait outside ctl_rpc_db); ctl_rpc_unhold releases it
 * and may free r, so do not touch r after it. */
void ctl_rpc_hold(struct ctl_rpc *r);
void ctl_rpc_unhold(struct ctl_rpc *r);
/* ctl_rpc_copy runs ctl_db_copy_in for r (data borrowed until cb). */
int ctl_rpc_copy(struct ctl_rpc *r, const char *sql, const void *data, size_t len,
                 ctl_rpc_db_cb cb);
/* ctl_rpc_reply sends msg and finishes OK (unary/client streaming). */
void ctl_rpc_reply(struct ctl_rpc *r, const ProtobufCMessage *msg);
/* ctl_rpc_send sends one message of a stream: 0, -EAGAIN (wait for on_writable) or an error. */
int ctl_rpc_send(struct ctl_rpc *r, const ProtobufCMessage *msg);
void ctl_rpc_fail(struct ctl_rpc *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* ctl_rpc_fail_db maps a database failure: unavailable/overloaded -> UNAVAILABLE with the
 * aegis-retry-after-ms trailer; anything else -> INTERNAL (logged). */
void ctl_rpc_fail_db(struct ctl_rpc *r, int rv, const struct ctl_db_result *res);
void ctl_rpc_finish(struct ctl_rpc *r, int status, const char *msg);
/* Streams ended by the SIGTERM drain. */
void ctl_rpc_list_stream(struct ctl_rpc *r);
/* ctl_rpc_add_watcher marks r as a long-lived stream that database
 * notifications wake (it leaves srv->watchers when the RPC is freed). */
void ctl_rpc_add_watcher(struct ctl_rpc *r);

/* ctl_audit writes one audit row (fire and forget; failures are logged). outcome: "ok",
 * "denied", "error". detail: a plain message stored as {"detail": ...}. */
void ctl_audit(struct ctl_server *srv, const char *actor, const char *action, const char *target,
               const char *outcome, const char *detail);

/* ctl_conn_for_agent returns the local authenticated connection of agent_id, or NULL. */
struct ctl_conn *ctl_conn_for_agent(struct ctl_server *srv, const char *agent_id);

/* ---- ctl_svc_agent.c ---------------------------------------------------------------------- */

/* ctl_agent_batches_new creates the AgentService batches in srv->batch (auth, pump, ack).
 * Errors: -ENOMEM. Freed by ctl_server_stop. */
int ctl_agent_batches_new(struct ctl_server *srv);

/* ctl_sub_pump makes the agent's Subscribe stream (if held here) fetch and send what is
 * pending. Called on NOTIFY aegis_commands and by the redelivery sweep. */
void ctl_sub_pump(struct ctl_server *srv, const char *agent_id);
/* ctl_sub_live: agent_id has an open Subscribe stream on this instance. */
int ctl_sub_live(struct ctl_server *srv, const char *agent_id);
/* ctl_sub_push writes one SignedCommand (sequence seq, already stored as delivered) to the
 * agent's local Subscribe stream, or makes the stream fetch it when it cannot be written now;
 * nothing when the stream is gone (redelivery and resubscription cover it). */
void ctl_sub_push(struct ctl_server *srv, const char *agent_id, uint64_t seq, const uint8_t *cmd,
                  size_t len);
/* ctl_sweep runs redelivery and expiry (timer). */
void ctl_sweep(struct ctl_server *srv);

/* ---- ctl_svc_cmd.c ------------------------------------------------------------------------ */

/* A command to create: the payload (a Command with only its oneof set), targets. */
struct ctl_cmd_spec {
    const ProtobufCMessage *payload_cmd; /* Aegis__V1__Command with the oneof set */
    const char *const *agent_ids;        /* explicit targets */
    size_t n_agent_ids;
    const char *selector; /* "k=v,k2=v2" or "" */
    unsigned lifetime_s;  /* 0 = default */
    const char *kind;     /* "apply_policy", ... */
    const char *created_by;
};
/* ctl_cmd_create resolves targets, allocates per-agent sequences, signs one Command per agent,
 * stores command + deliveries in one statement and NOTIFYs. On a 0 return, done runs once
 * (if the call is still open) with rv 0 and the number of agents, or rv < 0 for the caller to
 * answer (AEGIS_ERR_NOT_FOUND: no agent matched). A non-zero return: bad spec (-EINVAL no
 * target, AEGIS_ERR_MALFORMED bad id/selector, AEGIS_ERR_LIMIT too many ids), nothing sent,
 * or the call was already answered (r->finished). */
typedef void (*ctl_cmd_done_cb)(struct ctl_rpc *r, int rv, const struct ctl_db_result *res,
                                const char *command_id, unsigned ntargets);
void ctl_cmd_job_free(struct ctl_rpc *r);
int ctl_cmd_create(struct ctl_rpc *r, const struct ctl_cmd_spec *spec, ctl_cmd_done_cb done);

/* ---- ctl_util.c ------------------------------------------------------------------------- */

/* SHA-256, key ids and hex text: aegis_sha256_*, aegis_key_id_from_spki (aegis/pki.h) and
 * aegis_hex_* (aegis/hex.h); ctl_hex/ctl_unhex below are their fixed-size forms. */
int ctl_random(void *buf, size_t len);
/* ctl_json_escape appends s as a JSON string (with quotes) to out; returns the new length or
 * a negative error when it would not fit. */
long ctl_json_escape(const char *s, char *out, size_t off, size_t cap);
/* ctl_state_from_db maps a deliveries.status to CommandState. */
int ctl_state_from_db(const char *s);
void ctl_uuid(char out[37]);
int ctl_uuid_valid(const char *s);
void ctl_hex(const uint8_t *p, size_t len, char *out); /* out: 2*len+1 */
int ctl_unhex(const char *s, uint8_t *out, size_t outlen);
/* ctl_ed25519_raw extracts the raw 32-byte key from an Ed25519 SPKI DER. */
int ctl_ed25519_raw(const uint8_t *spki, size_t len, uint8_t out[32]);
/* ctl_rfc3339 formats wall-clock ns as "2026-11-23T07:45:29Z". */
void ctl_rfc3339(aegis_tstamp wall_ns, char out[32]);
/* ctl_version_cmp compares dotted numeric versions ("0.1.10" > "0.1.9"); -2 if malformed. */
int ctl_version_cmp(const char *a, const char *b);
/* ctl_read_file reads a whole file (NUL-terminated) up to max bytes. */
int ctl_read_file(const struct aegis_mem *mem, const char *path, size_t max, char **pbuf,
                  size_t *plen);
/* ctl_json_str extracts the string value of "key" from a flat JSON object (NOTIFY payloads
 * that our own triggers build). Returns 0 or -ENOENT. */
int ctl_json_str(const char *json, const char *key, char *out, size_t outlen);
/* ctl_labels_text encodes labels as k\x1fv\x1e... (the SQL side splits it, see
 * CTL_SQL_LABELS_JSONB); refuses control characters. */
int ctl_labels_text(const char *const *keys, const char *const *values, size_t n, char *out,
                    size_t outlen);
/* ctl_selector_check validates "k=v,k2=v2" and rewrites it as a JSON object text for
 * "labels @> $sel::jsonb" into out. Empty selector -> "" (selects nothing). */
int ctl_selector_json(const char *sel, char *out, size_t outlen);
/* ctl_ts_ns parses a timestamptz text produced by extract(epoch ...)*1e9 (a decimal). */
int64_t ctl_i64(const char *s);

/* SQL fragment: labels text ($n) -> jsonb object. */
#define CTL_SQL_LABELS_JSONB(n)                                                                    \
    "(SELECT coalesce(jsonb_object_agg(split_part(kv, E'\\x1f', 1), split_part(kv, E'\\x1f', "     \
    "2)), '{}'::jsonb) FROM unnest(string_to_array($" n "::text, E'\\x1e')) kv WHERE kv <> '')"
/* SQL fragment: jsonb labels column -> k\x1fv\x1e text. */
#define CTL_SQL_LABELS_TEXT(col)                                                                   \
    "(SELECT coalesce(string_agg(key || E'\\x1f' || value, E'\\x1e' ORDER BY key), '') FROM "      \
    "jsonb_each_text(" col "))"
/* SQL: timestamptz -> int64 ns text. */
#define CTL_SQL_NS(col) "coalesce((extract(epoch from " col ") * 1000000000)::bigint, 0)"

/* ctl_labels_from_text builds Labels entries from k\x1fv\x1e text (entries point into a copy
 * owned by the returned arena; free with ctl_labels_free). */
struct ctl_labels {
    void *arena;
    void *msg; /* Aegis__V1__Labels * */
};
int ctl_labels_from_text(const struct aegis_mem *mem, const char *text, struct ctl_labels *out);
void ctl_labels_free(const struct aegis_mem *mem, struct ctl_labels *l);

#endif
