#include "ctl_svc_harness.h"
#include "ctl_test_util.h"

#include <aegis/err.h>
#include <aegis/transport_ev.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One loop for the whole test process; a non-default loop, so libev does not reap the
 * daemons this harness starts (it waits for them by PID itself). */
static struct ev_loop *th_loop(void)
{
    static struct ev_loop *loop;
    if (!loop)
        loop = ev_loop_new(EVFLAG_AUTO);
    return loop;
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

void th_run(uint64_t ns, int (*cond)(void *), void *ud)
{
    struct ev_loop *loop = th_loop();
    ev_timer tick;
    /* A periodic tick bounds each ev_run so the deadline is checked at least every 10 ms. */
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    aegis_tstamp end = aegis_now() + ns;
    for (int i = 0; i < 1000000 && aegis_now() < end; i++) {
        if (cond && cond(ud))
            break;
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &tick);
}

/* ---- PKI ---------------------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void issue(const struct aegis_key *ca, const char *ca_pem, enum aegis_cert_role role,
                  const char *cn, struct aegis_key **pkey, char **pcert, char **pkeypem)
{
    struct aegis_key *k;
    uint8_t *spki;
    size_t sl, l;
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &k), 0);
    assert_int_equal(aegis_key_spki_der(k, &spki, &sl), 0);
    const char *ip = "127.0.0.1";
    struct aegis_cert_spec spec = {.role = role, .common_name = cn};
    if (role == AEGIS_ROLE_SERVER) {
        spec.ips = &ip;
        spec.n_ips = 1;
    }
    assert_int_equal(
        aegis_cert_issue(NULL, &spec, spki, sl, ca ? ca : k, ca ? ca_pem : NULL, pcert, &l), 0);
    assert_int_equal(aegis_key_to_pem(k, pkeypem, &l), 0);
    aegis_free(NULL, spki);
    if (pkey)
        *pkey = k;
    else
        aegis_key_del(k);
}

void th_write_pubkey(const struct aegis_key *key, const char *dir, const char *name)
{
    uint8_t *spki;
    size_t sl;
    assert_int_equal(aegis_key_spki_der(key, &spki, &sl), 0);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char pub[256];
    size_t o = (size_t)snprintf(pub, sizeof(pub), "-----BEGIN PUBLIC KEY-----\n");
    for (size_t i = 0; i < sl; i += 3) {
        uint32_t v = (uint32_t)spki[i] << 16 | (i + 1 < sl ? (uint32_t)spki[i + 1] << 8 : 0) |
                     (i + 2 < sl ? spki[i + 2] : 0);
        pub[o++] = b64[v >> 18 & 63];
        pub[o++] = b64[v >> 12 & 63];
        pub[o++] = i + 1 < sl ? b64[v >> 6 & 63] : '=';
        pub[o++] = i + 2 < sl ? b64[v & 63] : '=';
    }
    o += (size_t)snprintf(pub + o, sizeof(pub) - o, "\n-----END PUBLIC KEY-----\n");
    write_file(dir, name, pub, o);
    aegis_free(NULL, spki);
}

void th_pki_make(struct th_pki *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "%s/ctlsvc-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(p->dir));
    struct aegis_key *ca;
    char *ca_pem, *ca_key, *srv_pem, *srv_key;
    issue(NULL, NULL, AEGIS_ROLE_CA, "Test Fleet CA", &ca, &ca_pem, &ca_key);
    issue(ca, ca_pem, AEGIS_ROLE_SERVER, "localhost", NULL, &srv_pem, &srv_key);
    issue(ca, ca_pem, AEGIS_ROLE_OPERATOR, "alice", NULL, &p->op_cert, &p->op_key);
    issue(ca, ca_pem, AEGIS_ROLE_AGENT, "00000000-0000-4000-8000-000000000000", NULL,
          &p->agentca_cert, &p->agentca_key);
    write_file(p->dir, "ca.pem", ca_pem, strlen(ca_pem));
    write_file(p->dir, "ca.key", ca_key, strlen(ca_key));
    write_file(p->dir, "server.pem", srv_pem, strlen(srv_pem));
    write_file(p->dir, "server.key", srv_key, strlen(srv_key));
    assert_int_equal(aegis_pin_from_pem(srv_pem, strlen(srv_pem), p->server_pin), 0);
    /* The operator's artifact-signing key; the daemon trusts its public half. */
    assert_int_equal(aegis_key_generate(NULL, AEGIS_KEY_ED25519, &p->artifact_key), 0);
    uint8_t *spki;
    size_t sl;
    assert_int_equal(aegis_key_spki_der(p->artifact_key, &spki, &sl), 0);
    assert_int_equal(aegis_key_id_from_spki(spki, sl, p->artifact_key_id), 0);
    aegis_free(NULL, spki);
    th_write_pubkey(p->artifact_key, p->dir, "artifact.pub");
    snprintf(p->artifact_pub, sizeof(p->artifact_pub), "%s/artifact.pub", p->dir);
    aegis_key_del(ca);
    p->ca_pem = ca_pem;
    aegis_free(NULL, ca_key);
    aegis_free(NULL, srv_pem);
    aegis_free(NULL, srv_key);
}

