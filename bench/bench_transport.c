/*
 * aegis-bench (bench_transport.c), transport modes: one process per side over real UDP.
 *
 *   aegis-bench serve    --listen 127.0.0.1:PORT --certs DIR
 *   aegis-bench unary    --target HOST:PORT --certs DIR --conns C --concurrency K
 *                        --seconds T --size B [--server-pid PID]
 *   aegis-bench download|upload --target ... --certs DIR --size TOTAL --chunk S
 *   aegis-bench connect  --target ... --certs DIR --n N --parallel P --hold S
 *                        [--server-pid PID]
 *   aegis-bench fanout   --target ... --certs DIR --n N --rounds R
 *   aegis-bench idle     --target ... --certs DIR --n N --parallel P --seconds T
 *                        [--server-pid PID]   (N connections holding one
 *                        Subscribe each, then T seconds of keep-alives only)
 *   aegis-bench mem      --certs DIR --n N   (in-process, loopback UDP: bytes the
 *                        server endpoint's allocator holds per idle connection)
 *   serve/clients: [--keepalive-ms MS] (0 = transport default, -1 = off)
 *
 * Every run ends with one line "RESULT mode=... key=value ...". Numbers are
 * printed, never asserted. --certs DIR is made by aegis-certs (ca.pem,
 * server.pem/.key, client.pem/.key or agent-bench.pem/.key).
 */
#include <aegis/bench/v1/bench.pb-c.h>
#include <aegis/err.h>
#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/transport_ev.h>

#include "bench_proc.h"

#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SVC "/aegis.bench.v1.Bench/"
/* Samples kept for percentiles (one per RPC / delivery). */
#define MAX_SAMPLES (8u * 1024u * 1024u)
#define MAX_SUBS 200000

struct opts {
    const char *mode, *listen, *target, *certs;
    long conns, concurrency, seconds, size, chunk, n, parallel, hold, rounds, server_pid;
    long keepalive_ms;
};

static struct opts O = {.conns = 1,
                        .concurrency = 1,
                        .seconds = 5,
                        .size = 64,
                        .chunk = 65536,
                        .n = 100,
                        .parallel = 100,
                        .hold = 1,
                        .rounds = 10};
static struct ev_loop *loop;

/* --keepalive-ms into an endpoint config: 0 keeps the transport default. */
static void apply_keepalive(struct aegis_endpoint_config *cfg)
{
    if (O.keepalive_ms < 0)
        cfg->keepalive_ns = UINT64_MAX;
    else if (O.keepalive_ms > 0)
        cfg->keepalive_ns = (uint64_t)O.keepalive_ms * AEGIS_NS_PER_MS;
}
static volatile sig_atomic_t stop;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "aegis-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static char *slurp(const char *dir, const char *name, int must)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (must)
            die("cannot read %s: %s (make it with aegis-certs)", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(65536);
    if (!buf)
        die("out of memory");
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static uint64_t now_ns(void)
{
    return aegis_now();
}

static uint64_t wall_ns(void)
{
    return aegis_wallclock();
}

struct samples {
    uint64_t *v;
    size_t n;
};

static void sample(struct samples *s, uint64_t x)
{
    if (!s->v && !(s->v = malloc(MAX_SAMPLES * sizeof(uint64_t))))
        die("out of memory");
    if (s->n < MAX_SAMPLES)
        s->v[s->n++] = x;
}

static uint64_t pct(struct samples *s, double p)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(p * (double)(s->n - 1));
    return s->v[i];
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int r)
{
    (void)l;
    (void)w;
    (void)r;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* ---------------- server ---------------- */

struct sub {
    struct aegis_call *call;
};

static struct aegis_call **subs;
static size_t nsubs;
static uint64_t cmd_seq;

static void sub_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)st;
    (void)ud;
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i] == call) {
            subs[i] = subs[--nsubs];
            break;
        }
}

static int on_subscribe(struct aegis_call *call, const struct aegis_metadata *md, size_t n,
                        void *ud)
{
    (void)md;
    (void)n;
    (void)ud;
    if (nsubs >= MAX_SUBS)
        return aegis_call_finish(call, AEGIS_GRPC_RESOURCE_EXHAUSTED, "too many subscribers", NULL,
                                 0);
    subs[nsubs++] = call;
    struct aegis_call_callbacks cb = {.on_close = sub_close};
    aegis_call_set_callbacks(call, &cb, NULL);
    return 0;
}

static int echo_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)ud;
    /* EchoResponse and EchoRequest share their wire form (field 1 bytes). */
    aegis_call_send(call, msg, len);
    return aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static int on_echo(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    (void)ud;
    struct aegis_call_callbacks cb = {.on_message = echo_msg};
    aegis_call_set_callbacks(call, &cb, NULL);
    return 0;
}

