/*
 * aegis-bench-fleet: N simulated agents in one process against a real aegis-control.
 *
 * Shared state of the fleet benchmark. Files:
 *   bench_fleet_main.c   options, the control process (spawn, kill -9, restart), scenarios
 *   bench_fleet_agent.c  one simulated agent: its UDP socket, its QUIC endpoint driven
 *                        sans-I/O, and the AgentService calls the real agent makes
 *   bench_fleet_oper.c   the operator connection (SendCommand, AssignArtifact, CreateToken)
 *   bench_fleet_db.c     libpq: enrolling identities with COPY, polling deliveries
 *   bench_fleet_ident.c  identities issued up front with aegis_pki against the fleet CA
 *   fleet_sim.c          aegis-fleet-sim: the agents against an external control, counting
 *                        each command's effects per agent (fault suite, soak)
 * (agent, db and ident form the static library aegis_bench_fleet_lib, bench_fleet.cmake)
 *
 * One thread, one libev loop. Every agent has its own socket and its own client endpoint
 * (its own certificate); a single ev_prepare flushes only the agents touched since the last
 * loop turn, so the per-turn cost does not grow with N (aegis_ev's one prepare watcher per
 * endpoint would).
 */
#ifndef BENCH_FLEET_H
#define BENCH_FLEET_H

#include <aegis/pki.h>
#include <aegis/rpc.h>
#include <aegis/tstamp.h>

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Commands an agent tracks between RECEIVED and SUCCEEDED (its pending-ack journal). */
#define FLEET_PENDING 8
/* Version the simulated agents report. */
#define FLEET_AGENT_VERSION "0.1.0"
/* Label every bench agent carries, so one selector reaches the whole fleet. */
#define FLEET_LABEL_KEY "fleet"
#define FLEET_LABEL_VALUE "bench"

struct fleet_ident {
    char agent_id[37];
    char host_id[32];
    uint8_t machine_id_hash[32];
    uint8_t spki_sha256[32];
    struct aegis_key *key;
    char *cert_pem;
    size_t cert_len;
    char *key_pem;
    size_t key_len;
};

enum fleet_phase {
    FA_IDLE = 0,   /* not connected, no reconnect pending */
    FA_CONNECTING, /* handshake */
    FA_AUTHING,    /* Authenticate in progress */
    FA_READY,      /* authenticated and subscribed */
    FA_BACKOFF,    /* waiting to reconnect */
    FA_ENROLLING,  /* enroll scenario: Enroll in progress */
};

struct fleet_cmd {
    char id[37];
    uint64_t seq;
    int next_state; /* CommandState still to send: RECEIVED, then SUCCEEDED; 0 = free slot */
    int in_flight;  /* an Ack call is running for it */
    int fetch;      /* LoadArtifact: fetch before SUCCEEDED */
    uint8_t sha[32];
    uint64_t fetched, fetch_size;
    int fetching;
    int dup; /* already executed (fleet.on_command said so): acknowledged as a duplicate */
};

struct fleet_agent {
    size_t idx;
    struct fleet_ident *id;
    int fd;
    struct sockaddr_storage local;
    socklen_t local_len;
    ev_io rio;
    ev_timer timer;   /* endpoint expiry */
    ev_timer backoff; /* reconnect */
    ev_timer retry;   /* calls shed with UNAVAILABLE on a live connection */
    struct aegis_endpoint *ep;
    struct aegis_conn *conn;
    struct aegis_call *auth, *sub, *tel;
    enum fleet_phase phase;
    int dirty;
    struct fleet_agent *next_dirty;
    unsigned attempt; /* reconnect attempts since the last success */
    uint64_t t_connect, t_auth;
    uint64_t acked_seq; /* highest sequence fully acknowledged (SUCCEEDED committed) */
    struct fleet_cmd pending[FLEET_PENDING];
    uint64_t tel_batch;
    int tel_outstanding;
    int enrolled;
    /* Lowest sequence dropped because the journal was full (0 = none): the next Subscribe
     * starts below it so the server sends it again. */
    uint64_t resub_floor;
};

/* Counters the scenarios read. */
struct fleet_stats {
    uint64_t connects, handshakes_ok, handshakes_failed, retries;
    uint64_t auth_ok, auth_failed, auth_shed;
    uint64_t closes;
    uint64_t cmds_received, acks_ok, acks_failed, dup_cmds;
    uint64_t tel_batches_committed, tel_events_committed, tel_rejected, tel_calls_failed;
    uint64_t fetch_ok, fetch_failed, fetch_bytes;
    uint64_t enroll_ok, enroll_failed;
    uint64_t rx_bytes, tx_bytes, rx_pkts, tx_pkts;
    uint64_t ready; /* agents currently FA_READY */
};