void th_pki_free(struct th_pki *p)
{
    /* quic-secret is written by the daemon at its first start (its stateless-reset key). */
    const char *names[] = {"ca.pem",      "ca.key",       "server.pem", "server.key",
                           "command.key", "artifact.pub", "quic-secret"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", p->dir, names[i]);
        unlink(path);
    }
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/artifact-keys/second.pub", p->dir);
    unlink(sub);
    snprintf(sub, sizeof(sub), "%s/artifact-keys", p->dir);
    rmdir(sub);
    rmdir(p->dir);
    aegis_free(NULL, p->ca_pem);
    aegis_free(NULL, p->op_cert);
    aegis_free(NULL, p->op_key);
    aegis_free(NULL, p->agentca_cert);
    aegis_free(NULL, p->agentca_key);
    aegis_key_del(p->artifact_key);
}

/* ---- daemon ------------------------------------------------------------------------------- */

void th_daemon_start(struct th_daemon *d, const struct th_pki *p, const char *dsn,
                     const char *const *extra)
{
    memset(d, 0, sizeof(d[0]));
    int out[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    static int seq;
    snprintf(d->log_path, sizeof(d->log_path), "%s/daemon-%d-%d.log", p->dir, (int)getpid(), ++seq);
    const char *argv[64] = {CTL_TEST_DAEMON,
                            "--db",
                            dsn,
                            "--pki",
                            p->dir,
                            "--listen",
                            "127.0.0.1:0",
                            "--metrics-listen",
                            "127.0.0.1:0",
                            "--artifact-pubkey",
                            p->artifact_pub,
                            "--log-level",
                            "debug"};
    size_t n = 13;
    for (size_t i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* killed with the test process even when it aborts */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        dup2(out[1], 1);
        int fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    d->pid = pid;
    char buf[512];
    size_t got = 0;
    aegis_tstamp end = aegis_now() + 30 * AEGIS_NS_PER_S;
    while (aegis_now() < end && got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
        struct pollfd pfd = {out[0], POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(out[0], buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(out[0]);
    if (sscanf(buf, "aegis-control ready port=%u metrics_port=%u instance=%39s", &d->port,
               &d->metrics_port, d->instance) != 3) {
        fprintf(stderr, "daemon did not start; output \"%s\"; log %s:\n", buf, d->log_path);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", d->log_path);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        d->pid = 0;
        fail_msg("aegis-control did not become ready");
    }
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%u", d->port);
}

int th_daemon_stop(struct th_daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int status = 0;
    aegis_tstamp end = aegis_now() + 15 * AEGIS_NS_PER_S;
    pid_t r = 0;
    while (aegis_now() < end && (r = waitpid(d->pid, &status, WNOHANG)) == 0) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL); /* polling a child's exit: waitpid has no timeout */
    }
    if (r != d->pid) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        d->pid = 0;
        return -1;
    }
    d->pid = 0;
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 0 && !getenv("TH_KEEP_LOGS"))
        unlink(d->log_path); /* kept when something went wrong (or TH_KEEP_LOGS is set) */
    return rc;
}

/* ---- client ------------------------------------------------------------------------------- */

struct th_client {
    struct aegis_ev *ev;
    struct aegis_conn *conn;
    int established, closed;
    char why[160];
};

struct th_msg {
    struct th_msg *next;
    size_t len;
    uint8_t data[];
};

struct th_call {
    struct th_client *c;
    struct aegis_call *call;
    struct th_msg *head, *tail;
    int ended;
    struct th_status st;
    int freed_pending; /* th_call_free called before on_close */
    long hdr_retry;
};

static void cli_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                            void *ud)
{
    struct th_client *c = ud;
    (void)conn;
    (void)peer;
    c->established = 1;
}

