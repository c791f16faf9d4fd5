/*
 * aegis-bench-fleet: thousands of simulated agents against a real aegis-control (issue 7).
 *
 *   aegis-bench-fleet --control BIN --pki DIR --db DSN --n N
 *                     [--scenario connect,idle,fanout,telemetry,artifact,restart,enroll,
 *                                 scaleout,flood]
 *                     [options, see usage()]
 *
 * The bench starts aegis-control itself (so it knows its PID for CPU and RSS, and can kill -9
 * and restart it), enrolls N pre-issued identities straight into PostgreSQL, then runs the
 * scenarios in order on the same fleet. Each scenario ends with one line
 * "RESULT mode=fleet scenario=NAME key=value ...". Numbers are printed, never asserted;
 * --check only makes the exit status say whether every agent authenticated and every ack
 * became durable (the ctest smoke tests use it).
 *
 * scaleout: a second instance (own port and instance id) on the same database holds half the
 * agents; one SendCommand through instance A must reach B's agents through LISTEN/NOTIFY.
 * flood: command latency calm, then while aegis-bench-flood (started and stopped by PID)
 * holds the server's handshake slots; the control's /metrics is scraped for the handshakes
 * in progress, which must never exceed the cap.
 */
#include "bench_fleet.h"
#include "bench_proc.h"

#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/transport_ev.h>
#include <aegis/v1/operator.pb-c.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* Extra control flags accepted with --control-arg. */
#define MAX_CTL_ARGS 16
/* Poll period of the database checks (the agents run between polls). */
#define POLL_NS (100 * AEGIS_NS_PER_MS)
/* Wake-up period of the loop, so wait loops notice deadlines without an event. */
#define TICK_S 0.05

struct opts {
    const char *control, *pki, *db, *scenarios, *operator_name, *artifact_sha, *log, *flood;
    const char *ctl_args[MAX_CTL_ARGS];
    int n_ctl_args;
    long n, parallel, idle_s, tel_s, tel_agents, tel_events, tel_batches, art_agents, enroll_n;
    long timeout_s, sources, idle_timeout_s, rounds, flood_rate;
    int flood_follow_retry;
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
                        .timeout_s = 120,
                        .rounds = 10,
                        .flood_rate = 500,
                        .flood_follow_retry = 1};

static struct fleet FL;
static struct ev_loop *loop;
static struct fleet_oper *oper;
static struct fleet_db *db;
/* The control instances the bench started: [0] always, [1] for the scale-out scenario. */
struct ctl_proc {
    pid_t pid;
    unsigned port, metrics_port;
    int metrics; /* serve /metrics (flood scenario) */
    char id[37];
    char addr[64];
    char log[1024];
};
static struct ctl_proc CTL[2] = {{.pid = -1}, {.pid = -1}};
static size_t nctl = 1;
static char server_pin[AEGIS_PIN_STRLEN];
static int check_failed;
static pid_t flood_pid = -1; /* aegis-bench-flood, flood scenario */

void fleet_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "aegis-bench-fleet: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    for (size_t i = 0; i < 2; i++)
        if (CTL[i].pid > 0) {
            kill(CTL[i].pid, SIGKILL);
            waitpid(CTL[i].pid, NULL, 0);
        }
    if (flood_pid > 0) {
        kill(flood_pid, SIGKILL);
        waitpid(flood_pid, NULL, 0);
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

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Starts (or restarts, same port and instance id) the control instance p. */
static void ctl_start(struct ctl_proc *p, unsigned port)
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
    argv[c++] = p->metrics ? "127.0.0.1:0" : "off";
    argv[c++] = "--instance-id";
    argv[c++] = p->id;
    argv[c++] = "--log-level";
    argv[c++] = "warn";
    for (int i = 0; i < O.n_ctl_args; i++)
        argv[c++] = O.ctl_args[i];
    argv[c] = NULL;
    long off = file_size(p->log);
    pid_t pid = fork();
    if (pid < 0)
        fleet_die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(O.control, (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    /* Ready when the daemon prints its port (bounded: 60 s). */
    uint64_t end = aegis_now() + 60 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            p->pid = -1;
            fleet_die("aegis-control exited (status %d); see %s", status, p->log);
        }
        FILE *f = fopen(p->log, "re");
        if (f) {
            char line[512];
            unsigned pt = 0, mp = 0;
            fseek(f, off, SEEK_SET);
            while (fgets(line, sizeof(line), f))
                if (sscanf(line, "aegis-control ready port=%u metrics_port=%u", &pt, &mp) >= 1)
                    break;
            fclose(f);
            if (pt) {
                p->port = pt;
                p->metrics_port = mp;
                snprintf(p->addr, sizeof(p->addr), "127.0.0.1:%u", pt);
                return;
            }
        }
        run_for(20 * AEGIS_NS_PER_MS);
    }
    fleet_die("aegis-control did not print its ready line within 60 s; see %s", p->log);
}

