/*
 * The server core: handshake hook and identity set, per-connection state, RPC dispatch with
 * role checks, audit rows, the instance row and its heartbeat, NOTIFY routing, drain.
 */
#include "ctl_server.h"
#include "ctl_metrics.h"
#include "ctl_schema.h"

#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/proto.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_unref(struct ctl_conn *cc)
{
    if (cc && --cc->refs == 0 && !cc->conn) {
        aegis_free(cc->srv->mem, cc);
    }
}

struct ctl_conn *ctl_conn_for_agent(struct ctl_server *srv, const char *agent_id)
{
    struct ctl_map_entry *e = ctl_map_get(&srv->agents_here, agent_id, strlen(agent_id));
    return e ? e->value : NULL;
}

static int on_handshake(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                        char *reason, size_t reasonlen, void *user_data)
{
    struct ctl_server *srv = user_data;
    enum ctl_role role = CTL_ROLE_NONE;
    const char *agent_id = "";
    if (!peer->has_cert || peer->spki_der_len == 0) {
        snprintf(reason, reasonlen, "no usable client certificate");
        srv->hs_refused_other++;
        return 1;
    }
    /* The role travels in the certificate's OU (aegis-certs / Enroll). */
    enum aegis_cert_role cert_role;
    if (aegis_cert_role_from_ou(peer->subject_ou, &cert_role) != 0)
        cert_role = AEGIS_ROLE_SELF; /* no role marker: neither agent nor operator */
    if (peer->chains_to_ca && cert_role == AEGIS_ROLE_AGENT) {
        struct ctl_map_entry *e = ctl_map_get(&srv->idents, peer->spki_sha256, 32);
        if (!e) {
            snprintf(reason, reasonlen, "unknown agent key");
            srv->hs_refused_unknown++;
            return 1;
        }
        if (e->revoked) {
            snprintf(reason, reasonlen, "revoked");
            srv->hs_refused_revoked++;
            return 1;
        }
        role = CTL_ROLE_AGENT;
        agent_id = e->agent_id;
    } else if (peer->chains_to_ca && cert_role == AEGIS_ROLE_OPERATOR) {
        role = CTL_ROLE_OPERATOR;
    } else if (peer->self_signed && !peer->chains_to_ca) {
        role = CTL_ROLE_ENROLL;
    } else {
        snprintf(reason, reasonlen, "untrusted certificate (%s)",
                 peer->verify_error[0] ? peer->verify_error : "role not accepted");
        srv->hs_refused_other++;
        return 1;
    }
    struct ctl_conn *cc = aegis_calloc(srv->mem, 1, sizeof(*cc));
    if (!cc) {
        snprintf(reason, reasonlen, "server out of memory");
        srv->hs_refused_other++;
        return 1;
    }
    cc->srv = srv;
    cc->conn = conn;
    cc->role = role;
    cc->serial = ++srv->conn_serial;
    snprintf(cc->agent_id, sizeof(cc->agent_id), "%s", agent_id);
    snprintf(cc->name, sizeof(cc->name), "%s",
             role == CTL_ROLE_AGENT ? agent_id : peer->subject_cn);
    memcpy(cc->spki_sha256, peer->spki_sha256, 32);
    memcpy(cc->spki_der, peer->spki_der, peer->spki_der_len);
    cc->spki_der_len = peer->spki_der_len;
    cc->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = cc;
    srv->conns = cc;
    aegis_conn_set_data(conn, cc);
    if (role == CTL_ROLE_AGENT)
        srv->hs_ok_agent++;
    else if (role == CTL_ROLE_OPERATOR)
        srv->hs_ok_operator++;
    else
        srv->hs_ok_enroll++;
    AEGIS_LOG(&srv->log, AEGIS_LOG_DEBUG, "event=handshake conn=%llu role=%d name=%s",
              (unsigned long long)cc->serial, (int)role, cc->name);
    return 0;
}

static void db_ignore(int rv, const struct ctl_db_result *res, void *user_data)
{
    struct ctl_server *srv = user_data;
    if (rv != 0)
        AEGIS_LOG(&srv->log, AEGIS_LOG_WARN, "event=db_write_failed err=%s detail=\"%s\"",
                  aegis_strerror(rv), res ? ctl_db_result_error(res) : "");
}

static void on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why,
                      void *user_data)
{
    struct ctl_server *srv = user_data;
    struct ctl_conn *cc = aegis_conn_get_data(conn);
    (void)why;
    if (!cc)
        return;
    if (cc->authenticated && cc->agent_id[0]) {
        struct ctl_map_entry *e =
            ctl_map_get(&srv->agents_here, cc->agent_id, strlen(cc->agent_id));
        if (e && e->value == cc) {
            ctl_map_del(&srv->agents_here, cc->agent_id, strlen(cc->agent_id));
            const char *v[2] = {cc->agent_id, srv->cfg.instance_id};
            if (ctl_batch_add(srv->batch.disconnect, v, NULL, NULL) != 0)
                AEGIS_LOG(&srv->log, AEGIS_LOG_WARN, "event=disconnect_not_recorded agent=%s",
                          cc->agent_id);
        }
    }
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        srv->conns = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    cc->conn = NULL;
    cc->sub = NULL;
    if (cc->refs == 0)
        aegis_free(srv->mem, cc);
}

