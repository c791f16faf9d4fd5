/*
 * FetchArtifact (resumable, chunked, backpressured), ReportTelemetry (COPY), UploadArtifact
 * (signature, size and SHA-256 checked while receiving).
 */
#include "ctl_svc_data.h"
#include "ctl_copybuf.h"
#include "ctl_kind.h"
#include "ctl_schema.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/pki.h>
#include <aegis/proto.h>

#include <aegis/v1/agent.pb-c.h>
#include <aegis/v1/operator.pb-c.h>
#include <aegis/v1/telemetry.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chunks read per query: 4 x 64 KiB, one send window's worth. */
#define FETCH_ROWS 4

/* ---- FetchArtifact ------------------------------------------------------------------------ */

struct fetch_state {
    uint8_t sha[32];
    char sha_hex[65];
    uint64_t size, chunk_size, offset;
    uint8_t *statement, *signature;
    size_t statement_len, signature_len;
    char key_id[64];
    int header_sent;
    int busy; /* waiting for a chunk read */
    /* Chunks held (shared with the cache) and not yet sent. */
    const struct ctl_artchunk *rows[FETCH_ROWS];
    int nrows, next_row;
    /* A packed message that got -EAGAIN. */
    uint8_t *pending;
    size_t pending_len;
};

/*
 * One read of up to FETCH_ROWS chunks of an artifact from PostgreSQL, shared by every stream
 * that needs one of those chunks meanwhile: 1,000 agents starting the same artifact together
 * cost one query per 4 chunks, not 1,000.
 */
struct ctl_art_load {
    struct ctl_server *srv;
    uint8_t sha[32];
    uint32_t first;
    struct ctl_rpc **waiters;
    size_t nwaiters, cap;
    struct ctl_art_load *next;
};

/* A stream waits on a read at most this long in line behind others: bounded by the streams
 * themselves (each waits on one read at a time), this only caps one array's growth step. */
#define LOAD_WAITERS_STEP 16u

static void fetch_more(struct ctl_rpc *r);

static void rows_release(struct ctl_rpc *r)
{
    struct fetch_state *st = r->state;
    for (int i = 0; i < st->nrows; i++) {
        ctl_artcache_release(r->srv->artcache, st->rows[i]);
        st->rows[i] = NULL;
    }
    st->nrows = st->next_row = 0;
}

void ctl_fetch_free(struct ctl_rpc *r)
{
    struct fetch_state *st = r->state;
    if (!st)
        return;
    const struct aegis_mem *mem = r->srv->mem;
    rows_release(r);
    aegis_free(mem, st->statement);
    aegis_free(mem, st->signature);
    aegis_free(mem, st->pending);
    aegis_free(mem, st);
}

static void fetch_noted(int rv, const struct ctl_db_result *res, void *ud)
{
    (void)rv;
    (void)res;
    (void)ud;
}

/* Share of the 16 most frequent byte values in a chunk, in 1/1024: about 64 for random or
 * already-compressed bytes, several hundred for text and executables. */
#define COMPRESSIBLE_TOP16 128

/* compressible guesses from the first chunk whether zstd would shrink the artifact: trying
 * (and failing) on every chunk of a compressed artifact for every agent costs a core. */
static int compressible(const struct ctl_artchunk *c)
{
    uint32_t count[256] = {0};
    if (c->len < 1024)
        return 1;
    for (size_t i = 0; i < c->len; i++)
        count[c->data[i]]++;
    uint64_t top = 0;
    for (int k = 0; k < 16; k++) {
        int best = 0;
        for (int v = 1; v < 256; v++)
            if (count[v] > count[best])
                best = v;
        top += count[best];
        count[best] = 0;
    }
    return top * 1024 / c->len > COMPRESSIBLE_TOP16;
}

