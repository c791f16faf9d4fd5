#include "agent_acks.h"

#include "agent_bytes.h"

#include <aegis/err.h>

#include <errno.h>
#include <string.h>

/* Record payloads (format 1), little-endian:
 *   ACK:     u8 1, u8 0, u16 id_len, u32 state, u64 seq, u32 flags,
 *            u16 detail_len, u16 0, id, detail, result
 *            (the result is the rest of the record)
 *   CONFIRM: u8 2, u8 0, u16 id_len, u32 state, id */
#define REC_ACK 1u
#define REC_CONFIRM 2u
#define ACK_FIXED 24u
#define CONFIRM_FIXED 8u
#define MAX_RECORD (ACK_FIXED + AGENT_ACKS_ID_MAX + AGENT_ACKS_DETAIL_MAX + AGENT_ACKS_RESULT_MAX)

struct agent_acks {
    const struct aegis_mem *mem;
    struct agent_journal *journal;
    struct agent_acks_config cfg;
    struct agent_journal_recovery recovery;
    struct agent_ack *acks; /* pending, oldest first; each id points at one block */
    size_t n, cap;
    uint64_t live_bytes;
    uint64_t skipped;
    uint8_t *scratch; /* one encoded record */
    size_t scratch_cap;
};

static size_t ack_payload_size(const struct agent_ack *k)
{
    return ACK_FIXED + strlen(k->id) + strlen(k->detail) + k->result_len;
}

/* One allocation holds id, detail and result, so an ack frees in one call. */
static int make_ack(const struct aegis_mem *mem, struct agent_ack *k, const char *id, size_t id_len,
                    const char *detail, size_t detail_len, const void *result, size_t result_len)
{
    char *b = aegis_malloc(mem, id_len + 1 + detail_len + 1 + result_len);
    if (!b)
        return -ENOMEM;
    memcpy(b, id, id_len);
    b[id_len] = '\0';
    memcpy(b + id_len + 1, detail, detail_len);
    b[id_len + 1 + detail_len] = '\0';
    if (result_len)
        memcpy(b + id_len + 1 + detail_len + 1, result, result_len);
    k->id = b;
    k->detail = b + id_len + 1;
    k->result = result_len ? (uint8_t *)b + id_len + 1 + detail_len + 1 : NULL;
    k->result_len = result_len;
    return 0;
}

static int ensure_scratch(struct agent_acks *a, size_t need)
{
    if (need <= a->scratch_cap)
        return 0;
    uint8_t *p = aegis_realloc(a->mem, a->scratch, need);
    if (!p)
        return -ENOMEM;
    a->scratch = p;
    a->scratch_cap = need;
    return 0;
}

static size_t encode_ack(uint8_t *out, const struct agent_ack *k)
{
    size_t id_len = strlen(k->id), detail_len = strlen(k->detail);
    memset(out, 0, ACK_FIXED);
    out[0] = REC_ACK;
    agent_put16(out + 2, (uint16_t)id_len);
    agent_put32(out + 4, k->state);
    agent_put64(out + 8, k->seq);
    agent_put32(out + 16, k->flags);
    agent_put16(out + 20, (uint16_t)detail_len);
    size_t off = ACK_FIXED;
    memcpy(out + off, k->id, id_len);
    off += id_len;
    memcpy(out + off, k->detail, detail_len);
    off += detail_len;
    if (k->result_len)
        memcpy(out + off, k->result, k->result_len);
    return off + k->result_len;
}

static int find(const struct agent_acks *a, const char *id, uint32_t state, size_t *pidx)
{
    for (size_t i = 0; i < a->n; i++) {
        if (a->acks[i].state == state && strcmp(a->acks[i].id, id) == 0) {
            *pidx = i;
            return 1;
        }
    }
    return 0;
}

