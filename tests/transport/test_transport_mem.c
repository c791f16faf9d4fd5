/*
 * Memory per idle connection on the server (quic_conn.c, h3_conn.c,
 * rpc_call.c, tls_wolfssl.c): a counting allocator injected into the
 * server endpoint (struct aegis_mem, also handed to ngtcp2 and nghttp3)
 * counts the bytes live after N connections each did a handshake and one
 * unary RPC and then went idle. Deterministic (fake clock, in-memory
 * network): the budget is asserted, not timed.
 *
 * wolfSSL allocates through its own global allocator: a hook counts what it
 * allocates while the test network is inside the server endpoint (tnet_active)
 * and still holds afterwards (the QUIC packet-protection contexts; the TLS
 * object itself is freed once the handshake is confirmed).
 *
 * With AEGIS_MEM_BREAKDOWN=1 in the environment the test prints which
 * library holds the bytes (from backtraces of the allocations, -rdynamic).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tnet.h"
#include "tsvc.h"

#include <aegis/err.h>
#include <aegis/mem.h>

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/memory.h>

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Budgets per idle server connection, a little above what ngtcp2 1.11 and
 * nghttp3 1.8 hold (measured: ~42.8 KB through the endpoint's allocator,
 * of which ngtcp2 ~28 KB (its conn object alone 9.3 KB, object pools of 16
 * streams / packets / frames, ACK and stream-ID range trees, decrypt
 * buffers), nghttp3 ~14.7 KB (conn 5.4 KB, a 4 KiB chunk pool, a pool of 8
 * streams), the transport ~1.8 KB; plus 6.3 KB in wolfSSL for the six
 * 1-RTT packet-protection contexts ngtcp2_crypto keeps, current and next
 * keys). Everything per connection that the transport itself controls is
 * in the last two figures; a regression anywhere shows up here.
 */
#define BUDGET_PER_CONN (44u * 1024u)
#define BUDGET_WOLFSSL_PER_CONN (7u * 1024u)
#define BUDGET_STREAM (1024u) /* one more idle call (an agent's Subscribe) */
#define NCONNS 50

static struct tpki pki;

/* nghttp3 is a shared library and recognisable in backtraces; ngtcp2 and
 * the transport are linked statically with hidden symbols and are told
 * apart offline (addr2line on the AEGIS_MEM_SITES lines). */
enum { CAT_NGHTTP3, CAT_STATIC, NCAT };
static const char *const cat_name[NCAT] = {"nghttp3", "ngtcp2+transport"};

/* A counting allocator: a header in front of every block records its
 * size and category. */
struct cmem {
    struct aegis_mem mem;
    size_t live, nlive;
    size_t cat_live[NCAT];
    int trace;
};

union hdr {
    struct {
        size_t size;
        unsigned cat;
        union hdr *prev, *next; /* live list (trace mode) */
        char *where;            /* allocation site (trace mode) */
    } h;
    max_align_t align;
};
static union hdr live_head;

/* The category of an allocation: who called the allocator (frame
 * `depth`). The site (four frames) is kept for AEGIS_MEM_SITES. */
__attribute__((noinline)) static unsigned classify(int depth, char **where)
{
    void *bt[16];
    int n = backtrace(bt, 16);
    char **sym = backtrace_symbols(bt, n);
    unsigned cat = CAT_STATIC;
    if (sym && depth < n && strstr(sym[depth], "libnghttp3"))
        cat = CAT_NGHTTP3;
    if (sym && depth + 3 < n) {
        size_t l = strlen(sym[depth]) + strlen(sym[depth + 1]) + strlen(sym[depth + 2]) +
                   strlen(sym[depth + 3]) + 16;
        *where = malloc(l);
        if (*where)
            snprintf(*where, l, "%s | %s | %s | %s", sym[depth], sym[depth + 1], sym[depth + 2],
                     sym[depth + 3]);
    }
    free(sym);
    return cat;
}

/* frames: classify 0, cm_track 1, cm_malloc/cm_calloc 2, caller 3 */
__attribute__((noinline)) static void *cm_track(struct cmem *m, union hdr *h, size_t size,
                                                int depth)
{
    if (!h)
        return NULL;
    h->h.size = size;
    h->h.where = NULL;
    h->h.cat = m->trace ? classify(depth, &h->h.where) : CAT_STATIC;
    if (m->trace) {
        if (!live_head.h.next)
            live_head.h.next = live_head.h.prev = &live_head;
        h->h.next = live_head.h.next;
        h->h.prev = &live_head;
        live_head.h.next->h.prev = h;
        live_head.h.next = h;
    }
    m->live += size;
    m->nlive++;
    m->cat_live[h->h.cat] += size;
    return h + 1;
}

static void cm_untrack(struct cmem *m, union hdr *h)
{
    m->live -= h->h.size;
    m->nlive--;
    m->cat_live[h->h.cat] -= h->h.size;
    if (m->trace) {
        h->h.prev->h.next = h->h.next;
        h->h.next->h.prev = h->h.prev;
        free(h->h.where);
    }
}

