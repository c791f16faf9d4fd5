/*
 * The asynchronous PostgreSQL pool (see ctl_db.h for the model). libpq is touched only in
 * ctl_db*.c; the loop only through ctl_loop.h.
 *
 * libpq non-blocking protocol (PostgreSQL docs, "Asynchronous Command Processing" and
 * "Making Non-Blocking Connections"): after PQsend* call PQflush until it returns 0, waiting
 * for write-readiness while it returns 1, and always keep reading (PQconsumeInput) so the
 * server never stalls on a full socket; PQgetResult is called only when PQisBusy says it will
 * not block.
 */
#include "ctl_db.h"

#include "ctl_backoff.h"

#include <aegis/err.h>

#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* libpq keeps identifiers to NAMEDATALEN - 1 = 63 bytes. */
#define CHANNEL_MAX 63
/* COPY chunks handed to libpq per loop turn: 1 MiB, then other connections get a turn. */
#define COPY_CHUNKS_PER_TURN 16
/* Longest error text kept for logs. */
#define ERRBUF_LEN 256

enum req_kind { REQ_PREPARED, REQ_PARAMS, REQ_SIMPLE, REQ_COPY };

struct req {
    struct req *next;
    enum req_kind kind;
    unsigned stmt;
    int nparams;
    int binary_result;
    const char *sql;
    const char **values;
    int *lengths;
    int *formats;
    const unsigned char *copy_data;
    size_t copy_len;
    ctl_db_result_cb cb;
    void *user_data;
    unsigned conflicts; /* times re-run after a deadlock or serialization failure */
    /* parameter pointers, lengths, formats, then the bytes follow in the same allocation */
};

struct ctl_db_result {
    PGresult *last; /* last non-error result */
    PGresult *err;  /* first error result */
    uint64_t cmd_tuples;
    uint64_t copy_rows;
};

enum conn_state {
    CS_DOWN,       /* no connection; the timer is the reconnect delay */
    CS_CONNECTING, /* PQconnectPoll in progress; the timer is the deadline */
    CS_SETUP,      /* preparing statements / issuing LISTEN; the timer is the deadline */
    CS_READY,      /* idle */
    CS_BUSY,       /* running op */
};

enum conn_op { OP_NONE, OP_PREPARE, OP_LISTEN, OP_ROLLBACK, OP_REQ };

struct conn {
    struct ctl_db *db;
    unsigned id;
    bool listener;
    enum conn_state state;
    enum conn_op op;
    PGconn *pg;
    struct ctl_io *io;
    struct ctl_timer *timer;
    struct ctl_backoff backoff;
    aegis_tstamp retry_at; /* when CS_DOWN: next connection attempt (monotonic) */
    bool ever_ready;
    bool attempted; /* finished at least one connection attempt (success or not) */
    /* current op */
    struct req *req;
    struct ctl_db_result res;
    size_t prep_idx;
    size_t listen_upto;   /* subscriptions LISTENed on this session */
    size_t listen_target; /* subscriptions the LISTEN in flight covers */
    bool restore_pending; /* emit LISTEN_RESTORED once listen_upto catches up */
    bool op_error;
    /* COPY streaming */
    bool copying;
    bool copy_ended;
    size_t copy_off;
};

struct sub {
    char channel[CHANNEL_MAX + 1];
    ctl_db_notify_cb cb;
    void *user_data;
};

struct ctl_db {
    const struct aegis_mem *mem;
    struct ctl_loop *loop;
    const struct aegis_log *log;
    char *conninfo;
    unsigned nconns;
    size_t queue_max;
    aegis_tstamp backoff_base;
    aegis_tstamp backoff_max;
    aegis_tstamp connect_timeout;
    struct ctl_db_statement *stmts;
    size_t nstmts;
    ctl_db_event_cb on_event;
    void *user_data;
    struct conn *conns; /* nconns pool connections, then the listener if any */
    struct conn *listener;
    struct sub *subs; /* CTL_DB_MAX_CHANNELS slots */
    size_t nsubs;
    struct req *qhead;
    struct req *qtail;
    size_t qlen;
    unsigned nready;
    bool starting;
    bool up;
    uint64_t rnd;
    struct ctl_timer *kick; /* runs dispatch on the next loop turn after a submission */
    struct ctl_db_stats st;
};

static void conn_connect(struct conn *c);
static void conn_lost(struct conn *c, const char *why);
static void dispatch(struct ctl_db *db);
static void conn_update_io(struct conn *c);
static void kick_cb(struct ctl_timer *t, void *user_data);

/* ---- small helpers ------------------------------------------------------------------ */

/* one_line copies libpq's (multi-line) message into buf as one line for key=value logs. */
static const char *one_line(char *buf, size_t len, const char *msg)
{
    size_t i, j = 0;

    if (!msg)
        msg = "";
    for (i = 0; msg[i] && j + 1 < len; i++)
        buf[j++] = (msg[i] == '\n' || msg[i] == '\r' || msg[i] == '"') ? ' ' : msg[i];
    while (j > 0 && buf[j - 1] == ' ')
        j--;
    buf[j] = '\0';
    return buf;
}

static void emit(struct ctl_db *db, enum ctl_db_event ev)
{
    if (db->on_event)
        db->on_event(db, ev, db->user_data);
}

static void res_clear(struct ctl_db_result *r)
{
    PQclear(r->last);
    PQclear(r->err);
    memset(r, 0, sizeof(*r));
}

