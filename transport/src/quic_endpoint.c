/*
 * The endpoint: every QUIC connection of one socket (server) or one client.
 * Demultiplexes datagrams by destination connection ID, answers packets of
 * unknown connections (stateless reset, version negotiation, Retry under
 * handshake load, refusal past the hard cap), keeps a timer heap of
 * connection expiries and a list of connections with something to send.
 */
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "transport_int.h"

#include <aegis/err.h>

#include <errno.h>
#include <string.h>

/* Server connection IDs are this long (ngtcp2 decodes short headers by it). */
#define SCID_LEN 16
/* A Retry token is valid this long (RFC 9000 §8.1.3 leaves it to us; a few
 * RTTs suffice). */
#define RETRY_TOKEN_TIMEOUT_NS (10 * AEGIS_NS_PER_S)
/* A stateless reset is one byte smaller than the packet that provoked it
 * (RFC 9000 §10.3.3: no reset loops) and at least 1 + 5 random bytes (ngtcp2's
 * minimum) + the 16-byte token, so packets from 23 bytes up get one: that
 * includes an idle client's keep-alive PING (about 36 bytes), which is how
 * the clients of a restarted server learn at once that their connection is
 * gone. */
#define RESET_MIN_TRIGGER                                                                          \
    (1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN + 1)
#define CID_BUCKETS_MIN 64

struct cid_entry {
    struct cid_entry *next;  /* hash chain */
    struct cid_entry *cnext; /* the owning connection's list */
    struct aegis_conn *conn;
    uint8_t len;
    uint8_t cid[NGTCP2_MAX_CIDLEN];
};

static uint64_t cid_hash(const uint8_t *cid, size_t len)
{
    /* FNV-1a: CIDs are random already; this only spreads them. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= cid[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int cid_grow(struct aegis_endpoint *ep)
{
    size_t n = ep->cid_nbuckets ? ep->cid_nbuckets * 2 : CID_BUCKETS_MIN;
    struct cid_entry **b = aegis_calloc(ep->mem, n, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < ep->cid_nbuckets; i++) {
        struct cid_entry *e = ep->cid_buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = cid_hash(e->cid, e->len) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    aegis_free(ep->mem, ep->cid_buckets);
    ep->cid_buckets = b;
    ep->cid_nbuckets = n;
    return 0;
}

int ep_cid_add(struct aegis_endpoint *ep, const uint8_t *cid, size_t len, struct aegis_conn *conn)
{
    if (len > NGTCP2_MAX_CIDLEN)
        return -EINVAL;
    if (ep->cid_count + 1 > ep->cid_nbuckets && cid_grow(ep) != 0)
        return -ENOMEM;
    struct cid_entry *e = aegis_malloc(ep->mem, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->conn = conn;
    e->len = (uint8_t)len;
    memcpy(e->cid, cid, len);
    e->cnext = conn->cids;
    conn->cids = e;
    size_t j = cid_hash(cid, len) & (ep->cid_nbuckets - 1);
    e->next = ep->cid_buckets[j];
    ep->cid_buckets[j] = e;
    ep->cid_count++;
    return 0;
}

void ep_cid_remove(struct aegis_endpoint *ep, const uint8_t *cid, size_t len)
{
    if (!ep->cid_nbuckets)
        return;
    size_t j = cid_hash(cid, len) & (ep->cid_nbuckets - 1);
    for (struct cid_entry **pe = &ep->cid_buckets[j]; *pe; pe = &(*pe)->next) {
        struct cid_entry *e = *pe;
        if (e->len == len && memcmp(e->cid, cid, len) == 0) {
            *pe = e->next;
            for (struct cid_entry **pc = &e->conn->cids; *pc; pc = &(*pc)->cnext) {
                if (*pc == e) {
                    *pc = e->cnext;
                    break;
                }
            }
            aegis_free(ep->mem, e);
            ep->cid_count--;
            return;
        }
    }
}

void ep_cid_remove_conn(struct aegis_endpoint *ep, struct aegis_conn *conn)
{
    /* Every CID we ever mapped to conn, whether or not ngtcp2 still
     * knows it (it may have failed to record one we handed it). */
    while (conn->cids) {
        struct cid_entry *e = conn->cids;
        ep_cid_remove(ep, e->cid, e->len);
    }
}

