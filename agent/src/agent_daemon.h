/*
 * The aegis-agent daemon (`aegis-agent run`): shared state of the files
 * that make it up.
 *
 *   agent_run.c        connection: connect, Authenticate, Subscribe, Ack
 *                      pump, reconnect with backoff, signals, sd_notify
 *   agent_exec.c       command intake (verify, admit) and execution
 *   agent_fetch.c      FetchArtifact with resume, verification, loading
 *   agent_policy.c     ApplyPolicy through aegis_bpf
 *   agent_telemetry.c  collectors, spool, ReportTelemetry
 *   agent_update.c     self-update, restart (re-exec) and rollback
 *   agent_status.c     status.json and `aegis-agent status`
 *
 * Everything runs on one libev loop in one thread. Durable state (seen ids,
 * pending acks, spool) is written before anything depends on it.
 */
#ifndef AGENT_DAEMON_H
#define AGENT_DAEMON_H

#include "agent_acks.h"
#include "agent_artifact.h"
#include "agent_backoff.h"
#include "agent_ident.h"
#include "agent_seen.h"
#include "agent_spool.h"
#include "agent_state_dir.h"

#include <aegis/log.h>
#include <aegis/tstamp.h>

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

struct aegis_ev;
struct aegis_conn;
struct aegis_call;
struct agent_bpf;
struct aegis_key;

#define AGENT_DEFAULT_STATE_DIR "/var/lib/aegis-agent"
#define AGENT_MAX_IFACES 8
/* Commands queued behind the running one; more are not admitted (not even
 * marked seen), so the server redelivers them later. */
#define AGENT_CMD_QUEUE_MAX 32u
/* Default telemetry cadence until the server's SessionSettings arrive. */
#define AGENT_DEFAULT_METRICS_INTERVAL_S 60u
#define AGENT_DEFAULT_TELEMETRY_INTERVAL_S 60u
/* Floor for server-set intervals: protects the host from a server that
 * asks for a sample every millisecond. */
#define AGENT_MIN_INTERVAL_S 1u
/* How long a connection attempt (handshake + Authenticate) may take. */
#define AGENT_CONNECT_TIMEOUT_NS (30 * AEGIS_NS_PER_S)
/* Unary Ack deadline; a lost ack is retried after AGENT_ACK_RETRY_S. */
#define AGENT_ACK_DEADLINE_NS (20 * AEGIS_NS_PER_S)
#define AGENT_ACK_RETRY_S 5.0
/* Batches and bytes in one ReportTelemetry stream. */
#define AGENT_TELEMETRY_STREAM_BATCHES 16u
#define AGENT_TELEMETRY_STREAM_BYTES (2u << 20)
/* A self-update must authenticate within this long or it is rolled back. */
#define AGENT_UPDATE_DEADLINE_S 60u
/* Service starts of a new version on trial before update-check rolls it back. */
#define AGENT_UPDATE_MAX_STARTS 3u
/* Failed FetchArtifact attempts (each resuming) before the command fails. */
#define AGENT_FETCH_MAX_ATTEMPTS 20u
/* Built-in "sleep" action bound (a diagnostic for delivery tests). */
#define AGENT_SLEEP_MAX_S 300u

#define AGENT_FILE_SEEN "seen.journal"
#define AGENT_FILE_ACKS "acks.journal"
#define AGENT_DIR_SPOOL "spool"
#define AGENT_DIR_ARTIFACTS "artifacts"
#define AGENT_FILE_STATUS "status.json"
#define AGENT_FILE_INFLIGHT "inflight"
#define AGENT_FILE_UPDATE "update.marker"
#define AGENT_FILE_POLICY "policy.state"

struct agent_opts {
    const char *state_dir;
    const char *machine_id_file;
    const char *ifaces[AGENT_MAX_IFACES];
    size_t nifaces;
    const char *bpf_pin_dir;    /* NULL = aegis_bpf default */
    unsigned update_deadline_s; /* 0 = AGENT_UPDATE_DEADLINE_S */
    enum aegis_log_level log_level;
    char *const *argv; /* for re-exec */
};

enum agent_conn_state {
    AGENT_CONN_BACKOFF = 0,
    AGENT_CONN_CONNECTING = 1,
    AGENT_CONN_AUTHENTICATING = 2,
    AGENT_CONN_READY = 3,
};

/* A verified, admitted command waiting for or under execution. */
struct agent_job {
    struct agent_job *next;
    Aegis__V1__Command *cmd; /* owned */
    /* async state */
    int fetch_attempts;
    uint64_t fetch_offset;
    int have_meta;
    int wait_conn; /* fetch interrupted: restart (resuming) when READY */
    int done;
    struct agent_artifact_meta meta;
    ev_timer timer; /* sleep action, restart delay */
};

struct agent {
    struct ev_loop *loop;
    const struct agent_opts *opts;
    struct aegis_log log;
    struct agent_state_dir *sd;
    struct agent_ident id;
    struct aegis_key *key; /* the agent's private key, for Authenticate */
    char exe_path[4096];   /* resolved at start: re-exec target */
    struct agent_seen *seen;
    struct agent_acks *acks;
    struct agent_spool *spool;
    struct agent_backoff backoff;
    char artifacts_dir[4096];

