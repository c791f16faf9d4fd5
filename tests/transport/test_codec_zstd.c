/*
 * Unit tests for transport/src/codec_zstd.c. The test itself uses zstd's
 * streaming compressor to produce frames that do not declare their size, as a
 * streaming peer would send them (our own compressor always declares it).
 */
#include "grpc_wire.h"

#include <aegis/err.h>
#include <aegis/mem.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

/* --- a byte-counting allocator ------------------------------------------- */

struct counting {
    struct aegis_mem mem;
    size_t cur, peak, total;
    unsigned long nalloc;
};

/* Size header in front of every block; 16 keeps malloc's alignment. */
#define HDR 16

static void *c_malloc(size_t size, void *ud)
{
    struct counting *c = ud;
    uint8_t *p = malloc(size + HDR);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof(size));
    c->cur += size;
    c->total += size;
    c->nalloc++;
    if (c->cur > c->peak)
        c->peak = c->cur;
    return p + HDR;
}

static void c_free(void *ptr, void *ud)
{
    struct counting *c = ud;
    if (!ptr)
        return;
    uint8_t *p = (uint8_t *)ptr - HDR;
    size_t size;
    memcpy(&size, p, sizeof(size));
    c->cur -= size;
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
    struct counting *c = ud;
    if (!ptr)
        return c_malloc(size, ud);
    uint8_t *old = (uint8_t *)ptr - HDR;
    size_t oldsize;
    memcpy(&oldsize, old, sizeof(oldsize));
    /* Count a move as old + new at once, as the worst case is. */
    void *n = c_malloc(size, ud);
    if (!n)
        return NULL;
    memcpy(n, ptr, oldsize < size ? oldsize : size);
    c_free(ptr, c);
    return n;
}

static void counting_init(struct counting *c)
{
    memset(c, 0, sizeof(*c));
    c->mem.user_data = c;
    c->mem.malloc = c_malloc;
    c->mem.free = c_free;
    c->mem.calloc = c_calloc;
    c->mem.realloc = c_realloc;
}

/* --- helpers ------------------------------------------------------------- */

static void fill(uint8_t *p, size_t len, int compressible)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = compressible ? (uint8_t)("abcdefgh"[x % 8]) : (uint8_t)x;
    }
}

/*
 * Compress `repeats` copies of chunk with zstd's streaming API, never telling
 * it the total, so the frame header carries no content size. windowlog 0
 * keeps the level's default.
 */
static uint8_t *stream_compress(const uint8_t *chunk, size_t chunklen, size_t repeats,
                                int windowlog, size_t *plen)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    assert_non_null(cc);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3)));
    if (windowlog)
        assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, windowlog)));
    size_t cap = 1 * MiB, len = 0;
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    for (size_t r = 0; r <= repeats; r++) {
        ZSTD_EndDirective end = r == repeats ? ZSTD_e_end : ZSTD_e_continue;
        ZSTD_inBuffer in = {chunk, r == repeats ? 0 : chunklen, 0};
        size_t left;
        unsigned guard = 0;
        do {
            assert_true(++guard < 100000);
            if (cap - len < 64 * KiB) {
                cap *= 2;
                out = realloc(out, cap);
                assert_non_null(out);
            }
            ZSTD_outBuffer ob = {out + len, cap - len, 0};
            left = ZSTD_compressStream2(cc, &ob, &in, end);
            assert_false(ZSTD_isError(left));
            len += ob.pos;
        } while (in.pos < in.size || (end == ZSTD_e_end && left != 0));
    }
    ZSTD_freeCCtx(cc);
    assert_true(ZSTD_getFrameContentSize(out, len) == ZSTD_CONTENTSIZE_UNKNOWN);
    *plen = len;
    return out;
}

/*
 * A frame written by hand (RFC 8878 §3.1.1): no content size, 128 KiB window,
 * then `nblocks` RLE blocks of 128 KiB zeros, 4 bytes each. 8192 blocks make
 * 1 GiB of output from 32 KiB of input, independent of zstd's compressor.
 */
static uint8_t *rle_bomb(size_t nblocks, size_t *plen)
{
    size_t len = 6 + 4 * nblocks;
    uint8_t *p = malloc(len);
    assert_non_null(p);
    const uint8_t hdr[6] = {0x28,          0xB5, 0x2F, 0xFD, /* magic, little-endian */
                            0x00,            /* no FCS, no checksum, not single segment */
                            (17 - 10) << 3}; /* window 2^17 */
    memcpy(p, hdr, sizeof(hdr));
    for (size_t i = 0; i < nblocks; i++) {
        /* Block header: last bit, type 1 (RLE), size 131072 (21 bits). */
        uint32_t bh = (uint32_t)(i == nblocks - 1) | 1u << 1 | (uint32_t)(128 * KiB) << 3;
        uint8_t *b = p + 6 + 4 * i;
        b[0] = (uint8_t)bh;
        b[1] = (uint8_t)(bh >> 8);
        b[2] = (uint8_t)(bh >> 16);
        b[3] = 0; /* the repeated byte */
    }
    *plen = len;
    return p;
}

