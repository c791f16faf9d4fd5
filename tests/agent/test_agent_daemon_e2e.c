/*
 * aegis-agent end to end against a fake control server (agentd_fake.c) on
 * loopback: enroll -> run -> commands -> acks, refused commands, artifacts
 * with resume and tamper checks, telemetry, agent killed mid-command,
 * server restart, self-update (success, downgrade, rollback), SIGTERM.
 *
 * The agent runs as a real process (a copy of the built binary, since a
 * self-update replaces it). Every wait has a deadline; every process this
 * test starts is stopped by its PID.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "agent_crypto.h"
#include "agent_msg.h"
#include "agent_test_util.h"
#include "agentd_fake.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef AGENT_BIN
#    error "AGENT_BIN must point at aegis-agent"
#endif

#define S_RECEIVED AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RECEIVED
#define S_RUNNING AEGIS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING
#define S_OK AEGIS__V1__COMMAND_STATE__COMMAND_STATE_SUCCEEDED
#define S_FAILED AEGIS__V1__COMMAND_STATE__COMMAND_STATE_FAILED

static struct ev_loop *loop;
static struct fake F;
static char tmp[256], state[512], bin[512], mid[512], logpath[512], notify[512];
static int notify_fd = -1;
static pid_t agent_pid = -1;
static char port_s[16];

static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

#define WAIT_FOR(expr, secs)                                                                       \
    do {                                                                                           \
        aegis_tstamp end_ = aegis_now() + (aegis_tstamp)((secs)*1e9);                              \
        while (!(expr) && aegis_now() < end_)                                                      \
            ev_run(loop, EVRUN_ONCE);                                                              \
    } while (0)

static void dump_log(void)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -n 40 %s >&2", logpath);
    if (system(cmd) != 0)
        fprintf(stderr, "(no agent log)\n");
}

static pid_t spawn(char *const argv[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* killed with this test even when it aborts (a failed assertion in the fake); the
         * setting survives the agent's own re-exec */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("NOTIFY_SOCKET", notify, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Drives the loop (the fake server lives in it) until pid exits. */
static int wait_exit(pid_t pid, double secs, int *pstatus)
{
    int st = 0;
    pid_t r = 0;
    WAIT_FOR((r = waitpid(pid, &st, WNOHANG)) == pid, secs);
    if (r != pid)
        return 0;
    *pstatus = st;
    return 1;
}

static void stop_pid(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    int st;
    kill(pid, sig);
    if (!wait_exit(pid, 10, &st)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
}

/* Runs an aegis-agent subcommand to completion; returns its exit code. */
static int run_cli(char *const argv[])
{
    pid_t pid = spawn(argv);
    int st = 0;
    if (!wait_exit(pid, 60, &st)) {
        stop_pid(pid, SIGKILL);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int log_has(const char *needle)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (agent_test_read(logpath, &d, &n) != 0)
        return 0;
    d = realloc(d, n + 1);
    d[n] = '\0';
    int found = strstr((char *)d, needle) != NULL;
    free(d);
    return found;
}

static void clear_log(void)
{
    int fd = open(logpath, O_WRONLY | O_TRUNC | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
}

static int notified(void)
{
    char buf[256];
    ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, "READY=1") != NULL;
}

static void start_agent2(const char *const *extra, size_t nextra)
{
    char *argv[20] = {
        bin, "run",         "--state-dir", state, "--machine-id-file", mid, "--update-deadline",
        "8", "--log-level", "debug"};
    size_t n = 10;
    for (size_t i = 0; i < nextra && n < 19; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    agent_pid = spawn(argv);
    assert_true(agent_pid > 0);
}

static void start_agent(const char *extra)
{
    start_agent2(&extra, extra ? 1 : 0);
}

static int status_has(const char *needle)
{
    char path[600], buf[8192];
    snprintf(path, sizeof(path), "%s/status.json", state);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static size_t push_action(const char *name, const char *k, const char *v, unsigned flags)
{
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    Aegis__V1__RunAction__ArgsEntry e = AEGIS__V1__RUN_ACTION__ARGS_ENTRY__INIT, *ep = &e;
    ra.name = (char *)name;
    if (k) {
        e.key = (char *)k;
        e.value = (char *)v;
        ra.args = &ep;
        ra.n_args = 1;
    }
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    return fake_push(&F, &c, flags);
}

static size_t push_load(size_t art, int kind, int fetch_only)
{
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__LoadArtifact la = AEGIS__V1__LOAD_ARTIFACT__INIT;
    la.sha256.data = F.arts[art].sha;
    la.sha256.len = 32;
    la.kind = (Aegis__V1__ArtifactKind)kind;
    la.fetch_only = fetch_only;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT;
    c.load_artifact = &la;
    return fake_push(&F, &c, 0);
}

static size_t push_update(size_t art, const char *version)
{
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__UpdateAgent u = AEGIS__V1__UPDATE_AGENT__INIT;
    u.sha256.data = F.arts[art].sha;
    u.sha256.len = 32;
    u.version = (char *)version;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT;
    c.update_agent = &u;
    return fake_push(&F, &c, 0);
}

#define ID(i) (F.cmds[i].id)

static void copy_file(const char *from, const char *to)
{
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(agent_test_read(from, &d, &n), 0);
    assert_int_equal(agent_test_write(to, d, n), 0);
    chmod(to, 0755);
    free(d);
}

static int setup(void **st)
{
    (void)st;
    agent_test_mkdtemp(tmp, sizeof(tmp));
    snprintf(state, sizeof(state), "%s/state", tmp);
    snprintf(mid, sizeof(mid), "%s/machine-id", tmp);
    snprintf(logpath, sizeof(logpath), "%s/agent.log", tmp);
    snprintf(notify, sizeof(notify), "%s/notify", tmp);
    char bdir[400];
    snprintf(bdir, sizeof(bdir), "%s/bin", tmp);
    mkdir(bdir, 0700);
    snprintf(bin, sizeof(bin), "%s/aegis-agent", bdir);
    copy_file(AGENT_BIN, bin);
    agent_test_write(mid, "0123456789abcdef0123456789abcdef\n", 33);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(notify) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, notify, strlen(notify) + 1);
    if (bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -1;
    loop = ev_loop_new(EVFLAG_AUTO);
    static ev_timer t;
    ev_timer_init(&t, tick, 0.02, 0.02);
    ev_timer_start(loop, &t);
    fake_init(&F, loop);
    if (fake_start(&F) != 0)
        return -1;
    snprintf(port_s, sizeof(port_s), "127.0.0.1:%u", F.port);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    stop_pid(agent_pid, SIGKILL);
    fake_free(&F);
    close(notify_fd);
    ev_loop_destroy(loop);
    if (getenv("AEGIS_KEEP_TMP") == NULL)
        agent_test_rmtree(tmp);
    return 0;
}

static void test_enroll(void **st)
{
    (void)st;
    char *bad[] = {
        bin,           "enroll", "--server",          port_s, "--pin", F.pin, "--token", "wrong",
        "--state-dir", state,    "--machine-id-file", mid,    NULL};
    assert_int_not_equal(run_cli(bad), 0);
    assert_true(log_has("PERMISSION_DENIED"));
    char *good[] = {
        bin,           "enroll", "--server",          port_s, "--pin", F.pin, "--token", F.token,
        "--state-dir", state,    "--machine-id-file", mid,    NULL};
    int rc = run_cli(good);
    if (rc != 0)
        dump_log();
    assert_int_equal(rc, 0);
    char path[600], id[80];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/agent.key", state);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(state, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/agent.id", state);
    uint8_t *d = NULL;
    size_t n = 0;
    assert_int_equal(agent_test_read(path, &d, &n), 0);
    snprintf(id, sizeof(id), "%.*s", (int)n, (char *)d);
    free(d);
    assert_string_equal(id, F.agent_id);
    /* a second enroll must not clobber the identity */
    clear_log();
    assert_int_not_equal(run_cli(good), 0);
    assert_true(log_has("already enrolled as"));
    assert_int_equal(F.enrolls, 1);
}

static void test_run_commands(void **st)
{
    (void)st;
    clear_log();
    start_agent(NULL);
    int ready = 0;
    WAIT_FOR((ready |= notified()) && F.auths_ok >= 1 && F.subscribes >= 1, 20);
    if (!(ready && F.subscribes >= 1))
        dump_log();
    assert_true(ready);
    assert_int_equal(F.auths_ok, 1);
    assert_string_equal(F.last_version, "0.1.0");

    size_t ping = push_action("ping", "hello", "world", 0);
    WAIT_FOR(fake_find_ack(&F, ID(ping), S_OK), 10);
    const struct fake_ack *k = fake_find_ack(&F, ID(ping), S_OK);
    assert_non_null(k);
    assert_non_null(strstr(k->result, "\"pong\":true"));
    assert_non_null(strstr(k->result, "\"hello\":\"world\""));
    /* done at once: the outcome supersedes RECEIVED, so one Ack reaches the server */
    assert_int_equal(fake_count_acks(&F, ID(ping), 0), 1);
    assert_false(k->duplicate);

    size_t forged = push_action("ping", NULL, NULL, FAKE_BAD_SIG);
    size_t expired = push_action("ping", NULL, NULL, FAKE_EXPIRED);
    size_t unknown = push_action("rm -rf /", NULL, NULL, 0);
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__CollectInventory ci = AEGIS__V1__COLLECT_INVENTORY__INIT;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY;
    c.collect_inventory = &ci;
    size_t inv = fake_push(&F, &c, 0);
    Aegis__V1__Command pc = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__ApplyPolicy ap = AEGIS__V1__APPLY_POLICY__INIT;
    Aegis__V1__MapSnapshot snap = AEGIS__V1__MAP_SNAPSHOT__INIT;
    snap.version = 1;
    snap.ttl_seconds = 600;
    ap.snapshot = &snap;
    pc.payload_case = AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY;
    pc.apply_policy = &ap;
    size_t pol = fake_push(&F, &pc, 0);
    WAIT_FOR(fake_find_ack(&F, ID(pol), S_FAILED), 10);

    k = fake_find_ack(&F, ID(inv), S_OK);
    assert_non_null(k);
    assert_non_null(strstr(k->result, "\"agent_version\":\"0.1.0\""));
    assert_non_null(strstr(k->result, "\"memory_bytes\":"));
    k = fake_find_ack(&F, ID(expired), S_FAILED);
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "expired"));
    k = fake_find_ack(&F, ID(unknown), S_FAILED);
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "unknown action"));
    k = fake_find_ack(&F, ID(pol), S_FAILED);
    assert_non_null(strstr(k->detail, "--iface"));
    /* a forged command is never acked, never run */
    assert_int_equal(fake_count_acks(&F, ID(forged), 0), 0);
    assert_true(log_has("bad signature"));

    /* replay of an executed command: acked as a duplicate, not run again */
    fake_resend(&F, ping);
    WAIT_FOR(fake_count_acks(&F, ID(ping), S_OK) >= 2, 10);
    assert_int_equal(fake_count_acks(&F, ID(ping), S_OK), 2);
    for (size_t i = 0; i < F.nacks; i++)
        if (strcmp(F.acks[i].id, ID(ping)) == 0 && F.acks[i].state == S_OK && F.acks[i].duplicate)
            k = &F.acks[i];
    assert_true(k->duplicate);
    assert_int_equal(fake_count_acks(&F, ID(ping), S_RECEIVED), 0);

    /* telemetry: metrics and events reach the server, nothing twice */
    WAIT_FOR(F.metrics > 10 && F.events > 3, 15);
    assert_true(F.metrics > 10);
    assert_true(F.events > 3);
    assert_int_equal(F.dup_batches, 0);

    /* the local view */
    WAIT_FOR(status_has("\"connection\": \"connected\""), 5);
    clear_log();
    char *sargv[] = {bin, "status", "--state-dir", state, NULL};
    assert_int_equal(run_cli(sargv), 0);
    assert_true(log_has("connection"));
    assert_true(log_has(F.agent_id));
}

