/*
 * Self-update (seed 002, DESIGN §3): a signed agent binary arrives as an
 * artifact of kind AGENT_BINARY (already verified and decompressed by
 * agent_fetch.c). It is written beside the running binary, fsync'd, the old
 * binary is kept as <exe>.prev, a marker file records the attempt, and an
 * atomic rename swaps the new one in before the agent re-executes itself.
 *
 * The new process finds the marker ("trial") and must authenticate within
 * AGENT_UPDATE_DEADLINE_S; then it acks the update SUCCEEDED and removes
 * the marker. If it cannot (it crashes, the server refuses it, the deadline
 * passes), .prev is renamed back, the marker says "rollback", and the old
 * binary is re-executed, which acks the update FAILED with the reason. A
 * lower version is refused before anything is downloaded.
 *
 * Before the swap the staged binary is smoke-run (`<exe>.new version`, no
 * shell, bounded in time and output): one that cannot start at all (truncated,
 * wrong architecture, crashing) would never reach the trial deadline, so it is
 * refused before the swap, and so is one that does not print the signed
 * version.
 *
 * The trial is decided by what actually runs, not by the signed label: a new
 * process whose version differs from the old one is on trial even if it does
 * not report the version the statement promised (a mislabelled build, which
 * the smoke run should already have refused), so a build the server then
 * refuses (e.g. as a downgrade) is still rolled back.
 * Only a process still reporting the old version means the swap never
 * happened (a crash between the marker and the rename): "interrupted".
 *
 * A new build that passes its smoke run but crashes on every start before it
 * reaches this code would never see its deadline. So the old binary, kept as
 * <exe>.prev for the length of the trial, is run before every start by the
 * service manager (aegis-agent.service: ExecStartPre runs
 * `aegis-agent.prev update-check`): it counts the starts in the marker and
 * rolls back once there have been AGENT_UPDATE_MAX_STARTS of them, or once the
 * deadline has passed, without ever running the new binary's code.
 */
#include "agent_daemon.h"
#include "agent_version.h"

#include <aegis/err.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct marker {
    char state[16]; /* "trial" or "rollback" */
    char cmd[AGENT_SEEN_ID_MAX + 1];
    uint64_t seq;
    char from[AGENT_VERSION_MAX], to[AGENT_VERSION_MAX];
    char exe[4096];
    uint64_t deadline; /* wall clock ns */
    unsigned starts;   /* service starts during the trial, counted by update-check */
    char why[200];     /* rollback: why the new version failed (one line) */
};

static int marker_write(struct agent_state_dir *sd, const struct marker *m)
{
    char buf[4900];
    int n = snprintf(buf, sizeof(buf),
                     "state=%s\ncmd=%s\nseq=%llu\nfrom=%s\nto=%s\nexe=%s\ndeadline=%llu\n"
                     "starts=%u\nwhy=%s\n",
                     m->state, m->cmd, (unsigned long long)m->seq, m->from, m->to, m->exe,
                     (unsigned long long)m->deadline, m->starts, m->why);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -ENAMETOOLONG;
    return agent_state_dir_write(sd, AGENT_FILE_UPDATE, buf, (size_t)n, 0600);
}

static void field(const char *text, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    out[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            const char *v = p + kl + 1, *e = strchr(v, '\n');
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= len)
                n = len - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return;
        }
    }
}

static int marker_read(struct agent_state_dir *sd, struct marker *m)
{
    char buf[4900], num[32];
    int rv = agent_read_small(agent_state_dir_path(sd), AGENT_FILE_UPDATE, buf, sizeof(buf));
    if (rv != 0)
        return rv;
    memset(m, 0, sizeof(*m));
    field(buf, "state", m->state, sizeof(m->state));
    field(buf, "cmd", m->cmd, sizeof(m->cmd));
    field(buf, "seq", num, sizeof(num));
    m->seq = strtoull(num, NULL, 10);
    field(buf, "from", m->from, sizeof(m->from));
    field(buf, "to", m->to, sizeof(m->to));
    field(buf, "exe", m->exe, sizeof(m->exe));
    field(buf, "deadline", num, sizeof(num));
    m->deadline = strtoull(num, NULL, 10);
    field(buf, "starts", num, sizeof(num)); /* absent in markers of older versions: 0 */
    m->starts = (unsigned)strtoul(num, NULL, 10);
    field(buf, "why", m->why, sizeof(m->why));
    return m->cmd[0] && m->exe[0] ? 0 : AEGIS_ERR_MALFORMED;
}