static struct aegis_conn *cid_find(struct aegis_endpoint *ep, const uint8_t *cid, size_t len)
{
    if (!ep->cid_nbuckets)
        return NULL;
    size_t j = cid_hash(cid, len) & (ep->cid_nbuckets - 1);
    for (struct cid_entry *e = ep->cid_buckets[j]; e; e = e->next)
        if (e->len == len && memcmp(e->cid, cid, len) == 0)
            return e->conn;
    return NULL;
}

/* ---- timer heap ---- */

static void heap_set(struct aegis_endpoint *ep, size_t i, struct ep_timer t)
{
    ep->heap[i] = t;
    t.conn->heap_idx = i;
}

static void heap_up(struct aegis_endpoint *ep, size_t i)
{
    struct ep_timer t = ep->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (ep->heap[p].expiry <= t.expiry)
            break;
        heap_set(ep, i, ep->heap[p]);
        i = p;
    }
    heap_set(ep, i, t);
}

static void heap_down(struct aegis_endpoint *ep, size_t i)
{
    struct ep_timer t = ep->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= ep->nheap)
            break;
        if (r < ep->nheap && ep->heap[r].expiry < ep->heap[l].expiry)
            m = r;
        if (ep->heap[m].expiry >= t.expiry)
            break;
        heap_set(ep, i, ep->heap[m]);
        i = m;
    }
    heap_set(ep, i, t);
}

static int heap_insert(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    if (ep->nheap == ep->heap_cap) {
        size_t n = ep->heap_cap ? ep->heap_cap * 2 : 16;
        struct ep_timer *h = aegis_realloc(ep->mem, ep->heap, n * sizeof(*h));
        if (!h)
            return -ENOMEM;
        ep->heap = h;
        ep->heap_cap = n;
    }
    ep->heap[ep->nheap] = (struct ep_timer){c->expiry, c};
    c->heap_idx = ep->nheap++;
    heap_up(ep, c->heap_idx);
    return 0;
}

static void heap_remove(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    size_t i = c->heap_idx;
    if (i >= ep->nheap || ep->heap[i].conn != c)
        return;
    ep->nheap--;
    if (i != ep->nheap) {
        struct ep_timer last = ep->heap[ep->nheap];
        heap_set(ep, i, last);
        heap_down(ep, i);
        heap_up(ep, last.conn->heap_idx);
    }
    c->heap_idx = SIZE_MAX;
}

/* Moves c to its place after its expiry changed. */
static void heap_rekey(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    size_t i = c->heap_idx;
    if (i >= ep->nheap || ep->heap[i].conn != c)
        return;
    aegis_tstamp old = ep->heap[i].expiry;
    ep->heap[i].expiry = c->expiry;
    if (c->expiry > old)
        heap_down(ep, i);
    else if (c->expiry < old)
        heap_up(ep, i);
}

void ep_timer_update(struct aegis_conn *c)
{
    c->expiry = qconn_expiry(c);
    heap_rekey(c->ep, c);
}

/* Times the send loop goes back to a connection whose callbacks queued more
 * output without producing any bytes; a handful covers every chain of
 * callbacks (resume -> message -> half-close -> finish). */
#define EP_MAX_REWRITES 8

void ep_mark_dirty(struct aegis_conn *c)
{
    if (c->dirty) {
        /* Already listed; remember that new output was queued, in case the
         * send loop is in the middle of this connection (see below). */
        c->redirty = 1;
        return;
    }
    c->dirty = 1;
    c->dirty_next = c->ep->dirty_head;
    c->ep->dirty_head = c;
}

static void dirty_remove(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    if (!c->dirty)
        return;
    for (struct aegis_conn **pc = &ep->dirty_head; *pc; pc = &(*pc)->dirty_next) {
        if (*pc == c) {
            *pc = c->dirty_next;
            break;
        }
    }
    c->dirty = 0;
}

struct rpc_handler *ep_find_handler(struct aegis_endpoint *ep, const char *path, size_t len)
{
    for (size_t i = 0; i < ep->nhandlers; i++)
        if (ep->handlers[i].pathlen == len && memcmp(ep->handlers[i].path, path, len) == 0)
            return &ep->handlers[i];
    return NULL;
}

/* ---- lifecycle ---- */

