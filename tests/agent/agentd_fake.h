/*
 * A fake control server for the agent daemon tests: the AgentService side
 * of aegis-control (Enroll, Authenticate, Subscribe, Ack, FetchArtifact,
 * ReportTelemetry) on a real UDP socket, in the test's libev loop, with
 * just enough state to drive the daemon and observe it. Not a model of
 * aegis-control's database: it keeps everything in arrays.
 */
#ifndef AGENTD_FAKE_H
#define AGENTD_FAKE_H

#include "agentd_test_keys.h"

#include <aegis/transport_ev.h>

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

struct fconn;

#define FAKE_MAX_CMDS 64
#define FAKE_MAX_ACKS 512
#define FAKE_MAX_BATCHES 8192
#define FAKE_MAX_ARTS 8

struct fake_ack {
    char id[64];
    uint64_t seq;
    uint32_t state;
    int duplicate;
    char detail[1024];
    char result[4096];
    size_t result_len;
};

struct fake_cmd {
    uint8_t *signed_bytes;
    size_t len;
    char id[64];
    uint64_t seq;
    int final; /* SUCCEEDED/FAILED acked */
};

struct fake_art {
    uint8_t sha[32];
    uint8_t *content; /* stored bytes (maybe compressed, maybe tampered) */
    size_t len;
    uint8_t *header; /* serialized ArtifactHeader */
    size_t header_len;
    size_t cut_after; /* first fetch from 0 stops with UNAVAILABLE after this many bytes */
    int cut_done;
};

/* Persistent server-side state: survives fake_stop/fake_start (a server
 * restart keeps its "database"). */
struct fake {
    struct ev_loop *loop;
    struct aegis_ev *ev;
    unsigned port;
    char dir[256];
    /* PKI */
    struct aegis_key *ca_key, *srv_key;
    char *ca_pem, *srv_pem, *srv_key_pem;
    char pin[53];
    struct tkey cmd_key, art_key;
    char token[64];
    /* the enrolled agent */
    int enrolls;
    char agent_id[64];
    uint8_t machine_hash[32];
    char recorded_version[64];
    char refuse_version[64]; /* Authenticate of this version is refused */
    int auths_ok, auths_failed;
    char last_version[64];
    /* commands */
    struct aegis_call *sub_call;
    int subscribes;
    uint64_t last_after;
    struct fake_cmd cmds[FAKE_MAX_CMDS];
    size_t ncmds;
    struct fake_ack acks[FAKE_MAX_ACKS];
    size_t nacks;
    /* telemetry */
    uint64_t batches[FAKE_MAX_BATCHES];
    size_t nbatches;
    size_t dup_batches, metrics, events;
    size_t rule_metrics; /* aegis_rule_packets_total samples (BPF counters) */
    uint32_t telemetry_interval_s;
    /* artifacts */
    struct fake_art arts[FAKE_MAX_ARTS];
    size_t narts;
    uint64_t fetch_offsets[64];
    size_t nfetch;
    int conns_open;
    struct fconn *fconns; /* per-connection state, freed at fake_stop */
};

/* fake_init makes the PKI (in memory) and the keys; fake_start binds
 * 127.0.0.1:port (0 = ephemeral; the first start picks one, restarts reuse
 * it). fake_stop closes the socket abruptly (like a killed server). */
void fake_init(struct fake *f, struct ev_loop *loop);
int fake_start(struct fake *f);
void fake_stop(struct fake *f);
void fake_free(struct fake *f);

/* fake_push builds a signed command for the enrolled agent, stores it and
 * sends it on the live Subscribe stream. Payload: the caller fills *c
 * (payload_case and member); id/seq/scope/expiry/nonce are set here unless
 * already set. flags: FAKE_BAD_SIG, FAKE_EXPIRED. Returns the index. */
#define FAKE_BAD_SIG 0x1
#define FAKE_EXPIRED 0x2
size_t fake_push(struct fake *f, void *command, unsigned flags);
/* fake_resend sends stored command i again (a replay / redelivery). */
void fake_resend(struct fake *f, size_t i);

/* fake_add_artifact stores content under a statement signed by the
 * artifact key (kind, compression as in the proto); tamper flips one byte
 * of the stored content after signing; returns the index. */
size_t fake_add_artifact(struct fake *f, const char *name, int kind, const char *version,
                         const uint8_t *raw, size_t rawlen, int zstd, int tamper);

/* fake_find_ack returns the ack for (id, state), or NULL. */
const struct fake_ack *fake_find_ack(const struct fake *f, const char *id, uint32_t state);
/* fake_count_acks counts acks for id with state (0 = any). */
size_t fake_count_acks(const struct fake *f, const char *id, uint32_t state);

#endif
