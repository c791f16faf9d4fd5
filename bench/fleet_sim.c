/*
 * aegis-fleet-sim: N simulated agents in one process against an EXTERNAL aegis-control, for
 * the fault suite (tests/fleet/) and the soak script (bench/soak.sh).
 *
 *   aegis-fleet-sim --server HOST:PORT --pki DIR --db DSN --n N --summary FILE [options]
 *
 * Each agent is a real QUIC connection with its own identity (certificate issued up front
 * against the fleet CA, row enrolled with COPY: bench_fleet_ident.c, bench_fleet_db.c) that
 * does what aegis-agent does on the wire (bench_fleet_agent.c): Authenticate, Subscribe, Ack
 * RECEIVED then SUCCEEDED with a pending-ack journal, telemetry, reconnect with backoff.
 *
 * What this program adds is the record of effects: every agent keeps an in-memory set of the
 * command ids it has seen, like the real agent's journal. A command id seen for the first time
 * "takes effect" (its effect count goes to 1); a redelivery of a seen id is acknowledged
 * SUCCEEDED as a duplicate without taking effect again. A correct control plane therefore
 * leaves every (agent, command) at effects=1; the fault test asserts it.
 *
 * It runs until SIGTERM/SIGINT, until --stop-file exists, or for --seconds; then it writes
 * the summary (atomically, FILE.tmp renamed to FILE) and exits 0:
 *   sim agents=N ready=R auth_ok=A closes=C retries=R acks_ok=K acks_failed=F dup_cmds=D
 *       pending_acks=P tel_batches=B commands=M effects=E
 *   agent=ID command=ID effects=K received=R acked=S     (one line per agent and command)
 * received = SignedCommand messages carrying this id (redeliveries included), acked = SUCCEEDED
 * acks the server committed for it (duplicates included).
 * --status-file FILE is rewritten every second with one line "ready=R n=N effects=E ...", so
 * a script can wait for a condition instead of sleeping.
 */
#include "bench_fleet.h"

#include <aegis/err.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Limits (DESIGN §8). */
#define SIM_MAX_AGENTS 200000
#define SIM_MAX_IDS 100000 /* distinct command ids one agent records */
#define SIM_TICK_S 0.1

/* One command id as one agent saw it. */
struct sim_rec {
    char id[37];
    uint32_t effects, received, acked;
};

/* An agent's seen-id set: open addressing on the id's hash, grown at 1/2 load. */
struct sim_seen {
    struct sim_rec *tab;
    size_t cap, n;
};

static struct {
    const char *server, *pki, *db, *summary, *status, *stop_file, *bind_ip;
    size_t n;
    uint64_t seed;
    double seconds;
    unsigned parallel;
    double tel_interval;
    unsigned tel_events;
    double idle_timeout_s, backoff_cap_s;
    int sources;
} O = {.n = 100, .parallel = 200, .tel_events = 10, .backoff_cap_s = 30.0};

static struct fleet FL;
static struct sim_seen *seen;
static uint64_t effects_total, overflow;
static size_t next_connect;
static double t_start, next_tel;
static int stopping;

void fleet_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("aegis-fleet-sim: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    return (double)aegis_now() / 1e9;
}

static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211ull;
    return h;
}

/* Finds id in s; creates it (effects 0) if create. NULL if absent or out of room. */
static struct sim_rec *seen_get(struct sim_seen *s, const char *id, int create)
{
    if (create && (s->n + 1) * 2 > s->cap) {
        if (s->n >= SIM_MAX_IDS)
            return NULL;
        size_t nc = s->cap ? s->cap * 2 : 16;
        struct sim_rec *t = calloc(nc, sizeof(*t));
        if (!t)
            return NULL;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->tab[i].id[0])
                continue;
            size_t j = id_hash(s->tab[i].id) & (nc - 1);
            while (t[j].id[0])
                j = (j + 1) & (nc - 1);
            t[j] = s->tab[i];
        }
        free(s->tab);
        s->tab = t;
        s->cap = nc;
    }
    if (!s->cap)
        return NULL;
    size_t j = id_hash(id) & (s->cap - 1);
    for (size_t k = 0; k < s->cap; k++, j = (j + 1) & (s->cap - 1)) {
        if (!s->tab[j].id[0]) {
            if (!create)
                return NULL;
            snprintf(s->tab[j].id, sizeof(s->tab[j].id), "%s", id);
            s->n++;
            return &s->tab[j];
        }
        if (strcmp(s->tab[j].id, id) == 0)
            return &s->tab[j];
    }
    return NULL;
}

