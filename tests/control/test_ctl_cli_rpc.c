/*
 * aegisctl's real RPC layer (ctl_cli_rpc.c) against an in-process
 * aegis_transport server on 127.0.0.1 (its own thread and libev loop): a
 * unary call and its table, a server refusal (exit 1 with the status name),
 * a 1 MiB upload that must go through the send-queue backpressure, a server
 * stream and ^C during it, a wrong pin (exit 3 naming both keys), a refused
 * certificate, and a server that is not there (exit 3 within the timeout).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ctl_cli_fake.h"

#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport_ev.h>
#include <aegis/v1/operator.pb-c.h>

#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cred {
    char *cert, *key;
};

static struct cred ca, server, op, agent;
static char server_pin[AEGIS_PIN_STRLEN];
static char dir[64], op_cert[128], op_key[128], ag_cert[128], ag_key[128];

/* ---- PKI ----------------------------------------------------------------------- */

static void make_cred(struct cred *out, const struct aegis_cert_spec *spec,
                      const struct cred *issuer)
{
    struct aegis_key *key = NULL, *ikey = NULL;
    uint8_t *spki = NULL;
    size_t spkilen = 0, len = 0;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &key), 0);
    assert_int_equal(aegis_key_spki_der(key, &spki, &spkilen), 0);
    if (issuer)
        assert_int_equal(aegis_key_from_pem(NULL, issuer->key, strlen(issuer->key), &ikey), 0);
    assert_int_equal(aegis_cert_issue(NULL, spec, spki, spkilen, issuer ? ikey : key,
                                      issuer ? issuer->cert : NULL, &out->cert, &len),
                     0);
    assert_int_equal(aegis_key_to_pem(key, &out->key, &len), 0);
    aegis_free(NULL, spki);
    aegis_key_del(key);
    aegis_key_del(ikey);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- the server thread ------------------------------------------------------------ */

struct srv {
    struct ev_loop *loop;
    struct aegis_ev *ev;
    ev_async stop;
    pthread_t thread;
    unsigned port;
    atomic_ulong upload_bytes;
    atomic_int upload_msgs;
    atomic_int refused;
    atomic_int hang_status;  /* status the hanging tail ended with on the server */
    atomic_int watch_status; /* status the never-ending WatchCommand ended with */
};

static struct srv S;

struct scall {
    const char *path;
    size_t bytes;
    int msgs;
    int bad;
    int hang;       /* TailTelemetry for agent "hang": never finishes */
    int hang_watch; /* WatchCommand: sends done=true, never finishes */
};

static void finish_with(struct aegis_call *call, const ProtobufCMessage *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (ctl_pack(m, &buf, &len) == 0) {
        aegis_call_send(call, buf, len);
        aegis_free(NULL, buf);
        aegis_call_finish(call, 0, "", NULL, 0);
    } else {
        aegis_call_finish(call, 13, "pack failed", NULL, 0);
    }
}

static int s_message(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    struct scall *c = ud;
    c->msgs++;
    if (strstr(c->path, "TailTelemetry")) {
        Aegis__V1__TailTelemetryRequest *t = NULL;
        if (ctl_unpack(&aegis__v1__tail_telemetry_request__descriptor, msg, len,
                       (ProtobufCMessage **)&t) == 0) {
            c->hang = t->filter && t->filter->n_agent_ids == 1 &&
                      strcmp(t->filter->agent_ids[0], "hang") == 0;
            ctl_pb_free(&t->base);
        }
    }
    if (strstr(c->path, "UploadArtifact") && c->msgs > 1) {
        Aegis__V1__UploadArtifactRequest *r = NULL;
        if (ctl_unpack(&aegis__v1__upload_artifact_request__descriptor, msg, len,
                       (ProtobufCMessage **)&r) == 0) {
            c->bytes += r->chunk.len;
            ctl_pb_free(&r->base);
        } else {
            c->bad = 1;
        }
    }
    return 0;
}

