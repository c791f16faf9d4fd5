#include "agentd_fake.h"
#include "agent_crypto.h"
#include "agent_msg.h"

#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/telemetry.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#define CHUNK 16384u

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "fake: " __VA_ARGS__);                                                     \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

struct fconn {
    struct fconn *next, **pprev; /* fake's list: aegis_ev_del calls no on_closed */
    int authed;
    int stage;
    uint8_t nonce[32];
    char server_time[32];
    char host_id[64];
};

static int send_pb(struct aegis_call *call, const void *msg)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv = agent_msg_pack(msg, NULL, &buf, &len);
    if (rv == 0)
        rv = aegis_call_send(call, buf, len);
    aegis_free(NULL, buf);
    return rv;
}

static struct fconn *conn_of(struct aegis_call *call)
{
    return aegis_conn_get_data(aegis_call_conn(call));
}

/* ---- Enroll ---- */

static int enroll_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    Aegis__V1__EnrollRequest *r = NULL;
    if (agent_msg_unpack(&aegis__v1__enroll_request__descriptor, msg, len, NULL, (void **)&r)) {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad request", NULL, 0);
        return 0;
    }
    const struct aegis_peer_identity *peer = aegis_call_peer(call);
    if (strcmp(r->token, f->token) != 0) {
        aegis_call_finish(call, AEGIS_GRPC_PERMISSION_DENIED, "unknown token", NULL, 0);
    } else if (!peer->self_signed || peer->spki_der_len == 0) {
        aegis_call_finish(call, AEGIS_GRPC_PERMISSION_DENIED, "not a bootstrap cert", NULL, 0);
    } else {
        f->enrolls++;
        snprintf(f->agent_id, sizeof(f->agent_id), "aaaaaaaa-0000-4000-8000-%012d", f->enrolls);
        memcpy(f->machine_hash, r->machine_id_hash.data, r->machine_id_hash.len == 32 ? 32 : 0);
        snprintf(f->recorded_version, sizeof(f->recorded_version), "%s", r->agent_version);
        struct aegis_cert_spec spec = {.role = AEGIS_ROLE_AGENT, .common_name = f->agent_id};
        char *cert = NULL;
        size_t cl = 0;
        if (aegis_cert_issue(NULL, &spec, peer->spki_der, peer->spki_der_len, f->ca_key, f->ca_pem,
                             &cert, &cl) != 0)
            DIE("issue agent cert");
        Aegis__V1__EnrollResponse resp = AEGIS__V1__ENROLL_RESPONSE__INIT;
        resp.agent_id = f->agent_id;
        resp.certificate_pem = cert;
        resp.ca_pem = f->ca_pem;
        char *pins[1] = {f->pin};
        resp.server_pins = pins;
        resp.n_server_pins = 1;
        resp.command_signing_public_key.data = f->cmd_key.pub;
        resp.command_signing_public_key.len = 32;
        resp.command_signing_key_id = f->cmd_key.id;
        Aegis__V1__ArtifactSigningKey ak = AEGIS__V1__ARTIFACT_SIGNING_KEY__INIT;
        ak.key_id = f->art_key.id;
        ak.public_key.data = f->art_key.pub;
        ak.public_key.len = 32;
        Aegis__V1__ArtifactSigningKey *akp = &ak;
        resp.artifact_signing_keys = &akp;
        resp.n_artifact_signing_keys = 1;
        Aegis__V1__Labels labels = AEGIS__V1__LABELS__INIT;
        Aegis__V1__Labels__EntriesEntry e = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT, *ep = &e;
        e.key = "env";
        e.value = "test";
        labels.entries = &ep;
        labels.n_entries = 1;
        resp.labels = &labels;
        send_pb(call, &resp);
        aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
        aegis_free(NULL, cert);
    }
    agent_msg_free(r, NULL);
    return 0;
}

static const struct aegis_call_callbacks enroll_cbs = {.on_message = enroll_msg};

/* ---- Authenticate ---- */