static uint64_t or_default(uint64_t v, uint64_t d)
{
    return v ? v : d;
}

int aegis_endpoint_new(const struct aegis_endpoint_config *cfg, struct aegis_endpoint **pep)
{
    int rv;
    if (!cfg || !pep)
        return -EINVAL;
    const struct aegis_mem *mem = cfg->mem ? cfg->mem : aegis_mem_default();
    struct aegis_endpoint *ep = aegis_calloc(mem, 1, sizeof(*ep));
    if (!ep)
        return -ENOMEM;
    ep->mem = mem;
    ep->log = cfg->log;
    ep->is_server = cfg->is_server;
    /* Only the client needs to keep the path alive: its PINGs refresh the
     * NAT binding and both idle timers, and the server still notices a
     * silent client by its idle timeout. A server PING every interval would
     * double the idle traffic and the timer wake-ups of a large fleet. */
    ep->keepalive_ns =
        or_default(cfg->keepalive_ns, cfg->is_server ? AEGIS_TRANSPORT_SERVER_KEEPALIVE_NS
                                                     : AEGIS_TRANSPORT_KEEPALIVE_NS);
    ep->idle_timeout_ns = or_default(cfg->idle_timeout_ns, AEGIS_TRANSPORT_IDLE_TIMEOUT_NS);
    ep->handshake_timeout_ns = or_default(cfg->handshake_timeout_ns, 10 * AEGIS_NS_PER_S);
    ep->max_message = (size_t)or_default(cfg->max_message, AEGIS_TRANSPORT_MAX_MESSAGE);
    ep->max_streams = or_default(cfg->max_streams, AEGIS_TRANSPORT_MAX_STREAMS);
    ep->stream_window = or_default(cfg->stream_window, AEGIS_TRANSPORT_STREAM_WINDOW);
    ep->conn_window = or_default(cfg->conn_window, AEGIS_TRANSPORT_CONN_WINDOW);
    ep->send_queue_limit = (size_t)or_default(cfg->send_queue_limit, AEGIS_TRANSPORT_SEND_QUEUE);
    ep->retry_threshold = (size_t)or_default(cfg->retry_threshold, AEGIS_TRANSPORT_RETRY_THRESHOLD);
    ep->max_handshakes = (size_t)or_default(cfg->max_handshakes, AEGIS_TRANSPORT_MAX_HANDSHAKES);
    ep->max_conns = (size_t)or_default(cfg->max_conns, AEGIS_TRANSPORT_MAX_CONNS);
    ep->max_udp_payload = (size_t)or_default(cfg->max_udp_payload, 1452);
    /* A keep-alive at or beyond the idle timeout would let the connection
     * die between two PINGs. */
    if (ep->keepalive_ns != UINT64_MAX && ep->keepalive_ns >= ep->idle_timeout_ns) {
        rv = AEGIS_ERR_CONFIG;
        goto fail;
    }
    if (ep->max_udp_payload < 1200 || ep->max_udp_payload > 1500) {
        rv = AEGIS_ERR_CONFIG;
        goto fail;
    }
    ep->cbs = cfg->callbacks;
    ep->user_data = cfg->user_data;
    if (cfg->qlog_dir && !(ep->qlog_dir = aegis_strdup(mem, cfg->qlog_dir))) {
        rv = -ENOMEM;
        goto fail;
    }
    if (cfg->nhandlers) {
        if (!cfg->is_server || !cfg->handlers) {
            rv = -EINVAL;
            goto fail;
        }
        ep->handlers = aegis_calloc(mem, cfg->nhandlers, sizeof(*ep->handlers));
        if (!ep->handlers) {
            rv = -ENOMEM;
            goto fail;
        }
        ep->nhandlers = cfg->nhandlers;
        for (size_t i = 0; i < cfg->nhandlers; i++) {
            const struct aegis_rpc_handler *h = &cfg->handlers[i];
            if (!h->path || !h->on_call || !grpc_path_ok(h->path, strlen(h->path))) {
                rv = -EINVAL;
                goto fail;
            }
            ep->handlers[i].path = aegis_strdup(mem, h->path);
            if (!ep->handlers[i].path) {
                rv = -ENOMEM;
                goto fail;
            }
            ep->handlers[i].pathlen = strlen(h->path);
            ep->handlers[i].shape = h->shape;
            ep->handlers[i].on_call = h->on_call;
            ep->handlers[i].user_data = h->user_data;
        }
    }
    ep->stash_cap = cfg->is_server ? EP_STASH_SERVER : EP_STASH_CLIENT;
    ep->stash = aegis_malloc(mem, ep->stash_cap * sizeof(*ep->stash));
    if (!ep->stash) {
        rv = -ENOMEM;
        goto fail;
    }
    if (cfg->static_secret) {
        if (cfg->static_secret_len != sizeof(ep->secret)) {
            rv = -EINVAL;
            goto fail;
        }
        memcpy(ep->secret, cfg->static_secret, sizeof(ep->secret));
        rv = 0;
    } else {
        rv = tls_random(ep->secret, sizeof(ep->secret));
    }
    if (rv != 0)
        goto fail;
    rv = tls_ctx_new(mem, cfg->is_server, &cfg->tls, &ep->tls);
    if (rv != 0)
        goto fail;
    *pep = ep;
    return 0;
fail:
    aegis_endpoint_del(ep);
    return rv;
}

