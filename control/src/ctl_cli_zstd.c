/*
 * aegisctl: zstd compression of artifacts before upload (the only file of
 * the CLI that uses zstd). The stored artifact is one zstd frame whose
 * content size is declared, so the agent can check it against the signed
 * uncompressed_size before it decompresses anything.
 */
#include "ctl_cli.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdlib.h>
#include <zstd.h>

/* Level 19 is slow; 9 is a fair trade for an operator waiting on an upload. */
#define ZSTD_LEVEL 9

static int get_size(FILE *in, uint64_t *psize)
{
    if (fseeko(in, 0, SEEK_END) != 0)
        return -errno;
    off_t end = ftello(in);
    if (end < 0)
        return -errno;
    if (fseeko(in, 0, SEEK_SET) != 0)
        return -errno;
    *psize = (uint64_t)end;
    return 0;
}

int ctl_zstd_file(FILE *in, FILE *out, uint64_t *pin_size)
{
    uint64_t size = 0;
    int rv = get_size(in, &size);
    if (rv != 0)
        return rv;
    if (size > CTL_ARTIFACT_MAX)
        return AEGIS_ERR_TOO_LARGE;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t inlen = ZSTD_CStreamInSize(), outlen = ZSTD_CStreamOutSize();
    uint8_t *ibuf = malloc(inlen), *obuf = malloc(outlen);
    if (!cc || !ibuf || !obuf) {
        rv = -ENOMEM;
        goto out;
    }
    if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, ZSTD_LEVEL)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cc, size))) {
        rv = AEGIS_ERR_INTERNAL;
        goto out;
    }
    uint64_t total = 0;
    for (;;) {
        size_t n = fread(ibuf, 1, inlen, in);
        if (n == 0 && ferror(in)) {
            rv = -EIO;
            goto out;
        }
        total += n;
        if (total > size) { /* the file grew while we read it */
            rv = AEGIS_ERR_STATE;
            goto out;
        }
        int last = n < inlen;
        ZSTD_inBuffer ib = {ibuf, n, 0};
        size_t remaining;
        do {
            ZSTD_outBuffer ob = {obuf, outlen, 0};
            remaining = ZSTD_compressStream2(cc, &ob, &ib, last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(remaining)) {
                rv = AEGIS_ERR_INTERNAL;
                goto out;
            }
            if (ob.pos && fwrite(obuf, 1, ob.pos, out) != ob.pos) {
                rv = -EIO;
                goto out;
            }
        } while (last ? remaining != 0 : ib.pos < ib.size);
        if (last)
            break;
    }
    if (total != size) {
        rv = AEGIS_ERR_STATE;
        goto out;
    }
    if (fflush(out) != 0 || fseeko(out, 0, SEEK_SET) != 0 || fseeko(in, 0, SEEK_SET) != 0) {
        rv = -errno;
        goto out;
    }
    *pin_size = size;
out:
    free(ibuf);
    free(obuf);
    ZSTD_freeCCtx(cc);
    return rv;
}
