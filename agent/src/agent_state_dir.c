#include "agent_state_dir.h"

#include <aegis/err.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define LOCK_NAME "lock"

struct agent_state_dir {
    const struct aegis_mem *mem;
    const struct agent_io *io;
    char *path;
    int lock_fd;
};

int agent_state_dir_ensure(const char *path, unsigned flags, const struct agent_io *io,
                           char *errmsg, size_t errlen)
{
    if (!path || !*path)
        return agent_errmsg(errmsg, errlen, -EINVAL, "state directory: empty path");
    if (!io)
        io = agent_io_default();
    int fd = io->open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, io->user_data);
    if (fd == -ENOENT && (flags & AGENT_STATE_DIR_CREATE)) {
        int rv = io->mkdir(path, 0700, io->user_data);
        if (rv != 0 && rv != -EEXIST)
            return agent_errmsg(errmsg, errlen, rv,
                                "cannot create state directory %s: %s (does its parent exist?)",
                                path, aegis_strerror(rv));
        fd = io->open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, io->user_data);
    }
    if (fd == -ENOENT)
        return agent_errmsg(errmsg, errlen, fd,
                            "state directory %s does not exist (run `aegis-agent enroll` first "
                            "or pass --state-dir)",
                            path);
    if (fd == -ELOOP || fd == -ENOTDIR)
        return agent_errmsg(errmsg, errlen, fd,
                            "state directory %s is a symlink or not a directory; "
                            "point --state-dir at a real directory",
                            path);
    if (fd < 0)
        return agent_errmsg(errmsg, errlen, fd, "cannot open state directory %s: %s", path,
                            aegis_strerror(fd));
    struct stat st;
    int rv = io->fstat(fd, &st, io->user_data);
    if (rv != 0) {
        agent_errmsg(errmsg, errlen, rv, "cannot stat state directory %s: %s", path,
                     aegis_strerror(rv));
        goto out;
    }
    uid_t me = geteuid();
    if (st.st_uid != me) {
        rv = agent_errmsg(errmsg, errlen, AEGIS_ERR_PERMISSION,
                          "state directory %s is owned by uid %u, not by this agent (uid %u); "
                          "chown it to the agent's user",
                          path, (unsigned)st.st_uid, (unsigned)me);
        goto out;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        /* Someone else could have replaced keys or journals: repairing the
         * mode would hide that. Make the operator look. */
        rv = agent_errmsg(errmsg, errlen, AEGIS_ERR_PERMISSION,
                          "state directory %s is writable by group or others (mode %04o); "
                          "check its contents, then chmod 0700 it",
                          path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0) {
        rv = -errno;
        agent_errmsg(errmsg, errlen, rv, "cannot chmod 0700 state directory %s: %s", path,
                     aegis_strerror(rv));
        goto out;
    }
    rv = 0;
out:
    io->close(fd, io->user_data);
    return rv;
}

int agent_state_dir_open(const char *path, unsigned flags, const struct agent_io *io,
                         const struct aegis_mem *mem, char *errmsg, size_t errlen,
                         struct agent_state_dir **psd)
{
    if (!psd)
        return -EINVAL;
    int rv = agent_state_dir_ensure(path, flags, io, errmsg, errlen);
    if (rv != 0)
        return rv;
    if (!mem)
        mem = aegis_mem_default();
    struct agent_state_dir *sd = aegis_calloc(mem, 1, sizeof(*sd));
    if (!sd || !(sd->path = aegis_strdup(mem, path))) {
        aegis_free(mem, sd);
        return agent_errmsg(errmsg, errlen, -ENOMEM, "state directory %s: out of memory", path);
    }
    sd->mem = mem;
    sd->io = io ? io : agent_io_default();
    sd->lock_fd = -1;
    *psd = sd;
    return 0;
}

void agent_state_dir_del(struct agent_state_dir *sd)
{
    if (!sd)
        return;
    if (sd->lock_fd >= 0)
        sd->io->close(sd->lock_fd, sd->io->user_data); /* drops the flock */
    aegis_free(sd->mem, sd->path);
    aegis_free(sd->mem, sd);
}

const char *agent_state_dir_path(const struct agent_state_dir *sd)
{
    return sd->path;
}

int agent_state_dir_path_of(const struct agent_state_dir *sd, const char *name, char *out,
                            size_t len)
{
    if (!sd || !name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return -EINVAL;
    return agent_io_path(out, len, sd->path, name);
}

/* The holder's pid as written in the lock file, or 0 if unreadable. */
static long read_holder(const struct agent_io *io, int fd)
{
    char buf[32];
    size_t got = 0;
    if (agent_io_read_full(io, fd, buf, sizeof(buf) - 1, 0, &got) != 0)
        return 0;
    buf[got] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    return end != buf && pid > 0 ? pid : 0;
}

int agent_state_dir_lock(struct agent_state_dir *sd, pid_t pid, char *errmsg, size_t errlen)
{
    if (!sd)
        return -EINVAL;
    if (sd->lock_fd >= 0)
        return AEGIS_ERR_STATE;
    const struct agent_io *io = sd->io;
    char path[PATH_MAX];
    int rv = agent_state_dir_path_of(sd, LOCK_NAME, path, sizeof(path));
    if (rv != 0)
        return agent_errmsg(errmsg, errlen, rv, "state directory %s: path too long", sd->path);
    int fd = io->open(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600, io->user_data);
    if (fd < 0)
        return agent_errmsg(errmsg, errlen, fd, "cannot open lock file %s: %s", path,
                            aegis_strerror(fd));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        rv = errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (rv == -EBUSY) {
            long holder = read_holder(io, fd);
            if (holder)
                agent_errmsg(errmsg, errlen, rv,
                             "state directory %s is in use by another aegis-agent (pid %ld); "
                             "stop it first or use a different --state-dir",
                             sd->path, holder);
            else
                agent_errmsg(errmsg, errlen, rv,
                             "state directory %s is in use by another aegis-agent (pid "
                             "unknown); stop it first or use a different --state-dir",
                             sd->path);
        } else {
            agent_errmsg(errmsg, errlen, rv, "cannot lock %s: %s", path, aegis_strerror(rv));
        }
        io->close(fd, io->user_data);
        return rv;
    }
    char line[32];
    int n = snprintf(line, sizeof(line), "%ld\n", (long)pid);
    rv = io->ftruncate(fd, 0, io->user_data);
    if (rv == 0)
        rv = agent_io_write_all(io, fd, line, (size_t)n, 0);
    if (rv != 0) {
        io->close(fd, io->user_data);
        return agent_errmsg(errmsg, errlen, rv, "cannot write pid to lock file %s: %s", path,
                            aegis_strerror(rv));
    }
    sd->lock_fd = fd;
    return 0;
}

int agent_state_dir_write(struct agent_state_dir *sd, const char *name, const void *data,
                          size_t len, mode_t mode)
{
    char path[PATH_MAX];
    int rv = agent_state_dir_path_of(sd, name, path, sizeof(path));
    if (rv != 0)
        return rv;
    return agent_io_write_file_atomic(sd->io, sd->path, name, data, len, mode);
}

int agent_state_dir_read(struct agent_state_dir *sd, const char *name, void *buf, size_t cap,
                         size_t *plen)
{
    char path[PATH_MAX];
    int rv = agent_state_dir_path_of(sd, name, path, sizeof(path));
    if (rv != 0)
        return rv;
    return agent_io_read_file(sd->io, path, buf, cap, plen);
}
