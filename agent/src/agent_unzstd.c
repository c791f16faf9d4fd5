#include "agent_unzstd.h"
#include "agent_io.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static ssize_t read_some(int fd, void *buf, size_t len)
{
    ssize_t n;
    do {
        n = read(fd, buf, len);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int agent_copy_fd(int ifd, int ofd, uint64_t n, char *reason, size_t reasonlen)
{
    uint8_t buf[16384];
    while (n > 0) {
        ssize_t got = read_some(ifd, buf, n < sizeof(buf) ? (size_t)n : sizeof(buf));
        if (got < 0)
            return agent_errmsg(reason, reasonlen, (int)got, "read failed: %s",
                                strerror((int)-got));
        if (got == 0)
            return agent_errmsg(reason, reasonlen, AEGIS_ERR_DECOMPRESS,
                                "input ended %llu bytes early", (unsigned long long)n);
        int rv = write_all(ofd, buf, (size_t)got);
        if (rv != 0)
            return agent_errmsg(reason, reasonlen, rv, "write failed: %s", strerror(-rv));
        n -= (uint64_t)got;
    }
    return 0;
}

int agent_unzstd_fd(int ifd, int ofd, uint64_t expect, uint64_t cap, char *reason, size_t reasonlen)
{
    if (expect > cap)
        return agent_errmsg(reason, reasonlen, AEGIS_ERR_TOO_LARGE,
                            "declared size %llu over the cap %llu", (unsigned long long)expect,
                            (unsigned long long)cap);
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    size_t inlen = ZSTD_DStreamInSize(), outlen = ZSTD_DStreamOutSize();
    uint8_t *inbuf = malloc(inlen), *outbuf = malloc(outlen);
    int rv = 0;
    if (dctx == NULL || inbuf == NULL || outbuf == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    /* Bound the window so a hostile frame cannot make the decoder allocate
     * a huge history buffer (2^27 = 128 MiB is zstd's default maximum for
     * non-long mode; we allow 2^23 = 8 MiB, which is what `zstd -19` uses). */
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 23);
    uint64_t total = 0;
    size_t last = 0;
    int any = 0;
    for (;;) {
        ssize_t got = read_some(ifd, inbuf, inlen);
        if (got < 0) {
            rv = agent_errmsg(reason, reasonlen, (int)got, "read failed: %s", strerror((int)-got));
            goto out;
        }
        if (got == 0)
            break;
        any = 1;
        ZSTD_inBuffer in = {inbuf, (size_t)got, 0};
        while (in.pos < in.size) {
            ZSTD_outBuffer o = {outbuf, outlen, 0};
            last = ZSTD_decompressStream(dctx, &o, &in);
            if (ZSTD_isError(last)) {
                rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_DECOMPRESS,
                                  "zstd: %s after %llu output bytes", ZSTD_getErrorName(last),
                                  (unsigned long long)total);
                goto out;
            }
            if (total + o.pos > expect) {
                rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_TOO_LARGE,
                                  "zstd output exceeds the declared %llu bytes",
                                  (unsigned long long)expect);
                goto out;
            }
            if (o.pos > 0 && (rv = write_all(ofd, outbuf, o.pos)) != 0) {
                agent_errmsg(reason, reasonlen, rv, "write failed: %s", strerror(-rv));
                goto out;
            }
            total += o.pos;
        }
    }
    /* Flush whatever the decoder still holds for a complete frame. */
    for (int i = 0; any && last != 0 && i < 1024; i++) {
        ZSTD_inBuffer in = {inbuf, 0, 0};
        ZSTD_outBuffer o = {outbuf, outlen, 0};
        last = ZSTD_decompressStream(dctx, &o, &in);
        if (ZSTD_isError(last) || o.pos == 0)
            break;
        if (total + o.pos > expect) {
            rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_TOO_LARGE,
                              "zstd output exceeds the declared %llu bytes",
                              (unsigned long long)expect);
            goto out;
        }
        if ((rv = write_all(ofd, outbuf, o.pos)) != 0)
            goto out;
        total += o.pos;
    }
    if (!any || last != 0)
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_DECOMPRESS,
                          "zstd: input ends inside a frame (truncated)");
    else if (total != expect)
        rv = agent_errmsg(reason, reasonlen, AEGIS_ERR_DECOMPRESS,
                          "zstd output is %llu bytes, the statement declares %llu",
                          (unsigned long long)total, (unsigned long long)expect);
out:
    ZSTD_freeDCtx(dctx);
    free(inbuf);
    free(outbuf);
    return rv;
}
