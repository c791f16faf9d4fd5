#include <aegis/mem.h>

#include <stdlib.h>
#include <string.h>

static void *std_malloc(size_t size, void *ud)
{
    (void)ud;
    return malloc(size);
}

static void std_free(void *ptr, void *ud)
{
    (void)ud;
    free(ptr);
}

static void *std_calloc(size_t nmemb, size_t size, void *ud)
{
    (void)ud;
    return calloc(nmemb, size);
}

static void *std_realloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    return realloc(ptr, size);
}

static const struct aegis_mem std_mem = {NULL, std_malloc, std_free, std_calloc, std_realloc};

const struct aegis_mem *aegis_mem_default(void)
{
    return &std_mem;
}

void *aegis_malloc(const struct aegis_mem *mem, size_t size)
{
    if (!mem)
        mem = &std_mem;
    return mem->malloc(size, mem->user_data);
}

void *aegis_calloc(const struct aegis_mem *mem, size_t nmemb, size_t size)
{
    if (!mem)
        mem = &std_mem;
    return mem->calloc(nmemb, size, mem->user_data);
}

void *aegis_realloc(const struct aegis_mem *mem, void *ptr, size_t size)
{
    if (!mem)
        mem = &std_mem;
    return mem->realloc(ptr, size, mem->user_data);
}

void aegis_free(const struct aegis_mem *mem, void *ptr)
{
    if (!ptr)
        return;
    if (!mem)
        mem = &std_mem;
    mem->free(ptr, mem->user_data);
}

void *aegis_memdup(const struct aegis_mem *mem, const void *src, size_t len)
{
    void *p = aegis_malloc(mem, len ? len : 1);
    if (p && len)
        memcpy(p, src, len);
    return p;
}

char *aegis_strdup(const struct aegis_mem *mem, const char *s)
{
    return aegis_memdup(mem, s, strlen(s) + 1);
}

/* --- failing allocator for tests ----------------------------------------- */

static int fm_should_fail(struct aegis_failmem *fm)
{
    fm->nalloc++;
    if (fm->fail_at == 0)
        return 0;
    if (fm->nalloc == fm->fail_at || (fm->fail_after && fm->nalloc > fm->fail_at)) {
        fm->nfailed++;
        return 1;
    }
    return 0;
}

static void *fm_malloc(size_t size, void *ud)
{
    struct aegis_failmem *fm = ud;
    if (fm_should_fail(fm))
        return NULL;
    void *p = aegis_malloc(fm->base, size);
    if (p)
        fm->live++;
    return p;
}

static void fm_free(void *ptr, void *ud)
{
    struct aegis_failmem *fm = ud;
    if (!ptr)
        return;
    fm->live--;
    aegis_free(fm->base, ptr);
}

static void *fm_calloc(size_t nmemb, size_t size, void *ud)
{
    struct aegis_failmem *fm = ud;
    if (fm_should_fail(fm))
        return NULL;
    void *p = aegis_calloc(fm->base, nmemb, size);
    if (p)
        fm->live++;
    return p;
}

static void *fm_realloc(void *ptr, size_t size, void *ud)
{
    struct aegis_failmem *fm = ud;
    if (fm_should_fail(fm))
        return NULL;
    void *p = aegis_realloc(fm->base, ptr, size);
    if (p && !ptr)
        fm->live++;
    return p;
}

void aegis_failmem_init(struct aegis_failmem *fm, const struct aegis_mem *base,
                        unsigned long fail_at, int fail_after)
{
    memset(fm, 0, sizeof(*fm));
    fm->base = base ? base : &std_mem;
    fm->fail_at = fail_at;
    fm->fail_after = fail_after;
    fm->mem.user_data = fm;
    fm->mem.malloc = fm_malloc;
    fm->mem.free = fm_free;
    fm->mem.calloc = fm_calloc;
    fm->mem.realloc = fm_realloc;
}
