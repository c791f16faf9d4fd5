/*
 * AgentService (DESIGN §3, FLEET_CONTRACT "Behaviour"): Enroll, Authenticate, Subscribe, Ack,
 * plus command push, redelivery and expiry. FetchArtifact and ReportTelemetry are in
 * ctl_svc_data.c.
 */
#include "ctl_metrics.h"
#include "ctl_server.h"
#include "ctl_svc_data.h"

#include <aegis/err.h>
#include <aegis/proto.h>

#include <aegis/v1/agent.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Enroll --------------------------------------------------------------------------------- */

struct enroll_state {
    char agent_id[37];
    char *cert_pem;
    size_t cert_len;
    char token_hex[65];
};

static void enroll_free(struct ctl_rpc *r)
{
    struct enroll_state *st = r->state;
    if (!st)
        return;
    aegis_free(NULL, st->cert_pem);
    aegis_free(r->srv->mem, st);
}

static void enroll_classified(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct enroll_state *st = r->state;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    const char *why = "unknown token";
    if (ctl_db_result_ntuples(res) == 1) {
        if (strcmp(ctl_db_result_value(res, 0, 0), "t") == 0)
            why = "token revoked";
        else if (strcmp(ctl_db_result_value(res, 0, 1), "t") == 0)
            why = "token expired";
        else if (strcmp(ctl_db_result_value(res, 0, 2), "t") == 0)
            why = "token used up";
    }
    char detail[160];
    snprintf(detail, sizeof(detail), "%s (token sha256 %.16s...)", why, st->token_hex);
    ctl_audit(r->srv, r->cc->name, "enroll", st->agent_id, "denied", detail);
    ctl_rpc_fail(r, AEGIS_GRPC_PERMISSION_DENIED,
                 "enrollment refused: %s (ask an operator for a new token: aegisctl tokens "
                 "create)",
                 why);
}

static void enroll_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct enroll_state *st = r->state;
    struct ctl_server *srv = r->srv;
    if (rv == AEGIS_ERR_DATABASE && strcmp(ctl_db_result_sqlstate(res), "23505") == 0) {
        ctl_audit(srv, r->cc->name, "enroll", st->agent_id, "denied", "key already enrolled");
        ctl_rpc_fail(r, AEGIS_GRPC_ALREADY_EXISTS,
                     "this key is already enrolled (generate a new agent key to enroll again)");
        return;
    }
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (ctl_db_result_ntuples(res) != 1) {
        const char *v[1] = {st->token_hex};
        ctl_rpc_db(r,
                   "SELECT revoked, expires_at <= now(), uses_left = 0 FROM enrollment_tokens"
                   " WHERE token_sha256 = decode($1, 'hex')",
                   1, v, NULL, NULL, enroll_classified);
        return;
    }
    /* Known at once locally; the NOTIFY tells every other instance. */
    struct ctl_map_entry *e;
    if (ctl_map_put(&srv->idents, r->cc->spki_sha256, 32, &e) == 0) {
        snprintf(e->agent_id, sizeof(e->agent_id), "%s", st->agent_id);
        e->revoked = 0;
    }
    char detail[128];
    snprintf(detail, sizeof(detail), "token %s", ctl_db_result_value(res, 0, 1));
    ctl_audit(srv, st->agent_id, "enroll", st->agent_id, "ok", detail);

    Aegis__V1__EnrollResponse resp = AEGIS__V1__ENROLL_RESPONSE__INIT;
    resp.agent_id = st->agent_id;
    resp.certificate_pem = st->cert_pem;
    resp.ca_pem = srv->ca_pem;
    char *pins[2] = {srv->server_pin, srv->cfg.extra_pin};
    resp.n_server_pins = srv->cfg.extra_pin[0] ? 2 : 1;
    resp.server_pins = pins;
    resp.command_signing_public_key.data = srv->command_pub;
    resp.command_signing_public_key.len = 32;
    resp.command_signing_key_id = srv->command_key_id;
    Aegis__V1__ArtifactSigningKey keys[CTL_MAX_ARTIFACT_KEYS], *kp[CTL_MAX_ARTIFACT_KEYS];
    for (size_t i = 0; i < srv->n_artifact_keys; i++) {
        aegis__v1__artifact_signing_key__init(&keys[i]);
        keys[i].key_id = srv->artifact_keys[i].key_id;
        keys[i].public_key.data = srv->artifact_keys[i].raw;
        keys[i].public_key.len = 32;
        kp[i] = &keys[i];
    }
    resp.n_artifact_signing_keys = srv->n_artifact_keys;
    resp.artifact_signing_keys = kp;
    struct ctl_labels labels = {0};
    if (ctl_labels_from_text(srv->mem, ctl_db_result_value(res, 0, 2), &labels) == 0)
        resp.labels = labels.msg;
    ctl_rpc_reply(r, &resp.base);
    ctl_labels_free(srv->mem, &labels);
}