/* Sends what is buffered; returns 1 when blocked, 0 otherwise. */
static int fetch_pump(struct ctl_rpc *r)
{
    struct fetch_state *st = r->state;
    const struct aegis_mem *mem = r->srv->mem;
    for (;;) {
        if (st->pending) {
            int rv = aegis_call_send(r->call, st->pending, st->pending_len);
            if (rv == -EAGAIN)
                return 1;
            aegis_free(mem, st->pending);
            st->pending = NULL;
            if (rv != 0) {
                ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot send a chunk: %s", aegis_strerror(rv));
                return 1;
            }
        }
        if (st->offset >= st->size && st->header_sent) {
            const char *v[3] = {st->sha_hex, r->cc->agent_id, ""};
            char sz[32];
            snprintf(sz, sizeof(sz), "%llu", (unsigned long long)st->size);
            v[2] = sz;
            ctl_db_exec_params(r->srv->db,
                               "UPDATE artifact_assignments SET bytes_fetched = $3::bigint,"
                               " status = CASE WHEN status = 'pending' THEN 'downloaded'"
                               " ELSE status END, updated_at = now()"
                               " WHERE artifact = decode($1, 'hex') AND agent_id = $2",
                               3, v, NULL, NULL, 0, fetch_noted, NULL);
            rows_release(r);
            ctl_rpc_finish(r, AEGIS_GRPC_OK, "");
            return 1;
        }
        if (st->next_row >= st->nrows && st->header_sent) {
            fetch_more(r);
            return 1;
        }
        Aegis__V1__ArtifactChunk ch = AEGIS__V1__ARTIFACT_CHUNK__INIT;
        Aegis__V1__ArtifactHeader hdr = AEGIS__V1__ARTIFACT_HEADER__INIT;
        if (!st->header_sent) {
            /* zstd on the wire when the agent accepts it (DESIGN §2) and the content would
             * shrink; decided before the first message, which carries the headers. */
            if (st->next_row < st->nrows && compressible(st->rows[st->next_row])) {
                int crv = aegis_call_set_compress(r->call, 1);
                if (crv != 0 && crv != AEGIS_ERR_UNSUPPORTED)
                    AEGIS_LOG(&r->srv->log, AEGIS_LOG_DEBUG, "call=FetchArtifact zstd=off err=%s",
                              aegis_strerror(crv));
            }
            hdr.statement.data = st->statement;
            hdr.statement.len = st->statement_len;
            hdr.signature.data = st->signature;
            hdr.signature.len = st->signature_len;
            hdr.signing_key_id = st->key_id;
            ch.header = &hdr;
            st->header_sent = 1;
        }
        ch.offset = st->offset;
        if (st->next_row < st->nrows) {
            const struct ctl_artchunk *c = st->rows[st->next_row];
            uint64_t start = (uint64_t)c->idx * st->chunk_size;
            uint64_t skip = st->offset - start; /* > 0 only on a resumed first row */
            ch.data.data = (uint8_t *)c->data + skip;
            ch.data.len = c->len - skip;
            st->offset += ch.data.len;
            st->next_row++;
        }
        int rv = aegis_proto_pack(&ch.base, mem, &st->pending, &st->pending_len);
        if (rv != 0) {
            ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "cannot pack a chunk");
            return 1;
        }
    }
}

/* take_rows holds the chunks that continue the stream from its offset: from the cache, or
 * from got[0..n-1] (a finished read). Returns the number held; -1 if a chunk is damaged. */
static int take_rows(struct ctl_rpc *r, const struct ctl_artchunk *const *got, int n)
{
    struct fetch_state *st = r->state;
    struct ctl_artcache *cache = r->srv->artcache;
    rows_release(r);
    uint64_t expect = st->offset; /* chunks must cover the stream contiguously */
    while (st->nrows < FETCH_ROWS && expect < st->size) {
        uint32_t idx = (uint32_t)(expect / st->chunk_size);
        const struct ctl_artchunk *c = ctl_artcache_get(cache, st->sha, idx);
        for (int i = 0; !c && i < n; i++)
            if (got[i]->idx == idx) {
                c = got[i];
                ctl_artcache_ref(cache, c);
            }
        if (!c)
            break;
        uint64_t start = (uint64_t)idx * st->chunk_size;
        st->rows[st->nrows++] = c;
        if (c->len == 0 || start + c->len <= expect || start + c->len > st->size)
            return -1;
        expect = start + c->len;
    }
    return st->nrows;
}