static void ctl_kill9(struct ctl_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = -1;
}

static void ctl_stop(struct ctl_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    uint64_t end = aegis_now() + 20 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = -1;
            return;
        }
        run_for(20 * AEGIS_NS_PER_MS);
    }
    ctl_kill9(p);
}

/* ---- helpers ----------------------------------------------------------------------------- */

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

/* Points new connections (fleet_connect reads FL.server) at control instance k. */
static void use_instance(size_t k)
{
    if (aegis_parse_addr(CTL[k].addr, &FL.server, &FL.server_len) != 0)
        fleet_die("bad control address %s", CTL[k].addr);
}

static void scenario_connect(void)
{
    size_t n = (size_t)O.n;
    /* Client-side setup (TLS contexts) happens before the clock starts. */
    for (size_t i = 0; i < n; i++)
        if (fleet_make_endpoint(&FL, &FL.agents[i]) != 0)
            fleet_die("cannot create the endpoint of agent %zu", i);
    rss_before_agents = bench_rss_bytes(CTL[0].pid);
    uint64_t b0 = bench_cpu_us_self();
    uint64_t c0 = bench_cpu_us_pid(CTL[0].pid), t0 = aegis_now(),
             end = t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    size_t next = 0;
    size_t par = O.parallel > 0 ? (size_t)O.parallel : n;
    while (FL.st.ready < n && aegis_now() < end) {
        while (next < n && next - FL.st.auth_ok < par) {
            if (nctl > 1)
                use_instance(next < n / 2 ? 0 : 1); /* scale-out: first half on A, rest on B */
            int rv = fleet_connect(&FL, &FL.agents[next]);
            if (rv != 0)
                fleet_die("connect agent %zu: %s", next, aegis_strerror(rv));
            next++;
        }
        ev_run(loop, EVRUN_ONCE);
    }
    /* Reconnects (backoff) go to whichever instance FL.server names: instance A. */
    if (nctl > 1)
        use_instance(0);
    uint64_t t1 = aegis_now(), c1 = bench_cpu_us_pid(CTL[0].pid);
    uint64_t *auth = calloc(n, sizeof(*auth));
    size_t na = 0;
    for (size_t i = 0; i < n; i++)
        if (FL.agents[i].phase == FA_READY && auth)
            auth[na++] = FL.agents[i].t_auth - t0;
    if (auth)
        qsort(auth, na, sizeof(*auth), bench_cmp_u64);
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
           (double)(c1 - c0) / 1e4 / el, (double)bench_rss_bytes(CTL[0].pid) / 1048576.0,
           (double)bench_rss_bytes(0) / 1048576.0, (double)(bench_cpu_us_self() - b0) / 1e6);
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
    uint64_t c0 = bench_cpu_us_pid(CTL[0].pid), t0 = aegis_now(), b0 = bench_cpu_us_self();
    run_for((uint64_t)O.idle_s * AEGIS_NS_PER_S);
    uint64_t c1 = bench_cpu_us_pid(CTL[0].pid), t1 = aegis_now();
    uint64_t r = bench_rss_bytes(CTL[0].pid);
    double el = secs(t1 - t0), cpu = (double)(c1 - c0) / 1e6;
    printf("RESULT mode=fleet scenario=idle n=%zu seconds=%.1f ready=%zu server_rss_mb=%.1f "
           "server_rss_per_agent_kb=%.1f server_cpu_pct=%.2f server_cpu_s_per_min=%.2f "
           "disconnects=%llu pkts_to_server=%llu pkts_from_server=%llu bench_cpu_pct=%.2f\n",
           n, el, count_ready(n), (double)r / 1048576.0,
           (double)(r > rss_before_agents ? r - rss_before_agents : 0) / 1024.0 / (double)n,
           cpu * 100.0 / el, cpu * 60.0 / el, (unsigned long long)(FL.st.closes - closes0),
           (unsigned long long)(FL.st.tx_pkts - tx0), (unsigned long long)(FL.st.rx_pkts - rx0),
           (double)(bench_cpu_us_self() - b0) / 1e4 / el);
    fflush(stdout);
}