/* ---- audit -------------------------------------------------------------------------------- */

void ctl_audit(struct ctl_server *srv, const char *actor, const char *action, const char *target,
               const char *outcome, const char *detail)
{
    const char *v[6] = {
        actor, action, target ? target : "", outcome, detail ? detail : "", srv->cfg.instance_id};
    /* Batched per loop turn: a connect storm writes thousands of these a second. */
    int rv = srv->batch.audit ? ctl_batch_add(srv->batch.audit, v, NULL, NULL) : AEGIS_ERR_STATE;
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO,
              "event=audit actor=%s action=%s target=%s outcome=%s detail=\"%s\"%s", actor, action,
              target ? target : "", outcome, detail ? detail : "", rv != 0 ? " stored=no" : "");
}

/* ---- RPC plumbing ------------------------------------------------------------------------- */

static void rpc_maybe_free(struct ctl_rpc *r)
{
    if (r->call || r->pending)
        return;
    struct ctl_server *srv = r->srv;
    if (r->prev)
        r->prev->next = r->next;
    else
        srv->rpcs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->watching) {
        if (r->wprev)
            r->wprev->wnext = r->wnext;
        else
            srv->watchers = r->wnext;
        if (r->wnext)
            r->wnext->wprev = r->wprev;
    }
    if (r->h->free_state)
        r->h->free_state(r);
    ctl_cmd_job_free(r);
    aegis_proto_free(r->req, srv->mem);
    conn_unref(r->cc);
    aegis_free(srv->mem, r);
}

void ctl_rpc_list_stream(struct ctl_rpc *r)
{
    r->stream = 1;
}

void ctl_rpc_add_watcher(struct ctl_rpc *r)
{
    r->stream = 1;
    if (r->watching)
        return;
    r->watching = 1;
    r->wprev = NULL;
    r->wnext = r->srv->watchers;
    if (r->wnext)
        r->wnext->wprev = r;
    r->srv->watchers = r;
}

void ctl_rpc_finish(struct ctl_rpc *r, int status, const char *msg)
{
    if (!r->call || r->finished)
        return;
    r->finished = 1;
    aegis_call_finish(r->call, status, msg ? msg : "", NULL, 0);
}

void ctl_rpc_fail(struct ctl_rpc *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctl_rpc_finish(r, status, msg);
}

void ctl_rpc_fail_db(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    if (!r->call || r->finished)
        return;
    if (rv == AEGIS_ERR_UNAVAILABLE || rv == AEGIS_ERR_LIMIT || rv == AEGIS_ERR_CLOSED ||
        rv == -ECANCELED) {
        char ms[32];
        snprintf(ms, sizeof(ms), "%llu",
                 (unsigned long long)(ctl_db_retry_hint(r->srv->db) / AEGIS_NS_PER_MS));
        struct aegis_metadata md = {"aegis-retry-after-ms", (const uint8_t *)ms, strlen(ms)};
        r->finished = 1;
        aegis_call_finish(r->call, AEGIS_GRPC_UNAVAILABLE,
                          rv == AEGIS_ERR_LIMIT ? "server overloaded, retry later"
                                                : "database unavailable, retry later",
                          &md, 1);
        return;
    }
    AEGIS_LOG(&r->srv->log, AEGIS_LOG_ERROR,
              "event=db_error method=%s err=%s sqlstate=%s "
              "detail=\"%s\"",
              r->h->path, aegis_strerror(rv), res ? ctl_db_result_sqlstate(res) : "",
              res ? ctl_db_result_error(res) : "");
    ctl_rpc_finish(r, AEGIS_GRPC_INTERNAL, "database error");
}

struct tramp {
    struct ctl_rpc *r;
    ctl_rpc_db_cb cb;
};

static void rpc_db_tramp(int rv, const struct ctl_db_result *res, void *ud)
{
    struct tramp *t = ud;
    struct ctl_rpc *r = t->r;
    ctl_rpc_db_cb cb = t->cb;
    aegis_free(r->srv->mem, t);
    r->pending--;
    if (r->call && !r->finished)
        cb(r, rv, res);
    rpc_maybe_free(r);
}

static int rpc_db(struct ctl_rpc *r, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *formats, ctl_rpc_db_cb cb, int soft)
{
    struct tramp *t = aegis_malloc(r->srv->mem, sizeof(*t));
    if (!t) {
        if (!soft)
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return -ENOMEM;
    }
    t->r = r;
    t->cb = cb;
    int rv =
        ctl_db_exec_params(r->srv->db, sql, nparams, values, lengths, formats, 0, rpc_db_tramp, t);
    if (rv != 0) {
        aegis_free(r->srv->mem, t);
        if (!soft)
            ctl_rpc_fail_db(r, rv, NULL);
        return rv;
    }
    r->pending++;
    return 0;
}