static void test_artifacts(void **st)
{
    (void)st;
    size_t n = 150000;
    uint8_t *raw = malloc(n);
    uint64_t x = 88172645463325252u;
    for (size_t i = 0; i < n; i++) { /* incompressible: the fetch needs several chunks */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        raw[i] = (uint8_t)x;
    }
    size_t good = fake_add_artifact(&F, "blob", AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE, "1",
                                    raw, n, 1, 0);
    F.arts[good].cut_after = 40000; /* the first download is interrupted */
    size_t nf = F.nfetch;
    size_t load = push_load(good, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE, 0);
    WAIT_FOR(fake_count_acks(&F, ID(load), S_OK) + fake_count_acks(&F, ID(load), S_FAILED), 20);
    const struct fake_ack *k = fake_find_ack(&F, ID(load), S_OK);
    if (k == NULL)
        dump_log();
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "loaded"));
    assert_int_equal(F.nfetch, nf + 2);
    assert_int_equal(F.fetch_offsets[nf], 0);
    assert_int_equal(F.fetch_offsets[nf + 1], 40000); /* resumed, not restarted */
    char hex[65], path[800];
    aegis_hex_encode(F.arts[good].sha, 32, hex, sizeof(hex));
    snprintf(path, sizeof(path), "%s/artifacts/%s.blob.data", state, hex);
    uint8_t *d = NULL;
    size_t dl = 0;
    assert_int_equal(agent_test_read(path, &d, &dl), 0);
    assert_int_equal(dl, n);
    assert_memory_equal(d, raw, n);
    free(d);

    size_t bad = fake_add_artifact(&F, "tampered", AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_FILE,
                                   "1", raw, 5000, 0, 1);
    size_t tl = push_load(bad, 0, 0);
    size_t wrongkind = push_load(good, AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY, 0);
    WAIT_FOR(fake_find_ack(&F, ID(wrongkind), S_FAILED), 20);
    k = fake_find_ack(&F, ID(tl), S_FAILED);
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "SHA-256"));
    k = fake_find_ack(&F, ID(wrongkind), S_FAILED);
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "kind"));
    snprintf(path, sizeof(path), "%s/artifacts/%s.blob", state, hex);
    free(raw);
}

