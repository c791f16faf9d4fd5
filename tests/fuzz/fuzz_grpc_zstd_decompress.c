/*
 * Fuzz target for the zstd message codec's decompressor with a 1 MiB cap.
 * Checks that output never exceeds the cap, that the allocator's peak stays
 * within cap + zstd's fixed overhead whatever the frame claims, and that what
 * decodes re-compresses and decodes to the same bytes.
 */
#include "grpc_wire.h"

#include <aegis/err.h>
#include <aegis/mem.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

#define CAP (1u << 20)
/* zstd's decompression context plus one compressed-block input buffer. */
#define OVERHEAD (384u << 10)
#define HDR 16

static size_t cur, peak;

static void *c_malloc(size_t size, void *ud)
{
    (void)ud;
    uint8_t *p = malloc(size + HDR);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof(size));
    cur += size;
    if (cur > peak)
        peak = cur;
    return p + HDR;
}

static void c_free(void *ptr, void *ud)
{
    (void)ud;
    if (!ptr)
        return;
    uint8_t *p = (uint8_t *)ptr - HDR;
    size_t size;
    memcpy(&size, p, sizeof(size));
    cur -= size;
    free(p);
}

static void *c_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = c_malloc(n * size, ud);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *c_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr)
        return c_malloc(size, ud);
    size_t old;
    memcpy(&old, (uint8_t *)ptr - HDR, sizeof(old));
    void *n = c_malloc(size, ud);
    if (!n)
        return NULL;
    memcpy(n, ptr, old < size ? old : size);
    c_free(ptr, ud);
    return n;
}

static const struct aegis_mem counting = {NULL, c_malloc, c_free, c_calloc, c_realloc};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct grpc_zstd *z = NULL;
    CHECK(grpc_zstd_new(&counting, 1, &z) == 0);
    uint8_t *out = NULL;
    size_t olen = 0;
    peak = cur;
    size_t base = cur;
    int rv = grpc_zstd_decompress(z, data, size, CAP, &out, &olen);
    CHECK(peak - base < CAP + OVERHEAD);
    if (rv == 0) {
        CHECK(olen <= CAP && out != NULL);
        uint8_t *comp = NULL, *back = NULL;
        size_t clen = 0, blen = 0;
        CHECK(grpc_zstd_compress(z, out, olen, &comp, &clen) == 0);
        CHECK(grpc_zstd_decompress(z, comp, clen, CAP, &back, &blen) == 0);
        CHECK(blen == olen && memcmp(back, out, olen) == 0);
        aegis_free(&counting, back);
        aegis_free(&counting, comp);
        aegis_free(&counting, out);
    } else {
        CHECK(rv == AEGIS_ERR_DECOMPRESS || rv == AEGIS_ERR_TOO_LARGE);
    }
    grpc_zstd_del(z);
    CHECK(cur == 0);
    return 0;
}