int ctl_rpc_db(struct ctl_rpc *r, const char *sql, int nparams, const char *const *values,
               const int *lengths, const int *formats, ctl_rpc_db_cb cb)
{
    return rpc_db(r, sql, nparams, values, lengths, formats, cb, 0);
}

int ctl_rpc_db_soft(struct ctl_rpc *r, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *formats, ctl_rpc_db_cb cb)
{
    return rpc_db(r, sql, nparams, values, lengths, formats, cb, 1);
}

void ctl_rpc_hold(struct ctl_rpc *r)
{
    r->pending++;
}

void ctl_rpc_unhold(struct ctl_rpc *r)
{
    r->pending--;
    rpc_maybe_free(r);
}

struct btramp {
    struct ctl_rpc *r;
    ctl_rpc_batch_cb cb;
};

static void rpc_batch_tramp(int rv, const struct ctl_db_result *res, int row, int nrows, void *ud)
{
    struct btramp *t = ud;
    struct ctl_rpc *r = t->r;
    ctl_rpc_batch_cb cb = t->cb;
    aegis_free(r->srv->mem, t);
    r->pending--;
    if (r->call && !r->finished)
        cb(r, rv, res, row, nrows);
    rpc_maybe_free(r);
}

int ctl_rpc_batch(struct ctl_rpc *r, struct ctl_batch *b, const char *const *values,
                  ctl_rpc_batch_cb cb, int soft)
{
    struct btramp *t = aegis_malloc(r->srv->mem, sizeof(*t));
    if (!t) {
        if (!soft)
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return -ENOMEM;
    }
    t->r = r;
    t->cb = cb;
    int rv = ctl_batch_add(b, values, rpc_batch_tramp, t);
    if (rv != 0) {
        aegis_free(r->srv->mem, t);
        if (!soft) {
            if (rv == -E2BIG)
                ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "request field too large");
            else
                ctl_rpc_fail_db(r, rv == -ENOMEM ? AEGIS_ERR_LIMIT : rv, NULL);
        }
        return rv;
    }
    r->pending++;
    return 0;
}

int ctl_rpc_copy(struct ctl_rpc *r, const char *sql, const void *data, size_t len, ctl_rpc_db_cb cb)
{
    struct tramp *t = aegis_malloc(r->srv->mem, sizeof(*t));
    if (!t) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return -ENOMEM;
    }
    t->r = r;
    t->cb = cb;
    int rv = ctl_db_copy_in(r->srv->db, sql, data, len, rpc_db_tramp, t);
    if (rv != 0) {
        aegis_free(r->srv->mem, t);
        ctl_rpc_fail_db(r, rv, NULL);
        return rv;
    }
    r->pending++;
    return 0;
}

int ctl_rpc_send(struct ctl_rpc *r, const ProtobufCMessage *msg)
{
    if (!r->call || r->finished)
        return AEGIS_ERR_STATE;
    uint8_t *buf;
    size_t len;
    int rv = aegis_proto_pack(msg, r->srv->mem, &buf, &len);
    if (rv != 0)
        return rv;
    rv = aegis_call_send(r->call, buf, len);
    aegis_free(r->srv->mem, buf);
    return rv;
}

void ctl_rpc_reply(struct ctl_rpc *r, const ProtobufCMessage *msg)
{
    int rv = ctl_rpc_send(r, msg);
    if (rv != 0 && rv != AEGIS_ERR_STATE) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot send the response: %s", aegis_strerror(rv));
        return;
    }
    ctl_rpc_finish(r, AEGIS_GRPC_OK, "");
}

static int rpc_on_message(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct ctl_rpc *r = ud;
    (void)call;
    if (r->finished)
        return 0;
    if (r->h->on_msg)
        return r->h->on_msg(r, msg, len) == AEGIS_CALL_PAUSE ? AEGIS_CALL_PAUSE : 0;
    if (r->got_msg) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "expected exactly one request message");
        return 0;
    }
    r->got_msg = 1;
    int rv =
        aegis_proto_unpack(r->h->input, msg, len, r->srv->cfg.max_message, r->srv->mem, &r->req);
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "cannot decode %s: %s", r->h->input->name,
                     aegis_strerror(rv));
        return 0;
    }
    r->h->start(r);
    return 0;
}

/*
 * Half-close and writable events are handled on the next loop turn, not inside the transport
 * callback: they can arrive from the transport's post-write processing, where output the
 * handler queues at once (a reply, a chunk) would wait for the connection's next event (up to
 * a keep-alive interval). Deferring also keeps handlers out of transport callbacks, which
 * only enqueue (STYLE "Callbacks and the loop").
 */
