/*
 * `aegis-agent run`: the one outbound QUIC connection (DESIGN §2, §5).
 *
 * Life of a connection: connect -> handshake (server pinned by SPKI) ->
 * Authenticate (bidi: hello, challenge, proof, result) -> Subscribe (server
 * stream of SignedCommands) while pending acks and telemetry are pumped on
 * other calls. Any failure closes the connection; a timer with exponential
 * backoff and full jitter (agent_backoff), floored by the server's
 * retry-after hint, starts the next attempt. Address changes are the
 * transport's business (QUIC migration); nothing here re-authenticates.
 *
 * Idle cost: the transport's keep-alive timer and the collector timers are
 * the only wake-ups; nothing polls.
 */
#include "agent_cmd.h"
#include "agent_daemon.h"
#include "agent_facts.h"
#include "agent_msg.h"
#include "agent_version.h"

#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PATH_AUTH "/aegis.v1.AgentService/Authenticate"
#define PATH_SUBSCRIBE "/aegis.v1.AgentService/Subscribe"
#define PATH_ACK "/aegis.v1.AgentService/Ack"
/* How long a graceful stop waits for CONNECTION_CLOSE to leave. */
#define STOP_DRAIN_S 1.0

static double ns_to_s(aegis_tstamp ns)
{
    return (double)ns / 1e9;
}

void agent_log_sink(enum aegis_log_level level, const char *line, void *user_data)
{
    (void)user_data;
    aegis_log_stderr_write(level, line, NULL);
}

void agent_sd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
        return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace (sd_notify(3)) */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    (void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa, sl);
    close(fd);
}

/* The server's "aegis-retry-after-ms" trailer (FLEET_CONTRACT), in ns. */
static aegis_tstamp retry_after(const struct aegis_call_status *st)
{
    for (size_t i = 0; i < st->ntrailers; i++) {
        if (strcmp(st->trailers[i].key, "aegis-retry-after-ms") != 0)
            continue;
        char buf[24];
        size_t n = st->trailers[i].value_len < sizeof(buf) - 1 ? st->trailers[i].value_len
                                                               : sizeof(buf) - 1;
        memcpy(buf, st->trailers[i].value, n);
        buf[n] = '\0';
        char *end = NULL;
        unsigned long long ms = strtoull(buf, &end, 10);
        if (end != buf && *end == '\0')
            return (aegis_tstamp)ms * AEGIS_NS_PER_MS;
    }
    return 0;
}

static void connect_now(struct agent *a);

static void schedule_reconnect(struct agent *a)
{
    if (a->stopping)
        return;
    aegis_tstamp d = agent_backoff_next(&a->backoff, a->retry_hint);
    a->retry_hint = 0;
    a->state = AGENT_CONN_BACKOFF;
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=reconnect_scheduled delay_ms=%llu error=\"%s\"",
              (unsigned long long)(d / AEGIS_NS_PER_MS), a->last_error);
    ev_timer_stop(a->loop, &a->reconnect_timer);
    ev_timer_set(&a->reconnect_timer, ns_to_s(d), 0);
    ev_timer_start(a->loop, &a->reconnect_timer);
    agent_status_write(a);
}

void agent_conn_drop(struct agent *a, const char *why)
{
    snprintf(a->last_error, sizeof(a->last_error), "%s", why);
    if (a->conn)
        aegis_conn_close(a->conn, 0, why); /* on_closed schedules the reconnect */
}

/* ---- Ack pump ---- */

static int ack_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct agent *a = ud;
    Aegis__V1__AckResponse *r = NULL;
    if (agent_msg_unpack(&aegis__v1__ack_response__descriptor, msg, len, NULL, (void **)&r) == 0) {
        AEGIS_LOG(&a->log, AEGIS_LOG_DEBUG, "event=ack_committed command=%s state=%u recorded=%d",
                  a->ack_inflight_id, a->ack_inflight_state, (int)r->recorded_state);
        agent_msg_free(r, NULL);
    }
    return 0;
}

