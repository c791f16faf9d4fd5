/*
 * One simulated agent per struct fleet_agent: its own UDP socket and its own client endpoint
 * (its own certificate), driven sans-I/O (transport.h) by libev watchers of this file, and the
 * AgentService conversation of the real agent (FLEET_CONTRACT "Behaviour"):
 *
 *   handshake -> Authenticate (hello, challenge, proof signed over nonce || server_time ||
 *   host_id) -> Subscribe(after the last acknowledged sequence) -> for every SignedCommand:
 *   Ack SUCCEEDED (for LoadArtifact: Ack RECEIVED, FetchArtifact, Ack SUCCEEDED);
 *   ReportTelemetry batches on request; reconnect with exponential backoff and full jitter
 *   when the connection ends.
 *
 * The simulated agent does not verify command or artifact signatures (it measures the
 * server; the real agent's checks are tested in tests/agent/).
 */
#include "bench_fleet.h"

#include <aegis/err.h>
#include <aegis/proto.h>
#include <aegis/transport_ev.h>
#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/command.pb-c.h>
#include <aegis/v1/telemetry.pb-c.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SVC "/aegis.v1.AgentService/"
/* Datagrams read per recvmmsg; a few rounds per wake-up, then other agents run. */
#define RX_BATCH 32
#define RX_ROUNDS 4
#define MTU 1500
/* Datagrams one agent may write per loop turn before yielding to the others. */
#define TX_BUDGET 256
/* Close reasons printed before going quiet (the counters keep counting). */
#define MAX_REPORTED_CLOSES 5

static struct fleet *F;
static unsigned reported_fail;
const char *fleet_prog = "aegis-bench-fleet";

/* Prints the first few call failures (the counters keep counting). */
static void report_fail(const struct fleet_agent *a, const char *what,
                        const struct aegis_call_status *st)
{
    if (reported_fail++ < 3 * MAX_REPORTED_CLOSES)
        fprintf(stderr, "%s: agent %zu: %s: %s %s\n", fleet_prog, a->idx, what,
                aegis_grpc_status_name(st->code), st->message ? st->message : "");
}
static uint8_t rxbuf[RX_BATCH][MTU];
static uint8_t txbuf[MTU];

uint64_t fleet_rand(struct fleet *f)
{
    /* xorshift64*: enough for jitter */
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return f->rng * 2685821657736338717ull;
}

void fleet_sample(struct fleet *f, uint64_t v)
{
    if (f->nlat == f->caplat) {
        size_t nc = f->caplat ? f->caplat * 2 : 4096;
        uint64_t *p = realloc(f->lat, nc * sizeof(*p));
        if (!p)
            return;
        f->lat = p;
        f->caplat = nc;
    }
    f->lat[f->nlat++] = v;
}

/* ---- I/O driver ------------------------------------------------------------------------- */

void fleet_touch(struct fleet *f, struct fleet_agent *a)
{
    if (!a->dirty) {
        a->dirty = 1;
        a->next_dirty = f->dirty_head;
        f->dirty_head = a;
    }
}

static void rearm(struct fleet *f, struct fleet_agent *a, int more)
{
    ev_timer_stop(f->loop, &a->timer);
    if (!a->ep)
        return;
    aegis_tstamp e = more ? 0 : aegis_endpoint_expiry(a->ep);
    if (e == AEGIS_TSTAMP_NEVER)
        return;
    aegis_tstamp now = aegis_now();
    ev_timer_set(&a->timer, e > now ? (double)(e - now) / 1e9 : 0.0, 0.0);
    ev_timer_start(f->loop, &a->timer);
}