static void defer(struct ctl_rpc *r)
{
    struct ctl_server *srv = r->srv;
    if (r->deferred)
        return;
    r->deferred = 1;
    r->pending++; /* keeps r alive until the deferred work ran */
    r->defer_next = srv->defer_head;
    srv->defer_head = r;
    if (!ctl_timer_active(srv->defer_timer))
        ctl_timer_start(srv->defer_timer, 0);
}

static void run_half_close(struct ctl_rpc *r)
{
    if (r->finished)
        return;
    if (r->h->on_half_close) {
        r->h->on_half_close(r);
        return;
    }
    if (!r->got_msg)
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "request message missing");
}

static void defer_cb(struct ctl_timer *t, void *ud)
{
    struct ctl_server *srv = ud;
    (void)t;
    struct ctl_rpc *list = srv->defer_head;
    srv->defer_head = NULL;
    while (list) {
        struct ctl_rpc *r = list;
        list = r->defer_next;
        r->deferred = 0;
        int half = r->defer_half, wr = r->defer_writable;
        r->defer_half = r->defer_writable = 0;
        r->pending--;
        if (r->call && wr && r->h->on_writable && !r->finished)
            r->h->on_writable(r);
        if (r->call && half)
            run_half_close(r);
        rpc_maybe_free(r);
    }
}

static void rpc_on_half_close(struct aegis_call *call, void *ud)
{
    struct ctl_rpc *r = ud;
    (void)call;
    r->defer_half = 1;
    defer(r);
}

static void rpc_on_writable(struct aegis_call *call, void *ud)
{
    struct ctl_rpc *r = ud;
    (void)call;
    r->defer_writable = 1;
    defer(r);
}

static void rpc_on_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    struct ctl_rpc *r = ud;
    (void)call;
    unsigned code = st->code >= 0 && st->code <= AEGIS_GRPC_STATUS_MAX ? (unsigned)st->code : 2;
    r->srv->rpc_counts[r->h->index * (AEGIS_GRPC_STATUS_MAX + 1) + code]++;
    AEGIS_LOG(&r->srv->log, AEGIS_LOG_DEBUG, "event=rpc method=%s peer=%s status=%d msg=\"%s\"",
              r->h->path, r->cc ? r->cc->name : "", st->code, st->message);
    if (r->h->on_closed)
        r->h->on_closed(r);
    r->call = NULL;
    rpc_maybe_free(r);
}

static const struct aegis_call_callbacks rpc_cbs = {
    .on_message = rpc_on_message,
    .on_half_close = rpc_on_half_close,
    .on_writable = rpc_on_writable,
    .on_close = rpc_on_close,
};

static const char *role_name(enum ctl_role r)
{
    switch (r) {
    case CTL_ROLE_ENROLL:
        return "enrollee";
    case CTL_ROLE_AGENT:
        return "agent";
    case CTL_ROLE_OPERATOR:
        return "operator";
    default:
        return "none";
    }
}

static int rpc_on_call(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                       void *user_data)
{
    const struct ctl_handler *h = user_data;
    struct ctl_conn *cc = aegis_conn_get_data(aegis_call_conn(call));
    (void)md;
    (void)n;
    struct ctl_server *srv = cc ? cc->srv : NULL;
    if (!srv)
        return 1;
    struct ctl_rpc *r = aegis_calloc(srv->mem, 1, sizeof(*r));
    if (!r)
        return 1;
    r->srv = srv;
    r->cc = cc;
    cc->refs++;
    r->call = call;
    r->h = h;
    r->started = ctl_loop_now(srv->loop);
    r->next = srv->rpcs;
    if (r->next)
        r->next->prev = r;
    srv->rpcs = r;
    aegis_call_set_callbacks(call, &rpc_cbs, r);
    aegis_call_set_data(call, r);
    if (srv->draining) {
        ctl_rpc_fail(r, AEGIS_GRPC_UNAVAILABLE, "server shutting down");
        return 0;
    }
    if (!(h->roles & cc->role)) {
        char detail[160];
        snprintf(detail, sizeof(detail), "%s may not call %s", role_name(cc->role), h->path);
        if (cc->role == CTL_ROLE_ENROLL) {
            ctl_audit(srv, cc->name, "rpc_denied", h->path, "denied", detail);
            ctl_rpc_fail(r, AEGIS_GRPC_UNAUTHENTICATED,
                         "a self-signed certificate may only call Enroll");
        } else {
            ctl_audit(srv, cc->name, "rpc_denied", h->path, "denied", detail);
            ctl_rpc_fail(r, AEGIS_GRPC_PERMISSION_DENIED, "%s", detail);
        }
        return 0;
    }
    if (h->needs_auth && cc->role == CTL_ROLE_AGENT && !cc->authenticated) {
        ctl_rpc_fail(r, AEGIS_GRPC_UNAUTHENTICATED, "call Authenticate first on this connection");
        return 0;
    }
    return 0;
}

/* ---- identities and NOTIFY ---------------------------------------------------------------- */

