#include "agent_seen.h"

#include "agent_bytes.h"

#include <aegis/err.h>

#include <errno.h>
#include <string.h>

/* Record payload (version 1):
 *   u8 format (1), u8 state, u16 id_len, u32 outcome, u64 expiry, id bytes */
#define REC_FORMAT 1u
#define REC_FIXED 16u

struct entry {
    aegis_tstamp expiry;
    uint32_t outcome;
    uint8_t state;
    uint8_t id_len;
    char id[AGENT_SEEN_ID_MAX + 1]; /* NUL-terminated */
};

struct agent_seen {
    const struct aegis_mem *mem;
    struct agent_journal *journal;
    struct agent_seen_config cfg;
    struct agent_journal_recovery recovery;
    struct entry *entries;
    size_t n, cap;
    uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
    size_t nslots;   /* power of two, > 2 * n */
    uint64_t live_bytes;
    uint64_t skipped;
};

static uint64_t hash_id(const char *id, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)id[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static struct entry *find(const struct agent_seen *s, const char *id, size_t len)
{
    if (!s->nslots)
        return NULL;
    size_t mask = s->nslots - 1;
    for (size_t i = (size_t)hash_id(id, len) & mask, probes = 0; probes < s->nslots;
         i = (i + 1) & mask, probes++) {
        uint32_t v = s->slots[i];
        if (!v)
            return NULL;
        struct entry *e = &s->entries[v - 1];
        if (e->id_len == len && memcmp(e->id, id, len) == 0)
            return e;
    }
    return NULL;
}

static void index_put(struct agent_seen *s, size_t idx)
{
    const struct entry *e = &s->entries[idx];
    size_t mask = s->nslots - 1;
    size_t i = (size_t)hash_id(e->id, e->id_len) & mask;
    while (s->slots[i])
        i = (i + 1) & mask;
    s->slots[i] = (uint32_t)(idx + 1);
}

static int rebuild_index(struct agent_seen *s, size_t nslots)
{
    uint32_t *slots = aegis_calloc(s->mem, nslots, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    aegis_free(s->mem, s->slots);
    s->slots = slots;
    s->nslots = nslots;
    for (size_t i = 0; i < s->n; i++)
        index_put(s, i);
    return 0;
}

/* Make room for one more entry before anything durable happens, so that
 * recording it in memory afterwards cannot fail. */
static int reserve_one(struct agent_seen *s)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct entry *e = aegis_realloc(s->mem, s->entries, cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        s->entries = e;
        s->cap = cap;
    }
    if ((s->n + 1) * 2 >= s->nslots) {
        size_t nslots = s->nslots ? s->nslots : 128;
        while ((s->n + 1) * 2 >= nslots)
            nslots *= 2;
        return rebuild_index(s, nslots);
    }
    return 0;
}

static uint64_t entry_record_size(const struct entry *e)
{
    return agent_journal_record_size(REC_FIXED + e->id_len);
}

static struct entry *insert(struct agent_seen *s, const char *id, size_t len)
{
    struct entry *e = &s->entries[s->n];
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, len);
    e->id_len = (uint8_t)len;
    index_put(s, s->n);
    s->n++;
    s->live_bytes += entry_record_size(e);
    return e;
}

static size_t encode(uint8_t *out, const struct entry *e)
{
    out[0] = REC_FORMAT;
    out[1] = e->state;
    agent_put16(out + 2, e->id_len);
    agent_put32(out + 4, e->outcome);
    agent_put64(out + 8, e->expiry);
    memcpy(out + REC_FIXED, e->id, e->id_len);
    return REC_FIXED + e->id_len;
}

static int replay(uint64_t seq, const uint8_t *p, size_t len, void *ud)
{
    (void)seq;
    struct agent_seen *s = ud;
    if (len < REC_FIXED || p[0] != REC_FORMAT ||
        (p[1] != AGENT_SEEN_STARTED && p[1] != AGENT_SEEN_FINISHED)) {
        s->skipped++;
        return 0;
    }
    size_t id_len = agent_get16(p + 2);
    if (id_len == 0 || id_len > AGENT_SEEN_ID_MAX || REC_FIXED + id_len != len) {
        s->skipped++;
        return 0;
    }
    const char *id = (const char *)p + REC_FIXED;
    struct entry *e = find(s, id, id_len);
    if (!e) {
        int rv = reserve_one(s);
        if (rv != 0)
            return rv;
        e = insert(s, id, id_len);
        e->state = p[1];
    }
    /* Later records win, except that nothing moves a finished id back to
     * started: the outcome is what must be reported. */
    if (p[1] == AGENT_SEEN_FINISHED) {
        e->state = AGENT_SEEN_FINISHED;
        e->outcome = agent_get32(p + 4);
    }
    aegis_tstamp expiry = agent_get64(p + 8);
    if (expiry > e->expiry)
        e->expiry = expiry;
    return 0;
}