static void marker_remove(struct agent_state_dir *sd)
{
    char path[4096];
    agent_state_dir_path_of(sd, AGENT_FILE_UPDATE, path, sizeof(path));
    unlink(path);
    agent_io_fsync_dir(NULL, agent_state_dir_path(sd));
}

static void finish_update(struct agent *a, const struct marker *m, int ok, const char *detail)
{
    uint32_t st = ok ? AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED
                     : AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
    agent_ack(a, m->cmd, m->seq, st, 0, detail, NULL, 0);
    agent_seen_mark_finished(a->seen, m->cmd, st, aegis_wallclock());
    snprintf(a->last_command, sizeof(a->last_command), "%s update_agent", m->cmd);
    snprintf(a->last_command_state, sizeof(a->last_command_state), "%s",
             ok ? "succeeded" : "failed");
    marker_remove(a->sd);
}

/* restore_prev renames <exe>.prev over <exe> and records "rollback" and why in the marker, for
 * the old binary to ack at its start. 0 or -errno (nothing changed). */
static int restore_prev(struct agent_state_dir *sd, struct marker *m, const char *why)
{
    char prev[4200];
    snprintf(prev, sizeof(prev), "%s.prev", m->exe);
    if (rename(prev, m->exe) != 0)
        return -errno;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", m->exe);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    agent_io_fsync_dir(NULL, dir);
    snprintf(m->state, sizeof(m->state), "rollback");
    /* one line, no quotes: it goes into the marker and a log field */
    snprintf(m->why, sizeof(m->why), "%.199s", why);
    for (char *p = m->why; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '"')
            *p = '\'';
    marker_write(sd, m);
    return 0;
}

/* Put the old binary back and run it. */
static void rollback(struct agent *a, struct marker *m, const char *why)
{
    AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=update_rollback from=%s to=%s reason=\"%s\"", m->to,
              m->from, why);
    int rv = restore_prev(a->sd, m, why);
    if (rv != 0) {
        AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=update_rollback_failed error=\"%s\"",
                  strerror(-rv));
        char d[512];
        snprintf(d, sizeof(d),
                 "failed: version %s did not authenticate (%s) and the old binary "
                 "could not be restored: %s",
                 m->to, why, strerror(-rv));
        finish_update(a, m, 0, d);
        return;
    }
    snprintf(a->exe_path, sizeof(a->exe_path), "%s", m->exe);
    agent_restart(a);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct agent *a = w->data;
    struct marker m;
    if (!a->update_trial || marker_read(a->sd, &m) != 0)
        return;
    rollback(a, &m, a->last_error[0] ? a->last_error : "no successful Authenticate");
}

int agent_update_startup(struct agent *a)
{
    struct marker m;
    int rv = marker_read(a->sd, &m);
    if (rv == -ENOENT)
        return 0;
    if (rv != 0) {
        AEGIS_LOG(&a->log, AEGIS_LOG_WARN, "event=update_marker_damaged error=\"%s\"",
                  aegis_strerror(rv));
        marker_remove(a->sd);
        return 0;
    }
    snprintf(a->update_cmd, sizeof(a->update_cmd), "%s", m.cmd);
    const char *me = agent_version_string();
    if (strcmp(m.state, "trial") == 0 && strcmp(me, m.from) != 0) {
        a->update_trial = 1;
        aegis_tstamp now = aegis_wallclock();
        double left = m.deadline > now ? (double)(m.deadline - now) / 1e9 : 0.0;
        if (strcmp(me, m.to) != 0)
            AEGIS_LOG(&a->log, AEGIS_LOG_WARN,
                      "event=update_version_mismatch signed=%s running=%s "
                      "detail=\"the new binary is on trial anyway\"",
                      m.to, me);
        AEGIS_LOG(&a->log, AEGIS_LOG_INFO,
                  "event=update_trial from=%s to=%s running=%s deadline_s=%.1f", m.from, m.to, me,
                  left);
        ev_timer_init(&a->update_timer, deadline_cb, left > 0.1 ? left : 0.1, 0);
        a->update_timer.data = a;
        ev_timer_start(a->loop, &a->update_timer);
        return 0;
    }
    char d[512];
    if (strcmp(m.state, "rollback") == 0)
        snprintf(d, sizeof(d),
                 "failed: version %s did not authenticate in time (%s); rolled back to %s", m.to,
                 m.why[0] ? m.why : "no reason recorded", me);
    else
        snprintf(d, sizeof(d), "failed: update to %s interrupted; running %s", m.to, me);
    finish_update(a, &m, 0, d);
    a->update_cmd[0] = '\0';
    return 0;
}

