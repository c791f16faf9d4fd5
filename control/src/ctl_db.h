/*
 * ctl_db: asynchronous PostgreSQL access for aegis-control on the event loop (DESIGN §6).
 *
 * A pool of a few libpq connections, all non-blocking (PQconnectStart/PQconnectPoll,
 * PQsetnonblocking, PQsendQueryPrepared): nothing here ever waits for the database, so the
 * loop never blocks. Requests wait in one bounded FIFO queue and run one at a time per
 * connection; results come back through a callback on the loop. Only ctl_db*.c include libpq.
 *
 * Why one request per connection and no pipeline mode: when a connection dies we then know
 * exactly which request's outcome is unknown (the one in flight) and which never reached the
 * server (everything still queued), which is what lets callers answer UNAVAILABLE without
 * losing or duplicating acknowledged writes. Bulk paths use COPY instead.
 *
 * Failure model
 *  - A request whose connection is lost while it is in flight fails with AEGIS_ERR_CLOSED:
 *    it may or may not have committed (callers answer UNAVAILABLE; clients retry idempotent
 *    operations). Server errors 57P01..57P03 (shutdown) and class 08 count as lost too.
 *  - The pool is UP while at least one connection is ready. When the last one goes DOWN,
 *    every queued request fails with AEGIS_ERR_UNAVAILABLE (it never reached the server) and
 *    new submissions fail at once with AEGIS_ERR_UNAVAILABLE until a connection is back:
 *    failing fast beats queueing behind an outage of unknown length. While STARTING (before
 *    the first connection attempt of every connection has finished) requests are queued.
 *  - A full queue fails the submission at once with AEGIS_ERR_LIMIT (overload: answer
 *    UNAVAILABLE with a retry-after hint).
 *  - Each connection reconnects on its own with exponential backoff and full jitter.
 *  - There is no client-side deadline on a request in flight: put statement_timeout in the
 *    connection string (options='-c statement_timeout=5s') so a stuck statement ends, and
 *    TCP keepalives (keepalives_idle=...) so a dead peer is noticed.
 *  - An SQL error fails the request with AEGIS_ERR_DATABASE; the result then carries the
 *    SQLSTATE and message. If a request leaves a transaction open or aborted (a failed
 *    multi-statement string), the pool rolls it back before the connection is reused.
 *  - A single statement (prepared or parameterized) that loses a deadlock or a serialization
 *    conflict to another session had no effect: it is queued again, up to
 *    CTL_DB_CONFLICT_RETRIES times, before the error reaches its callback.
 *
 * Callbacks (request, notification, event) run on the loop. They may submit new requests;
 * they must not call ctl_db_del.
 */
#ifndef CTL_DB_H
#define CTL_DB_H

#include "ctl_loop.h"

#include <aegis/log.h>
#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

struct ctl_db;
struct ctl_db_result;

/* Defaults (every one configurable through struct ctl_db_config). */
/* A few connections saturate one PostgreSQL for short OLTP statements; more only add
 * server-side processes and lock contention. */
#define CTL_DB_DEFAULT_CONNS 4u
/* Bounds memory and the waiting time of a burst: at ~1 ms per statement on 4 connections a
 * full queue drains in well under a second; beyond it the caller sheds load. */
#define CTL_DB_DEFAULT_QUEUE_MAX 1024u
/* First reconnect within 100 ms (a restart is often that quick), ceilings doubling to 10 s so
 * a long outage costs the server little. */
#define CTL_DB_DEFAULT_BACKOFF_BASE (100 * AEGIS_NS_PER_MS)
#define CTL_DB_DEFAULT_BACKOFF_MAX (10 * AEGIS_NS_PER_S)
/* A connection attempt (TCP/TLS/auth/prepare) that takes longer than this is abandoned. */
#define CTL_DB_DEFAULT_CONNECT_TIMEOUT (10 * AEGIS_NS_PER_S)
/* Retry-after suggested under overload: long enough for a full default queue to drain. */
#define CTL_DB_OVERLOAD_RETRY (1 * AEGIS_NS_PER_S)
/* Limits of the pool itself. */
/* A parameterized statement that loses a deadlock (40P01) or a serialization conflict (40001)
 * is re-run up to this many times before its caller sees the error. */
#define CTL_DB_CONFLICT_RETRIES 3u
#define CTL_DB_MAX_CONNS 64u
#define CTL_DB_MAX_STATEMENTS 256u
#define CTL_DB_MAX_PARAMS 64u
#define CTL_DB_MAX_CHANNELS 64u
/* COPY data is handed to libpq in pieces of this size, a few per loop turn. */
#define CTL_DB_COPY_CHUNK (64u * 1024u)