static void test_kill_mid_command(void **st)
{
    (void)st;
    size_t sl = push_action("sleep", "seconds", "30", 0);
    WAIT_FOR(fake_find_ack(&F, ID(sl), S_RECEIVED), 10);
    assert_non_null(fake_find_ack(&F, ID(sl), S_RECEIVED));
    kill(agent_pid, SIGKILL);
    int stt;
    assert_true(wait_exit(agent_pid, 10, &stt));
    agent_pid = -1;
    int auths = F.auths_ok;
    start_agent(NULL);
    WAIT_FOR(fake_find_ack(&F, ID(sl), S_FAILED), 30);
    const struct fake_ack *k = fake_find_ack(&F, ID(sl), S_FAILED);
    if (k == NULL)
        dump_log();
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "interrupted"));
    assert_null(fake_find_ack(&F, ID(sl), S_OK)); /* run at most once */
    assert_true(F.auths_ok > auths);
    size_t ping = push_action("ping", NULL, NULL, 0);
    WAIT_FOR(fake_find_ack(&F, ID(ping), S_OK), 10);
    assert_non_null(fake_find_ack(&F, ID(ping), S_OK));
}

/* Every batch id above `after` up to the highest received arrived exactly
 * once. Ids of one agent process are consecutive and sent oldest first, so
 * a gap is a lost batch. (Across an agent crash ids may jump: the spool
 * reserves them in blocks.) */