/* inlined into its callers, so `depth` counts their frame */
__attribute__((always_inline)) static inline void *cm_malloc_at(size_t size, void *ud, int depth)
{
    return cm_track(ud, malloc(sizeof(union hdr) + size), size, depth);
}

__attribute__((noinline)) static void *cm_malloc(size_t size, void *ud)
{
    return cm_track(ud, malloc(sizeof(union hdr) + size), size, 3);
}

static void cm_free(void *ptr, void *ud)
{
    if (!ptr)
        return;
    union hdr *h = (union hdr *)ptr - 1;
    cm_untrack(ud, h);
    free(h);
}

__attribute__((noinline)) static void *cm_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > (SIZE_MAX - sizeof(union hdr)) / size)
        return NULL;
    return cm_track(ud, calloc(1, sizeof(union hdr) + n * size), n * size, 3);
}

__attribute__((noinline)) static void *cm_realloc(void *ptr, size_t size, void *ud)
{
    /* frames: classify 0, cm_track 1, cm_realloc 2, caller 3 */
    if (!ptr)
        return cm_malloc_at(size, ud, 3);
    void *p = cm_malloc_at(size, ud, 3);
    if (!p)
        return NULL;
    union hdr *h = (union hdr *)ptr - 1;
    memcpy(p, ptr, h->h.size < size ? h->h.size : size);
    cm_free(ptr, ud);
    return p;
}

static void cm_init(struct cmem *m)
{
    memset(m, 0, sizeof(*m));
    m->mem.user_data = m;
    m->mem.malloc = cm_malloc;
    m->mem.free = cm_free;
    m->mem.calloc = cm_calloc;
    m->mem.realloc = cm_realloc;
    m->trace = getenv("AEGIS_MEM_BREAKDOWN") != NULL;
}

/* ---- wolfSSL's global allocator, attributed to the server endpoint ---- */

static struct aegis_endpoint *wolf_side; /* count allocations made inside it */
static long wolf_server_live;
static long wolf_server_nlive;

union whdr {
    struct {
        size_t size;
        int server;
    } h;
    max_align_t align;
};

static void *wolf_malloc(size_t size)
{
    union whdr *h = malloc(sizeof(*h) + size);
    if (!h)
        return NULL;
    h->h.size = size;
    h->h.server = wolf_side && tnet_active == wolf_side;
    if (h->h.server) {
        wolf_server_live += (long)size;
        wolf_server_nlive++;
    }
    return h + 1;
}

static void wolf_free(void *ptr)
{
    if (!ptr)
        return;
    union whdr *h = (union whdr *)ptr - 1;
    if (h->h.server) {
        wolf_server_live -= (long)h->h.size;
        wolf_server_nlive--;
    }
    free(h);
}

static void *wolf_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return wolf_malloc(size);
    union whdr *h = (union whdr *)ptr - 1;
    void *p = wolf_malloc(size);
    if (!p)
        return NULL;
    memcpy(p, ptr, h->h.size < size ? h->h.size : size);
    wolf_free(ptr);
    return p;
}

struct idle_result {
    size_t per_conn;  /* bytes live per connection on the server */
    size_t allocs;    /* allocations live per connection (x100) */
    size_t cat[NCAT]; /* per connection, by library */
    size_t leftover;  /* bytes live after every connection closed */
    long wolf;        /* wolfSSL bytes per connection (server side) */
    long wolf_allocs; /* wolfSSL allocations per connection (x100) */
};

struct wait_est {
    struct tfx *f;
    int want;
};

static int cond_est(void *arg)
{
    struct wait_est *w = arg;
    return w->f->cli.established >= w->want || w->f->cli.closed > 0;
}

/*
 * Opens n connections from one client endpoint; each makes one unary RPC
 * (and, with hold_stream, also keeps one bidi call open, as an agent's
 * Subscribe does); then the network idles for a while (keep-alives run).
 */