static void load_done(int rv, const struct ctl_db_result *res, void *ud)
{
    struct ctl_art_load *l = ud;
    struct ctl_server *srv = l->srv;
    const struct ctl_artchunk *got[FETCH_ROWS];
    int n = 0;
    /* Off the list first: a waiter's next read must start a new one. */
    for (struct ctl_art_load **pp = &srv->art_loads; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    if (rv == 0) {
        int nt = ctl_db_result_ntuples(res);
        for (int i = 0; i < nt && n < FETCH_ROWS; i++) {
            const char *v = ctl_db_result_value(res, i, 0);
            if (ctl_db_result_length(res, i, 0) != 8)
                continue;
            uint64_t idx = 0;
            for (int k = 0; k < 8; k++)
                idx = (idx << 8) | (uint8_t)v[k];
            if (ctl_artcache_put(srv->artcache, l->sha, (uint32_t)idx,
                                 (const uint8_t *)ctl_db_result_value(res, i, 1),
                                 (size_t)ctl_db_result_length(res, i, 1), &got[n]) == 0)
                n++;
        }
    }
    for (size_t w = 0; w < l->nwaiters; w++) {
        struct ctl_rpc *r = l->waiters[w];
        struct fetch_state *st = r->state;
        if (r->call && !r->finished && st) {
            st->busy = 0;
            int k = rv == 0 ? take_rows(r, got, n) : 0;
            if (rv != 0)
                ctl_rpc_fail_db(r, rv, res);
            else if (k <= 0)
                ctl_rpc_fail(r, AEGIS_GRPC_DATA_LOSS, "artifact chunk %llu missing or damaged",
                             (unsigned long long)(st->offset / st->chunk_size));
            else
                fetch_pump(r);
        }
        ctl_rpc_unhold(r);
    }
    for (int i = 0; i < n; i++)
        ctl_artcache_release(srv->artcache, got[i]);
    aegis_free(srv->mem, l->waiters);
    aegis_free(srv->mem, l);
}

static int load_wait(struct ctl_art_load *l, struct ctl_rpc *r)
{
    if (l->nwaiters == l->cap) {
        size_t ncap = l->cap + LOAD_WAITERS_STEP;
        struct ctl_rpc **w = aegis_realloc(r->srv->mem, l->waiters, ncap * sizeof(*w));
        if (!w)
            return -ENOMEM;
        l->waiters = w;
        l->cap = ncap;
    }
    l->waiters[l->nwaiters++] = r;
    ctl_rpc_hold(r);
    return 0;
}

static void fetch_more(struct ctl_rpc *r)
{
    struct fetch_state *st = r->state;
    struct ctl_server *srv = r->srv;
    if (st->busy)
        return;
    int k = take_rows(r, NULL, 0);
    if (k < 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_DATA_LOSS, "artifact chunk missing or damaged");
        return;
    }
    if (k > 0) {
        fetch_pump(r);
        return;
    }
    uint32_t idx = (uint32_t)(st->offset / st->chunk_size);
    /* A read already covering this chunk: wait for it. */
    for (struct ctl_art_load *l = srv->art_loads; l; l = l->next) {
        if (memcmp(l->sha, st->sha, 32) == 0 && idx >= l->first && idx < l->first + FETCH_ROWS) {
            if (load_wait(l, r) != 0) {
                ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
                return;
            }
            st->busy = 1;
            return;
        }
    }
    struct ctl_art_load *l = aegis_calloc(srv->mem, 1, sizeof(*l));
    if (!l || load_wait(l, r) != 0) {
        aegis_free(srv->mem, l);
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    l->srv = srv;
    memcpy(l->sha, st->sha, 32);
    l->first = idx;
    char first[16];
    snprintf(first, sizeof(first), "%u", idx);
    const char *v[2] = {st->sha_hex, first};
    /* Binary result: the chunk bytes as stored, no hex on either side. */
    int rv = ctl_db_exec_params(srv->db,
                                "SELECT idx::int8, data FROM artifact_chunks"
                                " WHERE sha256 = decode($1, 'hex') AND idx >= $2::int"
                                " ORDER BY idx LIMIT 4",
                                2, v, NULL, NULL, 1, load_done, l);
    if (rv != 0) {
        aegis_free(srv->mem, l->waiters);
        aegis_free(srv->mem, l);
        ctl_rpc_fail_db(r, rv, NULL);
        ctl_rpc_unhold(r);
        return;
    }
    l->next = srv->art_loads;
    srv->art_loads = l;
    st->busy = 1;
}

static void fetch_meta(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct fetch_state *st = r->state;
    const struct aegis_mem *mem = r->srv->mem;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (ctl_db_result_ntuples(res) != 1) {
        ctl_rpc_fail(r, AEGIS_GRPC_NOT_FOUND, "no complete artifact with that sha256");
        return;
    }
    st->size = (uint64_t)ctl_i64(ctl_db_result_value(res, 0, 0));
    st->chunk_size = (uint64_t)ctl_i64(ctl_db_result_value(res, 0, 1));
    const char *stmt_hex = ctl_db_result_value(res, 0, 2),
               *sig_hex = ctl_db_result_value(res, 0, 3);
    snprintf(st->key_id, sizeof(st->key_id), "%s", ctl_db_result_value(res, 0, 4));
    /* (ctl_fetch_free frees what was decoded) */
    if (aegis_hex_decode_alloc(mem, stmt_hex, strlen(stmt_hex), &st->statement,
                               &st->statement_len) != 0 ||
        aegis_hex_decode_alloc(mem, sig_hex, strlen(sig_hex), &st->signature, &st->signature_len) !=
            0 ||
        st->chunk_size == 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INTERNAL, "stored artifact is damaged");
        return;
    }
    Aegis__V1__FetchArtifactRequest *req = (Aegis__V1__FetchArtifactRequest *)r->req;
    if (req->offset > st->size) {
        ctl_rpc_fail(r, AEGIS_GRPC_OUT_OF_RANGE, "offset %llu is past the artifact's size %llu",
                     (unsigned long long)req->offset, (unsigned long long)st->size);
        return;
    }
    st->offset = req->offset;
    if (st->offset == st->size) {
        fetch_pump(r); /* header only */
        return;
    }
    /* Header goes with the first data message. */
    fetch_more(r);
}

void ctl_fetch_start(struct ctl_rpc *r)
{
    Aegis__V1__FetchArtifactRequest *req = (Aegis__V1__FetchArtifactRequest *)r->req;
    if (req->sha256.len != 32) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "FetchArtifactRequest.sha256 must be 32 bytes");
        return;
    }
    struct fetch_state *st = aegis_calloc(r->srv->mem, 1, sizeof(*st));
    if (!st) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return;
    }
    r->state = st;
    ctl_rpc_list_stream(r);
    memcpy(st->sha, req->sha256.data, 32);
    ctl_hex(req->sha256.data, 32, st->sha_hex);
    const char *v[1] = {st->sha_hex};
    ctl_rpc_db(r,
               "SELECT size, chunk_size, encode(statement, 'hex'), encode(signature, 'hex'),"
               " key_id FROM artifacts WHERE sha256 = decode($1, 'hex') AND complete",
               1, v, NULL, NULL, fetch_meta);
}