/* lost_sqlstate: errors that mean the session is gone, not that the statement was wrong:
 * class 08 (connection exception) and 57P01..57P03 (admin/crash shutdown, cannot connect now). */
static bool lost_sqlstate(const char *s)
{
    if (!s)
        return false;
    return strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
           strcmp(s, "57P03") == 0;
}

/* conflict_sqlstate: the statement lost a deadlock (40P01) or a serialization conflict
 * (40001) to another session and was rolled back; the same statement run again may succeed. */
static bool conflict_sqlstate(const char *s)
{
    return s && (strcmp(s, "40P01") == 0 || strcmp(s, "40001") == 0);
}

static void req_free(struct ctl_db *db, struct req *r)
{
    aegis_free(db->mem, r);
}

/* finish delivers the outcome of a request and frees it. */
static void finish(struct ctl_db *db, struct req *r, int rv, const struct ctl_db_result *res)
{
    if (rv == 0) {
        db->st.completed++;
    } else {
        db->st.errors++;
        if (rv == AEGIS_ERR_CLOSED)
            db->st.lost++;
    }
    if (r->cb)
        r->cb(rv, res, r->user_data);
    req_free(db, r);
}

static struct req *queue_pop(struct ctl_db *db)
{
    struct req *r = db->qhead;

    if (!r)
        return NULL;
    db->qhead = r->next;
    if (!db->qhead)
        db->qtail = NULL;
    db->qlen--;
    r->next = NULL;
    return r;
}

static void queue_push(struct ctl_db *db, struct req *r)
{
    r->next = NULL;
    if (db->qtail)
        db->qtail->next = r;
    else
        db->qhead = r;
    db->qtail = r;
    db->qlen++;
}

static void queue_push_front(struct ctl_db *db, struct req *r)
{
    r->next = db->qhead;
    db->qhead = r;
    if (!db->qtail)
        db->qtail = r;
    db->qlen++;
}

/* fail_queue fails every queued request with rv. Callbacks may submit: those submissions see
 * the pool down and fail synchronously, so this loop ends. */
static void fail_queue(struct ctl_db *db, int rv)
{
    struct req *r;
    size_t bound = db->qlen;

    while (bound-- > 0 && (r = queue_pop(db)) != NULL)
        finish(db, r, rv, NULL);
}

static void go_down(struct ctl_db *db)
{
    bool was = db->up || db->starting;

    db->starting = false;
    db->up = false;
    if (was)
        emit(db, CTL_DB_EVENT_DOWN);
    fail_queue(db, AEGIS_ERR_UNAVAILABLE);
}

static bool is_ready_state(enum conn_state s)
{
    return s == CS_READY || s == CS_BUSY;
}

/* ---- connection life cycle ---------------------------------------------------------- */

static void notice_cb(void *arg, const char *message)
{
    struct conn *c = arg;
    char buf[ERRBUF_LEN];

    AEGIS_LOG(c->db->log, AEGIS_LOG_DEBUG, "db=conn%u event=notice message=\"%s\"", c->id,
              one_line(buf, sizeof(buf), message));
}

static void schedule_retry(struct conn *c)
{
    aegis_tstamp delay = ctl_backoff_next(&c->backoff, ctl_rand_next(&c->db->rnd));

    c->state = CS_DOWN;
    c->retry_at = aegis_now() + delay;
    ctl_timer_start(c->timer, delay);
}

static void teardown(struct conn *c)
{
    ctl_io_set(c->io, -1, 0);
    ctl_timer_stop(c->timer);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->copying = false;
    c->copy_ended = false;
    c->copy_off = 0;
}

/* note_attempt: while STARTING, once every pool connection has tried and none is ready, the
 * pool is DOWN (queued requests fail instead of waiting for an outage to end). */
static void note_attempt(struct conn *c)
{
    struct ctl_db *db = c->db;
    unsigned i;

    c->attempted = true;
    if (!db->starting || c->listener)
        return;
    for (i = 0; i < db->nconns; i++)
        if (!db->conns[i].attempted)
            return;
    if (db->nready == 0)
        go_down(db);
}

static void conn_lost(struct conn *c, const char *why)
{
    struct ctl_db *db = c->db;
    bool was_ready = is_ready_state(c->state);
    struct req *r = c->req;
    char buf[ERRBUF_LEN];

    AEGIS_LOG(db->log, was_ready ? AEGIS_LOG_WARN : AEGIS_LOG_INFO,
              "db=conn%u event=%s error=\"%s\"", c->id,
              was_ready ? "connection_lost" : "connect_failed",
              one_line(buf, sizeof(buf), why ? why : (c->pg ? PQerrorMessage(c->pg) : "")));
    c->req = NULL;
    c->op = OP_NONE;
    res_clear(&c->res);
    teardown(c);
    schedule_retry(c);
    if (c->listener) {
        c->listen_upto = 0;
        c->restore_pending = false;
    }
    if (was_ready && !c->listener) {
        db->nready--;
        if (db->nready == 0)
            go_down(db);
    }
    if (!was_ready)
        note_attempt(c);
    /* The request was sent: it may have committed. AEGIS_ERR_CLOSED says exactly that. */
    if (r)
        finish(db, r, AEGIS_ERR_CLOSED, NULL);
}