static void enroll_start(struct ctl_rpc *r)
{
    Aegis__V1__EnrollRequest *req = (Aegis__V1__EnrollRequest *)r->req;
    struct ctl_server *srv = r->srv;
    if (!req->token[0]) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "EnrollRequest.token is empty");
        return;
    }
    if (req->machine_id_hash.len != 32) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "EnrollRequest.machine_id_hash must be 32 bytes, got %zu",
                     req->machine_id_hash.len);
        return;
    }
    if (!req->host || !req->host->host_id[0]) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "EnrollRequest.host.host_id is empty");
        return;
    }
    if (ctl_version_cmp(req->agent_version, "0") == -2) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "EnrollRequest.agent_version \"%s\" is not a dotted version like 0.1.0",
                     req->agent_version);
        return;
    }
    struct enroll_state *st = aegis_calloc(srv->mem, 1, sizeof(*st));
    if (!st) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    r->state = st;
    ctl_uuid(st->agent_id);
    uint8_t h[32];
    aegis_sha256_hash(req->token, strlen(req->token), h);
    ctl_hex(h, 32, st->token_hex);

    /* The certificate is for exactly the key of this TLS handshake (DESIGN §3): there is no
     * CSR, so a token thief cannot get a certificate for someone else's key. */
    struct aegis_cert_spec spec = {.role = AEGIS_ROLE_AGENT, .common_name = st->agent_id};
    int rv = aegis_cert_issue(NULL, &spec, r->cc->spki_der, r->cc->spki_der_len, srv->ca_key,
                              srv->ca_pem, &st->cert_pem, &st->cert_len);
    if (rv != 0) {
        ctl_audit(srv, r->cc->name, "enroll", st->agent_id, "error", aegis_strerror(rv));
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "cannot certify the key of this connection: %s (use Ed25519 or P-256)",
                     aegis_strerror(rv));
        return;
    }
    char spki_hex[65], mid_hex[65];
    ctl_hex(r->cc->spki_sha256, 32, spki_hex);
    ctl_hex(req->machine_id_hash.data, 32, mid_hex);
    const char *hostname = req->host->hostname[0] ? req->host->hostname : req->host->host_id;
    const char *v[7] = {st->token_hex, st->agent_id, req->host->host_id, hostname,
                        spki_hex,      mid_hex,      req->agent_version};
    ctl_rpc_db(
        r,
        "WITH t AS (UPDATE enrollment_tokens SET uses_left = uses_left - 1"
        "   WHERE token_sha256 = decode($1, 'hex') AND NOT revoked"
        "   AND expires_at > now() AND uses_left > 0 RETURNING id, labels),"
        " a AS (INSERT INTO agents (id, host_id, hostname, spki_sha256, machine_id_hash,"
        "   version, labels) SELECT $2::uuid, $3, $4, decode($5, 'hex'),"
        "   decode($6, 'hex'), $7, t.labels FROM t RETURNING id, labels)"
        " SELECT a.id::text, (SELECT id::text FROM t), " CTL_SQL_LABELS_TEXT("a.labels") " FROM a",
        7, v, NULL, NULL, enroll_done);
}

/* ---- Authenticate ----------------------------------------------------------------------- */

struct auth_state {
    int have_hello;
    int proof_seen;
    uint8_t nonce[32];
    char server_time[32];
    aegis_tstamp challenged_at;
    char host_id[256];
    char version[64];
    char caps[512];
    char mid_hex[65];
};

static void auth_free(struct ctl_rpc *r)
{
    aegis_free(r->srv->mem, r->state);
}

static void auth_result(struct ctl_rpc *r, int ok, const char *detail, uint64_t acked, int status)
{
    Aegis__V1__AuthResult res = AEGIS__V1__AUTH_RESULT__INIT;
    Aegis__V1__SessionSettings set = AEGIS__V1__SESSION_SETTINGS__INIT;
    Aegis__V1__AuthServerMessage m = AEGIS__V1__AUTH_SERVER_MESSAGE__INIT;
    res.ok = ok;
    res.agent_id = r->cc->agent_id;
    res.detail = (char *)detail;
    res.acked_sequence = acked;
    if (ok) {
        set.telemetry_interval_seconds = 10;
        set.telemetry_max_batch_events = 1000;
        set.metrics_interval_seconds = 30;
        res.settings = &set;
    }
    m.step_case = AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT;
    m.result = &res;
    ctl_rpc_send(r, &m.base);
    ctl_rpc_finish(r, status, detail);
}

static void auth_refuse(struct ctl_rpc *r, int status, const char *why)
{
    ctl_audit(r->srv, r->cc->agent_id, "auth_failed", r->cc->agent_id, "denied", why);
    auth_result(r, 0, why, 0, status);
}

static void auth_updated(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, int row,
                         int nrows)
{
    struct ctl_server *srv = r->srv;
    struct auth_state *st = r->state;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (nrows != 1) {
        auth_refuse(r, AEGIS_GRPC_UNAUTHENTICATED, "agent revoked or unknown");
        return;
    }
    uint64_t acked = (uint64_t)ctl_i64(ctl_db_result_value(res, row, 1));
    struct ctl_conn *cc = r->cc;
    /* One live connection per agent: a newer one replaces the older (a reconnect after a NAT
     * change may arrive before the old connection's idle timeout). */
    struct ctl_map_entry *e;
    if (ctl_map_put(&srv->agents_here, cc->agent_id, strlen(cc->agent_id), &e) == 0) {
        struct ctl_conn *old = e->value;
        if (old && old != cc && old->conn)
            aegis_conn_close(old->conn, AEGIS_CLOSE_CODE_REFUSED, "replaced by a new connection");
        e->value = cc;
    }
    cc->authenticated = 1;
    char detail[160];
    snprintf(detail, sizeof(detail), "version %s", st->version);
    ctl_audit(srv, cc->agent_id, "authenticate", cc->agent_id, "ok", detail);
    auth_result(r, 1, "", acked, AEGIS_GRPC_OK);
}