static void scenario_fanout(void)
{
    size_t n = (size_t)O.n;
    char id[37], db_out[5][64];
    unsigned targeted = 0;
    FL.nlat = 0;
    uint64_t c0 = bench_cpu_us_pid(CTL[0].pid), b0 = bench_cpu_us_self(), af0 = FL.st.acks_failed;
    FL.cmd_t0 = aegis_now();
    send_command("bench_fanout", id, &targeted);
    uint64_t rpc = aegis_now() - FL.cmd_t0;
    uint64_t end = FL.cmd_t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    while (FL.nlat < targeted && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t_all = aegis_now() - FL.cmd_t0, c1 = bench_cpu_us_pid(CTL[0].pid);
    FL.cmd_t0 = 0;
    long durable = poll_durable(id, (long)targeted, aegis_now() + 10 * AEGIS_NS_PER_S, db_out);
    qsort(FL.lat, FL.nlat, sizeof(uint64_t), bench_cmp_u64);
    printf("RESULT mode=fleet scenario=fanout n=%zu targeted=%u acked=%zu durable=%ld "
           "sendcommand_ms=%.1f all_acked_s=%.3f p50_ms=%.1f p99_ms=%.1f max_ms=%.1f "
           "db_p50_ms=%s db_p99_ms=%s db_max_ms=%s acks_shed=%llu server_cpu_s=%.2f "
           "bench_cpu_s=%.2f command=%s\n",
           n, targeted, FL.nlat, durable, (double)rpc / 1e6, secs(t_all), pct_ms(0.5), pct_ms(0.99),
           FL.nlat ? (double)FL.lat[FL.nlat - 1] / 1e6 : -1.0, db_out[2], db_out[3], db_out[4],
           (unsigned long long)(FL.st.acks_failed - af0), (double)(c1 - c0) / 1e6,
           (double)(bench_cpu_us_self() - b0) / 1e6, id);
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
    uint64_t e0 = FL.st.tel_events_committed, c0 = bench_cpu_us_pid(CTL[0].pid), t0 = aegis_now();
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
    uint64_t t1 = aegis_now(), c1 = bench_cpu_us_pid(CTL[0].pid);
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

static void scenario_artifact(void)
{
    uint8_t sha[32];
    /* exactly 64 hex digits: a longer text does not fit sha, an odd one does not decode */
    if (!O.artifact_sha || aegis_hex_decode(O.artifact_sha, strlen(O.artifact_sha), sha,
                                            sizeof(sha)) != (long)sizeof(sha))
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
             bad0 = FL.st.fetch_failed, c0 = bench_cpu_us_pid(CTL[0].pid);
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
    uint64_t t_all = aegis_now() - FL.cmd_t0, c1 = bench_cpu_us_pid(CTL[0].pid);
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
    ctl_kill9(&CTL[0]);
    ctl_start(&CTL[0], CTL[0].port);
    uint64_t t_up = aegis_now();
    fleet_oper_reset(oper);
    /* Issued while the agents are still away: it must wait for them. */
    send_command("bench_during_outage", c2, &t2n);
    uint64_t end = t_kill + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    /* Back = every agent re-authenticated on the new process. A timeline every 5 s shows
     * where the time goes: detecting the restart (closes), refused handshakes, re-auth. */
    uint64_t next_tl = t_kill + 5 * AEGIS_NS_PER_S, hf0 = FL.st.handshakes_failed;
    while (FL.st.auth_ok - auth0 < n && aegis_now() < end) {
        ev_run(loop, EVRUN_ONCE);
        if (aegis_now() >= next_tl) {
            next_tl += 5 * AEGIS_NS_PER_S;
            fprintf(stderr,
                    "%s: restart t=%.0fs closes=%llu handshakes_failed=%llu reauthenticated=%llu\n",
                    fleet_prog, secs(aegis_now() - t_kill),
                    (unsigned long long)(FL.st.closes - closes0),
                    (unsigned long long)(FL.st.handshakes_failed - hf0),
                    (unsigned long long)(FL.st.auth_ok - auth0));
        }
    }
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
    uint64_t ok0 = FL.st.enroll_ok, bad0 = FL.st.enroll_failed, c0 = bench_cpu_us_pid(CTL[0].pid);
    uint64_t t0 = aegis_now(), end = t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    for (size_t i = 0; i < k; i++) {
        FL.agents[base + i].phase = FA_ENROLLING;
        if (fleet_connect(&FL, &FL.agents[base + i]) != 0)
            fleet_die("connect enrolling agent %zu", i);
    }
    while (FL.st.enroll_ok - ok0 + FL.st.enroll_failed - bad0 < k && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t1 = aegis_now(), c1 = bench_cpu_us_pid(CTL[0].pid);
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

/* ---- scale-out: two instances on one database ----------------------------------------- */

static void scenario_scaleout(void)
{
    size_t n = (size_t)O.n;
    char split[2][64], sql[1024], id[37], all[5][64], rem[5][64];
    /* Where the agents are, as the database says (each instance records the agents it holds). */
    if (fleet_db_row(db,
                     "SELECT count(*) FILTER (WHERE connected_instance::text = $1),"
                     " count(*) FILTER (WHERE connected_instance::text <> $1)"
                     " FROM agents WHERE labels @> '{\"" FLEET_LABEL_KEY "\": \"" FLEET_LABEL_VALUE
                     "\"}'",
                     CTL[0].id, split, 2) != 0)
        fleet_die("cannot count the agents per instance");
    long on_a = atol(split[0]), on_b = atol(split[1]);
    unsigned targeted = 0;
    FL.nlat = 0;
    uint64_t ca0 = bench_cpu_us_pid(CTL[0].pid), cb0 = bench_cpu_us_pid(CTL[1].pid),
             af0 = FL.st.acks_failed;
    /* One SendCommand through instance A's operator API: B's agents get it by NOTIFY. */
    FL.cmd_t0 = aegis_now();
    send_command("bench_scaleout", id, &targeted);
    uint64_t rpc = aegis_now() - FL.cmd_t0;
    uint64_t end = FL.cmd_t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    while (FL.nlat < targeted && aegis_now() < end)
        ev_run(loop, EVRUN_ONCE);
    uint64_t t_all = aegis_now() - FL.cmd_t0;
    uint64_t ca1 = bench_cpu_us_pid(CTL[0].pid), cb1 = bench_cpu_us_pid(CTL[1].pid);
    FL.cmd_t0 = 0;
    long durable = poll_durable(id, (long)targeted, aegis_now() + 10 * AEGIS_NS_PER_S, all);
    /* The deliveries of agents held by instance B (UUIDs are ours: safe to inline). */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FILTER (WHERE d.status = 'succeeded'), count(*),"
             " round((1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY"
             "  extract(epoch FROM d.finished_at - c.issued_at)))::numeric, 1),"
             " round((1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY"
             "  extract(epoch FROM d.finished_at - c.issued_at)))::numeric, 1),"
             " round((1000 * max(extract(epoch FROM d.finished_at - c.issued_at)))::numeric, 1)"
             " FROM deliveries d JOIN commands c ON c.id = d.command_id"
             " JOIN agents a ON a.id = d.agent_id"
             " WHERE d.command_id = $1::uuid AND a.connected_instance = '%s'::uuid",
             CTL[1].id);
    if (fleet_db_row(db, sql, id, rem, 5) != 0)
        fleet_die("cannot poll the deliveries of instance B's agents");
    long rem_durable = atol(rem[0]), rem_rows = atol(rem[1]);
    qsort(FL.lat, FL.nlat, sizeof(uint64_t), bench_cmp_u64);
    printf("RESULT mode=fleet scenario=scaleout n=%zu instances=2 on_a=%ld on_b=%ld targeted=%u "
           "acked=%zu durable=%ld sendcommand_ms=%.1f all_acked_s=%.3f p50_ms=%.1f p99_ms=%.1f "
           "max_ms=%.1f db_p50_ms=%s db_p99_ms=%s db_max_ms=%s remote_durable=%ld/%ld "
           "remote_db_p50_ms=%s remote_db_p99_ms=%s remote_db_max_ms=%s acks_shed=%llu "
           "server_cpu_a_s=%.2f server_cpu_b_s=%.2f command=%s\n",
           n, on_a, on_b, targeted, FL.nlat, durable, (double)rpc / 1e6, secs(t_all), pct_ms(0.5),
           pct_ms(0.99), FL.nlat ? (double)FL.lat[FL.nlat - 1] / 1e6 : -1.0, all[2], all[3], all[4],
           rem_durable, rem_rows, rem[2], rem[3], rem[4],
           (unsigned long long)(FL.st.acks_failed - af0), (double)(ca1 - ca0) / 1e6,
           (double)(cb1 - cb0) / 1e6, id);
    fflush(stdout);
    if (targeted != n || durable != (long)n || on_b < 1 || rem_rows != on_b ||
        rem_durable != on_b) {
        check_failed = 1;
        fprintf(stderr,
                "aegis-bench-fleet: scale-out: %u targeted, %ld durable (want %zu); instance B "
                "holds %ld agents, %ld of their %ld deliveries durable\n",
                targeted, durable, n, on_b, rem_durable, rem_rows);
    }
}

/* ---- handshake flood ------------------------------------------------------------------- */

/* Metrics scraped from instance A's /metrics during the flood scenario. */
static struct {
    uint64_t last_ns;
    long hs_max, hs_last, retries_sent, scrapes, failures;
} M = {.hs_max = -1, .hs_last = -1, .retries_sent = -1};

/* Value of `name` (a line "name value") in a Prometheus text page, or -1. */
static long metric_value(const char *page, const char *name)
{
    size_t l = strlen(name);
    for (const char *p = page; (p = strstr(p, name)) != NULL; p += l)
        if ((p == page || p[-1] == '\n') && p[l] == ' ')
            return atol(p + l + 1);
    return -1;
}

/* One GET /metrics (blocking, at most 1 s each way: it is loopback). */
static int scrape(void)
{
    static char page[256 * 1024];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)CTL[0].metrics_port)};
    sin.sin_addr.s_addr = htonl(0x7f000001u);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    size_t len = 0;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, page + len, sizeof(page) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof(page) - 1)
            break;
    }
    close(fd);
    page[len] = 0;
    long hs = metric_value(page, "aegis_quic_handshakes_in_progress");
    if (hs < 0)
        return -1;
    M.hs_last = hs;
    if (hs > M.hs_max)
        M.hs_max = hs;
    M.retries_sent = metric_value(page, "aegis_quic_retries_sent_total");
    return 0;
}