void agent_update_on_authenticated(struct agent *a)
{
    if (!a->update_trial)
        return;
    struct marker m;
    a->update_trial = 0;
    ev_timer_stop(a->loop, &a->update_timer);
    if (marker_read(a->sd, &m) != 0)
        return;
    char d[256], prev[4200];
    const char *me = agent_version_string();
    if (strcmp(me, m.to) == 0)
        snprintf(d, sizeof(d), "updated from %s to %s", m.from, m.to);
    else
        snprintf(d, sizeof(d), "updated from %s to %s (the artifact was signed as version %s)",
                 m.from, me, m.to);
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=update_succeeded from=%s to=%s", m.from, me);
    finish_update(a, &m, 1, d);
    snprintf(prev, sizeof(prev), "%s.prev", m.exe);
    unlink(prev);
    a->update_cmd[0] = '\0';
}

int agent_update_precheck(struct agent *a, struct agent_job *job)
{
    const Aegis__V1__UpdateAgent *u = job->cmd->update_agent;
    int cmp = 0;
    char d[256];
    if (agent_version_cmp(u->version, agent_version_string(), &cmp) != 0) {
        snprintf(d, sizeof(d), "failed: version \"%.64s\" is not dotted numbers", u->version);
        agent_exec_job_done(a, job, 0, d, NULL, 0);
        return 1;
    }
    if (cmp < 0) {
        snprintf(d, sizeof(d), "failed: downgrade refused (%.64s is older than the running %s)",
                 u->version, agent_version_string());
        agent_exec_job_done(a, job, 0, d, NULL, 0);
        return 1;
    }
    if (cmp == 0) {
        snprintf(d, sizeof(d), "already running version %s", agent_version_string());
        agent_exec_job_done(a, job, 1, d, NULL, 0);
        return 1;
    }
    return 0;
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (out < 0) {
        int e = errno;
        close(in);
        return -e;
    }
    int rv = 0;
    char buf[16384];
    off_t off = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rv = -errno;
            break;
        }
        if (n == 0)
            break;
        if ((rv = agent_io_write_all(NULL, out, buf, (size_t)n, off)) != 0)
            break;
        off += n;
    }
    if (rv == 0 && (fchmod(out, mode) != 0 || fsync(out) != 0))
        rv = -errno;
    close(in);
    close(out);
    return rv;
}

/* How long the new binary gets to answer `version` before the swap. A sound
 * build answers in milliseconds; 10 s leaves room for a loaded host while
 * keeping bounded the time the (synchronous) smoke run holds up the loop. */
#define SMOKE_TIMEOUT_S 10u
/* Bytes of the smoke run's stdout and stderr kept for the verdict; the
 * answer "aegis-agent <version>\n" is well under this. */
#define SMOKE_KEEP_MAX 256u
/* Bytes it may print in all before it is killed as misbehaving: bounds the
 * read loop in count as the timeout bounds it in time. */
#define SMOKE_OUTPUT_MAX (1u << 20)

extern char **environ;

/* Child side, between fork and exec: async-signal-safe calls only. stdin is
 * /dev/null, stdout/stderr the pipes; every other descriptor is closed at exec
 * (the agent opens with O_CLOEXEC; close_range makes sure of it), so the new
 * binary sees neither the connection nor the state dir lock. If exec fails,
 * its errno goes to the parent through xfd (closed by a successful exec). */