static int auth_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    struct fconn *c = conn_of(call);
    const struct aegis_peer_identity *peer = aegis_call_peer(call);
    Aegis__V1__AuthClientMessage *m = NULL;
    if (agent_msg_unpack(&aegis__v1__auth_client_message__descriptor, msg, len, NULL,
                         (void **)&m)) {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad message", NULL, 0);
        return 0;
    }
    Aegis__V1__AuthServerMessage out = AEGIS__V1__AUTH_SERVER_MESSAGE__INIT;
    Aegis__V1__AuthResult res = AEGIS__V1__AUTH_RESULT__INIT;
    if (m->step_case == AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_HELLO && c->stage == 0) {
        snprintf(f->last_version, sizeof(f->last_version), "%s", m->hello->version);
        snprintf(c->host_id, sizeof(c->host_id), "%s", m->hello->host_id);
        if (!peer->chains_to_ca || strcmp(peer->subject_cn, m->hello->agent_id) != 0 ||
            strcmp(m->hello->agent_id, f->agent_id) != 0) {
            f->auths_failed++;
            aegis_call_finish(call, AEGIS_GRPC_UNAUTHENTICATED, "unknown agent", NULL, 0);
        } else if (f->refuse_version[0] && strcmp(f->refuse_version, m->hello->version) == 0) {
            f->auths_failed++;
            /* The hint travels twice: in the AuthResult and as the trailer. */
            res.ok = 0;
            res.detail = "version refused (test)";
            res.retry_after_ms = 1000;
            out.step_case = AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT;
            out.result = &res;
            send_pb(call, &out);
            static const char ms[] = "1000";
            struct aegis_metadata md = {"aegis-retry-after-ms", (const uint8_t *)ms, 4};
            aegis_call_finish(call, AEGIS_GRPC_FAILED_PRECONDITION, "version refused (test)", &md,
                              1);
        } else {
            c->stage = 1;
            agent_random(c->nonce, 32);
            time_t t = time(NULL);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(c->server_time, sizeof(c->server_time), "%Y-%m-%dT%H:%M:%SZ", &tm);
            Aegis__V1__AuthChallenge ch = AEGIS__V1__AUTH_CHALLENGE__INIT;
            ch.nonce.data = c->nonce;
            ch.nonce.len = 32;
            ch.server_time = c->server_time;
            ch.server_time_unix_ns = (int64_t)t * 1000000000;
            out.step_case = AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_CHALLENGE;
            out.challenge = &ch;
            send_pb(call, &out);
        }
    } else if (m->step_case == AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_PROOF && c->stage == 1) {
        uint8_t buf[256];
        size_t tl = strlen(c->server_time), hl = strlen(c->host_id);
        memcpy(buf, c->nonce, 32);
        memcpy(buf + 32, c->server_time, tl);
        memcpy(buf + 32 + tl, c->host_id, hl);
        int ok = aegis_spki_verify(peer->spki_der, peer->spki_der_len, buf, 32 + tl + hl,
                                   m->proof->signature.data, m->proof->signature.len) == 0 &&
                 m->proof->machine_id_hash.len == 32 &&
                 memcmp(m->proof->machine_id_hash.data, f->machine_hash, 32) == 0;
        res.ok = ok;
        res.agent_id = f->agent_id;
        res.detail = ok ? "" : "bad proof";
        Aegis__V1__SessionSettings st = AEGIS__V1__SESSION_SETTINGS__INIT;
        st.metrics_interval_seconds = f->telemetry_interval_s;
        st.telemetry_interval_seconds = f->telemetry_interval_s;
        st.telemetry_max_batch_events = 100;
        res.settings = &st;
        uint64_t acked = 0;
        for (size_t i = 0; i < f->ncmds && f->cmds[i].final; i++)
            acked = f->cmds[i].seq;
        res.acked_sequence = acked;
        out.step_case = AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT;
        out.result = &res;
        send_pb(call, &out);
        if (ok) {
            c->authed = 1;
            f->auths_ok++;
            snprintf(f->recorded_version, sizeof(f->recorded_version), "%s", f->last_version);
            aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
        } else {
            f->auths_failed++;
            aegis_call_finish(call, AEGIS_GRPC_UNAUTHENTICATED, "bad proof", NULL, 0);
        }
        c->stage = 2;
    } else {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "unexpected step", NULL, 0);
    }
    agent_msg_free(m, NULL);
    return 0;
}

