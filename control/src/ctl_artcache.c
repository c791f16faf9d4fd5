/*
 * ctl_artcache: a reference-counted LRU of artifact chunks (see ctl_artcache.h). A chained
 * hash table finds entries; a doubly linked list orders them by last use.
 */
#include "ctl_artcache.h"

#include <errno.h>
#include <string.h>

/* Buckets: a power of two; 4,096 chains stay short up to a few thousand 64 KiB chunks (the
 * default budget holds 1,024). */
#define NBUCKETS 4096u

struct entry {
    struct ctl_artchunk pub; /* first: the public view is the entry */
    struct entry *hnext;
    struct entry *prev, *next; /* LRU: head = most recent */
    unsigned refs;
    int cached; /* in the table and list; 0 = private copy freed at its last release */
};

struct ctl_artcache {
    const struct aegis_mem *mem;
    size_t max_bytes;
    struct entry *buckets[NBUCKETS];
    struct entry *head, *tail;
    struct ctl_artcache_stats st;
};

static size_t bucket(const uint8_t sha[32], uint32_t idx)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 8; i++)
        h = (h ^ sha[i]) * 16777619u;
    h = (h ^ idx) * 16777619u;
    return h & (NBUCKETS - 1);
}

static void lru_unlink(struct ctl_artcache *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(struct ctl_artcache *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void table_remove(struct ctl_artcache *c, struct entry *e)
{
    struct entry **pp = &c->buckets[bucket(e->pub.sha256, e->pub.idx)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

/* evict frees unreferenced entries from the cold end until need more bytes fit. */
static void evict(struct ctl_artcache *c, size_t need)
{
    struct entry *e = c->tail;
    while (e && c->st.bytes + need > c->max_bytes) {
        struct entry *prev = e->prev;
        if (e->refs == 0) {
            lru_unlink(c, e);
            table_remove(c, e);
            c->st.bytes -= e->pub.len;
            c->st.entries--;
            c->st.evictions++;
            aegis_free(c->mem, e);
        }
        e = prev;
    }
}

int ctl_artcache_new(const struct aegis_mem *mem, size_t max_bytes, struct ctl_artcache **pc)
{
    struct ctl_artcache *c = aegis_calloc(mem, 1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->mem = mem;
    c->max_bytes = max_bytes;
    *pc = c;
    return 0;
}

void ctl_artcache_del(struct ctl_artcache *c)
{
    if (!c)
        return;
    struct entry *e = c->head;
    while (e) {
        struct entry *next = e->next;
        aegis_free(c->mem, e);
        e = next;
    }
    aegis_free(c->mem, c);
}

const struct ctl_artchunk *ctl_artcache_get(struct ctl_artcache *c, const uint8_t sha256[32],
                                            uint32_t idx)
{
    for (struct entry *e = c->buckets[bucket(sha256, idx)]; e; e = e->hnext) {
        if (e->pub.idx == idx && memcmp(e->pub.sha256, sha256, 32) == 0) {
            e->refs++;
            lru_unlink(c, e);
            lru_front(c, e);
            c->st.hits++;
            return &e->pub;
        }
    }
    c->st.misses++;
    return NULL;
}

int ctl_artcache_put(struct ctl_artcache *c, const uint8_t sha256[32], uint32_t idx,
                     const uint8_t *data, size_t len, const struct ctl_artchunk **pout)
{
    for (struct entry *e = c->buckets[bucket(sha256, idx)]; e; e = e->hnext) {
        if (e->pub.idx == idx && memcmp(e->pub.sha256, sha256, 32) == 0) {
            e->refs++;
            *pout = &e->pub;
            return 0;
        }
    }
    struct entry *e = aegis_malloc(c->mem, sizeof(*e) + (len ? len : 1));
    if (!e)
        return -ENOMEM;
    memset(e, 0, sizeof(*e));
    memcpy(e->pub.sha256, sha256, 32);
    e->pub.idx = idx;
    e->pub.len = len;
    e->pub.data = (const uint8_t *)(e + 1);
    memcpy(e + 1, data, len);
    e->refs = 1;
    evict(c, len);
    if (c->st.bytes + len <= c->max_bytes) {
        size_t b = bucket(sha256, idx);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
        lru_front(c, e);
        e->cached = 1;
        c->st.bytes += len;
        c->st.entries++;
    }
    *pout = &e->pub;
    return 0;
}

void ctl_artcache_ref(struct ctl_artcache *c, const struct ctl_artchunk *ch)
{
    (void)c;
    ((struct entry *)(void *)ch)->refs++;
}

void ctl_artcache_release(struct ctl_artcache *c, const struct ctl_artchunk *ch)
{
    if (!ch)
        return;
    struct entry *e = (struct entry *)(void *)ch;
    if (--e->refs == 0 && !e->cached)
        aegis_free(c->mem, e);
}

void ctl_artcache_stats(const struct ctl_artcache *c, struct ctl_artcache_stats *st)
{
    *st = c->st;
}