static void flush(struct fleet *f, struct fleet_agent *a)
{
    if (!a->ep)
        return;
    aegis_tstamp now = aegis_now();
    int budget;
    for (budget = 0; budget < TX_BUDGET; budget++) {
        struct aegis_path path;
        size_t seg = 0;
        long n = aegis_endpoint_send(a->ep, txbuf, sizeof(txbuf), 1, &path, &seg, now);
        if (n <= 0)
            break;
        ssize_t w =
            sendto(a->fd, txbuf, (size_t)n, 0, (struct sockaddr *)&path.remote, path.remote_len);
        if (w < 0)
            break; /* dropped; QUIC recovers */
        f->st.tx_pkts++;
        f->st.tx_bytes += (uint64_t)n;
    }
    rearm(f, a, budget == TX_BUDGET);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fleet *f = w->data;
    /* Bounded: a flush may touch its own agent again (callbacks), never loop forever. */
    for (int round = 0; round < 4 && f->dirty_head; round++) {
        struct fleet_agent *list = f->dirty_head;
        f->dirty_head = NULL;
        while (list) {
            struct fleet_agent *a = list;
            list = a->next_dirty;
            a->dirty = 0;
            a->next_dirty = NULL;
            flush(f, a);
        }
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fleet_agent *a = w->data;
    struct mmsghdr m[RX_BATCH];
    struct iovec iov[RX_BATCH];
    struct sockaddr_storage from[RX_BATCH];
    for (int round = 0; round < RX_ROUNDS && a->ep; round++) {
        for (int i = 0; i < RX_BATCH; i++) {
            iov[i].iov_base = rxbuf[i];
            iov[i].iov_len = MTU;
            memset(&m[i].msg_hdr, 0, sizeof(m[i].msg_hdr));
            m[i].msg_hdr.msg_name = &from[i];
            m[i].msg_hdr.msg_namelen = sizeof(from[i]);
            m[i].msg_hdr.msg_iov = &iov[i];
            m[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(a->fd, m, RX_BATCH, 0, NULL);
        if (n <= 0)
            break;
        aegis_tstamp now = aegis_now();
        for (int i = 0; i < n && a->ep; i++) {
            struct aegis_path path;
            path.local = a->local;
            path.local_len = a->local_len;
            path.remote = from[i];
            path.remote_len = m[i].msg_hdr.msg_namelen;
            F->st.rx_pkts++;
            F->st.rx_bytes += m[i].msg_len;
            aegis_endpoint_recv(a->ep, &path, rxbuf[i], m[i].msg_len, now);
        }
        if (n < RX_BATCH)
            break;
    }
    fleet_touch(F, a);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fleet_agent *a = w->data;
    if (a->ep)
        aegis_endpoint_handle_expiry(a->ep, aegis_now());
    fleet_touch(F, a);
}

/* ---- calls ------------------------------------------------------------------------------ */

static int start_call(struct fleet_agent *a, const char *method, enum aegis_rpc_shape shape,
                      const struct aegis_call_callbacks *cbs, struct aegis_call **pcall)
{
    char path[96];
    snprintf(path, sizeof(path), SVC "%s", method);
    int rv = aegis_call_start(a->conn, path, shape, NULL, cbs, a, pcall);
    fleet_touch(F, a);
    return rv;
}

static int send_msg(struct aegis_call *call, const ProtobufCMessage *msg)
{
    uint8_t *b;
    size_t l;
    int rv = aegis_proto_pack(msg, NULL, &b, &l);
    if (rv != 0)
        return rv;
    rv = aegis_call_send(call, b, l);
    aegis_free(NULL, b);
    return rv;
}

static void pump_acks(struct fleet_agent *a);
static void start_fetch(struct fleet_agent *a, struct fleet_cmd *c);

/* retry_later schedules another try of whatever this agent has pending (Subscribe, acks,
 * telemetry) on the live connection, never sooner than the server's "aegis-retry-after-ms"
 * (FLEET_CONTRACT), with jitter so a shed fleet does not come back in one wave. */
static void retry_later(struct fleet_agent *a, const struct aegis_call_status *st)
{
    uint64_t hint = AEGIS_NS_PER_S;
    for (size_t i = 0; st && i < st->ntrailers; i++)
        if (strcmp(st->trailers[i].key, "aegis-retry-after-ms") == 0) {
            char b[24];
            size_t l = st->trailers[i].value_len < 23 ? st->trailers[i].value_len : 23;
            memcpy(b, st->trailers[i].value, l);
            b[l] = 0;
            hint = strtoull(b, NULL, 10) * AEGIS_NS_PER_MS;
        }
    if (ev_is_active(&a->retry))
        return;
    uint64_t d = hint + fleet_rand(F) % (hint + 1);
    ev_timer_set(&a->retry, (double)d / 1e9, 0.0);
    ev_timer_start(F->loop, &a->retry);
}

static void ack_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    struct fleet_agent *a = ud;
    struct fleet_cmd *c = aegis_call_get_data(call);
    c->in_flight = 0;
    if (st->code != AEGIS_GRPC_OK) {
        F->st.acks_failed++;
        report_fail(a, "Ack", st);
        /* Refused for good (like the real agent: INVALID_ARGUMENT, NOT_FOUND,
         * FAILED_PRECONDITION, PERMISSION_DENIED): give up on it. Anything else (lost with
         * the connection, shed, the database away): sent again from the pending-ack journal,
         * on this connection after the hint or after the next Authenticate. */
        if (st->code == AEGIS_GRPC_INVALID_ARGUMENT || st->code == AEGIS_GRPC_NOT_FOUND ||
            st->code == AEGIS_GRPC_FAILED_PRECONDITION || st->code == AEGIS_GRPC_PERMISSION_DENIED)
            c->next_state = 0;
        else if (a->conn)
            retry_later(a, st);
        return;
    }
    if (c->next_state == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED) {
        c->next_state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
        if (c->fetch) {
            start_fetch(a, c);
            return;
        }
    } else {
        F->st.acks_ok++;
        if (F->on_succeeded)
            F->on_succeeded(F, a, c->id);
        if (F->cmd_t0)
            fleet_sample(F, aegis_now() - F->cmd_t0);
        if (c->seq > a->acked_seq)
            a->acked_seq = c->seq;
        c->next_state = 0;
    }
    pump_acks(a);
}

static void pump_acks(struct fleet_agent *a)
{
    static const struct aegis_call_callbacks cbs = {.on_close = ack_close};
    if (a->phase != FA_READY || !a->conn)
        return;
    for (int i = 0; i < FLEET_PENDING; i++) {
        struct fleet_cmd *c = &a->pending[i];
        if (!c->next_state || c->in_flight || c->fetching)
            continue;
        if (c->fetch && c->next_state == AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED &&
            (c->fetch_size == 0 || c->fetched < c->fetch_size)) {
            start_fetch(a, c); /* resume a download cut by a reconnect */
            continue;
        }
        Aegis__V1__AckRequest req = AEGIS__V1__ACK_REQUEST__INIT;
        req.command_id = c->id;
        req.sequence = c->seq;
        req.state = (Aegis__V1__CommandState)c->next_state;
        req.duplicate = c->dup || (!F->on_command && c->seq <= a->acked_seq);
        struct aegis_call *call;
        if (start_call(a, "Ack", AEGIS_RPC_UNARY, &cbs, &call) != 0)
            return;
        aegis_call_set_data(call, c);
        c->in_flight = 1;
        if (send_msg(call, &req.base) != 0 || aegis_call_close_send(call) != 0)
            aegis_call_cancel(call);
    }
}

/* FetchArtifact: count the bytes, resume from what we have after a reconnect. */
static int fetch_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)ud;
    struct fleet_cmd *c = aegis_call_get_data(call);
    Aegis__V1__ArtifactChunk *ch = aegis__v1__artifact_chunk__unpack(NULL, len, msg);
    if (!ch)
        return 1;
    if (ch->header) {
        Aegis__V1__ArtifactStatement *s = aegis__v1__artifact_statement__unpack(
            NULL, ch->header->statement.len, ch->header->statement.data);
        if (s) {
            c->fetch_size = s->size;
            aegis__v1__artifact_statement__free_unpacked(s, NULL);
        }
    }
    int bad = ch->offset != c->fetched;
    c->fetched += ch->data.len;
    F->st.fetch_bytes += ch->data.len;
    aegis__v1__artifact_chunk__free_unpacked(ch, NULL);
    return bad; /* a gap cancels the call */
}