static int trigger_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)ud;
    Aegis__Bench__V1__TriggerRequest *req =
        aegis__bench__v1__trigger_request__unpack(NULL, len, msg);
    if (!req)
        return aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad TriggerRequest", NULL, 0);
    Aegis__Bench__V1__Command cmd = AEGIS__BENCH__V1__COMMAND__INIT;
    cmd.sequence = ++cmd_seq;
    cmd.sent_unix_ns = (int64_t)wall_ns();
    cmd.payload = req->payload;
    uint8_t buf[4096];
    size_t cl = aegis__bench__v1__command__get_packed_size(&cmd);
    uint32_t delivered = 0;
    if (cl <= sizeof(buf)) {
        aegis__bench__v1__command__pack(&cmd, buf);
        for (size_t i = 0; i < nsubs; i++)
            if (aegis_call_send(subs[i], buf, cl) == 0)
                delivered++;
    }
    aegis__bench__v1__trigger_request__free_unpacked(req, NULL);
    Aegis__Bench__V1__TriggerResponse resp = AEGIS__BENCH__V1__TRIGGER_RESPONSE__INIT;
    resp.delivered = delivered;
    uint8_t rb[16];
    size_t rl = aegis__bench__v1__trigger_response__pack(&resp, rb);
    aegis_call_send(call, rb, rl);
    return aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static int on_trigger(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    (void)ud;
    struct aegis_call_callbacks cb = {.on_message = trigger_msg};
    aegis_call_set_callbacks(call, &cb, NULL);
    return 0;
}

struct dl {
    uint64_t left;
    uint32_t chunk;
    uint8_t *buf; /* packed Chunk of `chunk` bytes */
    size_t buflen;
};

static void dl_pump(struct aegis_call *call, struct dl *d)
{
    while (d->left) {
        size_t k = d->left < d->chunk ? (size_t)d->left : d->chunk;
        size_t len = d->buflen;
        if (k < d->chunk) {
            /* last, shorter chunk */
            Aegis__Bench__V1__Chunk c = AEGIS__BENCH__V1__CHUNK__INIT;
            c.data.data = d->buf + 8; /* any bytes */
            c.data.len = k;
            len = aegis__bench__v1__chunk__pack(&c, d->buf);
        }
        int rv = aegis_call_send(call, d->buf, len);
        if (rv == -EAGAIN)
            return;
        if (rv != 0) {
            aegis_call_cancel(call);
            return;
        }
        d->left -= k;
    }
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static int dl_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    struct dl *d = ud;
    Aegis__Bench__V1__DownloadRequest *req =
        aegis__bench__v1__download_request__unpack(NULL, len, msg);
    if (!req || req->chunk_bytes == 0 || req->chunk_bytes > 4000000) {
        if (req)
            aegis__bench__v1__download_request__free_unpacked(req, NULL);
        return aegis_call_finish(call, AEGIS_GRPC_INVALID_ARGUMENT, "bad DownloadRequest", NULL, 0);
    }
    d->left = req->total_bytes;
    d->chunk = req->chunk_bytes;
    aegis__bench__v1__download_request__free_unpacked(req, NULL);
    uint8_t *data = calloc(1, d->chunk);
    Aegis__Bench__V1__Chunk c = AEGIS__BENCH__V1__CHUNK__INIT;
    c.data.data = data;
    c.data.len = d->chunk;
    d->buf = malloc(aegis__bench__v1__chunk__get_packed_size(&c) + 16);
    if (!data || !d->buf)
        return -1;
    d->buflen = aegis__bench__v1__chunk__pack(&c, d->buf);
    free(data);
    dl_pump(call, d);
    return 0;
}

static void dl_writable(struct aegis_call *call, void *ud)
{
    dl_pump(call, ud);
}

static void dl_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    (void)st;
    struct dl *d = ud;
    free(d->buf);
    free(d);
}

static int on_download(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    (void)ud;
    struct dl *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    struct aegis_call_callbacks cb = {
        .on_message = dl_msg, .on_writable = dl_writable, .on_close = dl_close};
    aegis_call_set_callbacks(call, &cb, d);
    return 0;
}

struct up {
    uint64_t bytes, msgs;
};

static int up_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)msg;
    struct up *u = ud;
    u->bytes += len; /* framing overhead of Chunk is a few bytes */
    u->msgs++;
    return 0;
}

static void up_half(struct aegis_call *call, void *ud)
{
    struct up *u = ud;
    Aegis__Bench__V1__UploadSummary s = AEGIS__BENCH__V1__UPLOAD_SUMMARY__INIT;
    s.total_bytes = u->bytes;
    s.messages = u->msgs;
    uint8_t b[32];
    size_t l = aegis__bench__v1__upload_summary__pack(&s, b);
    aegis_call_send(call, b, l);
    aegis_call_finish(call, AEGIS_GRPC_OK, NULL, NULL, 0);
}

static void up_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    (void)st;
    free(ud);
}

static int on_upload(struct aegis_call *call, const struct aegis_metadata *md, size_t n, void *ud)
{
    (void)md;
    (void)n;
    (void)ud;
    struct up *u = calloc(1, sizeof(*u));
    if (!u)
        return -1;
    struct aegis_call_callbacks cb = {
        .on_message = up_msg, .on_half_close = up_half, .on_close = up_close};
    aegis_call_set_callbacks(call, &cb, u);
    return 0;
}