void ctl_fetch_writable(struct ctl_rpc *r)
{
    if (r->state && !((struct fetch_state *)r->state)->busy)
        fetch_pump(r);
}

/* ---- ReportTelemetry ---------------------------------------------------------------------- */

/* Batches acknowledged in one call; an agent sends a handful per call. */
#define TEL_MAX_BATCHES 4096u
/* JSON text of one attrs/labels map. */
#define TEL_JSON_MAX (64u * 1024u)

/* Batches held while one is being committed. Holding a few instead of pausing the call
 * keeps the stream moving; past this the call is paused (flow control stalls the agent). */
#define TEL_QUEUE 8

struct tel_state {
    struct ctl_copybuf buf;
    int busy;
    int paused;
    uint8_t *q[TEL_QUEUE];
    size_t qlen[TEL_QUEUE];
    size_t qhead, qcount;
    int half_closed;
    uint64_t batch;
    uint64_t *committed;
    size_t ncommitted;
    Aegis__V1__RejectedBatch *rejected;
    size_t nrejected;
    char *json;
};

void ctl_telemetry_free(struct ctl_rpc *r)
{
    struct tel_state *st = r->state;
    if (!st)
        return;
    const struct aegis_mem *mem = r->srv->mem;
    ctl_copybuf_free(&st->buf);
    for (size_t i = 0; i < TEL_QUEUE; i++)
        aegis_free(mem, st->q[i]);
    aegis_free(mem, st->committed);
    aegis_free(mem, st->rejected);
    aegis_free(mem, st->json);
    aegis_free(mem, st);
}

static void tel_reply(struct ctl_rpc *r)
{
    struct tel_state *st = r->state;
    Aegis__V1__TelemetrySummary sum = AEGIS__V1__TELEMETRY_SUMMARY__INIT;
    sum.n_committed_batch_ids = st->ncommitted;
    sum.committed_batch_ids = st->committed;
    Aegis__V1__RejectedBatch *rp[64];
    size_t nr = st->nrejected < 64 ? st->nrejected : 64;
    for (size_t i = 0; i < nr; i++)
        rp[i] = &st->rejected[i];
    sum.n_rejected = nr;
    sum.rejected = rp;
    ctl_rpc_reply(r, &sum.base);
}

static const char *map_json(struct tel_state *st, size_t n, char **keys, char **values)
{
    size_t o = 0;
    st->json[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            st->json[o++] = ',';
        long w = ctl_json_escape(keys[i], st->json, o, TEL_JSON_MAX - 4);
        if (w < 0)
            return NULL;
        o = (size_t)w;
        st->json[o++] = ':';
        w = ctl_json_escape(values[i], st->json, o, TEL_JSON_MAX - 4);
        if (w < 0)
            return NULL;
        o = (size_t)w;
    }
    st->json[o++] = '}';
    st->json[o] = '\0';
    return st->json;
}

static void tel_reject(struct tel_state *st, uint64_t batch, const char *why, int retry)
{
    if (st->nrejected >= 64)
        return;
    Aegis__V1__RejectedBatch *rb = &st->rejected[st->nrejected++];
    aegis__v1__rejected_batch__init(rb);
    rb->batch_id = batch;
    rb->reason = (char *)why;
    rb->retryable = retry;
}

static int tel_process(struct ctl_rpc *r, const uint8_t *msg, size_t len);

/* tel_next commits queued batches one after the other, then answers once the client has
 * half-closed and nothing is left. */
static void tel_next(struct ctl_rpc *r)
{
    struct tel_state *st = r->state;
    while (!st->busy && st->qcount && r->call && !r->finished) {
        size_t slot = st->qhead;
        uint8_t *m = st->q[slot];
        size_t l = st->qlen[slot];
        st->q[slot] = NULL;
        st->qhead = (st->qhead + 1) % TEL_QUEUE;
        st->qcount--;
        tel_process(r, m, l);
        aegis_free(r->srv->mem, m);
    }
    if (st->paused && st->qcount < TEL_QUEUE && r->call && !r->finished) {
        st->paused = 0;
        aegis_call_resume(r->call);
    }
    if (!st->busy && !st->qcount && st->half_closed)
        tel_reply(r);
}

static void tel_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct tel_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        /* Nothing of this batch is acknowledged; the agent keeps it in its spool. */
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    r->srv->telemetry_rows += ctl_db_result_cmd_tuples(res);
    AEGIS_LOG(&r->srv->log, AEGIS_LOG_DEBUG, "event=telemetry_committed batch=%llu rows=%llu",
              (unsigned long long)st->batch, (unsigned long long)ctl_db_result_cmd_tuples(res));
    st->committed[st->ncommitted++] = st->batch;
    ctl_copybuf_reset(&st->buf);
    ctl_db_notify(r->srv->db, CTL_CHANNEL_TELEMETRY, r->cc->agent_id, NULL, NULL);
    tel_next(r);
}

