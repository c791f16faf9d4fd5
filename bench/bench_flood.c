/*
 * aegis-bench-flood: a handshake flood against a QUIC server (issue 7, DESIGN §5 and §8).
 *
 *   aegis-bench-flood --target HOST:PORT [--rate R] [--count C] [--seconds S] [--sockets P]
 *                     [--follow-retry] [--sni NAME] [--window-ms W]
 *
 * Opens many QUIC handshakes and never finishes them. Every handshake is a real ngtcp2 client
 * connection with a wolfSSL ClientHello (ALPN h3, X25519), so its first flight is a genuine,
 * padded client Initial the server has to decrypt. The handshakes come from P UDP sockets
 * (source ports) with a fresh connection ID each, at R per second, at most C of them, for at
 * most S seconds. After the first flight the client goes silent: it never sends an ACK, a
 * Handshake packet or a retransmission.
 *
 * With --follow-retry a QUIC Retry (RFC 9000 §8.1.2) is answered once, with the token, from
 * the same source address, so the server has validated the address and must hold the
 * handshake's state until its handshake timeout; then the client goes silent too. Without it
 * a Retry ends that handshake.
 *
 * The server's first answer to each handshake is classified (by feeding it to the client
 * connection, which decrypts it):
 *   retry     a Retry packet;
 *   refused   a CONNECTION_CLOSE with CONNECTION_REFUSED (the server's hard cap, "server busy");
 *   bad_token a CONNECTION_CLOSE with INVALID_TOKEN;
 *   closed    any other CONNECTION_CLOSE (the first reasons are printed);
 *   accepted  the server's handshake flight: it created state for this handshake;
 *   unanswered nothing within --window-ms.
 * A connection is freed as soon as it is classified (or unanswered), so memory stays bounded
 * by rate x window, never by the count.
 *
 * Ends at --seconds, --count (plus one window for the last answers) or SIGTERM/SIGINT, and
 * prints one line:
 *   RESULT mode=flood target=... follow_retry=0|1 seconds=... handshakes=... initials_sent=...
 *          retries_seen=... retries_followed=... accepted=... refusals_seen=... bad_token=...
 *          other_closes=... unanswered=... late_packets=... rate_per_s=...
 *
 * This program talks to ngtcp2 and wolfSSL directly (it is a test client, not part of the
 * transport library) and is deliberately hostile: it exists to show that a server under such
 * a flood keeps serving its authenticated clients.
 */
#include <wolfssl/options.h>

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_wolfssl.h>
#include <wolfssl/ssl.h>

#include <aegis/tstamp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Our source connection IDs: 4 bytes slot index + 4 bytes generation, so the server's
 * answers (DCID = our SCID) find their connection without a hash map. */
#define OUR_SCID_LEN 8
/* Initial DCID length (RFC 9000 §7.2: at least 8). */
#define INITIAL_DCID_LEN 18
/* Largest datagram read or written. */
#define MTU 1500
/* Datagrams of one first flight (the ClientHello fits in one; two for safety). */
#define MAX_FLIGHT 2
/* Upper bounds of the options, so a typo cannot exhaust the machine. */
#define MAX_RATE 100000
#define MAX_COUNT 10000000
#define MAX_SECONDS 86400
#define MAX_SOCKETS 4096
/* Handshakes started per loop turn at most (the rest wait for the next turn). */
#define START_BURST 256
/* Datagrams read per socket per loop turn at most. */
#define READ_BURST 64
/* Close reasons printed before going quiet. */
#define MAX_REPORTED 5

enum fc_state { FC_FREE = 0, FC_SENT, FC_RETRIED };

struct flood_conn {
    enum fc_state state;
    uint32_t gen;
    int sock;
    uint64_t deadline; /* unanswered after this */
    ngtcp2_conn *q;
    WOLFSSL *ssl;
    ngtcp2_crypto_conn_ref ref;
};

struct flood_sock {
    int fd;
    struct sockaddr_storage local;
    socklen_t local_len;
};

struct opts {
    const char *target, *sni;
    long rate, count, seconds, sockets, window_ms;
    int follow_retry;
};

static struct opts O = {.sni = "localhost",
                        .rate = 200,
                        .count = 10000,
                        .seconds = 30,
                        .sockets = 64,
                        .window_ms = 3000};