/* Scrapes at most every 250 ms (the control renders the page once per sweep interval). */
static void metrics_poll(void)
{
    uint64_t now = aegis_now();
    if (now - M.last_ns < 250 * AEGIS_NS_PER_MS)
        return;
    M.last_ns = now;
    M.scrapes++;
    if (scrape() != 0)
        M.failures++;
}

/* The handshake cap the control runs with: --max-handshakes among --control-arg, else the
 * transport default (DESIGN §8). */
static long handshake_cap(void)
{
    long cap = AEGIS_TRANSPORT_MAX_HANDSHAKES;
    for (int i = 0; i < O.n_ctl_args; i++) {
        const char *a = O.ctl_args[i];
        if (strncmp(a, "--max-handshakes=", 17) == 0)
            cap = atol(a + 17);
        else if (strcmp(a, "--max-handshakes") == 0 && i + 1 < O.n_ctl_args)
            cap = atol(O.ctl_args[i + 1]);
    }
    return cap;
}

/* One round: SendCommand to all, run until every SUCCEEDED ack reply is back (the control
 * commits an ack before it replies, so that moment is "all durable"), then confirm the count
 * in PostgreSQL. Returns the round's latency in ms, -1 if not every agent acked in time. */
static double flood_round(const char *action, long *pdurable, uint64_t **acks, size_t *nacks)
{
    char id[37], out[5][64];
    unsigned targeted = 0;
    FL.nlat = 0;
    FL.cmd_t0 = aegis_now();
    send_command(action, id, &targeted);
    uint64_t end = FL.cmd_t0 + (uint64_t)O.timeout_s * AEGIS_NS_PER_S;
    while (FL.nlat < targeted && aegis_now() < end) {
        ev_run(loop, EVRUN_ONCE);
        metrics_poll();
    }
    uint64_t t = aegis_now() - FL.cmd_t0;
    FL.cmd_t0 = 0;
    int ok = targeted == (unsigned)O.n && FL.nlat >= targeted;
    for (size_t i = 0; i < FL.nlat; i++) {
        uint64_t *p = realloc(*acks, (*nacks + 1) * sizeof(**acks));
        if (!p)
            fleet_die("out of memory");
        *acks = p;
        (*acks)[(*nacks)++] = FL.lat[i];
    }
    *pdurable += poll_durable(id, (long)targeted, aegis_now() + 10 * AEGIS_NS_PER_S, out);
    return ok ? (double)t / 1e6 : -1.0;
}