static int tel_row_head(struct ctl_copybuf *b, const char *agent, uint64_t batch, size_t idx,
                        int64_t ts)
{
    ctl_copybuf_cstr(b, agent);
    ctl_copybuf_int(b, (int64_t)batch);
    ctl_copybuf_int(b, (int64_t)idx);
    return ctl_copybuf_timestamp(b, (aegis_tstamp)ts);
}

int ctl_telemetry_msg(struct ctl_rpc *r, const uint8_t *msg, size_t len)
{
    struct ctl_server *srv = r->srv;
    struct tel_state *st = r->state;
    if (!st) {
        st = r->state = aegis_calloc(srv->mem, 1, sizeof(*st));
        if (st) {
            st->committed = aegis_calloc(srv->mem, TEL_MAX_BATCHES, sizeof(uint64_t));
            st->rejected = aegis_calloc(srv->mem, 64, sizeof(*st->rejected));
            st->json = aegis_malloc(srv->mem, TEL_JSON_MAX);
            ctl_copybuf_init(&st->buf, srv->mem, 0);
        }
        if (!st || !st->committed || !st->rejected || !st->json) {
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
            return 0;
        }
    }
    if (st->busy) {
        size_t slot = (st->qhead + st->qcount) % TEL_QUEUE;
        st->q[slot] = aegis_memdup(srv->mem, msg, len ? len : 1);
        if (!st->q[slot]) {
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
            return 0;
        }
        st->qlen[slot] = len;
        st->qcount++;
        if (st->qcount == TEL_QUEUE) {
            st->paused = 1;
            return AEGIS_CALL_PAUSE;
        }
        return 0;
    }
    tel_process(r, msg, len);
    return 0;
}

/* tel_process starts committing one batch; returns 1 if a COPY is in flight. */
static int tel_process(struct ctl_rpc *r, const uint8_t *msg, size_t len)
{
    struct ctl_server *srv = r->srv;
    struct tel_state *st = r->state;
    if (st->ncommitted >= TEL_MAX_BATCHES) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED,
                     "more than %u batches in one call; start a new ReportTelemetry",
                     TEL_MAX_BATCHES);
        return 0;
    }
    Aegis__V1__TelemetryBatch *b = NULL;
    int rv = aegis_proto_unpack(&aegis__v1__telemetry_batch__descriptor, msg, len,
                                srv->cfg.max_message, srv->mem, (ProtobufCMessage **)&b);
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "cannot decode TelemetryBatch: %s",
                     aegis_strerror(rv));
        return 0;
    }
    int64_t dflt = b->created_unix_ns ? b->created_unix_ns : (int64_t)aegis_wallclock();
    const char *agent = r->cc->agent_id;
    size_t idx = 0;
    int bad = 0;
    for (size_t i = 0; i < b->n_events && !bad; i++, idx++) {
        Aegis__V1__Event *e = b->events[i];
        char **k = aegis_calloc(srv->mem, e->n_attrs + 1, sizeof(char *));
        char **v = aegis_calloc(srv->mem, e->n_attrs + 1, sizeof(char *));
        if (!k || !v) {
            aegis_free(srv->mem, k);
            aegis_free(srv->mem, v);
            bad = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < e->n_attrs; j++) {
            k[j] = e->attrs[j]->key;
            v[j] = e->attrs[j]->value;
        }
        const char *js = map_json(st, e->n_attrs, k, v);
        aegis_free(srv->mem, k);
        aegis_free(srv->mem, v);
        if (!js) {
            bad = AEGIS_ERR_TOO_LARGE;
            break;
        }
        tel_row_head(&st->buf, agent, b->batch_id, idx, e->time_unix_ns ? e->time_unix_ns : dflt);
        ctl_copybuf_cstr(&st->buf, "event");
        ctl_copybuf_cstr(&st->buf, e->kind);
        ctl_copybuf_null(&st->buf);
        ctl_copybuf_cstr(&st->buf, js);
        if (e->body.len)
            ctl_copybuf_bytea(&st->buf, e->body.data, e->body.len);
        else
            ctl_copybuf_null(&st->buf);
        bad = ctl_copybuf_end_row(&st->buf);
    }
    for (size_t i = 0; i < b->n_metrics && !bad; i++, idx++) {
        Aegis__V1__Metric *m = b->metrics[i];
        size_t nl = m->labels ? m->labels->n_entries : 0;
        char **k = aegis_calloc(srv->mem, nl + 1, sizeof(char *));
        char **v = aegis_calloc(srv->mem, nl + 1, sizeof(char *));
        if (!k || !v) {
            aegis_free(srv->mem, k);
            aegis_free(srv->mem, v);
            bad = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < nl; j++) {
            k[j] = m->labels->entries[j]->key;
            v[j] = m->labels->entries[j]->value;
        }
        const char *js = map_json(st, nl, k, v);
        aegis_free(srv->mem, k);
        aegis_free(srv->mem, v);
        if (!js) {
            bad = AEGIS_ERR_TOO_LARGE;
            break;
        }
        tel_row_head(&st->buf, agent, b->batch_id, idx, m->time_unix_ns ? m->time_unix_ns : dflt);
        ctl_copybuf_cstr(&st->buf, "metric");
        ctl_copybuf_cstr(&st->buf, m->name);
        ctl_copybuf_double(&st->buf, m->value);
        ctl_copybuf_cstr(&st->buf, js);
        ctl_copybuf_null(&st->buf);
        bad = ctl_copybuf_end_row(&st->buf);
    }
    st->batch = b->batch_id;
    aegis_proto_free(&b->base, srv->mem);
    if (bad) {
        ctl_copybuf_reset(&st->buf);
        tel_reject(st, st->batch,
                   bad == AEGIS_ERR_TOO_LARGE   ? "batch too large"
                   : bad == AEGIS_ERR_MALFORMED ? "NUL byte in text"
                                                : "server error",
                   bad == -ENOMEM);
        return 0;
    }
    if (st->buf.rows == 0) {
        st->committed[st->ncommitted++] = st->batch; /* an empty batch commits trivially */
        return 0;
    }
    st->busy = 1;
    AEGIS_LOG(&srv->log, AEGIS_LOG_DEBUG, "event=telemetry_batch agent=%s batch=%llu rows=%zu",
              agent, (unsigned long long)st->batch, st->buf.rows);
    if (ctl_rpc_copy(r, CTL_SQL_TELEMETRY_COPY, st->buf.data, st->buf.len, tel_done) != 0) {
        st->busy = 0;
        return 0;
    }
    return 1;
}