    /* connection */
    struct aegis_ev *ev;
    struct aegis_conn *conn;
    enum agent_conn_state state;
    struct aegis_call *auth_call, *sub_call, *ack_call, *tel_call, *fetch_call;
    ev_timer reconnect_timer, connect_timeout, ack_retry, metrics_timer, telemetry_timer;
    ev_timer update_timer;
    ev_signal sigterm, sigint;
    aegis_tstamp retry_hint; /* from the server, ns; 0 = none */
    uint64_t acked_sequence; /* server's, from AuthResult */
    uint64_t auth_count;     /* successful Authenticates this process */
    uint64_t connects;
    char last_error[256];
    int auth_stage; /* 0 hello sent, 1 proof sent, 2 done */
    uint32_t metrics_interval_s, telemetry_interval_s, max_batch_events;
    uint8_t ack_inflight_state;
    char ack_inflight_id[AGENT_ACKS_ID_MAX + 1];

    /* commands */
    struct agent_job *queue; /* head = running */
    size_t nqueue;
    int job_running; /* head has been started (async pending) */
    char last_command[128];
    char last_command_state[32];
    uint64_t commands_run;

    /* telemetry */
    uint64_t tel_sent_upto; /* last batch id put on the current stream */
    uint64_t drops_reported;
    uint64_t batches_committed;

    /* enforcement */
    struct agent_bpf *bpf;
    uint64_t policy_version;

    /* lifecycle */
    int stopping;
    int reexec;       /* 1: re-exec self after the loop ends */
    int update_trial; /* this process is a freshly installed update */
    char update_cmd[AGENT_SEEN_ID_MAX + 1];
    int notified_ready;
};

/* agent_run.c */
int agent_run(const struct agent_opts *opts);
void agent_pump(struct agent *a); /* send pending acks / telemetry / fetch */
void agent_conn_drop(struct agent *a, const char *why);

/* agent_exec.c */
void agent_exec_on_command(struct agent *a, const uint8_t *msg, size_t len);
void agent_exec_kick(struct agent *a); /* start the head job if idle */
void agent_exec_job_done(struct agent *a, struct agent_job *job, int ok, const char *detail,
                         const void *result, size_t result_len);
int agent_exec_recover(struct agent *a); /* ack commands a dead run left started */
void agent_exec_free(struct agent *a);
int agent_ack(struct agent *a, const char *id, uint64_t seq, uint32_t state, uint32_t flags,
              const char *detail, const void *result, size_t result_len);

/* agent_fetch.c */
void agent_fetch_start(struct agent *a, struct agent_job *job);
void agent_fetch_on_ready(struct agent *a);                      /* resume an interrupted fetch */
void agent_fetch_detach(struct agent *a, struct agent_job *job); /* job is finishing */

/* agent_policy.c */
int agent_policy_apply(struct agent *a, const Aegis__V1__MapSnapshot *snap, uint64_t version,
                       int rollback, char *detail, size_t len);
int agent_policy_flush_flows(struct agent *a, char *detail, size_t len);
void agent_policy_close(struct agent *a);
void agent_policy_init(struct agent *a); /* reads policy.state */

/* One metric sample, built by collectors before it becomes protobuf. */
struct agent_metric {
    char name[48];
    char lk[2][16];
    char lv[2][48];
    double value;
    int counter;
};
/* agent_policy_metrics appends BPF counters (global and per rule) when
 * enforcing; returns how many were added. */
size_t agent_policy_metrics(struct agent *a, struct agent_metric *out, size_t cap);

/* agent_telemetry.c */
void agent_telemetry_start(struct agent *a);
void agent_telemetry_reschedule(struct agent *a);
void agent_telemetry_pump(struct agent *a);
void agent_telemetry_event(struct agent *a, const char *kind, const char *k1, const char *v1,
                           const char *k2, const char *v2);
void agent_telemetry_stop(struct agent *a);

/* agent_update.c */
int agent_update_startup(struct agent *a); /* trial/rollback bookkeeping at start */
void agent_update_on_authenticated(struct agent *a);
/* agent_update_check is `aegis-agent update-check`, run by the service manager from the OLD
 * binary (<exe>.prev) before every start: during a trial it counts the start and rolls back
 * (restores <exe>.prev, marks the outcome for the old binary to ack) once there have been
 * max_starts of them or the deadline has passed. Does nothing without a trial, after the
 * trial, or while an agent runs on the directory. Exit code: 0, or 1 when the marker or the
 * binary could not be written (said on stderr). */
int agent_update_check(const char *state_dir, unsigned max_starts);
/* agent_update_precheck refuses a downgrade (finishing the job); 0 = go on. */
int agent_update_precheck(struct agent *a, struct agent_job *job);
/* agent_update_install installs the verified, decompressed binary at path. */
void agent_update_install(struct agent *a, struct agent_job *job, const char *path);
void agent_restart(struct agent *a);

/* agent_status.c */
void agent_status_write(struct agent *a);
int agent_status_print(const char *state_dir, int json);

/* agent_enroll.c */
struct agent_enroll_opts {
    const char *server;
    const char *pin;
    const char *token;
    const char *state_dir;
    const char *machine_id_file;
    int force;
    enum aegis_log_level log_level;
};
int agent_enroll(const struct agent_enroll_opts *o);

/* agent_run.c helpers */
void agent_sd_notify(const char *msg);
void agent_log_sink(enum aegis_log_level level, const char *line, void *user_data);

#endif