static struct {
    uint64_t handshakes, initials_sent, retries_seen, retries_followed, accepted, refusals,
        bad_token, other_closes, unanswered, late_packets, send_errors;
} S;

static WOLFSSL_CTX *ctx;
static struct flood_conn *conns;
static size_t nconns, free_hint;
static struct flood_sock *socks;
static struct sockaddr_storage target;
static socklen_t target_len;
static volatile sig_atomic_t stop;
static uint64_t rng_state;

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "aegis-bench-flood: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static uint64_t rnd64(void)
{
    /* xorshift64*: connection IDs and ngtcp2's random bytes need no more here */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void rnd_fill(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rnd64() >> 56);
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* ---- ngtcp2 client callbacks -------------------------------------------------------- */

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *rctx)
{
    (void)rctx;
    rnd_fill(dest, len);
}

static int cb_new_cid(ngtcp2_conn *q, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *user_data)
{
    (void)q;
    (void)user_data;
    /* Never used: the handshake never completes, so no NEW_CONNECTION_ID is sent. */
    cid->datalen = cidlen;
    rnd_fill(cid->data, cidlen);
    rnd_fill(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((struct flood_conn *)ref->user_data)->q;
}

/* ---- connections -------------------------------------------------------------------- */

static void fc_free(struct flood_conn *fc)
{
    if (fc->q)
        ngtcp2_conn_del(fc->q);
    if (fc->ssl)
        wolfSSL_free(fc->ssl);
    fc->q = NULL;
    fc->ssl = NULL;
    fc->state = FC_FREE;
    free_hint = (size_t)(fc - conns);
}

static void make_path(ngtcp2_path *p, struct flood_sock *s)
{
    p->local.addr = (ngtcp2_sockaddr *)&s->local;
    p->local.addrlen = (ngtcp2_socklen)s->local_len;
    p->remote.addr = (ngtcp2_sockaddr *)&target;
    p->remote.addrlen = (ngtcp2_socklen)target_len;
    p->user_data = NULL;
}

/* Writes whatever the connection has to send now (its first flight, or the Initial that
 * carries the Retry token) and nothing else. */
static void send_flight(struct flood_conn *fc, uint64_t now)
{
    uint8_t buf[MTU];
    struct flood_sock *s = &socks[fc->sock];
    for (int i = 0; i < MAX_FLIGHT; i++) {
        ngtcp2_path_storage ps;
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_ssize n = ngtcp2_conn_write_pkt(fc->q, &ps.path, NULL, buf, sizeof(buf), now);
        if (n <= 0)
            break;
        if (send(s->fd, buf, (size_t)n, 0) < 0)
            S.send_errors++;
        else
            S.initials_sent++;
    }
}

static int fc_start(struct flood_conn *fc, uint32_t slot, uint64_t now)
{
    ngtcp2_cid scid, dcid;
    fc->gen = (uint32_t)rnd64();
    fc->sock = (int)(rnd64() % (uint64_t)O.sockets);
    scid.datalen = OUR_SCID_LEN;
    memcpy(scid.data, &slot, 4);
    memcpy(scid.data + 4, &fc->gen, 4);
    dcid.datalen = INITIAL_DCID_LEN;
    rnd_fill(dcid.data, dcid.datalen);

    ngtcp2_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = cb_rand;
    cb.get_new_connection_id = cb_new_cid;

    ngtcp2_settings st;
    ngtcp2_settings_default(&st);
    st.initial_ts = now;
    ngtcp2_transport_params tp;
    ngtcp2_transport_params_default(&tp);
    tp.initial_max_streams_uni = 3;
    tp.initial_max_data = 1 << 20;
    tp.initial_max_stream_data_bidi_local = 1 << 18;
    tp.initial_max_stream_data_uni = 1 << 18;
    tp.max_idle_timeout = 60 * AEGIS_NS_PER_S;

    ngtcp2_path path;
    make_path(&path, &socks[fc->sock]);
    if (ngtcp2_conn_client_new(&fc->q, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &st, &tp,
                               NULL, fc) != 0) {
        fc->q = NULL;
        return -1;
    }
    fc->ssl = wolfSSL_new(ctx);
    if (!fc->ssl)
        goto fail;
    fc->ref.get_conn = get_conn;
    fc->ref.user_data = fc;
    wolfSSL_set_app_data(fc->ssl, &fc->ref);
    wolfSSL_set_connect_state(fc->ssl);
    char alpn[] = "h3";
    if (wolfSSL_UseALPN(fc->ssl, alpn, 2, WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS ||
        wolfSSL_UseSNI(fc->ssl, WOLFSSL_SNI_HOST_NAME, O.sni, (unsigned short)strlen(O.sni)) !=
            WOLFSSL_SUCCESS)
        goto fail;
    ngtcp2_conn_set_tls_native_handle(fc->q, fc->ssl);
    fc->state = FC_SENT;
    fc->deadline = now + (uint64_t)O.window_ms * AEGIS_NS_PER_MS;
    S.handshakes++;
    send_flight(fc, now);
    return 0;
fail:
    fc_free(fc);
    return -1;
}

static struct flood_conn *free_slot(void)
{
    for (size_t i = 0; i < nconns; i++) {
        size_t k = (free_hint + i) % nconns;
        if (conns[k].state == FC_FREE)
            return &conns[k];
    }
    return NULL;
}

static void classify_close(struct flood_conn *fc)
{
    const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(fc->q);
    if (e->type == NGTCP2_CCERR_TYPE_TRANSPORT && e->error_code == NGTCP2_CONNECTION_REFUSED) {
        S.refusals++;
    } else if (e->type == NGTCP2_CCERR_TYPE_TRANSPORT && e->error_code == NGTCP2_INVALID_TOKEN) {
        S.bad_token++;
    } else {
        if (S.other_closes++ < MAX_REPORTED)
            fprintf(stderr, "aegis-bench-flood: closed by the server: type %d code 0x%llx %.*s\n",
                    (int)e->type, (unsigned long long)e->error_code, (int)e->reasonlen,
                    e->reason ? (const char *)e->reason : "");
    }
}

static void on_packet(struct flood_sock *s, const struct sockaddr_storage *from, socklen_t fromlen,
                      const uint8_t *data, size_t len, uint64_t now)
{
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, OUR_SCID_LEN);
    if (rv != 0 || vc.dcidlen != OUR_SCID_LEN) {
        S.late_packets++;
        return;
    }
    uint32_t slot, gen;
    memcpy(&slot, vc.dcid, 4);
    memcpy(&gen, vc.dcid + 4, 4);
    if (slot >= nconns || conns[slot].state == FC_FREE || conns[slot].gen != gen) {
        S.late_packets++; /* an answer to a handshake already classified (retransmission) */
        return;
    }
    struct flood_conn *fc = &conns[slot];
    int is_retry = (data[0] & 0x80) && vc.version == NGTCP2_PROTO_VER_V1 &&
                   ((data[0] & 0x30) >> 4) == 3; /* RFC 9000 §17.2.5 */
    if (is_retry) {
        S.retries_seen++;
        if (!O.follow_retry || fc->state != FC_SENT) {
            fc_free(fc);
            return;
        }
    }
    ngtcp2_path path;
    make_path(&path, s);
    path.remote.addr = (ngtcp2_sockaddr *)from;
    path.remote.addrlen = (ngtcp2_socklen)fromlen;
    ngtcp2_pkt_info pi = {0};
    rv = ngtcp2_conn_read_pkt(fc->q, &path, &pi, data, len, now);
    if (is_retry) {
        if (rv != 0) {
            S.other_closes++; /* a Retry ngtcp2 refused (bad integrity tag) */
            fc_free(fc);
            return;
        }
        /* The Initial again, now with the token; then silence. */
        S.retries_followed++;
        fc->state = FC_RETRIED;
        fc->deadline = now + (uint64_t)O.window_ms * AEGIS_NS_PER_MS;
        send_flight(fc, now);
        return;
    }
    if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING)
        classify_close(fc);
    else
        S.accepted++; /* the server's flight: it holds this handshake until its timeout */
    fc_free(fc);
}