struct fleet {
    struct ev_loop *loop;
    struct fleet_agent *agents;
    size_t n;
    struct fleet_ident *ids;
    struct sockaddr_storage server;
    socklen_t server_len;
    char server_pin[AEGIS_PIN_STRLEN];
    struct fleet_agent *dirty_head;
    ev_prepare prep;
    struct fleet_stats st;
    /* fan-out latency: every SUCCEEDED ack reply is sampled against cmd_t0 */
    uint64_t cmd_t0;
    uint64_t *lat;
    size_t nlat, caplat;
    /* telemetry */
    int tel_running;
    unsigned tel_events_per_batch, tel_batches_per_call;
    /* reconnect backoff (full jitter): base and cap */
    uint64_t backoff_base, backoff_cap;
    uint64_t idle_timeout;
    uint64_t rng;
    /* enroll scenario */
    const char *enroll_token;
    /* Set before fleet_init: bind every agent to this IPv4 address (port chosen by the
     * kernel) instead of 127.0.0.1..nsrc; used inside a network namespace. */
    const char *bind_ip;
    /* Optional hooks (aegis-fleet-sim). on_command is called once per SignedCommand that is
     * not already in the agent's pending journal; it returns 1 if the command takes effect
     * now (first time this agent sees the id), 0 if it already took effect (then it is
     * acknowledged SUCCEEDED as a duplicate, not run again). Without it, a command whose
     * sequence is at or below the last acknowledged one counts as a duplicate. on_succeeded
     * is called when a SUCCEEDED ack was committed by the server. */
    int (*on_command)(struct fleet *f, struct fleet_agent *a, const char *command_id,
                      uint64_t sequence);
    void (*on_succeeded)(struct fleet *f, struct fleet_agent *a, const char *command_id);
};

/* bench_fleet_ident.c */
int fleet_ident_issue(struct fleet_ident *ids, size_t n, const char *pki_dir, uint64_t seed);
int fleet_ident_self(struct fleet_ident *id, size_t idx, uint64_t seed);
void fleet_ident_free(struct fleet_ident *ids, size_t n);
char *fleet_slurp(const char *dir, const char *name, size_t *plen);

/* bench_fleet_agent.c */
extern const char *fleet_prog; /* prefix of the messages printed on stderr */
int fleet_init(struct fleet *f, struct ev_loop *loop, size_t n, struct fleet_ident *ids,
               const char *server, const char *pin, unsigned nsrc);
void fleet_free(struct fleet *f);
int fleet_connect(struct fleet *f, struct fleet_agent *a);
int fleet_make_endpoint(struct fleet *f, struct fleet_agent *a);
void fleet_drop(struct fleet *f, struct fleet_agent *a);
void fleet_touch(struct fleet *f, struct fleet_agent *a);
int fleet_telemetry_call(struct fleet *f, struct fleet_agent *a);
uint64_t fleet_rand(struct fleet *f);
void fleet_sample(struct fleet *f, uint64_t v);

/* bench_fleet_oper.c: unary OperatorService calls on one operator connection. Each runs the
 * loop until the reply or the deadline; the reply is left packed in *pout (malloc). */
struct fleet_oper;
int fleet_oper_new(struct ev_loop *loop, const char *server, const char *pin, const char *pki_dir,
                   const char *name, struct fleet_oper **pop);
void fleet_oper_del(struct fleet_oper *op);
void fleet_oper_reset(struct fleet_oper *op);
int fleet_oper_call(struct fleet_oper *op, const char *method, const uint8_t *req, size_t len,
                    double seconds, uint8_t **pout, size_t *plen, char *err, size_t errlen);

/* bench_fleet_db.c */
struct fleet_db;
int fleet_db_open(const char *dsn, struct fleet_db **pdb);
void fleet_db_close(struct fleet_db *db);
int fleet_db_enroll(struct fleet_db *db, const struct fleet_ident *ids, size_t n);
/* Runs a query returning one row; copies up to ncols text values into out (each <= 63). */
int fleet_db_row(struct fleet_db *db, const char *sql, const char *param, char out[][64],
                 int ncols);

/* bench_fleet_main.c helpers used elsewhere */
void fleet_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