static void fetch_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    struct fleet_agent *a = ud;
    struct fleet_cmd *c = aegis_call_get_data(call);
    c->fetching = 0;
    if (st->code == AEGIS_GRPC_OK && c->fetch_size && c->fetched == c->fetch_size) {
        F->st.fetch_ok++;
    } else {
        F->st.fetch_failed++;
        report_fail(a, "FetchArtifact", st);
        if (st->code == AEGIS_GRPC_UNAVAILABLE || st->code == AEGIS_GRPC_CANCELLED) {
            if (a->conn)
                retry_later(a, st);
            return; /* resumed later, from the offset reached */
        }
        c->next_state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
        c->fetch = 0;
    }
    pump_acks(a);
}

static void start_fetch(struct fleet_agent *a, struct fleet_cmd *c)
{
    static const struct aegis_call_callbacks cbs = {.on_message = fetch_msg,
                                                    .on_close = fetch_close};
    Aegis__V1__FetchArtifactRequest req = AEGIS__V1__FETCH_ARTIFACT_REQUEST__INIT;
    req.sha256.data = c->sha;
    req.sha256.len = 32;
    req.offset = c->fetched;
    struct aegis_call *call;
    if (start_call(a, "FetchArtifact", AEGIS_RPC_SERVER_STREAMING, &cbs, &call) != 0)
        return;
    aegis_call_set_data(call, c);
    c->fetching = 1;
    if (send_msg(call, &req.base) != 0 || aegis_call_close_send(call) != 0)
        aegis_call_cancel(call);
}

