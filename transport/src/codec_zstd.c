/*
 * Per-message zstd codec for grpc-encoding: zstd. The only file that includes
 * <zstd.h>; zstd's errors become AEGIS_ERR_* / -ENOMEM here.
 *
 * Decompression never allocates more than the caller's cap (plus zstd's fixed
 * context and one compressed-block input buffer), whatever the frame claims:
 * - a frame that declares its content size is checked against the cap before
 *   anything is allocated, then decoded in one shot into an exact buffer;
 * - a frame without a declared size (streaming compressors) is streamed with
 *   ZSTD_decompressStream into our own output buffer, which zstd uses as its
 *   window (ZSTD_d_stableOutBuffer) so no separate window-sized buffer exists.
 *   zstd cannot follow a buffer that moves, so when it runs out of room we
 *   drop the buffer, take a 4x larger one (never above the cap) and decode
 *   again from the start. Re-decoding costs at most ~1/3 extra CPU for
 *   undeclared frames and keeps the peak at one buffer, not buffer + window.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem, ZSTD_d_stableOutBuffer */
#include "grpc_wire.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdint.h>
#include <zstd.h>
#include <zstd_errors.h>

/* First output buffer for a frame of unknown size: a guess from typical
 * protobuf compression ratios, small enough to be harmless when wrong. */
#define GUESS_RATIO 8
#define GUESS_MIN (16 * 1024)
/* Growth factor when the guess was short (see the file comment). */
#define GROW_FACTOR 4
/* An output buffer with at least this much slack is shrunk before it is
 * handed to the caller, who may keep it while the application works. */
#define SHRINK_SLACK (4 * 1024)

struct grpc_zstd {
    const struct aegis_mem *mem;
    int level;
    ZSTD_CCtx *cctx; /* created on first use: an idle connection pays nothing */
    ZSTD_DCtx *dctx;
};

static void *zalloc(void *opaque, size_t size)
{
    struct grpc_zstd *z = opaque;
    return aegis_malloc(z->mem, size);
}

static void zfree(void *opaque, void *ptr)
{
    struct grpc_zstd *z = opaque;
    aegis_free(z->mem, ptr);
}

static ZSTD_customMem custom_mem(struct grpc_zstd *z)
{
    ZSTD_customMem cm = {zalloc, zfree, z};
    return cm;
}

/* Map a zstd error from a decompression call. */
static int derr(size_t r)
{
    switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_memory_allocation:
        return -ENOMEM;
    case ZSTD_error_frameParameter_windowTooLarge:
        return AEGIS_ERR_TOO_LARGE;
    default:
        return AEGIS_ERR_DECOMPRESS;
    }
}

int grpc_zstd_new(const struct aegis_mem *mem, int level, struct grpc_zstd **pz)
{
    if (!pz)
        return -EINVAL;
    if (level == 0)
        level = ZSTD_CLEVEL_DEFAULT;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return -EINVAL;
    struct grpc_zstd *z = aegis_calloc(mem, 1, sizeof(*z));
    if (!z)
        return -ENOMEM;
    z->mem = mem;
    z->level = level;
    *pz = z;
    return 0;
}

void grpc_zstd_del(struct grpc_zstd *z)
{
    if (!z)
        return;
    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    aegis_free(z->mem, z);
}

static int ensure_cctx(struct grpc_zstd *z)
{
    if (z->cctx)
        return 0;
    ZSTD_CCtx *c = ZSTD_createCCtx_advanced(custom_mem(z));
    if (!c)
        return -ENOMEM;
    /* The 4-byte checksum lets a receiver tell a damaged message from a
     * merely strange one; XXH64 costs little next to compression. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, z->level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1))) {
        ZSTD_freeCCtx(c);
        return AEGIS_ERR_INTERNAL;
    }
    z->cctx = c;
    return 0;
}

static int ensure_dctx(struct grpc_zstd *z)
{
    if (z->dctx)
        return 0;
    ZSTD_DCtx *d = ZSTD_createDCtx_advanced(custom_mem(z));
    if (!d)
        return -ENOMEM;
    /* With a stable output buffer the window lives in our capped buffer, so
     * a large declared window costs nothing extra: allow every legal one. */
    if (ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_stableOutBuffer, 1)) ||
        ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, ZSTD_WINDOWLOG_MAX))) {
        ZSTD_freeDCtx(d);
        return AEGIS_ERR_INTERNAL;
    }
    z->dctx = d;
    return 0;
}

/*
 * Hand buf (cap bytes, n used) to the caller, shrinking a large slack. A
 * shrinking realloc may move the data, briefly holding cap + n bytes; it is
 * skipped when that could exceed `limit`, so the decompression cap holds even
 * then (the caller frees the message soon anyway).
 */
static void finish(struct grpc_zstd *z, uint8_t *buf, size_t cap, size_t n, size_t limit,
                   uint8_t **pout, size_t *poutlen)
{
    if (cap - n >= SHRINK_SLACK && n <= limit - cap) {
        uint8_t *p = aegis_realloc(z->mem, buf, n ? n : 1);
        if (p) /* a failed shrink is harmless: keep the bigger buffer */
            buf = p;
    }
    *pout = buf;
    *poutlen = n;
}