static int ids_complete_after(uint64_t after)
{
    uint64_t hi = after;
    size_t n = 0;
    for (size_t i = 0; i < F.nbatches; i++) {
        if (F.batches[i] > after) {
            n++;
            hi = F.batches[i] > hi ? F.batches[i] : hi;
        }
    }
    return n > 0 && hi - after == n;
}

static uint64_t max_batch(void)
{
    uint64_t hi = 0;
    for (size_t i = 0; i < F.nbatches; i++)
        hi = F.batches[i] > hi ? F.batches[i] : hi;
    return hi;
}

/* Smallest reconnect delay logged after a line containing `marker`. */
static long min_delay_after(const char *marker)
{
    uint8_t *d = NULL;
    size_t n = 0;
    if (agent_test_read(logpath, &d, &n) != 0)
        return -1;
    d = realloc(d, n + 1);
    d[n] = '\0';
    long best = -1;
    int armed = 0;
    char *save = NULL;
    for (char *l = strtok_r((char *)d, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strstr(l, marker) && strstr(l, "auth_failed"))
            armed = 1;
        char *p = strstr(l, "event=reconnect_scheduled delay_ms=");
        if (armed && p) {
            long v = strtol(p + 35, NULL, 10);
            best = best < 0 || v < best ? v : best;
            armed = 0;
        }
    }
    free(d);
    return best;
}