static void cli_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    struct th_client *c = ud;
    (void)conn;
    c->closed = 1;
    snprintf(c->why, sizeof(c->why), "%s", why->reason);
    c->conn = NULL;
}

static int est_or_closed(void *ud)
{
    struct th_client *c = ud;
    return c->established || c->closed;
}

struct th_client *th_connect(const struct th_daemon *d, const struct th_pki *p, const char *cert,
                             const char *key, char *why, size_t whylen)
{
    struct th_client *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    struct aegis_endpoint_config cfg = {
        .is_server = 0,
        .tls = {.cert_pem = cert,
                .cert_len = strlen(cert),
                .key_pem = key,
                .key_len = strlen(key),
                .pins = {p->server_pin},
                .npins = 1},
        .callbacks = {.on_established = cli_established, .on_closed = cli_closed},
        .user_data = c,
    };
    assert_int_equal(aegis_ev_new(th_loop(), &cfg, "127.0.0.1:0", &c->ev), 0);
    assert_int_equal(aegis_ev_connect(c->ev, d->addr, "localhost", &c->conn), 0);
    th_run(5 * AEGIS_NS_PER_S, est_or_closed, c);
    /* A refused handshake may look established on the client first; give the server's close
     * a moment to arrive before calling it accepted. */
    if (c->established && !c->closed)
        th_run(50 * AEGIS_NS_PER_MS, NULL, NULL);
    if (!c->established || c->closed) {
        if (why)
            snprintf(why, whylen, "%s", c->closed ? c->why : "timeout");
        th_close(c);
        return NULL;
    }
    return c;
}

static int is_closed(void *ud)
{
    return ((struct th_client *)ud)->closed;
}

int th_wait_closed(struct th_client *c, uint64_t timeout_ns, char *why, size_t whylen)
{
    th_run(timeout_ns, is_closed, c);
    if (why)
        snprintf(why, whylen, "%s", c->why);
    return c->closed;
}

int th_is_closed(const struct th_client *c)
{
    return c->closed;
}

void th_close(struct th_client *c)
{
    if (!c)
        return;
    if (c->conn && !c->closed) {
        aegis_conn_close(c->conn, 0, "bye");
        th_run(200 * AEGIS_NS_PER_MS, is_closed, c);
    }
    aegis_ev_del(c->ev);
    free(c);
}

static int k_on_message(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct th_call *k = ud;
    (void)call;
    struct th_msg *m = malloc(sizeof(*m) + len + 1);
    if (!m)
        return 1;
    m->next = NULL;
    m->len = len;
    memcpy(m->data, msg, len);
    if (k->tail)
        k->tail->next = m;
    else
        k->head = m;
    k->tail = m;
    return 0;
}

static long retry_after(const struct aegis_metadata *md, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(md[i].key, "aegis-retry-after-ms") == 0) {
            char b[32];
            size_t l = md[i].value_len < 31 ? md[i].value_len : 31;
            memcpy(b, md[i].value, l);
            b[l] = '\0';
            return atol(b);
        }
    return -1;
}

/* A trailers-only response (gRPC status in the only header block) currently reaches the
 * client as headers, not trailers: look in both. */