/* --- tests --------------------------------------------------------------- */

static void round_trip_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 64 * KiB, 4 * MiB};
    struct counting c;
    counting_init(&c);
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(&c.mem, 0, &z), 0);
    for (int compressible = 0; compressible <= 1; compressible++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i];
            uint8_t *in = malloc(n ? n : 1);
            assert_non_null(in);
            fill(in, n, compressible);
            uint8_t *comp = NULL, *out = NULL;
            size_t clen = 0, olen = 99;
            assert_int_equal(grpc_zstd_compress(z, in, n, &comp, &clen), 0);
            assert_non_null(comp);
            if (compressible && n >= 64 * KiB)
                assert_true(clen < n / 2);
            /* Our frames declare their size: the receiver can pre-check it. */
            assert_true(ZSTD_getFrameContentSize(comp, clen) == n);
            assert_int_equal(grpc_zstd_decompress(z, comp, clen, 4 * MiB, &out, &olen), 0);
            assert_int_equal(olen, n);
            assert_non_null(out);
            assert_memory_equal(out, in, n);
            aegis_free(&c.mem, out);
            aegis_free(&c.mem, comp);
            free(in);
        }
    }
    grpc_zstd_del(z);
    grpc_zstd_del(NULL);
    assert_int_equal(c.cur, 0);
}

static void undeclared_size_frames(void **state)
{
    (void)state;
    struct counting c;
    counting_init(&c);
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(&c.mem, 0, &z), 0);
    /* Sizes that need zero, one and several buffer growths, and multi-frame
     * input (two undeclared frames back to back). */
    static const size_t sizes[] = {1, 1000, 300 * KiB, 3 * MiB};
    uint8_t *in = malloc(3 * MiB);
    assert_non_null(in);
    fill(in, 3 * MiB, 1);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t clen;
        uint8_t *comp = stream_compress(in, sizes[i], 1, 0, &clen);
        uint8_t *out = NULL;
        size_t olen = 0;
        assert_int_equal(grpc_zstd_decompress(z, comp, clen, 4 * MiB, &out, &olen), 0);
        assert_int_equal(olen, sizes[i]);
        assert_memory_equal(out, in, olen);
        aegis_free(&c.mem, out);
        /* Exactly at the cap is fine; one byte less is too large. */
        assert_int_equal(grpc_zstd_decompress(z, comp, clen, sizes[i], &out, &olen), 0);
        assert_int_equal(olen, sizes[i]);
        aegis_free(&c.mem, out);
        assert_int_equal(grpc_zstd_decompress(z, comp, clen, sizes[i] - 1, &out, &olen),
                         AEGIS_ERR_TOO_LARGE);

        uint8_t *two = malloc(2 * clen);
        assert_non_null(two);
        memcpy(two, comp, clen);
        memcpy(two + clen, comp, clen);
        assert_int_equal(grpc_zstd_decompress(z, two, 2 * clen, 8 * MiB, &out, &olen), 0);
        assert_int_equal(olen, 2 * sizes[i]);
        assert_memory_equal(out + sizes[i], in, sizes[i]);
        aegis_free(&c.mem, out);
        free(two);
        free(comp);
    }
    free(in);
    grpc_zstd_del(z);
    assert_int_equal(c.cur, 0);
}