static int reserve_one(struct agent_acks *a)
{
    if (a->n < a->cap)
        return 0;
    size_t cap = a->cap ? a->cap * 2 : 16;
    struct agent_ack *p = aegis_realloc(a->mem, a->acks, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    a->acks = p;
    a->cap = cap;
    return 0;
}

static void push(struct agent_acks *a, const struct agent_ack *k)
{
    a->acks[a->n++] = *k;
    a->live_bytes += agent_journal_record_size(ack_payload_size(k));
}

static void remove_at(struct agent_acks *a, size_t i, struct agent_ack *out)
{
    struct agent_ack k = a->acks[i];
    a->live_bytes -= agent_journal_record_size(ack_payload_size(&k));
    memmove(&a->acks[i], &a->acks[i + 1], (a->n - i - 1) * sizeof(*a->acks));
    a->n--;
    if (out)
        *out = k;
    else
        aegis_free(a->mem, k.id);
}

/* Put a removed ack back where it was (undo after a failed compaction). */
static void reinsert_at(struct agent_acks *a, size_t i, const struct agent_ack *k)
{
    memmove(&a->acks[i + 1], &a->acks[i], (a->n - i) * sizeof(*a->acks));
    a->acks[i] = *k;
    a->n++;
    a->live_bytes += agent_journal_record_size(ack_payload_size(k));
}

static int id_ok(const char *id, size_t len)
{
    return len > 0 && len <= AGENT_ACKS_ID_MAX && !memchr(id, '\0', len);
}

static int replay(uint64_t seq, const uint8_t *p, size_t len, void *ud)
{
    (void)seq;
    struct agent_acks *a = ud;
    if (len >= ACK_FIXED && p[0] == REC_ACK) {
        size_t id_len = agent_get16(p + 2), detail_len = agent_get16(p + 20);
        if (!id_ok((const char *)p + ACK_FIXED, id_len) || detail_len > AGENT_ACKS_DETAIL_MAX ||
            ACK_FIXED + id_len + detail_len > len ||
            len - ACK_FIXED - id_len - detail_len > AGENT_ACKS_RESULT_MAX ||
            memchr(p + ACK_FIXED + id_len, '\0', detail_len)) {
            a->skipped++;
            return 0;
        }
        size_t result_len = len - ACK_FIXED - id_len - detail_len;
        struct agent_ack k = {
            .seq = agent_get64(p + 8), .state = agent_get32(p + 4), .flags = agent_get32(p + 16)};
        char id[AGENT_ACKS_ID_MAX + 1];
        memcpy(id, p + ACK_FIXED, id_len);
        id[id_len] = '\0';
        size_t idx;
        if (find(a, id, k.state, &idx))
            return 0;
        int rv = reserve_one(a);
        if (rv == 0)
            rv = make_ack(a->mem, &k, id, id_len, (const char *)p + ACK_FIXED + id_len, detail_len,
                          p + ACK_FIXED + id_len + detail_len, result_len);
        if (rv != 0)
            return rv;
        push(a, &k);
        return 0;
    }
    if (len >= CONFIRM_FIXED && p[0] == REC_CONFIRM) {
        size_t id_len = agent_get16(p + 2);
        if (!id_ok((const char *)p + CONFIRM_FIXED, id_len) || CONFIRM_FIXED + id_len != len) {
            a->skipped++;
            return 0;
        }
        char id[AGENT_ACKS_ID_MAX + 1];
        memcpy(id, p + CONFIRM_FIXED, id_len);
        id[id_len] = '\0';
        size_t idx;
        if (find(a, id, agent_get32(p + 4), &idx))
            remove_at(a, idx, NULL);
        return 0;
    }
    a->skipped++;
    return 0;
}

static int emit(struct agent_journal_compactor *c, void *ud)
{
    struct agent_acks *a = ud;
    for (size_t i = 0; i < a->n; i++) {
        int rv = ensure_scratch(a, ack_payload_size(&a->acks[i]));
        if (rv != 0)
            return rv;
        rv = agent_journal_compactor_add(c, a->scratch, encode_ack(a->scratch, &a->acks[i]));
        if (rv != 0)
            return rv;
    }
    return 0;
}

int agent_acks_compact(struct agent_acks *a)
{
    return a ? agent_journal_compact(a->journal, emit, a) : -EINVAL;
}

static void maybe_compact(struct agent_acks *a)
{
    /* The operation that triggered this is already durable; a failed
     * compaction leaves the old file (or poisons the journal, which the next
     * append reports), so it is not reported here. */
    if (agent_journal_needs_compaction(a->journal, a->live_bytes))
        (void)agent_journal_compact(a->journal, emit, a);
}

int agent_acks_open(const char *path, const struct agent_acks_config *cfg,
                    const struct agent_io *io, const struct aegis_mem *mem, char *errmsg,
                    size_t errlen, struct agent_acks **packs)
{
    if (!packs)
        return -EINVAL;
    if (!mem)
        mem = aegis_mem_default();
    struct agent_acks *a = aegis_calloc(mem, 1, sizeof(*a));
    if (!a)
        return agent_errmsg(errmsg, errlen, -ENOMEM, "ack journal: out of memory");
    a->mem = mem;
    if (cfg)
        a->cfg = *cfg;
    if (!a->cfg.max_pending)
        a->cfg.max_pending = AGENT_ACKS_DEFAULT_MAX_PENDING;
    if (!a->cfg.max_bytes)
        a->cfg.max_bytes = AGENT_ACKS_DEFAULT_MAX_BYTES;
    struct agent_journal_config jc = {
        .kind = AGENT_ACKS_JOURNAL_KIND,
        .max_bytes = a->cfg.max_bytes,
        .max_record = MAX_RECORD,
        .compact_min_bytes = a->cfg.compact_min_bytes,
        .compact_garbage_pct = 0,
    };
    int rv = agent_journal_open(path, &jc, io, mem, replay, a, &a->recovery, errmsg, errlen,
                                &a->journal);
    if (rv != 0) {
        agent_acks_del(a);
        return rv;
    }
    maybe_compact(a);
    *packs = a;
    return 0;
}

void agent_acks_del(struct agent_acks *a)
{
    if (!a)
        return;
    agent_journal_del(a->journal);
    for (size_t i = 0; i < a->n; i++)
        aegis_free(a->mem, a->acks[i].id);
    aegis_free(a->mem, a->acks);
    aegis_free(a->mem, a->scratch);
    aegis_free(a->mem, a);
}

/* Make sure a record of len bytes fits, compacting if that helps. */
static int make_room(struct agent_acks *a, size_t len)
{
    if (agent_journal_fits(a->journal, len))
        return 0;
    int rv = agent_journal_compact(a->journal, emit, a);
    if (rv != 0)
        return rv;
    return agent_journal_fits(a->journal, len) ? 0 : AEGIS_ERR_LIMIT;
}

int agent_acks_append(struct agent_acks *a, const char *id, uint64_t seq, uint32_t state,
                      uint32_t flags, const char *detail, const void *result, size_t result_len)
{
    if (!a || !id || (!result && result_len))
        return -EINVAL;
    if (!detail)
        detail = "";
    size_t id_len = strnlen(id, AGENT_ACKS_ID_MAX + 1);
    size_t detail_len = strnlen(detail, AGENT_ACKS_DETAIL_MAX + 1);
    if (id_len == 0 || id_len > AGENT_ACKS_ID_MAX || detail_len > AGENT_ACKS_DETAIL_MAX ||
        result_len > AGENT_ACKS_RESULT_MAX)
        return -EINVAL;
    size_t idx;
    if (find(a, id, state, &idx))
        return 0;
    if (a->n >= a->cfg.max_pending)
        return AEGIS_ERR_LIMIT;
    struct agent_ack k = {.seq = seq, .state = state, .flags = flags};
    int rv = reserve_one(a);
    if (rv == 0)
        rv = make_ack(a->mem, &k, id, id_len, detail, detail_len, result, result_len);
    if (rv != 0)
        return rv;
    size_t n = ack_payload_size(&k);
    rv = ensure_scratch(a, n);
    if (rv == 0)
        rv = make_room(a, n);
    if (rv == 0)
        rv = agent_journal_append(a->journal, a->scratch, encode_ack(a->scratch, &k), NULL);
    if (rv != 0) {
        aegis_free(a->mem, k.id);
        return rv;
    }
    push(a, &k);
    maybe_compact(a);
    return 0;
}

int agent_acks_confirm(struct agent_acks *a, const char *id, uint32_t state)
{
    if (!a || !id)
        return -EINVAL;
    size_t id_len = strnlen(id, AGENT_ACKS_ID_MAX + 1);
    if (id_len == 0 || id_len > AGENT_ACKS_ID_MAX)
        return -EINVAL;
    size_t idx;
    if (!find(a, id, state, &idx))
        return AEGIS_ERR_NOT_FOUND;
    uint8_t rec[CONFIRM_FIXED + AGENT_ACKS_ID_MAX];
    memset(rec, 0, CONFIRM_FIXED);
    rec[0] = REC_CONFIRM;
    agent_put16(rec + 2, (uint16_t)id_len);
    agent_put32(rec + 4, state);
    memcpy(rec + CONFIRM_FIXED, id, id_len);
    size_t n = CONFIRM_FIXED + id_len;
    int rv;
    if (agent_journal_fits(a->journal, n)) {
        rv = agent_journal_append(a->journal, rec, n, NULL);
        if (rv != 0)
            return rv;
        remove_at(a, idx, NULL);
        maybe_compact(a);
        return 0;
    }
    /* No room even for the confirmation: compacting without this ack is
     * itself the durable record that it was confirmed. */
    struct agent_ack k;
    remove_at(a, idx, &k);
    rv = agent_journal_compact(a->journal, emit, a);
    if (rv != 0) {
        reinsert_at(a, idx, &k);
        return rv;
    }
    aegis_free(a->mem, k.id);
    return 0;
}

size_t agent_acks_count(const struct agent_acks *a)
{
    return a ? a->n : 0;
}

const struct agent_ack *agent_acks_at(const struct agent_acks *a, size_t i)
{
    return a && i < a->n ? &a->acks[i] : NULL;
}

uint64_t agent_acks_journal_size(const struct agent_acks *a)
{
    return agent_journal_size(a->journal);
}

uint64_t agent_acks_skipped(const struct agent_acks *a)
{
    return a ? a->skipped : 0;
}

const struct agent_journal_recovery *agent_acks_recovery(const struct agent_acks *a)
{
    return &a->recovery;
}