void ctl_telemetry_half_close(struct ctl_rpc *r)
{
    struct tel_state *st = r->state;
    if (!st) {
        Aegis__V1__TelemetrySummary sum = AEGIS__V1__TELEMETRY_SUMMARY__INIT;
        ctl_rpc_reply(r, &sum.base);
        return;
    }
    st->half_closed = 1;
    if (!st->busy && !st->qcount)
        tel_reply(r);
}

/* ---- UploadArtifact ----------------------------------------------------------------------- */

struct up_state {
    int have_header;
    int busy;
    int half_closed;
    int already; /* an identical complete artifact exists: swallow the content */
    int failed;
    uint8_t sha[32];
    char sha_hex[65];
    uint64_t size, received;
    uint32_t next_idx;
    struct aegis_sha256 *hash;
    uint8_t *chunk; /* CTL_ARTIFACT_CHUNK bytes being filled */
    size_t chunk_len;
    char *hexbuf;
    char name[256];
    int kind;
    char uploaded_by[65];
    int64_t uploaded_ns;
};

void ctl_upload_free(struct ctl_rpc *r)
{
    struct up_state *st = r->state;
    if (!st)
        return;
    aegis_sha256_del(st->hash);
    aegis_free(r->srv->mem, st->chunk);
    aegis_free(r->srv->mem, st->hexbuf);
    aegis_free(r->srv->mem, st);
}

static void up_finish_ok(struct ctl_rpc *r)
{
    struct up_state *st = r->state;
    Aegis__V1__UploadArtifactResponse resp = AEGIS__V1__UPLOAD_ARTIFACT_RESPONSE__INIT;
    Aegis__V1__ArtifactInfo info = AEGIS__V1__ARTIFACT_INFO__INIT;
    info.name = st->name;
    info.kind = (Aegis__V1__ArtifactKind)st->kind;
    info.size = st->size;
    info.sha256.data = st->sha;
    info.sha256.len = 32;
    info.uploaded_by = st->uploaded_by;
    info.uploaded_unix_ns = (int64_t)aegis_wallclock();
    resp.artifact = &info;
    resp.already_present = st->already;
    ctl_rpc_reply(r, &resp.base);
}

static void up_completed(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct up_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    ctl_audit(r->srv, r->cc->name, "artifact_upload", st->sha_hex, "ok", st->name);
    up_finish_ok(r);
}

static void up_discard_done(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    (void)r;
    (void)rv;
    (void)res;
}

static void up_fail(struct ctl_rpc *r, int status, const char *why)
{
    struct up_state *st = r->state;
    st->failed = 1;
    const char *v[1] = {st->sha_hex};
    /* Drop the incomplete row; a complete one from an earlier upload is never touched. */
    ctl_db_exec_params(r->srv->db,
                       "DELETE FROM artifacts WHERE sha256 = decode($1, 'hex') AND NOT complete", 1,
                       v, NULL, NULL, 0, NULL, NULL);
    (void)up_discard_done;
    ctl_audit(r->srv, r->cc->name, "artifact_upload", st->sha_hex, "denied", why);
    ctl_rpc_fail(r, status, "%s", why);
}