/* fleet.on_command: the first sight of an id takes effect; later ones are duplicates. */
static int on_command(struct fleet *f, struct fleet_agent *a, const char *id, uint64_t seq)
{
    (void)f;
    (void)seq;
    struct sim_rec *r = seen_get(&seen[a->idx], id, 1);
    if (!r) {
        overflow++; /* cannot record: refuse to run it rather than risk running it twice */
        return 0;
    }
    r->received++;
    if (r->effects)
        return 0;
    r->effects = 1;
    effects_total++;
    return 1;
}

static void on_succeeded(struct fleet *f, struct fleet_agent *a, const char *id)
{
    (void)f;
    struct sim_rec *r = seen_get(&seen[a->idx], id, 0);
    if (r)
        r->acked++;
}

static size_t pending_acks(void)
{
    size_t p = 0;
    for (size_t i = 0; i < FL.n; i++)
        for (int k = 0; k < FLEET_PENDING; k++)
            p += FL.agents[i].pending[k].next_state != 0;
    return p;
}

static size_t distinct_commands(void)
{
    /* Commands seen by at least one agent: the union over agents (small in practice). */
    struct sim_seen u = {0};
    for (size_t i = 0; i < FL.n; i++)
        for (size_t j = 0; j < seen[i].cap; j++)
            if (seen[i].tab[j].id[0])
                seen_get(&u, seen[i].tab[j].id, 1);
    size_t n = u.n;
    free(u.tab);
    return n;
}

/* Agents authenticated whose Subscribe stream is open (a command reaches them at once). */
static size_t subscribed(void)
{
    size_t k = 0;
    for (size_t i = 0; i < FL.n; i++)
        k += FL.agents[i].phase == FA_READY && FL.agents[i].sub != NULL;
    return k;
}

static void status_line(FILE *out)
{
    fprintf(out,
            "ready=%" PRIu64 " n=%zu auth_ok=%" PRIu64 " closes=%" PRIu64 " retries=%" PRIu64
            " acks_ok=%" PRIu64 " acks_failed=%" PRIu64 " dup_cmds=%" PRIu64 " effects=%" PRIu64
            " tel_batches=%" PRIu64 " tel_calls_failed=%" PRIu64 " overflow=%" PRIu64
            " uptime_s=%.1f subscribed=%zu\n",
            FL.st.ready, FL.n, FL.st.auth_ok, FL.st.closes, FL.st.retries, FL.st.acks_ok,
            FL.st.acks_failed, FL.st.dup_cmds, effects_total, FL.st.tel_batches_committed,
            FL.st.tel_calls_failed, overflow, now_s() - t_start, subscribed());
}

/* write_atomic writes via FILE.tmp + rename so a reader never sees half a file. */
static int write_atomic(const char *path, void (*fill)(FILE *))
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    fill(f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return -EIO;
    }
    return rename(tmp, path) == 0 ? 0 : -errno;
}

static void fill_summary(FILE *out)
{
    fprintf(out,
            "sim agents=%zu ready=%" PRIu64 " auth_ok=%" PRIu64 " closes=%" PRIu64
            " retries=%" PRIu64 " acks_ok=%" PRIu64 " acks_failed=%" PRIu64 " dup_cmds=%" PRIu64
            " pending_acks=%zu tel_batches=%" PRIu64 " commands=%zu effects=%" PRIu64
            " overflow=%" PRIu64 "\n",
            FL.n, FL.st.ready, FL.st.auth_ok, FL.st.closes, FL.st.retries, FL.st.acks_ok,
            FL.st.acks_failed, FL.st.dup_cmds, pending_acks(), FL.st.tel_batches_committed,
            distinct_commands(), effects_total, overflow);
    for (size_t i = 0; i < FL.n; i++)
        for (size_t j = 0; j < seen[i].cap; j++) {
            const struct sim_rec *r = &seen[i].tab[j];
            if (r->id[0])
                fprintf(out,
                        "agent=%s command=%s effects=%" PRIu32 " received=%" PRIu32
                        " acked=%" PRIu32 "\n",
                        FL.agents[i].id->agent_id, r->id, r->effects, r->received, r->acked);
        }
}