static void read_socket(struct flood_sock *s, uint64_t now)
{
    uint8_t buf[MTU];
    for (int i = 0; i < READ_BURST; i++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(s->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (n <= 0)
            return;
        on_packet(s, &from, fl, buf, (size_t)n, now);
    }
}

static void expire(uint64_t now)
{
    for (size_t i = 0; i < nconns; i++)
        if (conns[i].state != FC_FREE && conns[i].deadline <= now) {
            S.unanswered++;
            fc_free(&conns[i]);
        }
}

static size_t live(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nconns; i++)
        n += conns[i].state != FC_FREE;
    return n;
}

/* ---- setup -------------------------------------------------------------------------- */

static long num(const char *s, long lo, long hi, const char *name)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "aegis-bench-flood: %s \"%s\" is not a number in %ld..%ld\n", name, s, lo,
                hi);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: aegis-bench-flood --target HOST:PORT [options]\n"
            "  --rate R          handshakes started per second (200)\n"
            "  --count C         handshakes in all (10000)\n"
            "  --seconds S       stop after S seconds (30)\n"
            "  --sockets P       source ports (UDP sockets) to spread them over (64)\n"
            "  --follow-retry    answer a Retry once with its token, then go silent\n"
            "  --window-ms W     wait this long for the server's answer (3000)\n"
            "  --sni NAME        TLS server name (localhost)\n"
            "Stops at S seconds, after C handshakes, or on SIGTERM; prints a RESULT line.\n");
    exit(2);
}