static void conn_unlink(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    heap_remove(ep, c);
    dirty_remove(ep, c);
    if (c->prev)
        c->prev->next = c->next;
    else if (ep->conns == c)
        ep->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    ep->nconns--;
}

void aegis_endpoint_del(struct aegis_endpoint *ep)
{
    if (!ep)
        return;
    while (ep->conns) {
        struct aegis_conn *c = ep->conns;
        conn_unlink(ep, c);
        qconn_del(c);
    }
    for (size_t i = 0; i < ep->cid_nbuckets; i++) {
        struct cid_entry *e = ep->cid_buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            aegis_free(ep->mem, e);
        }
    }
    aegis_free(ep->mem, ep->cid_buckets);
    aegis_free(ep->mem, ep->heap);
    for (size_t i = 0; i < ep->nhandlers; i++)
        aegis_free(ep->mem, ep->handlers[i].path);
    aegis_free(ep->mem, ep->handlers);
    aegis_free(ep->mem, ep->qlog_dir);
    aegis_free(ep->mem, ep->stash);
    tls_ctx_del(ep->tls);
    aegis_free(ep->mem, ep);
}

static int conn_register(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    int rv = heap_insert(ep, c);
    if (rv != 0)
        return rv;
    c->next = ep->conns;
    if (ep->conns)
        ep->conns->prev = c;
    ep->conns = c;
    ep->nconns++;
    ep_timer_update(c);
    ep_mark_dirty(c);
    return 0;
}

/* Frees connections that are over (called at safe points only). */
static void reap_dead(struct aegis_endpoint *ep, struct aegis_conn *c)
{
    if (c->state != CS_DEAD)
        return;
    conn_unlink(ep, c);
    qconn_del(c);
}

/* ---- stateless answers ---- */

static struct ep_stash *stash_slot(struct aegis_endpoint *ep, const struct aegis_path *path)
{
    if (ep->nstash >= ep->stash_cap) {
        ep->stats.packets_dropped++;
        return NULL;
    }
    struct ep_stash *s = &ep->stash[(ep->stash_head + ep->nstash) % ep->stash_cap];
    s->path = *path;
    return s;
}

static void send_reset(struct aegis_endpoint *ep, const struct aegis_path *path,
                       const uint8_t *dcid, size_t dcidlen, size_t trigger_len)
{
    if (trigger_len < RESET_MIN_TRIGGER)
        return;
    struct ep_stash *s = stash_slot(ep, path);
    if (!s)
        return;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, dcid, dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->secret, sizeof(ep->secret), &cid) !=
        0)
        return;
    uint8_t rnd[64];
    size_t rlen = trigger_len - 2 - NGTCP2_STATELESS_RESET_TOKENLEN; /* reset = trigger - 1 */
    if (rlen > sizeof(rnd))
        rlen = sizeof(rnd);
    if (tls_random(rnd, rlen) != 0)
        return;
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(s->buf, sizeof(s->buf), token, rnd, rlen);
    if (n <= 0)
        return;
    s->len = (size_t)n;
    ep->nstash++;
    ep->stats.stateless_resets_sent++;
}