static void ack_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct agent *a = ud;
    a->ack_call = NULL;
    if (st->code == AEGIS_GRPC_OK) {
        /* committed */
    } else if (st->code == AEGIS_GRPC_INVALID_ARGUMENT || st->code == AEGIS_GRPC_NOT_FOUND ||
               st->code == AEGIS_GRPC_FAILED_PRECONDITION ||
               st->code == AEGIS_GRPC_PERMISSION_DENIED) {
        /* The server will never take this ack: keeping it would block every
         * later one. Drop it, loudly. */
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN,
                  "event=ack_refused command=%s state=%u status=%s message=\"%s\"",
                  a->ack_inflight_id, a->ack_inflight_state, aegis_grpc_status_name(st->code),
                  st->message);
    } else {
        aegis_tstamp hint = retry_after(st);
        AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=ack_retry command=%s status=%s hint_ms=%llu",
                  a->ack_inflight_id, aegis_grpc_status_name(st->code),
                  (unsigned long long)(hint / AEGIS_NS_PER_MS));
        double delay = AGENT_ACK_RETRY_S;
        if (ns_to_s(hint) > delay)
            delay = ns_to_s(hint);
        ev_timer_stop(a->loop, &a->ack_retry);
        ev_timer_set(&a->ack_retry, delay, 0);
        ev_timer_start(a->loop, &a->ack_retry);
        return;
    }
    int rv = agent_acks_confirm(a->acks, a->ack_inflight_id, a->ack_inflight_state);
    if (rv != 0 && rv != AEGIS_ERR_NOT_FOUND)
        AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=ack_confirm_failed command=%s error=\"%s\"",
                  a->ack_inflight_id, aegis_strerror(rv));
    agent_status_write(a);
    if (!a->stopping)
        agent_pump(a);
}

static const struct aegis_call_callbacks ack_cbs = {
    .on_message = ack_msg,
    .on_close = ack_close,
};

/* How far a command state is along: the server keeps only the furthest state it was told. */
static int ack_rank(uint32_t state)
{
    switch (state) {
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED:
        return 1;
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING:
        return 2;
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED:
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED:
        return 3;
    default:
        return 0;
    }
}

/* The oldest pending ack, after dropping those a later pending ack of the same command
 * supersedes (RECEIVED while SUCCEEDED waits too, say): sending them would cost the server a
 * commit that changes nothing it keeps. Dropping is journaled like a confirmation, after which
 * the later ack is still pending, so a crash in between loses nothing. */
static const struct agent_ack *next_ack(struct agent *a)
{
    const struct agent_ack *k;
    while ((k = agent_acks_at(a->acks, 0)) != NULL) {
        const struct agent_ack *later = NULL;
        for (size_t i = 1; (later = agent_acks_at(a->acks, i)) != NULL; i++)
            if (strcmp(later->id, k->id) == 0 && ack_rank(later->state) > ack_rank(k->state))
                break;
        if (later == NULL)
            return k;
        char id[AGENT_ACKS_ID_MAX + 1];
        snprintf(id, sizeof(id), "%s", k->id);
        uint32_t state = k->state;
        AEGIS_LOG(&a->log, AEGIS_LOG_DEBUG, "event=ack_superseded command=%s state=%u by=%u", id,
                  state, later->state);
        if (agent_acks_confirm(a->acks, id, state) != 0)
            return agent_acks_at(a->acks, 0); /* cannot drop it: send it, harmlessly */
    }
    return NULL;
}