static void auth_loaded(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, int row,
                        int nrows)
{
    struct auth_state *st = r->state;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (nrows != 1) {
        auth_refuse(r, AEGIS_GRPC_UNAUTHENTICATED, "unknown agent");
        return;
    }
    const char *mid = ctl_db_result_value(res, row, 1);
    const char *version = ctl_db_result_value(res, row, 2);
    const char *host_id = ctl_db_result_value(res, row, 3);
    const char *status = ctl_db_result_value(res, row, 4);
    if (strcmp(status, "revoked") == 0) {
        auth_refuse(r, AEGIS_GRPC_PERMISSION_DENIED, "revoked");
        return;
    }
    /* DESIGN §4 machine-ID binding: a cloned VM or copied state dir shows up here. */
    if (strcmp(mid, st->mid_hex) != 0) {
        auth_refuse(r, AEGIS_GRPC_PERMISSION_DENIED,
                    "machine-id mismatch (state copied to another host? re-enroll it)");
        return;
    }
    if (strcmp(host_id, st->host_id) != 0) {
        auth_refuse(r, AEGIS_GRPC_PERMISSION_DENIED, "host id differs from the enrolled one");
        return;
    }
    /* Seed 002: newer is accepted and recorded (no upgrade catch-22), older refused. */
    int c = ctl_version_cmp(st->version, version);
    if (c == -2) {
        auth_refuse(r, AEGIS_GRPC_INVALID_ARGUMENT, "version is not a dotted number");
        return;
    }
    if (c < 0) {
        char why[160];
        snprintf(why, sizeof(why), "downgrade refused: %s is older than the recorded %s",
                 st->version, version);
        auth_refuse(r, AEGIS_GRPC_FAILED_PRECONDITION, why);
        return;
    }
    const char *v[4] = {r->cc->agent_id, st->version, r->srv->cfg.instance_id, st->caps};
    ctl_rpc_batch(r, r->srv->batch.auth_update, v, auth_updated, 0);
}

static int auth_on_msg(struct ctl_rpc *r, const uint8_t *msg, size_t len)
{
    struct ctl_server *srv = r->srv;
    struct auth_state *st = r->state;
    if (!st) {
        st = r->state = aegis_calloc(srv->mem, 1, sizeof(*st));
        if (!st) {
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
            return 0;
        }
    }
    Aegis__V1__AuthClientMessage *m = NULL;
    int rv = aegis_proto_unpack(&aegis__v1__auth_client_message__descriptor, msg, len,
                                srv->cfg.max_message, srv->mem, (ProtobufCMessage **)&m);
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "cannot decode AuthClientMessage: %s",
                     aegis_strerror(rv));
        return 0;
    }
    if (m->step_case == AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_HELLO && !st->have_hello) {
        Aegis__V1__AuthHello *h = m->hello;
        if (strcmp(h->agent_id, r->cc->agent_id) != 0) {
            char why[160];
            snprintf(why, sizeof(why), "hello names agent %.40s but the certificate is %s",
                     h->agent_id, r->cc->agent_id);
            auth_refuse(r, AEGIS_GRPC_PERMISSION_DENIED, why);
            goto out;
        }
        if (strlen(h->host_id) >= sizeof(st->host_id) ||
            strlen(h->version) >= sizeof(st->version)) {
            auth_refuse(r, AEGIS_GRPC_INVALID_ARGUMENT, "host id or version too long");
            goto out;
        }
        snprintf(st->host_id, sizeof(st->host_id), "%s", h->host_id);
        snprintf(st->version, sizeof(st->version), "%s", h->version);
        size_t o = 0;
        for (size_t i = 0; i < h->n_capabilities && o + 2 < sizeof(st->caps); i++) {
            int w = snprintf(st->caps + o, sizeof(st->caps) - o, "%s%s", i ? "," : "",
                             h->capabilities[i]);
            if (w < 0 || (size_t)w >= sizeof(st->caps) - o)
                break;
            o += (size_t)w;
        }
        if (ctl_random(st->nonce, sizeof(st->nonce)) != 0) {
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "no randomness");
            goto out;
        }
        aegis_tstamp wall = aegis_wallclock();
        /* The signed time has second precision: the nanosecond field carries the same
         * second so both say the same thing. */
        wall -= wall % AEGIS_NS_PER_S;
        ctl_rfc3339(wall, st->server_time);
        st->challenged_at = ctl_loop_now(srv->loop);
        st->have_hello = 1;
        Aegis__V1__AuthChallenge ch = AEGIS__V1__AUTH_CHALLENGE__INIT;
        ch.nonce.data = st->nonce;
        ch.nonce.len = 32;
        ch.server_time = st->server_time;
        ch.server_time_unix_ns = (int64_t)wall;
        Aegis__V1__AuthServerMessage sm = AEGIS__V1__AUTH_SERVER_MESSAGE__INIT;
        sm.step_case = AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_CHALLENGE;
        sm.challenge = &ch;
        if ((rv = ctl_rpc_send(r, &sm.base)) != 0)
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot send the challenge: %s",
                         aegis_strerror(rv));
        goto out;
    }
    if (m->step_case == AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_PROOF && st->have_hello &&
        !st->proof_seen) {
        Aegis__V1__AuthProof *p = m->proof;
        st->proof_seen = 1;
        if (ctl_loop_now(srv->loop) - st->challenged_at > srv->cfg.challenge_ttl) {
            auth_refuse(r, AEGIS_GRPC_UNAUTHENTICATED, "stale nonce: challenge expired");
            goto out;
        }
        size_t hl = strlen(st->host_id), tl = strlen(st->server_time);
        uint8_t signed_bytes[32 + 32 + 256];
        memcpy(signed_bytes, st->nonce, 32);
        memcpy(signed_bytes + 32, st->server_time, tl);
        memcpy(signed_bytes + 32 + tl, st->host_id, hl);
        rv = aegis_spki_verify(r->cc->spki_der, r->cc->spki_der_len, signed_bytes, 32 + tl + hl,
                               p->signature.data, p->signature.len);
        if (rv != 0) {
            auth_refuse(r, AEGIS_GRPC_UNAUTHENTICATED,
                        rv == AEGIS_ERR_SIGNATURE ? "bad signature over the challenge"
                                                  : "signature unusable");
            goto out;
        }
        if (p->machine_id_hash.len != 32) {
            auth_refuse(r, AEGIS_GRPC_INVALID_ARGUMENT, "machine_id_hash must be 32 bytes");
            goto out;
        }
        ctl_hex(p->machine_id_hash.data, 32, st->mid_hex);
        const char *v[1] = {r->cc->agent_id};
        ctl_rpc_batch(r, srv->batch.auth_load, v, auth_loaded, 0);
        goto out;
    }
    ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                 "Authenticate expects hello, then proof after the challenge");