static void test_server_restart(void **st)
{
    (void)st;
    size_t sl = push_action("sleep", "seconds", "2", 0);
    WAIT_FOR(fake_find_ack(&F, ID(sl), S_RECEIVED), 10);
    assert_non_null(fake_find_ack(&F, ID(sl), S_RECEIVED));
    fake_stop(&F);
    /* the outcome is recorded while the server is down: a durable pending ack */
    WAIT_FOR(status_has("\"pending_acks\": 1,"), 15);
    assert_true(status_has("\"pending_acks\": 1,"));
    size_t batches = F.nbatches;
    uint64_t before = max_batch();
    int auths = F.auths_ok;
    assert_int_equal(fake_start(&F), 0); /* same port, same "database" */
    WAIT_FOR(fake_find_ack(&F, ID(sl), S_OK) && F.nbatches > batches + 2, 120);
    if (fake_find_ack(&F, ID(sl), S_OK) == NULL)
        dump_log();
    assert_non_null(fake_find_ack(&F, ID(sl), S_OK));
    assert_true(F.auths_ok > auths);
    assert_int_equal(F.dup_batches, 0);
    assert_true(ids_complete_after(before)); /* batches spooled during the outage arrived */
}

static size_t push_policy(uint64_t version, int rollback)
{
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__ApplyPolicy ap = AEGIS__V1__APPLY_POLICY__INIT;
    Aegis__V1__MapSnapshot snap = AEGIS__V1__MAP_SNAPSHOT__INIT;
    Aegis__V1__Rule r = AEGIS__V1__RULE__INIT, *rp = &r;
    r.id = 7;
    r.cidr = "192.0.2.0/24"; /* TEST-NET-1: nothing real is blocked */
    r.proto = AEGIS__V1__RULE_PROTO__RULE_PROTO_TCP;
    r.port = 9;
    snap.version = version;
    snap.service_id = 1;
    snap.deny = &rp;
    snap.n_deny = 1;
    snap.ttl_seconds = 600;
    snap.egress_mode = AEGIS__V1__ENFORCE_MODE__ENFORCE_MODE_DENY_LIST;
    ap.snapshot = &snap;
    ap.policy_version = version;
    ap.rollback = rollback;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY;
    c.apply_policy = &ap;
    return fake_push(&F, &c, 0);
}

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* ApplyPolicy through libaegis_bpf on a veth made for the test, with its
 * own bpffs pin directory (root only; skipped otherwise). */
static void test_policy(void **st)
{
    (void)st;
    char ifa[16], ifb[16], pin[64], cmd[256];
    snprintf(ifa, sizeof(ifa), "agd%ua", (unsigned)getpid() % 100000u);
    snprintf(ifb, sizeof(ifb), "agd%ub", (unsigned)getpid() % 100000u);
    snprintf(pin, sizeof(pin), "/sys/fs/bpf/aegis-agentd-%u", (unsigned)getpid());
    snprintf(cmd, sizeof(cmd),
             "ip link add %s type veth peer name %s 2>/dev/null && ip link set %s up", ifa, ifb,
             ifa);
    if (geteuid() != 0 || sh(cmd) != 0) {
        print_message("skipped: needs root and veth support\n");
        skip();
    }
    stop_pid(agent_pid, SIGTERM);
    int auths = F.auths_ok;
    const char *extra[] = {"--iface", ifa, "--bpf-pin-dir", pin};
    start_agent2(extra, 4);
    WAIT_FOR(F.auths_ok > auths && F.sub_call, 20);
    size_t p5 = push_policy(5, 0);
    size_t p3 = push_policy(3, 0);
    size_t p3r = push_policy(3, 1);
    WAIT_FOR(fake_find_ack(&F, ID(p3r), S_OK) || fake_find_ack(&F, ID(p3r), S_FAILED), 20);
    size_t rm0 = F.rule_metrics;
    WAIT_FOR(F.rule_metrics > rm0, 10);
    const struct fake_ack *k5 = fake_find_ack(&F, ID(p5), S_OK);
    const struct fake_ack *k3 = fake_find_ack(&F, ID(p3), S_FAILED);
    const struct fake_ack *k3r = fake_find_ack(&F, ID(p3r), S_OK);
    size_t rm = F.rule_metrics;
    int policy3 = status_has("\"policy_version\": 3,");
    stop_pid(agent_pid, SIGTERM);
    snprintf(cmd, sizeof(cmd), "ip link del %s; rm -rf %s", ifa, pin);
    sh(cmd);
    start_agent(NULL); /* the rest runs without enforcement */
    if (k5 == NULL)
        dump_log();
    assert_non_null(k5);
    assert_non_null(strstr(k5->detail, "applied policy version 5"));
    assert_non_null(k3);
    assert_non_null(strstr(k3->detail, "older than the enforced 5"));
    assert_non_null(k3r);
    assert_non_null(strstr(k3r->detail, "rollback"));
    assert_true(policy3);
    assert_true(rm > rm0); /* per-rule BPF counters came back as telemetry */
    WAIT_FOR(F.auths_ok > auths + 1, 20);
}