static const struct aegis_call_callbacks auth_cbs = {.on_message = auth_msg};

/* ---- Subscribe ---- */

static void sub_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)st;
    struct fake *f = ud;
    if (f->sub_call == call)
        f->sub_call = NULL;
}

static int sub_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    Aegis__V1__SubscribeRequest *r = NULL;
    if (agent_msg_unpack(&aegis__v1__subscribe_request__descriptor, msg, len, NULL, (void **)&r)) {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad request", NULL, 0);
        return 0;
    }
    f->subscribes++;
    f->last_after = r->after_sequence;
    f->sub_call = call;
    for (size_t i = 0; i < f->ncmds; i++)
        if (f->cmds[i].seq > r->after_sequence && !f->cmds[i].final)
            aegis_call_send(call, f->cmds[i].signed_bytes, f->cmds[i].len);
    agent_msg_free(r, NULL);
    return 0;
}

static const struct aegis_call_callbacks sub_cbs = {.on_message = sub_msg, .on_close = sub_close};

/* ---- Ack ---- */

static int ack_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    Aegis__V1__AckRequest *r = NULL;
    if (agent_msg_unpack(&aegis__v1__ack_request__descriptor, msg, len, NULL, (void **)&r)) {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad request", NULL, 0);
        return 0;
    }
    if (f->nacks < FAKE_MAX_ACKS) {
        struct fake_ack *k = &f->acks[f->nacks++];
        snprintf(k->id, sizeof(k->id), "%s", r->command_id);
        k->seq = r->sequence;
        k->state = (uint32_t)r->state;
        k->duplicate = r->duplicate;
        snprintf(k->detail, sizeof(k->detail), "%s", r->detail);
        k->result_len =
            r->result.len < sizeof(k->result) - 1 ? r->result.len : sizeof(k->result) - 1;
        if (k->result_len)
            memcpy(k->result, r->result.data, k->result_len);
        k->result[k->result_len] = '\0';
    }
    if (r->state == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED ||
        r->state == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED)
        for (size_t i = 0; i < f->ncmds; i++)
            if (strcmp(f->cmds[i].id, r->command_id) == 0)
                f->cmds[i].final = 1;
    Aegis__V1__AckResponse resp = AEGIS__V1__ACK_RESPONSE__INIT;
    resp.recorded_state = r->state;
    send_pb(call, &resp);
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
    agent_msg_free(r, NULL);
    return 0;
}

static const struct aegis_call_callbacks ack_cbs = {.on_message = ack_msg};

/* ---- FetchArtifact ---- */

struct fetchcall {
    struct fake_art *a;
    Aegis__V1__ArtifactHeader *h;
    size_t off, end;
    int first, cut;
};

/* Sends chunks until the send queue pushes back (on_writable resumes). */
static void fetch_pump(struct aegis_call *call, struct fetchcall *fc)
{
    while (fc->off < fc->end || fc->first) {
        size_t n = fc->end - fc->off < CHUNK ? fc->end - fc->off : CHUNK;
        Aegis__V1__ArtifactChunk ch = AEGIS__V1__ARTIFACT_CHUNK__INIT;
        if (fc->first)
            ch.header = fc->h;
        ch.offset = fc->off;
        ch.data.data = fc->a->content + fc->off;
        ch.data.len = n;
        int rv = send_pb(call, &ch);
        if (rv == -EAGAIN)
            return;
        if (rv != 0)
            DIE("fetch send: %s", aegis_strerror(rv));
        fc->off += n;
        fc->first = 0;
    }
    if (fc->cut)
        aegis_call_finish(call, AEGIS_GRPC_UNAVAILABLE, "cut by the test", NULL, 0);
    else
        aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
    fc->end = 0;
    fc->off = 1; /* done: nothing more to pump */
}