/* Subscribe: every SignedCommand becomes a pending ack. */
static int sub_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    Aegis__V1__SignedCommand *sc = aegis__v1__signed_command__unpack(NULL, len, msg);
    if (!sc)
        return 1;
    Aegis__V1__Command *cmd = aegis__v1__command__unpack(NULL, sc->command.len, sc->command.data);
    aegis__v1__signed_command__free_unpacked(sc, NULL);
    if (!cmd)
        return 1;
    F->st.cmds_received++;
    struct fleet_cmd *slot = NULL;
    for (int i = 0; i < FLEET_PENDING; i++) {
        struct fleet_cmd *c = &a->pending[i];
        if (c->next_state && c->seq == cmd->sequence) {
            slot = NULL; /* already being handled: a redelivery */
            F->st.dup_cmds++;
            goto out;
        }
        if (!c->next_state && !c->in_flight && !c->fetching && !slot)
            slot = c;
    }
    if (!slot) {
        /* Journal full: the server redelivers later (and the next Subscribe starts below). */
        if (!a->resub_floor || cmd->sequence < a->resub_floor)
            a->resub_floor = cmd->sequence;
        goto out;
    }
    memset(slot, 0, sizeof(*slot));
    snprintf(slot->id, sizeof(slot->id), "%s", cmd->id);
    slot->seq = cmd->sequence;
    if (a->resub_floor == cmd->sequence)
        a->resub_floor = 0;
    int dup = F->on_command ? !F->on_command(F, a, cmd->id, cmd->sequence)
                            : cmd->sequence <= a->acked_seq;
    if (dup) {
        slot->dup = 1;
        F->st.dup_cmds++; /* executed already: acknowledge again, do not re-run */
        slot->next_state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
    } else if (cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT &&
               cmd->load_artifact->sha256.len == 32) {
        /* A download takes a while: RECEIVED first, SUCCEEDED when the bytes are in. */
        slot->next_state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED;
        slot->fetch = 1;
        memcpy(slot->sha, cmd->load_artifact->sha256.data, 32);
    } else {
        /* Done at once (the effect above): the outcome is the only Ack, as the real agent
         * sends only the furthest pending state of a command (agent_run.c). */
        slot->next_state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
    }
    pump_acks(a);
out:
    aegis__v1__command__free_unpacked(cmd, NULL);
    return 0;
}

static void sub_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    a->sub = NULL;
    report_fail(a, "Subscribe", st);
    /* Shed by the server: subscribe again after its hint. Anything else: start over. */
    if (a->conn && a->phase == FA_READY) {
        if (st->code == AEGIS_GRPC_UNAVAILABLE)
            retry_later(a, st);
        else
            aegis_conn_close(a->conn, 0, "subscribe ended");
    }
}

static void subscribe(struct fleet_agent *a)
{
    static const struct aegis_call_callbacks cbs = {.on_message = sub_msg, .on_close = sub_close};
    Aegis__V1__SubscribeRequest req = AEGIS__V1__SUBSCRIBE_REQUEST__INIT;
    req.after_sequence = a->acked_seq;
    if (a->resub_floor && a->resub_floor - 1 < req.after_sequence)
        req.after_sequence = a->resub_floor - 1;
    if (start_call(a, "Subscribe", AEGIS_RPC_SERVER_STREAMING, &cbs, &a->sub) != 0) {
        a->sub = NULL;
        return;
    }
    if (send_msg(a->sub, &req.base) != 0 || aegis_call_close_send(a->sub) != 0)
        aegis_call_cancel(a->sub);
}