static void corrupt_input(void **state)
{
    (void)state;
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(NULL, 3, &z), 0);
    uint8_t *out = NULL;
    size_t olen = 0;
    static const uint8_t garbage[] = "this is not a zstd frame at all";
    assert_int_equal(grpc_zstd_decompress(z, garbage, sizeof(garbage), MiB, &out, &olen),
                     AEGIS_ERR_DECOMPRESS);
    assert_int_equal(grpc_zstd_decompress(z, garbage, 0, MiB, &out, &olen), AEGIS_ERR_DECOMPRESS);

    uint8_t *in = malloc(64 * KiB);
    assert_non_null(in);
    fill(in, 64 * KiB, 1);
    uint8_t *comp = NULL;
    size_t clen = 0;
    assert_int_equal(grpc_zstd_compress(z, in, 64 * KiB, &comp, &clen), 0);
    /* Truncated at every length: never succeeds, never crashes. */
    for (size_t cut = 1; cut < clen; cut += 1 + cut / 8)
        assert_int_equal(grpc_zstd_decompress(z, comp, cut, MiB, &out, &olen),
                         AEGIS_ERR_DECOMPRESS);
    /* A flipped bit after the frame header is caught (the frame carries a
     * checksum, so even a "valid-looking" change cannot pass). */
    for (size_t pos = 16; pos < clen; pos += 1 + clen / 64) {
        comp[pos] ^= 0x10;
        assert_int_equal(grpc_zstd_decompress(z, comp, clen, MiB, &out, &olen),
                         AEGIS_ERR_DECOMPRESS);
        comp[pos] ^= 0x10;
    }
    /* Trailing garbage after a good frame. */
    uint8_t *longer = malloc(clen + 3);
    assert_non_null(longer);
    memcpy(longer, comp, clen);
    memcpy(longer + clen, "xyz", 3);
    assert_int_equal(grpc_zstd_decompress(z, longer, clen + 3, MiB, &out, &olen),
                     AEGIS_ERR_DECOMPRESS);
    /* And the codec still works after all those failures. */
    assert_int_equal(grpc_zstd_decompress(z, comp, clen, MiB, &out, &olen), 0);
    assert_int_equal(olen, 64 * KiB);
    assert_memory_equal(out, in, olen);
    aegis_free(NULL, out);
    free(longer);
    aegis_free(NULL, comp);
    free(in);
    grpc_zstd_del(z);
}

static void declared_size_over_cap_rejected_before_allocating(void **state)
{
    (void)state;
    struct counting c;
    counting_init(&c);
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(&c.mem, 0, &z), 0);
    uint8_t *out = NULL;
    size_t olen = 0;

    /* A hand-made header declaring 2^40 bytes, with no data behind it. */
    const uint8_t huge[] = {0x28, 0xB5, 0x2F, 0xFD, 0xE0, /* FCS 8 bytes, single segment */
                            0,    0,    0,    0,    0,    1, 0, 0};
    unsigned long before = c.nalloc;
    assert_int_equal(grpc_zstd_decompress(z, huge, sizeof(huge), MiB, &out, &olen),
                     AEGIS_ERR_TOO_LARGE);
    assert_int_equal(c.nalloc, before); /* not even the context */

    /* A real 2 MiB frame against a 1 MiB cap. */
    uint8_t *in = calloc(1, 2 * MiB);
    assert_non_null(in);
    uint8_t *comp = NULL;
    size_t clen = 0;
    assert_int_equal(grpc_zstd_compress(z, in, 2 * MiB, &comp, &clen), 0);
    before = c.nalloc;
    assert_int_equal(grpc_zstd_decompress(z, comp, clen, MiB, &out, &olen), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(c.nalloc, before);
    assert_int_equal(grpc_zstd_decompress(z, comp, clen, 2 * MiB, &out, &olen), 0);
    assert_int_equal(olen, 2 * MiB);
    aegis_free(&c.mem, out);

    /* Two declared frames whose sum, not each, is over the cap. */
    uint8_t *small = NULL;
    size_t slen = 0;
    assert_int_equal(grpc_zstd_compress(z, in, 600 * KiB, &small, &slen), 0);
    uint8_t *two = malloc(2 * slen);
    assert_non_null(two);
    memcpy(two, small, slen);
    memcpy(two + slen, small, slen);
    before = c.nalloc;
    assert_int_equal(grpc_zstd_decompress(z, two, 2 * slen, MiB, &out, &olen), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(c.nalloc, before);
    free(two);
    aegis_free(&c.mem, small);
    aegis_free(&c.mem, comp);
    free(in);
    grpc_zstd_del(z);
    assert_int_equal(c.cur, 0);
}

/*
 * What the cap allows beyond the output itself: zstd's decompression context
 * (~95 KiB in 1.5) and its input buffer for one compressed block (128 KiB).
 */
#define BOMB_CAP MiB
#define BOMB_OVERHEAD (384 * KiB)

static void check_bomb(const uint8_t *bomb, size_t blen)
{
    struct counting c;
    counting_init(&c);
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(&c.mem, 0, &z), 0);
    uint8_t *out = NULL;
    size_t olen = 0;
    for (int round = 0; round < 2; round++) { /* cold and warm context */
        c.peak = c.cur;
        size_t base = c.cur;
        assert_int_equal(grpc_zstd_decompress(z, bomb, blen, BOMB_CAP, &out, &olen),
                         AEGIS_ERR_TOO_LARGE);
        print_message("bomb of %zu bytes: peak %zu bytes above %zu\n", blen, c.peak - base, base);
        assert_true(c.peak < BOMB_CAP + BOMB_OVERHEAD);
    }
    grpc_zstd_del(z);
    assert_int_equal(c.cur, 0);
}