static void s_half_close(struct aegis_call *call, void *ud)
{
    struct scall *c = ud;
    if (strstr(c->path, "ListTokens")) {
        Aegis__V1__EnrollmentToken t = AEGIS__V1__ENROLLMENT_TOKEN__INIT;
        t.token_id = (char *)"tok-7";
        t.description = (char *)"from the wire";
        t.max_uses = 2;
        Aegis__V1__EnrollmentToken *ts[] = {&t};
        Aegis__V1__ListTokensResponse r = AEGIS__V1__LIST_TOKENS_RESPONSE__INIT;
        r.n_tokens = 1;
        r.tokens = ts;
        finish_with(call, &r.base);
    } else if (strstr(c->path, "RevokeToken")) {
        const uint8_t ms[] = "1500";
        struct aegis_metadata md = {"aegis-retry-after-ms", ms, 4};
        aegis_call_finish(call, 14, "database unavailable", &md, 1);
    } else if (strstr(c->path, "UploadArtifact")) {
        atomic_store(&S.upload_bytes, c->bytes);
        atomic_store(&S.upload_msgs, c->msgs);
        Aegis__V1__ArtifactInfo ai = AEGIS__V1__ARTIFACT_INFO__INIT;
        ai.size = c->bytes;
        ai.name = (char *)"wire";
        Aegis__V1__UploadArtifactResponse r = AEGIS__V1__UPLOAD_ARTIFACT_RESPONSE__INIT;
        r.artifact = &ai;
        if (c->bad)
            aegis_call_finish(call, 3, "bad chunk", NULL, 0);
        else
            finish_with(call, &r.base);
    } else if (strstr(c->path, "WatchCommand")) {
        /* The final progress message, but the stream stays open: the client
         * must stop on done=true by itself (it used to pause and hang). */
        c->hang_watch = 1;
        Aegis__V1__CommandDelivery d = AEGIS__V1__COMMAND_DELIVERY__INIT;
        d.agent_id = (char *)"a1";
        d.state = AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED;
        d.attempts = 1;
        d.detail = (char *)"";
        Aegis__V1__CommandProgress p = AEGIS__V1__COMMAND_PROGRESS__INIT;
        p.delivery = &d;
        p.done = 1;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (ctl_pack(&p.base, &buf, &len) == 0) {
            aegis_call_send(call, buf, len);
            aegis_free(NULL, buf);
        }
    } else if (strstr(c->path, "TailTelemetry") && c->hang) {
        /* The operator presses ^C while the stream is open. */
        kill(getpid(), SIGINT);
    } else if (strstr(c->path, "TailTelemetry")) {
        for (int i = 0; i < 3; i++) {
            Aegis__V1__Event e = AEGIS__V1__EVENT__INIT;
            e.kind = (char *)(i == 2 ? "last" : "tick");
            Aegis__V1__TelemetryRecord r = AEGIS__V1__TELEMETRY_RECORD__INIT;
            r.agent_id = (char *)"a1";
            r.item_case = AEGIS__V1__TELEMETRY_RECORD__ITEM_EVENT;
            r.event = &e;
            uint8_t *buf = NULL;
            size_t len = 0;
            if (ctl_pack(&r.base, &buf, &len) == 0) {
                aegis_call_send(call, buf, len);
                aegis_free(NULL, buf);
            }
        }
        aegis_call_finish(call, 0, "", NULL, 0);
    } else {
        aegis_call_finish(call, 12, "not in this test", NULL, 0);
    }
}

static void s_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct scall *c = ud;
    if (c->hang)
        atomic_store(&S.hang_status, st->code);
    if (c->hang_watch)
        atomic_store(&S.watch_status, st->code);
    free(ud);
}

static const struct aegis_call_callbacks s_cbs = {
    .on_message = s_message, .on_half_close = s_half_close, .on_close = s_close};

static int s_on_call(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                     void *user_data)
{
    (void)md;
    (void)n;
    (void)user_data;
    struct scall *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->path = aegis_call_path(call);
    aegis_call_set_callbacks(call, &s_cbs, c);
    return 0;
}

