/*
 * aegisctl's real RPC layer: one client connection (aegis_transport on a
 * libev loop, <aegis/transport_ev.h>) and the three call shapes the operator
 * API uses, each run to completion on the loop. Everything network-related
 * that can go wrong is turned into one sentence that says what to do.
 */
#include "ctl_cli.h"

#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport_ev.h>

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* After close, wait this long for the CONNECTION_CLOSE to go out so the server
 * frees the connection at once instead of at its idle timeout. */
#define CLOSE_LINGER_NS (300ull * 1000000ull)
/* The transport enforces unary deadlines itself; this margin only guards
 * against a call that never reports back. */
#define DEADLINE_MARGIN_NS (5ull * 1000000000ull)
/* Operator certificates and keys are small; anything bigger is not one. */
#define MAX_PEM (64u * 1024u)

struct rpc {
    struct ev_loop *loop;
    struct aegis_ev *ev;
    struct aegis_conn *conn;
    int established;
    int closed;
    int hs_done; /* established or closed */
    struct aegis_close_reason why;
    char server_pin[AEGIS_PIN_STRLEN];
    ev_timer wake;
    int woke;
    ev_signal sigint;
    int interrupted;
    struct aegis_call *active;
};

struct callctx {
    struct rpc *r;
    struct aegis_call *call;
    int done;
    struct ctl_status *st;
    uint8_t *resp;
    size_t resplen;
    ctl_msg_fn on_msg;
    void *arg;
    ctl_next_fn next;
    void *narg;
    const uint8_t *pend;
    size_t pendlen;
    int have_pend;
    int eof;
    int producer_rc;
};

/* ---- loop helpers ---------------------------------------------------------- */

static void on_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rpc *r = w->data;
    r->woke = 1;
}

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct rpc *r = w->data;
    r->interrupted = 1;
    ev_break(loop, EVBREAK_ONE);
    r->woke = 1;
    if (r->active)
        aegis_call_cancel(r->active);
}

/* Runs the loop until *flag is set or `until` (aegis_now clock; 0 = no limit)
 * has passed. Returns 1 if the flag was set. */
static int run_until(struct rpc *r, const int *flag, aegis_tstamp until)
{
    r->woke = 0;
    if (until) {
        aegis_tstamp now = aegis_now();
        double after = until > now ? (double)(until - now) / 1e9 : 0.0;
        ev_timer_set(&r->wake, after, 0.0);
        ev_timer_start(r->loop, &r->wake);
    }
    while (!*flag && !r->woke)
        ev_run(r->loop, EVRUN_ONCE);
    ev_timer_stop(r->loop, &r->wake);
    return *flag;
}

/* ---- connection -------------------------------------------------------------- */

static void on_established(struct aegis_conn *conn, const struct aegis_peer_identity *peer,
                           void *user_data)
{
    (void)conn;
    (void)peer;
    struct rpc *r = user_data;
    r->established = 1;
    r->hs_done = 1;
}

static void on_closed(struct aegis_conn *conn, const struct aegis_close_reason *why,
                      void *user_data)
{
    struct rpc *r = user_data;
    r->closed = 1;
    r->hs_done = 1;
    r->why = *why;
    const struct aegis_peer_identity *peer = aegis_conn_peer(conn);
    if (peer && peer->has_cert)
        memcpy(r->server_pin, peer->pin, sizeof(r->server_pin));
    r->conn = NULL;
}

static void rpc_del(void *ud)
{
    struct rpc *r = ud;
    if (!r)
        return;
    if (r->conn && !r->closed) {
        /* H3_NO_ERROR (RFC 9114 §8.1): we are simply done. */
        if (aegis_conn_close(r->conn, 0x100, "aegisctl done") == 0)
            run_until(r, &r->closed, aegis_now() + CLOSE_LINGER_NS);
    }
    if (r->loop)
        ev_signal_stop(r->loop, &r->sigint);
    aegis_ev_del(r->ev);
    if (r->loop)
        ev_loop_destroy(r->loop);
    free(r);
}

/* "host:port" / "[v6]:port" -> numeric "ip:port" for aegis_ev_connect, and
 * the host name for SNI. */
