/*
 * aegis-bench-fleet: thousands of simulated agents against a real aegis-control (issue 7).
 *
 *   aegis-bench-fleet --control BIN --pki DIR --db DSN --n N
 *                     [--scenario connect,idle,fanout,telemetry,artifact,restart,enroll]
 *                     [options, see usage()]
 *
 * The bench starts aegis-control itself (so it knows its PID for CPU and RSS, and can kill -9
 * and restart it), enrolls N pre-issued identities straight into PostgreSQL, then runs the
 * scenarios in order on the same fleet. Each scenario ends with one line
 * "RESULT mode=fleet scenario=NAME key=value ...". Numbers are printed, never asserted;
 * --check only makes the exit status say whether every agent authenticated and every ack
 * became durable (the ctest smoke test uses it).
 */
#include "bench_fleet.h"

#include <aegis/err.h>
#include <aegis/v1/operator.pb-c.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Extra control flags accepted with --control-arg. */
#define MAX_CTL_ARGS 16
/* Poll period of the database checks (the agents run between polls). */
#define POLL_NS (100 * AEGIS_NS_PER_MS)
/* Wake-up period of the loop, so wait loops notice deadlines without an event. */
#define TICK_S 0.05

struct opts {
    const char *control, *pki, *db, *scenarios, *operator_name, *artifact_sha, *log;
    const char *ctl_args[MAX_CTL_ARGS];
    int n_ctl_args;
    long n, parallel, idle_s, tel_s, tel_agents, tel_events, tel_batches, art_agents, enroll_n;
    long timeout_s, sources, idle_timeout_s;
    double loopback_gbps;
    int check;
    uint64_t seed;
};

static struct opts O = {.scenarios = "connect,idle,fanout",
                        .operator_name = "bench",
                        .log = "aegis-control.log",
                        .n = 100,
                        .idle_s = 60,
                        .tel_s = 20,
                        .tel_agents = 1000,
                        .tel_events = 500,
                        .tel_batches = 4,
                        .art_agents = 1000,
                        .enroll_n = 200,
                        .timeout_s = 120};

static struct fleet FL;
static struct ev_loop *loop;
static struct fleet_oper *oper;
static struct fleet_db *db;
static pid_t ctl_pid = -1;
static unsigned ctl_port;
static char instance_id[37];
static char server_addr[64], server_pin[AEGIS_PIN_STRLEN];
static int check_failed;

void fleet_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "aegis-bench-fleet: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (ctl_pid > 0) {
        kill(ctl_pid, SIGKILL);
        waitpid(ctl_pid, NULL, 0);
    }
    exit(1);
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* Runs the loop for ns; the periodic tick (main) bounds every ev_run(EVRUN_ONCE), so every
 * wait loop of this file checks its deadline at least every TICK_S. */
static void run_for(uint64_t ns)
{
    uint64_t end = aegis_now() + ns;
    while (aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
}

/* ---- the control process ------------------------------------------------------------- */

/* utime+stime of pid in microseconds, 0 if unreadable. */
static uint64_t cpu_us(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (uint64_t)(ut + st) * 1000000u / (uint64_t)sysconf(_SC_CLK_TCK);
}

/* CPU time of this process (the simulated fleet) in microseconds. */
static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
}

/* VmRSS of pid (0 = self) in bytes. */
static uint64_t rss(pid_t pid)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    unsigned long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024u;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static void ctl_start(unsigned port)
{
    char listen[64], db_arg[1100];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(db_arg, sizeof(db_arg), "%s", O.db);
    const char *argv[16 + MAX_CTL_ARGS];
    int c = 0;
    argv[c++] = O.control;
    argv[c++] = "--db";
    argv[c++] = db_arg;
    argv[c++] = "--pki";
    argv[c++] = O.pki;
    argv[c++] = "--listen";
    argv[c++] = listen;
    argv[c++] = "--metrics-listen";
    argv[c++] = "off";
    argv[c++] = "--instance-id";
    argv[c++] = instance_id;
    argv[c++] = "--log-level";
    argv[c++] = "warn";
    for (int i = 0; i < O.n_ctl_args; i++)
        argv[c++] = O.ctl_args[i];
    argv[c] = NULL;
    long off = file_size(O.log);
    pid_t pid = fork();
    if (pid < 0)
        fleet_die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(O.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(O.control, (char *const *)argv);
        _exit(127);
    }
    ctl_pid = pid;
    /* Ready when the daemon prints its port (bounded: 60 s). */
    uint64_t end = aegis_now() + 60 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            ctl_pid = -1;
            fleet_die("aegis-control exited (status %d); see %s", status, O.log);
        }
        FILE *f = fopen(O.log, "re");
        if (f) {
            char line[512];
            unsigned p = 0;
            fseek(f, off, SEEK_SET);
            while (fgets(line, sizeof(line), f))
                if (sscanf(line, "aegis-control ready port=%u", &p) == 1)
                    break;
            fclose(f);
            if (p) {
                ctl_port = p;
                snprintf(server_addr, sizeof(server_addr), "127.0.0.1:%u", p);
                return;
            }
        }
        run_for(20 * AEGIS_NS_PER_MS);
    }
    fleet_die("aegis-control did not print its ready line within 60 s; see %s", O.log);
}

