/*
 * File I/O seam for the agent's durable state.
 *
 * Every durable module (journal, spool, state directory) does its file I/O
 * through a struct agent_io instead of calling libc directly, so tests can
 * hand in a table that fails the Nth write with ENOSPC, makes fsync return
 * EIO, or "crashes" (every call fails) at an exact point. Each function
 * returns >= 0 on success and -errno on failure; none of them may set errno
 * as their only failure signal. NULL for a `const struct agent_io *` means
 * agent_io_default().
 */
#ifndef AGENT_IO_H
#define AGENT_IO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct agent_io {
    /* open(2); returns the descriptor. Flags always include O_CLOEXEC. */
    int (*open)(const char *path, int flags, mode_t mode, void *user_data);
    int (*close)(int fd, void *user_data);
    /* pread/pwrite(2): may transfer fewer bytes than asked; returns the count. */
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off, void *user_data);
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off, void *user_data);
    /* fdatasync(2) for data files, fsync(2) for directories. */
    int (*fdatasync)(int fd, void *user_data);
    int (*fsync)(int fd, void *user_data);
    int (*ftruncate)(int fd, off_t len, void *user_data);
    int (*fstat)(int fd, struct stat *st, void *user_data);
    int (*rename)(const char *from, const char *to, void *user_data);
    int (*unlink)(const char *path, void *user_data);
    int (*mkdir)(const char *path, mode_t mode, void *user_data);
    void *user_data;
};

/* agent_io_default returns the libc table. Never NULL. */
const struct agent_io *agent_io_default(void);

/*
 * agent_io_write_all writes len bytes at off, retrying short writes and
 * EINTR. Returns 0 or the first -errno (a short write that makes no progress
 * is -EIO). Bytes before the failure may already be in the file.
 */
int agent_io_write_all(const struct agent_io *io, int fd, const void *buf, size_t len, off_t off);

/*
 * agent_io_read_full reads up to len bytes at off; *pgot is set to the count
 * read (less than len only at end of file). Returns 0 or -errno.
 */
int agent_io_read_full(const struct agent_io *io, int fd, void *buf, size_t len, off_t off,
                       size_t *pgot);

/*
 * agent_io_fsync_dir opens directory `dir` and fsyncs it, making renames,
 * creations and unlinks inside it durable. Returns 0 or -errno.
 */
int agent_io_fsync_dir(const struct agent_io *io, const char *dir);

/*
 * agent_io_write_file_atomic replaces dir/name with data: it writes
 * dir/name.tmp (mode `mode`), fdatasyncs it, renames it over dir/name and
 * fsyncs dir. After a crash at any point, dir/name holds either the old or
 * the new content, never a mix. Returns 0 or -errno (-ENAMETOOLONG if the
 * path does not fit PATH_MAX); on failure the tmp file is removed when
 * possible and the old file is untouched unless the rename already happened.
 */
int agent_io_write_file_atomic(const struct agent_io *io, const char *dir, const char *name,
                               const void *data, size_t len, mode_t mode);

/*
 * agent_io_read_file reads all of `path` into buf (capacity cap). Returns 0
 * and *plen, -ENOENT if missing, AEGIS_ERR_TOO_LARGE if the file is bigger
 * than cap, or another -errno.
 */
int agent_io_read_file(const struct agent_io *io, const char *path, void *buf, size_t cap,
                       size_t *plen);

/*
 * agent_io_path joins dir and name into out (capacity len). Returns 0 or
 * -ENAMETOOLONG.
 */
int agent_io_path(char *out, size_t len, const char *dir, const char *name);

/*
 * agent_errmsg formats a user-facing error into buf (capacity len) when buf
 * is not NULL, and returns rv unchanged so callers can `return
 * agent_errmsg(...)`.
 */
int agent_errmsg(char *buf, size_t len, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