/* Operators only, like aegis-control (FLEET_CONTRACT identities). */
static int s_handshake(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                       char *reason, size_t reasonlen, void *user_data)
{
    (void)conn;
    (void)user_data;
    if (peer->chains_to_ca && strcmp(peer->subject_ou, "aegis-operator") == 0)
        return 0;
    atomic_fetch_add(&S.refused, 1);
    snprintf(reason, reasonlen, "not an operator certificate");
    return 1;
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *server_main(void *arg)
{
    (void)arg;
    /* SIGINT is for the client's loop (the operator's ^C), not for us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    ev_run(S.loop, 0);
    return NULL;
}

static int start_server(void **state)
{
    (void)state;
    assert_int_equal(fake_tmpdir(dir, "rpc"), 0);
    static const char *const ips[] = {"127.0.0.1"};
    struct aegis_cert_spec s = {.role = AEGIS_ROLE_CA, .common_name = "CLI Test CA"};
    make_cred(&ca, &s, NULL);
    s = (struct aegis_cert_spec){
        .role = AEGIS_ROLE_SERVER, .common_name = "control", .ips = ips, .n_ips = 1};
    make_cred(&server, &s, &ca);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_OPERATOR, .common_name = "alice"};
    make_cred(&op, &s, &ca);
    s = (struct aegis_cert_spec){.role = AEGIS_ROLE_AGENT, .common_name = "agent-1"};
    make_cred(&agent, &s, &ca);
    struct aegis_cert_info info;
    assert_int_equal(aegis_cert_info_pem(server.cert, strlen(server.cert), &info), 0);
    memcpy(server_pin, info.pin, sizeof(server_pin));
    snprintf(op_cert, sizeof(op_cert), "%s/op.pem", dir);
    snprintf(op_key, sizeof(op_key), "%s/op.key", dir);
    snprintf(ag_cert, sizeof(ag_cert), "%s/agent.pem", dir);
    snprintf(ag_key, sizeof(ag_key), "%s/agent.key", dir);
    write_file(op_cert, op.cert);
    write_file(op_key, op.key);
    write_file(ag_cert, agent.cert);
    write_file(ag_key, agent.key);

    static const char *const paths[] = {
        "/aegis.v1.OperatorService/ListTokens", "/aegis.v1.OperatorService/RevokeToken",
        "/aegis.v1.OperatorService/UploadArtifact", "/aegis.v1.OperatorService/TailTelemetry",
        "/aegis.v1.OperatorService/WatchCommand"};
    static const enum aegis_rpc_shape shapes[] = {
        AEGIS_RPC_UNARY, AEGIS_RPC_UNARY, AEGIS_RPC_CLIENT_STREAMING, AEGIS_RPC_SERVER_STREAMING,
        AEGIS_RPC_SERVER_STREAMING};
    struct aegis_rpc_handler h[5];
    for (size_t i = 0; i < 5; i++)
        h[i] = (struct aegis_rpc_handler){paths[i], shapes[i], s_on_call, NULL};
    struct aegis_endpoint_config cfg = {0};
    cfg.is_server = 1;
    cfg.tls.cert_pem = server.cert;
    cfg.tls.cert_len = strlen(server.cert);
    cfg.tls.key_pem = server.key;
    cfg.tls.key_len = strlen(server.key);
    cfg.tls.ca_pem = ca.cert;
    cfg.tls.ca_len = strlen(ca.cert);
    cfg.tls.accept_any_client_cert = 1;
    cfg.handlers = h;
    cfg.nhandlers = 5;
    cfg.callbacks.on_handshake = s_handshake;
    S.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(S.loop);
    assert_int_equal(aegis_ev_new(S.loop, &cfg, "127.0.0.1:0", &S.ev), 0);
    S.port = aegis_ev_port(S.ev);
    ev_async_init(&S.stop, on_stop);
    ev_async_start(S.loop, &S.stop);
    assert_int_equal(pthread_create(&S.thread, NULL, server_main, NULL), 0);
    return 0;
}

static int stop_server(void **state)
{
    (void)state;
    ev_async_send(S.loop, &S.stop);
    pthread_join(S.thread, NULL);
    aegis_ev_del(S.ev);
    ev_loop_destroy(S.loop);
    struct cred *cs[] = {&ca, &server, &op, &agent};
    for (size_t i = 0; i < 4; i++) {
        aegis_free(NULL, cs[i]->cert);
        aegis_free(NULL, cs[i]->key);
    }
    return fake_rmtree(dir);
}

/* The CLI sees the server through the environment, like an operator's shell. */
static char addr[64];

static void real_env(struct fake *f, const char *pin, const char *cert, const char *key)
{
    fake_init(f);
    f->real = 1;
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", S.port);
    f->env[0][0] = "AEGIS_SERVER";
    f->env[0][1] = addr;
    f->env[1][0] = "AEGIS_PIN";
    f->env[1][1] = pin;
    f->env[2][0] = "AEGIS_CERT";
    f->env[2][1] = cert;
    f->env[3][0] = "AEGIS_KEY";
    f->env[3][1] = key;
    f->env[4][0] = "HOME";
    f->env[4][1] = "/nonexistent";
    f->nenv = 5;
}

static void test_unary_and_status(void **state)
{
    (void)state;
    struct fake f;
    real_env(&f, server_pin, op_cert, op_key);
    assert_int_equal(fake_run(&f, "tokens", "list", "--timeout", "10s", NULL), 0);
    const char *cells[] = {"ID",    "DESCRIPTION",   "USES", "EXPIRES", "STATE",  "LABELS",
                           "tok-7", "from the wire", "0/2",  "-",       "active", "-"};
    char *want = fake_expect_table(6, cells, 2);
    assert_string_equal(f.out, want);
    free(want);
    /* a server error: exit 1, status name, message, the server's retry-after
     * trailer and a hint */
    assert_int_equal(fake_run(&f, "tokens", "revoke", "t1", "--timeout", "10s", NULL), 1);
    if (!strstr(f.err, "RevokeToken: UNAVAILABLE: database unavailable (retry after 1500 ms) "
                       "(the server or its database is unavailable; retry later)"))
        fail_msg("got: %s", f.err);
    /* a method this server does not serve */
    assert_int_equal(fake_run(&f, "audit", "list", "--timeout", "10s", NULL), 1);
    assert_non_null(strstr(f.err, "ListAudit: UNIMPLEMENTED"));
    fake_free(&f);
}

static void test_upload_backpressure(void **state)
{
    (void)state;
    char keyp[160], blob[160], err[256], id[17];
    snprintf(keyp, sizeof(keyp), "%s/art.key", dir);
    snprintf(blob, sizeof(blob), "%s/blob", dir);
    if (access(keyp, F_OK) != 0)
        assert_int_equal(ctl_keygen(keyp, id, err, sizeof(err)), 0);
    /* 1 MiB + 1: four times the send-queue bound, so sends must hit -EAGAIN */
    size_t n = (1u << 20) + 1;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 31 + (i >> 9));
    FILE *fp = fopen(blob, "wb");
    assert_int_equal(fwrite(data, 1, n, fp), n);
    fclose(fp);
    free(data);
    struct fake f;
    real_env(&f, server_pin, op_cert, op_key);
    assert_int_equal(fake_run(&f, "artifacts", "upload", blob, "--name", "wire", "--kind", "file",
                              "--signing-key", keyp, "--timeout", "10s", NULL),
                     0);
    assert_true(atomic_load(&S.upload_bytes) == n);
    assert_int_equal(atomic_load(&S.upload_msgs), 1 + 17); /* header + 16 full chunks + 1 byte */
    assert_non_null(strstr(f.out, "uploaded wire (1.0 MiB, file"));
    assert_non_null(strstr(f.err, "upload: 1048577/1048577 (100%)"));
    fake_free(&f);
}

static void test_server_stream(void **state)
{
    (void)state;
    struct fake f;
    real_env(&f, server_pin, op_cert, op_key);
    assert_int_equal(fake_run(&f, "telemetry", "tail", NULL), 0);
    assert_string_equal(f.out,
                        "-  a1  event  tick  \n-  a1  event  tick  \n-  a1  event  last  \n");
    fake_free(&f);
}

static void test_interrupt_stream(void **state)
{
    (void)state;
    struct fake f;
    real_env(&f, server_pin, op_cert, op_key);
    atomic_store(&S.hang_status, -1);
    /* ^C during `telemetry tail`: the call is cancelled on both sides and
     * tail ends normally (exit 0) instead of hanging. */
    assert_int_equal(fake_run(&f, "telemetry", "tail", "--agent", "hang", NULL), 0);
    for (int i = 0; i < 200 && atomic_load(&S.hang_status) < 0; i++)
        usleep(10000); /* bounded wait for the server thread to see the reset */
    assert_int_equal(atomic_load(&S.hang_status), 1 /* CANCELLED */);
    fake_free(&f);
}

/* `commands watch` ends by itself on the final progress message even when
 * the server keeps the stream open; the server sees the stream cancelled. */
static void test_watch_stops_on_done(void **state)
{
    (void)state;
    struct fake f;
    real_env(&f, server_pin, op_cert, op_key);
    atomic_store(&S.watch_status, -1);
    assert_int_equal(fake_run(&f, "commands", "watch", "c0ffee00-0000-4000-8000-000000000001",
                              "--timeout", "10s", NULL),
                     0);
    assert_non_null(strstr(f.out, "a1 succeeded attempts=1"));
    for (int i = 0; i < 200 && atomic_load(&S.watch_status) < 0; i++)
        usleep(10000); /* bounded wait for the server thread to see the reset */
    assert_int_equal(atomic_load(&S.watch_status), 1 /* CANCELLED */);
    fake_free(&f);
}

static void test_connect_failures(void **state)
{
    (void)state;
    struct fake f;
    /* wrong pin: exit 3, naming the server's key and the pin we expected */
    const char *wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    real_env(&f, wrong, op_cert, op_key);
    assert_int_equal(fake_run(&f, "tokens", "list", "--timeout", "10s", NULL), CTL_EXIT_CONNECT);
    char want[256];
    snprintf(want, sizeof(want),
             "cannot connect to %s: server key %s does not match pin %s "
             "(check --pin or AEGIS_PIN",
             addr, server_pin, wrong);
    if (!strstr(f.err, want))
        fail_msg("got: %s\nwant: %s", f.err, want);
    fake_free(&f);
    /* two pins, the second one right (key rotation): connects */
    char two[128];
    snprintf(two, sizeof(two), "%s,%s", wrong, server_pin);
    real_env(&f, two, op_cert, op_key);
    assert_int_equal(fake_run(&f, "tokens", "list", "--timeout", "10s", NULL), 0);
    fake_free(&f);
    /* an agent certificate: the server refuses the handshake */
    int before = atomic_load(&S.refused);
    real_env(&f, server_pin, ag_cert, ag_key);
    assert_int_equal(fake_run(&f, "tokens", "list", "--timeout", "10s", NULL), CTL_EXIT_CONNECT);
    assert_non_null(strstr(f.err, "refused by the server: not an operator certificate"));
    assert_int_equal(atomic_load(&S.refused), before + 1);
    fake_free(&f);
    /* a malformed pin is a usage error; missing files are local input errors */
    real_env(&f, "sha256//short", op_cert, op_key);
    assert_int_equal(fake_run(&f, "tokens", "list", NULL), CTL_EXIT_USAGE);
    assert_non_null(strstr(f.err, "bad pin"));
    fake_free(&f);
    real_env(&f, server_pin, "/nonexistent/op.pem", op_key);
    assert_int_equal(fake_run(&f, "tokens", "list", NULL), CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "cannot read operator certificate /nonexistent/op.pem"));
    fake_free(&f);
    /* certificate and key that do not belong together */
    real_env(&f, server_pin, op_cert, ag_key);
    assert_int_equal(fake_run(&f, "tokens", "list", NULL), CTL_EXIT_INPUT);
    assert_non_null(strstr(f.err, "does the key belong to the certificate"));
    fake_free(&f);
    /* nobody listening: exit 3 after the (short) timeout */
    real_env(&f, server_pin, op_cert, op_key);
    f.env[0][1] = "127.0.0.1:9";
    assert_int_equal(fake_run(&f, "tokens", "list", "--timeout", "1s", NULL), CTL_EXIT_CONNECT);
    assert_non_null(strstr(f.err, "cannot connect to 127.0.0.1:9"));
    fake_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_and_status),    cmocka_unit_test(test_upload_backpressure),
        cmocka_unit_test(test_server_stream),       cmocka_unit_test(test_interrupt_stream),
        cmocka_unit_test(test_watch_stops_on_done), cmocka_unit_test(test_connect_failures),
    };
    return cmocka_run_group_tests(tests, start_server, stop_server);
}