static void ctl_kill9(void)
{
    if (ctl_pid <= 0)
        return;
    kill(ctl_pid, SIGKILL);
    waitpid(ctl_pid, NULL, 0);
    ctl_pid = -1;
}

static void ctl_stop(void)
{
    if (ctl_pid <= 0)
        return;
    kill(ctl_pid, SIGTERM);
    uint64_t end = aegis_now() + 20 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        if (waitpid(ctl_pid, NULL, WNOHANG) == ctl_pid) {
            ctl_pid = -1;
            return;
        }
        run_for(20 * AEGIS_NS_PER_MS);
    }
    ctl_kill9();
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
    if (!FL.nlat)
        return -1;
    return (double)FL.lat[(size_t)(p * (double)(FL.nlat - 1))] / 1e6;
}

static void agent_ids(size_t from, size_t n, char ***pids)
{
    char **ids = calloc(n, sizeof(*ids));
    if (!ids)
        fleet_die("out of memory");
    for (size_t i = 0; i < n; i++)
        ids[i] = FL.ids[from + i].agent_id;
    *pids = ids;
}

/* SendCommand to the whole fleet by label; returns the command id. */
static void send_command(const char *action, char id[37], unsigned *ptargeted)
{
    Aegis__V1__SendCommandRequest req = AEGIS__V1__SEND_COMMAND_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    Aegis__V1__Command c = AEGIS__V1__COMMAND__INIT;
    Aegis__V1__RunAction ra = AEGIS__V1__RUN_ACTION__INIT;
    t.selector = (char *)FLEET_LABEL_KEY "=" FLEET_LABEL_VALUE;
    ra.name = (char *)action;
    c.payload_case = AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION;
    c.run_action = &ra;
    req.target = &t;
    req.command = &c;
    req.lifetime_seconds = 3600;
    uint8_t buf[512], *out;
    size_t len = aegis__v1__send_command_request__pack(&req, buf), ol;
    char err[512];
    /* Shed (UNAVAILABLE): try again after a pause, as an operator would (bounded). */
    for (int attempt = 0;; attempt++) {
        if (fleet_oper_call(oper, "SendCommand", buf, len, 60, &out, &ol, err, sizeof(err)) == 0)
            break;
        if (attempt >= 20 || !strstr(err, "UNAVAILABLE"))
            fleet_die("%s", err);
        run_for(AEGIS_NS_PER_S);
    }
    Aegis__V1__SendCommandResponse *r = aegis__v1__send_command_response__unpack(NULL, ol, out);
    free(out);
    if (!r)
        fleet_die("SendCommand: undecodable reply");
    snprintf(id, 37, "%s", r->command_id);
    *ptargeted = r->targeted_agents;
    aegis__v1__send_command_response__free_unpacked(r, NULL);
}

/* Polls the deliveries of command id until `want` are succeeded (deadline); fills the
 * durable count and server-side latency percentiles (finished_at - issued_at, ms). */
static long poll_durable(const char *id, long want, uint64_t deadline, char out[][64])
{
    long got = -1;
    for (;;) {
        if (fleet_db_row(db,
                         "SELECT count(*) FILTER (WHERE d.status = 'succeeded'), count(*),"
                         " round((1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY"
                         "  extract(epoch FROM d.finished_at - c.issued_at)))::numeric, 1),"
                         " round((1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY"
                         "  extract(epoch FROM d.finished_at - c.issued_at)))::numeric, 1),"
                         " round((1000 * max(extract(epoch FROM d.finished_at - c.issued_at)))"
                         "  ::numeric, 1)"
                         " FROM deliveries d JOIN commands c ON c.id = d.command_id"
                         " WHERE d.command_id = $1::uuid",
                         id, out, 5) != 0)
            fleet_die("cannot poll deliveries");
        got = atol(out[0]);
        if (got >= want || aegis_now() >= deadline)
            return got;
        run_for(POLL_NS);
    }
}