static void load_creds(struct aegis_tls_config *tls, int server, char **bufs)
{
    memset(tls, 0, sizeof(*tls));
    if (server) {
        bufs[0] = slurp(O.certs, "server.pem", 1);
        bufs[1] = slurp(O.certs, "server.key", 1);
        bufs[2] = slurp(O.certs, "ca.pem", 1);
        tls->ca_pem = bufs[2];
        tls->ca_len = strlen(bufs[2]);
    } else {
        bufs[0] = slurp(O.certs, "client.pem", 0);
        bufs[1] = slurp(O.certs, "client.key", 0);
        if (!bufs[0] || !bufs[1]) {
            free(bufs[0]);
            free(bufs[1]);
            bufs[0] = slurp(O.certs, "agent-bench.pem", 1);
            bufs[1] = slurp(O.certs, "agent-bench.key", 1);
        }
        /* pin the server key */
        bufs[2] = slurp(O.certs, "server.pem", 1);
        struct aegis_cert_info info;
        int rv = aegis_cert_info_pem(bufs[2], strlen(bufs[2]), &info);
        if (rv)
            die("cannot read %s/server.pem: %s", O.certs, aegis_strerror(rv));
        static char pin[AEGIS_PIN_STRLEN];
        memcpy(pin, info.pin, sizeof(pin));
        tls->pins[0] = pin;
        tls->npins = 1;
    }
    tls->cert_pem = bufs[0];
    tls->cert_len = strlen(bufs[0]);
    tls->key_pem = bufs[1];
    tls->key_len = strlen(bufs[1]);
}

static int run_serve(void)
{
    if (!O.listen)
        die("serve needs --listen ADDR:PORT");
    subs = calloc(MAX_SUBS, sizeof(*subs));
    if (!subs)
        die("out of memory");
    struct aegis_rpc_handler h[] = {
        {SVC "Echo", AEGIS_RPC_UNARY, on_echo, NULL},
        {SVC "Download", AEGIS_RPC_SERVER_STREAMING, on_download, NULL},
        {SVC "Upload", AEGIS_RPC_CLIENT_STREAMING, on_upload, NULL},
        {SVC "Subscribe", AEGIS_RPC_SERVER_STREAMING, on_subscribe, NULL},
        {SVC "Trigger", AEGIS_RPC_UNARY, on_trigger, NULL},
    };
    struct aegis_endpoint_config cfg = {.is_server = 1, .handlers = h, .nhandlers = 5};
    char *bufs[3];
    load_creds(&cfg.tls, 1, bufs);
    /* A benchmark floods handshakes on purpose: no Retry, cap at the
     * configured maximum. */
    cfg.retry_threshold = SIZE_MAX;
    cfg.max_handshakes = 100000;
    apply_keepalive(&cfg);
    struct aegis_ev *ev;
    int rv = aegis_ev_new(loop, &cfg, O.listen, &ev);
    if (rv)
        die("cannot listen on %s: %s", O.listen, aegis_strerror(rv));
    fprintf(stderr, "aegis-bench: serving on %s (gso=%d)\n", O.listen, aegis_ev_gso(ev));
    ev_timer t;
    ev_timer_init(&t, tick_cb, 0.2, 0.2);
    ev_timer_start(loop, &t);
    while (!stop)
        ev_run(loop, EVRUN_ONCE);
    const struct aegis_transport_stats *s = aegis_endpoint_stats(aegis_ev_endpoint(ev));
    printf("RESULT mode=serve conns=%llu handshakes_ok=%llu handshakes_failed=%llu calls=%llu "
           "pkts_recv=%llu pkts_sent=%llu\n",
           (unsigned long long)s->conns_accepted, (unsigned long long)s->handshakes_ok,
           (unsigned long long)s->handshakes_failed, (unsigned long long)s->calls_started,
           (unsigned long long)s->pkts_recv, (unsigned long long)s->pkts_sent);
    aegis_ev_del(ev);
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    free(subs);
    return 0;
}

/* ---------------- clients ---------------- */

struct client {
    struct aegis_ev *ev;
    struct aegis_conn **conns;
    size_t nconns, established, closed;
    struct samples setup;
    uint64_t *t_start;
};

static struct client C;

static void c_established(struct aegis_conn *conn, const struct aegis_peer_identity *p, void *ud)
{
    (void)p;
    (void)ud;
    C.established++;
    size_t i = (size_t)(uintptr_t)aegis_conn_get_data(conn);
    if (C.t_start)
        sample(&C.setup, now_ns() - C.t_start[i]);
}

static void c_closed(struct aegis_conn *conn, const struct aegis_close_reason *why, void *ud)
{
    (void)ud;
    char b[256];
    C.closed++;
    size_t i = (size_t)(uintptr_t)aegis_conn_get_data(conn);
    if (i < C.nconns)
        C.conns[i] = NULL;
    if (C.closed <= 3)
        fprintf(stderr, "aegis-bench: connection closed: %s\n",
                aegis_close_reason_format(why, b, sizeof(b)));
}

static void client_init(size_t maxconns)
{
    struct aegis_endpoint_config cfg = {0};
    char *bufs[3];
    load_creds(&cfg.tls, 0, bufs);
    cfg.callbacks.on_established = c_established;
    cfg.callbacks.on_closed = c_closed;
    apply_keepalive(&cfg);
    int rv = aegis_ev_new(loop, &cfg, "127.0.0.1:0", &C.ev);
    if (rv)
        die("cannot create client endpoint: %s", aegis_strerror(rv));
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    C.conns = calloc(maxconns, sizeof(*C.conns));
    C.t_start = calloc(maxconns, sizeof(*C.t_start));
    if (!C.conns || !C.t_start)
        die("out of memory");
}