/* Authenticate (seed 000): hello, challenge, proof, result. */
static int auth_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct fleet_agent *a = ud;
    Aegis__V1__AuthServerMessage *m = aegis__v1__auth_server_message__unpack(NULL, len, msg);
    if (!m)
        return 1;
    int rv = 0;
    if (m->step_case == AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_CHALLENGE &&
        m->challenge->nonce.len == 32) {
        size_t tl = strlen(m->challenge->server_time), hl = strlen(a->id->host_id);
        uint8_t buf[32 + 64 + 64];
        if (tl > 64 || hl > 64) {
            rv = 1;
            goto out;
        }
        memcpy(buf, m->challenge->nonce.data, 32);
        memcpy(buf + 32, m->challenge->server_time, tl);
        memcpy(buf + 32 + tl, a->id->host_id, hl);
        uint8_t *sig;
        size_t sl;
        if (aegis_key_sign(a->id->key, buf, 32 + tl + hl, &sig, &sl) != 0) {
            rv = 1;
            goto out;
        }
        Aegis__V1__AuthProof p = AEGIS__V1__AUTH_PROOF__INIT;
        Aegis__V1__AuthClientMessage cm = AEGIS__V1__AUTH_CLIENT_MESSAGE__INIT;
        p.signature.data = sig;
        p.signature.len = sl;
        p.machine_id_hash.data = a->id->machine_id_hash;
        p.machine_id_hash.len = 32;
        cm.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_PROOF;
        cm.proof = &p;
        rv = send_msg(call, &cm.base) != 0;
        aegis_free(NULL, sig);
        if (rv == 0)
            aegis_call_close_send(call);
    } else if (m->step_case == AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT) {
        if (m->result->ok && a->phase == FA_AUTHING) {
            a->phase = FA_READY;
            a->attempt = 0;
            a->t_auth = aegis_now();
            F->st.auth_ok++;
            F->st.ready++;
            subscribe(a);
            pump_acks(a);
        } else if (!m->result->ok) {
            F->st.auth_failed++;
            if (F->st.auth_failed <= MAX_REPORTED_CLOSES)
                fprintf(stderr, "%s: agent %zu: Authenticate refused: %s\n", fleet_prog, a->idx,
                        m->result->detail);
        }
    }
out:
    aegis__v1__auth_server_message__free_unpacked(m, NULL);
    return rv;
}

static void auth_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    a->auth = NULL;
    if (a->phase == FA_AUTHING && a->conn) {
        if (st->code != AEGIS_GRPC_OK)
            F->st.auth_failed++;
        if (st->code == AEGIS_GRPC_UNAVAILABLE) {
            F->st.auth_shed++;
            retry_later(a, st); /* shed: authenticate again on this connection */
        } else {
            aegis_conn_close(a->conn, 0, "authentication failed");
        }
    }
}

static void authenticate(struct fleet_agent *a)
{
    static const struct aegis_call_callbacks cbs = {.on_message = auth_msg, .on_close = auth_close};
    static char cap0[] = "zstd";
    char *caps[1] = {cap0};
    a->phase = FA_AUTHING;
    Aegis__V1__AuthHello h = AEGIS__V1__AUTH_HELLO__INIT;
    Aegis__V1__AuthClientMessage cm = AEGIS__V1__AUTH_CLIENT_MESSAGE__INIT;
    h.agent_id = a->id->agent_id;
    h.host_id = a->id->host_id;
    h.version = (char *)FLEET_AGENT_VERSION;
    h.n_capabilities = 1;
    h.capabilities = caps;
    cm.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_HELLO;
    cm.hello = &h;
    if (start_call(a, "Authenticate", AEGIS_RPC_BIDI, &cbs, &a->auth) != 0) {
        a->auth = NULL;
        aegis_conn_close(a->conn, 0, "cannot start Authenticate");
        return;
    }
    if (send_msg(a->auth, &cm.base) != 0)
        aegis_call_cancel(a->auth);
}