static void pump_acks(struct agent *a)
{
    if (a->state != AGENT_CONN_READY || a->ack_call || ev_is_active(&a->ack_retry) ||
        agent_acks_count(a->acks) == 0)
        return;
    const struct agent_ack *k = next_ack(a);
    if (k == NULL)
        return;
    Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
    req.command_id = k->id;
    req.sequence = k->seq;
    req.state = (Aegis__V1__CommandState)k->state;
    req.detail = k->detail;
    req.result.data = k->result;
    req.result.len = k->result_len;
    req.duplicate = (k->flags & AGENT_ACK_DUPLICATE) != 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (agent_msg_pack(&req, NULL, &buf, &len) != 0)
        return;
    snprintf(a->ack_inflight_id, sizeof(a->ack_inflight_id), "%s", k->id);
    a->ack_inflight_state = (uint8_t)k->state;
    struct aegis_call_opts o = {.deadline = aegis_now() + AGENT_ACK_DEADLINE_NS};
    int rv = aegis_call_start(a->conn, PATH_ACK, AEGIS_RPC_UNARY, &o, &ack_cbs, a, &a->ack_call);
    if (rv == 0) {
        rv = aegis_call_send(a->ack_call, buf, len);
        if (rv == 0)
            aegis_call_close_send(a->ack_call);
        else
            aegis_call_cancel(a->ack_call);
    }
    aegis_free(NULL, buf);
    if (rv != 0)
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=ack_send_failed error=\"%s\"",
                  aegis_strerror(rv));
}

static void ack_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    agent_pump(a);
}

void agent_pump(struct agent *a)
{
    if (a->stopping)
        return;
    pump_acks(a);
    agent_telemetry_pump(a);
    agent_fetch_on_ready(a);
}

/* ---- Subscribe ---- */

static int sub_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    agent_exec_on_command(ud, msg, len);
    return 0;
}

static void sub_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct agent *a = ud;
    a->sub_call = NULL;
    if (a->stopping || a->conn == NULL)
        return;
    a->retry_hint = retry_after(st);
    char why[160];
    snprintf(why, sizeof(why), "subscribe ended: %s %.100s", aegis_grpc_status_name(st->code),
             st->message);
    AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=subscribe_closed status=%s message=\"%s\"",
              aegis_grpc_status_name(st->code), st->message);
    agent_conn_drop(a, why);
}

static const struct aegis_call_callbacks sub_cbs = {
    .on_message = sub_msg,
    .on_close = sub_close,
};

static void start_subscribe(struct agent *a)
{
    Aegis__V1__SubscribeRequest req = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    req.after_sequence = a->acked_sequence;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = agent_msg_pack(&req, NULL, &buf, &len);
    if (rv == 0)
        rv = aegis_call_start(a->conn, PATH_SUBSCRIBE, AEGIS_RPC_SERVER_STREAMING, NULL, &sub_cbs,
                              a, &a->sub_call);
    if (rv == 0) {
        rv = aegis_call_send(a->sub_call, buf, len);
        if (rv == 0)
            aegis_call_close_send(a->sub_call);
    }
    aegis_free(NULL, buf);
    if (rv != 0)
        agent_conn_drop(a, "cannot start Subscribe");
}

/* ---- Authenticate ---- */

static int auth_send(struct agent *a, const Aegis__V1__AuthClientMessage *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = agent_msg_pack(m, NULL, &buf, &len);
    if (rv == 0)
        rv = aegis_call_send(a->auth_call, buf, len);
    aegis_free(NULL, buf);
    return rv;
}

static int send_proof(struct agent *a, const Aegis__V1__AuthChallenge *ch)
{
    /* seed 000 / proto/README.md: nonce || server_time || host_id */
    size_t tl = strlen(ch->server_time), hl = strlen(a->id.host_id);
    size_t n = ch->nonce.len + tl + hl;
    if (ch->nonce.len != 32 || tl == 0 || tl > 64)
        return AEGIS_ERR_MALFORMED;
    uint8_t msg[32 + 64 + AGENT_IDENT_ID_MAX];
    memcpy(msg, ch->nonce.data, ch->nonce.len);
    memcpy(msg + ch->nonce.len, ch->server_time, tl);
    memcpy(msg + ch->nonce.len + tl, a->id.host_id, hl);
    uint8_t *sig = NULL;
    size_t siglen = 0;
    int rv = aegis_key_sign(a->key, msg, n, &sig, &siglen);
    if (rv != 0)
        return rv;
    struct agent_facts f;
    char *addrs[AGENT_FACTS_MAX_ADDRS];
    Aegis__V1__HostFacts hf;
    agent_facts_collect(&f, "", (int64_t)aegis_wallclock());
    agent_facts_to_pb(&f, a->id.host_id, addrs, &hf);
    Aegis__V1__AuthProof proof = AEGIS__V1__AUTH_PROOF__INIT;
    proof.signature.data = sig;
    proof.signature.len = siglen;
    proof.machine_id_hash.data = a->id.machine_hash;
    proof.machine_id_hash.len = sizeof(a->id.machine_hash);
    proof.host = &hf;
    Aegis__V1__AuthClientMessage m = AEGIS__V1__AUTH_CLIENT_MESSAGE__INIT;
    m.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_PROOF;
    m.proof = &proof;
    rv = auth_send(a, &m);
    aegis_free(NULL, sig);
    if (rv == 0)
        aegis_call_close_send(a->auth_call);
    return rv;
}