out:
    aegis_proto_free(&m->base, srv->mem);
    return 0;
}

static void auth_half_close(struct ctl_rpc *r)
{
    struct auth_state *st = r->state;
    if (!st || !st->proof_seen)
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "Authenticate ended before the proof");
}

/* ---- Subscribe and command push ----------------------------------------------------------- */

struct sub_state {
    uint64_t after; /* highest sequence sent on this stream (or asked to start after) */
    int busy;       /* a pump query is in flight */
    int again;      /* pump again when it returns */
    int blocked;    /* -EAGAIN: wait for on_writable */
    int deferred;   /* the database refused the pump: the next sweep runs it again */
};

static void sub_pump(struct ctl_rpc *r);

static void sub_free(struct ctl_rpc *r)
{
    aegis_free(r->srv->mem, r->state);
}

static void sub_closed(struct ctl_rpc *r)
{
    if (r->cc && r->cc->sub == r)
        r->cc->sub = NULL;
}

static void sub_rows(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, int row, int nrows)
{
    struct sub_state *st = r->state;
    const struct ctl_batch *b = r->srv->batch.pump;
    st->busy = 0;
    if (rv != 0) {
        if (rv == AEGIS_ERR_UNAVAILABLE || rv == AEGIS_ERR_CLOSED || rv == AEGIS_ERR_LIMIT) {
            /* Keep the stream: the pump runs again at the next sweep (a full queue) or when
             * the database is back, whichever comes first. */
            st->again = 0;
            st->deferred = 1;
            r->srv->pumps_deferred = 1;
            return;
        }
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    /* The rows are already marked delivered (same statement). One that cannot be written
     * now stays above st->after, so the next pump (on_writable) fetches it again; if the
     * stream ends first, redelivery or the agent's resubscription covers it. */
    for (int i = 0; i < nrows; i++) {
        uint64_t seq = (uint64_t)ctl_batch_i64(b, res, row + i, 1);
        const uint8_t *cmd = (const uint8_t *)ctl_db_result_value(res, row + i, 2);
        size_t len = (size_t)ctl_db_result_length(res, row + i, 2);
        rv = aegis_call_send(r->call, cmd, len);
        if (rv == -EAGAIN) {
            st->blocked = 1;
            break;
        }
        if (rv != 0) {
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot push a command: %s", aegis_strerror(rv));
            return;
        }
        if (seq > st->after)
            st->after = seq;
    }
    if (nrows == CTL_SUB_BATCH && !st->blocked)
        st->again = 1; /* there may be more */
    if (st->again && !st->blocked) {
        st->again = 0;
        sub_pump(r);
    }
}

static void sub_pump(struct ctl_rpc *r)
{
    struct sub_state *st = r->state;
    if (!r->call || r->finished)
        return;
    if (st->busy) {
        st->again = 1;
        return;
    }
    if (st->blocked)
        return;
    char after[32];
    snprintf(after, sizeof(after), "%llu", (unsigned long long)st->after);
    const char *v[2] = {r->cc->agent_id, after};
    st->busy = 1;
    /* One statement for every stream pumped in this loop turn (a fan-out wakes thousands). */
    st->deferred = 0;
    if (ctl_rpc_batch(r, r->srv->batch.pump, v, sub_rows, 1) != 0) {
        st->busy = 0;
        st->deferred = 1; /* queue full: the next sweep */
        r->srv->pumps_deferred = 1;
    }
}

static void sub_writable(struct ctl_rpc *r)
{
    struct sub_state *st = r->state;
    if (st->blocked) {
        st->blocked = 0;
        sub_pump(r);
    }
}

static void sub_start(struct ctl_rpc *r)
{
    Aegis__V1__SubscribeRequest *req = (Aegis__V1__SubscribeRequest *)r->req;
    struct sub_state *st = aegis_calloc(r->srv->mem, 1, sizeof(*st));
    if (!st) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    r->state = st;
    st->after = req->after_sequence;
    if (r->cc->sub && r->cc->sub != r)
        ctl_rpc_fail(r->cc->sub, AEGIS_GRPC_CANCELLED, "replaced by a new Subscribe");
    r->cc->sub = r;
    ctl_rpc_list_stream(r);
    sub_pump(r);
}

void ctl_sub_pump(struct ctl_server *srv, const char *agent_id)
{
    struct ctl_conn *cc = ctl_conn_for_agent(srv, agent_id);
    if (cc && cc->sub)
        sub_pump(cc->sub);
}

int ctl_sub_live(struct ctl_server *srv, const char *agent_id)
{
    struct ctl_conn *cc = ctl_conn_for_agent(srv, agent_id);
    return cc && cc->sub && cc->sub->call && !cc->sub->finished && cc->sub->state;
}

void ctl_sub_push(struct ctl_server *srv, const char *agent_id, uint64_t seq, const uint8_t *cmd,
                  size_t len)
{
    struct ctl_conn *cc = ctl_conn_for_agent(srv, agent_id);
    if (!cc || !cc->sub || !cc->sub->state)
        return; /* stream gone: redelivery or the agent's resubscription sends it */
    struct ctl_rpc *r = cc->sub;
    struct sub_state *st = r->state;
    if (!r->call || r->finished || seq <= st->after)
        return;
    if (st->busy || st->blocked) {
        /* Its row is marked delivered above st->after: the next pump fetches it. */
        sub_pump(r);
        return;
    }
    int rv = aegis_call_send(r->call, cmd, len);
    if (rv == -EAGAIN) {
        st->blocked = 1;
        return;
    }
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot push a command: %s", aegis_strerror(rv));
        return;
    }
    st->after = seq;
}