static int emit(struct agent_journal_compactor *c, void *ud)
{
    const struct agent_seen *s = ud;
    uint8_t buf[REC_FIXED + AGENT_SEEN_ID_MAX];
    for (size_t i = 0; i < s->n; i++) {
        int rv = agent_journal_compactor_add(c, buf, encode(buf, &s->entries[i]));
        if (rv != 0)
            return rv;
    }
    return 0;
}

int agent_seen_compact(struct agent_seen *s)
{
    return s ? agent_journal_compact(s->journal, emit, s) : -EINVAL;
}

static int expired(const struct agent_seen *s, aegis_tstamp expiry, aegis_tstamp now)
{
    aegis_tstamp until =
        expiry > AEGIS_TSTAMP_NEVER - s->cfg.margin ? AEGIS_TSTAMP_NEVER : expiry + s->cfg.margin;
    return until <= now;
}

/* Drop expired entries from memory; returns how many. */
static size_t drop_expired(struct agent_seen *s, aegis_tstamp now)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (expired(s, s->entries[i].expiry, now)) {
            s->live_bytes -= entry_record_size(&s->entries[i]);
            continue;
        }
        if (kept != i)
            s->entries[kept] = s->entries[i];
        kept++;
    }
    size_t dropped = s->n - kept;
    if (dropped) {
        s->n = kept;
        /* Re-index in place: the table never needs to grow when shrinking. */
        memset(s->slots, 0, s->nslots * sizeof(*s->slots));
        for (size_t i = 0; i < s->n; i++)
            index_put(s, i);
    }
    return dropped;
}

static void maybe_compact(struct agent_seen *s)
{
    /* A failed compaction leaves the old file intact (or poisons the
     * journal, which the next append reports); the mark that triggered it is
     * already durable, so it is not failed after the fact. */
    if (agent_journal_needs_compaction(s->journal, s->live_bytes))
        (void)agent_journal_compact(s->journal, emit, s);
}

int agent_seen_expire(struct agent_seen *s, aegis_tstamp now)
{
    if (!s)
        return -EINVAL;
    size_t dropped = drop_expired(s, now);
    if (agent_journal_needs_compaction(s->journal, s->live_bytes)) {
        int rv = agent_journal_compact(s->journal, emit, s);
        if (rv != 0)
            return rv;
    }
    return dropped > INT32_MAX ? INT32_MAX : (int)dropped;
}

int agent_seen_open(const char *path, const struct agent_seen_config *cfg,
                    const struct agent_io *io, const struct aegis_mem *mem, aegis_tstamp now,
                    char *errmsg, size_t errlen, struct agent_seen **pseen)
{
    if (!pseen)
        return -EINVAL;
    if (!mem)
        mem = aegis_mem_default();
    struct agent_seen *s = aegis_calloc(mem, 1, sizeof(*s));
    if (!s)
        return agent_errmsg(errmsg, errlen, -ENOMEM, "seen-id journal %s: out of memory",
                            path ? path : "(null)");
    s->mem = mem;
    if (cfg)
        s->cfg = *cfg;
    if (!s->cfg.max_entries)
        s->cfg.max_entries = AGENT_SEEN_DEFAULT_MAX_ENTRIES;
    if (!s->cfg.margin)
        s->cfg.margin = AGENT_SEEN_DEFAULT_MARGIN;
    struct agent_journal_config jc = {
        .kind = AGENT_SEEN_JOURNAL_KIND,
        .max_bytes = s->cfg.max_bytes,
        .max_record = REC_FIXED + AGENT_SEEN_ID_MAX,
        .compact_min_bytes = s->cfg.compact_min_bytes,
        .compact_garbage_pct = 0,
    };
    int rv = agent_journal_open(path, &jc, io, mem, replay, s, &s->recovery, errmsg, errlen,
                                &s->journal);
    if (rv != 0) {
        agent_seen_del(s);
        return rv;
    }
    drop_expired(s, now);
    maybe_compact(s);
    *pseen = s;
    return 0;
}

void agent_seen_del(struct agent_seen *s)
{
    if (!s)
        return;
    agent_journal_del(s->journal);
    aegis_free(s->mem, s->entries);
    aegis_free(s->mem, s->slots);
    aegis_free(s->mem, s);
}