static void on_authenticated(struct agent *a, const Aegis__V1__AuthResult *r)
{
    a->state = AGENT_CONN_READY;
    a->auth_count++;
    a->acked_sequence = r->acked_sequence;
    a->last_error[0] = '\0';
    agent_backoff_reset(&a->backoff);
    ev_timer_stop(a->loop, &a->connect_timeout);
    if (r->settings) {
        if (r->settings->metrics_interval_seconds)
            a->metrics_interval_s = r->settings->metrics_interval_seconds;
        if (r->settings->telemetry_interval_seconds)
            a->telemetry_interval_s = r->settings->telemetry_interval_seconds;
        if (r->settings->telemetry_max_batch_events)
            a->max_batch_events = r->settings->telemetry_max_batch_events;
        if (a->metrics_interval_s < AGENT_MIN_INTERVAL_S)
            a->metrics_interval_s = AGENT_MIN_INTERVAL_S;
        if (a->telemetry_interval_s < AGENT_MIN_INTERVAL_S)
            a->telemetry_interval_s = AGENT_MIN_INTERVAL_S;
    }
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO,
              "event=authenticated agent=%s acked_sequence=%llu metrics_s=%u telemetry_s=%u",
              a->id.agent_id, (unsigned long long)r->acked_sequence, a->metrics_interval_s,
              a->telemetry_interval_s);
    start_subscribe(a);
    agent_update_on_authenticated(a);
    agent_telemetry_reschedule(a);
    agent_status_write(a);
    agent_sd_notify("STATUS=connected");
    agent_pump(a);
}

static int auth_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct agent *a = ud;
    Aegis__V1__AuthServerMessage *m = NULL;
    int rv =
        agent_msg_unpack(&aegis__v1__auth_server_message__descriptor, msg, len, NULL, (void **)&m);
    if (rv != 0) {
        agent_conn_drop(a, "Authenticate: malformed server message");
        return 0;
    }
    if (m->step_case == AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_CHALLENGE && a->auth_stage == 0) {
        a->auth_stage = 1;
        rv = send_proof(a, m->challenge);
        if (rv != 0) {
            char why[128];
            snprintf(why, sizeof(why), "Authenticate: cannot answer the challenge (%s)",
                     aegis_strerror(rv));
            agent_conn_drop(a, why);
        }
    } else if (m->step_case == AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT && a->auth_stage < 2) {
        a->auth_stage = 2;
        if (m->result->ok) {
            on_authenticated(a, m->result);
        } else {
            a->retry_hint = (aegis_tstamp)m->result->retry_after_ms * AEGIS_NS_PER_MS;
            char why[256];
            snprintf(why, sizeof(why), "authentication refused: %.200s", m->result->detail);
            AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=auth_refused detail=\"%s\"",
                      m->result->detail);
            agent_conn_drop(a, why);
        }
    } else {
        agent_conn_drop(a, "Authenticate: unexpected server message");
    }
    agent_msg_free(m, NULL);
    return 0;
}