/* ---- redelivery and expiry sweep ------------------------------------------------------------ */

static void sweep_ignore(int rv, const struct ctl_db_result *res, void *ud)
{
    struct ctl_server *srv = ud;
    if (rv != 0)
        AEGIS_LOG(&srv->log, AEGIS_LOG_WARN, "event=sweep_failed err=%s detail=\"%s\"",
                  aegis_strerror(rv), res ? ctl_db_result_error(res) : "");
}

static void redeliver_rows(int rv, const struct ctl_db_result *res, void *ud)
{
    struct ctl_server *srv = ud;
    if (rv != 0) {
        sweep_ignore(rv, res, ud);
        return;
    }
    int n = ctl_db_result_ntuples(res);
    if (n == 0)
        return;
    /* Arrays of what was actually re-sent, for one UPDATE. */
    size_t cap = (size_t)n * 40 + 8;
    char *ids = aegis_malloc(srv->mem, cap), *seqs = aegis_malloc(srv->mem, (size_t)n * 22 + 8);
    if (!ids || !seqs) {
        aegis_free(srv->mem, ids);
        aegis_free(srv->mem, seqs);
        return;
    }
    size_t oi = 0, os = 0;
    ids[oi++] = '{';
    seqs[os++] = '{';
    int sent = 0;
    for (int i = 0; i < n; i++) {
        const char *agent = ctl_db_result_value(res, i, 0);
        struct ctl_conn *cc = ctl_conn_for_agent(srv, agent);
        if (!cc || !cc->sub || !cc->sub->call || cc->sub->finished)
            continue;
        const char *hex = ctl_db_result_value(res, i, 2);
        size_t blen = strlen(hex) / 2;
        uint8_t *b = aegis_malloc(srv->mem, blen ? blen : 1);
        if (!b || ctl_unhex(hex, b, blen) != 0) {
            aegis_free(srv->mem, b);
            continue;
        }
        int srv_rv = aegis_call_send(cc->sub->call, b, blen);
        aegis_free(srv->mem, b);
        if (srv_rv != 0)
            continue; /* -EAGAIN: next sweep */
        oi += (size_t)snprintf(ids + oi, cap - oi, "%s%s", sent ? "," : "", agent);
        os += (size_t)snprintf(seqs + os, (size_t)n * 22 + 8 - os, "%s%s", sent ? "," : "",
                               ctl_db_result_value(res, i, 1));
        sent++;
        AEGIS_LOG(&srv->log, AEGIS_LOG_DEBUG, "event=redeliver agent=%s seq=%s", agent,
                  ctl_db_result_value(res, i, 1));
    }
    ids[oi++] = '}';
    ids[oi] = '\0';
    seqs[os++] = '}';
    seqs[os] = '\0';
    if (sent) {
        char base[32], max[32];
        snprintf(base, sizeof(base), "%.3f", (double)srv->cfg.redeliver_base / 1e9);
        snprintf(max, sizeof(max), "%.3f", (double)srv->cfg.redeliver_max / 1e9);
        const char *v[4] = {ids, seqs, base, max};
        /* Exponential backoff: the k-th redelivery waits base * 2^k, capped. */
        ctl_db_exec_params(srv->db,
                           "UPDATE deliveries d SET attempts = d.attempts + 1, updated_at = now(),"
                           " next_retry_at = now() + make_interval(secs => least($4::float8,"
                           "   $3::float8 * power(2, least(d.attempts, 30))))"
                           " FROM unnest($1::uuid[], $2::bigint[]) AS s(a, q)"
                           " WHERE d.agent_id = s.a AND d.sequence = s.q"
                           " AND d.status = 'delivered'",
                           4, v, NULL, NULL, 0, sweep_ignore, srv);
    }
    aegis_free(srv->mem, ids);
    aegis_free(srv->mem, seqs);
}