static struct aegis_conn *client_connect(size_t i)
{
    struct aegis_conn *conn;
    C.t_start[i] = now_ns();
    int rv = aegis_ev_connect(C.ev, O.target, "localhost", &conn);
    if (rv)
        die("cannot connect to %s: %s", O.target, aegis_strerror(rv));
    aegis_conn_set_data(conn, (void *)(uintptr_t)i);
    C.conns[i] = conn;
    if (i + 1 > C.nconns)
        C.nconns = i + 1;
    return conn;
}

static void wait_established(size_t n, double seconds)
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (C.established + C.closed < n && now_ns() < end)
        ev_run(loop, EVRUN_ONCE);
    if (C.established < n)
        die("only %zu of %zu connections established", C.established, n);
}

/* unary */
struct unary_slot {
    struct aegis_conn *conn;
    uint64_t t0;
    uint8_t *req;
    size_t reqlen;
};
static struct samples lat;
static uint64_t done_rpcs, failed_rpcs;
static int unary_running;

static void unary_issue(struct unary_slot *s);

static void unary_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    struct unary_slot *s = ud;
    if (st->code == AEGIS_GRPC_OK) {
        done_rpcs++;
        sample(&lat, now_ns() - s->t0);
    } else {
        failed_rpcs++;
    }
    if (unary_running)
        unary_issue(s);
}

static void unary_issue(struct unary_slot *s)
{
    static const struct aegis_call_callbacks cb = {.on_close = unary_close};
    struct aegis_call *call;
    s->t0 = now_ns();
    if (aegis_call_start(s->conn, SVC "Echo", AEGIS_RPC_UNARY, NULL, &cb, s, &call) != 0) {
        failed_rpcs++;
        return;
    }
    aegis_call_send(call, s->req, s->reqlen);
    aegis_call_close_send(call);
}

static int run_unary(void)
{
    client_init((size_t)O.conns);
    for (long i = 0; i < O.conns; i++)
        client_connect((size_t)i);
    wait_established((size_t)O.conns, 10);
    Aegis__Bench__V1__EchoRequest req = AEGIS__BENCH__V1__ECHO_REQUEST__INIT;
    uint8_t *payload = calloc(1, (size_t)O.size + 1);
    req.payload.data = payload;
    req.payload.len = (size_t)O.size;
    size_t rl = aegis__bench__v1__echo_request__get_packed_size(&req);
    uint8_t *rb = malloc(rl);
    aegis__bench__v1__echo_request__pack(&req, rb);
    struct unary_slot *slots = calloc((size_t)O.concurrency, sizeof(*slots));
    /* warm-up is the handshake itself; measure from here */
    uint64_t c0 = bench_cpu_us_self(), s0 = bench_cpu_us_pid(O.server_pid), t0 = now_ns();
    unary_running = 1;
    for (long i = 0; i < O.concurrency; i++) {
        slots[i].conn = C.conns[i % O.conns];
        slots[i].req = rb;
        slots[i].reqlen = rl;
        unary_issue(&slots[i]);
    }
    uint64_t end = t0 + (uint64_t)O.seconds * AEGIS_NS_PER_S;
    while (now_ns() < end && !stop)
        ev_run(loop, EVRUN_ONCE);
    unary_running = 0;
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t c1 = bench_cpu_us_self(), s1 = bench_cpu_us_pid(O.server_pid);
    qsort(lat.v, lat.n, sizeof(uint64_t), bench_cmp_u64);
    double cpu = done_rpcs ? (double)((c1 - c0) + (s1 - s0)) / (double)done_rpcs : 0;
    printf("RESULT mode=unary conns=%ld concurrency=%ld size=%ld rps=%.0f p50_us=%.1f "
           "p90_us=%.1f p99_us=%.1f p999_us=%.1f cpu_us_per_rpc=%.1f server_cpu_counted=%d "
           "failed=%llu\n",
           O.conns, O.concurrency, O.size, (double)done_rpcs / secs, (double)pct(&lat, 0.5) / 1e3,
           (double)pct(&lat, 0.9) / 1e3, (double)pct(&lat, 0.99) / 1e3,
           (double)pct(&lat, 0.999) / 1e3, cpu, O.server_pid > 0, (unsigned long long)failed_rpcs);
    free(slots);
    free(rb);
    free(payload);
    aegis_ev_del(C.ev);
    return 0;
}

/* download / upload */
static uint64_t xfer_bytes;
static int xfer_done, xfer_status;

static int xfer_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)msg;
    (void)ud;
    xfer_bytes += len;
    return 0;
}

static void xfer_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    (void)ud;
    xfer_done = 1;
    xfer_status = st->code;
}

struct upl {
    uint64_t left;
    uint8_t *buf;
    size_t buflen;
    uint32_t chunk;
};

static void upl_pump(struct aegis_call *call, struct upl *u)
{
    while (u->left) {
        int rv = aegis_call_send(call, u->buf, u->buflen);
        if (rv == -EAGAIN)
            return;
        if (rv)
            die("upload send: %s", aegis_strerror(rv));
        u->left -= u->left < u->chunk ? u->left : u->chunk;
    }
    aegis_call_close_send(call);
}