static void auth_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct agent *a = ud;
    a->auth_call = NULL;
    if (a->state == AGENT_CONN_READY || a->stopping || a->conn == NULL)
        return;
    aegis_tstamp hint = retry_after(st);
    if (hint > a->retry_hint)
        a->retry_hint = hint;
    char why[200];
    snprintf(why, sizeof(why), "Authenticate failed: %s %.120s", aegis_grpc_status_name(st->code),
             st->message);
    AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=auth_failed status=%s message=\"%s\" hint_ms=%llu",
              aegis_grpc_status_name(st->code), st->message,
              (unsigned long long)(hint / AEGIS_NS_PER_MS));
    agent_conn_drop(a, why);
}

static const struct aegis_call_callbacks auth_cbs = {
    .on_message = auth_msg,
    .on_close = auth_close,
};

static void start_auth(struct agent *a)
{
    a->state = AGENT_CONN_AUTHENTICATING;
    a->auth_stage = 0;
    static char *caps[] = {"zstd", "bpf-tc", "artifacts", "self-update"};
    Aegis__V1__AuthHello hello = AEGIS__V1__AUTH_HELLO__INIT;
    hello.agent_id = a->id.agent_id;
    hello.host_id = a->id.host_id;
    hello.version = (char *)agent_version_string();
    hello.capabilities = caps;
    hello.n_capabilities = sizeof(caps) / sizeof(caps[0]);
    Aegis__V1__AuthClientMessage m = AEGIS__V1__AUTH_CLIENT_MESSAGE__INIT;
    m.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_HELLO;
    m.hello = &hello;
    struct aegis_call_opts o = {.deadline = aegis_now() + AGENT_CONNECT_TIMEOUT_NS};
    int rv = aegis_call_start(a->conn, PATH_AUTH, AEGIS_RPC_BIDI, &o, &auth_cbs, a, &a->auth_call);
    if (rv == 0)
        rv = auth_send(a, &m);
    if (rv != 0)
        agent_conn_drop(a, "cannot start Authenticate");
}

/* ---- connection ---- */

static void on_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                           void *ud)
{
    (void)peer;
    struct agent *a = ud;
    if (conn != a->conn)
        return;
    AEGIS_LOG(&a->log, AEGIS_LOG_DEBUG, "event=connected server=%s", a->id.server);
    start_auth(a);
}

static void on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    struct agent *a = ud;
    if (conn != a->conn)
        return;
    a->conn = NULL;
    a->state = AGENT_CONN_BACKOFF;
    ev_timer_stop(a->loop, &a->connect_timeout);
    char buf[256];
    aegis_close_reason_format(why, buf, sizeof(buf));
    if (a->last_error[0] == '\0' || why->by_peer)
        snprintf(a->last_error, sizeof(a->last_error), "connection closed: %.200s", buf);
    AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=disconnected reason=\"%s\"", buf);
    if (a->stopping) {
        ev_break(a->loop, EVBREAK_ALL);
        return;
    }
    agent_sd_notify("STATUS=disconnected");
    schedule_reconnect(a);
}

static void connect_now(struct agent *a)
{
    if (a->stopping || a->conn)
        return;
    a->state = AGENT_CONN_CONNECTING;
    a->connects++;
    a->last_error[0] = '\0';
    int rv = aegis_ev_connect(a->ev, a->id.server, NULL, &a->conn);
    if (rv != 0) {
        a->conn = NULL;
        snprintf(a->last_error, sizeof(a->last_error), "cannot connect to %.100s: %.100s",
                 a->id.server, aegis_strerror(rv));
        schedule_reconnect(a);
        return;
    }
    ev_timer_set(&a->connect_timeout, ns_to_s(AGENT_CONNECT_TIMEOUT_NS), 0);
    ev_timer_start(a->loop, &a->connect_timeout);
    agent_status_write(a);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_now(w->data);
}

static void connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    if (a->state != AGENT_CONN_READY)
        agent_conn_drop(a, "connect/authenticate timed out");
}

static void stop_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static ev_timer stop_timer;