static size_t count_ready(size_t n)
{
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        r += FL.agents[i].phase == FA_READY;
    return r;
}

/* ---- scenarios -------------------------------------------------------------------------- */

static uint64_t rss_before_agents;

static void scenario_connect(void)
{
    size_t n = (size_t)O.n;
    /* Client-side setup (TLS contexts) happens before the clock starts. */
    for (size_t i = 0; i < n; i++)
        if (fleet_make_endpoint(&FL, &FL.agents[i]) != 0)
            fleet_die("cannot create the endpoint of agent %zu", i);
    rss_before_agents = rss(ctl_pid);
    uint64_t b0 = self_cpu_us();
    uint64_t c0 = cpu_us(ctl_pid), t0 = aegis_now(),
             end = t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    size_t next = 0;
    size_t par = O.parallel > 0 ? (size_t)O.parallel : n;
    while (FL.st.ready < n && aegis_now() < end) {
        while (next < n && next - FL.st.auth_ok < par) {
            int rv = fleet_connect(&FL, &FL.agents[next]);
            if (rv != 0)
                fleet_die("connect agent %zu: %s", next, aegis_strerror(rv));
            next++;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    uint64_t t1 = aegis_now(), c1 = cpu_us(ctl_pid);
    uint64_t *auth = calloc(n, sizeof(*auth));
    size_t na = 0;
    for (size_t i = 0; i < n; i++)
        if (FL.agents[i].phase == FA_READY && auth)
            auth[na++] = FL.agents[i].t_auth - t0;
    if (auth)
        qsort(auth, na, sizeof(*auth), cmp_u64);
    double el = secs(t1 - t0);
    printf("RESULT mode=fleet scenario=connect n=%zu parallel=%zu authenticated=%llu seconds=%.3f "
           "auth_p50_ms=%.1f auth_p99_ms=%.1f handshakes_ok=%llu handshakes_failed=%llu "
           "retries=%llu auth_failed=%llu auth_shed=%llu server_cpu_s=%.2f server_cpu_pct=%.1f "
           "server_rss_mb=%.1f bench_rss_mb=%.1f bench_cpu_s=%.2f\n",
           n, par, (unsigned long long)FL.st.ready, el, na ? (double)auth[na / 2] / 1e6 : -1.0,
           na ? (double)auth[(size_t)(0.99 * (double)(na - 1))] / 1e6 : -1.0,
           (unsigned long long)FL.st.handshakes_ok, (unsigned long long)FL.st.handshakes_failed,
           (unsigned long long)FL.st.retries, (unsigned long long)FL.st.auth_failed,
           (unsigned long long)FL.st.auth_shed, (double)(c1 - c0) / 1e6,
           (double)(c1 - c0) / 1e4 / el, (double)rss(ctl_pid) / 1048576.0,
           (double)rss(0) / 1048576.0, (double)(self_cpu_us() - b0) / 1e6);
    fflush(stdout);
    free(auth);
    if (FL.st.ready < n) {
        check_failed = 1;
        fprintf(stderr, "aegis-bench-fleet: only %llu of %zu agents authenticated\n",
                (unsigned long long)FL.st.ready, n);
    }
}

static void scenario_idle(void)
{
    size_t n = (size_t)O.n;
    uint64_t closes0 = FL.st.closes, rx0 = FL.st.rx_pkts, tx0 = FL.st.tx_pkts;
    uint64_t c0 = cpu_us(ctl_pid), t0 = aegis_now(), b0 = self_cpu_us();
    run_for((uint64_t)O.idle_s * AEGIS_NS_PER_S);
    uint64_t c1 = cpu_us(ctl_pid), t1 = aegis_now();
    uint64_t r = rss(ctl_pid);
    double el = secs(t1 - t0), cpu = (double)(c1 - c0) / 1e6;
    printf("RESULT mode=fleet scenario=idle n=%zu seconds=%.1f ready=%zu server_rss_mb=%.1f "
           "server_rss_per_agent_kb=%.1f server_cpu_pct=%.2f server_cpu_s_per_min=%.2f "
           "disconnects=%llu pkts_to_server=%llu pkts_from_server=%llu bench_cpu_pct=%.2f\n",
           n, el, count_ready(n), (double)r / 1048576.0,
           (double)(r > rss_before_agents ? r - rss_before_agents : 0) / 1024.0 / (double)n,
           cpu * 100.0 / el, cpu * 60.0 / el, (unsigned long long)(FL.st.closes - closes0),
           (unsigned long long)(FL.st.tx_pkts - tx0), (unsigned long long)(FL.st.rx_pkts - rx0),
           (double)(self_cpu_us() - b0) / 1e4 / el);
    fflush(stdout);
}

static void scenario_fanout(void)
{
    size_t n = (size_t)O.n;
    char id[37], db_out[5][64];
    unsigned targeted = 0;
    FL.nlat = 0;
    uint64_t c0 = cpu_us(ctl_pid), b0 = self_cpu_us(), af0 = FL.st.acks_failed;
    FL.cmd_t0 = aegis_now();
    send_command("bench_fanout", id, &targeted);
    uint64_t rpc = aegis_now() - FL.cmd_t0;
    uint64_t end = FL.cmd_t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    while (FL.nlat < targeted && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t_all = aegis_now() - FL.cmd_t0, c1 = cpu_us(ctl_pid);
    FL.cmd_t0 = 0;
    long durable = poll_durable(id, (long)targeted, aegis_now() + 10 * AEGIS_NS_PER_S, db_out);
    qsort(FL.lat, FL.nlat, sizeof(uint64_t), cmp_u64);
    printf("RESULT mode=fleet scenario=fanout n=%zu targeted=%u acked=%zu durable=%ld "
           "sendcommand_ms=%.1f all_acked_s=%.3f p50_ms=%.1f p99_ms=%.1f max_ms=%.1f "
           "db_p50_ms=%s db_p99_ms=%s db_max_ms=%s acks_shed=%llu server_cpu_s=%.2f "
           "bench_cpu_s=%.2f command=%s\n",
           n, targeted, FL.nlat, durable, (double)rpc / 1e6, secs(t_all), pct_ms(0.5), pct_ms(0.99),
           FL.nlat ? (double)FL.lat[FL.nlat - 1] / 1e6 : -1.0, db_out[2], db_out[3], db_out[4],
           (unsigned long long)(FL.st.acks_failed - af0), (double)(c1 - c0) / 1e6,
           (double)(self_cpu_us() - b0) / 1e6, id);
    fflush(stdout);
    if (targeted != n || durable != (long)n) {
        check_failed = 1;
        fprintf(stderr, "aegis-bench-fleet: fan-out: %u targeted, %ld durable, want %zu\n",
                targeted, durable, n);
    }
}

static void scenario_telemetry(void)
{
    size_t k = (size_t)(O.tel_agents < O.n ? O.tel_agents : O.n);
    char before[1][64], after[1][64];
    if (fleet_db_row(db, "SELECT count(*) FROM telemetry", NULL, before, 1) != 0)
        fleet_die("cannot count telemetry rows");
    FL.tel_events_per_batch = (unsigned)O.tel_events;
    FL.tel_batches_per_call = (unsigned)O.tel_batches;
    FL.tel_running = 1;
    uint64_t e0 = FL.st.tel_events_committed, c0 = cpu_us(ctl_pid), t0 = aegis_now();
    for (size_t i = 0; i < k; i++)
        fleet_telemetry_call(&FL, &FL.agents[i]);
    run_for((uint64_t)O.tel_s * AEGIS_NS_PER_S);
    FL.tel_running = 0;
    /* Let the calls in flight finish (bounded), counting what they commit. */
    uint64_t end = aegis_now() + 60 * AEGIS_NS_PER_S;
    for (;;) {
        size_t busy = 0;
        for (size_t i = 0; i < k; i++)
            busy += FL.agents[i].tel != NULL;
        if (!busy || aegis_now() >= end)
            break;
        ev_run(loop, EVRUN_ONCE);
    }
    uint64_t t1 = aegis_now(), c1 = cpu_us(ctl_pid);
    if (fleet_db_row(db, "SELECT count(*) FROM telemetry", NULL, after, 1) != 0)
        fleet_die("cannot count telemetry rows");
    double el = secs(t1 - t0);
    uint64_t ev = FL.st.tel_events_committed - e0;
    long rows = atol(after[0]) - atol(before[0]);
    printf("RESULT mode=fleet scenario=telemetry agents=%zu events_per_batch=%ld seconds=%.2f "
           "events_committed=%llu events_per_s=%.0f db_rows=%ld db_rows_per_s=%.0f "
           "rejected=%llu calls_failed=%llu server_cpu_pct=%.1f\n",
           k, O.tel_events, el, (unsigned long long)ev, (double)ev / el, rows, (double)rows / el,
           (unsigned long long)FL.st.tel_rejected, (unsigned long long)FL.st.tel_calls_failed,
           (double)(c1 - c0) / 1e4 / el);
    fflush(stdout);
}

static int unhex32(const char *s, uint8_t out[32])
{
    if (!s || strlen(s) != 64)
        return -EINVAL;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -EINVAL;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void scenario_artifact(void)
{
    uint8_t sha[32];
    if (unhex32(O.artifact_sha, sha) != 0)
        fleet_die("artifact scenario needs --artifact-sha <64 hex> (upload it with aegisctl "
                  "artifacts upload; fleet_run.sh does)");
    size_t k = (size_t)(O.art_agents < O.n ? O.art_agents : O.n);
    char **ids;
    agent_ids(0, k, &ids);
    Aegis__V1__AssignArtifactRequest req = AEGIS__V1__ASSIGN_ARTIFACT_REQUEST__INIT;
    Aegis__V1__AgentTarget t = AEGIS__V1__AGENT_TARGET__INIT;
    t.n_agent_ids = k;
    t.agent_ids = ids;
    req.sha256.data = sha;
    req.sha256.len = 32;
    req.target = &t;
    req.fetch_only = 1;
    size_t len = aegis__v1__assign_artifact_request__get_packed_size(&req), ol;
    uint8_t *buf = malloc(len), *out;
    if (!buf)
        fleet_die("out of memory");
    aegis__v1__assign_artifact_request__pack(&req, buf);
    free(ids);
    char err[512], db_out[5][64];
    FL.nlat = 0;
    uint64_t rx0 = FL.st.rx_bytes, fb0 = FL.st.fetch_bytes, ok0 = FL.st.fetch_ok,
             bad0 = FL.st.fetch_failed, c0 = cpu_us(ctl_pid);
    FL.cmd_t0 = aegis_now();
    if (fleet_oper_call(oper, "AssignArtifact", buf, len, 60, &out, &ol, err, sizeof(err)) != 0)
        fleet_die("%s", err);
    free(buf);
    Aegis__V1__AssignArtifactResponse *r =
        aegis__v1__assign_artifact_response__unpack(NULL, ol, out);
    free(out);
    if (!r)
        fleet_die("AssignArtifact: undecodable reply");
    char cmd[37];
    snprintf(cmd, sizeof(cmd), "%s", r->command_id);
    aegis__v1__assign_artifact_response__free_unpacked(r, NULL);
    uint64_t end = FL.cmd_t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    while (FL.nlat < k && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t_all = aegis_now() - FL.cmd_t0, c1 = cpu_us(ctl_pid);
    FL.cmd_t0 = 0;
    long durable = poll_durable(cmd, (long)k, aegis_now() + 10 * AEGIS_NS_PER_S, db_out);
    uint64_t payload = FL.st.fetch_bytes - fb0, egress = FL.st.rx_bytes - rx0;
    double el = secs(t_all);
    double ideal = O.loopback_gbps > 0 ? (double)payload / (O.loopback_gbps * 1e9) : -1;
    printf("RESULT mode=fleet scenario=artifact agents=%zu succeeded=%zu durable=%ld "
           "fetch_ok=%llu fetch_failed=%llu seconds=%.2f payload_bytes=%llu "
           "server_egress_bytes=%llu egress_overhead_pct=%.1f goodput_mb_s=%.1f "
           "loopback_ideal_s=%.2f vs_ideal=%.2f server_cpu_s=%.1f\n",
           k, FL.nlat, durable, (unsigned long long)(FL.st.fetch_ok - ok0),
           (unsigned long long)(FL.st.fetch_failed - bad0), el, (unsigned long long)payload,
           (unsigned long long)egress,
           payload ? 100.0 * ((double)egress - (double)payload) / (double)payload : 0.0,
           (double)payload / 1048576.0 / el, ideal, ideal > 0 ? el / ideal : -1.0,
           (double)(c1 - c0) / 1e6);
    fflush(stdout);
}

static void scenario_restart(void)
{
    size_t n = (size_t)O.n;
    char c1[37], c2[37], o1[5][64], o2[5][64];
    unsigned t1n = 0, t2n = 0;
    uint64_t closes0 = FL.st.closes, retries0 = FL.st.retries, auth0 = FL.st.auth_ok;
    /* A command committed just before the crash: some agents have it, some not. */
    send_command("bench_before_crash", c1, &t1n);
    uint64_t t_kill = aegis_now();
    ctl_kill9();
    ctl_start(ctl_port);
    uint64_t t_up = aegis_now();
    fleet_oper_reset(oper);
    /* Issued while the agents are still away: it must wait for them. */
    send_command("bench_during_outage", c2, &t2n);
    uint64_t end = t_kill + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    /* Back = every agent re-authenticated on the new process. */
    while (FL.st.auth_ok - auth0 < n && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t_back = aegis_now();
    long d1 = poll_durable(c1, (long)n, end + 30 * AEGIS_NS_PER_S, o1);
    long d2 = poll_durable(c2, (long)n, end + 30 * AEGIS_NS_PER_S, o2);
    uint64_t t_done = aegis_now();
    long lost = (long)(t1n + t2n) - d1 - d2;
    printf("RESULT mode=fleet scenario=restart n=%zu server_up_s=%.2f back_s=%.2f "
           "reauthenticated=%llu all_delivered_s=%.2f before_crash_durable=%ld/%u "
           "during_outage_durable=%ld/%u undelivered_at_deadline=%ld reconnect_attempts=%llu "
           "closes=%llu\n",
           n, secs(t_up - t_kill), secs(t_back - t_kill),
           (unsigned long long)(FL.st.auth_ok - auth0), secs(t_done - t_kill), d1, t1n, d2, t2n,
           lost, (unsigned long long)(FL.st.retries - retries0),
           (unsigned long long)(FL.st.closes - closes0));
    fflush(stdout);
    if (lost != 0 || FL.st.auth_ok - auth0 < n)
        check_failed = 1;
}

static void scenario_enroll(void)
{
    size_t k = (size_t)O.enroll_n, base = (size_t)O.n;
    Aegis__V1__CreateTokenRequest req = AEGIS__V1__CREATE_TOKEN_REQUEST__INIT;
    req.description = (char *)"aegis-bench-fleet enroll scenario";
    req.max_uses = (uint32_t)k;
    req.ttl_seconds = 3600;
    uint8_t buf[256], *out;
    size_t len = aegis__v1__create_token_request__pack(&req, buf), ol;
    char err[512];
    if (fleet_oper_call(oper, "CreateToken", buf, len, 30, &out, &ol, err, sizeof(err)) != 0)
        fleet_die("%s", err);
    Aegis__V1__CreateTokenResponse *r = aegis__v1__create_token_response__unpack(NULL, ol, out);
    free(out);
    if (!r || !r->token)
        fleet_die("CreateToken: undecodable reply");
    char *secret = strdup(r->token->secret);
    aegis__v1__create_token_response__free_unpacked(r, NULL);
    if (!secret)
        fleet_die("out of memory");
    FL.enroll_token = secret;
    for (size_t i = 0; i < k; i++)
        if (fleet_make_endpoint(&FL, &FL.agents[base + i]) != 0)
            fleet_die("cannot create the endpoint of enrolling agent %zu", i);
    uint64_t ok0 = FL.st.enroll_ok, bad0 = FL.st.enroll_failed, c0 = cpu_us(ctl_pid);
    uint64_t t0 = aegis_now(), end = t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    for (size_t i = 0; i < k; i++) {
        FL.agents[base + i].phase = FA_ENROLLING;
        if (fleet_connect(&FL, &FL.agents[base + i]) != 0)
            fleet_die("connect enrolling agent %zu", i);
    }
    while (FL.st.enroll_ok - ok0 + FL.st.enroll_failed - bad0 < k && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t1 = aegis_now(), c1 = cpu_us(ctl_pid);
    char rows[1][64];
    if (fleet_db_row(db,
                     "SELECT count(*) FROM agents WHERE labels @> '{\"" FLEET_LABEL_KEY
                     "\": \"" FLEET_LABEL_VALUE "\"}' IS NOT TRUE",
                     NULL, rows, 1) != 0)
        fleet_die("cannot count enrolled agents");
    double el = secs(t1 - t0);
    printf("RESULT mode=fleet scenario=enroll n=%zu enrolled=%llu failed=%llu seconds=%.2f "
           "enrollments_per_s=%.1f agents_rows=%s server_cpu_s=%.2f\n",
           k, (unsigned long long)(FL.st.enroll_ok - ok0),
           (unsigned long long)(FL.st.enroll_failed - bad0), el,
           (double)(FL.st.enroll_ok - ok0) / el, rows[0], (double)(c1 - c0) / 1e6);
    fflush(stdout);
    FL.enroll_token = NULL;
    free(secret);
}

/* ---- main ----------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: aegis-bench-fleet --control BIN --pki DIR --db DSN [options]\n"
            "  --n N                  simulated agents (default 100)\n"
            "  --scenario LIST        connect,idle,fanout,telemetry,artifact,restart,enroll\n"
            "                         (comma-separated, run in this order; connect first)\n"
            "  --parallel P           handshakes started ahead of completions (0 = all at once)\n"
            "  --idle-seconds S       idle hold (60)\n"
            "  --telemetry-seconds S  --telemetry-agents K  --events-per-batch E\n"
            "  --batches-per-call B\n"
            "  --artifact-sha HEX     artifact uploaded beforehand (aegisctl artifacts upload)\n"
            "  --artifact-agents K    agents that fetch it (1000)\n"
            "  --loopback-gbps G      measured loopback throughput for the ideal time\n"
            "  --enroll-n K           fresh agents that enroll with a token (200)\n"
            "  --operator NAME        operator certificate PKI/operator-NAME.pem (bench)\n"
            "  --sources S            spread agents over 127.0.0.1..S (auto)\n"
            "  --idle-timeout-s S     agents' QUIC idle timeout (transport default 60)\n"
            "  --timeout S            per-scenario deadline (120)\n"
            "  --control-arg ARG      extra aegis-control argument (repeatable)\n"
            "  --log FILE             aegis-control output (aegis-control.log)\n"
            "  --check                exit 1 unless all authenticated and all acks durable\n");
    exit(2);
}

static int has_scenario(const char *name)
{
    size_t l = strlen(name);
    for (const char *p = O.scenarios; (p = strstr(p, name)) != NULL; p += l)
        if ((p == O.scenarios || p[-1] == ',') && (p[l] == 0 || p[l] == ','))
            return 1;
    return 0;
}

static void parse(int argc, char **argv)
{
    static const struct option lo[] = {{"control", 1, 0, 1},
                                       {"pki", 1, 0, 2},
                                       {"db", 1, 0, 3},
                                       {"n", 1, 0, 4},
                                       {"scenario", 1, 0, 5},
                                       {"parallel", 1, 0, 6},
                                       {"idle-seconds", 1, 0, 7},
                                       {"telemetry-seconds", 1, 0, 8},
                                       {"telemetry-agents", 1, 0, 9},
                                       {"events-per-batch", 1, 0, 10},
                                       {"batches-per-call", 1, 0, 11},
                                       {"artifact-sha", 1, 0, 12},
                                       {"artifact-agents", 1, 0, 13},
                                       {"loopback-gbps", 1, 0, 14},
                                       {"enroll-n", 1, 0, 15},
                                       {"operator", 1, 0, 16},
                                       {"sources", 1, 0, 17},
                                       {"idle-timeout-s", 1, 0, 18},
                                       {"timeout", 1, 0, 19},
                                       {"control-arg", 1, 0, 20},
                                       {"log", 1, 0, 21},
                                       {"check", 0, 0, 22},
                                       {"seed", 1, 0, 23},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 1:
            O.control = optarg;
            break;
        case 2:
            O.pki = optarg;
            break;
        case 3:
            O.db = optarg;
            break;
        case 4:
            O.n = atol(optarg);
            break;
        case 5:
            O.scenarios = optarg;
            break;
        case 6:
            O.parallel = atol(optarg);
            break;
        case 7:
            O.idle_s = atol(optarg);
            break;
        case 8:
            O.tel_s = atol(optarg);
            break;
        case 9:
            O.tel_agents = atol(optarg);
            break;
        case 10:
            O.tel_events = atol(optarg);
            break;
        case 11:
            O.tel_batches = atol(optarg);
            break;
        case 12:
            O.artifact_sha = optarg;
            break;
        case 13:
            O.art_agents = atol(optarg);
            break;
        case 14:
            O.loopback_gbps = atof(optarg);
            break;
        case 15:
            O.enroll_n = atol(optarg);
            break;
        case 16:
            O.operator_name = optarg;
            break;
        case 17:
            O.sources = atol(optarg);
            break;
        case 18:
            O.idle_timeout_s = atol(optarg);
            break;
        case 19:
            O.timeout_s = atol(optarg);
            break;
        case 20:
            if (O.n_ctl_args >= MAX_CTL_ARGS)
                fleet_die("at most %d --control-arg", MAX_CTL_ARGS);
            O.ctl_args[O.n_ctl_args++] = optarg;
            break;
        case 21:
            O.log = optarg;
            break;
        case 22:
            O.check = 1;
            break;
        case 23:
            O.seed = strtoull(optarg, NULL, 0);
            break;
        default:
            usage();
        }
    }
    if (!O.control || !O.pki || !O.db)
        usage();
    if (O.n < 1 || O.n > 200000 || O.tel_events < 1 || O.tel_batches < 1 || O.enroll_n < 0 ||
        O.timeout_s < 1 || O.idle_s < 0)
        fleet_die("counts out of range (--n 1..200000, others positive)");
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    size_t n = (size_t)O.n, extra = has_scenario("enroll") ? (size_t)O.enroll_n : 0;
    /* One socket per agent plus a margin for the loop, PostgreSQL and the operator. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n + extra + 64)
        fleet_die("RLIMIT_NOFILE is %llu, %zu agents need %zu descriptors (raise the hard "
                  "limit: ulimit -Hn, or run as root)",
                  (unsigned long long)rl.rlim_cur, n + extra, n + extra + 64);
    if (!O.seed)
        O.seed = aegis_wallclock() ^ ((uint64_t)getpid() << 32);
    FL.rng = O.seed | 1;
    snprintf(instance_id, sizeof(instance_id), "%08x-0000-4000-8000-%012llx",
             (unsigned)(O.seed & 0xffffffffu),
             (unsigned long long)(O.seed >> 16) & 0xffffffffffffull);

    /* Identities first: issuing them is not what is measured. */
    uint64_t t0 = aegis_now();
    struct fleet_ident *ids = calloc(n + extra, sizeof(*ids));
    if (!ids)
        fleet_die("out of memory");
    int rv = fleet_ident_issue(ids, n, O.pki, O.seed);
    for (size_t i = 0; i < extra && rv == 0; i++)
        rv = fleet_ident_self(&ids[n + i], n + i, O.seed);
    if (rv != 0)
        fleet_die("cannot issue identities from %s/ca.pem and ca.key: %s", O.pki,
                  aegis_strerror(rv));
    fprintf(stderr, "aegis-bench-fleet: issued %zu identities in %.1f s\n", n + extra,
            secs(aegis_now() - t0));
    size_t sl;
    char *spem = fleet_slurp(O.pki, "server.pem", &sl);
    if (!spem || aegis_pin_from_pem(spem, sl, server_pin) != 0)
        fleet_die("cannot pin %s/server.pem (run aegis-certs server --dir %s)", O.pki, O.pki);
    free(spem);

    loop = ev_loop_new(EVFLAG_AUTO); /* not the default loop: no SIGCHLD reaping of ours */
    if (!loop)
        fleet_die("cannot create the event loop");
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, TICK_S, TICK_S);
    ev_timer_start(loop, &tick);
    ctl_start(0);
    fprintf(stderr, "aegis-bench-fleet: aegis-control pid %d on %s\n", (int)ctl_pid, server_addr);
    if (fleet_db_open(O.db, &db) != 0)
        fleet_die("cannot open the database");
    t0 = aegis_now();
    if (fleet_db_enroll(db, ids, n) != 0)
        fleet_die("cannot enroll the identities");
    fprintf(stderr, "aegis-bench-fleet: enrolled %zu agents with COPY in %.2f s\n", n,
            secs(aegis_now() - t0));
    FL.backoff_base = 1 * AEGIS_NS_PER_S; /* the real agent's base (agent_backoff.h) */
    FL.backoff_cap = 30 * AEGIS_NS_PER_S; /* below the agent's 300 s: keeps a run bounded */
    FL.idle_timeout = (uint64_t)O.idle_timeout_s * AEGIS_NS_PER_S;
    unsigned nsrc = O.sources > 0 ? (unsigned)O.sources : (unsigned)(1 + (n + extra) / 20000);
    if ((rv = fleet_init(&FL, loop, n + extra, ids, server_addr, server_pin, nsrc)) != 0)
        fleet_die("cannot set up %zu agent sockets: %s", n + extra, aegis_strerror(rv));
    if ((rv = fleet_oper_new(loop, server_addr, server_pin, O.pki, O.operator_name, &oper)) != 0)
        fleet_die("cannot create the operator endpoint: %s", aegis_strerror(rv));

    scenario_connect();
    if (has_scenario("idle"))
        scenario_idle();
    if (has_scenario("fanout"))
        scenario_fanout();
    if (has_scenario("telemetry"))
        scenario_telemetry();
    if (has_scenario("artifact"))
        scenario_artifact();
    if (has_scenario("restart"))
        scenario_restart();
    if (has_scenario("enroll") && extra)
        scenario_enroll();

    for (size_t i = 0; i < n + extra; i++)
        fleet_drop(&FL, &FL.agents[i]);
    run_for(200 * AEGIS_NS_PER_MS); /* let the CONNECTION_CLOSEs out */
    ctl_stop();
    fleet_oper_del(oper);
    fleet_free(&FL);
    fleet_db_close(db);
    fleet_ident_free(ids, n + extra);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return O.check && check_failed ? 1 : 0;
}