static void up_finalize(struct ctl_rpc *r)
{
    struct up_state *st = r->state;
    if (st->already) {
        up_finish_ok(r);
        return;
    }
    uint8_t got[32];
    if (st->received != st->size) {
        char why[160];
        snprintf(why, sizeof(why), "content is %llu bytes but the statement says %llu",
                 (unsigned long long)st->received, (unsigned long long)st->size);
        up_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, why);
        return;
    }
    if (aegis_sha256_final(st->hash, got) != 0 || memcmp(got, st->sha, 32) != 0) {
        up_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                "content SHA-256 does not match the signed statement");
        return;
    }
    const char *v[1] = {st->sha_hex};
    st->busy = 1;
    ctl_rpc_db(r, "UPDATE artifacts SET complete = true WHERE sha256 = decode($1, 'hex')", 1, v,
               NULL, NULL, up_completed);
}

static int up_flush_chunk(struct ctl_rpc *r);

static void up_chunk_stored(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct up_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    if (!st->half_closed)
        aegis_call_resume(r->call);
    else if (st->chunk_len && !st->already)
        up_flush_chunk(r); /* the tail that arrived with the half-close */
    else
        up_finalize(r);
}

static int up_flush_chunk(struct ctl_rpc *r)
{
    struct up_state *st = r->state;
    ctl_hex(st->chunk, st->chunk_len, st->hexbuf);
    char idx[16];
    snprintf(idx, sizeof(idx), "%u", st->next_idx++);
    const char *v[3] = {st->sha_hex, idx, st->hexbuf};
    st->chunk_len = 0;
    st->busy = 1;
    if (ctl_rpc_db(r,
                   "INSERT INTO artifact_chunks (sha256, idx, data) VALUES (decode($1, 'hex'),"
                   " $2::int, decode($3, 'hex')) ON CONFLICT (sha256, idx)"
                   " DO UPDATE SET data = EXCLUDED.data",
                   3, v, NULL, NULL, up_chunk_stored) != 0) {
        st->busy = 0;
        return 0;
    }
    return AEGIS_CALL_PAUSE;
}

static void up_header_stored(struct ctl_rpc *r, int rv, const struct ctl_db_result *res)
{
    struct up_state *st = r->state;
    st->busy = 0;
    if (rv != 0) {
        ctl_rpc_fail_db(r, rv, res);
        return;
    }
    /* Returns whether the stored row was already complete. */
    st->already =
        ctl_db_result_ntuples(res) == 1 && strcmp(ctl_db_result_value(res, 0, 0), "t") == 0;
    if (!st->half_closed)
        aegis_call_resume(r->call);
    else if (st->chunk_len && !st->already)
        up_flush_chunk(r);
    else
        up_finalize(r);
}

static int up_header(struct ctl_rpc *r, Aegis__V1__ArtifactHeader *h)
{
    struct ctl_server *srv = r->srv;
    struct up_state *st = r->state;
    const struct ctl_artifact_key *key = NULL;
    for (size_t i = 0; i < srv->n_artifact_keys; i++)
        if (strcmp(srv->artifact_keys[i].key_id, h->signing_key_id) == 0)
            key = &srv->artifact_keys[i];
    if (!key) {
        ctl_audit(srv, r->cc->name, "artifact_upload", h->signing_key_id, "denied",
                  "unknown artifact signing key");
        ctl_rpc_fail(r, AEGIS_GRPC_PERMISSION_DENIED,
                     "artifact signing key %.20s is not trusted by this server (add its .pub "
                     "with --artifact-pubkey and reload with SIGHUP)",
                     h->signing_key_id);
        return 0;
    }
    if (aegis_spki_verify(key->spki, key->spki_len, h->statement.data, h->statement.len,
                          h->signature.data, h->signature.len) != 0) {
        ctl_audit(srv, r->cc->name, "artifact_upload", h->signing_key_id, "denied",
                  "bad artifact signature");
        ctl_rpc_fail(r, AEGIS_GRPC_PERMISSION_DENIED,
                     "the artifact signature does not verify with key %s", key->key_id);
        return 0;
    }
    Aegis__V1__ArtifactStatement *s = NULL;
    int rv = aegis_proto_unpack(&aegis__v1__artifact_statement__descriptor, h->statement.data,
                                h->statement.len, 64 * 1024, srv->mem, (ProtobufCMessage **)&s);
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "cannot decode ArtifactStatement: %s",
                     aegis_strerror(rv));
        return 0;
    }
    const char *bad = NULL;
    if (s->sha256.len != 32)
        bad = "statement sha256 must be 32 bytes";
    else if (s->size > CTL_ARTIFACT_MAX || s->uncompressed_size > CTL_ARTIFACT_MAX)
        bad = "artifact over the 1 GiB cap";
    else if (!*ctl_kind_name(s->kind))
        bad = "statement kind unspecified or unknown";
    else if (!s->name[0] || strlen(s->name) >= sizeof(st->name))
        bad = "statement name empty or too long";
    if (bad) {
        aegis_proto_free(&s->base, srv->mem);
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "%s", bad);
        return 0;
    }
    memcpy(st->sha, s->sha256.data, 32);
    ctl_hex(st->sha, 32, st->sha_hex);
    st->size = s->size;
    st->kind = s->kind;
    snprintf(st->name, sizeof(st->name), "%s", s->name);
    aegis_proto_free(&s->base, srv->mem);
    st->have_header = 1;
    char *shex = aegis_malloc(srv->mem, h->statement.len * 2 + 1);
    if (!shex) {
        ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
        return 0;
    }
    ctl_hex(h->statement.data, h->statement.len, shex);
    char sig[300], size[32];
    if (h->signature.len > 128) {
        aegis_free(srv->mem, shex);
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "signature too long");
        return 0;
    }
    ctl_hex(h->signature.data, h->signature.len, sig);
    snprintf(size, sizeof(size), "%llu", (unsigned long long)st->size);
    const char *v[8] = {st->sha_hex, st->name, ctl_kind_name(st->kind), size, sig, key->key_id,
                        r->cc->name, shex};
    st->busy = 1;
    /* A re-upload of an incomplete artifact starts over; a complete one is kept. */
    rv = ctl_rpc_db(r,
                    "INSERT INTO artifacts (sha256, name, kind, size, signature, key_id,"
                    " uploaded_by, statement) VALUES (decode($1, 'hex'), $2, $3, $4::bigint,"
                    " decode($5, 'hex'), $6, $7, decode($8, 'hex'))"
                    " ON CONFLICT (sha256) DO UPDATE SET name = CASE WHEN artifacts.complete"
                    " THEN artifacts.name ELSE EXCLUDED.name END RETURNING complete",
                    8, v, NULL, NULL, up_header_stored);
    aegis_free(srv->mem, shex);
    if (rv != 0) {
        st->busy = 0;
        return 0;
    }
    return AEGIS_CALL_PAUSE;
}