static double median(double *v, size_t n, double *pmax)
{
    double mx = -1;
    for (size_t i = 0; i < n; i++)
        if (v[i] > mx)
            mx = v[i];
    *pmax = mx;
    /* insertion sort: a handful of rounds */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n ? v[n / 2] : -1;
}

static double ack_pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return -1;
    qsort(v, n, sizeof(*v), bench_cmp_u64);
    return (double)v[(size_t)(p * (double)(n - 1))] / 1e6;
}

/* " key=value" from a RESULT line, as a number (-1 if absent). */
static long kv(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *p = strstr(line, pat);
    return p ? atol(p + strlen(pat)) : -1;
}

static void flood_start(const char *out_path)
{
    char rate[32], secs_arg[32];
    snprintf(rate, sizeof(rate), "%ld", O.flood_rate);
    /* Longer than the flooded rounds can take: the bench stops it by PID before that. */
    snprintf(secs_arg, sizeof(secs_arg), "%ld", O.timeout_s * (O.rounds + 2) + 120);
    const char *argv[16];
    int c = 0;
    argv[c++] = O.flood;
    argv[c++] = "--target";
    argv[c++] = CTL[0].addr;
    argv[c++] = "--rate";
    argv[c++] = rate;
    argv[c++] = "--count";
    argv[c++] = "10000000";
    argv[c++] = "--seconds";
    argv[c++] = secs_arg;
    if (O.flood_follow_retry)
        argv[c++] = "--follow-retry";
    argv[c] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        fleet_die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(O.flood, (char *const *)argv);
        _exit(127);
    }
    flood_pid = pid;
}