static void become_ready(struct conn *c)
{
    struct ctl_db *db = c->db;

    ctl_timer_stop(c->timer);
    ctl_backoff_reset(&c->backoff);
    c->state = CS_READY;
    c->op = OP_NONE;
    if (c->ever_ready)
        db->st.reconnects++;
    c->ever_ready = true;
    c->attempted = true;
    AEGIS_LOG(db->log, AEGIS_LOG_INFO, "db=conn%u event=ready listener=%d", c->id,
              c->listener ? 1 : 0);
    if (c->listener) {
        c->restore_pending = true;
        if (db->nsubs == 0) {
            c->restore_pending = false;
            emit(db, CTL_DB_EVENT_LISTEN_RESTORED);
        }
        return;
    }
    db->nready++;
    if (!db->up) {
        db->up = true;
        db->starting = false;
        emit(db, CTL_DB_EVENT_UP);
    }
}

static int flush_out(struct conn *c)
{
    int r = PQflush(c->pg);

    if (r < 0) {
        conn_lost(c, NULL);
        return -1;
    }
    return r;
}

/* setup_next issues the next set-up step (prepare statement i, LISTEN) or declares ready. */
static void setup_next(struct conn *c)
{
    struct ctl_db *db = c->db;

    if (!c->listener && c->prep_idx < db->nstmts) {
        const struct ctl_db_statement *s = &db->stmts[c->prep_idx];

        c->op = OP_PREPARE;
        c->op_error = false;
        if (!PQsendPrepare(c->pg, s->name, s->sql, s->nparams, NULL)) {
            conn_lost(c, NULL);
            return;
        }
        if (flush_out(c) < 0)
            return;
        conn_update_io(c);
        return;
    }
    become_ready(c);
    dispatch(db);
    if (c->pg)
        conn_update_io(c);
}

/* listen_pending sends LISTEN for subscriptions not yet issued on the listener connection. */
static void listen_pending(struct conn *c)
{
    struct ctl_db *db = c->db;
    char *q = NULL;
    size_t qlen = 0, qcap = 0, i;

    if (c->state != CS_READY || c->listen_upto >= db->nsubs)
        return;
    for (i = c->listen_upto; i < db->nsubs; i++) {
        char *id = PQescapeIdentifier(c->pg, db->subs[i].channel, strlen(db->subs[i].channel));
        size_t need;

        if (!id)
            goto lost;
        need = strlen(id) + 9; /* "LISTEN " + id + ";" + NUL */
        if (qlen + need > qcap) {
            size_t ncap = (qcap ? qcap * 2 : 256) + need;
            char *nq = aegis_realloc(db->mem, q, ncap);
            if (!nq) {
                PQfreemem(id);
                aegis_free(db->mem, q);
                return; /* retried at the next ready turn */
            }
            q = nq;
            qcap = ncap;
        }
        qlen += (size_t)snprintf(q + qlen, qcap - qlen, "LISTEN %s;", id);
        PQfreemem(id);
    }
    c->op = OP_LISTEN;
    c->op_error = false;
    c->state = CS_BUSY;
    c->listen_target = db->nsubs;
    if (!PQsendQuery(c->pg, q)) {
        aegis_free(db->mem, q);
        goto lost;
    }
    aegis_free(db->mem, q);
    if (flush_out(c) < 0)
        return;
    conn_update_io(c);
    return;
lost:
    conn_lost(c, NULL);
}

static void connect_step(struct conn *c)
{
    PostgresPollingStatusType p = PQconnectPoll(c->pg);

    switch (p) {
    case PGRES_POLLING_READING:
        ctl_io_set(c->io, PQsocket(c->pg), CTL_IO_READ);
        return;
    case PGRES_POLLING_WRITING:
        ctl_io_set(c->io, PQsocket(c->pg), CTL_IO_WRITE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        conn_lost(c, NULL);
        return;
    }
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_lost(c, "cannot switch the connection to non-blocking mode");
        return;
    }
    PQsetNoticeProcessor(c->pg, notice_cb, c);
    c->state = CS_SETUP;
    c->prep_idx = 0;
    c->listen_upto = 0;
    setup_next(c);
    if (c->listener && c->state == CS_READY)
        listen_pending(c);
}

static void conn_connect(struct conn *c)
{
    struct ctl_db *db = c->db;
    /* expand_dbname: the conninfo string is parsed in place of dbname; it is listed last so
     * that what the operator wrote wins over our defaults. */
    const char *keys[] = {"fallback_application_name", "dbname", NULL};
    const char *vals[] = {"aegis-control", db->conninfo, NULL};

    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        conn_lost(c, "out of memory starting a connection");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, NULL);
        return;
    }
    c->state = CS_CONNECTING;
    ctl_timer_start(c->timer, db->connect_timeout);
    /* Per the libpq docs, poll as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    ctl_io_set(c->io, PQsocket(c->pg), CTL_IO_WRITE);
}

static void timer_cb(struct ctl_timer *t, void *user_data)
{
    struct conn *c = user_data;

    (void)t;
    if (c->state == CS_DOWN)
        conn_connect(c);
    else if (c->state == CS_CONNECTING || c->state == CS_SETUP)
        conn_lost(c, "connection attempt timed out");
}

/* ---- requests ------------------------------------------------------------------------ */

static void start_copy(struct conn *c);