static void stale_queued_rows(int rv, const struct ctl_db_result *res, void *ud)
{
    struct ctl_server *srv = ud;
    if (rv != 0) {
        sweep_ignore(rv, res, ud);
        return;
    }
    for (int i = 0, n = ctl_db_result_ntuples(res); i < n; i++)
        ctl_sub_pump(srv, ctl_db_result_value(res, i, 0));
}

void ctl_sweep(struct ctl_server *srv)
{
    /* Streams whose pump the database refused (queue full, connection lost) try again. The
     * walk over every connection runs only when one was refused: an idle control with 10,000
     * agents spent an eighth of its CPU walking them every second. A pump refused again
     * during the walk sets the flag again. */
    if (srv->pumps_deferred) {
        srv->pumps_deferred = 0;
        for (struct ctl_conn *cc = srv->conns; cc; cc = cc->next) {
            struct ctl_rpc *r = cc->sub;
            if (r && r->state && ((struct sub_state *)r->state)->deferred)
                sub_pump(r);
        }
    }
    ctl_db_exec(srv->db,
                "WITH x AS (UPDATE deliveries SET status = 'expired', finished_at = now(),"
                " updated_at = now(), next_retry_at = NULL"
                " WHERE status IN ('queued', 'delivered', 'acked', 'running')"
                " AND expires_at <= now() RETURNING command_id)"
                " SELECT pg_notify('" CTL_CHANNEL_DELIVERIES "', c::text)"
                " FROM (SELECT DISTINCT command_id AS c FROM x) s",
                sweep_ignore, srv);
    if (srv->agents_here.count == 0)
        return;
    const char *v[1] = {srv->cfg.instance_id};
    ctl_db_exec_params(srv->db,
                       "SELECT d.agent_id::text, d.sequence, encode(d.signed, 'hex')"
                       " FROM deliveries d JOIN agents a ON a.id = d.agent_id"
                       " WHERE a.connected_instance = $1 AND d.status = 'delivered'"
                       " AND d.next_retry_at <= now() AND d.expires_at > now()"
                       " AND d.signed IS NOT NULL"
                       " ORDER BY d.agent_id, d.sequence LIMIT 1000",
                       1, v, NULL, NULL, 0, redeliver_rows, srv);
    /* A safety net for a wake-up that never came (a pump lost with its database connection,
     * a NOTIFY missed): commands still queued for agents held here after a few seconds. */
    ctl_db_exec_params(srv->db,
                       "SELECT DISTINCT d.agent_id::text FROM deliveries d"
                       " JOIN agents a ON a.id = d.agent_id"
                       " WHERE a.connected_instance = $1 AND d.status = 'queued'"
                       " AND d.expires_at > now() AND d.updated_at < now() - interval '3 seconds'"
                       " LIMIT 1000",
                       1, v, NULL, NULL, 0, stale_queued_rows, srv);
}

/* ---- Ack ------------------------------------------------------------------------------------ */

static const char *state_db(int s)
{
    switch (s) {
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED:
        return "acked";
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING:
        return "running";
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED:
        return "succeeded";
    case AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED:
        return "failed";
    default:
        return NULL;
    }
}

int ctl_state_from_db(const char *s)
{
    static const struct {
        const char *n;
        int v;
    } t[] = {{"queued", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_QUEUED},
             {"delivered", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_DELIVERED},
             {"acked", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED},
             {"running", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING},
             {"succeeded", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED},
             {"failed", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED},
             {"expired", AEGIS__V1__COMMAND_STATE__COMMAND_STATE_EXPIRED}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(t[i].n, s) == 0)
            return t[i].v;
    return 0;
}

static void ack_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res, int row, int nrows)
{
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (nrows != 1 || ctl_db_result_isnull(res, row, 1)) {
        ctl_rpc_fail(r, AEGIS_GRPC_NOT_FOUND,
                     "no delivery of that command id and sequence for this agent");
        return;
    }
    const char *recorded = ctl_db_result_value(res, row, 1);
    if (strcmp(ctl_db_result_value(res, row, 2), "t") == 0 && !ctl_db_result_isnull(res, row, 3))
        ctl_metrics_cmd_latency(r->srv, strtod(ctl_db_result_value(res, row, 3), NULL));
    Aegis__V1__AckResponse resp = AEGIS__V1__ACK_RESPONSE__INIT;
    resp.recorded_state = (Aegis__V1__CommandState)ctl_state_from_db(recorded);
    ctl_rpc_reply(r, &resp.base);
}

static void ack_start(struct ctl_rpc *r)
{
    Aegis__V1__AckRequest *req = (Aegis__V1__AckRequest *)r->req;
    const char *st = state_db(req->state);
    if (!st) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "AckRequest.state must be RECEIVED, RUNNING, SUCCEEDED or FAILED");
        return;
    }
    if (!ctl_uuid_valid(req->command_id) || req->sequence == 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "AckRequest needs a command_id (UUID) and its sequence");
        return;
    }
    if (req->result.len > 1024 * 1024) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "AckRequest.result is over 1 MiB");
        return;
    }
    char seq[32];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)req->sequence);
    char *rhex = aegis_malloc(r->srv->mem, req->result.len * 2 + 1);
    if (!rhex) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    ctl_hex(req->result.data, req->result.len, rhex);
    const char *v[6] = {r->cc->agent_id, req->command_id, seq, st, req->detail, rhex};
    /* Committed (with every other ack of this loop turn) before the reply. */
    ctl_rpc_batch(r, r->srv->batch.ack, v, ack_done, 0);
    aegis_free(r->srv->mem, rhex);
}