/* Enroll (enroll scenario): a self-signed certificate asks for a fleet certificate. */
static void enroll_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    if (st->code == AEGIS_GRPC_OK && a->enrolled) {
        F->st.enroll_ok++;
    } else {
        F->st.enroll_failed++;
        if (F->st.enroll_failed <= MAX_REPORTED_CLOSES)
            fprintf(stderr, "%s: agent %zu: Enroll: %s %s\n", fleet_prog, a->idx,
                    aegis_grpc_status_name(st->code), st->message);
    }
    a->phase = FA_IDLE;
    if (a->conn)
        aegis_conn_close(a->conn, 0, "enrolled");
}

static int enroll_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    Aegis__V1__EnrollResponse *r = aegis__v1__enroll_response__unpack(NULL, len, msg);
    if (!r)
        return 1;
    a->enrolled = r->agent_id[0] != 0 && r->certificate_pem[0] != 0;
    aegis__v1__enroll_response__free_unpacked(r, NULL);
    return 0;
}

static void enroll(struct fleet_agent *a)
{
    static const struct aegis_call_callbacks cbs = {.on_message = enroll_msg,
                                                    .on_close = enroll_close};
    Aegis__V1__EnrollRequest req = AEGIS__V1__ENROLL_REQUEST__INIT;
    Aegis__V1__HostFacts host = AEGIS__V1__HOST_FACTS__INIT;
    host.host_id = a->id->host_id;
    host.hostname = a->id->host_id;
    host.os = (char *)"linux";
    req.token = (char *)F->enroll_token;
    req.host = &host;
    req.machine_id_hash.data = a->id->machine_id_hash;
    req.machine_id_hash.len = 32;
    req.agent_version = (char *)FLEET_AGENT_VERSION;
    struct aegis_call *call;
    if (start_call(a, "Enroll", AEGIS_RPC_UNARY, &cbs, &call) != 0) {
        F->st.enroll_failed++;
        aegis_conn_close(a->conn, 0, "cannot start Enroll");
        return;
    }
    if (send_msg(call, &req.base) != 0 || aegis_call_close_send(call) != 0)
        aegis_call_cancel(call);
}

/* ---- telemetry ------------------------------------------------------------------------- */

static void tel_pump(struct fleet_agent *a);

static int tel_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)ud;
    Aegis__V1__TelemetrySummary *s = aegis__v1__telemetry_summary__unpack(NULL, len, msg);
    if (!s)
        return 1;
    F->st.tel_batches_committed += s->n_committed_batch_ids;
    F->st.tel_events_committed += s->n_committed_batch_ids * F->tel_events_per_batch;
    F->st.tel_rejected += s->n_rejected;
    aegis__v1__telemetry_summary__free_unpacked(s, NULL);
    return 0;
}

static void tel_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct fleet_agent *a = ud;
    a->tel = NULL;
    if (st->code != AEGIS_GRPC_OK) {
        F->st.tel_calls_failed++;
        report_fail(a, "ReportTelemetry", st);
        if (F->tel_running && a->conn)
            retry_later(a, st);
    } else if (F->tel_running && a->phase == FA_READY) {
        fleet_telemetry_call(F, a);
    }
}

static void tel_writable(struct aegis_call *call, void *ud)
{
    (void)call;
    tel_pump(ud);
}

static void tel_pump(struct fleet_agent *a)
{
    static char k1[] = "rule_id", v1[] = "7", k2[] = "dst", v2[] = "10.0.0.1";
    static char kind[] = "flow_denied";
    while (a->tel && a->tel_outstanding > 0) {
        unsigned ne = F->tel_events_per_batch;
        Aegis__V1__Event *ev = calloc(ne, sizeof(*ev));
        Aegis__V1__Event **evp = calloc(ne, sizeof(*evp));
        Aegis__V1__Event__AttrsEntry at[2] = {AEGIS__V1__EVENT__ATTRS_ENTRY__INIT,
                                              AEGIS__V1__EVENT__ATTRS_ENTRY__INIT};
        Aegis__V1__Event__AttrsEntry *atp[2] = {&at[0], &at[1]};
        if (!ev || !evp) {
            free(ev);
            free(evp);
            return;
        }
        at[0].key = k1;
        at[0].value = v1;
        at[1].key = k2;
        at[1].value = v2;
        int64_t now = (int64_t)aegis_wallclock();
        for (unsigned i = 0; i < ne; i++) {
            aegis__v1__event__init(&ev[i]);
            ev[i].kind = kind;
            ev[i].time_unix_ns = now;
            ev[i].n_attrs = 2;
            ev[i].attrs = atp;
            evp[i] = &ev[i];
        }
        Aegis__V1__TelemetryBatch b = AEGIS__V1__TELEMETRY_BATCH__INIT;
        b.batch_id = a->tel_batch + 1;
        b.agent_seq = b.batch_id;
        b.n_events = ne;
        b.events = evp;
        b.created_unix_ns = now;
        int rv = send_msg(a->tel, &b.base);
        free(ev);
        free(evp);
        if (rv == -EAGAIN)
            return; /* on_writable resumes */
        if (rv != 0) {
            aegis_call_cancel(a->tel);
            return;
        }
        a->tel_batch++;
        a->tel_outstanding--;
    }
    if (a->tel)
        aegis_call_close_send(a->tel);
    fleet_touch(F, a);
}