/* start_req sends r on the ready connection c. */
static void start_req(struct conn *c, struct req *r)
{
    struct ctl_db *db = c->db;
    int ok;

    c->state = CS_BUSY;
    c->op = OP_REQ;
    c->req = r;
    memset(&c->res, 0, sizeof(c->res));
    switch (r->kind) {
    case REQ_PREPARED:
        ok = PQsendQueryPrepared(c->pg, db->stmts[r->stmt].name, r->nparams, r->values, r->lengths,
                                 r->formats, r->binary_result);
        break;
    case REQ_PARAMS:
        ok = PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, r->values, r->lengths, r->formats,
                               r->binary_result);
        break;
    default:
        ok = PQsendQuery(c->pg, r->sql);
        break;
    }
    if (!ok) {
        c->req = NULL;
        c->op = OP_NONE;
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            /* Nothing reached the server: the request goes back to the head of the queue. */
            queue_push_front(db, r);
            conn_lost(c, NULL);
        } else {
            char buf[ERRBUF_LEN];
            AEGIS_LOG(db->log, AEGIS_LOG_ERROR, "db=conn%u event=send_failed error=\"%s\"", c->id,
                      one_line(buf, sizeof(buf), PQerrorMessage(c->pg)));
            c->state = CS_READY;
            finish(db, r, AEGIS_ERR_DATABASE, NULL);
        }
        return;
    }
    if (flush_out(c) < 0)
        return;
    conn_update_io(c);
}

static void dispatch(struct ctl_db *db)
{
    unsigned i;
    /* Bounded: each pass either starts a request on an idle connection or stops. */
    for (i = 0; i < db->nconns && db->qhead; i++) {
        struct conn *c = &db->conns[i];
        if (c->state == CS_READY && c->pg)
            start_req(c, queue_pop(db));
    }
}

static void copy_pump(struct conn *c)
{
    struct req *r = c->req;
    int turn;

    for (turn = 0; turn < COPY_CHUNKS_PER_TURN && c->copy_off < r->copy_len; turn++) {
        size_t n = r->copy_len - c->copy_off;
        int rv;

        if (n > CTL_DB_COPY_CHUNK)
            n = CTL_DB_COPY_CHUNK;
        rv = PQputCopyData(c->pg, (const char *)r->copy_data + c->copy_off, (int)n);
        if (rv < 0) {
            conn_lost(c, NULL);
            return;
        }
        if (rv == 0)
            return; /* buffers full: wait for write-readiness */
        c->copy_off += n;
        /* Stop queueing when the socket is full, so libpq's buffer stays small. */
        rv = flush_out(c);
        if (rv < 0)
            return;
        if (rv == 1)
            return;
    }
    if (c->copy_off < r->copy_len)
        return; /* more next turn */
    if (!c->copy_ended) {
        int rv = PQputCopyEnd(c->pg, NULL);
        if (rv < 0) {
            conn_lost(c, NULL);
            return;
        }
        if (rv == 0)
            return;
        c->copy_ended = true;
    }
    if (flush_out(c) == 0)
        c->copying = false;
}

static void start_copy(struct conn *c)
{
    if (!c->req || c->req->kind != REQ_COPY || c->copying || c->copy_ended) {
        /* COPY FROM STDIN where none was expected (or twice): end it with an error so the
         * server rolls it back, and fail the request. */
        c->op_error = true;
        if (PQputCopyEnd(c->pg, "unexpected COPY FROM STDIN") < 0)
            conn_lost(c, NULL);
        return;
    }
    c->copying = true;
    c->copy_off = 0;
    copy_pump(c);
}

static void accumulate(struct conn *c, PGresult *pr)
{
    ExecStatusType st = PQresultStatus(pr);

    if (c->op != OP_REQ) {
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
            char buf[ERRBUF_LEN];
            if (!c->op_error)
                AEGIS_LOG(c->db->log, AEGIS_LOG_ERROR, "db=conn%u event=setup_failed error=\"%s\"",
                          c->id, one_line(buf, sizeof(buf), PQresultErrorMessage(pr)));
            c->op_error = true;
        }
        PQclear(pr);
        return;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        if (!c->res.err)
            c->res.err = pr;
        else
            PQclear(pr);
        return;
    }
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        const char *n = PQcmdTuples(pr);
        if (n && n[0]) {
            c->res.cmd_tuples = strtoull(n, NULL, 10);
            if (strncmp(PQcmdStatus(pr), "COPY", 4) == 0)
                c->res.copy_rows = c->res.cmd_tuples;
        }
    }
    PQclear(c->res.last);
    c->res.last = pr;
}