#ifdef AGENT_NEXT_BIN
/*
 * A build that passes its smoke run but dies on every start before it authenticates (here a
 * script that prints the right version and kills itself otherwise) never reaches its own
 * deadline. The test plays the service manager: after each death it runs the previous binary's
 * `update-check` (aegis-agent.service's ExecStartPre) and starts the agent again. The third
 * start is refused: update-check puts 99.0.0 back, which acks the update FAILED and says why.
 */
static void crash_loop_rolled_back(void)
{
    static const char script[] =
        "#!/bin/sh\n"
        "if [ \"$1\" = version ]; then echo 'aegis-agent 101.0.0'; exit 0; fi\n"
        "kill -SEGV $$\n";
    size_t art =
        fake_add_artifact(&F, "aegis-agent", AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY,
                          "101.0.0", (const uint8_t *)script, sizeof(script) - 1, 1, 0);
    int auths = F.auths_ok;
    size_t up = push_update(art, "101.0.0");
    char prev[600];
    snprintf(prev, sizeof(prev), "%s.prev", bin);
    int deaths = 0;
    while (deaths < 6) {
        int st = 0;
        assert_true(wait_exit(agent_pid, 30, &st));
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV); /* the new build died */
        deaths++;
        char *cargv[] = {prev, "update-check", "--state-dir", state, NULL};
        assert_int_equal(run_cli(cargv), 0);
        start_agent(NULL);
        if (access(prev, F_OK) != 0)
            break; /* renamed back over the binary: 99.0.0 is starting */
    }
    /* started by the re-exec and twice by the "service manager"; the third restart found 99.0.0 */
    assert_int_equal(deaths, 3);
    WAIT_FOR(fake_find_ack(&F, ID(up), S_FAILED) || fake_find_ack(&F, ID(up), S_OK), 60);
    const struct fake_ack *k = fake_find_ack(&F, ID(up), S_FAILED);
    if (k == NULL)
        dump_log();
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "started 3 times without authenticating"));
    assert_non_null(strstr(k->detail, "rolled back to 99.0.0"));
    assert_null(fake_find_ack(&F, ID(up), S_OK));
    WAIT_FOR(F.auths_ok > auths, 20);
    assert_string_equal(F.last_version, "99.0.0");
    char *vargv[] = {bin, "version", NULL};
    clear_log();
    assert_int_equal(run_cli(vargv), 0);
    assert_true(log_has("aegis-agent 99.0.0"));
}
#endif

#ifdef AGENT_NEXT_BIN
static void test_self_update(void **st)
{
    (void)st;
    uint8_t *nb = NULL;
    size_t nl = 0;
    assert_int_equal(agent_test_read(AGENT_NEXT_BIN, &nb, &nl), 0);
    size_t art =
        fake_add_artifact(&F, "aegis-agent", AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY,
                          "99.0.0", nb, nl, 1, 0);
    free(nb);
    size_t down = push_update(art, "0.0.1");
    WAIT_FOR(fake_find_ack(&F, ID(down), S_FAILED), 10);
    const struct fake_ack *k = fake_find_ack(&F, ID(down), S_FAILED);
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "downgrade refused"));

    int auths = F.auths_ok;
    size_t up = push_update(art, "99.0.0");
    WAIT_FOR(fake_find_ack(&F, ID(up), S_OK) || fake_find_ack(&F, ID(up), S_FAILED), 90);
    k = fake_find_ack(&F, ID(up), S_OK);
    if (k == NULL)
        dump_log();
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "updated from 0.1.0 to 99.0.0"));
    /* RUNNING reaches the server only if it was sent before the re-exec; once the outcome is
     * journaled it supersedes RUNNING, which must never arrive after it */
    int seen_ok = 0;
    for (size_t i = 0; i < F.nacks; i++)
        if (strcmp(F.acks[i].id, ID(up)) == 0) {
            assert_false(seen_ok && F.acks[i].state == S_RUNNING);
            seen_ok |= F.acks[i].state == S_OK;
        }
    assert_string_equal(F.last_version, "99.0.0");
    assert_true(F.auths_ok > auths);