static void upl_writable(struct aegis_call *call, void *ud)
{
    upl_pump(call, ud);
}

static int run_xfer(int download)
{
    client_init(1);
    struct aegis_conn *conn = client_connect(0);
    wait_established(1, 10);
    struct aegis_call_callbacks cb = {.on_message = xfer_msg, .on_close = xfer_close};
    struct aegis_call *call;
    struct upl u = {0};
    uint64_t c0 = bench_cpu_us_self(), s0 = bench_cpu_us_pid(O.server_pid), t0 = now_ns();
    if (download) {
        if (aegis_call_start(conn, SVC "Download", AEGIS_RPC_SERVER_STREAMING, NULL, &cb, NULL,
                             &call))
            die("cannot start Download");
        Aegis__Bench__V1__DownloadRequest r = AEGIS__BENCH__V1__DOWNLOAD_REQUEST__INIT;
        r.total_bytes = (uint64_t)O.size;
        r.chunk_bytes = (uint32_t)O.chunk;
        uint8_t b[32];
        size_t l = aegis__bench__v1__download_request__pack(&r, b);
        aegis_call_send(call, b, l);
        aegis_call_close_send(call);
    } else {
        cb.on_writable = upl_writable;
        if (aegis_call_start(conn, SVC "Upload", AEGIS_RPC_CLIENT_STREAMING, NULL, &cb, &u, &call))
            die("cannot start Upload");
        uint8_t *data = calloc(1, (size_t)O.chunk);
        Aegis__Bench__V1__Chunk c = AEGIS__BENCH__V1__CHUNK__INIT;
        c.data.data = data;
        c.data.len = (size_t)O.chunk;
        u.buf = malloc(aegis__bench__v1__chunk__get_packed_size(&c));
        u.buflen = aegis__bench__v1__chunk__pack(&c, u.buf);
        u.left = (uint64_t)O.size;
        u.chunk = (uint32_t)O.chunk;
        free(data);
        upl_pump(call, &u);
    }
    uint64_t end = t0 + 300 * AEGIS_NS_PER_S;
    while (!xfer_done && now_ns() < end && !stop)
        ev_run(loop, EVRUN_ONCE);
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t c1 = bench_cpu_us_self(), s1 = bench_cpu_us_pid(O.server_pid);
    if (!download)
        xfer_bytes = (uint64_t)O.size;
    /* CPU per byte is steadier than the rate on a shared machine */
    double gb = (double)xfer_bytes / 1e9;
    printf("RESULT mode=%s size=%ld chunk=%ld status=%d seconds=%.3f mbps=%.1f gbytes_per_s=%.3f "
           "client_cpu_s_per_gb=%.2f server_cpu_s_per_gb=%.2f\n",
           download ? "download" : "upload", O.size, O.chunk, xfer_status, secs,
           (double)xfer_bytes * 8 / 1e6 / secs, gb / secs,
           gb > 0 ? (double)(c1 - c0) / 1e6 / gb : 0.0,
           gb > 0 && O.server_pid > 0 ? (double)(s1 - s0) / 1e6 / gb : -1.0);
    free(u.buf);
    aegis_ev_del(C.ev);
    return xfer_status == 0 && xfer_done ? 0 : 1;
}

/* connect / fanout: every connection holds one Subscribe */
static struct samples deliv;
static uint64_t deliveries;

static int sub_msg(struct aegis_call *call, const uint8_t *msg, size_t len, void *ud)
{
    (void)call;
    (void)ud;
    Aegis__Bench__V1__Command *c = aegis__bench__v1__command__unpack(NULL, len, msg);
    if (c) {
        uint64_t now = wall_ns();
        sample(&deliv, now > (uint64_t)c->sent_unix_ns ? now - (uint64_t)c->sent_unix_ns : 0);
        deliveries++;
        aegis__bench__v1__command__free_unpacked(c, NULL);
    }
    return 0;
}

static void subscribe_on(struct aegis_conn *conn, size_t i)
{
    static const struct aegis_call_callbacks cb = {.on_message = sub_msg};
    Aegis__Bench__V1__SubscribeRequest r = AEGIS__BENCH__V1__SUBSCRIBE_REQUEST__INIT;
    char id[32];
    snprintf(id, sizeof(id), "c%zu", i);
    r.client_id = id;
    uint8_t b[64];
    size_t l = aegis__bench__v1__subscribe_request__pack(&r, b);
    struct aegis_call *call;
    if (aegis_call_start(conn, SVC "Subscribe", AEGIS_RPC_SERVER_STREAMING, NULL, &cb, NULL,
                         &call) == 0) {
        aegis_call_send(call, b, l);
        aegis_call_close_send(call);
    }
}