int fleet_telemetry_call(struct fleet *f, struct fleet_agent *a)
{
    static const struct aegis_call_callbacks cbs = {
        .on_message = tel_msg, .on_close = tel_close, .on_writable = tel_writable};
    if (a->tel || a->phase != FA_READY)
        return AEGIS_ERR_STATE;
    int rv = start_call(a, "ReportTelemetry", AEGIS_RPC_CLIENT_STREAMING, &cbs, &a->tel);
    if (rv != 0) {
        a->tel = NULL;
        return rv;
    }
    a->tel_outstanding = (int)f->tel_batches_per_call;
    tel_pump(a);
    return 0;
}

/* ---- connection life -------------------------------------------------------------------- */

static void on_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                           void *ud)
{
    (void)conn;
    (void)peer;
    struct fleet_agent *a = ud;
    F->st.handshakes_ok++;
    if (a->phase == FA_ENROLLING)
        enroll(a);
    else
        authenticate(a);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fleet_agent *a = w->data;
    if (a->phase == FA_AUTHING && a->conn && !a->auth) {
        authenticate(a);
        return;
    }
    if (a->phase != FA_READY || !a->conn)
        return;
    if (!a->sub)
        subscribe(a);
    pump_acks(a);
    if (F->tel_running && !a->tel)
        fleet_telemetry_call(F, a);
}

static void backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct fleet_agent *a = w->data;
    if (a->phase == FA_BACKOFF) {
        F->st.retries++;
        fleet_connect(F, a);
    }
}

static void on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    struct fleet_agent *a = ud;
    if (conn != a->conn)
        return; /* an older connection of this agent */
    a->conn = NULL;
    F->st.closes++;
    if (a->phase == FA_CONNECTING)
        F->st.handshakes_failed++;
    if (a->phase == FA_READY && F->st.ready)
        F->st.ready--;
    if (F->st.closes <= MAX_REPORTED_CLOSES && a->phase != FA_IDLE) {
        char b[256];
        fprintf(stderr, "%s: agent %zu: connection closed: %s\n", fleet_prog, a->idx,
                aegis_close_reason_format(why, b, sizeof(b)));
    }
    if (a->phase == FA_ENROLLING)
        F->st.enroll_failed++; /* the handshake failed: Enroll never ran */
    if (a->phase == FA_IDLE || a->phase == FA_ENROLLING) {
        a->phase = FA_IDLE;
        return;
    }
    /* Exponential backoff with full jitter (DESIGN §5). */
    uint64_t cap = F->backoff_base << (a->attempt < 16 ? a->attempt : 16);
    if (cap > F->backoff_cap)
        cap = F->backoff_cap;
    uint64_t d = cap ? fleet_rand(F) % cap : 0;
    a->attempt++;
    a->phase = FA_BACKOFF;
    ev_timer_set(&a->backoff, (double)d / 1e9, 0.0);
    ev_timer_start(F->loop, &a->backoff);
}

int fleet_make_endpoint(struct fleet *f, struct fleet_agent *a)
{
    if (a->ep)
        return 0;
    struct aegis_endpoint_config cfg = {0};
    cfg.tls.cert_pem = a->id->cert_pem;
    cfg.tls.cert_len = a->id->cert_len;
    cfg.tls.key_pem = a->id->key_pem;
    cfg.tls.key_len = a->id->key_len;
    cfg.tls.pins[0] = f->server_pin;
    cfg.tls.npins = 1;
    cfg.idle_timeout_ns = f->idle_timeout;
    /* A shorter idle timeout needs keep-alives well inside it (three per timeout). */
    if (f->idle_timeout && f->idle_timeout / 3 < 15 * AEGIS_NS_PER_S)
        cfg.keepalive_ns = f->idle_timeout / 3;
    cfg.callbacks.on_established = on_established;
    cfg.callbacks.on_closed = on_closed;
    cfg.user_data = a;
    return aegis_endpoint_new(&cfg, &a->ep);
}