static void close_agent_conns(struct ctl_server *srv, const uint8_t spki[32], const char *why)
{
    for (struct ctl_conn *cc = srv->conns; cc; cc = cc->next) {
        if (cc->role == CTL_ROLE_AGENT && memcmp(cc->spki_sha256, spki, 32) == 0 && cc->conn) {
            AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=close_conn agent=%s reason=%s",
                      cc->agent_id, why);
            aegis_conn_close(cc->conn, AEGIS_CLOSE_CODE_REFUSED, why);
        }
    }
}

static void ident_set(struct ctl_server *srv, const char *id, const char *spki_hex, int revoked,
                      int deleted)
{
    uint8_t spki[32];
    if (ctl_unhex(spki_hex, spki, 32) != 0)
        return;
    if (deleted) {
        ctl_map_del(&srv->idents, spki, 32);
        close_agent_conns(srv, spki, "revoked");
        return;
    }
    struct ctl_map_entry *e;
    if (ctl_map_put(&srv->idents, spki, 32, &e) != 0) {
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=ident_oom agent=%s", id);
        return;
    }
    snprintf(e->agent_id, sizeof(e->agent_id), "%s", id);
    e->revoked = revoked;
    if (revoked)
        close_agent_conns(srv, spki, "revoked");
}

static void on_agents_notify(const char *channel, const char *payload, void *user_data)
{
    struct ctl_server *srv = user_data;
    char id[64], op[16], status[16], spki[80];
    (void)channel;
    if (ctl_json_str(payload, "id", id, sizeof(id)) != 0 ||
        ctl_json_str(payload, "spki_sha256", spki, sizeof(spki)) != 0 ||
        ctl_json_str(payload, "op", op, sizeof(op)) != 0)
        return;
    if (ctl_json_str(payload, "status", status, sizeof(status)) != 0)
        status[0] = '\0';
    ident_set(srv, id, spki, strcmp(status, "revoked") == 0, strcmp(op, "delete") == 0);
}

static void on_commands_notify(const char *channel, const char *payload, void *user_data)
{
    (void)channel;
    ctl_sub_pump(user_data, payload);
}

static void idents_loaded(int rv, const struct ctl_db_result *res, void *user_data)
{
    struct ctl_server *srv = user_data;
    if (rv != 0) {
        AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=ident_load_failed err=%s detail=\"%s\"",
                  aegis_strerror(rv), res ? ctl_db_result_error(res) : "");
        srv->idents_loaded = -1;
        return;
    }
    int n = ctl_db_result_ntuples(res);
    for (int i = 0; i < n; i++)
        ident_set(srv, ctl_db_result_value(res, i, 0), ctl_db_result_value(res, i, 1),
                  strcmp(ctl_db_result_value(res, i, 2), "revoked") == 0, 0);
    srv->idents_loaded = 1;
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=identities_loaded agents=%d", n);
}

static int load_identities(struct ctl_server *srv)
{
    return ctl_db_exec(srv->db, "SELECT id::text, encode(spki_sha256, 'hex'), status FROM agents",
                       idents_loaded, srv);
}

static void on_db_event(struct ctl_db *db, enum ctl_db_event ev, void *user_data)
{
    struct ctl_server *srv = user_data;
    (void)db;
    AEGIS_LOG(&srv->log, ev == CTL_DB_EVENT_DOWN ? AEGIS_LOG_WARN : AEGIS_LOG_INFO, "event=db_%s",
              ev == CTL_DB_EVENT_UP     ? "up"
              : ev == CTL_DB_EVENT_DOWN ? "down"
                                        : "listen_restored");
    /* Notifications may have been missed while the listener was away: reload the identity
     * set (revocations) and re-pump every local subscription (commands). */
    if (ev == CTL_DB_EVENT_LISTEN_RESTORED && srv->idents_loaded)
        load_identities(srv);
    /* After either event, streams whose pump could not reach the database retry. */
    if ((ev == CTL_DB_EVENT_UP || ev == CTL_DB_EVENT_LISTEN_RESTORED) && srv->idents_loaded)
        for (struct ctl_conn *cc = srv->conns; cc; cc = cc->next)
            if (cc->sub)
                ctl_sub_pump(srv, cc->agent_id);
    if (ev == CTL_DB_EVENT_UP && srv->idents_loaded) {
        /* Our instance row may be gone if the database was restored; re-assert it. */
        const char *v[2] = {srv->cfg.instance_id, ""};
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        v[1] = host;
        ctl_db_exec_params(srv->db,
                           "INSERT INTO control_instances (id, hostname) VALUES ($1, $2)"
                           " ON CONFLICT (id) DO UPDATE SET heartbeat = now()",
                           2, v, NULL, NULL, 0, db_ignore, srv);
    }
}

/* ---- timers --------------------------------------------------------------------------------- */

