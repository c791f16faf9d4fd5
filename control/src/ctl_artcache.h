/*
 * ctl_artcache: artifact chunks kept in memory, least recently used dropped first.
 *
 * A 10 MiB artifact assigned to 1,000 agents is 160,000 chunk reads; from PostgreSQL each is
 * a query, a copy out of the database and a copy into the control. Cached, PostgreSQL is read
 * once per chunk and every stream sends from the same bytes.
 *
 * Entries are reference counted: a stream holds the chunks it is sending (ctl_artcache_get /
 * _put return a reference, ctl_artcache_release drops it), and eviction only frees entries
 * nobody holds. The budget counts every entry's bytes; when it is exhausted by held entries,
 * _put still returns a reference to a private, uncached copy (freed at its last release), so
 * a cache that is too small slows streams down instead of failing them. Pure memory: no I/O,
 * no clock, not thread-safe.
 */
#ifndef CTL_ARTCACHE_H
#define CTL_ARTCACHE_H

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

/* Enough for a few hot artifacts of the size operators push to a fleet (tens of MiB);
 * configurable (--artifact-cache-mib), 0 turns the cache off. */
#define CTL_ARTCACHE_DEFAULT_BYTES (64u * 1024u * 1024u)

struct ctl_artcache;

struct ctl_artchunk {
    uint8_t sha256[32];
    uint32_t idx;
    size_t len;
    const uint8_t *data; /* len bytes, valid while the reference is held */
};

/* ctl_artcache_new: max_bytes of chunk data (0 = cache nothing). Errors: -ENOMEM. */
int ctl_artcache_new(const struct aegis_mem *mem, size_t max_bytes, struct ctl_artcache **pc);

/* ctl_artcache_del frees every entry; references still held become invalid. Accepts NULL. */
void ctl_artcache_del(struct ctl_artcache *c);

/* ctl_artcache_get returns a reference to chunk idx of artifact sha256, or NULL. */
const struct ctl_artchunk *ctl_artcache_get(struct ctl_artcache *c, const uint8_t sha256[32],
                                            uint32_t idx);

/* ctl_artcache_put copies data in (replacing nothing: an entry already cached is returned
 * instead) and returns a reference in *pout. Errors: -ENOMEM. */
int ctl_artcache_put(struct ctl_artcache *c, const uint8_t sha256[32], uint32_t idx,
                     const uint8_t *data, size_t len, const struct ctl_artchunk **pout);

/* ctl_artcache_ref takes one more reference to a chunk already held. */
void ctl_artcache_ref(struct ctl_artcache *c, const struct ctl_artchunk *ch);

/* ctl_artcache_release drops a reference (NULL is ignored). */
void ctl_artcache_release(struct ctl_artcache *c, const struct ctl_artchunk *ch);

struct ctl_artcache_stats {
    uint64_t hits, misses, evictions;
    size_t bytes, entries;
};
void ctl_artcache_stats(const struct ctl_artcache *c, struct ctl_artcache_stats *st);

#endif