/* ---- batches -------------------------------------------------------------------------------- */

/* Authenticate's agents row, for every proof of the loop turn. */
#define SQL_AUTH_LOAD                                                                              \
    "SELECT s.i, encode(a.machine_id_hash, 'hex'), a.version, a.host_id, a.status"                 \
    " FROM unnest($1::uuid[]) WITH ORDINALITY AS s(id, i) JOIN agents a ON a.id = s.id"            \
    " ORDER BY s.i"

/* Accepted Authenticates: one row per item that was updated (still enrolled). The rows of
 * agents are locked in id order, like every statement that updates many of them. */
#define SQL_AUTH_UPDATE                                                                            \
    "WITH s AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[])"              \
    "   WITH ORDINALITY AS s(a, v, inst, caps, i)),"                                               \
    " lk AS (SELECT g.id FROM agents g WHERE g.id IN (SELECT a FROM s)"                            \
    "   AND g.status = 'enrolled' ORDER BY g.id FOR NO KEY UPDATE OF g),"                          \
    " u AS (UPDATE agents g SET version = x.v, last_seen = now(), connected_instance = x.inst,"    \
    "   capabilities = x.caps FROM (SELECT DISTINCT ON (a) a, v, inst, caps FROM s"                \
    "   ORDER BY a, i DESC) x, lk WHERE g.id = x.a AND lk.id = x.a"                                \
    "   RETURNING g.id, g.last_acked_sequence)"                                                    \
    " SELECT s.i, u.last_acked_sequence FROM s JOIN u ON u.id = s.a ORDER BY s.i"

/* Subscribe pumps: per stream, everything never sent (queued), whatever its sequence, plus
 * what was sent but not acked above its resume point, at most CTL_SUB_BATCH; marked delivered
 * in the same statement and returned in binary (the signed bytes as they are). Queued rows
 * below the resume point exist only when two commands for this agent were created
 * concurrently and the later sequence committed first (sequences are taken before the signed
 * rows are stored, see ctl_svc_cmd.c): they are still delivered, and the agent's seen-id
 * journal makes any repeat harmless. %d: CTL_SUB_BATCH, %.3f: redelivery base in seconds. */
#define SQL_PUMP_FMT                                                                               \
    "WITH s AS (SELECT * FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS s(a, q, i)),"    \
    " p AS (SELECT s.i, d.agent_id, d.sequence FROM s CROSS JOIN LATERAL"                          \
    "   (SELECT agent_id, sequence FROM deliveries WHERE agent_id = s.a AND (status = 'queued'"    \
    "   OR (status = 'delivered' AND sequence > s.q)) AND expires_at > now()"                      \
    "   AND signed IS NOT NULL ORDER BY sequence LIMIT %d) d),"                                    \
    " u AS (UPDATE deliveries d SET status = 'delivered', attempts = d.attempts + 1,"              \
    "   delivered_at = now(), updated_at = now(),"                                                 \
    "   next_retry_at = now() + make_interval(secs => %.3f) FROM p"                                \
    "   WHERE d.agent_id = p.agent_id AND d.sequence = p.sequence"                                 \
    "   AND d.status IN ('queued', 'delivered') RETURNING d.agent_id, d.sequence, d.signed)"       \
    " SELECT p.i, u.sequence, u.signed FROM p JOIN u ON u.agent_id = p.agent_id"                   \
    "   AND u.sequence = p.sequence ORDER BY p.i, u.sequence"

/* Acks: idempotent and monotonic (a state only moves forward; a duplicate or late ack leaves
 * the row as is). Several acks of one delivery in a batch collapse to the furthest state.
 * The agents row is written only when the resume point moves (the first ack of a command),
 * not for every later state, and in id order (m is sorted) like the other statements that
 * update many agents. One NOTIFY per command touched, not per ack. */