static void measure_idle(size_t n, int hold_stream, struct idle_result *out)
{
    struct cmem cm;
    cm_init(&cm);
    struct tfx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    tfx_config(f, &pki, &pki.client);
    f->scfg.mem = &cm.mem;
    tfx_start(f, 7);
    wolf_side = f->net.srv;
    long wbase = wolf_server_live, wbase_n = wolf_server_nlive;
    size_t base = cm.live, base_n = cm.nlive;
    size_t base_cat[NCAT];
    memcpy(base_cat, cm.cat_live, sizeof(base_cat));
    struct tres *r = calloc(2 * n, sizeof(*r));
    struct aegis_conn **conns = calloc(n, sizeof(*conns));
    assert_non_null(r);
    assert_non_null(conns);
    for (size_t i = 0; i < n; i++) {
        conns[i] = tnet_connect(&f->net);
        struct wait_est w = {f, (int)i + 1};
        assert_true(tnet_run(&f->net, 10 * AEGIS_NS_PER_S, cond_est, &w));
        assert_int_equal(f->cli.closed, 0);
        uint8_t msg[64];
        memset(msg, (int)i, sizeof(msg));
        assert_int_equal(aegis_call_start(conns[i], "/test.Echo/Unary", AEGIS_RPC_UNARY, NULL,
                                          &tres_callbacks, &r[i], &r[i].call),
                         0);
        assert_int_equal(aegis_call_send(r[i].call, msg, sizeof(msg)), 0);
        assert_int_equal(aegis_call_close_send(r[i].call), 0);
        assert_true(tnet_run(&f->net, 5 * AEGIS_NS_PER_S, tres_cond_done, &r[i]));
        assert_int_equal(r[i].status, AEGIS_GRPC_OK);
        if (hold_stream) {
            struct tres *h = &r[n + i];
            assert_int_equal(aegis_call_start(conns[i], "/test.Echo/Slow", AEGIS_RPC_BIDI, NULL,
                                              &tres_callbacks, h, &h->call),
                             0);
            assert_int_equal(aegis_call_send(h->call, msg, sizeof(msg)), 0);
        }
    }
    /* idle: a minute of keep-alives, ACKs settle, finished calls are reaped */
    tnet_run(&f->net, 60 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(aegis_endpoint_conn_count(f->net.srv), n);
    assert_int_equal(f->cli.closed, 0);
    assert_int_equal(aegis_endpoint_call_count(f->net.srv), hold_stream ? n : 0);
    out->wolf = (wolf_server_live - wbase) / (long)n;
    out->wolf_allocs = (wolf_server_nlive - wbase_n) * 100 / (long)n;
    out->per_conn = (cm.live - base) / n;
    out->allocs = (cm.nlive - base_n) * 100 / n;
    for (int c = 0; c < NCAT; c++)
        out->cat[c] = (cm.cat_live[c] - base_cat[c]) / n;
    if (cm.trace) {
        printf("server, %zu idle connections%s: %zu bytes and %zu.%02zu allocations per "
               "connection\n",
               n, hold_stream ? " holding one stream" : "", out->per_conn, out->allocs / 100,
               out->allocs % 100);
        for (int c = 0; c < NCAT; c++)
            printf("  %-16s %6zu bytes per connection\n", cat_name[c], out->cat[c]);
        printf("  %-16s %6ld bytes per connection (%ld.%02ld allocations), outside the "
               "endpoint's allocator\n",
               "wolfSSL", out->wolf, out->wolf_allocs / 100, out->wolf_allocs % 100);
        if (getenv("AEGIS_MEM_SITES"))
            for (union hdr *h = live_head.h.next; h && h != &live_head; h = h->h.next)
                printf("SITE %zu %s\n", h->h.size, h->h.where ? h->h.where : "?");
    }
    /* close everything: the allocator must come back to its base */
    for (size_t i = 0; i < n; i++)
        aegis_conn_close(conns[i], 0, "done");
    tnet_run(&f->net, 30 * AEGIS_NS_PER_S, NULL, NULL);
    assert_int_equal(aegis_endpoint_conn_count(f->net.srv), 0);
    out->leftover = cm.live - base;
    long wleft = wolf_server_live - wbase;
    tfx_free(f);
    wolf_side = NULL;
    /* the server's packet-protection contexts went with its connections */
    assert_true(wleft <= 0);
    assert_int_equal(cm.live, 0);
    assert_int_equal(cm.nlive, 0);
    free(f);
    free(r);
    free(conns);
}

/* The budget: one idle connection after handshake + one unary RPC. */
static void test_idle_conn_budget(void **state)
{
    (void)state;
    struct idle_result res;
    measure_idle(NCONNS, 0, &res);
    print_message("server bytes per idle connection: %zu (budget %u), wolfSSL %ld\n", res.per_conn,
                  BUDGET_PER_CONN, res.wolf);
    assert_true(res.per_conn <= BUDGET_PER_CONN);
    assert_true(res.wolf >= 0 && res.wolf <= (long)BUDGET_WOLFSSL_PER_CONN);
    /* after every connection closed only the endpoint's tables that grew
     * with the peak remain (CID hash buckets, timer heap) */
    assert_true(res.leftover <= 64u * NCONNS);
}

/* An agent also keeps its Subscribe stream open: one idle call on top. */
static void test_idle_conn_with_stream_budget(void **state)
{
    (void)state;
    struct idle_result res;
    measure_idle(NCONNS, 1, &res);
    print_message("server bytes per idle connection with one open stream: %zu\n", res.per_conn);
    assert_true(res.per_conn <= BUDGET_PER_CONN + BUDGET_STREAM);
    assert_true(res.wolf >= 0 && res.wolf <= (long)BUDGET_WOLFSSL_PER_CONN);
}

static int setup(void **state)
{
    (void)state;
    tpki_make(&pki);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tpki_free(&pki);
    return 0;
}

int main(void)
{
    /* before anything touches wolfSSL: every block it allocates has our header */
    if (wolfSSL_SetAllocators(wolf_malloc, wolf_free, wolf_realloc) != 0) {
        fprintf(stderr, "cannot hook wolfSSL's allocator\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_conn_budget),
        cmocka_unit_test(test_idle_conn_with_stream_budget),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