static void heartbeat_cb(struct ctl_timer *t, void *ud)
{
    struct ctl_server *srv = ud;
    const char *v[1] = {srv->cfg.instance_id};
    if (ctl_db_is_up(srv->db))
        ctl_db_exec_params(srv->db, "UPDATE control_instances SET heartbeat = now() WHERE id = $1",
                           1, v, NULL, NULL, 0, db_ignore, srv);
    ctl_timer_start(t, srv->cfg.heartbeat);
}

static void sweep_cb(struct ctl_timer *t, void *ud)
{
    struct ctl_server *srv = ud;
    if (ctl_db_is_up(srv->db) && !srv->draining)
        ctl_sweep(srv);
    ctl_metrics_tick(srv);
    ctl_timer_start(t, srv->cfg.sweep_interval);
}

/* ---- start / drain / stop --------------------------------------------------------------- */

/* Fire-and-forget writes of the server core, batched (ctl_batch.h). Two in flight: their rows
 * are independent, and audit rows are never waited for. */
static int server_batches_new(struct ctl_server *srv)
{
    struct ctl_batch_config audit = {
        .name = "audit",
        .sql =
            "INSERT INTO audit_log (actor, action, target, outcome, detail, instance_id)"
            " SELECT a, b, t, o, jsonb_build_object('detail', d), i FROM unnest($1::text[],"
            " $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[]) AS s(a, b, t, o, d, i)",
        .ncols = 6,
        .max_in_flight = 2,
    };
    /* Rows of agents are locked in id order by every statement that updates many of them
     * (here, Authenticate, Ack, SendCommand), so concurrent ones queue instead of
     * deadlocking. */
    struct ctl_batch_config disconnect = {
        .name = "disconnect",
        .sql = "WITH s AS (SELECT DISTINCT a, i FROM unnest($1::uuid[], $2::uuid[]) AS s(a, i)),"
               " lk AS (SELECT g.id FROM agents g JOIN s ON g.id = s.a AND"
               "   g.connected_instance = s.i ORDER BY g.id FOR NO KEY UPDATE OF g)"
               " UPDATE agents g SET connected_instance = NULL, last_seen = now() FROM lk"
               " WHERE g.id = lk.id",
        .ncols = 2,
    };
    audit.max_items = disconnect.max_items = srv->cfg.db_batch_items;
    audit.queue_max = disconnect.queue_max = srv->cfg.db_batch_queue;
    int rv = ctl_batch_new(srv->db, srv->loop, &audit, srv->mem, &srv->batch.audit);
    if (rv == 0)
        rv = ctl_batch_new(srv->db, srv->loop, &disconnect, srv->mem, &srv->batch.disconnect);
    return rv;
}

static void server_batches_del(struct ctl_server *srv)
{
    struct ctl_batch **all[] = {&srv->batch.audit,     &srv->batch.disconnect,
                                &srv->batch.auth_load, &srv->batch.auth_update,
                                &srv->batch.pump,      &srv->batch.ack};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        ctl_batch_del(*all[i]);
        *all[i] = NULL;
    }
}

static int done_flag(void *ud)
{
    return *(int *)ud != 0;
}

static void instance_done(int rv, const struct ctl_db_result *res, void *ud)
{
    int *flag = ud;
    (void)res;
    *flag = rv == 0 ? 1 : -1;
}

