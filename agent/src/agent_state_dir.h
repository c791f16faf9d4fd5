/*
 * agent_state_dir: the agent's private state directory (default
 * /var/lib/aegis-agent). It holds the host key, certificates, journals and
 * the telemetry spool, so it must be 0700 and owned by the agent's user; a
 * directory others can write to could have had any of that swapped under us
 * and is refused rather than repaired. A lock file keeps two agents from
 * sharing one directory (they would corrupt each other's journals and
 * double-execute commands).
 */
#ifndef AGENT_STATE_DIR_H
#define AGENT_STATE_DIR_H

#include "agent_io.h"

#include <aegis/mem.h>

#include <stddef.h>
#include <sys/types.h>

/* Largest file read back through agent_state_dir_read: keys, certificates
 * and counters are a few KiB. */
#define AGENT_STATE_DIR_MAX_FILE (1u << 20)

/* agent_state_dir_open / agent_state_dir_ensure flags */
#define AGENT_STATE_DIR_CREATE 0x1u /* create the directory (0700) if it is missing */

struct agent_state_dir;

/*
 * agent_state_dir_ensure checks that path is a directory (not a symlink)
 * owned by the effective uid and writable by nobody else, creating it 0700
 * when missing and flags has AGENT_STATE_DIR_CREATE (the parent must exist).
 * A directory that others may read but not write is tightened to 0700. On
 * error, errmsg (may be NULL) gets a sentence naming the path and the fix.
 *
 * Errors: -EINVAL, -ENOENT (missing, no CREATE), -ENOTDIR or -ELOOP (not
 * a directory, or a symlink), AEGIS_ERR_PERMISSION (wrong owner, or
 * group/world-writable), other -errno.
 */
int agent_state_dir_ensure(const char *path, unsigned flags, const struct agent_io *io,
                           char *errmsg, size_t errlen);

/*
 * agent_state_dir_open validates path with agent_state_dir_ensure and
 * returns a handle. path is copied; io and mem (NULL = defaults) are
 * borrowed. Errors: those of agent_state_dir_ensure, -ENOMEM.
 */
int agent_state_dir_open(const char *path, unsigned flags, const struct agent_io *io,
                         const struct aegis_mem *mem, char *errmsg, size_t errlen,
                         struct agent_state_dir **psd);

/* agent_state_dir_del releases the lock (if held) and frees sd. NULL is fine. */
void agent_state_dir_del(struct agent_state_dir *sd);

/* agent_state_dir_path returns the directory path (borrowed). */
const char *agent_state_dir_path(const struct agent_state_dir *sd);

/*
 * agent_state_dir_lock takes an exclusive flock(2) on <dir>/lock and writes
 * pid into it, so the lock is held until agent_state_dir_del or process
 * exit (the kernel drops it even after a crash: no stale lock files).
 * Errors: -EBUSY when another process holds it (errmsg names its pid),
 * AEGIS_ERR_STATE if this handle already holds it, other -errno.
 */
int agent_state_dir_lock(struct agent_state_dir *sd, pid_t pid, char *errmsg, size_t errlen);

/*
 * agent_state_dir_path_of joins the directory and a file name into out.
 * Errors: -EINVAL (name empty, ".", ".." or containing '/'), -ENAMETOOLONG.
 */
int agent_state_dir_path_of(const struct agent_state_dir *sd, const char *name, char *out,
                            size_t len);

/*
 * agent_state_dir_write atomically replaces file `name` with data (tmp +
 * fdatasync + rename + directory fsync). Errors: -EINVAL (bad name), -errno.
 */
int agent_state_dir_write(struct agent_state_dir *sd, const char *name, const void *data,
                          size_t len, mode_t mode);

/*
 * agent_state_dir_read reads file `name` into buf (capacity cap, at most
 * AGENT_STATE_DIR_MAX_FILE is ever needed). Errors: -EINVAL, -ENOENT,
 * AEGIS_ERR_TOO_LARGE, -errno.
 */
int agent_state_dir_read(struct agent_state_dir *sd, const char *name, void *buf, size_t cap,
                         size_t *plen);

#endif
