/*
 * agent_seen: the durable journal of command ids this agent has started or
 * finished -- its replay protection and its exactly-once guarantee
 * (DESIGN §4, §5).
 *
 * Protocol for every verified command:
 *
 *   switch (agent_seen_check(s, id, &outcome)) {
 *   case AGENT_SEEN_NEW:      agent_seen_mark_started(...) -- durable first --
 *                             then execute, then agent_seen_mark_finished(...)
 *   case AGENT_SEEN_FINISHED: ack the recorded outcome again (duplicate), do
 *                             not execute
 *   case AGENT_SEEN_STARTED:  a previous run crashed (or was killed) between
 *                             starting and finishing this command: ack
 *                             FAILED("interrupted") and mark it finished with
 *                             that outcome; do NOT execute it again
 *   }
 *
 * Why "interrupted" instead of re-running: the effect of a half-run command
 * is unknown. Commands here change firewall policy, load artifacts, swap the
 * agent binary; running one twice can apply a stale policy over a newer one
 * or re-run an action an operator meant once. A security agent must never
 * double-apply, so it reports the uncertainty and lets the operator (who can
 * see the host's actual state) decide to re-issue it under a new id.
 *
 * Entries are kept until the command's expiry plus a margin (for clock
 * steps); after that the command itself is refused as expired, so the id is
 * no longer needed for replay protection. The entry count is bounded; when
 * it is full, new commands are refused (AEGIS_ERR_LIMIT) rather than
 * evicting unexpired ids, which would re-open the door to replays.
 */
#ifndef AGENT_SEEN_H
#define AGENT_SEEN_H

#include "agent_io.h"
#include "agent_journal.h"

#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

/* Longest command id; ids are UUID strings (36 bytes) in aegis.v1. */
#define AGENT_SEEN_ID_MAX 64u
/* Commands live at most 24 h (DESIGN §8); a few thousand per day per host
 * is far beyond real use, so 16384 live ids never fill up in practice. */
#define AGENT_SEEN_DEFAULT_MAX_ENTRIES 16384u
/* Keep ids this long past their expiry, so a wall clock stepped back by up
 * to an hour cannot make a dropped id's command look valid again. */
#define AGENT_SEEN_DEFAULT_MARGIN (3600 * AEGIS_NS_PER_S)
/* Tag in the journal header ("SEEN"). */
#define AGENT_SEEN_JOURNAL_KIND 0x4e454553u

enum agent_seen_state {
    AGENT_SEEN_NEW = 0,      /* never seen (or forgotten after expiry + margin) */
    AGENT_SEEN_STARTED = 1,  /* started, outcome unknown (crash before finish) */
    AGENT_SEEN_FINISHED = 2, /* finished with a recorded outcome */
};

struct agent_seen_config {
    uint32_t max_entries;       /* 0 = default */
    aegis_tstamp margin;        /* 0 = default */
    uint64_t max_bytes;         /* journal file cap, 0 = journal default (4 MiB) */
    uint64_t compact_min_bytes; /* 0 = journal default */
};

struct agent_seen;

/*
 * agent_seen_open opens or creates the journal at path and rebuilds the
 * table, dropping entries whose expiry + margin is before now (wall clock,
 * ns since the epoch). path/cfg are copied; io and mem (NULL = defaults)
 * are borrowed. Records it cannot parse are skipped and counted (see
 * agent_seen_skipped). errmsg (may be NULL) gets a sentence on failure.
 * Errors: those of agent_journal_open, -ENOMEM. A file holding more live
 * ids than max_entries (after lowering the limit) still opens; new ids are
 * refused until enough expire.
 */
int agent_seen_open(const char *path, const struct agent_seen_config *cfg,
                    const struct agent_io *io, const struct aegis_mem *mem, aegis_tstamp now,
                    char *errmsg, size_t errlen, struct agent_seen **pseen);

/* agent_seen_del closes the journal and frees s. NULL is fine. */
void agent_seen_del(struct agent_seen *s);

/* agent_seen_check looks id up; for FINISHED, *poutcome (may be NULL) gets
 * the outcome. Never fails (an over-long id is simply NEW: it could never
 * have been recorded). */
enum agent_seen_state agent_seen_check(const struct agent_seen *s, const char *id,
                                       uint32_t *poutcome);

/*
 * agent_seen_mark_started durably records that id (expiring at `expiry`,
 * wall-clock ns) is about to run. Returns 0 only once the record is on disk.
 * Errors: -EINVAL (empty or longer than AGENT_SEEN_ID_MAX), AEGIS_ERR_EXISTS
 * (already started or finished), AEGIS_ERR_EXPIRED (expiry + margin <= now:
 * it would be forgotten at once), AEGIS_ERR_LIMIT (table or journal full
 * even after expiring and compacting), -ENOMEM, journal errors.
 */
int agent_seen_mark_started(struct agent_seen *s, const char *id, aegis_tstamp expiry,
                            aegis_tstamp now);

/*
 * agent_seen_mark_finished durably records id's outcome (an opaque code,
 * e.g. the CommandState acked). Errors: -EINVAL, AEGIS_ERR_NOT_FOUND (never
 * started), AEGIS_ERR_STATE (already finished), AEGIS_ERR_EXPIRED (the id
 * was forgotten while making room: it had expired), AEGIS_ERR_LIMIT,
 * journal errors.
 */
int agent_seen_mark_finished(struct agent_seen *s, const char *id, uint32_t outcome,
                             aegis_tstamp now);

/*
 * agent_seen_expire forgets ids whose expiry + margin is before now and
 * compacts the journal if enough of it is garbage. Returns the number of
 * ids dropped (>= 0) or a journal error from compaction (the in-memory drop
 * still happened; it is redone at next open).
 */
int agent_seen_expire(struct agent_seen *s, aegis_tstamp now);

/* agent_seen_compact rewrites the journal with only live ids. Journal errors. */
int agent_seen_compact(struct agent_seen *s);

/* Called for each id in the STARTED state; id is borrowed for the call. A
 * non-zero return stops the walk and is returned. */
typedef int (*agent_seen_started_fn)(const char *id, aegis_tstamp expiry, void *user_data);

/*
 * agent_seen_foreach_started walks the ids a previous run started but never
 * finished, so that after a restart the agent can ack them
 * FAILED("interrupted") without waiting for the server to redeliver them.
 * fn must not call any agent_seen function that modifies s; collect the ids
 * and mark them finished afterwards. Errors: -EINVAL, or fn's return value.
 */
int agent_seen_foreach_started(const struct agent_seen *s, agent_seen_started_fn fn,
                               void *user_data);

/* agent_seen_count is the number of ids held. */
size_t agent_seen_count(const struct agent_seen *s);

/* agent_seen_skipped is the number of well-checksummed but unparseable
 * records skipped at open (a newer format, or a bug: worth a warning). */
uint64_t agent_seen_skipped(const struct agent_seen *s);

/* agent_seen_recovery is what the journal found at open (borrowed). */
const struct agent_journal_recovery *agent_seen_recovery(const struct agent_seen *s);

/* agent_seen_journal_size is the journal file's size in bytes. */
uint64_t agent_seen_journal_size(const struct agent_seen *s);

#endif