int ctl_server_start(struct ctl_server *srv)
{
    int rv;
    srv->idents.mem = srv->mem;
    srv->agents_here.mem = srv->mem;

    /* Handlers: every method of both services, from the method table. */
    size_t na, no;
    const struct ctl_handler *ha = ctl_svc_agent_handlers(&na);
    const struct ctl_handler *ho = ctl_svc_oper_handlers(&no);
    srv->nhandlers = na + no;
    srv->handlers = aegis_calloc(srv->mem, srv->nhandlers, sizeof(*srv->handlers));
    srv->rpc_counts =
        aegis_calloc(srv->mem, srv->nhandlers * (AEGIS_GRPC_STATUS_MAX + 1), sizeof(uint64_t));
    struct aegis_rpc_handler *th = aegis_calloc(srv->mem, srv->nhandlers, sizeof(*th));
    if (!srv->handlers || !srv->rpc_counts || !th) {
        aegis_free(srv->mem, th);
        return -ENOMEM;
    }
    for (size_t i = 0; i < srv->nhandlers; i++) {
        struct ctl_handler *h = &srv->handlers[i];
        *h = i < na ? ha[i] : ho[i - na];
        const struct aegis_method *m = aegis_method_find(h->path, strlen(h->path));
        if (!m) {
            AEGIS_LOG(&srv->log, AEGIS_LOG_ERROR, "event=no_method path=%s", h->path);
            aegis_free(srv->mem, th);
            return AEGIS_ERR_INTERNAL;
        }
        h->input = m->input;
        h->shape = m->shape;
        h->index = (unsigned)i;
        th[i].path = h->path;
        th[i].shape = m->shape;
        th[i].on_call = rpc_on_call;
        th[i].user_data = h;
    }

    /* Database pool with a listener for the identity/command channels. */
    struct ctl_db_config dbc = {
        .conninfo = srv->cfg.dsn,
        .nconns = srv->cfg.db_conns,
        .queue_max = srv->cfg.db_queue_max,
        .listener = 1,
        .on_event = on_db_event,
        .user_data = srv,
        .log = &srv->log,
    };
    if ((rv = ctl_db_new(srv->loop, &dbc, srv->mem, &srv->db)) != 0) {
        aegis_free(srv->mem, th);
        return rv;
    }
    ctl_db_listen(srv->db, CTL_CHANNEL_AGENTS, on_agents_notify, srv);
    ctl_db_listen(srv->db, CTL_CHANNEL_COMMANDS, on_commands_notify, srv);
    if ((rv = server_batches_new(srv)) != 0 || (rv = ctl_agent_batches_new(srv)) != 0 ||
        (rv = ctl_artcache_new(srv->mem, srv->cfg.artifact_cache_bytes, &srv->artcache)) != 0) {
        aegis_free(srv->mem, th);
        return rv;
    }

    /* Register the instance and load the identity set before accepting anyone: a handshake
     * must never be decided on an empty set. Blocking the loop here is fine: nothing else is
     * running yet. */
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    const char *v[2] = {srv->cfg.instance_id, host};
    int inst = 0;
    if ((rv = ctl_db_exec_params(srv->db,
                                 "INSERT INTO control_instances (id, hostname) VALUES ($1, $2)"
                                 " ON CONFLICT (id) DO UPDATE SET started_at = now(),"
                                 " heartbeat = now()",
                                 2, v, NULL, NULL, 0, instance_done, &inst)) != 0 ||
        (rv = load_identities(srv)) != 0) {
        aegis_free(srv->mem, th);
        return rv;
    }
    rv = ctl_loop_run_until(srv->loop, done_flag, &srv->idents_loaded, 60 * AEGIS_NS_PER_S);
    if (rv != 0 || srv->idents_loaded < 0 || inst < 0) {
        aegis_free(srv->mem, th);
        return rv != 0 ? rv : AEGIS_ERR_DATABASE;
    }
    ctl_loop_run_until(srv->loop, done_flag, &inst, 10 * AEGIS_NS_PER_S);
    /* Agents this instance held before a crash are not connected any more. Their rows are
     * locked in id order, like every statement that updates many agents, so this does not
     * deadlock with the Authenticates and commands of the agents coming back. */
    ctl_db_exec_params(srv->db,
                       "WITH lk AS (SELECT id FROM agents WHERE connected_instance = $1"
                       " ORDER BY id FOR NO KEY UPDATE)"
                       " UPDATE agents g SET connected_instance = NULL FROM lk WHERE g.id = lk.id",
                       1, v, NULL, NULL, 0, db_ignore, srv);

    struct aegis_endpoint_config ec = {
        .is_server = 1,
        .mem = srv->mem,
        .log = &srv->log,
        .tls =
            {
                .cert_pem = srv->server_pem,
                .cert_len = srv->server_len,
                .ca_pem = srv->ca_pem,
                .ca_len = srv->ca_len,
                .accept_any_client_cert = 1,
            },
        .max_message = srv->cfg.max_message,
        .max_handshakes = srv->cfg.max_handshakes,
        .max_conns = srv->cfg.max_conns,
        .handlers = th,
        .nhandlers = srv->nhandlers,
        /* After a crash, the restarted server resets the old connections so
         * agents reconnect at once, not after their idle timeout. */
        .static_secret = srv->quic_secret,
        .static_secret_len = sizeof(srv->quic_secret),
        .callbacks = {.on_handshake = on_handshake, .on_closed = on_closed},
        .user_data = srv,
    };
    char *key_pem = NULL;
    size_t key_len = 0;
    if ((rv = aegis_key_to_pem(srv->server_key, &key_pem, &key_len)) != 0) {
        aegis_free(srv->mem, th);
        return rv;
    }
    ec.tls.key_pem = key_pem;
    ec.tls.key_len = key_len;
    rv = aegis_ev_new(srv->ev_loop, &ec, srv->cfg.listen, &srv->tev);
    memset(key_pem, 0, key_len);
    aegis_free(NULL, key_pem);
    aegis_free(srv->mem, th);
    if (rv != 0)
        return rv;

    if ((rv = ctl_timer_new(srv->loop, defer_cb, srv, &srv->defer_timer)) != 0 ||
        (rv = ctl_timer_new(srv->loop, sweep_cb, srv, &srv->sweep_timer)) != 0 ||
        (rv = ctl_timer_new(srv->loop, heartbeat_cb, srv, &srv->heartbeat_timer)) != 0)
        return rv;
    ctl_timer_start(srv->sweep_timer, srv->cfg.sweep_interval);
    ctl_timer_start(srv->heartbeat_timer, srv->cfg.heartbeat);
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=listening addr=%s port=%u instance=%s",
              srv->cfg.listen, aegis_ev_port(srv->tev), srv->cfg.instance_id);
    return 0;
}