static void fetch_writable(struct aegis_call *call, void *ud)
{
    (void)ud;
    struct fetchcall *fc = aegis_call_get_data(call);
    if (fc && fc->off < fc->end)
        fetch_pump(call, fc);
}

static void fetch_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)st;
    (void)ud;
    struct fetchcall *fc = aegis_call_get_data(call);
    if (fc) {
        agent_msg_free(fc->h, NULL);
        free(fc);
    }
}

static int fetch_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    Aegis__V1__FetchArtifactRequest *r = NULL;
    if (agent_msg_unpack(&aegis__v1__fetch_artifact_request__descriptor, msg, len, NULL,
                         (void **)&r)) {
        aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad request", NULL, 0);
        return 0;
    }
    if (f->nfetch < 64)
        f->fetch_offsets[f->nfetch++] = r->offset;
    struct fake_art *a = NULL;
    for (size_t i = 0; i < f->narts; i++)
        if (r->sha256.len == 32 && memcmp(f->arts[i].sha, r->sha256.data, 32) == 0)
            a = &f->arts[i];
    if (a == NULL || r->offset > a->len) {
        aegis_call_finish(call, AEGIS_GRPC_NOT_FOUND, "no such artifact", NULL, 0);
        agent_msg_free(r, NULL);
        return 0;
    }
    struct fetchcall *fc = calloc(1, sizeof(*fc));
    if (fc == NULL || agent_msg_unpack(&aegis__v1__artifact_header__descriptor, a->header,
                                       a->header_len, NULL, (void **)&fc->h))
        DIE("header");
    fc->a = a;
    fc->off = (size_t)r->offset;
    fc->end = a->len;
    fc->first = 1;
    if (a->cut_after && !a->cut_done && fc->off == 0) {
        fc->end = a->cut_after;
        fc->cut = 1;
        a->cut_done = 1;
    }
    aegis_call_set_data(call, fc);
    fetch_pump(call, fc);
    agent_msg_free(r, NULL);
    return 0;
}

static const struct aegis_call_callbacks fetch_cbs = {
    .on_message = fetch_msg, .on_writable = fetch_writable, .on_close = fetch_close};

/* ---- ReportTelemetry ---- */

struct telcall {
    uint64_t ids[64];
    size_t n;
};

static int tel_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fake *f = ud;
    struct telcall *tc = aegis_call_get_data(call);
    Aegis__V1__TelemetryBatch *b = NULL;
    if (agent_msg_unpack(&aegis__v1__telemetry_batch__descriptor, msg, len, NULL, (void **)&b))
        return 0;
    int dup = 0;
    for (size_t i = 0; i < f->nbatches; i++)
        dup |= f->batches[i] == b->batch_id;
    if (dup)
        f->dup_batches++;
    else if (f->nbatches < FAKE_MAX_BATCHES)
        f->batches[f->nbatches++] = b->batch_id;
    f->metrics += b->n_metrics;
    for (size_t i = 0; i < b->n_metrics; i++)
        if (strcmp(b->metrics[i]->name, "aegis_rule_packets_total") == 0)
            f->rule_metrics++;
    f->events += b->n_events;
    if (tc && tc->n < 64)
        tc->ids[tc->n++] = b->batch_id;
    agent_msg_free(b, NULL);
    return 0;
}

static void tel_half(struct aegis_call *call, void *ud)
{
    (void)ud;
    struct telcall *tc = aegis_call_get_data(call);
    Aegis__V1__TelemetrySummary s = AEGIS__V1__TELEMETRY_SUMMARY__INIT;
    s.committed_batch_ids = tc->ids;
    s.n_committed_batch_ids = tc->n;
    send_pb(call, &s);
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static void tel_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)st;
    (void)ud;
    free(aegis_call_get_data(call));
}

static const struct aegis_call_callbacks tel_cbs = {
    .on_message = tel_msg, .on_half_close = tel_half, .on_close = tel_close};

/* ---- dispatch ---- */