static void parse(int argc, char **argv)
{
    static const struct option lo[] = {
        {"target", 1, 0, 't'},  {"rate", 1, 0, 'r'},      {"count", 1, 0, 'c'},
        {"seconds", 1, 0, 's'}, {"sockets", 1, 0, 'p'},   {"follow-retry", 0, 0, 'f'},
        {"sni", 1, 0, 'n'},     {"window-ms", 1, 0, 'w'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            O.target = optarg;
            break;
        case 'r':
            O.rate = num(optarg, 1, MAX_RATE, "--rate");
            break;
        case 'c':
            O.count = num(optarg, 1, MAX_COUNT, "--count");
            break;
        case 's':
            O.seconds = num(optarg, 1, MAX_SECONDS, "--seconds");
            break;
        case 'p':
            O.sockets = num(optarg, 1, MAX_SOCKETS, "--sockets");
            break;
        case 'f':
            O.follow_retry = 1;
            break;
        case 'n':
            O.sni = optarg;
            break;
        case 'w':
            O.window_ms = num(optarg, 10, 600000, "--window-ms");
            break;
        default:
            usage();
        }
    }
    if (!O.target || optind != argc)
        usage();
}

static void resolve(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host))
        die("--target \"%s\" is not HOST:PORT (for example 127.0.0.1:4433)", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
        die("cannot resolve --target \"%s\"", hostport);
    memcpy(&target, res->ai_addr, res->ai_addrlen);
    target_len = res->ai_addrlen;
    freeaddrinfo(res);
}

