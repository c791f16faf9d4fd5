#include "agent_io.h"

#include <aegis/err.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int sys_open(const char *path, int flags, mode_t mode, void *ud)
{
    (void)ud;
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int sys_close(int fd, void *ud)
{
    (void)ud;
    /* Linux closes the descriptor even when close() reports EINTR: no retry. */
    return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

static ssize_t sys_pread(int fd, void *buf, size_t len, off_t off, void *ud)
{
    (void)ud;
    ssize_t n = pread(fd, buf, len, off);
    return n < 0 ? -errno : n;
}

static ssize_t sys_pwrite(int fd, const void *buf, size_t len, off_t off, void *ud)
{
    (void)ud;
    ssize_t n = pwrite(fd, buf, len, off);
    return n < 0 ? -errno : n;
}

static int sys_fdatasync(int fd, void *ud)
{
    (void)ud;
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int sys_fsync(int fd, void *ud)
{
    (void)ud;
    return fsync(fd) < 0 ? -errno : 0;
}

static int sys_ftruncate(int fd, off_t len, void *ud)
{
    (void)ud;
    return ftruncate(fd, len) < 0 ? -errno : 0;
}

static int sys_fstat(int fd, struct stat *st, void *ud)
{
    (void)ud;
    return fstat(fd, st) < 0 ? -errno : 0;
}

static int sys_rename(const char *from, const char *to, void *ud)
{
    (void)ud;
    return rename(from, to) < 0 ? -errno : 0;
}

static int sys_unlink(const char *path, void *ud)
{
    (void)ud;
    return unlink(path) < 0 ? -errno : 0;
}

static int sys_mkdir(const char *path, mode_t mode, void *ud)
{
    (void)ud;
    return mkdir(path, mode) < 0 ? -errno : 0;
}

static const struct agent_io sys_io = {
    .open = sys_open,
    .close = sys_close,
    .pread = sys_pread,
    .pwrite = sys_pwrite,
    .fdatasync = sys_fdatasync,
    .fsync = sys_fsync,
    .ftruncate = sys_ftruncate,
    .fstat = sys_fstat,
    .rename = sys_rename,
    .unlink = sys_unlink,
    .mkdir = sys_mkdir,
    .user_data = NULL,
};

const struct agent_io *agent_io_default(void)
{
    return &sys_io;
}

/* A bounded retry count keeps a filesystem that keeps returning 0 or EINTR
 * from spinning us forever; real short writes finish in a few rounds. */
#define IO_MAX_ROUNDS 1024

int agent_io_write_all(const struct agent_io *io, int fd, const void *buf, size_t len, off_t off)
{
    if (!io)
        io = &sys_io;
    const uint8_t *p = buf;
    for (int round = 0; len > 0; round++) {
        if (round >= IO_MAX_ROUNDS)
            return -EIO;
        ssize_t n = io->pwrite(fd, p, len, off, io->user_data);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int agent_io_read_full(const struct agent_io *io, int fd, void *buf, size_t len, off_t off,
                       size_t *pgot)
{
    if (!io)
        io = &sys_io;
    uint8_t *p = buf;
    size_t got = 0;
    for (int round = 0; got < len; round++) {
        if (round >= IO_MAX_ROUNDS)
            return -EIO;
        ssize_t n = io->pread(fd, p + got, len - got, off + (off_t)got, io->user_data);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return (int)n;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    *pgot = got;
    return 0;
}

int agent_io_fsync_dir(const struct agent_io *io, const char *dir)
{
    if (!io)
        io = &sys_io;
    int fd = io->open(dir, O_RDONLY | O_DIRECTORY, 0, io->user_data);
    if (fd < 0)
        return fd;
    int rv = io->fsync(fd, io->user_data);
    io->close(fd, io->user_data);
    return rv;
}

int agent_io_path(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

int agent_io_write_file_atomic(const struct agent_io *io, const char *dir, const char *name,
                               const void *data, size_t len, mode_t mode)
{
    if (!io)
        io = &sys_io;
    char path[PATH_MAX], tmp[PATH_MAX];
    if (agent_io_path(path, sizeof(path), dir, name) != 0 ||
        snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode, io->user_data);
    if (fd < 0)
        return fd;
    int rv = agent_io_write_all(io, fd, data, len, 0);
    if (rv == 0)
        rv = io->fdatasync(fd, io->user_data);
    int crv = io->close(fd, io->user_data);
    if (rv == 0)
        rv = crv;
    if (rv == 0)
        rv = io->rename(tmp, path, io->user_data);
    if (rv != 0) {
        io->unlink(tmp, io->user_data);
        return rv;
    }
    return agent_io_fsync_dir(io, dir);
}

int agent_io_read_file(const struct agent_io *io, const char *path, void *buf, size_t cap,
                       size_t *plen)
{
    if (!io)
        io = &sys_io;
    int fd = io->open(path, O_RDONLY | O_NOFOLLOW, 0, io->user_data);
    if (fd < 0)
        return fd;
    struct stat st;
    int rv = io->fstat(fd, &st, io->user_data);
    if (rv == 0 && (st.st_size < 0 || (uint64_t)st.st_size > cap))
        rv = AEGIS_ERR_TOO_LARGE;
    size_t got = 0;
    /* /proc and /sys files report size 0 but have content: read those to
     * end of file, within cap (one byte more means it did not fit). */
    int unsized = rv == 0 && st.st_size == 0;
    if (rv == 0)
        rv = agent_io_read_full(io, fd, buf, unsized ? cap : (size_t)st.st_size, 0, &got);
    if (rv == 0 && unsized && got == cap) {
        uint8_t extra;
        size_t more = 0;
        if (agent_io_read_full(io, fd, &extra, 1, (off_t)got, &more) == 0 && more)
            rv = AEGIS_ERR_TOO_LARGE;
    }
    io->close(fd, io->user_data);
    if (rv == 0)
        *plen = got;
    return rv;
}

int agent_errmsg(char *buf, size_t len, int rv, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return rv;
}