static int on_call(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    struct fake *f = ud;
    const char *p = aegis_call_path(call);
    struct fconn *c = conn_of(call);
    if (strcmp(p, "/aegis.v1.AgentService/Enroll") == 0) {
        aegis_call_set_callbacks(call, &enroll_cbs, f);
        return 0;
    }
    if (strcmp(p, "/aegis.v1.AgentService/Authenticate") == 0) {
        aegis_call_set_callbacks(call, &auth_cbs, f);
        return 0;
    }
    if (c == NULL || !c->authed) {
        aegis_call_finish(call, AEGIS_GRPC_UNAUTHENTICATED, "authenticate first", NULL, 0);
        return 0;
    }
    if (strcmp(p, "/aegis.v1.AgentService/Subscribe") == 0)
        aegis_call_set_callbacks(call, &sub_cbs, f);
    else if (strcmp(p, "/aegis.v1.AgentService/Ack") == 0)
        aegis_call_set_callbacks(call, &ack_cbs, f);
    else if (strcmp(p, "/aegis.v1.AgentService/FetchArtifact") == 0)
        aegis_call_set_callbacks(call, &fetch_cbs, f);
    else if (strcmp(p, "/aegis.v1.AgentService/ReportTelemetry") == 0) {
        aegis_call_set_data(call, calloc(1, sizeof(struct telcall)));
        aegis_call_set_callbacks(call, &tel_cbs, f);
    } else
        aegis_call_finish(call, AEGIS_GRPC_UNIMPLEMENTED, "no", NULL, 0);
    return 0;
}

static int on_handshake(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                        char *reason, size_t rl, void *ud)
{
    (void)peer;
    (void)reason;
    (void)rl;
    struct fake *f = ud;
    struct fconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        DIE("calloc");
    c->next = f->fconns;
    if (c->next)
        c->next->pprev = &c->next;
    c->pprev = &f->fconns;
    f->fconns = c;
    aegis_conn_set_data(conn, c);
    f->conns_open++;
    return 0;
}

static void on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    (void)why;
    struct fake *f = ud;
    struct fconn *c = aegis_conn_get_data(conn);
    if (c) {
        *c->pprev = c->next;
        if (c->next)
            c->next->pprev = c->pprev;
        free(c);
        f->conns_open--;
    }
}

void fake_init(struct fake *f, struct ev_loop *loop)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->telemetry_interval_s = 1;
    snprintf(f->token, sizeof(f->token), "tok-%d", (int)time(NULL));
    uint8_t *der = NULL;
    size_t dl = 0;
    size_t l;
    struct aegis_cert_spec ca = {.role = AEGIS_ROLE_CA, .common_name = "test fleet CA"};
    const char *ips[] = {"127.0.0.1"};
    struct aegis_cert_spec srv = {
        .role = AEGIS_ROLE_SERVER, .common_name = "aegis-control", .ips = ips, .n_ips = 1};
    if (aegis_key_generate(NULL, AEGIS_KEY_ED25519, &f->ca_key) ||
        aegis_key_spki_der(f->ca_key, &der, &dl) ||
        aegis_cert_issue(NULL, &ca, der, dl, f->ca_key, NULL, &f->ca_pem, &l))
        DIE("ca");
    aegis_free(NULL, der);
    if (aegis_key_generate(NULL, AEGIS_KEY_ED25519, &f->srv_key) ||
        aegis_key_spki_der(f->srv_key, &der, &dl) ||
        aegis_cert_issue(NULL, &srv, der, dl, f->ca_key, f->ca_pem, &f->srv_pem, &l) ||
        aegis_key_to_pem(f->srv_key, &f->srv_key_pem, &l) || aegis_pin_from_spki(der, dl, f->pin))
        DIE("server cert");
    aegis_free(NULL, der);
    tkey_make(&f->cmd_key);
    tkey_make(&f->art_key);
}

static struct aegis_rpc_handler handlers[6];