static void send_retry_at(struct aegis_endpoint *ep, const struct aegis_path *path,
                          const ngtcp2_pkt_hd *hd, aegis_tstamp now)
{
    struct ep_stash *s = stash_slot(ep, path);
    if (!s)
        return;
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
    ngtcp2_cid scid;
    scid.datalen = SCID_LEN;
    if (tls_random(scid.data, SCID_LEN) != 0)
        return;
    ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token(
        token, ep->secret, sizeof(ep->secret), hd->version, (const ngtcp2_sockaddr *)&path->remote,
        (ngtcp2_socklen)path->remote_len, &scid, &hd->dcid, now);
    if (tl < 0)
        return;
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(s->buf, sizeof(s->buf), hd->version, &hd->scid,
                                               &scid, &hd->dcid, token, (size_t)tl);
    if (n <= 0)
        return;
    s->len = (size_t)n;
    ep->nstash++;
    ep->stats.retries_sent++;
}

static const char BUSY[] = "server busy: too many handshakes in progress";
static const char SHUTTING_DOWN[] = "server is shutting down";
static const char BAD_TOKEN[] = "invalid or expired Retry token";

static void send_refuse(struct aegis_endpoint *ep, const struct aegis_path *path,
                        const ngtcp2_pkt_hd *hd, uint64_t code, const char *reason)
{
    struct ep_stash *s = stash_slot(ep, path);
    if (!s)
        return;
    /* scid must be the client's DCID: the Initial keys derive from it */
    ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(s->buf, sizeof(s->buf), hd->version,
                                                          &hd->scid, &hd->dcid, code,
                                                          (const uint8_t *)reason, strlen(reason));
    if (n <= 0)
        return;
    s->len = (size_t)n;
    ep->nstash++;
}

static void server_new_conn(struct aegis_endpoint *ep, const struct aegis_path *path,
                            const uint8_t *data, size_t len, aegis_tstamp now)
{
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data, len) != 0) {
        ep->stats.packets_dropped++;
        return;
    }
    if (ep->shutting_down || ep->nconns >= ep->max_conns) {
        send_refuse(ep, path, &hd, NGTCP2_CONNECTION_REFUSED,
                    ep->shutting_down ? SHUTTING_DOWN : BUSY);
        return;
    }
    size_t inprog = (size_t)ep->stats.handshakes_in_progress;
    ngtcp2_cid odcid;
    int retried = 0;
    if (hd.type == NGTCP2_PKT_INITIAL && hd.tokenlen > 0 &&
        hd.token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(
                &odcid, hd.token, hd.tokenlen, ep->secret, sizeof(ep->secret), hd.version,
                (const ngtcp2_sockaddr *)&path->remote, (ngtcp2_socklen)path->remote_len, &hd.dcid,
                RETRY_TOKEN_TIMEOUT_NS, now) != 0) {
            /* RFC 9000 §8.1.2: an invalid Retry token -> INVALID_TOKEN. */
            send_refuse(ep, path, &hd, NGTCP2_INVALID_TOKEN, BAD_TOKEN);
            return;
        }
        retried = 1;
    }
    if (inprog >= ep->max_handshakes) {
        send_refuse(ep, path, &hd, NGTCP2_CONNECTION_REFUSED, BUSY);
        return;
    }
    if (!retried && inprog >= ep->retry_threshold) {
        send_retry_at(ep, path, &hd, now);
        return;
    }
    struct aegis_conn *c = NULL;
    int rv = qconn_server_new(ep, path, data, len, retried ? odcid.data : NULL,
                              retried ? odcid.datalen : 0, retried, now, &c);
    if (rv != 0) {
        ep->stats.packets_dropped++;
        return;
    }
    if (conn_register(ep, c) != 0) {
        qconn_del(c);
        return;
    }
    ep->stats.conns_accepted++;
    ep->stats.conns_active++;
    rv = qconn_read(c, path, data, len, now);
    (void)rv;
    qconn_after(c, now);
    ep_timer_update(c);
    ep_mark_dirty(c);
    reap_dead(ep, c);
}