/* A statement prepared on every connection at connect time; requests name it by index. */
struct ctl_db_statement {
    const char *name; /* unique, [a-z0-9_], also used as the server-side name */
    const char *sql;  /* $1..$n parameters */
    int nparams;      /* 0..CTL_DB_MAX_PARAMS; parameter types are inferred by the server */
};

enum ctl_db_event {
    CTL_DB_EVENT_UP = 1,              /* first ready connection (again) */
    CTL_DB_EVENT_DOWN = 2,            /* no ready connection left */
    CTL_DB_EVENT_LISTEN_RESTORED = 3, /* the listener (re)connected and LISTENs again:
                                         notifications may have been missed, resynchronize */
};

typedef void (*ctl_db_result_cb)(int rv, const struct ctl_db_result *res, void *user_data);
typedef void (*ctl_db_notify_cb)(const char *channel, const char *payload, void *user_data);
typedef void (*ctl_db_event_cb)(struct ctl_db *db, enum ctl_db_event ev, void *user_data);

struct ctl_db_config {
    const char *conninfo;                      /* libpq connection string or URI (copied) */
    unsigned nconns;                           /* 0 = CTL_DB_DEFAULT_CONNS */
    size_t queue_max;                          /* 0 = CTL_DB_DEFAULT_QUEUE_MAX */
    aegis_tstamp backoff_base;                 /* 0 = default */
    aegis_tstamp backoff_max;                  /* 0 = default */
    aegis_tstamp connect_timeout;              /* 0 = default */
    const struct ctl_db_statement *statements; /* copied */
    size_t nstatements;
    int listener;                /* non-zero: keep a dedicated LISTEN connection */
    ctl_db_event_cb on_event;    /* may be NULL */
    void *user_data;             /* for on_event */
    const struct aegis_log *log; /* borrowed, may be NULL */
};

struct ctl_db_stats {
    size_t queued;    /* requests waiting for a connection */
    size_t in_flight; /* requests on a connection */
    unsigned conns_ready;
    uint64_t submitted;
    uint64_t completed;  /* finished with rv 0 */
    uint64_t errors;     /* finished with rv < 0 (any reason) */
    uint64_t rejected;   /* submissions refused (queue full or down) */
    uint64_t lost;       /* failed with AEGIS_ERR_CLOSED */
    uint64_t reconnects; /* successful connects after the first */
    uint64_t notifications;
    uint64_t conflict_retries; /* statements re-run after a deadlock/serialization failure */
};

/*
 * ctl_db_new creates the pool and starts connecting (asynchronously: it returns at once).
 * Copies the config. Errors: -EINVAL (bad config: no conninfo, too many connections,
 * statements or parameters, bad statement name), -ENOMEM.
 */
int ctl_db_new(struct ctl_loop *loop, const struct ctl_db_config *cfg, const struct aegis_mem *mem,
               struct ctl_db **pdb);

/*
 * ctl_db_del closes every connection. Requests still queued or in flight get their callback
 * with -ECANCELED first (a request in flight may still commit). Accepts NULL. Not from a
 * ctl_db callback.
 */
void ctl_db_del(struct ctl_db *db);

/*
 * Submitting. Each function copies what it needs (SQL text, parameter values) except COPY
 * data; on success the callback is called exactly once, later, on the loop. On failure the
 * callback is never called.
 *
 * values[i] == NULL is SQL NULL. lengths may be NULL (text values, NUL-terminated); lengths[i]
 * and formats[i] (0 text, 1 binary) follow libpq's PQsendQueryParams. binary_result asks for
 * binary result columns.
 *
 * Errors: AEGIS_ERR_LIMIT (queue full), AEGIS_ERR_UNAVAILABLE (no connection to the database),
 * -EINVAL (bad statement index or parameter count), -ENOMEM.
 */
int ctl_db_exec_prepared(struct ctl_db *db, unsigned stmt, int nparams, const char *const *values,
                         const int *lengths, const int *formats, int binary_result,
                         ctl_db_result_cb cb, void *user_data);
int ctl_db_exec_params(struct ctl_db *db, const char *sql, int nparams, const char *const *values,
                       const int *lengths, const int *formats, int binary_result,
                       ctl_db_result_cb cb, void *user_data);
/* ctl_db_exec sends sql as a simple query; it may hold several statements. */
int ctl_db_exec(struct ctl_db *db, const char *sql, ctl_db_result_cb cb, void *user_data);

/*
 * ctl_db_copy_in runs sql, a simple-query string containing exactly one COPY ... FROM STDIN
 * (possibly with statements before and after it, e.g. "BEGIN; COPY stage FROM STDIN; INSERT
 * ... SELECT ... FROM stage ON CONFLICT DO NOTHING; COMMIT"), and streams data (len bytes in
 * the COPY format the statement names) without blocking. data is BORROWED: keep it valid and
 * unchanged until the callback. ctl_db_result_copy_rows gives the rows COPY loaded.
 */