static void bomb_streaming_compressed(void **state)
{
    (void)state;
    uint8_t *zeros = calloc(1, MiB);
    assert_non_null(zeros);
    size_t blen;
    /* 1 GiB of zeros with the level's default window (2 MiB, larger than
     * the cap: the window must not cost a buffer of its own). */
    uint8_t *bomb = stream_compress(zeros, MiB, 1024, 0, &blen);
    assert_true(blen < 256 * KiB);
    check_bomb(bomb, blen);
    free(bomb);
    /* Same with a small window. */
    bomb = stream_compress(zeros, MiB, 1024, 17, &blen);
    check_bomb(bomb, blen);
    free(bomb);
    free(zeros);
}

static void bomb_hand_made_rle(void **state)
{
    (void)state;
    size_t blen;
    uint8_t *bomb = rle_bomb(8192, &blen);
    check_bomb(bomb, blen);
    free(bomb);
    /* The same construction within the cap decodes to zeros. */
    bomb = rle_bomb(8, &blen);
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(NULL, 0, &z), 0);
    uint8_t *out = NULL;
    size_t olen = 0;
    assert_int_equal(grpc_zstd_decompress(z, bomb, blen, MiB, &out, &olen), 0);
    assert_int_equal(olen, MiB);
    for (size_t i = 0; i < olen; i += 4093)
        assert_int_equal(out[i], 0);
    aegis_free(NULL, out);
    grpc_zstd_del(z);
    free(bomb);
}

static void bad_arguments(void **state)
{
    (void)state;
    struct grpc_zstd *z = NULL;
    assert_int_equal(grpc_zstd_new(NULL, 1000, &z), -EINVAL);
    assert_null(z);
    assert_int_equal(grpc_zstd_new(NULL, 0, NULL), -EINVAL);
    assert_int_equal(grpc_zstd_new(NULL, -1, &z), 0); /* fast levels are fine */
    uint8_t *out;
    size_t olen;
    assert_int_equal(grpc_zstd_compress(z, NULL, 5, &out, &olen), -EINVAL);
    assert_int_equal(grpc_zstd_decompress(z, NULL, 5, MiB, &out, &olen), -EINVAL);
    assert_int_equal(grpc_zstd_decompress(NULL, (const uint8_t *)"x", 1, MiB, &out, &olen),
                     -EINVAL);
    grpc_zstd_del(z);
}

/* Fail the Nth allocation for every N over compress + both decompression
 * paths: every failure is a clean -ENOMEM and nothing leaks. */
static void allocation_failure_sweep(void **state)
{
    (void)state;
    size_t n = 200 * KiB;
    uint8_t *in = malloc(n);
    assert_non_null(in);
    fill(in, n, 1);
    size_t ulen;
    uint8_t *undeclared = stream_compress(in, n, 1, 0, &ulen);
    int completed = 0;
    for (unsigned long k = 1; k < 500 && !completed; k++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, k, 0);
        struct grpc_zstd *z = NULL;
        uint8_t *comp = NULL, *out = NULL, *out2 = NULL;
        size_t clen = 0, olen = 0, olen2 = 0;
        int rv = grpc_zstd_new(&fm.mem, 0, &z);
        if (rv == 0)
            rv = grpc_zstd_compress(z, in, n, &comp, &clen);
        if (rv == 0)
            rv = grpc_zstd_decompress(z, comp, clen, MiB, &out, &olen);
        if (rv == 0)
            rv = grpc_zstd_decompress(z, undeclared, ulen, MiB, &out2, &olen2);
        if (fm.nfailed == 0) {
            assert_int_equal(rv, 0);
            assert_int_equal(olen, n);
            assert_memory_equal(out, in, n);
            assert_int_equal(olen2, n);
            assert_memory_equal(out2, in, n);
            completed = 1;
        } else if (rv == 0) {
            /* Only the optional shrink of an output buffer may fail
             * without failing the call. */
            assert_int_equal(olen2, n);
            assert_memory_equal(out2, in, n);
        } else {
            assert_int_equal(rv, -ENOMEM);
        }
        aegis_free(&fm.mem, out2);
        aegis_free(&fm.mem, out);
        aegis_free(&fm.mem, comp);
        grpc_zstd_del(z);
        assert_int_equal(fm.live, 0);
    }
    assert_true(completed);
    free(undeclared);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_sizes),
        cmocka_unit_test(undeclared_size_frames),
        cmocka_unit_test(corrupt_input),
        cmocka_unit_test(declared_size_over_cap_rejected_before_allocating),
        cmocka_unit_test(bomb_streaming_compressed),
        cmocka_unit_test(bomb_hand_made_rle),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(allocation_failure_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