int fake_start(struct fake *f)
{
    static const char *paths[6] = {
        "/aegis.v1.AgentService/Enroll",        "/aegis.v1.AgentService/Authenticate",
        "/aegis.v1.AgentService/Subscribe",     "/aegis.v1.AgentService/Ack",
        "/aegis.v1.AgentService/FetchArtifact", "/aegis.v1.AgentService/ReportTelemetry"};
    static const enum aegis_rpc_shape shapes[6] = {AEGIS_RPC_UNARY,
                                                   AEGIS_RPC_BIDI,
                                                   AEGIS_RPC_SERVER_STREAMING,
                                                   AEGIS_RPC_UNARY,
                                                   AEGIS_RPC_SERVER_STREAMING,
                                                   AEGIS_RPC_CLIENT_STREAMING};
    for (int i = 0; i < 6; i++) {
        handlers[i].path = paths[i];
        handlers[i].shape = shapes[i];
        handlers[i].on_call = on_call;
        handlers[i].user_data = f;
    }
    struct aegis_endpoint_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.is_server = 1;
    cfg.tls.cert_pem = f->srv_pem;
    cfg.tls.cert_len = strlen(f->srv_pem);
    cfg.tls.key_pem = f->srv_key_pem;
    cfg.tls.key_len = strlen(f->srv_key_pem);
    cfg.tls.ca_pem = f->ca_pem;
    cfg.tls.ca_len = strlen(f->ca_pem);
    cfg.tls.accept_any_client_cert = 1;
    cfg.handlers = handlers;
    cfg.nhandlers = 6;
    cfg.callbacks.on_handshake = on_handshake;
    cfg.callbacks.on_closed = on_closed;
    cfg.user_data = f;
    char bind[64];
    snprintf(bind, sizeof(bind), "127.0.0.1:%u", f->port);
    int rv = aegis_ev_new(f->loop, &cfg, bind, &f->ev);
    if (rv == 0)
        f->port = aegis_ev_port(f->ev);
    return rv;
}

void fake_stop(struct fake *f)
{
    /* Abrupt, like a killed process: nothing is sent. Connection state
     * (conn data) goes with the endpoint. */
    aegis_ev_del(f->ev);
    f->ev = NULL;
    f->sub_call = NULL;
    while (f->fconns) {
        struct fconn *c = f->fconns;
        f->fconns = c->next;
        free(c);
    }
    f->conns_open = 0;
}

void fake_free(struct fake *f)
{
    fake_stop(f);
    for (size_t i = 0; i < f->ncmds; i++)
        aegis_free(NULL, f->cmds[i].signed_bytes);
    for (size_t i = 0; i < f->narts; i++) {
        free(f->arts[i].content);
        aegis_free(NULL, f->arts[i].header);
    }
    aegis_key_del(f->ca_key);
    aegis_key_del(f->srv_key);
    aegis_free(NULL, f->ca_pem);
    aegis_free(NULL, f->srv_pem);
    aegis_free(NULL, f->srv_key_pem);
    tkey_free(&f->cmd_key);
    tkey_free(&f->art_key);
}

size_t fake_push(struct fake *f, void *command, unsigned flags)
{
    Aegis__V1__Command *c = command;
    if (f->ncmds == FAKE_MAX_CMDS)
        DIE("too many commands");
    struct fake_cmd *fc = &f->cmds[f->ncmds];
    fc->seq = f->ncmds + 1;
    snprintf(fc->id, sizeof(fc->id), "cccccccc-0000-4000-8000-%012zu", f->ncmds + 1);
    c->id = fc->id;
    c->sequence = fc->seq;
    char *ids[1] = {f->agent_id};
    c->agent_ids = ids;
    c->n_agent_ids = 1;
    int64_t now = (int64_t)aegis_wallclock();
    c->issued_unix_ns = now;
    c->expires_unix_ns =
        (flags & FAKE_EXPIRED) ? now - 1000000000 : now + 3600 * INT64_C(1000000000);
    uint8_t nonce[16];
    agent_random(nonce, 16);
    c->nonce.data = nonce;
    c->nonce.len = 16;
    uint8_t *cb = NULL;
    size_t cl = 0;
    if (agent_msg_pack(c, NULL, &cb, &cl))
        DIE("pack command");
    uint8_t sig[64];
    tkey_sign(&f->cmd_key, cb, cl, sig);
    if (flags & FAKE_BAD_SIG)
        sig[5] ^= 0x40;
    Aegis__V1__SignedCommand sc = AEGIS__V1__SIGNED_COMMAND__INIT;
    sc.command.data = cb;
    sc.command.len = cl;
    sc.signature.data = sig;
    sc.signature.len = 64;
    sc.key_id = f->cmd_key.id;
    if (agent_msg_pack(&sc, NULL, &fc->signed_bytes, &fc->len))
        DIE("pack signed");
    aegis_free(NULL, cb);
    c->agent_ids = NULL;
    c->n_agent_ids = 0;
    c->nonce.data = NULL;
    c->nonce.len = 0;
    c->id = NULL;
    /* A refused command is never acked final: keep it out of redelivery. */
    fc->final = (flags & FAKE_BAD_SIG) != 0;
    f->ncmds++;
    if (f->sub_call)
        aegis_call_send(f->sub_call, fc->signed_bytes, fc->len);
    return f->ncmds - 1;
}