/* op_complete runs when PQgetResult returned NULL: the op is over. */
static void op_complete(struct conn *c)
{
    struct ctl_db *db = c->db;
    enum conn_op op = c->op;
    struct req *r;
    struct ctl_db_result res;
    const char *sqlstate;
    int rv = 0;
    bool rollback;

    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, NULL);
        return;
    }
    c->op = OP_NONE;
    switch (op) {
    case OP_PREPARE:
        if (c->op_error) {
            conn_lost(c, "cannot prepare a statement (see the error above)");
            return;
        }
        c->prep_idx++;
        setup_next(c);
        return;
    case OP_LISTEN:
        if (c->op_error) {
            conn_lost(c, "LISTEN failed");
            return;
        }
        c->listen_upto = c->listen_target;
        c->state = CS_READY;
        if (c->restore_pending && c->listen_upto == db->nsubs) {
            c->restore_pending = false;
            emit(db, CTL_DB_EVENT_LISTEN_RESTORED);
        }
        listen_pending(c);
        return;
    case OP_ROLLBACK:
        if (c->op_error) {
            conn_lost(c, "ROLLBACK failed");
            return;
        }
        c->state = CS_READY;
        dispatch(db);
        return;
    case OP_REQ:
        break;
    default:
        return;
    }

    r = c->req;
    c->req = NULL;
    res = c->res;
    memset(&c->res, 0, sizeof(c->res));
    bool again = false;
    if (res.err) {
        sqlstate = PQresultErrorField(res.err, PG_DIAG_SQLSTATE);
        rv = lost_sqlstate(sqlstate) ? AEGIS_ERR_CLOSED : AEGIS_ERR_DATABASE;
        /* One (prepared or parameterized) statement is its own transaction, rolled back whole:
         * run it again (at the back of the queue, behind the winner) rather than fail a caller
         * for another session's lock order. Simple-query strings and COPY are not re-run. */
        again = (r->kind == REQ_PARAMS || r->kind == REQ_PREPARED) && conflict_sqlstate(sqlstate) &&
                r->conflicts < CTL_DB_CONFLICT_RETRIES;
    } else if (r->kind == REQ_COPY && !c->copy_ended) {
        /* The string had no COPY FROM STDIN: the data was not loaded. */
        rv = AEGIS_ERR_DATABASE;
    }
    c->copying = false;
    c->copy_ended = false;
    c->copy_off = 0;
    /* A failed multi-statement string can leave a transaction open or aborted: roll it back
     * before anyone else uses this session. */
    rollback = rv != AEGIS_ERR_CLOSED && PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    if (rollback) {
        c->op = OP_ROLLBACK;
        c->op_error = false;
        c->state = CS_BUSY;
        if (!PQsendQuery(c->pg, "ROLLBACK")) {
            c->op = OP_NONE;
            finish(db, r, rv ? rv : AEGIS_ERR_DATABASE, &res);
            res_clear(&res);
            conn_lost(c, NULL);
            return;
        }
    } else if (rv == AEGIS_ERR_CLOSED) {
        /* The server said it is shutting down: drop the session before anyone reuses it. */
        conn_lost(c, "server is shutting down");
    } else {
        c->state = CS_READY;
    }
    if (again) {
        r->conflicts++;
        db->st.conflict_retries++;
        res_clear(&res);
        queue_push(db, r);
        dispatch(db);
        return;
    }
    finish(db, r, rv, &res);
    res_clear(&res);
    dispatch(db);
}

static void drain_notifies(struct conn *c)
{
    struct ctl_db *db = c->db;
    PGnotify *n;
    /* Bounded by what one PQconsumeInput buffered. */
    while (c->pg && (n = PQnotifies(c->pg)) != NULL) {
        size_t i;
        db->st.notifications++;
        for (i = 0; i < db->nsubs; i++) {
            if (strcmp(db->subs[i].channel, n->relname) == 0)
                db->subs[i].cb(n->relname, n->extra ? n->extra : "", db->subs[i].user_data);
        }
        PQfreemem(n);
    }
}

/* drain reads every result that is ready without blocking. */
static void drain(struct conn *c)
{
    /* Each result is consumed from libpq's buffer, so this ends; the guard is for safety. */
    unsigned guard;

    for (guard = 0; guard < 1000000u && c->pg && c->op != OP_NONE && !c->copying; guard++) {
        PGresult *pr;

        if (PQisBusy(c->pg))
            return;
        pr = PQgetResult(c->pg);
        if (!pr) {
            op_complete(c);
            return;
        }
        switch (PQresultStatus(pr)) {
        case PGRES_COPY_IN:
            PQclear(pr);
            start_copy(c);
            break;
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            /* Not supported: the session is stuck in COPY OUT; start a fresh one. */
            PQclear(pr);
            if (c->req) {
                struct req *r = c->req;
                c->req = NULL;
                c->op = OP_NONE;
                finish(c->db, r, AEGIS_ERR_UNSUPPORTED, NULL);
            }
            conn_lost(c, "COPY TO STDOUT is not supported by ctl_db");
            return;
        default:
            accumulate(c, pr);
            break;
        }
    }
}

static void conn_update_io(struct conn *c)
{
    int ev = CTL_IO_READ;

    if (!c->pg || c->state == CS_DOWN || c->state == CS_CONNECTING)
        return;
    if (c->copying)
        ev |= CTL_IO_WRITE;
    if (c->state == CS_BUSY || c->state == CS_SETUP) {
        /* PQflush returns 1 while libpq holds unsent bytes: then wait for write-readiness. */
        int r = PQflush(c->pg);
        if (r < 0) {
            conn_lost(c, NULL);
            return;
        }
        if (r == 1)
            ev |= CTL_IO_WRITE;
    }
    ctl_io_set(c->io, PQsocket(c->pg), ev);
}

static void io_cb(struct ctl_io *io, int events, void *user_data)
{
    struct conn *c = user_data;

    (void)io;
    if (!c->pg)
        return;
    if (c->state == CS_CONNECTING) {
        connect_step(c);
        return;
    }
    if (events & CTL_IO_WRITE) {
        if (c->copying)
            copy_pump(c);
        else if (flush_out(c) < 0)
            return;
        if (!c->pg)
            return;
    }
    if (events & CTL_IO_READ) {
        if (!PQconsumeInput(c->pg)) {
            conn_lost(c, NULL);
            return;
        }
        drain_notifies(c);
        if (!c->pg)
            return;
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_lost(c, NULL);
            return;
        }
    }
    drain(c);
    if (!c->pg)
        return;
    if (c->listener && c->state == CS_READY)
        listen_pending(c);
    if (c->pg)
        conn_update_io(c);
}

