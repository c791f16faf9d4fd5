/*
 * Injectable allocator.
 *
 * The layout matches ngtcp2_mem and nghttp3_mem (user_data first, then
 * malloc/free/calloc/realloc taking user_data last), so the transport can hand
 * the same allocator to both libraries without a shim. Every constructor in
 * Aegis takes a `const struct aegis_mem *`; NULL means aegis_mem_default().
 * Tests fail the Nth allocation through it (see aegis_failmem).
 */
#ifndef AEGIS_MEM_H
#define AEGIS_MEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct aegis_mem {
    void *user_data;
    void *(*malloc)(size_t size, void *user_data);
    void (*free)(void *ptr, void *user_data);
    void *(*calloc)(size_t nmemb, size_t size, void *user_data);
    void *(*realloc)(void *ptr, size_t size, void *user_data);
};

/* aegis_mem_default returns the process allocator (libc). Never NULL. */
const struct aegis_mem *aegis_mem_default(void);

/* Convenience wrappers; mem may be NULL (default). free accepts NULL ptr. */
void *aegis_malloc(const struct aegis_mem *mem, size_t size);
void *aegis_calloc(const struct aegis_mem *mem, size_t nmemb, size_t size);
void *aegis_realloc(const struct aegis_mem *mem, void *ptr, size_t size);
void aegis_free(const struct aegis_mem *mem, void *ptr);
/* aegis_memdup copies len bytes into a new allocation; NULL on failure. */
void *aegis_memdup(const struct aegis_mem *mem, const void *src, size_t len);
/* aegis_strdup copies a NUL-terminated string; NULL on failure. */
char *aegis_strdup(const struct aegis_mem *mem, const char *s);

/*
 * aegis_failmem: a counting allocator for tests. Allocation number
 * `fail_at` (1-based; 0 = never) and, if `fail_after` is set, every later one
 * returns NULL. It tracks live allocations so a test can assert no leak.
 * Wraps `base` (NULL = default).
 */
struct aegis_failmem {
    struct aegis_mem mem; /* hand &fm.mem to the code under test */
    const struct aegis_mem *base;
    unsigned long fail_at;
    int fail_after;
    unsigned long nalloc;  /* allocation attempts so far */
    unsigned long nfailed; /* attempts that returned NULL */
    long live;             /* successful allocations not yet freed */
};

/* aegis_failmem_init prepares fm; it allocates nothing. */
void aegis_failmem_init(struct aegis_failmem *fm, const struct aegis_mem *base,
                        unsigned long fail_at, int fail_after);

#ifdef __cplusplus
}
#endif
#endif