int ctl_db_copy_in(struct ctl_db *db, const char *sql, const void *data, size_t len,
                   ctl_db_result_cb cb, void *user_data);

/* ctl_db_notify sends NOTIFY channel, payload (SELECT pg_notify) as a normal request;
 * cb may be NULL. */
int ctl_db_notify(struct ctl_db *db, const char *channel, const char *payload, ctl_db_result_cb cb,
                  void *user_data);

/*
 * ctl_db_listen subscribes cb to notifications on channel through the listener connection
 * (config.listener must be set). Several subscribers per channel are fine. The LISTEN is
 * (re)issued whenever the listener connects; CTL_DB_EVENT_LISTEN_RESTORED tells when.
 * Errors: AEGIS_ERR_STATE (no listener), AEGIS_ERR_LIMIT (CTL_DB_MAX_CHANNELS subscriptions),
 * -EINVAL (empty or over-long channel name), -ENOMEM.
 */
int ctl_db_listen(struct ctl_db *db, const char *channel, ctl_db_notify_cb cb, void *user_data);

/* ctl_db_listening returns non-zero when the listener connection is up and has issued LISTEN
 * for every subscribed channel. */
int ctl_db_listening(const struct ctl_db *db);

/* ctl_db_stats fills the counters (for metrics). */
void ctl_db_stats(const struct ctl_db *db, struct ctl_db_stats *st);

/* ctl_db_is_up returns non-zero while at least one pool connection is ready. */
int ctl_db_is_up(const struct ctl_db *db);

/*
 * ctl_db_retry_hint suggests the retry-after to give a client whose request was refused
 * (AEGIS_ERR_LIMIT or AEGIS_ERR_UNAVAILABLE): while the pool is down, the time until the next
 * reconnect attempt plus CTL_DB_OVERLOAD_RETRY; while it is up (overload),
 * CTL_DB_OVERLOAD_RETRY. Clients add their own jitter.
 */
aegis_tstamp ctl_db_retry_hint(const struct ctl_db *db);

/*
 * Results, valid only inside the callback. A request may hold several statements (simple
 * query, COPY); the accessors below read the LAST statement's result, except where noted.
 */
int ctl_db_result_ntuples(const struct ctl_db_result *res);
int ctl_db_result_nfields(const struct ctl_db_result *res);
/* ctl_db_result_value returns the value's bytes (NUL-terminated in text format), "" for NULL. */
const char *ctl_db_result_value(const struct ctl_db_result *res, int row, int col);
int ctl_db_result_length(const struct ctl_db_result *res, int row, int col);
int ctl_db_result_isnull(const struct ctl_db_result *res, int row, int col);
/* ctl_db_result_cmd_tuples returns the row count of INSERT/UPDATE/DELETE/SELECT/COPY... of
 * the last statement that reported one (BEGIN/COMMIT do not), or 0. */
uint64_t ctl_db_result_cmd_tuples(const struct ctl_db_result *res);
/* ctl_db_result_copy_rows returns the rows the COPY of a ctl_db_copy_in request loaded. */
uint64_t ctl_db_result_copy_rows(const struct ctl_db_result *res);
/* For AEGIS_ERR_DATABASE: the five-character SQLSTATE ("23505") and the server's message;
 * "" when there is none. */
const char *ctl_db_result_sqlstate(const struct ctl_db_result *res);
const char *ctl_db_result_error(const struct ctl_db_result *res);

/*
 * ctl_db_migrate applies the migrations m[0..n-1] (normally ctl_migrations_embedded) to the
 * database at conninfo, BLOCKING: call it at start-up before the loop runs. All pending
 * migrations run in one transaction holding a transaction-level advisory lock, so several
 * instances starting at once apply them exactly once; each is recorded in
 * schema_migrations(version, name, checksum, applied_at). *papplied (may be NULL) receives the
 * number applied now. timeout bounds connecting and waiting for the lock (0 = 60 s).
 *
 * Errors (message in err): AEGIS_ERR_STATE (see ctl_migrate_plan: a changed or unknown
 * migration), AEGIS_ERR_MALFORMED (bad migration list), AEGIS_ERR_UNAVAILABLE (cannot connect),
 * AEGIS_ERR_TIMEOUT (lock or statement timeout), AEGIS_ERR_DATABASE (a migration failed: the
 * transaction is rolled back, nothing is applied), -ENOMEM.
 */
struct ctl_migration;
int ctl_db_migrate(const char *conninfo, const struct ctl_migration *m, size_t n,
                   aegis_tstamp timeout, unsigned *papplied, char *err, size_t errlen);

#endif