static void open_sockets(void)
{
    socks = calloc((size_t)O.sockets, sizeof(*socks));
    if (!socks)
        die("out of memory for %s", "the sockets");
    for (long i = 0; i < O.sockets; i++) {
        struct flood_sock *s = &socks[i];
        s->fd = socket(target.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0)
            die("socket: %s (lower --sockets or raise ulimit -n)", strerror(errno));
        /* Bind the wildcard of the target's family; connect() picks the route's source. */
        if (connect(s->fd, (struct sockaddr *)&target, target_len) != 0)
            die("connect: %s", strerror(errno));
        s->local_len = sizeof(s->local);
        if (getsockname(s->fd, (struct sockaddr *)&s->local, &s->local_len) != 0)
            die("getsockname: %s", strerror(errno));
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    resolve(O.target);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rng_state = aegis_wallclock() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;

    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        die("%s", "wolfSSL_Init failed");
    ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
    if (!ctx || ngtcp2_crypto_wolfssl_configure_client_context(ctx) != 0)
        die("%s", "cannot create the TLS client context");
    /* The handshake never gets as far as the server's certificate being used. */
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
    int groups[] = {WOLFSSL_ECC_X25519};
    wolfSSL_CTX_set_groups(ctx, groups, 1);

    /* Live handshakes: at most rate x window (each is freed when answered or unanswered). */
    uint64_t cap = (uint64_t)O.rate * (uint64_t)O.window_ms / 1000u + START_BURST;
    if (O.follow_retry)
        cap *= 2; /* a followed Retry restarts the window */
    nconns = (size_t)(cap < (uint64_t)O.count + 1 ? cap : (uint64_t)O.count + 1);
    conns = calloc(nconns, sizeof(*conns));
    if (!conns)
        die("out of memory for %s", "the live handshakes");
    open_sockets();
    struct pollfd *pfd = calloc((size_t)O.sockets, sizeof(*pfd));
    if (!pfd)
        die("%s", "out of memory");
    for (long i = 0; i < O.sockets; i++) {
        pfd[i].fd = socks[i].fd;
        pfd[i].events = POLLIN;
    }
    fprintf(stderr,
            "aegis-bench-flood: pid %d: %ld handshakes/s to %s from %ld ports, at most %ld in "
            "%ld s%s\n",
            (int)getpid(), O.rate, O.target, O.sockets, O.count, O.seconds,
            O.follow_retry ? ", following Retry" : "");

    uint64_t t0 = aegis_now(), end = t0 + (uint64_t)O.seconds * AEGIS_NS_PER_S;
    uint64_t last_expire = t0, stop_at = 0;
    for (;;) {
        uint64_t now = aegis_now();
        if (stop || now >= end)
            break;
        if ((uint64_t)S.handshakes >= (uint64_t)O.count) {
            /* All started: wait one window for the last answers, then stop. */
            if (!stop_at)
                stop_at = now + (uint64_t)O.window_ms * AEGIS_NS_PER_MS;
            if (now >= stop_at || live() == 0)
                break;
        }
        /* Start the handshakes due by now (rate), a bounded burst per turn. */
        uint64_t due = (now - t0) * (uint64_t)O.rate / AEGIS_NS_PER_S + 1;
        if (due > (uint64_t)O.count)
            due = (uint64_t)O.count;
        for (int k = 0; k < START_BURST && S.handshakes < due; k++) {
            struct flood_conn *fc = free_slot();
            if (!fc)
                break; /* all slots waiting for answers: the window frees them */
            if (fc_start(fc, (uint32_t)(fc - conns), now) != 0) {
                S.handshakes++; /* counted, so a persistent failure cannot spin */
                S.send_errors++;
            }
        }
        /* Wait for answers until the next handshake is due (at most 10 ms). */
        int timeout_ms = (int)(1000 / O.rate);
        if (timeout_ms > 10)
            timeout_ms = 10;
        int n = poll(pfd, (nfds_t)O.sockets, timeout_ms);
        now = aegis_now();
        if (n > 0)
            for (long i = 0; i < O.sockets; i++)
                if (pfd[i].revents & POLLIN)
                    read_socket(&socks[i], now);
        if (now - last_expire >= 50 * AEGIS_NS_PER_MS) {
            expire(now);
            last_expire = now;
        }
    }
    double el = (double)(aegis_now() - t0) / 1e9;
    for (size_t i = 0; i < nconns; i++)
        if (conns[i].state != FC_FREE) {
            S.unanswered++;
            fc_free(&conns[i]);
        }
    printf("RESULT mode=flood target=%s follow_retry=%d seconds=%.2f handshakes=%llu "
           "initials_sent=%llu retries_seen=%llu retries_followed=%llu accepted=%llu "
           "refusals_seen=%llu bad_token=%llu other_closes=%llu unanswered=%llu "
           "late_packets=%llu send_errors=%llu rate_per_s=%.1f\n",
           O.target, O.follow_retry, el, (unsigned long long)S.handshakes,
           (unsigned long long)S.initials_sent, (unsigned long long)S.retries_seen,
           (unsigned long long)S.retries_followed, (unsigned long long)S.accepted,
           (unsigned long long)S.refusals, (unsigned long long)S.bad_token,
           (unsigned long long)S.other_closes, (unsigned long long)S.unanswered,
           (unsigned long long)S.late_packets, (unsigned long long)S.send_errors,
           el > 0 ? (double)S.handshakes / el : 0.0);
    fflush(stdout);
    for (long i = 0; i < O.sockets; i++)
        close(socks[i].fd);
    free(pfd);
    free(socks);
    free(conns);
    wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
    return 0;
}