void ctl_server_drain(struct ctl_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = 1;
    srv->drain_deadline = ctl_loop_now(srv->loop) + srv->cfg.drain_timeout;
    AEGIS_LOG(&srv->log, AEGIS_LOG_INFO, "event=drain conns=%zu calls=%zu",
              aegis_endpoint_conn_count(aegis_ev_endpoint(srv->tev)),
              aegis_endpoint_call_count(aegis_ev_endpoint(srv->tev)));
    /* Long-lived streams never end on their own: end them with UNAVAILABLE and a retry hint
     * so agents reconnect (to another instance) after it. */
    for (struct ctl_rpc *r = srv->rpcs; r; r = r->next) {
        if (r->stream && r->call && !r->finished) {
            struct aegis_metadata md = {"aegis-retry-after-ms", (const uint8_t *)"1000", 4};
            r->finished = 1;
            aegis_call_finish(r->call, AEGIS_GRPC_UNAVAILABLE, "server shutting down", &md, 1);
        }
    }
    aegis_endpoint_shutdown(aegis_ev_endpoint(srv->tev), aegis_now());
    ctl_timer_stop(srv->sweep_timer);
}

int ctl_server_drained(const struct ctl_server *srv)
{
    const struct aegis_endpoint *ep = aegis_ev_endpoint(srv->tev);
    struct ctl_db_stats st;
    ctl_db_stats(srv->db, &st);
    int calls_done = aegis_endpoint_call_count(ep) == 0 && aegis_endpoint_conn_count(ep) == 0;
    int timed_out = ctl_loop_now(srv->loop) >= srv->drain_deadline;
    /* Writes flushed: nothing queued or in flight in the pool (or the pool is down and those
     * requests have failed already). */
    int db_done = st.queued == 0 && st.in_flight == 0;
    const struct ctl_batch *const all[] = {srv->batch.audit,     srv->batch.disconnect,
                                           srv->batch.auth_load, srv->batch.auth_update,
                                           srv->batch.pump,      srv->batch.ack};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        struct ctl_batch_stats bs;
        if (!all[i])
            continue;
        ctl_batch_stats(all[i], &bs);
        /* Items still collecting count only while the pool can take them. */
        if (bs.in_flight || (bs.waiting && ctl_db_is_up(srv->db)))
            db_done = 0;
    }
    return (calls_done || timed_out) && db_done;
}

static void instance_gone(int rv, const struct ctl_db_result *res, void *ud)
{
    int *flag = ud;
    (void)rv;
    (void)res;
    *flag = 1;
}

void ctl_server_stop(struct ctl_server *srv)
{
    if (srv->db && ctl_db_is_up(srv->db)) {
        /* Deleting the row sets agents.connected_instance to NULL (ON DELETE SET NULL). */
        int flag = 0;
        const char *v[1] = {srv->cfg.instance_id};
        if (ctl_db_exec_params(srv->db, "DELETE FROM control_instances WHERE id = $1", 1, v, NULL,
                               NULL, 0, instance_gone, &flag) == 0)
            ctl_loop_run_until(srv->loop, done_flag, &flag, 5 * AEGIS_NS_PER_S);
    }
    /* Deferred work of calls that are gone: only release the references. */
    while (srv->defer_head) {
        struct ctl_rpc *r = srv->defer_head;
        srv->defer_head = r->defer_next;
        r->deferred = 0;
        r->pending--;
    }
    ctl_timer_del(srv->defer_timer);
    srv->defer_timer = NULL;
    ctl_timer_del(srv->sweep_timer);
    ctl_timer_del(srv->heartbeat_timer);
    srv->sweep_timer = srv->heartbeat_timer = NULL;
    aegis_ev_del(srv->tev); /* no callbacks: free what the callbacks would have */
    srv->tev = NULL;
    for (struct ctl_rpc *r = srv->rpcs; r; r = r->next)
        r->call = NULL;
    while (srv->conns) {
        struct ctl_conn *cc = srv->conns;
        srv->conns = cc->next;
        cc->conn = NULL;
        cc->sub = NULL;
        if (cc->refs == 0)
            aegis_free(srv->mem, cc);
    }
    for (struct ctl_rpc *r = srv->rpcs, *next; r; r = next) {
        next = r->next;
        rpc_maybe_free(r); /* those with database requests go when ctl_db_del cancels them */
    }
    server_batches_del(srv);
    ctl_db_del(srv->db); /* chunk reads in flight end here (their waiters are released) */
    srv->db = NULL;
    ctl_artcache_del(srv->artcache);
    srv->artcache = NULL;
    ctl_map_free(&srv->idents);
    ctl_map_free(&srv->agents_here);
    aegis_free(srv->mem, srv->handlers);
    aegis_free(srv->mem, srv->rpc_counts);
    srv->handlers = NULL;
    srv->rpc_counts = NULL;
}