void fake_resend(struct fake *f, size_t i)
{
    if (f->sub_call)
        aegis_call_send(f->sub_call, f->cmds[i].signed_bytes, f->cmds[i].len);
}

size_t fake_add_artifact(struct fake *f, const char *name, int kind, const char *version,
                         const uint8_t *raw, size_t rawlen, int zstd, int tamper)
{
    if (f->narts == FAKE_MAX_ARTS)
        DIE("too many artifacts");
    struct fake_art *a = &f->arts[f->narts];
    if (zstd) {
        size_t cap = ZSTD_compressBound(rawlen);
        a->content = malloc(cap);
        a->len = ZSTD_compress(a->content, cap, raw, rawlen, 3);
        if (ZSTD_isError(a->len))
            DIE("zstd");
    } else {
        a->content = malloc(rawlen ? rawlen : 1);
        memcpy(a->content, raw, rawlen);
        a->len = rawlen;
    }
    aegis_sha256_hash(a->content, a->len, a->sha);
    Aegis__V1__ArtifactStatement st = AEGIS__V1__ARTIFACT_STATEMENT__INIT;
    st.name = (char *)name;
    st.kind = (Aegis__V1__ArtifactKind)kind;
    st.size = a->len;
    st.sha256.data = a->sha;
    st.sha256.len = 32;
    st.compression =
        zstd ? AEGIS__V1__COMPRESSION__COMPRESSION_ZSTD : AEGIS__V1__COMPRESSION__COMPRESSION_NONE;
    st.uncompressed_size = rawlen;
    st.version = (char *)version;
    st.signed_unix_ns = (int64_t)aegis_wallclock();
    uint8_t *sb = NULL;
    size_t sl = 0;
    if (agent_msg_pack(&st, NULL, &sb, &sl))
        DIE("statement");
    uint8_t sig[64];
    tkey_sign(&f->art_key, sb, sl, sig);
    Aegis__V1__ArtifactHeader h = AEGIS__V1__ARTIFACT_HEADER__INIT;
    h.statement.data = sb;
    h.statement.len = sl;
    h.signature.data = sig;
    h.signature.len = 64;
    h.signing_key_id = f->art_key.id;
    if (agent_msg_pack(&h, NULL, &a->header, &a->header_len))
        DIE("header");
    aegis_free(NULL, sb);
    if (tamper)
        a->content[a->len / 2] ^= 0x01;
    return f->narts++;
}

const struct fake_ack *fake_find_ack(const struct fake *f, const char *id, uint32_t state)
{
    for (size_t i = 0; i < f->nacks; i++)
        if (strcmp(f->acks[i].id, id) == 0 && f->acks[i].state == state)
            return &f->acks[i];
    return NULL;
}

size_t fake_count_acks(const struct fake *f, const char *id, uint32_t state)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nacks; i++)
        if (strcmp(f->acks[i].id, id) == 0 && (state == 0 || f->acks[i].state == state))
            n++;
    return n;
}