static void finish(struct ev_loop *loop)
{
    if (stopping)
        return;
    stopping = 1;
    int rv = write_atomic(O.summary, fill_summary);
    if (rv != 0)
        fprintf(stderr, "aegis-fleet-sim: cannot write the summary %s: %s\n", O.summary,
                strerror(-rv));
    fprintf(stderr, "aegis-fleet-sim: stopping; summary in %s: ", O.summary);
    status_line(stderr);
    ev_break(loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    finish(loop);
}

static size_t in_progress(void)
{
    size_t k = 0;
    for (size_t i = 0; i < next_connect; i++) {
        enum fleet_phase p = FL.agents[i].phase;
        k += p == FA_CONNECTING || p == FA_AUTHING;
    }
    return k;
}

/* Telemetry: every agent sends one batch per interval, spread over the interval. It starts
 * once every agent has authenticated (the connect phase over), so the two do not compete for
 * the control's database queue. */
static void telemetry_tick(double t)
{
    static int started;
    if (!started)
        started = FL.st.ready >= FL.n;
    if (O.tel_interval <= 0 || !started || t < next_tel)
        return;
    size_t per_tick = (size_t)((double)FL.n * SIM_TICK_S / O.tel_interval) + 1;
    static size_t cursor;
    for (size_t k = 0; k < per_tick && k < FL.n; k++) {
        struct fleet_agent *a = &FL.agents[cursor];
        cursor = (cursor + 1) % FL.n;
        if (a->phase == FA_READY && !a->tel)
            fleet_telemetry_call(&FL, a);
    }
    next_tel = t + SIM_TICK_S;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    double t = now_s();
    /* Connect paced: at most --parallel handshakes and Authenticates in flight. */
    if (next_connect < FL.n) {
        size_t busy = in_progress();
        while (next_connect < FL.n && busy < O.parallel) {
            int rv = fleet_connect(&FL, &FL.agents[next_connect]);
            if (rv != 0)
                fleet_die("connect agent %zu: %s", next_connect, aegis_strerror(rv));
            next_connect++;
            busy++;
        }
    }
    telemetry_tick(t);
    static double next_status;
    if (O.status && t >= next_status) {
        write_atomic(O.status, status_line);
        next_status = t + 1.0;
    }
    if ((O.seconds > 0 && t - t_start >= O.seconds) ||
        (O.stop_file && access(O.stop_file, F_OK) == 0))
        finish(loop);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: aegis-fleet-sim --server HOST:PORT --pki DIR --db DSN --summary FILE [options]\n"
        "  --n N                  simulated agents (default 100, at most %d)\n"
        "  --seed S               identity seed; distinct per process (default: time)\n"
        "  --bind IP              bind every agent to this IPv4 address (in a netns)\n"
        "  --sources S            without --bind: spread over 127.0.0.1..S (auto)\n"
        "  --parallel P           handshakes + Authenticates in flight (200)\n"
        "  --telemetry-interval S one batch per agent every S seconds (0 = none)\n"
        "  --events-per-batch E   events in each batch (10)\n"
        "  --idle-timeout-s S     agents' QUIC idle timeout (transport default 60)\n"
        "  --backoff-cap-s S      reconnect backoff cap (30; base 1 s, full jitter)\n"
        "  --seconds S            stop after S seconds (default: on SIGTERM)\n"
        "  --stop-file F          stop when F exists\n"
        "  --status-file F        rewritten every second: ready=R n=N effects=E ...\n"
        "  --summary F            where the per-agent, per-command counts go\n",
        SIM_MAX_AGENTS);
    exit(2);
}

static double num(const char *s, const char *opt, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        fleet_die("%s %s: not a number in %g..%g", opt, s, lo, hi);
    return v;
}

