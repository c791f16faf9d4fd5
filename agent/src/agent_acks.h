/*
 * agent_acks: the durable pending-ack journal (DESIGN §5).
 *
 * Every command outcome the agent must report (RECEIVED, RUNNING,
 * SUCCEEDED, FAILED) is appended here and fdatasync'd before it is sent; it
 * stays pending -- and is re-sent after every reconnect -- until the server
 * confirms it with an AckResponse. Confirmations are journaled too, and
 * compaction drops confirmed acks. The count and total bytes of pending acks
 * are bounded; a full journal refuses new acks (AEGIS_ERR_LIMIT) instead of
 * dropping unconfirmed ones.
 */
#ifndef AGENT_ACKS_H
#define AGENT_ACKS_H

#include "agent_io.h"
#include "agent_journal.h"

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

/* Longest command id (UUID strings are 36 bytes). */
#define AGENT_ACKS_ID_MAX 64u
/* Detail is a human-readable sentence; 1 KiB holds any error we produce. */
#define AGENT_ACKS_DETAIL_MAX 1024u
/* AckRequest.result is "at most 1 MiB" in aegis.v1. */
#define AGENT_ACKS_RESULT_MAX (1u << 20)
/* Pending acks: commands arrive one at a time and are acked within
 * seconds; 4096 covers days of an offline agent at realistic rates. */
#define AGENT_ACKS_DEFAULT_MAX_PENDING 4096u
/* Journal file cap: room for a few full-size results plus many small acks. */
#define AGENT_ACKS_DEFAULT_MAX_BYTES (16u << 20)
/* Flag: the agent had already executed this id (AckRequest.duplicate). */
#define AGENT_ACK_DUPLICATE 0x1u
/* Tag in the journal header ("ACKS"). */
#define AGENT_ACKS_JOURNAL_KIND 0x534b4341u

struct agent_ack {
    char *id;        /* NUL-terminated */
    uint64_t seq;    /* the command's per-agent sequence */
    uint32_t state;  /* CommandState */
    uint32_t flags;  /* AGENT_ACK_* */
    char *detail;    /* NUL-terminated, may be "" */
    uint8_t *result; /* may be NULL when result_len == 0 */
    size_t result_len;
};

struct agent_acks_config {
    uint32_t max_pending;       /* 0 = default */
    uint64_t max_bytes;         /* journal cap, 0 = default */
    uint64_t compact_min_bytes; /* 0 = journal default */
};

struct agent_acks;

/*
 * agent_acks_open opens or creates the journal at path and rebuilds the
 * pending list in append order. path/cfg are copied; io and mem (NULL =
 * defaults) are borrowed. Errors: those of agent_journal_open, -ENOMEM.
 */
int agent_acks_open(const char *path, const struct agent_acks_config *cfg,
                    const struct agent_io *io, const struct aegis_mem *mem, char *errmsg,
                    size_t errlen, struct agent_acks **packs);

/* agent_acks_del closes and frees. NULL is fine. */
void agent_acks_del(struct agent_acks *a);

/*
 * agent_acks_append durably records an ack to send. id, detail (may be NULL)
 * and result (may be NULL if result_len is 0) are copied. Appending an ack
 * with the same (id, state) as a pending one is a no-op returning 0.
 * Errors: -EINVAL (empty/over-long id, over-long detail or result),
 * AEGIS_ERR_LIMIT (max_pending reached, or the journal is full of pending
 * acks), -ENOMEM, journal errors (see agent_journal_append).
 */
int agent_acks_append(struct agent_acks *a, const char *id, uint64_t seq, uint32_t state,
                      uint32_t flags, const char *detail, const void *result, size_t result_len);

/*
 * agent_acks_confirm durably records that the server committed the ack
 * (id, state) and removes it from the pending list. Errors: -EINVAL,
 * AEGIS_ERR_NOT_FOUND (no such pending ack: a duplicate confirmation),
 * journal errors.
 */
int agent_acks_confirm(struct agent_acks *a, const char *id, uint32_t state);

/* agent_acks_count is the number of pending acks. */
size_t agent_acks_count(const struct agent_acks *a);

/* agent_acks_at returns the i-th pending ack, oldest first (borrowed until
 * the next append/confirm/compact), or NULL if i is out of range. */
const struct agent_ack *agent_acks_at(const struct agent_acks *a, size_t i);

/* agent_acks_compact rewrites the journal with only pending acks. */
int agent_acks_compact(struct agent_acks *a);

/* agent_acks_journal_size is the journal file's size in bytes. */
uint64_t agent_acks_journal_size(const struct agent_acks *a);

/* agent_acks_skipped counts unparseable records skipped at open. */
uint64_t agent_acks_skipped(const struct agent_acks *a);

/* agent_acks_recovery is what the journal found at open (borrowed). */
const struct agent_journal_recovery *agent_acks_recovery(const struct agent_acks *a);

#endif