static void open_many(size_t n, size_t parallel)
{
    size_t next = 0;
    uint64_t end = now_ns() + 600 * AEGIS_NS_PER_S;
    while ((C.established + C.closed < n) && now_ns() < end && !stop) {
        while (next < n && next - (C.established + C.closed) < parallel) {
            struct aegis_conn *c = client_connect(next);
            subscribe_on(c, next);
            next++;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    if (C.established < n)
        die("only %zu of %zu connections established (%zu closed)", C.established, n, C.closed);
}

static int run_connect(void)
{
    size_t n = (size_t)O.n;
    client_init(n);
    uint64_t srss0 = bench_rss_bytes(O.server_pid), crss0 = bench_rss_bytes(0);
    uint64_t sc0 = bench_cpu_us_pid(O.server_pid), cc0 = bench_cpu_us_self(), t0 = now_ns();
    open_many(n, (size_t)O.parallel);
    double secs = (double)(now_ns() - t0) / 1e9;
    /* let the Subscribe streams settle, then measure memory */
    uint64_t settle = now_ns() + 1 * AEGIS_NS_PER_S;
    while (now_ns() < settle)
        ev_run(loop, EVRUN_ONCE);
    uint64_t sc1 = bench_cpu_us_pid(O.server_pid), cc1 = bench_cpu_us_self();
    uint64_t srss1 = bench_rss_bytes(O.server_pid), crss1 = bench_rss_bytes(0);
    qsort(C.setup.v, C.setup.n, sizeof(uint64_t), bench_cmp_u64);
    printf("RESULT mode=connect n=%zu parallel=%ld handshakes_per_s=%.0f setup_p50_us=%.0f "
           "setup_p99_us=%.0f server_bytes_per_conn=%.0f client_bytes_per_conn=%.0f "
           "server_cpu_us_per_conn=%.0f client_cpu_us_per_conn=%.0f\n",
           n, O.parallel, (double)n / secs, (double)pct(&C.setup, 0.5) / 1e3,
           (double)pct(&C.setup, 0.99) / 1e3,
           O.server_pid > 0 ? (double)(srss1 - srss0) / (double)n : -1.0,
           (double)(crss1 - crss0) / (double)n,
           O.server_pid > 0 ? (double)(sc1 - sc0) / (double)n : -1.0,
           (double)(cc1 - cc0) / (double)n);
    fflush(stdout);
    uint64_t hold = now_ns() + (uint64_t)O.hold * AEGIS_NS_PER_S;
    while (now_ns() < hold && !stop)
        ev_run(loop, EVRUN_ONCE);
    aegis_ev_del(C.ev);
    return 0;
}

static int trig_done;

static void trig_close(struct aegis_call *call, const struct aegis_call_status *st, void *ud)
{
    (void)call;
    (void)st;
    (void)ud;
    trig_done = 1;
}

static int run_fanout(void)
{
    size_t n = (size_t)O.n;
    client_init(n + 1);
    open_many(n, (size_t)O.parallel);
    struct aegis_conn *tc = client_connect(n);
    wait_established(n + 1, 10);
    uint64_t settle = now_ns() + 1 * AEGIS_NS_PER_S;
    while (now_ns() < settle)
        ev_run(loop, EVRUN_ONCE);
    for (long r = 0; r < O.rounds && !stop; r++) {
        uint64_t want = deliveries + n;
        trig_done = 0;
        static const struct aegis_call_callbacks cb = {.on_close = trig_close};
        struct aegis_call *call;
        if (aegis_call_start(tc, SVC "Trigger", AEGIS_RPC_UNARY, NULL, &cb, NULL, &call))
            die("cannot start Trigger");
        Aegis__Bench__V1__TriggerRequest tr = AEGIS__BENCH__V1__TRIGGER_REQUEST__INIT;
        uint8_t pl[64] = {0};
        tr.payload.data = pl;
        tr.payload.len = sizeof(pl);
        uint8_t b[128];
        size_t l = aegis__bench__v1__trigger_request__pack(&tr, b);
        aegis_call_send(call, b, l);
        aegis_call_close_send(call);
        uint64_t end = now_ns() + 10 * AEGIS_NS_PER_S;
        while ((deliveries < want || !trig_done) && now_ns() < end)
            ev_run(loop, EVRUN_ONCE);
    }
    qsort(deliv.v, deliv.n, sizeof(uint64_t), bench_cmp_u64);
    printf("RESULT mode=fanout n=%zu rounds=%ld deliveries=%llu p50_us=%.0f p99_us=%.0f "
           "max_us=%.0f\n",
           n, O.rounds, (unsigned long long)deliveries, (double)pct(&deliv, 0.5) / 1e3,
           (double)pct(&deliv, 0.99) / 1e3, deliv.n ? (double)deliv.v[deliv.n - 1] / 1e3 : 0.0);
    aegis_ev_del(C.ev);
    return 0;
}

/* idle: N connections holding one Subscribe each, then keep-alives only */
static int run_idle(void)
{
    size_t n = (size_t)O.n;
    client_init(n);
    uint64_t srss0 = bench_rss_bytes(O.server_pid);
    open_many(n, (size_t)O.parallel);
    /* let the handshake flights and Subscribe streams settle */
    uint64_t settle = now_ns() + 2 * AEGIS_NS_PER_S;
    while (now_ns() < settle && !stop)
        ev_run(loop, EVRUN_ONCE);
    const struct aegis_transport_stats *st = aegis_endpoint_stats(aegis_ev_endpoint(C.ev));
    uint64_t ps0 = st->pkts_sent, pr0 = st->pkts_recv;
    size_t closed0 = C.closed;
    uint64_t sc0 = bench_cpu_us_pid(O.server_pid), cc0 = bench_cpu_us_self(), t0 = now_ns();
    uint64_t end = t0 + (uint64_t)O.seconds * AEGIS_NS_PER_S;
    while (now_ns() < end && !stop)
        ev_run(loop, EVRUN_ONCE);
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t sc1 = bench_cpu_us_pid(O.server_pid), cc1 = bench_cpu_us_self();
    uint64_t srss1 = bench_rss_bytes(O.server_pid);
    double scpu = O.server_pid > 0 ? (double)(sc1 - sc0) / 1e6 : -1.0;
    double ccpu = (double)(cc1 - cc0) / 1e6;
    printf("RESULT mode=idle n=%zu seconds=%.1f keepalive_ms=%ld server_cpu_pct=%.2f "
           "server_cpu_s_per_min=%.2f client_cpu_pct=%.2f pkts_to_server_per_s=%.0f "
           "pkts_from_server_per_s=%.0f server_rss_bytes_per_conn=%.0f disconnects=%zu\n",
           n, secs, O.keepalive_ms, scpu >= 0 ? 100.0 * scpu / secs : -1.0,
           scpu >= 0 ? 60.0 * scpu / secs : -1.0, 100.0 * ccpu / secs,
           (double)(st->pkts_sent - ps0) / secs, (double)(st->pkts_recv - pr0) / secs,
           O.server_pid > 0 ? (double)(srss1 - srss0) / (double)n : -1.0, C.closed - closed0);
    aegis_ev_del(C.ev);
    return C.closed == closed0 ? 0 : 1;
}

/*
 * mem: a server endpoint in this process with a counting allocator (the
 * transport hands it to ngtcp2 and nghttp3 too), N client connections over
 * loopback UDP. Bytes live per connection after one unary RPC each, then
 * with one Subscribe stream held open on each (an idle agent). wolfSSL's
 * own global allocator is not counted (the QUIC packet-protection contexts,
 * ~6 KiB per connection; see tests/transport/test_transport_mem.c).
 */
struct cmem_hdr {
    size_t size;
    size_t pad;
};
static size_t cm_live, cm_nlive;

static void *cm_malloc(size_t size, void *ud)
{
    (void)ud;
    struct cmem_hdr *h = malloc(sizeof(*h) + size);
    if (!h)
        return NULL;
    h->size = size;
    cm_live += size;
    cm_nlive++;
    return h + 1;
}

static void cm_free(void *ptr, void *ud)
{
    (void)ud;
    if (!ptr)
        return;
    struct cmem_hdr *h = (struct cmem_hdr *)ptr - 1;
    cm_live -= h->size;
    cm_nlive--;
    free(h);
}

static void *cm_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > SIZE_MAX / 2 / size)
        return NULL;
    void *p = cm_malloc(n * size, ud);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *cm_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr)
        return cm_malloc(size, ud);
    struct cmem_hdr *h = (struct cmem_hdr *)ptr - 1;
    void *p = cm_malloc(size, ud);
    if (!p)
        return NULL;
    memcpy(p, ptr, h->size < size ? h->size : size);
    cm_free(ptr, ud);
    return p;
}