static int same_addr(const struct sockaddr_storage *a, socklen_t alen,
                     const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/*
 * A client packet whose DCID we do not know can only be a stateless reset
 * (its "DCID" bytes are random, RFC 9000 §10.3): let the connections on that
 * local address check it against their reset tokens. Bounded, and only for
 * packets long enough to be a reset.
 */
static void client_unmatched(struct aegis_endpoint *ep, const struct aegis_path *path,
                             const uint8_t *data, size_t len, aegis_tstamp now)
{
    ep->stats.packets_dropped++;
    if (len < 21 || (data[0] & 0x80))
        return;
    unsigned budget = 64;
    for (struct aegis_conn *c = ep->conns, *next; c && budget; c = next, budget--) {
        next = c->next;
        if (c->state >= CS_CLOSING ||
            !same_addr(&c->path.local, c->path.local_len, &path->local, path->local_len))
            continue;
        qconn_read(c, path, data, len, now);
        qconn_after(c, now);
        ep_timer_update(c);
        ep_mark_dirty(c);
        reap_dead(ep, c);
    }
}

int aegis_endpoint_recv(struct aegis_endpoint *ep, const struct aegis_path *path,
                        const uint8_t *data, size_t len, aegis_tstamp now)
{
    if (!ep || !path || (!data && len))
        return -EINVAL;
    ep->now = now;
    ep->stats.pkts_recv++;
    ep->stats.bytes_recv += len;
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, SCID_LEN);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        if (!ep->is_server)
            return 0;
        struct ep_stash *s = stash_slot(ep, path);
        if (!s)
            return 0;
        uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
        uint8_t r;
        if (tls_random(&r, 1) != 0)
            return 0;
        ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(
            s->buf, sizeof(s->buf), r, vc.scid, vc.scidlen, vc.dcid, vc.dcidlen, sv, 1);
        if (n > 0) {
            s->len = (size_t)n;
            ep->nstash++;
        }
        return 0;
    }
    if (rv != 0) {
        ep->stats.packets_dropped++;
        return 0;
    }
    struct aegis_conn *c = cid_find(ep, vc.dcid, vc.dcidlen);
    if (!c) {
        if (!ep->is_server) {
            client_unmatched(ep, path, data, len, now);
            return 0;
        }
        if (vc.version == 0) {
            /* short header for a connection we do not know: it lost its
             * state (restart) or the packet is junk. RFC 9000 §10.3. */
            send_reset(ep, path, vc.dcid, vc.dcidlen, len);
            return 0;
        }
        server_new_conn(ep, path, data, len, now);
        return 0;
    }
    qconn_read(c, path, data, len, now);
    qconn_after(c, now);
    ep_timer_update(c);
    ep_mark_dirty(c);
    reap_dead(ep, c);
    return 0;
}

long aegis_endpoint_send(struct aegis_endpoint *ep, uint8_t *buf, size_t cap, size_t max_segments,
                         struct aegis_path *path, size_t *psegsize, aegis_tstamp now)
{
    if (!ep || !buf || cap < 1500 || !path || !psegsize)
        return -EINVAL;
    if (max_segments == 0)
        max_segments = 1;
    ep->now = now;
    if (ep->nstash) {
        struct ep_stash *s = &ep->stash[ep->stash_head];
        memcpy(buf, s->buf, s->len);
        *path = s->path;
        *psegsize = s->len;
        long n = (long)s->len;
        ep->stash_head = (ep->stash_head + 1) % ep->stash_cap;
        ep->nstash--;
        ep->stats.pkts_sent++;
        ep->stats.bytes_sent += (uint64_t)n;
        return n;
    }
    while (ep->dirty_head) {
        struct aegis_conn *c = ep->dirty_head;
        c->redirty = 0;
        long n = qconn_write(c, buf, cap, max_segments, path, psegsize, now);
        /* qconn_after delivers deferred callbacks (on_writable, resumed
         * messages, on_half_close): the application may queue output there. */
        qconn_after(c, now);
        ep_timer_update(c);
        if (n > 0) {
            c->rewrites = 0;
            ep->stats.pkts_sent += (uint64_t)((size_t)n + *psegsize - 1) / *psegsize;
            ep->stats.bytes_sent += (uint64_t)n;
            return n;
        }
        /* Output queued by those callbacks must go now, not at the next
         * packet or timer (which may be a keep-alive 15 s away). Bounded, in
         * case a callback re-queues without ever producing bytes. */
        if (c->redirty && c->state != CS_DEAD && c->rewrites < EP_MAX_REWRITES) {
            c->rewrites++;
            continue;
        }
        c->rewrites = 0;
        /* Callbacks may have listed other connections in front of this one:
         * unlink c wherever it is now. */
        dirty_remove(ep, c);
        reap_dead(ep, c);
    }
    return 0;
}