static int resolve(const char *server, char *numeric, size_t nlen, char *host, size_t hlen,
                   int *is_v6, char *err, size_t errlen)
{
    const char *colon = strrchr(server, ':');
    if (!colon || colon == server || !colon[1]) {
        snprintf(err, errlen, "bad server address \"%s\" (expected HOST:PORT)", server);
        return CTL_EXIT_USAGE;
    }
    const char *h = server;
    size_t hl = (size_t)(colon - server);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl + 1 > hlen) {
        snprintf(err, errlen, "server host name too long: \"%s\"", server);
        return CTL_EXIT_USAGE;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, colon + 1, &hints, &res);
    if (g != 0 || !res) {
        snprintf(err, errlen, "cannot resolve server \"%s\": %s (check --server or AEGIS_SERVER)",
                 server, gai_strerror(g));
        return CTL_EXIT_CONNECT;
    }
    char ip[NI_MAXHOST], port[NI_MAXSERV];
    g = getnameinfo(res->ai_addr, res->ai_addrlen, ip, sizeof(ip), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
    *is_v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    if (g != 0) {
        snprintf(err, errlen, "cannot resolve server \"%s\": %s", server, gai_strerror(g));
        return CTL_EXIT_CONNECT;
    }
    snprintf(numeric, nlen, *is_v6 ? "[%s]:%s" : "%s:%s", ip, port);
    return 0;
}

static int read_pem(const char *what, const char *path, const char *flag, const char *env,
                    char **pbuf, size_t *plen, char *err, size_t errlen)
{
    int rv = ctl_read_file(path, MAX_PEM, pbuf, plen);
    if (rv != 0) {
        snprintf(err, errlen, "cannot read %s %s: %s (check %s or %s)", what, path,
                 aegis_strerror(rv), flag, env);
        return CTL_EXIT_INPUT;
    }
    return 0;
}

static void describe_close(const struct rpc *r, const char *server, const char *pins,
                           uint64_t timeout_ns, char *err, size_t errlen)
{
    const struct aegis_close_reason *w = &r->why;
    if (r->interrupted) {
        snprintf(err, errlen, "interrupted while connecting to %s", server);
    } else if (w->err == AEGIS_ERR_PIN_MISMATCH) {
        snprintf(err, errlen,
                 "cannot connect to %s: server key %s does not match pin %s (check --pin or "
                 "AEGIS_PIN; `aegis-certs pin` on the server certificate prints the right one)",
                 server, r->server_pin[0] ? r->server_pin : "(none)", pins);
    } else if (w->kind == AEGIS_CLOSE_PEER_APP && w->code == AEGIS_CLOSE_CODE_REFUSED) {
        snprintf(err, errlen,
                 "cannot connect to %s: refused by the server: %s (is --cert an operator "
                 "certificate issued by this fleet's CA?)",
                 server, w->reason[0] ? w->reason : "no reason given");
    } else if (w->kind == AEGIS_CLOSE_TLS_ALERT) {
        snprintf(err, errlen,
                 "cannot connect to %s: TLS handshake failed: %s (is --cert/--key an operator "
                 "certificate of this fleet?)",
                 server, w->reason[0] ? w->reason : "alert");
    } else if (w->kind == AEGIS_CLOSE_HANDSHAKE_TIMEOUT || w->kind == AEGIS_CLOSE_IDLE) {
        snprintf(err, errlen,
                 "cannot connect to %s: no answer within %llu s (is aegis-control running "
                 "there? check --server or AEGIS_SERVER)",
                 server, (unsigned long long)(timeout_ns / 1000000000ull));
    } else {
        char buf[200];
        snprintf(err, errlen, "cannot connect to %s: %s", server,
                 aegis_close_reason_format(w, buf, sizeof(buf)));
    }
}

static const struct ctl_rpc_ops rpc_ops;