#    ifdef AGENT_NEXT2_BIN
    /* a build the server refuses: rolled back to 99.0.0 after the deadline */
    assert_int_equal(agent_test_read(AGENT_NEXT2_BIN, &nb, &nl), 0);
    size_t art2 =
        fake_add_artifact(&F, "aegis-agent", AEGIS__V1__ARTIFACT_KIND__ARTIFACT_KIND_AGENT_BINARY,
                          "100.0.0", nb, nl, 1, 0);
    free(nb);
    snprintf(F.refuse_version, sizeof(F.refuse_version), "100.0.0");
    size_t up2 = push_update(art2, "100.0.0");
    WAIT_FOR(fake_find_ack(&F, ID(up2), S_FAILED) || fake_find_ack(&F, ID(up2), S_OK), 120);
    k = fake_find_ack(&F, ID(up2), S_FAILED);
    if (k == NULL)
        dump_log();
    assert_non_null(k);
    assert_non_null(strstr(k->detail, "rolled back to 99.0.0"));
    assert_string_equal(F.last_version, "99.0.0");
    assert_true(F.auths_failed > 0);
    /* the server's retry-after (1000 ms) is a floor under the jitter */
    long d = min_delay_after("version refused");
    assert_true(d >= 1000);
    F.refuse_version[0] = '\0';
#    endif
    crash_loop_rolled_back();
    clear_log();
    char *vargv[] = {bin, "version", NULL};
    assert_int_equal(run_cli(vargv), 0);
    assert_true(log_has("aegis-agent 99.0.0"));
}
#endif

static long proc_field(pid_t pid, const char *key)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strstr(buf, key);
    return p ? strtol(p + strlen(key) + 1, NULL, 10) : -1;
}

/* Idle footprint, printed (never asserted): RSS and wake-ups of a
 * connected agent with the default 60 s telemetry cadence. */
static void test_idle_footprint(void **st)
{
    (void)st;
    stop_pid(agent_pid, SIGTERM);
    F.telemetry_interval_s = 60;
    int auths = F.auths_ok;
    start_agent(NULL);
    WAIT_FOR(F.auths_ok > auths && F.subscribes > 0 && F.sub_call != NULL, 20);
    assert_true(F.auths_ok > auths);
    /* let start-up work (first telemetry send, acks) settle */
    aegis_tstamp settle = aegis_now() + 3 * AEGIS_NS_PER_S;
    WAIT_FOR(aegis_now() > settle, 4);
    long v0 = proc_field(agent_pid, "voluntary_ctxt_switches:");
    long n0 = proc_field(agent_pid, "nonvoluntary_ctxt_switches:");
    aegis_tstamp end = aegis_now() + 30 * AEGIS_NS_PER_S;
    WAIT_FOR(aegis_now() > end, 31);
    long v1 = proc_field(agent_pid, "voluntary_ctxt_switches:");
    long n1 = proc_field(agent_pid, "nonvoluntary_ctxt_switches:");
    print_message("idle agent: VmRSS %ld kB, VmHWM %ld kB, wake-ups in 30 s: %ld voluntary, %ld "
                  "involuntary\n",
                  proc_field(agent_pid, "VmRSS:"), proc_field(agent_pid, "VmHWM:"), v1 - v0,
                  n1 - n0);
    assert_true(v1 >= v0);
}

static void test_sigterm(void **st)
{
    (void)st;
    int stt = -1;
    kill(agent_pid, SIGTERM);
    assert_true(wait_exit(agent_pid, 10, &stt));
    agent_pid = -1;
    assert_true(WIFEXITED(stt));
    assert_int_equal(WEXITSTATUS(stt), 0);
    assert_true(status_has("\"connection\": \"disconnected\""));
    assert_true(status_has("\"last_error\": \"stopped\""));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enroll),         cmocka_unit_test(test_run_commands),
        cmocka_unit_test(test_artifacts),      cmocka_unit_test(test_kill_mid_command),
        cmocka_unit_test(test_server_restart), cmocka_unit_test(test_policy),
#ifdef AGENT_NEXT_BIN
        cmocka_unit_test(test_self_update),
#endif
        cmocka_unit_test(test_idle_footprint), cmocka_unit_test(test_sigterm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