aegis_tstamp aegis_endpoint_expiry(const struct aegis_endpoint *ep)
{
    if (!ep)
        return AEGIS_TSTAMP_NEVER;
    if (ep->nstash || ep->dirty_head)
        return 0;
    return ep->nheap ? ep->heap[0].expiry : AEGIS_TSTAMP_NEVER;
}

int aegis_endpoint_handle_expiry(struct aegis_endpoint *ep, aegis_tstamp now)
{
    if (!ep)
        return -EINVAL;
    ep->now = now;
    /* Bounded: each connection handled at most once per call. */
    size_t budget = ep->nheap;
    while (budget-- && ep->nheap && ep->heap[0].expiry <= now) {
        struct aegis_conn *c = ep->heap[0].conn;
        qconn_handle_expiry(c, now);
        qconn_after(c, now);
        ep_timer_update(c);
        ep_mark_dirty(c);
        if (c->state == CS_DEAD) {
            reap_dead(ep, c);
        } else if (c->expiry <= now) {
            /* still due: push it a little so others get their turn */
            c->expiry = now + 1;
            heap_rekey(ep, c);
        }
    }
    return 0;
}

int aegis_endpoint_shutdown(struct aegis_endpoint *ep, aegis_tstamp now)
{
    (void)now;
    if (!ep)
        return -EINVAL;
    ep->shutting_down = 1;
    for (struct aegis_conn *c = ep->conns; c; c = c->next)
        aegis_conn_shutdown(c);
    return 0;
}

size_t aegis_endpoint_conn_count(const struct aegis_endpoint *ep)
{
    return ep ? ep->nconns : 0;
}

size_t aegis_endpoint_call_count(const struct aegis_endpoint *ep)
{
    return ep ? ep->ncalls : 0;
}

const struct aegis_transport_stats *aegis_endpoint_stats(const struct aegis_endpoint *ep)
{
    return &ep->stats;
}

int aegis_endpoint_connect(struct aegis_endpoint *ep, const struct aegis_path *path,
                           const char *server_name, aegis_tstamp now, struct aegis_conn **pconn)
{
    if (!ep || !path || !pconn || path->remote_len == 0)
        return -EINVAL;
    if (ep->is_server || ep->shutting_down)
        return AEGIS_ERR_STATE;
    ep->now = now;
    struct aegis_conn *c = NULL;
    int rv = qconn_client_new(ep, path, server_name, now, &c);
    if (rv != 0)
        return rv;
    rv = conn_register(ep, c);
    if (rv != 0) {
        qconn_del(c);
        return rv;
    }
    ep->stats.conns_active++;
    *pconn = c;
    return 0;
}

const char *aegis_close_kind_name(enum aegis_close_kind kind)
{
    switch (kind) {
    case AEGIS_CLOSE_LOCAL:
        return "local";
    case AEGIS_CLOSE_PEER_APP:
        return "peer-app";
    case AEGIS_CLOSE_PEER_QUIC:
        return "peer-quic";
    case AEGIS_CLOSE_TLS_ALERT:
        return "tls-alert";
    case AEGIS_CLOSE_IDLE:
        return "idle-timeout";
    case AEGIS_CLOSE_RESET:
        return "stateless-reset";
    case AEGIS_CLOSE_HANDSHAKE_TIMEOUT:
        return "handshake-timeout";
    }
    return "unknown";
}

char *aegis_close_reason_format(const struct aegis_close_reason *why, char *buf, size_t len)
{
    if (!buf || !len)
        return buf;
    if (why->kind == AEGIS_CLOSE_TLS_ALERT)
        snprintf(buf, len, "close=%s alert=%u (%s) by=%s reason=\"%s\"",
                 aegis_close_kind_name(why->kind), why->tls_alert, tls_alert_name(why->tls_alert),
                 why->by_peer ? "peer" : "local", why->reason);
    else
        snprintf(buf, len, "close=%s code=0x%llx by=%s err=%d reason=\"%s\"",
                 aegis_close_kind_name(why->kind), (unsigned long long)why->code,
                 why->by_peer ? "peer" : "local", why->err, why->reason);
    return buf;
}