static void run_until(int (*cond)(void), double seconds)
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (!cond() && now_ns() < end && !stop)
        ev_run(loop, EVRUN_ONCE);
}

static size_t mem_want;
static int cond_unary_done(void)
{
    return done_rpcs + failed_rpcs >= mem_want;
}
static int cond_subs(void)
{
    return nsubs >= mem_want;
}
static int cond_never(void)
{
    return 0;
}

static int run_mem(void)
{
    size_t n = (size_t)O.n;
    if (n > MAX_SUBS)
        die("--n at most %d", MAX_SUBS);
    subs = calloc(MAX_SUBS, sizeof(*subs));
    if (!subs)
        die("out of memory");
    static const struct aegis_mem cm = {NULL, cm_malloc, cm_free, cm_calloc, cm_realloc};
    struct aegis_rpc_handler h[] = {
        {SVC "Echo", AEGIS_RPC_UNARY, on_echo, NULL},
        {SVC "Subscribe", AEGIS_RPC_SERVER_STREAMING, on_subscribe, NULL},
    };
    struct aegis_endpoint_config cfg = {.is_server = 1, .handlers = h, .nhandlers = 2, .mem = &cm};
    char *bufs[3];
    load_creds(&cfg.tls, 1, bufs);
    cfg.retry_threshold = SIZE_MAX;
    cfg.max_handshakes = 100000;
    apply_keepalive(&cfg);
    struct aegis_ev *sev;
    int rv = aegis_ev_new(loop, &cfg, "127.0.0.1:0", &sev);
    if (rv)
        die("cannot create the server endpoint: %s", aegis_strerror(rv));
    size_t base = cm_live, base_n = cm_nlive;
    static char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%u", aegis_ev_port(sev));
    O.target = target;
    client_init(n);
    /* connect, O.parallel handshakes at a time */
    size_t next = 0;
    uint64_t end = now_ns() + 120 * AEGIS_NS_PER_S;
    while (C.established + C.closed < n && now_ns() < end && !stop) {
        while (next < n && next - (C.established + C.closed) < (size_t)O.parallel)
            client_connect(next++);
        ev_run(loop, EVRUN_ONCE);
    }
    if (C.established < n)
        die("only %zu of %zu connections established", C.established, n);
    /* one unary RPC on each */
    Aegis__Bench__V1__EchoRequest req = AEGIS__BENCH__V1__ECHO_REQUEST__INIT;
    uint8_t payload[64] = {0};
    req.payload.data = payload;
    req.payload.len = sizeof(payload);
    uint8_t rb[128];
    size_t rl = aegis__bench__v1__echo_request__pack(&req, rb);
    struct unary_slot *slots = calloc(n, sizeof(*slots));
    if (!slots)
        die("out of memory");
    mem_want = n;
    unary_running = 0;
    for (size_t i = 0; i < n; i++) {
        slots[i].conn = C.conns[i];
        slots[i].req = rb;
        slots[i].reqlen = rl;
        unary_issue(&slots[i]);
    }
    run_until(cond_unary_done, 60);
    if (done_rpcs < n)
        die("only %llu of %zu unary RPCs succeeded", (unsigned long long)done_rpcs, n);
    /* idle a little: ACKs settle, finished calls are reaped */
    run_until(cond_never, 1.0);
    printf("RESULT mode=mem n=%zu stream=0 bytes_per_conn=%.0f allocs_per_conn=%.2f "
           "wolfssl_counted=0\n",
           n, (double)(cm_live - base) / (double)n, (double)(cm_nlive - base_n) / (double)n);
    fflush(stdout);
    for (size_t i = 0; i < n; i++)
        subscribe_on(C.conns[i], i);
    run_until(cond_subs, 60);
    if (nsubs < n)
        die("only %zu of %zu Subscribe calls arrived", nsubs, n);
    run_until(cond_never, 1.0);
    printf("RESULT mode=mem n=%zu stream=1 bytes_per_conn=%.0f allocs_per_conn=%.2f "
           "wolfssl_counted=0\n",
           n, (double)(cm_live - base) / (double)n, (double)(cm_nlive - base_n) / (double)n);
    aegis_ev_del(C.ev);
    aegis_ev_del(sev);
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    free(slots);
    free(subs);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: aegis-bench serve|unary|download|upload|connect|fanout|idle|mem [options]\n"
            "  --listen ADDR:PORT --target ADDR:PORT --certs DIR --conns C --concurrency K\n"
            "  --seconds T --size B --chunk S --n N --parallel P --hold S --rounds R\n"
            "  --server-pid PID --keepalive-ms MS\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    O.mode = argv[1];
    static const struct option lo[] = {
        {"listen", 1, 0, 'l'},     {"target", 1, 0, 't'},       {"certs", 1, 0, 'c'},
        {"conns", 1, 0, 'C'},      {"concurrency", 1, 0, 'K'},  {"seconds", 1, 0, 'T'},
        {"size", 1, 0, 'B'},       {"chunk", 1, 0, 'S'},        {"n", 1, 0, 'N'},
        {"parallel", 1, 0, 'P'},   {"hold", 1, 0, 'H'},         {"rounds", 1, 0, 'R'},
        {"server-pid", 1, 0, 'p'}, {"keepalive-ms", 1, 0, 'k'}, {0, 0, 0, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'l':
            O.listen = optarg;
            break;
        case 't':
            O.target = optarg;
            break;
        case 'c':
            O.certs = optarg;
            break;
        case 'C':
            O.conns = atol(optarg);
            break;
        case 'K':
            O.concurrency = atol(optarg);
            break;
        case 'T':
            O.seconds = atol(optarg);
            break;
        case 'B':
            O.size = atol(optarg);
            break;
        case 'S':
            O.chunk = atol(optarg);
            break;
        case 'N':
            O.n = atol(optarg);
            break;
        case 'P':
            O.parallel = atol(optarg);
            break;
        case 'H':
            O.hold = atol(optarg);
            break;
        case 'R':
            O.rounds = atol(optarg);
            break;
        case 'p':
            O.server_pid = atol(optarg);
            break;
        case 'k':
            O.keepalive_ms = atol(optarg);
            break;
        default:
            usage();
        }
    }
    if (!O.certs)
        die("--certs DIR is required (a directory made by aegis-certs)");
    if (O.conns < 1 || O.concurrency < 1 || O.n < 1 || O.parallel < 1 || O.chunk < 1 || O.size < 0)
        die("counts must be positive");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    loop = ev_default_loop(0);
    ev_timer t;
    ev_timer_init(&t, tick_cb, 0.1, 0.1);
    ev_timer_start(loop, &t);
    if (strcmp(O.mode, "serve") == 0)
        return run_serve();
    if (strcmp(O.mode, "mem") == 0)
        return run_mem();
    if (!O.target)
        die("%s needs --target ADDR:PORT", O.mode);
    if (strcmp(O.mode, "unary") == 0)
        return run_unary();
    if (strcmp(O.mode, "download") == 0)
        return run_xfer(1);
    if (strcmp(O.mode, "upload") == 0)
        return run_xfer(0);
    if (strcmp(O.mode, "connect") == 0)
        return run_connect();
    if (strcmp(O.mode, "fanout") == 0)
        return run_fanout();
    if (strcmp(O.mode, "idle") == 0)
        return run_idle();
    usage();
}