static void smoke_child(const char *exe, int nullfd, int outfd, int errfd, int xfd, long maxfd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Lift everything above 2 first: if the agent runs with 0..2 closed, one
     * of these may sit on a slot that the dup2 calls below overwrite (and
     * dup2 onto itself would keep its close-on-exec flag). */
    int lift[4] = {nullfd, outfd, errfd, xfd};
    for (int i = 0; i < 4; i++)
        if ((lift[i] = fcntl(lift[i], F_DUPFD_CLOEXEC, 3)) < 0)
            goto out;
    xfd = lift[3];
    for (int i = 0; i < 3; i++)
        if (dup2(lift[i], i) < 0)
            goto out;
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
        for (long fd = 3; fd < maxfd; fd++)
            fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    char *argv[] = {(char *)exe, (char *)"version", NULL};
    execve(exe, argv, environ);
out:;
    int e = errno;
    ssize_t w = write(xfd, &e, sizeof(e));
    (void)w;
    _exit(127);
}

/* Printable, one line, no quotes (it ends up in a log field), at most 80
 * characters of what the child wrote. */
static void shown(const char *s, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen && j < 80; i++) {
        if (s[i] == '\n' && i + 1 == n)
            break;
        out[j++] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\'' ? s[i] : '?';
    }
    out[j] = '\0';
}

/*
 * Runs `exe version` before the swap, so a new binary that cannot even start
 * (truncated, wrong architecture, missing library, crashing at start) is never
 * installed: such a binary would never reach the trial deadline that rolls
 * back a version that starts but cannot authenticate. It must exit 0 within
 * SMOKE_TIMEOUT_S, printing exactly "aegis-agent <want>". Returns 0, or -1
 * with a one-line reason in why. No shell is involved.
 */
static int smoke_run(const char *exe, const char *want, char *why, size_t whylen)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, xp[2] = {-1, -1}, pidfd = -1, rv = -1;
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
        pipe2(xp, O_CLOEXEC) != 0) {
        snprintf(why, whylen, "cannot set it up: %s", strerror(errno));
        goto close_fds;
    }
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 65536)
        maxfd = 65536;
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "cannot fork: %s", strerror(errno));
        goto close_fds;
    }
    if (pid == 0)
        smoke_child(exe, nullfd, out[1], err[1], xp[1], maxfd);
    close(out[1]);
    close(err[1]);
    close(xp[1]);
    out[1] = err[1] = xp[1] = -1;
    /* A pidfd turns "the child exited" into one more readable descriptor;
     * without one (kernel < 5.3) the loop polls in 20 ms steps. */