static void parse(int argc, char **argv)
{
    enum { N = 1, SEED, BIND, SOURCES, PAR, TELI, TELE, IDLE, BCAP, SECS, STOPF, STATF };
    static const struct option lo[] = {
        {"server", required_argument, 0, 's'},
        {"pki", required_argument, 0, 'p'},
        {"db", required_argument, 0, 'd'},
        {"summary", required_argument, 0, 'o'},
        {"n", required_argument, 0, N},
        {"seed", required_argument, 0, SEED},
        {"bind", required_argument, 0, BIND},
        {"sources", required_argument, 0, SOURCES},
        {"parallel", required_argument, 0, PAR},
        {"telemetry-interval", required_argument, 0, TELI},
        {"events-per-batch", required_argument, 0, TELE},
        {"idle-timeout-s", required_argument, 0, IDLE},
        {"backoff-cap-s", required_argument, 0, BCAP},
        {"seconds", required_argument, 0, SECS},
        {"stop-file", required_argument, 0, STOPF},
        {"status-file", required_argument, 0, STATF},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    O.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            O.server = optarg;
            break;
        case 'p':
            O.pki = optarg;
            break;
        case 'd':
            O.db = optarg;
            break;
        case 'o':
            O.summary = optarg;
            break;
        case N:
            O.n = (size_t)num(optarg, "--n", 1, SIM_MAX_AGENTS);
            break;
        case SEED:
            O.seed = (uint64_t)num(optarg, "--seed", 0, 1e15);
            break;
        case BIND:
            O.bind_ip = optarg;
            break;
        case SOURCES:
            O.sources = (int)num(optarg, "--sources", 1, 250);
            break;
        case PAR:
            O.parallel = (unsigned)num(optarg, "--parallel", 1, SIM_MAX_AGENTS);
            break;
        case TELI:
            O.tel_interval = num(optarg, "--telemetry-interval", 0, 86400);
            break;
        case TELE:
            O.tel_events = (unsigned)num(optarg, "--events-per-batch", 1, 10000);
            break;
        case IDLE:
            O.idle_timeout_s = num(optarg, "--idle-timeout-s", 3, 3600);
            break;
        case BCAP:
            O.backoff_cap_s = num(optarg, "--backoff-cap-s", 1, 3600);
            break;
        case SECS:
            O.seconds = num(optarg, "--seconds", 1, 30 * 86400);
            break;
        case STOPF:
            O.stop_file = optarg;
            break;
        case STATF:
            O.status = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || !O.server || !O.pki || !O.db || !O.summary)
        usage();
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    fleet_prog = "aegis-fleet-sim";
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < O.n + 64)
        fleet_die("RLIMIT_NOFILE is %llu, %zu agents need %zu descriptors (raise the hard "
                  "limit: ulimit -Hn)",
                  (unsigned long long)rl.rlim_cur, O.n, O.n + 64);

    struct fleet_ident *ids = calloc(O.n, sizeof(*ids));
    seen = calloc(O.n, sizeof(*seen));
    if (!ids || !seen)
        fleet_die("out of memory for %zu agents", O.n);
    int rv = fleet_ident_issue(ids, O.n, O.pki, O.seed);
    if (rv != 0)
        fleet_die("cannot issue identities from %s/ca.pem and ca.key: %s", O.pki,
                  aegis_strerror(rv));
    size_t sl;
    char pin[AEGIS_PIN_STRLEN];
    char *spem = fleet_slurp(O.pki, "server.pem", &sl);
    if (!spem || aegis_pin_from_pem(spem, sl, pin) != 0)
        fleet_die("cannot pin %s/server.pem (run aegis-certs server --dir %s)", O.pki, O.pki);
    free(spem);

    struct fleet_db *db;
    if (fleet_db_open(O.db, &db) != 0)
        fleet_die("cannot open the database %s", O.db);
    if (fleet_db_enroll(db, ids, O.n) != 0)
        fleet_die("cannot enroll the identities (COPY agents)");
    fleet_db_close(db);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop)
        fleet_die("cannot create the event loop");
    FL.rng = O.seed | 1;
    FL.backoff_base = AEGIS_NS_PER_S;
    FL.backoff_cap = (uint64_t)(O.backoff_cap_s * 1e9);
    FL.idle_timeout = (uint64_t)(O.idle_timeout_s * 1e9);
    FL.tel_events_per_batch = O.tel_events;
    FL.tel_batches_per_call = 1;
    FL.bind_ip = O.bind_ip;
    FL.on_command = on_command;
    FL.on_succeeded = on_succeeded;
    unsigned nsrc = O.sources > 0 ? (unsigned)O.sources : (unsigned)(1 + O.n / 20000);
    if ((rv = fleet_init(&FL, loop, O.n, ids, O.server, pin, nsrc)) != 0)
        fleet_die("cannot set up %zu agent sockets for %s%s%s: %s", O.n, O.server,
                  O.bind_ip ? " bound to " : "", O.bind_ip ? O.bind_ip : "", aegis_strerror(rv));

    ev_signal sterm, sint;
    ev_signal_init(&sterm, on_signal, SIGTERM);
    ev_signal_init(&sint, on_signal, SIGINT);
    ev_signal_start(loop, &sterm);
    ev_signal_start(loop, &sint);
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.0, SIM_TICK_S);
    ev_timer_start(loop, &tick);
    t_start = now_s();
    fprintf(stderr, "aegis-fleet-sim: %zu agents enrolled, connecting to %s (pid %d)\n", O.n,
            O.server, (int)getpid());
    ev_run(loop, 0);

    ev_timer_stop(loop, &tick);
    ev_signal_stop(loop, &sterm);
    ev_signal_stop(loop, &sint);
    fleet_free(&FL);
    for (size_t i = 0; i < O.n; i++)
        free(seen[i].tab);
    free(seen);
    fleet_ident_free(ids, O.n);
    ev_loop_destroy(loop);
    return 0;
}