enum agent_seen_state agent_seen_check(const struct agent_seen *s, const char *id,
                                       uint32_t *poutcome)
{
    if (!s || !id)
        return AGENT_SEEN_NEW;
    size_t len = strnlen(id, AGENT_SEEN_ID_MAX + 1);
    if (len == 0 || len > AGENT_SEEN_ID_MAX)
        return AGENT_SEEN_NEW;
    const struct entry *e = find(s, id, len);
    if (!e)
        return AGENT_SEEN_NEW;
    if (e->state == AGENT_SEEN_FINISHED && poutcome)
        *poutcome = e->outcome;
    return (enum agent_seen_state)e->state;
}

/* Make sure a record of len bytes fits, compacting if that helps. */
static int make_room(struct agent_seen *s, size_t len, aegis_tstamp now)
{
    if (agent_journal_fits(s->journal, len))
        return 0;
    drop_expired(s, now);
    int rv = agent_journal_compact(s->journal, emit, s);
    if (rv != 0)
        return rv;
    return agent_journal_fits(s->journal, len) ? 0 : AEGIS_ERR_LIMIT;
}

static int check_id(const char *id, size_t *plen)
{
    if (!id)
        return -EINVAL;
    size_t len = strnlen(id, AGENT_SEEN_ID_MAX + 1);
    if (len == 0 || len > AGENT_SEEN_ID_MAX)
        return -EINVAL;
    *plen = len;
    return 0;
}

int agent_seen_mark_started(struct agent_seen *s, const char *id, aegis_tstamp expiry,
                            aegis_tstamp now)
{
    size_t len;
    if (!s || check_id(id, &len) != 0)
        return -EINVAL;
    if (find(s, id, len))
        return AEGIS_ERR_EXISTS;
    if (expired(s, expiry, now))
        return AEGIS_ERR_EXPIRED;
    if (s->n >= s->cfg.max_entries && (drop_expired(s, now), s->n >= s->cfg.max_entries))
        return AEGIS_ERR_LIMIT;
    int rv = reserve_one(s);
    if (rv != 0)
        return rv;
    struct entry tmp;
    memset(&tmp, 0, sizeof(tmp));
    memcpy(tmp.id, id, len);
    tmp.id_len = (uint8_t)len;
    tmp.state = AGENT_SEEN_STARTED;
    tmp.expiry = expiry;
    uint8_t buf[REC_FIXED + AGENT_SEEN_ID_MAX];
    size_t n = encode(buf, &tmp);
    rv = make_room(s, n, now);
    if (rv == 0)
        rv = agent_journal_append(s->journal, buf, n, NULL);
    if (rv != 0)
        return rv;
    struct entry *e = insert(s, id, len);
    e->state = AGENT_SEEN_STARTED;
    e->expiry = expiry;
    maybe_compact(s);
    return 0;
}

int agent_seen_mark_finished(struct agent_seen *s, const char *id, uint32_t outcome,
                             aegis_tstamp now)
{
    size_t len;
    if (!s || check_id(id, &len) != 0)
        return -EINVAL;
    struct entry *e = find(s, id, len);
    if (!e)
        return AEGIS_ERR_NOT_FOUND;
    if (e->state == AGENT_SEEN_FINISHED)
        return AEGIS_ERR_STATE;
    struct entry tmp = *e;
    tmp.state = AGENT_SEEN_FINISHED;
    tmp.outcome = outcome;
    uint8_t buf[REC_FIXED + AGENT_SEEN_ID_MAX];
    size_t n = encode(buf, &tmp);
    int rv = make_room(s, n, now);
    if (rv != 0)
        return rv;
    /* make_room may have dropped expired entries and moved e. */
    e = find(s, id, len);
    if (!e)
        return AEGIS_ERR_EXPIRED;
    rv = agent_journal_append(s->journal, buf, n, NULL);
    if (rv != 0)
        return rv;
    e->state = AGENT_SEEN_FINISHED;
    e->outcome = outcome;
    maybe_compact(s);
    return 0;
}

int agent_seen_foreach_started(const struct agent_seen *s, agent_seen_started_fn fn, void *ud)
{
    if (!s || !fn)
        return -EINVAL;
    for (size_t i = 0; i < s->n; i++) {
        const struct entry *e = &s->entries[i];
        if (e->state != AGENT_SEEN_STARTED)
            continue;
        int rv = fn(e->id, e->expiry, ud);
        if (rv != 0)
            return rv;
    }
    return 0;
}

size_t agent_seen_count(const struct agent_seen *s)
{
    return s ? s->n : 0;
}

uint64_t agent_seen_skipped(const struct agent_seen *s)
{
    return s ? s->skipped : 0;
}

const struct agent_journal_recovery *agent_seen_recovery(const struct agent_seen *s)
{
    return &s->recovery;
}

uint64_t agent_seen_journal_size(const struct agent_seen *s)
{
    return agent_journal_size(s->journal);
}