int ctl_rpc_connect(const struct ctl_config *cfg, uint64_t timeout_ns,
                    const struct ctl_rpc_ops **pops, void **pud, char *err, size_t errlen)
{
    if (!cfg->server) {
        snprintf(err, errlen,
                 "no server given (use --server HOST:PORT, AEGIS_SERVER, or "
                 "server = ... in ~/.config/aegis/aegisctl.conf)");
        return CTL_EXIT_USAGE;
    }
    if (!cfg->pin) {
        snprintf(err, errlen,
                 "no server pin given (use --pin sha256//..., AEGIS_PIN, or pin = "
                 "... in the config file; `aegis-certs pin` prints it)");
        return CTL_EXIT_USAGE;
    }
    if (!cfg->cert || !cfg->key) {
        snprintf(err, errlen,
                 "no operator %s given (use --%s FILE, AEGIS_%s, or %s = ... in the "
                 "config file; `aegis-certs operator` makes one)",
                 !cfg->cert ? "certificate" : "key", !cfg->cert ? "cert" : "key",
                 !cfg->cert ? "CERT" : "KEY", !cfg->cert ? "cert" : "key");
        return CTL_EXIT_USAGE;
    }
    /* Up to two pins, comma-separated (server key rotation, DESIGN §4). */
    char pinbuf[2 * AEGIS_PIN_STRLEN + 8];
    if (strlen(cfg->pin) >= sizeof(pinbuf)) {
        snprintf(err, errlen, "bad pin \"%.60s...\": at most two sha256//... pins", cfg->pin);
        return CTL_EXIT_USAGE;
    }
    strcpy(pinbuf, cfg->pin);
    const char *pins[2] = {NULL, NULL};
    size_t npins = 0;
    char *save = NULL;
    for (char *p = strtok_r(pinbuf, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
        uint8_t h[AEGIS_SPKI_SHA256_LEN];
        if (npins == 2 || aegis_pin_parse(p, h) != 0) {
            snprintf(err, errlen,
                     "bad pin \"%s\" (expected one or two of sha256//<44 base64 characters>, as "
                     "printed by `aegis-certs pin`)",
                     cfg->pin);
            return CTL_EXIT_USAGE;
        }
        pins[npins++] = p;
    }
    if (npins == 0) {
        snprintf(err, errlen, "empty pin (give --pin sha256//...)");
        return CTL_EXIT_USAGE;
    }
    char numeric[128], host[256];
    int is_v6 = 0;
    int rv =
        resolve(cfg->server, numeric, sizeof(numeric), host, sizeof(host), &is_v6, err, errlen);
    if (rv != 0)
        return rv;
    char *cert = NULL, *key = NULL;
    size_t certlen = 0, keylen = 0;
    rv = read_pem("operator certificate", cfg->cert, "--cert", "AEGIS_CERT", &cert, &certlen, err,
                  errlen);
    if (rv == 0)
        rv = read_pem("operator key", cfg->key, "--key", "AEGIS_KEY", &key, &keylen, err, errlen);
    if (rv != 0) {
        free(cert);
        return rv;
    }

    struct rpc *r = calloc(1, sizeof(*r));
    if (!r) {
        free(cert);
        free(key);
        snprintf(err, errlen, "out of memory");
        return CTL_EXIT_INPUT;
    }
    struct aegis_endpoint_config ec = {0};
    ec.is_server = 0;
    ec.tls.cert_pem = cert;
    ec.tls.cert_len = certlen;
    ec.tls.key_pem = key;
    ec.tls.key_len = keylen;
    ec.tls.pins[0] = pins[0];
    ec.tls.pins[1] = pins[1];
    ec.tls.npins = npins;
    ec.handshake_timeout_ns = timeout_ns;
    ec.callbacks.on_established = on_established;
    ec.callbacks.on_closed = on_closed;
    ec.user_data = r;
    r->loop = ev_loop_new(EVFLAG_AUTO);
    if (!r->loop) {
        free(cert);
        free(key);
        free(r);
        snprintf(err, errlen, "cannot create an event loop");
        return CTL_EXIT_CONNECT;
    }
    ev_timer_init(&r->wake, on_wake, 0.0, 0.0);
    r->wake.data = r;
    ev_signal_init(&r->sigint, on_sigint, SIGINT);
    r->sigint.data = r;
    ev_signal_start(r->loop, &r->sigint);
    rv = aegis_ev_new(r->loop, &ec, is_v6 ? "[::]:0" : NULL, &r->ev);
    /* The endpoint copied the PEM text; wipe our copy of the key. */
    explicit_bzero(key, keylen);
    free(key);
    free(cert);
    if (rv != 0) {
        if (rv == AEGIS_ERR_CERT || rv == AEGIS_ERR_MALFORMED)
            snprintf(err, errlen,
                     "cannot use operator certificate %s with key %s: %s (does the key belong "
                     "to the certificate? check --cert/--key)",
                     cfg->cert, cfg->key, aegis_strerror(rv));
        else
            snprintf(err, errlen, "cannot set up the client: %s", aegis_strerror(rv));
        rpc_del(r);
        return rv == AEGIS_ERR_CERT || rv == AEGIS_ERR_MALFORMED ? CTL_EXIT_INPUT
                                                                 : CTL_EXIT_CONNECT;
    }
    rv = aegis_ev_connect(r->ev, numeric, host, &r->conn);
    if (rv != 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", cfg->server, aegis_strerror(rv));
        rpc_del(r);
        return CTL_EXIT_CONNECT;
    }
    run_until(r, &r->hs_done, aegis_now() + timeout_ns);
    if (!r->established) {
        if (r->closed) {
            describe_close(r, cfg->server, cfg->pin, timeout_ns, err, errlen);
        } else {
            r->why.kind = AEGIS_CLOSE_HANDSHAKE_TIMEOUT;
            describe_close(r, cfg->server, cfg->pin, timeout_ns, err, errlen);
        }
        rpc_del(r);
        return CTL_EXIT_CONNECT;
    }
    *pops = &rpc_ops;
    *pud = r;
    return 0;
}

/* ---- calls ------------------------------------------------------------------ */

static int cb_message(struct aegis_call *call, const uint8_t *msg, size_t len, void *user_data)
{
    (void)call;
    struct callctx *c = user_data;
    /* A callback that has seen enough (CTL_STREAM_STOP, or an error) ends
     * the stream: -1 cancels the call. 1 would be AEGIS_CALL_PAUSE, which
     * leaves the stream open and the loop waiting for ever. */
    if (c->on_msg)
        return c->on_msg(msg, len, c->arg) != 0 ? -1 : 0;
    if (c->resp) /* a unary reply has one message; ignore a second one */
        return 0;
    c->resp = malloc(len ? len : 1);
    if (!c->resp)
        return 1;
    memcpy(c->resp, msg, len);
    c->resplen = len;
    return 0;
}

static void cb_close(struct aegis_call *call, const struct aegis_call_status *status,
                     void *user_data)
{
    (void)call;
    struct callctx *c = user_data;
    c->st->code = status->code;
    c->st->local = status->local;
    snprintf(c->st->message, sizeof(c->st->message), "%s", status->message ? status->message : "");
    c->st->retry_after_ms = -1;
    for (size_t i = 0; i < status->ntrailers; i++) {
        const struct aegis_metadata *m = &status->trailers[i];
        if (strcmp(m->key, "aegis-retry-after-ms") == 0 && m->value_len < 20) {
            char num[24];
            memcpy(num, m->value, m->value_len);
            num[m->value_len] = '\0';
            c->st->retry_after_ms = strtoll(num, NULL, 10);
        }
    }
    if (c->r->interrupted) {
        c->st->code = AEGIS_GRPC_CANCELLED;
        c->st->local = 1;
    }
    c->r->active = NULL;
    c->done = 1;
}

/* Feeds the upload producer into the call until the send queue is full
 * (-EAGAIN: on_writable resumes) or the producer is done. */
static void pump(struct callctx *c)
{
    while (!c->eof && !c->producer_rc) {
        if (!c->have_pend) {
            int rc = c->next(c->narg, &c->pend, &c->pendlen);
            if (rc == 0) {
                c->eof = 1;
                aegis_call_close_send(c->call);
                return;
            }
            if (rc < 0 || rc > 1) {
                c->producer_rc = rc > 1 ? rc : CTL_EXIT_INPUT;
                aegis_call_cancel(c->call);
                return;
            }
            c->have_pend = 1;
        }
        int rv = aegis_call_send(c->call, c->pend, c->pendlen);
        if (rv == -EAGAIN)
            return;
        if (rv != 0) {
            snprintf(c->st->message, sizeof(c->st->message), "cannot send: %s", aegis_strerror(rv));
            c->producer_rc = CTL_EXIT_SERVER;
            aegis_call_cancel(c->call);
            return;
        }
        c->have_pend = 0;
    }
}

static void cb_writable(struct aegis_call *call, void *user_data)
{
    (void)call;
    struct callctx *c = user_data;
    if (c->next)
        pump(c);
}

static const struct aegis_call_callbacks call_cbs = {
    .on_message = cb_message,
    .on_writable = cb_writable,
    .on_close = cb_close,
};

static int start(struct rpc *r, struct callctx *c, const char *path, enum aegis_rpc_shape shape,
                 aegis_tstamp deadline, int compress)
{
    if (!r->conn || r->closed) {
        snprintf(c->st->message, sizeof(c->st->message),
                 "the connection to the server was lost (retry)");
        return CTL_EXIT_CONNECT;
    }
    struct aegis_call_opts opts = {.deadline = deadline, .compress = compress};
    int rv = aegis_call_start(r->conn, path, shape, &opts, &call_cbs, c, &c->call);
    if (rv != 0) {
        snprintf(c->st->message, sizeof(c->st->message), "cannot start %s: %s", path,
                 aegis_strerror(rv));
        return CTL_EXIT_CONNECT;
    }
    r->active = c->call;
    return 0;
}

static int finish(struct rpc *r, struct callctx *c, aegis_tstamp until)
{
    if (!run_until(r, &c->done, until)) {
        /* the transport never reported back: give up on the call */
        aegis_call_cancel(c->call);
        run_until(r, &c->done, aegis_now() + DEADLINE_MARGIN_NS);
        if (!c->done) {
            snprintf(c->st->message, sizeof(c->st->message), "no answer from the server");
            c->st->code = AEGIS_GRPC_DEADLINE_EXCEEDED;
            c->st->local = 1;
            r->active = NULL;
        }
    }
    return 0;
}

/* send_request sends a call's one request message and half-closes; if that fails the call is
 * cancelled, and finish() reports how it ended. */
static void send_request(struct callctx *c, const uint8_t *req, size_t reqlen)
{
    int rv = aegis_call_send(c->call, req, reqlen);
    if (rv == 0)
        rv = aegis_call_close_send(c->call);
    if (rv != 0)
        aegis_call_cancel(c->call);
}

static int rpc_unary(void *ud, const char *path, const uint8_t *req, size_t reqlen,
                     uint64_t timeout_ns, uint8_t **presp, size_t *presplen, struct ctl_status *st)
{
    struct rpc *r = ud;
    struct callctx c = {.r = r, .st = st};
    aegis_tstamp deadline = aegis_now() + timeout_ns;
    int rv = start(r, &c, path, AEGIS_RPC_UNARY, deadline, 0);
    if (rv != 0)
        return rv;
    send_request(&c, req, reqlen);
    finish(r, &c, deadline + DEADLINE_MARGIN_NS);
    if (st->code == AEGIS_GRPC_OK && c.resp) {
        *presp = c.resp;
        *presplen = c.resplen;
    } else {
        if (st->code == AEGIS_GRPC_OK) { /* OK without a message breaks the unary contract */
            st->code = AEGIS_GRPC_INTERNAL;
            snprintf(st->message, sizeof(st->message), "the server sent no reply message");
        }
        free(c.resp);
    }
    return 0;
}

static int rpc_server_stream(void *ud, const char *path, const uint8_t *req, size_t reqlen,
                             ctl_msg_fn on_msg, void *arg, struct ctl_status *st)
{
    struct rpc *r = ud;
    struct callctx c = {.r = r, .st = st, .on_msg = on_msg, .arg = arg};
    int rv = start(r, &c, path, AEGIS_RPC_SERVER_STREAMING, 0, 0);
    if (rv != 0)
        return rv;
    send_request(&c, req, reqlen);
    /* A stream runs until the server ends it, the connection dies (idle
     * timeout) or the operator presses ^C. */
    finish(r, &c, 0);
    return 0;
}

static int rpc_client_stream(void *ud, const char *path, int compress, ctl_next_fn next, void *arg,
                             uint8_t **presp, size_t *presplen, struct ctl_status *st)
{
    struct rpc *r = ud;
    struct callctx c = {.r = r, .st = st, .next = next, .narg = arg};
    int rv = start(r, &c, path, AEGIS_RPC_CLIENT_STREAMING, 0, compress);
    if (rv != 0)
        return rv;
    pump(&c);
    finish(r, &c, 0);
    if (c.producer_rc) {
        free(c.resp);
        return c.producer_rc;
    }
    if (st->code == AEGIS_GRPC_OK && c.resp) {
        *presp = c.resp;
        *presplen = c.resplen;
    } else {
        if (st->code == AEGIS_GRPC_OK) {
            st->code = AEGIS_GRPC_INTERNAL;
            snprintf(st->message, sizeof(st->message), "the server sent no reply message");
        }
        free(c.resp);
    }
    return 0;
}

static const struct ctl_rpc_ops rpc_ops = {
    .unary = rpc_unary,
    .server_stream = rpc_server_stream,
    .client_stream = rpc_client_stream,
    .del = rpc_del,
};