static int k_on_headers(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                        void *ud)
{
    struct th_call *k = ud;
    (void)call;
    long v = retry_after(md, n);
    if (v >= 0)
        k->hdr_retry = v;
    return 0;
}

static void k_on_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    struct th_call *k = ud;
    (void)call;
    k->ended = 1;
    k->call = NULL;
    k->st.code = st->code;
    snprintf(k->st.message, sizeof(k->st.message), "%s", st->message ? st->message : "");
    k->st.retry_after_ms = retry_after(st->trailers, st->ntrailers);
    if (k->st.retry_after_ms < 0)
        k->st.retry_after_ms = k->hdr_retry;
    if (k->freed_pending) {
        while (k->head) {
            struct th_msg *m = k->head;
            k->head = m->next;
            free(m);
        }
        free(k);
    }
}

struct th_call *th_call_start(struct th_client *c, const char *method, enum aegis_rpc_shape shape)
{
    struct th_call *k = calloc(1, sizeof(*k));
    assert_non_null(k);
    k->c = c;
    k->hdr_retry = -1;
    struct aegis_call_callbacks cbs = {
        .on_headers = k_on_headers, .on_message = k_on_message, .on_close = k_on_close};
    struct aegis_call_opts opts = {.deadline = aegis_now() + 30 * AEGIS_NS_PER_S};
    if (!c->conn || aegis_call_start(c->conn, method, shape, &opts, &cbs, k, &k->call) != 0) {
        k->ended = 1;
        k->st.code = AEGIS_GRPC_UNAVAILABLE;
        snprintf(k->st.message, sizeof(k->st.message), "connection unusable");
    }
    return k;
}