/* Graceful stop: close the connection (the server hears CONNECTION_CLOSE
 * instead of waiting for the idle timeout), then leave the loop. */
static void stop(struct agent *a, const char *why)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    if (a->conn) {
        aegis_conn_close(a->conn, 0, why);
        ev_timer_init(&stop_timer, stop_timeout_cb, STOP_DRAIN_S, 0);
        ev_timer_start(a->loop, &stop_timer);
    } else {
        ev_break(a->loop, EVBREAK_ALL);
    }
}

void agent_restart(struct agent *a)
{
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=restarting path=%s", a->exe_path);
    a->reexec = 1;
    stop(a, "agent restarting");
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    if (a->stopping)
        return;
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=stopping signal=%d", w->signum);
    agent_sd_notify("STOPPING=1");
    stop(a, "agent stopping");
}

static uint64_t seed64(void)
{
    uint64_t s = 0;
    if (agent_random(&s, sizeof(s)) != 0)
        s = aegis_now() ^ (uint64_t)getpid();
    return s;
}

static int open_state(struct agent *a, char *err, size_t errlen)
{
    const char *dir = a->opts->state_dir;
    int rv = agent_state_dir_open(dir, 0, NULL, NULL, err, errlen, &a->sd);
    if (rv != 0)
        return rv;
    if ((rv = agent_state_dir_lock(a->sd, getpid(), err, errlen)) != 0)
        return rv;
    if ((rv = agent_ident_load(&a->id, dir, a->opts->machine_id_file, err, errlen)) != 0)
        return rv;
    if ((rv = aegis_key_from_pem(NULL, a->id.key_pem, a->id.key_len, &a->key)) != 0)
        return agent_errmsg(err, errlen, rv, "cannot load %s/%s: %s (re-enroll with --force)", dir,
                            AGENT_FILE_KEY, aegis_strerror(rv));
    char path[4096];
    agent_io_path(path, sizeof(path), dir, AGENT_FILE_SEEN);
    if ((rv = agent_seen_open(path, NULL, NULL, NULL, aegis_wallclock(), err, errlen, &a->seen)) !=
        0)
        return rv;
    agent_io_path(path, sizeof(path), dir, AGENT_FILE_ACKS);
    if ((rv = agent_acks_open(path, NULL, NULL, NULL, err, errlen, &a->acks)) != 0)
        return rv;
    agent_io_path(path, sizeof(path), dir, AGENT_DIR_SPOOL);
    if ((rv = agent_spool_open(path, NULL, NULL, NULL, err, errlen, &a->spool)) != 0)
        return rv;
    agent_io_path(a->artifacts_dir, sizeof(a->artifacts_dir), dir, AGENT_DIR_ARTIFACTS);
    if ((rv = agent_state_dir_ensure(a->artifacts_dir, AGENT_STATE_DIR_CREATE, NULL, err,
                                     errlen)) != 0)
        return rv;
    ssize_t n = readlink("/proc/self/exe", a->exe_path, sizeof(a->exe_path) - 1);
    if (n <= 0)
        return agent_errmsg(err, errlen, -errno, "cannot resolve /proc/self/exe: %s",
                            strerror(errno));
    a->exe_path[n] = '\0';
    return 0;
}

static int make_endpoint(struct agent *a, char *err, size_t errlen)
{
    struct aegis_endpoint_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.log = &a->log;
    cfg.tls.cert_pem = a->id.cert_pem;
    cfg.tls.cert_len = a->id.cert_len;
    cfg.tls.key_pem = a->id.key_pem;
    cfg.tls.key_len = a->id.key_len;
    for (size_t i = 0; i < a->id.npins; i++)
        cfg.tls.pins[i] = a->id.pins[i];
    cfg.tls.npins = a->id.npins;
    cfg.callbacks.on_established = on_established;
    cfg.callbacks.on_closed = on_closed;
    cfg.user_data = a;
    const char *bind = strchr(a->id.server, '[') ? "[::]:0" : "0.0.0.0:0";
    int rv = aegis_ev_new(a->loop, &cfg, bind, &a->ev);
    if (rv != 0)
        return agent_errmsg(err, errlen, rv, "cannot create the QUIC client: %s",
                            aegis_strerror(rv));
    return 0;
}