int ctl_upload_msg(struct ctl_rpc *r, const uint8_t *msg, size_t len)
{
    struct ctl_server *srv = r->srv;
    struct up_state *st = r->state;
    if (!st) {
        st = r->state = aegis_calloc(srv->mem, 1, sizeof(*st));
        if (st) {
            st->chunk = aegis_malloc(srv->mem, CTL_ARTIFACT_CHUNK);
            st->hexbuf = aegis_malloc(srv->mem, CTL_ARTIFACT_CHUNK * 2 + 1);
            snprintf(st->uploaded_by, sizeof(st->uploaded_by), "%s", r->cc->name);
        }
        if (!st || !st->chunk || !st->hexbuf || aegis_sha256_new(srv->mem, &st->hash) != 0) {
            ctl_rpc_fail(r, AEGIS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
            return 0;
        }
    }
    if (st->failed)
        return 0;
    Aegis__V1__UploadArtifactRequest *m = NULL;
    int rv = aegis_proto_unpack(&aegis__v1__upload_artifact_request__descriptor, msg, len,
                                srv->cfg.max_message, srv->mem, (ProtobufCMessage **)&m);
    if (rv != 0) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "cannot decode UploadArtifactRequest: %s",
                     aegis_strerror(rv));
        return 0;
    }
    int ret = 0;
    if (m->part_case == AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_HEADER && !st->have_header) {
        ret = up_header(r, m->header);
    } else if (m->part_case == AEGIS__V1__UPLOAD_ARTIFACT_REQUEST__PART_CHUNK && st->have_header) {
        const uint8_t *p = m->chunk.data;
        size_t n = m->chunk.len;
        if (n > CTL_ARTIFACT_CHUNK || st->received + n > st->size) {
            up_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                    n > CTL_ARTIFACT_CHUNK ? "chunk over 64 KiB"
                                           : "content is longer than the signed size");
        } else if (!st->already) {
            aegis_sha256_update(st->hash, p, n);
            st->received += n;
            /* Fill 64 KiB storage chunks regardless of how the client cut the stream. */
            size_t room = CTL_ARTIFACT_CHUNK - st->chunk_len;
            size_t take = n < room ? n : room;
            memcpy(st->chunk + st->chunk_len, p, take);
            st->chunk_len += take;
            if (st->chunk_len == CTL_ARTIFACT_CHUNK) {
                ret = up_flush_chunk(r);
                /* the remainder starts the next chunk (stored after this insert) */
                memcpy(st->chunk, p + take, n - take);
                st->chunk_len = n - take;
            }
        } else {
            st->received += n;
        }
    } else {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT,
                     "UploadArtifact expects the header first, then content chunks");
    }
    aegis_proto_free(&m->base, srv->mem);
    return ret;
}

void ctl_upload_half_close(struct ctl_rpc *r)
{
    struct up_state *st = r->state;
    if (!st || !st->have_header) {
        ctl_rpc_fail(r, AEGIS_GRPC_INVALID_ARGUMENT, "UploadArtifact ended before the header");
        return;
    }
    if (st->failed)
        return;
    st->half_closed = 1;
    if (st->busy)
        return;
    if (st->chunk_len && !st->already) {
        up_flush_chunk(r); /* up_chunk_stored finalizes */
        return;
    }
    up_finalize(r);
}