int th_call_send_raw(struct th_call *k, const uint8_t *b, size_t n)
{
    if (!k->call)
        return AEGIS_ERR_STATE;
    int rv = -EAGAIN;
    for (int i = 0; i < 1000 && rv == -EAGAIN && k->call; i++) {
        rv = aegis_call_send(k->call, b, n);
        if (rv == -EAGAIN)
            th_run(10 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    return rv;
}

int th_call_send(struct th_call *k, const ProtobufCMessage *msg)
{
    uint8_t *b;
    size_t n;
    assert_int_equal(aegis_proto_pack(msg, NULL, &b, &n), 0);
    int rv = th_call_send_raw(k, b, n);
    aegis_free(NULL, b);
    return rv;
}

void th_call_close_send(struct th_call *k)
{
    if (k->call)
        aegis_call_close_send(k->call);
}

void th_call_cancel(struct th_call *k)
{
    if (k->call)
        aegis_call_cancel(k->call);
}

static int has_msg_or_end(void *ud)
{
    struct th_call *k = ud;
    return k->head || k->ended;
}

int th_call_next(struct th_call *k, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **pm,
                 uint64_t timeout_ns)
{
    th_run(timeout_ns, has_msg_or_end, k);
    if (!k->head)
        return k->ended ? 0 : -1;
    struct th_msg *m = k->head;
    k->head = m->next;
    if (!k->head)
        k->tail = NULL;
    if (!pm) {
        free(m);
        return 1;
    }
    int rv = aegis_proto_unpack(desc, m->data, m->len, 64u << 20, NULL, pm);
    free(m);
    assert_int_equal(rv, 0);
    return 1;
}

static int ended(void *ud)
{
    return ((struct th_call *)ud)->ended;
}

int th_call_wait_end(struct th_call *k, uint64_t timeout_ns, struct th_status *st)
{
    th_run(timeout_ns, ended, k);
    if (st)
        *st = k->st;
    return k->ended;
}

void th_call_free(struct th_call *k)
{
    if (!k)
        return;
    if (!k->ended) {
        /* Cancel and let on_close free it. */
        k->freed_pending = 1;
        aegis_call_cancel(k->call);
        return;
    }
    while (k->head) {
        struct th_msg *m = k->head;
        k->head = m->next;
        free(m);
    }
    free(k);
}

void th_msg_free(ProtobufCMessage *m)
{
    aegis_proto_free(m, NULL);
}

int th_unary(struct th_client *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **presp,
             struct th_status *st)
{
    struct th_call *k = th_call_start(c, method, AEGIS_RPC_UNARY);
    *presp = NULL;
    if (!k->ended) {
        th_call_send(k, req);
        th_call_close_send(k);
    }
    struct th_status s;
    if (!th_call_wait_end(k, 20 * AEGIS_NS_PER_S, &s)) {
        s.code = AEGIS_GRPC_DEADLINE_EXCEEDED;
        snprintf(s.message, sizeof(s.message), "test timeout");
        s.retry_after_ms = -1;
    }
    if (s.code == AEGIS_GRPC_OK && k->head) {
        ProtobufCMessage *m;
        if (th_call_next(k, rdesc, &m, 0) == 1)
            *presp = m;
    }
    if (st)
        *st = s;
    th_call_free(k);
    return s.code;
}

/* ---- agents ------------------------------------------------------------------------------ */

void th_agent_new(struct th_agent *a, const char *host_id)
{
    memset(a, 0, sizeof(*a));
    issue(NULL, NULL, AEGIS_ROLE_SELF, "aegis-enroll", &a->key, &a->self_cert, &a->key_pem);
    snprintf(a->host_id, sizeof(a->host_id), "%s", host_id);
    char mid[128];
    snprintf(mid, sizeof(mid), "aegis-machine-id:%s", host_id);
    assert_int_equal(aegis_sha256_hash(mid, strlen(mid), a->mid), 0);
    snprintf(a->version, sizeof(a->version), "0.1.0");
}

void th_agent_free(struct th_agent *a)
{
    aegis_key_del(a->key);
    aegis_free(NULL, a->self_cert);
    aegis_free(NULL, a->key_pem);
    free(a->cert);
    memset(a, 0, sizeof(*a));
}

int th_enroll(struct th_agent *a, const struct th_daemon *d, const struct th_pki *p,
              const char *token, Aegis__V1__EnrollResponse **presp)
{
    char why[160];
    struct th_client *c = th_connect(d, p, a->self_cert, a->key_pem, why, sizeof(why));
    if (!c)
        fail_msg("self-signed connection refused: %s", why);
    Aegis__V1__EnrollRequest req = AEGIS__V1__ENROLL_REQUEST__INIT;
    Aegis__V1__HostFacts host = AEGIS__V1__HOST_FACTS__INIT;
    host.host_id = a->host_id;
    host.hostname = a->host_id;
    req.token = (char *)token;
    req.host = &host;
    req.machine_id_hash.data = a->mid;
    req.machine_id_hash.len = 32;
    req.agent_version = a->version;
    Aegis__V1__EnrollResponse *resp = NULL;
    struct th_status st;
    th_unary(c, "/aegis.v1.AgentService/Enroll", &req.base, &aegis__v1__enroll_response__descriptor,
             (ProtobufCMessage **)&resp, &st);
    if (resp) {
        a->cert = strdup(resp->certificate_pem);
        snprintf(a->agent_id, sizeof(a->agent_id), "%s", resp->agent_id);
        if (resp->command_signing_public_key.len == 32)
            memcpy(a->command_pub, resp->command_signing_public_key.data, 32);
    }
    if (presp)
        *presp = resp;
    else if (resp)
        th_msg_free(&resp->base);
    th_close(c);
    return st.code;
}

struct th_client *th_agent_connect(struct th_agent *a, const struct th_daemon *d,
                                   const struct th_pki *p, char *why, size_t whylen)
{
    assert_non_null(a->cert);
    return th_connect(d, p, a->cert, a->key_pem, why, whylen);
}

static uint8_t last_nonce[32];
static char last_time[40];

int th_auth(struct th_client *c, struct th_agent *a, enum th_auth_flaw flaw, uint64_t slow_ns,
            uint64_t *packed)
{
    struct th_call *k = th_call_start(c, "/aegis.v1.AgentService/Authenticate", AEGIS_RPC_BIDI);
    Aegis__V1__AuthHello hello = AEGIS__V1__AUTH_HELLO__INIT;
    Aegis__V1__AuthClientMessage m = AEGIS__V1__AUTH_CLIENT_MESSAGE__INIT;
    char *caps[1] = {(char *)"zstd"};
    hello.agent_id = a->agent_id;
    hello.host_id = a->host_id;
    hello.version = a->version;
    hello.n_capabilities = 1;
    hello.capabilities = caps;
    m.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_HELLO;
    m.hello = &hello;
    th_call_send(k, &m.base);
    Aegis__V1__AuthServerMessage *sm = NULL;
    int r = th_call_next(k, &aegis__v1__auth_server_message__descriptor, (ProtobufCMessage **)&sm,
                         10 * AEGIS_NS_PER_S);
    struct th_status st;
    if (r != 1 || sm->step_case != AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_CHALLENGE) {
        if (r == 1)
            th_msg_free(&sm->base);
        th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st);
        th_call_free(k);
        return st.code;
    }
    uint8_t buf[32 + 40 + 64];
    size_t hl = strlen(a->host_id), tl = strlen(sm->challenge->server_time);
    assert_int_equal(sm->challenge->nonce.len, 32);
    if (flaw == TH_AUTH_REPLAY && last_time[0]) {
        memcpy(buf, last_nonce, 32);
        tl = strlen(last_time);
        memcpy(buf + 32, last_time, tl);
    } else {
        memcpy(buf, sm->challenge->nonce.data, 32);
        memcpy(buf + 32, sm->challenge->server_time, tl);
    }
    memcpy(last_nonce, sm->challenge->nonce.data, 32);
    snprintf(last_time, sizeof(last_time), "%s", sm->challenge->server_time);
    memcpy(buf + 32 + tl, a->host_id, hl);
    if (flaw == TH_AUTH_BAD_SIG)
        buf[0] ^= 1;
    th_msg_free(&sm->base);
    uint8_t *sig;
    size_t sl;
    assert_int_equal(aegis_key_sign(a->key, buf, 32 + tl + hl, &sig, &sl), 0);
    if (flaw == TH_AUTH_SLOW)
        th_run(slow_ns, NULL, NULL);
    Aegis__V1__AuthProof proof = AEGIS__V1__AUTH_PROOF__INIT;
    uint8_t mid[32];
    memcpy(mid, a->mid, 32);
    if (flaw == TH_AUTH_WRONG_MID)
        mid[5] ^= 0x40;
    proof.signature.data = sig;
    proof.signature.len = sl;
    proof.machine_id_hash.data = mid;
    proof.machine_id_hash.len = 32;
    m.step_case = AEGIS__V1__AUTH_CLIENT_MESSAGE__STEP_PROOF;
    m.proof = &proof;
    th_call_send(k, &m.base);
    aegis_free(NULL, sig);
    th_call_close_send(k);
    r = th_call_next(k, &aegis__v1__auth_server_message__descriptor, (ProtobufCMessage **)&sm,
                     10 * AEGIS_NS_PER_S);
    if (r == 1) {
        if (sm->step_case == AEGIS__V1__AUTH_SERVER_MESSAGE__STEP_RESULT && packed)
            *packed = sm->result->acked_sequence;
        th_msg_free(&sm->base);
    }
    th_call_wait_end(k, 10 * AEGIS_NS_PER_S, &st);
    th_call_free(k);
    return st.code;
}

const char *th_op_token(struct th_client *op, uint32_t max_uses, uint32_t ttl, const char *label_k,
                        const char *label_v, char token_id[37])
{
    static char secret[128];
    Aegis__V1__CreateTokenRequest req = AEGIS__V1__CREATE_TOKEN_REQUEST__INIT;
    Aegis__V1__Labels labels = AEGIS__V1__LABELS__INIT;
    Aegis__V1__Labels__EntriesEntry e = AEGIS__V1__LABELS__ENTRIES_ENTRY__INIT;
    Aegis__V1__Labels__EntriesEntry *ep[1] = {&e};
    req.description = (char *)"test token";
    req.max_uses = max_uses;
    req.ttl_seconds = ttl;
    if (label_k) {
        e.key = (char *)label_k;
        e.value = (char *)label_v;
        labels.n_entries = 1;
        labels.entries = ep;
        req.labels = &labels;
    }
    Aegis__V1__CreateTokenResponse *resp = NULL;
    struct th_status st;
    th_unary(op, "/aegis.v1.OperatorService/CreateToken", &req.base,
             &aegis__v1__create_token_response__descriptor, (ProtobufCMessage **)&resp, &st);
    if (!resp)
        fail_msg("CreateToken failed: %d %s", st.code, st.message);
    snprintf(secret, sizeof(secret), "%s", resp->token->secret);
    if (token_id)
        snprintf(token_id, 37, "%s", resp->token->token_id);
    th_msg_free(&resp->base);
    return secret;
}

int th_audit_count(struct th_client *op, const char *action, const char *target,
                   const char *detail_substr)
{
    Aegis__V1__ListAuditRequest req = AEGIS__V1__LIST_AUDIT_REQUEST__INIT;
    Aegis__V1__PageRequest page = AEGIS__V1__PAGE_REQUEST__INIT;
    page.limit = 1000;
    req.page = &page;
    req.action = (char *)action;
    req.target = (char *)(target ? target : "");
    Aegis__V1__ListAuditResponse *resp = NULL;
    struct th_status st;
    th_unary(op, "/aegis.v1.OperatorService/ListAudit", &req.base,
             &aegis__v1__list_audit_response__descriptor, (ProtobufCMessage **)&resp, &st);
    if (!resp)
        fail_msg("ListAudit failed: %d %s", st.code, st.message);
    int n = 0;
    for (size_t i = 0; i < resp->n_entries; i++)
        if (!detail_substr || strstr(resp->entries[i]->detail, detail_substr))
            n++;
    th_msg_free(&resp->base);
    return n;
}

long long th_sql_ll(const char *dsn, const char *sql)
{
    return test_query_ll(dsn, sql);
}

int th_wait_audit(struct th_client *op, const char *action, const char *target,
                  const char *detail_substr, int min, uint64_t timeout_ns)
{
    aegis_tstamp end = aegis_now() + timeout_ns;
    int n = 0;
    for (int i = 0; i < 1000; i++) {
        n = th_audit_count(op, action, target, detail_substr);
        if (n >= min || aegis_now() >= end)
            break;
        th_run(50 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    return n;
}

int th_http_get(unsigned port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    for (int i = 0; i < 10000 && got + 1 < cap; i++) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(fd);
    int code = -1;
    sscanf(buf, "HTTP/1.%*d %d", &code);
    return code;
}

int th_log_wait(const struct th_daemon *d, const char *text, uint64_t timeout_ns)
{
    aegis_tstamp end = aegis_now() + timeout_ns;
    static char buf[1 << 20];
    for (int i = 0; i < 10000; i++) {
        FILE *f = fopen(d->log_path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            buf[n] = '\0';
            fclose(f);
            if (strstr(buf, text))
                return 1;
        }
        if (aegis_now() >= end)
            return 0;
        th_run(20 * AEGIS_NS_PER_MS, NULL, NULL);
    }
    return 0;
}

struct reap {
    struct th_daemon *d;
    int status;
    int done;
};

static int reaped(void *ud)
{
    struct reap *r = ud;
    if (!r->done && waitpid(r->d->pid, &r->status, WNOHANG) == r->d->pid)
        r->done = 1;
    return r->done;
}

int th_daemon_reap(struct th_daemon *d, uint64_t timeout_ns)
{
    struct reap r = {d, 0, 0};
    th_run(timeout_ns, reaped, &r);
    if (!r.done)
        return -2;
    d->pid = 0;
    int rc = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
    if (rc == 0 && !getenv("TH_KEEP_LOGS"))
        unlink(d->log_path);
    return rc;
}
