#include "agent_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void agent_test_mkdtemp(char *out, size_t len)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    int n = snprintf(out, len, "%s/aegis-agent-test-XXXXXX", base);
    if (n < 0 || (size_t)n >= len || !mkdtemp(out)) {
        fprintf(stderr, "cannot create a temporary directory under %s\n", base);
        abort();
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rv = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rv == 0 ? 0 : -errno;
}

int agent_test_rmtree(const char *path)
{
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int agent_test_read(const char *path, uint8_t **pdata, size_t *plen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (!b) {
            fclose(f);
            return -ENOMEM;
        }
        len += fread(b + len, 1, cap - len, f);
        if (len < cap)
            break;
        cap *= 2;
        b = realloc(b, cap);
    }
    fclose(f);
    *pdata = b;
    *plen = len;
    return 0;
}

int agent_test_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    size_t n = fwrite(data, 1, len, f);
    int rv = fclose(f);
    return n == len && rv == 0 ? 0 : -EIO;
}

long agent_test_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Decide the fate of one call: 0 = perform it, <0 = fail with that. */
static int fate(struct faultio *f, enum faultio_op op)
{
    f->total++;
    f->count[op]++;
    if (f->crashed || (f->crash_at && f->total >= f->crash_at)) {
        f->crashed = 1;
        return -EIO;
    }
    if (f->fail_at && op == f->fail_op &&
        (f->count[op] == f->fail_at || (f->sticky && f->count[op] > f->fail_at)))
        return -f->fail_errno;
    return 0;
}

#define BASE agent_io_default()

static int f_open(const char *path, int flags, mode_t mode, void *ud)
{
    int rv = fate(ud, FIO_OPEN);
    return rv ? rv : BASE->open(path, flags, mode, NULL);
}

static int f_close(int fd, void *ud)
{
    int rv = fate(ud, FIO_CLOSE);
    /* Even a dead process releases its descriptors. */
    int crv = BASE->close(fd, NULL);
    return rv ? rv : crv;
}

static ssize_t f_pread(int fd, void *buf, size_t len, off_t off, void *ud)
{
    int rv = fate(ud, FIO_PREAD);
    return rv ? rv : BASE->pread(fd, buf, len, off, NULL);
}

static ssize_t f_pwrite(int fd, const void *buf, size_t len, off_t off, void *ud)
{
    struct faultio *f = ud;
    int rv = fate(f, FIO_PWRITE);
    if (rv && f->torn && !f->crashed && len > 1)
        BASE->pwrite(fd, buf, len / 2, off, NULL);
    return rv ? rv : BASE->pwrite(fd, buf, len, off, NULL);
}

static int f_fdatasync(int fd, void *ud)
{
    int rv = fate(ud, FIO_FDATASYNC);
    return rv ? rv : BASE->fdatasync(fd, NULL);
}

static int f_fsync(int fd, void *ud)
{
    int rv = fate(ud, FIO_FSYNC);
    return rv ? rv : BASE->fsync(fd, NULL);
}

static int f_ftruncate(int fd, off_t len, void *ud)
{
    int rv = fate(ud, FIO_FTRUNCATE);
    return rv ? rv : BASE->ftruncate(fd, len, NULL);
}

static int f_fstat(int fd, struct stat *st, void *ud)
{
    int rv = fate(ud, FIO_FSTAT);
    return rv ? rv : BASE->fstat(fd, st, NULL);
}

static int f_rename(const char *from, const char *to, void *ud)
{
    int rv = fate(ud, FIO_RENAME);
    return rv ? rv : BASE->rename(from, to, NULL);
}

static int f_unlink(const char *path, void *ud)
{
    int rv = fate(ud, FIO_UNLINK);
    return rv ? rv : BASE->unlink(path, NULL);
}

static int f_mkdir(const char *path, mode_t mode, void *ud)
{
    int rv = fate(ud, FIO_MKDIR);
    return rv ? rv : BASE->mkdir(path, mode, NULL);
}

void faultio_init(struct faultio *f)
{
    memset(f, 0, sizeof(*f));
    f->io.open = f_open;
    f->io.close = f_close;
    f->io.pread = f_pread;
    f->io.pwrite = f_pwrite;
    f->io.fdatasync = f_fdatasync;
    f->io.fsync = f_fsync;
    f->io.ftruncate = f_ftruncate;
    f->io.fstat = f_fstat;
    f->io.rename = f_rename;
    f->io.unlink = f_unlink;
    f->io.mkdir = f_mkdir;
    f->io.user_data = f;
}