int grpc_zstd_compress(struct grpc_zstd *z, const uint8_t *in, size_t len, uint8_t **pout,
                       size_t *poutlen)
{
    if (!z || (!in && len) || !pout || !poutlen)
        return -EINVAL;
    size_t bound = ZSTD_compressBound(len);
    if (ZSTD_isError(bound) || bound == 0)
        return AEGIS_ERR_TOO_LARGE;
    int rv = ensure_cctx(z);
    if (rv != 0)
        return rv;
    uint8_t *buf = aegis_malloc(z->mem, bound);
    if (!buf)
        return -ENOMEM;
    /* ZSTD_compress2 writes the content size into the frame header, which
     * lets the receiver check it against its cap before allocating. */
    size_t r = ZSTD_compress2(z->cctx, buf, bound, in ? in : (const uint8_t *)"", len);
    if (ZSTD_isError(r)) {
        aegis_free(z->mem, buf);
        ZSTD_CCtx_reset(z->cctx, ZSTD_reset_session_only);
        return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -ENOMEM : AEGIS_ERR_INTERNAL;
    }
    finish(z, buf, bound, r, SIZE_MAX, pout, poutlen);
    return 0;
}

/*
 * One streaming pass into buf[0..cap). Returns 0 with *pn set when every
 * frame in the input decoded completely, 1 when the output is too small,
 * or a negative error.
 */
static int stream_pass(ZSTD_DCtx *d, const uint8_t *in, size_t len, uint8_t *buf, size_t cap,
                       size_t *pn)
{
    ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
    ZSTD_inBuffer ib = {in, len, 0};
    ZSTD_outBuffer ob = {buf, cap, 0};
    for (;;) {
        size_t in_before = ib.pos, out_before = ob.pos;
        size_t r = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(r)) {
            ZSTD_ErrorCode e = ZSTD_getErrorCode(r);
            if (e == ZSTD_error_dstSize_tooSmall || e == ZSTD_error_noForwardProgress_destFull)
                return 1;
            return derr(r);
        }
        if (r == 0 && ib.pos == ib.size) {
            *pn = ob.pos;
            return 0;
        }
        /* Each call either consumes input or produces output; when neither
         * happens, or the input ran out mid-frame, decide why and stop. */
        if (ib.pos == ib.size || (ib.pos == in_before && ob.pos == out_before))
            return ob.pos == ob.size ? 1 : AEGIS_ERR_DECOMPRESS;
    }
}

static int decompress_unknown(struct grpc_zstd *z, const uint8_t *in, size_t len, size_t max_out,
                              uint8_t **pout, size_t *poutlen)
{
    size_t cap = len <= max_out / GUESS_RATIO ? len * GUESS_RATIO : max_out;
    if (cap < GUESS_MIN)
        cap = GUESS_MIN < max_out ? GUESS_MIN : max_out;
    for (;;) {
        /* max_out may be 0: a 1-byte allocation still gives zstd a valid
         * pointer, and cap 0 tells it there is no room. */
        uint8_t *buf = aegis_malloc(z->mem, cap ? cap : 1);
        if (!buf)
            return -ENOMEM;
        size_t n = 0;
        int rv = stream_pass(z->dctx, in, len, buf, cap, &n);
        if (rv == 0) {
            finish(z, buf, cap, n, max_out, pout, poutlen);
            return 0;
        }
        aegis_free(z->mem, buf);
        if (rv < 0)
            return rv;
        if (cap == max_out)
            return AEGIS_ERR_TOO_LARGE;
        cap = cap <= max_out / GROW_FACTOR ? cap * GROW_FACTOR : max_out;
    }
}

int grpc_zstd_decompress(struct grpc_zstd *z, const uint8_t *in, size_t len, size_t max_out,
                         uint8_t **pout, size_t *poutlen)
{
    if (!z || (!in && len) || !pout || !poutlen)
        return -EINVAL;
    if (len == 0)
        return AEGIS_ERR_DECOMPRESS; /* not even a frame header */

    /* Reject a first frame that declares too much before touching memory. */
    unsigned long long first = ZSTD_getFrameContentSize(in, len);
    if (first == ZSTD_CONTENTSIZE_ERROR)
        return AEGIS_ERR_DECOMPRESS;
    if (first != ZSTD_CONTENTSIZE_UNKNOWN && first > max_out)
        return AEGIS_ERR_TOO_LARGE;
    /* The input may hold several frames (RFC 8878 §3.1): sum them all. */
    unsigned long long total = ZSTD_findDecompressedSize(in, len);
    if (total == ZSTD_CONTENTSIZE_ERROR)
        return AEGIS_ERR_DECOMPRESS;
    if (total != ZSTD_CONTENTSIZE_UNKNOWN && total > max_out)
        return AEGIS_ERR_TOO_LARGE;

    int rv = ensure_dctx(z);
    if (rv != 0)
        return rv;
    if (total == ZSTD_CONTENTSIZE_UNKNOWN)
        return decompress_unknown(z, in, len, max_out, pout, poutlen);

    size_t n = (size_t)total;
    uint8_t *buf = aegis_malloc(z->mem, n ? n : 1);
    if (!buf)
        return -ENOMEM;
    size_t r = ZSTD_decompressDCtx(z->dctx, buf, n, in, len);
    if (ZSTD_isError(r) || r != n) {
        aegis_free(z->mem, buf);
        return ZSTD_isError(r) ? derr(r) : AEGIS_ERR_DECOMPRESS;
    }
    *pout = buf;
    *poutlen = n;
    return 0;
}