#define SQL_ACK                                                                                    \
    "WITH s AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[],"            \
    "   $5::text[], $6::text[]) WITH ORDINALITY AS s(a, c, q, st, det, res, i)),"                  \
    " w AS (SELECT DISTINCT ON (a, q, c) a, c, q, st, det, res FROM s"                             \
    "   ORDER BY a, q, c, aegis_delivery_rank(st) DESC, i DESC),"                                  \
    " cur AS (SELECT d.agent_id, d.sequence, d.command_id, d.status FROM deliveries d"             \
    "   JOIN w ON d.agent_id = w.a AND d.sequence = w.q AND d.command_id = w.c"                    \
    "   ORDER BY d.agent_id, d.sequence FOR UPDATE OF d),"                                         \
    " up AS (UPDATE deliveries d SET status = w.st, updated_at = now(),"                           \
    "   acked_at = coalesce(d.acked_at, now()), next_retry_at = NULL,"                             \
    "   finished_at = CASE WHEN w.st IN ('succeeded', 'failed') THEN now()"                        \
    "     ELSE d.finished_at END,"                                                                 \
    "   detail = CASE WHEN w.det = '' THEN d.detail ELSE w.det END,"                               \
    "   result = CASE WHEN w.res = '' THEN d.result ELSE decode(w.res, 'hex') END"                 \
    "   FROM w JOIN cur ON cur.agent_id = w.a AND cur.sequence = w.q"                              \
    "   WHERE d.agent_id = w.a AND d.sequence = w.q"                                               \
    "   AND aegis_delivery_rank(cur.status) < aegis_delivery_rank(w.st)"                           \
    "   RETURNING d.agent_id, d.sequence, d.command_id, d.status, w.det),"                         \
    " aa AS (UPDATE artifact_assignments x SET updated_at = now(),"                                \
    "   status = CASE WHEN up.status = 'failed' THEN 'failed' WHEN cm.kind = 'fetch_artifact'"     \
    "   THEN 'downloaded' ELSE 'loaded' END,"                                                      \
    "   detail = CASE WHEN up.status = 'failed' THEN up.det ELSE '' END"                           \
    "   FROM up JOIN commands cm ON cm.id = up.command_id"                                         \
    "   WHERE x.command_id = up.command_id AND x.agent_id = up.agent_id"                           \
    "   AND up.status IN ('succeeded', 'failed')),"                                                \
    " m AS (SELECT agent_id, max(sequence) AS q FROM cur GROUP BY agent_id ORDER BY agent_id),"    \
    " ag AS (UPDATE agents g SET last_acked_sequence = m.q, last_seen = now() FROM m"              \
    "   WHERE g.id = m.agent_id AND g.last_acked_sequence < m.q)"                                  \
    " SELECT s.i, coalesce(up.status, cur.status),"                                                \
    "  coalesce(up.status IN ('succeeded', 'failed') AND up.status = s.st, false),"                \
    "  extract(epoch FROM now() - cm.issued_at),"                                                  \
    "  (SELECT count(pg_notify('" CTL_CHANNEL_DELIVERIES "', n.c::text))"                          \
    "   FROM (SELECT DISTINCT command_id AS c FROM cur) n)"                                        \
    " FROM s LEFT JOIN cur ON cur.agent_id = s.a AND cur.sequence = s.q AND cur.command_id = s.c"  \
    " LEFT JOIN up ON up.agent_id = s.a AND up.sequence = s.q"                                     \
    " LEFT JOIN commands cm ON cm.id = s.c ORDER BY s.i"

int ctl_agent_batches_new(struct ctl_server *srv)
{
    char pump_sql[sizeof(SQL_PUMP_FMT) + 64];
    snprintf(pump_sql, sizeof(pump_sql), SQL_PUMP_FMT, CTL_SUB_BATCH,
             (double)srv->cfg.redeliver_base / 1e9);
    /* Two statements of a kind at a time, the next one collecting meanwhile (a busy database
     * gets fewer, bigger statements); a deadlock between two writers is retried by ctl_batch. */
    struct ctl_batch_config auth_load = {
        .name = "auth_load", .sql = SQL_AUTH_LOAD, .ncols = 1, .max_in_flight = 2};
    struct ctl_batch_config auth_update = {
        .name = "auth_update", .sql = SQL_AUTH_UPDATE, .ncols = 4, .max_in_flight = 2};
    struct ctl_batch_config pump = {
        .name = "pump", .sql = pump_sql, .ncols = 2, .binary_result = 1, .max_in_flight = 2};
    struct ctl_batch_config ack = {.name = "ack", .sql = SQL_ACK, .ncols = 6, .max_in_flight = 2};
    struct ctl_batch_config *all[] = {&auth_load, &auth_update, &pump, &ack};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        all[i]->max_items = srv->cfg.db_batch_items;
        all[i]->queue_max = srv->cfg.db_batch_queue;
    }
    int rv = ctl_batch_new(srv->db, srv->loop, &auth_load, srv->mem, &srv->batch.auth_load);
    if (rv == 0)
        rv = ctl_batch_new(srv->db, srv->loop, &auth_update, srv->mem, &srv->batch.auth_update);
    if (rv == 0)
        rv = ctl_batch_new(srv->db, srv->loop, &pump, srv->mem, &srv->batch.pump);
    if (rv == 0)
        rv = ctl_batch_new(srv->db, srv->loop, &ack, srv->mem, &srv->batch.ack);
    return rv;
}

/* ---- table -------------------------------------------------------------------------------- */

static const struct ctl_handler agent_handlers[] = {
    {.path = "/aegis.v1.AgentService/Enroll",
     .roles = CTL_ROLE_ENROLL,
     .start = enroll_start,
     .free_state = enroll_free},
    {.path = "/aegis.v1.AgentService/Authenticate",
     .roles = CTL_ROLE_AGENT,
     .on_msg = auth_on_msg,
     .on_half_close = auth_half_close,
     .free_state = auth_free},
    {.path = "/aegis.v1.AgentService/Subscribe",
     .roles = CTL_ROLE_AGENT,
     .needs_auth = 1,
     .start = sub_start,
     .on_writable = sub_writable,
     .on_closed = sub_closed,
     .free_state = sub_free},
    {.path = "/aegis.v1.AgentService/Ack",
     .roles = CTL_ROLE_AGENT,
     .needs_auth = 1,
     .start = ack_start},
    {.path = "/aegis.v1.AgentService/FetchArtifact",
     .roles = CTL_ROLE_AGENT,
     .needs_auth = 1,
     .start = ctl_fetch_start,
     .on_writable = ctl_fetch_writable,
     .free_state = ctl_fetch_free},
    {.path = "/aegis.v1.AgentService/ReportTelemetry",
     .roles = CTL_ROLE_AGENT,
     .needs_auth = 1,
     .on_msg = ctl_telemetry_msg,
     .on_half_close = ctl_telemetry_half_close,
     .free_state = ctl_telemetry_free},
};

const struct ctl_handler *ctl_svc_agent_handlers(size_t *pn)
{
    *pn = sizeof(agent_handlers) / sizeof(agent_handlers[0]);
    return agent_handlers;
}