int fleet_connect(struct fleet *f, struct fleet_agent *a)
{
    int rv = fleet_make_endpoint(f, a);
    if (rv != 0)
        return rv;
    struct aegis_path path;
    memset(&path, 0, sizeof(path));
    path.local = a->local;
    path.local_len = a->local_len;
    path.remote = f->server;
    path.remote_len = f->server_len;
    if (a->phase != FA_ENROLLING)
        a->phase = FA_CONNECTING;
    a->t_connect = aegis_now();
    f->st.connects++;
    rv = aegis_endpoint_connect(a->ep, &path, "localhost", a->t_connect, &a->conn);
    if (rv != 0) {
        a->conn = NULL;
        a->phase = FA_IDLE;
        return rv;
    }
    fleet_touch(f, a);
    return 0;
}

void fleet_drop(struct fleet *f, struct fleet_agent *a)
{
    ev_timer_stop(f->loop, &a->backoff);
    ev_timer_stop(f->loop, &a->retry);
    if (a->phase == FA_READY && f->st.ready)
        f->st.ready--;
    a->phase = FA_IDLE;
    if (a->conn) {
        aegis_conn_close(a->conn, 0, "bench done");
        fleet_touch(f, a);
    }
}

int fleet_init(struct fleet *f, struct ev_loop *loop, size_t n, struct fleet_ident *ids,
               const char *server, const char *pin, unsigned nsrc)
{
    F = f;
    f->loop = loop;
    f->n = n;
    f->ids = ids;
    if (aegis_parse_addr(server, &f->server, &f->server_len) != 0)
        return -EINVAL;
    snprintf(f->server_pin, sizeof(f->server_pin), "%s", pin);
    f->agents = calloc(n, sizeof(*f->agents));
    if (!f->agents)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        f->agents[i].fd = -1;
    for (size_t i = 0; i < n; i++) {
        struct fleet_agent *a = &f->agents[i];
        a->idx = i;
        a->id = &ids[i];
        /* Spread over 127.0.0.1..nsrc so no source address runs out of ports (or on the one
         * address given). */
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(i % (nsrc ? nsrc : 1)));
        if (f->bind_ip && inet_pton(AF_INET, f->bind_ip, &sin.sin_addr) != 1)
            return -EINVAL;
        a->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (a->fd < 0)
            return -errno;
        if (bind(a->fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
            return -errno;
        a->local_len = sizeof(a->local);
        if (getsockname(a->fd, (struct sockaddr *)&a->local, &a->local_len) != 0)
            return -errno;
        ev_io_init(&a->rio, on_read, a->fd, EV_READ);
        ev_timer_init(&a->timer, on_timer, 0.0, 0.0);
        ev_timer_init(&a->backoff, backoff_cb, 0.0, 0.0);
        ev_timer_init(&a->retry, retry_cb, 0.0, 0.0);
        a->rio.data = a->timer.data = a->backoff.data = a->retry.data = a;
        ev_io_start(loop, &a->rio);
    }
    ev_prepare_init(&f->prep, on_prepare);
    f->prep.data = f;
    ev_prepare_start(loop, &f->prep);
    return 0;
}

void fleet_free(struct fleet *f)
{
    if (!f->agents)
        return;
    ev_prepare_stop(f->loop, &f->prep);
    for (size_t i = 0; i < f->n; i++) {
        struct fleet_agent *a = &f->agents[i];
        if (a->fd >= 0) {
            ev_io_stop(f->loop, &a->rio);
            close(a->fd);
        }
        ev_timer_stop(f->loop, &a->timer);
        ev_timer_stop(f->loop, &a->backoff);
        ev_timer_stop(f->loop, &a->retry);
        aegis_endpoint_del(a->ep);
    }
    free(f->agents);
    free(f->lat);
    f->agents = NULL;
}