#ifdef SYS_pidfd_open
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif

    char keep[2][SMOKE_KEEP_MAX], scratch[4096];
    size_t kept[2] = {0, 0}, total = 0;
    int fds[3] = {out[0], err[0], xp[0]}, open_fds = 3, reaped = 0, status = 0, exec_errno = 0;
    int timed_out = 0;
    const char *verdict = NULL;
    aegis_tstamp deadline = aegis_now() + SMOKE_TIMEOUT_S * AEGIS_NS_PER_S;
    while (open_fds > 0 || !reaped) {
        if (!reaped) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                reaped = 1;
            else if (w < 0 && errno != EINTR) {
                reaped = 1; /* no longer ours to wait for: never signal that pid */
                verdict = "lost track of it (waitpid failed)";
                break;
            }
        }
        if (open_fds == 0 && reaped)
            break;
        aegis_tstamp now = aegis_now();
        if (now >= deadline) {
            timed_out = 1;
            break;
        }
        struct pollfd p[4];
        nfds_t np = 0;
        int which[4];
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0) {
                p[np] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                which[np++] = i;
            }
        if (!reaped && pidfd >= 0) {
            p[np] = (struct pollfd){.fd = pidfd, .events = POLLIN};
            which[np++] = 3;
        }
        uint64_t left_ms = (deadline - now) / AEGIS_NS_PER_MS + 1;
        if (!reaped && pidfd < 0 && left_ms > 20)
            left_ms = 20;
        int n = poll(p, np, (int)left_ms);
        if (n < 0 && errno != EINTR) {
            verdict = "lost track of it (poll failed)";
            break;
        }
        for (nfds_t k = 0; n > 0 && k < np; k++) {
            int i = which[k];
            if (i == 3 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r;
            if (i == 2) {
                r = read(fds[i], &exec_errno, sizeof(exec_errno));
            } else {
                size_t room = SMOKE_KEEP_MAX - kept[i];
                r = room ? read(fds[i], keep[i] + kept[i], room)
                         : read(fds[i], scratch, sizeof(scratch));
                if (r > 0 && room)
                    kept[i] += (size_t)r;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || i == 2) {
                close(fds[i]);
                fds[i] = -1;
                open_fds--;
                continue;
            }
            total += (size_t)r;
        }
        if (total > SMOKE_OUTPUT_MAX) {
            verdict = "it printed more than 1 MiB";
            break;
        }
    }
    if (!reaped) {
        /* pid is still ours (not reaped, at worst a zombie): SIGKILL cannot
         * be caught, so the blocking wait ends. */
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    char text[96];
    if (timed_out) {
        snprintf(why, whylen, "no answer within %u s (killed)", SMOKE_TIMEOUT_S);
    } else if (verdict) {
        snprintf(why, whylen, "%s", verdict);
    } else if (exec_errno) {
        snprintf(why, whylen, "cannot execute it: %s", strerror(exec_errno));
    } else if (WIFSIGNALED(status)) {
        snprintf(why, whylen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        shown(keep[1], kept[1], text, sizeof(text));
        snprintf(why, whylen, "exit status %d%s%s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                 text[0] ? ": " : "", text);
    } else {
        char expect[AGENT_VERSION_MAX + 16];
        int el = snprintf(expect, sizeof(expect), "aegis-agent %s\n", want);
        if (el > 0 && (size_t)el == kept[0] && memcmp(keep[0], expect, kept[0]) == 0) {
            rv = 0;
        } else {
            shown(keep[0], kept[0], text, sizeof(text));
            snprintf(why, whylen, "version mismatch: it prints '%s', the signed version is %s",
                     text, want);
        }
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    out[0] = err[0] = xp[0] = -1;
close_fds:
    if (pidfd >= 0)
        close(pidfd);
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (xp[i] >= 0)
            close(xp[i]);
    }
    if (nullfd >= 0)
        close(nullfd);
    return rv;
}

void agent_update_install(struct agent *a, struct agent_job *job, const char *path)
{
    const Aegis__V1__UpdateAgent *u = job->cmd->update_agent;
    char d[600];
    if (strcmp(job->meta.version, u->version) != 0) {
        snprintf(d, sizeof(d),
                 "failed: the signed artifact is version \"%.60s\", the command asked for %.60s",
                 job->meta.version, u->version);
        agent_exec_job_done(a, job, 0, d, NULL, 0);
        return;
    }
    char newp[4200], prev[4200], dir[4096];
    snprintf(newp, sizeof(newp), "%s.new", a->exe_path);
    snprintf(prev, sizeof(prev), "%s.prev", a->exe_path);
    snprintf(dir, sizeof(dir), "%s", a->exe_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int rv = copy_file(path, newp, 0755);
    char why[300];
    if (rv == 0 && smoke_run(newp, u->version, why, sizeof(why)) != 0) {
        /* nothing is swapped: the running binary and .prev stay as they are */
        unlink(newp);
        AEGIS_LOG(&a->log, AEGIS_LOG_ERROR, "event=update_smoke_failed to=%s reason=\"%s\"",
                  u->version, why);
        snprintf(d, sizeof(d), "failed: new binary failed its smoke run: %s", why);
        agent_exec_job_done(a, job, 0, d, NULL, 0);
        return;
    }
    if (rv == 0) {
        unlink(prev);
        if (link(a->exe_path, prev) != 0)
            rv = copy_file(a->exe_path, prev, 0755);
    }
    struct marker m;
    memset(&m, 0, sizeof(m));
    snprintf(m.state, sizeof(m.state), "trial");
    snprintf(m.cmd, sizeof(m.cmd), "%s", job->cmd->id);
    m.seq = job->cmd->sequence;
    snprintf(m.from, sizeof(m.from), "%s", agent_version_string());
    snprintf(m.to, sizeof(m.to), "%s", u->version);
    snprintf(m.exe, sizeof(m.exe), "%s", a->exe_path);
    unsigned secs =
        a->opts->update_deadline_s ? a->opts->update_deadline_s : AGENT_UPDATE_DEADLINE_S;
    m.deadline = aegis_wallclock() + secs * AEGIS_NS_PER_S;
    if (rv == 0)
        rv = marker_write(a->sd, &m);
    if (rv == 0 && rename(newp, a->exe_path) != 0)
        rv = -errno;
    if (rv != 0) {
        unlink(newp);
        marker_remove(a->sd);
        snprintf(d, sizeof(d), "failed: cannot install the new binary beside %.300s: %s",
                 a->exe_path, aegis_strerror(rv));
        agent_exec_job_done(a, job, 0, d, NULL, 0);
        return;
    }
    agent_io_fsync_dir(NULL, dir);
    snprintf(d, sizeof(d), "installed version %s; restarting to verify it", u->version);
    agent_ack(a, job->cmd->id, job->cmd->sequence, AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING,
              0, d, NULL, 0);
    snprintf(a->update_cmd, sizeof(a->update_cmd), "%s", job->cmd->id);
    AEGIS_LOG(&a->log, AEGIS_LOG_INFO, "event=update_installed from=%s to=%s", m.from, m.to);
    /* The job stays "running" (not finished in the seen journal): the new
     * process owns its outcome. */
    agent_restart(a);
}

int agent_update_check(const char *state_dir, unsigned max_starts)
{
    char err[512] = "";
    struct agent_state_dir *sd = NULL;
    struct marker m;
    int rv = agent_state_dir_open(state_dir, 0, NULL, NULL, err, sizeof(err), &sd);
    if (rv == 0)
        rv = agent_state_dir_lock(sd, getpid(), err, sizeof(err));
    if (rv != 0) {
        /* -EBUSY: an agent runs on this directory; it keeps its own deadline */
        fprintf(stderr, "aegis-agent update-check: %s\n", err[0] ? err : aegis_strerror(rv));
        rv = rv == -EBUSY ? 0 : -1;
        goto out;
    }
    rv = marker_read(sd, &m);
    if (rv != 0 || strcmp(m.state, "trial") != 0) {
        /* no update under way, or its outcome is waiting for the agent to ack it */
        if (rv != 0 && rv != -ENOENT)
            fprintf(stderr, "aegis-agent update-check: %s/%s: %s (the agent will drop it)\n",
                    state_dir, AGENT_FILE_UPDATE, aegis_strerror(rv));
        rv = 0;
        goto out;
    }
    char prev[4200];
    struct stat se, sp;
    snprintf(prev, sizeof(prev), "%s.prev", m.exe);
    if (stat(prev, &sp) != 0 ||
        (stat(m.exe, &se) == 0 && se.st_dev == sp.st_dev && se.st_ino == sp.st_ino))
        goto out; /* the swap never happened: the old binary starts and acks "interrupted" */
    m.starts++;
    char why[200] = "";
    if (m.starts >= max_starts)
        snprintf(why, sizeof(why), "started %u times without authenticating", m.starts);
    else if (aegis_wallclock() >= m.deadline)
        snprintf(why, sizeof(why), "its deadline passed before it authenticated");
    if (!why[0]) {
        if ((rv = marker_write(sd, &m)) != 0)
            fprintf(stderr, "aegis-agent update-check: cannot count the start in %s/%s: %s\n",
                    state_dir, AGENT_FILE_UPDATE, aegis_strerror(rv));
        else
            fprintf(stderr, "aegis-agent update-check: version %s on trial, start %u of %u\n", m.to,
                    m.starts, max_starts);
    } else if ((rv = restore_prev(sd, &m, why)) != 0) {
        fprintf(stderr, "aegis-agent update-check: %s; cannot restore %s: %s\n", why, prev,
                strerror(-rv));
    } else {
        fprintf(stderr, "aegis-agent update-check: %s; rolled back to %s\n", why, m.from);
    }
out:
    agent_state_dir_del(sd);
    return rv == 0 ? 0 : 1;
}