/* ---- public API ---------------------------------------------------------------------- */

static bool valid_stmt_name(const char *s)
{
    size_t i;

    if (!s || !s[0])
        return false;
    for (i = 0; s[i]; i++) {
        if (i >= CHANNEL_MAX)
            return false;
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    }
    return true;
}

int ctl_db_new(struct ctl_loop *loop, const struct ctl_db_config *cfg, const struct aegis_mem *mem,
               struct ctl_db **pdb)
{
    struct ctl_db *db;
    unsigned i, total;
    size_t k;
    int rv = -ENOMEM;

    if (!loop || !cfg || !pdb || !cfg->conninfo)
        return -EINVAL;
    if (cfg->nconns > CTL_DB_MAX_CONNS || cfg->nstatements > CTL_DB_MAX_STATEMENTS ||
        (cfg->nstatements && !cfg->statements))
        return -EINVAL;
    for (k = 0; k < cfg->nstatements; k++) {
        if (!valid_stmt_name(cfg->statements[k].name) || !cfg->statements[k].sql ||
            cfg->statements[k].nparams < 0 || cfg->statements[k].nparams > (int)CTL_DB_MAX_PARAMS)
            return -EINVAL;
    }
    db = aegis_calloc(mem, 1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->mem = mem;
    db->loop = loop;
    db->log = cfg->log;
    db->nconns = cfg->nconns ? cfg->nconns : CTL_DB_DEFAULT_CONNS;
    db->queue_max = cfg->queue_max ? cfg->queue_max : CTL_DB_DEFAULT_QUEUE_MAX;
    db->backoff_base = cfg->backoff_base ? cfg->backoff_base : CTL_DB_DEFAULT_BACKOFF_BASE;
    db->backoff_max = cfg->backoff_max ? cfg->backoff_max : CTL_DB_DEFAULT_BACKOFF_MAX;
    db->connect_timeout =
        cfg->connect_timeout ? cfg->connect_timeout : CTL_DB_DEFAULT_CONNECT_TIMEOUT;
    db->on_event = cfg->on_event;
    db->user_data = cfg->user_data;
    db->starting = true;
    if (getrandom(&db->rnd, sizeof(db->rnd), GRND_NONBLOCK) != (ssize_t)sizeof(db->rnd))
        db->rnd = aegis_now() ^ (uint64_t)(uintptr_t)db;

    db->conninfo = aegis_strdup(mem, cfg->conninfo);
    if (!db->conninfo)
        goto fail;
    if (cfg->nstatements) {
        db->stmts = aegis_calloc(mem, cfg->nstatements, sizeof(*db->stmts));
        if (!db->stmts)
            goto fail;
        for (k = 0; k < cfg->nstatements; k++) {
            db->stmts[k].nparams = cfg->statements[k].nparams;
            db->stmts[k].name = aegis_strdup(mem, cfg->statements[k].name);
            db->stmts[k].sql = aegis_strdup(mem, cfg->statements[k].sql);
            db->nstmts = k + 1;
            if (!db->stmts[k].name || !db->stmts[k].sql)
                goto fail;
        }
    }
    if (cfg->listener) {
        db->subs = aegis_calloc(mem, CTL_DB_MAX_CHANNELS, sizeof(*db->subs));
        if (!db->subs)
            goto fail;
    }
    total = db->nconns + (cfg->listener ? 1u : 0u);
    db->conns = aegis_calloc(mem, total, sizeof(*db->conns));
    if (!db->conns)
        goto fail;
    for (i = 0; i < total; i++) {
        struct conn *c = &db->conns[i];

        c->db = db;
        c->id = i;
        c->listener = i == db->nconns;
        c->state = CS_DOWN;
        ctl_backoff_init(&c->backoff, db->backoff_base, db->backoff_max);
        if ((rv = ctl_io_new(loop, io_cb, c, &c->io)) != 0 ||
            (rv = ctl_timer_new(loop, timer_cb, c, &c->timer)) != 0)
            goto fail;
    }
    if ((rv = ctl_timer_new(loop, kick_cb, db, &db->kick)) != 0)
        goto fail;
    if (cfg->listener)
        db->listener = &db->conns[db->nconns];
    /* Connect from the loop, not from here: ctl_db_new never calls back before it returns. */
    for (i = 0; i < total; i++)
        ctl_timer_start(db->conns[i].timer, 0);
    *pdb = db;
    return 0;
fail:
    ctl_db_del(db);
    return rv ? rv : -ENOMEM;
}

void ctl_db_del(struct ctl_db *db)
{
    unsigned i, total;
    size_t k;

    if (!db)
        return;
    db->on_event = NULL;
    /* Callbacks run below may submit: refuse, so the loops here end. */
    db->up = false;
    db->starting = false;
    total = db->conns ? db->nconns + (db->listener ? 1u : 0u) : 0u;
    for (i = 0; i < total; i++) {
        struct conn *c = &db->conns[i];
        struct req *r = c->req;

        c->req = NULL;
        res_clear(&c->res);
        if (c->io || c->timer) {
            if (c->io)
                ctl_io_set(c->io, -1, 0);
            if (c->timer)
                ctl_timer_stop(c->timer);
        }
        if (c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
        c->state = CS_DOWN;
        if (r)
            finish(db, r, -ECANCELED, NULL);
    }
    fail_queue(db, -ECANCELED);
    for (i = 0; i < total; i++) {
        ctl_io_del(db->conns[i].io);
        ctl_timer_del(db->conns[i].timer);
    }
    aegis_free(db->mem, db->conns);
    ctl_timer_del(db->kick);
    for (k = 0; k < db->nstmts; k++) {
        aegis_free(db->mem, (void *)db->stmts[k].name);
        aegis_free(db->mem, (void *)db->stmts[k].sql);
    }
    aegis_free(db->mem, db->stmts);
    aegis_free(db->mem, db->subs);
    aegis_free(db->mem, db->conninfo);
    aegis_free(db->mem, db);
}

static int admit(struct ctl_db *db)
{
    if (!db->up && !db->starting) {
        db->st.rejected++;
        return AEGIS_ERR_UNAVAILABLE;
    }
    if (db->qlen >= db->queue_max) {
        db->st.rejected++;
        return AEGIS_ERR_LIMIT;
    }
    return 0;
}

/* enqueue appends r; the send happens on the next loop turn (one flush point per turn, and
 * a submission never calls a callback before it returns). */
static void enqueue(struct ctl_db *db, struct req *r)
{
    queue_push(db, r);
    db->st.submitted++;
    if (!ctl_timer_active(db->kick))
        ctl_timer_start(db->kick, 0);
}

static void kick_cb(struct ctl_timer *t, void *user_data)
{
    (void)t;
    dispatch(user_data);
}

/* build_req copies the SQL and parameters into one allocation. */
static int build_req(struct ctl_db *db, enum req_kind kind, const char *sql, int nparams,
                     const char *const *values, const int *lengths, const int *formats,
                     struct req **pr)
{
    size_t sqllen = sql ? strlen(sql) + 1 : 0;
    size_t size, i, n;
    unsigned char *p;
    struct req *r;

    if (nparams < 0 || nparams > (int)CTL_DB_MAX_PARAMS || (nparams && !values))
        return -EINVAL;
    n = (size_t)nparams;
    size = sizeof(*r) + n * (sizeof(char *) + 2 * sizeof(int)) + sqllen;
    for (i = 0; i < n; i++) {
        size_t l = 0;
        if (values[i]) {
            if (formats && formats[i]) {
                if (!lengths || lengths[i] < 0)
                    return -EINVAL;
                l = (size_t)lengths[i];
            } else {
                l = strlen(values[i]) + 1;
            }
        }
        size += l;
    }
    r = aegis_calloc(db->mem, 1, size);
    if (!r)
        return -ENOMEM;
    r->kind = kind;
    r->nparams = nparams;
    p = (unsigned char *)(r + 1);
    r->values = (const char **)(void *)p;
    p += n * sizeof(char *);
    r->lengths = (int *)(void *)p;
    p += n * sizeof(int);
    r->formats = (int *)(void *)p;
    p += n * sizeof(int);
    for (i = 0; i < n; i++) {
        size_t l;
        if (!values[i]) {
            r->values[i] = NULL;
            continue;
        }
        r->formats[i] = formats ? formats[i] : 0;
        l = r->formats[i] ? (size_t)lengths[i] : strlen(values[i]) + 1;
        memcpy(p, values[i], l);
        r->values[i] = (const char *)p;
        r->lengths[i] = r->formats[i] ? lengths[i] : (int)(l - 1);
        p += l;
    }
    if (sql) {
        memcpy(p, sql, sqllen);
        r->sql = (const char *)p;
    }
    if (n == 0) {
        r->values = NULL;
        r->lengths = NULL;
        r->formats = NULL;
    }
    *pr = r;
    return 0;
}

int ctl_db_exec_prepared(struct ctl_db *db, unsigned stmt, int nparams, const char *const *values,
                         const int *lengths, const int *formats, int binary_result,
                         ctl_db_result_cb cb, void *user_data)
{
    struct req *r;
    int rv;

    if (!db || stmt >= db->nstmts || nparams != db->stmts[stmt].nparams)
        return -EINVAL;
    if ((rv = admit(db)) != 0)
        return rv;
    if ((rv = build_req(db, REQ_PREPARED, NULL, nparams, values, lengths, formats, &r)) != 0)
        return rv;
    r->stmt = stmt;
    r->binary_result = binary_result ? 1 : 0;
    r->cb = cb;
    r->user_data = user_data;
    enqueue(db, r);
    return 0;
}

int ctl_db_exec_params(struct ctl_db *db, const char *sql, int nparams, const char *const *values,
                       const int *lengths, const int *formats, int binary_result,
                       ctl_db_result_cb cb, void *user_data)
{
    struct req *r;
    int rv;

    if (!db || !sql)
        return -EINVAL;
    if ((rv = admit(db)) != 0)
        return rv;
    if ((rv = build_req(db, REQ_PARAMS, sql, nparams, values, lengths, formats, &r)) != 0)
        return rv;
    r->binary_result = binary_result ? 1 : 0;
    r->cb = cb;
    r->user_data = user_data;
    enqueue(db, r);
    return 0;
}

int ctl_db_exec(struct ctl_db *db, const char *sql, ctl_db_result_cb cb, void *user_data)
{
    struct req *r;
    int rv;

    if (!db || !sql)
        return -EINVAL;
    if ((rv = admit(db)) != 0)
        return rv;
    if ((rv = build_req(db, REQ_SIMPLE, sql, 0, NULL, NULL, NULL, &r)) != 0)
        return rv;
    r->cb = cb;
    r->user_data = user_data;
    enqueue(db, r);
    return 0;
}

int ctl_db_copy_in(struct ctl_db *db, const char *sql, const void *data, size_t len,
                   ctl_db_result_cb cb, void *user_data)
{
    struct req *r;
    int rv;

    if (!db || !sql || (len && !data))
        return -EINVAL;
    if ((rv = admit(db)) != 0)
        return rv;
    if ((rv = build_req(db, REQ_COPY, sql, 0, NULL, NULL, NULL, &r)) != 0)
        return rv;
    r->copy_data = data;
    r->copy_len = len;
    r->cb = cb;
    r->user_data = user_data;
    enqueue(db, r);
    return 0;
}

int ctl_db_notify(struct ctl_db *db, const char *channel, const char *payload, ctl_db_result_cb cb,
                  void *user_data)
{
    const char *vals[2] = {channel, payload ? payload : ""};

    if (!channel || !channel[0] || strlen(channel) > CHANNEL_MAX)
        return -EINVAL;
    return ctl_db_exec_params(db, "SELECT pg_notify($1, $2)", 2, vals, NULL, NULL, 0, cb,
                              user_data);
}

int ctl_db_listen(struct ctl_db *db, const char *channel, ctl_db_notify_cb cb, void *user_data)
{
    struct sub *s;

    if (!db || !channel || !cb)
        return -EINVAL;
    if (!channel[0] || strlen(channel) > CHANNEL_MAX)
        return -EINVAL;
    if (!db->listener)
        return AEGIS_ERR_STATE;
    if (db->nsubs >= CTL_DB_MAX_CHANNELS)
        return AEGIS_ERR_LIMIT;
    s = &db->subs[db->nsubs];
    memcpy(s->channel, channel, strlen(channel) + 1);
    s->cb = cb;
    s->user_data = user_data;
    db->nsubs++;
    /* LISTEN twice on one channel is harmless; issue it now if the listener is idle. */
    if (db->listener->state == CS_READY)
        listen_pending(db->listener);
    return 0;
}

int ctl_db_listening(const struct ctl_db *db)
{
    return db && db->listener && is_ready_state(db->listener->state) &&
           db->listener->listen_upto == db->nsubs;
}

void ctl_db_stats(const struct ctl_db *db, struct ctl_db_stats *st)
{
    unsigned i;

    *st = db->st;
    st->queued = db->qlen;
    st->conns_ready = db->nready;
    st->in_flight = 0;
    for (i = 0; i < db->nconns; i++)
        if (db->conns[i].op == OP_REQ)
            st->in_flight++;
}

int ctl_db_is_up(const struct ctl_db *db)
{
    return db && db->up;
}

aegis_tstamp ctl_db_retry_hint(const struct ctl_db *db)
{
    aegis_tstamp soonest = AEGIS_TSTAMP_NEVER;
    unsigned i;

    if (!db || db->up)
        return CTL_DB_OVERLOAD_RETRY;
    for (i = 0; i < db->nconns; i++) {
        const struct conn *c = &db->conns[i];
        aegis_tstamp left;

        if (c->state != CS_DOWN || !ctl_timer_active(c->timer))
            continue;
        left = c->retry_at > aegis_now() ? c->retry_at - aegis_now() : 0;
        if (left < soonest)
            soonest = left;
    }
    /* Connecting right now (or no timer): the outcome is due within the connect timeout, but
     * usually much sooner; the overload value is a fair guess. */
    if (soonest == AEGIS_TSTAMP_NEVER)
        return CTL_DB_OVERLOAD_RETRY;
    return soonest + CTL_DB_OVERLOAD_RETRY;
}

/* ---- results ------------------------------------------------------------------------- */

static const PGresult *main_result(const struct ctl_db_result *res)
{
    if (!res)
        return NULL;
    return res->last ? res->last : res->err;
}

int ctl_db_result_ntuples(const struct ctl_db_result *res)
{
    const PGresult *p = main_result(res);
    return p ? PQntuples(p) : 0;
}

int ctl_db_result_nfields(const struct ctl_db_result *res)
{
    const PGresult *p = main_result(res);
    return p ? PQnfields(p) : 0;
}

static bool in_range(const PGresult *p, int row, int col)
{
    return p && row >= 0 && col >= 0 && row < PQntuples(p) && col < PQnfields(p);
}

const char *ctl_db_result_value(const struct ctl_db_result *res, int row, int col)
{
    const PGresult *p = main_result(res);
    return in_range(p, row, col) ? PQgetvalue(p, row, col) : "";
}

int ctl_db_result_length(const struct ctl_db_result *res, int row, int col)
{
    const PGresult *p = main_result(res);
    return in_range(p, row, col) ? PQgetlength(p, row, col) : 0;
}

int ctl_db_result_isnull(const struct ctl_db_result *res, int row, int col)
{
    const PGresult *p = main_result(res);
    return in_range(p, row, col) ? PQgetisnull(p, row, col) : 1;
}

uint64_t ctl_db_result_cmd_tuples(const struct ctl_db_result *res)
{
    return res ? res->cmd_tuples : 0;
}

uint64_t ctl_db_result_copy_rows(const struct ctl_db_result *res)
{
    return res ? res->copy_rows : 0;
}

const char *ctl_db_result_sqlstate(const struct ctl_db_result *res)
{
    const char *s = res && res->err ? PQresultErrorField(res->err, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *ctl_db_result_error(const struct ctl_db_result *res)
{
    const char *s = res && res->err ? PQresultErrorField(res->err, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return s ? s : "";
}