/* Stops the flood by its PID (SIGTERM: it prints its RESULT line; SIGKILL after 10 s). */
static void flood_stop(void)
{
    if (flood_pid <= 0)
        return;
    kill(flood_pid, SIGTERM);
    uint64_t end = aegis_now() + 10 * AEGIS_NS_PER_S;
    while (aegis_now() < end) {
        if (waitpid(flood_pid, NULL, WNOHANG) == flood_pid) {
            flood_pid = -1;
            return;
        }
        run_for(20 * AEGIS_NS_PER_MS);
    }
    kill(flood_pid, SIGKILL);
    waitpid(flood_pid, NULL, 0);
    flood_pid = -1;
}

static void scenario_flood(void)
{
    size_t n = (size_t)O.n, k = (size_t)O.rounds;
    long cap = handshake_cap();
    double *calm = calloc(k, sizeof(double)), *fl = calloc(k, sizeof(double));
    uint64_t *acks_calm = NULL, *acks_flood = NULL;
    size_t nac = 0, naf = 0, ok_calm = 0, ok_flood = 0;
    long dur_calm = 0, dur_flood = 0;
    char action[64], out_path[1100];
    if (!calm || !fl)
        fleet_die("out of memory");
    if (!CTL[0].metrics_port)
        fleet_die("the flood scenario needs the control's /metrics (no metrics_port printed)");
    snprintf(out_path, sizeof(out_path), "%s.flood", O.log);

    /* Calm: K rounds with nothing else going on. */
    uint64_t c0 = bench_cpu_us_pid(CTL[0].pid);
    for (size_t i = 0; i < k; i++) {
        snprintf(action, sizeof(action), "bench_calm_%zu", i);
        calm[i] = flood_round(action, &dur_calm, &acks_calm, &nac);
        ok_calm += calm[i] >= 0;
    }
    uint64_t c1 = bench_cpu_us_pid(CTL[0].pid);
    long hs_calm_max = M.hs_max;

    /* The flood, started by PID; measured only once it holds the server's handshake slots
     * (retry threshold, or the cap when it follows Retry), bounded by 30 s. */
    M.hs_max = -1;
    flood_start(out_path);
    long want = O.flood_follow_retry ? cap : AEGIS_TRANSPORT_RETRY_THRESHOLD * 9 / 10;
    uint64_t tf = aegis_now(), ramp_end = tf + 30 * AEGIS_NS_PER_S;
    while (M.hs_last < want && aegis_now() < ramp_end) {
        int st;
        if (waitpid(flood_pid, &st, WNOHANG) == flood_pid) {
            flood_pid = -1;
            fleet_die("aegis-bench-flood exited early (status %d); see %s", st, out_path);
        }
        ev_run(loop, EVRUN_ONCE);
        metrics_poll();
    }
    double ramp_s = M.hs_last >= want ? secs(aegis_now() - tf) : -1.0;
    uint64_t c2 = bench_cpu_us_pid(CTL[0].pid), f2 = bench_cpu_us_pid(flood_pid);
    for (size_t i = 0; i < k; i++) {
        snprintf(action, sizeof(action), "bench_flood_%zu", i);
        fl[i] = flood_round(action, &dur_flood, &acks_flood, &naf);
        ok_flood += fl[i] >= 0;
    }
    uint64_t c3 = bench_cpu_us_pid(CTL[0].pid), f3 = bench_cpu_us_pid(flood_pid);
    /* One more scrape at the end of the flood, then stop it. */
    M.last_ns = 0;
    metrics_poll();
    flood_stop();

    char line[1024] = "";
    FILE *f = fopen(out_path, "re");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "RESULT mode=flood", 17) == 0)
            break;
    if (f)
        fclose(f);
    if (strncmp(line, "RESULT mode=flood", 17) != 0)
        fleet_die("aegis-bench-flood printed no RESULT line; see %s", out_path);

    double calm_max, flood_max;
    double calm_p50 = median(calm, k, &calm_max), flood_p50 = median(fl, k, &flood_max);
    printf("RESULT mode=fleet scenario=flood n=%zu rounds=%zu calm_p50_ms=%.1f calm_max_ms=%.1f "
           "flood_p50_ms=%.1f flood_max_ms=%.1f ratio=%.2f calm_ack_p50_ms=%.1f "
           "flood_ack_p50_ms=%.1f flood_ack_p99_ms=%.1f rounds_ok_calm=%zu rounds_ok_flood=%zu "
           "durable_calm=%ld/%zu durable_flood=%ld/%zu hs_in_progress_max=%ld "
           "hs_in_progress_calm_max=%ld hs_cap=%ld retries_sent=%ld flood_ramp_s=%.1f "
           "flood_follow_retry=%d flood_rate=%ld flood_handshakes=%ld flood_accepted=%ld "
           "flood_retries_seen=%ld flood_refusals_seen=%ld flood_unanswered=%ld "
           "server_cpu_calm_s=%.2f server_cpu_flood_s=%.2f flood_cpu_s=%.2f metrics_scrapes=%ld "
           "metrics_failures=%ld\n",
           n, k, calm_p50, calm_max, flood_p50, flood_max,
           calm_p50 > 0 ? flood_p50 / calm_p50 : -1.0, ack_pct(acks_calm, nac, 0.5),
           ack_pct(acks_flood, naf, 0.5), ack_pct(acks_flood, naf, 0.99), ok_calm, ok_flood,
           dur_calm, k * n, dur_flood, k * n, M.hs_max, hs_calm_max, cap, M.retries_sent, ramp_s,
           O.flood_follow_retry, O.flood_rate, kv(line, "handshakes"), kv(line, "accepted"),
           kv(line, "retries_seen"), kv(line, "refusals_seen"), kv(line, "unanswered"),
           (double)(c1 - c0) / 1e6, (double)(c3 - c2) / 1e6, (double)(f3 - f2) / 1e6, M.scrapes,
           M.failures);
    fflush(stdout);
    if (ok_calm != k || ok_flood != k || dur_calm != (long)(k * n) || dur_flood != (long)(k * n) ||
        M.hs_max < 0 || M.hs_max > cap || ramp_s < 0) {
        check_failed = 1;
        fprintf(stderr,
                "aegis-bench-fleet: flood: rounds ok %zu/%zu calm, %zu/%zu flooded; durable "
                "%ld and %ld of %zu; handshakes in progress max %ld (cap %ld); flood reached "
                "%ld of %ld wanted\n",
                ok_calm, k, ok_flood, k, dur_calm, dur_flood, k * n, M.hs_max, cap, M.hs_last,
                want);
    }
    free(calm);
    free(fl);
    free(acks_calm);
    free(acks_flood);
}