static void cleanup(struct agent *a)
{
    agent_telemetry_stop(a);
    agent_exec_free(a);
    agent_policy_close(a);
    aegis_ev_del(a->ev);
    a->ev = NULL;
    agent_spool_del(a->spool);
    agent_acks_del(a->acks);
    agent_seen_del(a->seen);
    aegis_key_del(a->key);
    agent_ident_free(&a->id);
    agent_state_dir_del(a->sd);
}

int agent_run(const struct agent_opts *opts)
{
    static struct agent A; /* one per process; static keeps it off the stack */
    struct agent *a = &A;
    memset(a, 0, sizeof(*a));
    a->opts = opts;
    a->log.level = opts->log_level;
    a->log.write = agent_log_sink;
    a->loop = ev_default_loop(EVFLAG_AUTO);
    a->metrics_interval_s = AGENT_DEFAULT_METRICS_INTERVAL_S;
    a->telemetry_interval_s = AGENT_DEFAULT_TELEMETRY_INTERVAL_S;
    a->max_batch_events = 1000;
    char err[512] = "";
    int rv = open_state(a, err, sizeof(err));
    if (rv == 0)
        rv = make_endpoint(a, err, sizeof(err));
    if (rv == 0) {
        agent_policy_init(a);
        rv = agent_update_startup(a);
    }
    if (rv == 0)
        rv = agent_exec_recover(a);
    if (rv != 0) {
        fprintf(stderr, "aegis-agent: %s\n", err[0] ? err : aegis_strerror(rv));
        cleanup(a);
        return 1;
    }
    agent_backoff_init(&a->backoff, NULL, NULL, NULL, seed64());
    ev_timer_init(&a->reconnect_timer, reconnect_cb, 0, 0);
    ev_timer_init(&a->connect_timeout, connect_timeout_cb, 0, 0);
    ev_timer_init(&a->ack_retry, ack_retry_cb, 0, 0);
    a->reconnect_timer.data = a->connect_timeout.data = a->ack_retry.data = a;
    ev_signal_init(&a->sigterm, on_signal, SIGTERM);
    ev_signal_init(&a->sigint, on_signal, SIGINT);
    a->sigterm.data = a->sigint.data = a;
    ev_signal_start(a->loop, &a->sigterm);
    ev_signal_start(a->loop, &a->sigint);
    signal(SIGPIPE, SIG_IGN);
    agent_telemetry_start(a);
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=start agent=%s version=%s server=%s state_dir=%s",
              a->id.agent_id, agent_version_string(), a->id.server, opts->state_dir);
    connect_now(a);
    agent_status_write(a);
    agent_sd_notify("READY=1");
    ev_run(a->loop, 0);

    ev_signal_stop(a->loop, &a->sigterm);
    ev_signal_stop(a->loop, &a->sigint);
    ev_timer_stop(a->loop, &a->reconnect_timer);
    ev_timer_stop(a->loop, &a->connect_timeout);
    ev_timer_stop(a->loop, &a->ack_retry);
    ev_timer_stop(a->loop, &stop_timer);
    ev_timer_stop(a->loop, &a->update_timer);
    a->state = AGENT_CONN_BACKOFF;
    snprintf(a->last_error, sizeof(a->last_error), "%s", a->reexec ? "restarting" : "stopped");
    agent_status_write(a);
    int reexec = a->reexec;
    char exe[sizeof(a->exe_path)];
    memcpy(exe, a->exe_path, sizeof(exe));
    cleanup(a);
    if (reexec) {
        AEGIS_LOG(&A.log, AEGIS_LOG_INFO, "event=reexec path=%s", exe);
        execv(exe, opts->argv);
        fprintf(stderr, "aegis-agent: cannot re-execute %s: %s\n", exe, strerror(errno));
        return 1;
    }
    return 0;
}