/* ---- main ----------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: aegis-bench-fleet --control BIN --pki DIR --db DSN [options]\n"
            "  --n N                  simulated agents (default 100)\n"
            "  --scenario LIST        connect,idle,fanout,telemetry,artifact,restart,enroll,\n"
            "                         scaleout,flood (comma-separated, run in this order;\n"
            "                         connect first; scaleout starts a second instance and\n"
            "                         splits the agents: only with connect,idle,fanout)\n"
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
            "  --rounds K             flood: commands measured calm, then K under the flood (10)\n"
            "  --flood BIN            flood: the aegis-bench-flood program\n"
            "  --flood-rate R         flood: handshakes started per second (500)\n"
            "  --flood-no-retry       flood: do not answer Retry (default: answer it once)\n"
            "  --check                exit 1 unless all authenticated and all acks durable\n"
            "                         (flood: and the handshake cap held; scaleout: and the\n"
            "                         other instance's agents got the command)\n");
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
                                       {"rounds", 1, 0, 24},
                                       {"flood", 1, 0, 25},
                                       {"flood-rate", 1, 0, 26},
                                       {"flood-no-retry", 0, 0, 27},
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
        case 24:
            O.rounds = atol(optarg);
            break;
        case 25:
            O.flood = optarg;
            break;
        case 26:
            O.flood_rate = atol(optarg);
            break;
        case 27:
            O.flood_follow_retry = 0;
            break;
        default:
            usage();
        }
    }
    if (!O.control || !O.pki || !O.db)
        usage();
    if (O.n < 1 || O.n > 200000 || O.tel_events < 1 || O.tel_batches < 1 || O.enroll_n < 0 ||
        O.timeout_s < 1 || O.idle_s < 0 || O.rounds < 1 || O.rounds > 1000 || O.flood_rate < 1 ||
        O.flood_rate > 100000)
        fleet_die("counts out of range (--n 1..200000, --rounds 1..1000, --flood-rate "
                  "1..100000, others positive)");
    if (has_scenario("flood") && !O.flood)
        fleet_die("the flood scenario needs --flood PATH/aegis-bench-flood");
    if (has_scenario("scaleout") &&
        (has_scenario("telemetry") || has_scenario("artifact") || has_scenario("restart") ||
         has_scenario("enroll") || has_scenario("flood")))
        fleet_die("scaleout runs with connect, idle and fanout only (two instances, agents "
                  "split)");
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
    for (size_t i = 0; i < 2; i++)
        snprintf(CTL[i].id, sizeof(CTL[i].id), "%08x-0000-4000-800%zu-%012llx",
                 (unsigned)(O.seed & 0xffffffffu), i,
                 (unsigned long long)(O.seed >> 16) & 0xffffffffffffull);
    /* Instance B logs next to A: aegis-control.log -> aegis-control-2.log. */
    snprintf(CTL[0].log, sizeof(CTL[0].log), "%s", O.log);
    size_t ll = strlen(O.log);
    if (ll > 4 && strcmp(O.log + ll - 4, ".log") == 0)
        snprintf(CTL[1].log, sizeof(CTL[1].log), "%.*s-2.log", (int)(ll - 4), O.log);
    else
        snprintf(CTL[1].log, sizeof(CTL[1].log), "%s-2", O.log);
    CTL[0].metrics = has_scenario("flood");
    nctl = has_scenario("scaleout") ? 2 : 1;

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
    for (size_t i = 0; i < nctl; i++) {
        ctl_start(&CTL[i], 0);
        fprintf(stderr, "aegis-bench-fleet: aegis-control pid %d on %s (instance %s, log %s)\n",
                (int)CTL[i].pid, CTL[i].addr, CTL[i].id, CTL[i].log);
    }
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
    if ((rv = fleet_init(&FL, loop, n + extra, ids, CTL[0].addr, server_pin, nsrc)) != 0)
        fleet_die("cannot set up %zu agent sockets: %s", n + extra, aegis_strerror(rv));
    if ((rv = fleet_oper_new(loop, CTL[0].addr, server_pin, O.pki, O.operator_name, &oper)) != 0)
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
    if (has_scenario("scaleout"))
        scenario_scaleout();
    if (has_scenario("flood"))
        scenario_flood();

    for (size_t i = 0; i < n + extra; i++)
        fleet_drop(&FL, &FL.agents[i]);
    run_for(200 * AEGIS_NS_PER_MS); /* let the CONNECTION_CLOSEs out */
    for (size_t i = 0; i < nctl; i++)
        ctl_stop(&CTL[i]);
    fleet_oper_del(oper);
    fleet_free(&FL);
    fleet_db_close(db);
    fleet_ident_free(ids, n + extra);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return O.check && check_failed ? 1 : 0;
}
