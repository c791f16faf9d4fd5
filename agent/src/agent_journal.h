/*
 * agent_journal: an append-only, checksummed record log on disk.
 *
 * The agent's replay protection (seen command ids) and its pending acks live
 * in journals. A journal is one file:
 *
 *   header  (32 bytes) "AEGISJNL", version, kind tag, base sequence, CRC32C
 *   record* (16 bytes + payload) length, CRC32C, sequence, payload
 *
 * All integers little-endian. A record's CRC covers its length, sequence and
 * payload; sequences are consecutive from the header's base sequence, so a
 * stale or misplaced record is caught even when its own CRC is fine.
 *
 * Durability contract: agent_journal_append returns 0 only after the record
 * has been written and fdatasync'd. On open, the file is scanned; the first
 * record that is incomplete (a torn write), fails its CRC or breaks the
 * sequence ends the journal, and the file is truncated there. Every record
 * whose append returned 0 lies before that point unless the disk itself
 * corrupted it. Compaction writes the live records (chosen by the owner) to
 * `<path>.compact`, fdatasyncs it, renames it over `<path>` and fsyncs the
 * directory, so a crash at any step leaves either the old or the new file.
 *
 * A journal is single-threaded and owned by one module; it does no clock
 * reads and no logging. All I/O goes through the agent_io table. No journal
 * function may be called from inside on_record or emit, except
 * agent_journal_compactor_add from emit.
 */
#ifndef AGENT_JOURNAL_H
#define AGENT_JOURNAL_H

#include "agent_io.h"

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

/* Fixed on-disk sizes (format version 1). */
#define AGENT_JOURNAL_HEADER_SIZE 32u
#define AGENT_JOURNAL_RECORD_OVERHEAD 16u

/* Hard cap on one journal file: the seen-id and ack journals hold small
 * records (< 2 KiB); 4 MiB is thousands of them, read in well under a
 * second at start-up. */
#define AGENT_JOURNAL_DEFAULT_MAX_BYTES (4u << 20)
/* One record's payload; the largest user (an ack with its detail) is < 2 KiB. */
#define AGENT_JOURNAL_DEFAULT_MAX_RECORD (64u << 10)
/* Don't bother compacting below this size: rewriting is pure cost there. */
#define AGENT_JOURNAL_DEFAULT_COMPACT_MIN (64u << 10)
/* Compact when at least this percentage of the file is garbage, so the
 * rewrite cost is amortised over as many appends as it reclaims. */
#define AGENT_JOURNAL_DEFAULT_GARBAGE_PCT 50u
/* The largest max_record a caller may configure. */
#define AGENT_JOURNAL_MAX_RECORD_LIMIT (16u << 20)

struct agent_journal_config {
    /* Tag written in the header so one journal cannot be opened as another
     * (e.g. the ack journal as the seen-id journal). */
    uint32_t kind;
    /* 0 selects the default for each field below. */
    uint64_t max_bytes;
    uint32_t max_record;
    uint64_t compact_min_bytes;
    uint32_t compact_garbage_pct;
};

enum agent_journal_tail {
    AGENT_JOURNAL_TAIL_CLEAN = 0,   /* the file ended on a record boundary */
    AGENT_JOURNAL_TAIL_TORN = 1,    /* the file ended inside a record (interrupted write) */
    AGENT_JOURNAL_TAIL_CORRUPT = 2, /* a complete record failed its CRC, length or sequence */
};

/* What open found; the caller logs it once (a corrupt tail is worth a warning). */
struct agent_journal_recovery {
    uint64_t records;         /* valid records handed to the callback */
    uint64_t truncated_bytes; /* bytes cut off the end */
    enum agent_journal_tail tail;
    int created;      /* the file did not exist and was created */
    int header_reset; /* the file was shorter than a header and was re-initialised */
};

struct agent_journal;
struct agent_journal_compactor;

/* Called once per valid record during open, in order. payload is borrowed
 * for the duration of the call. A non-zero return aborts the open with that
 * value. */
typedef int (*agent_journal_record_fn)(uint64_t seq, const uint8_t *payload, size_t len,
                                       void *user_data);

/* Called by agent_journal_compact; adds every live record with
 * agent_journal_compactor_add. A non-zero return aborts the compaction (the
 * old file stays in place) and is returned. */
typedef int (*agent_journal_emit_fn)(struct agent_journal_compactor *c, void *user_data);

/*
 * agent_journal_open opens (or creates, mode 0600) the journal at path,
 * recovers it as described above and calls on_record for each surviving
 * record. path and cfg are copied; io (NULL = default) and mem (NULL =
 * default) are borrowed and must outlive the journal. A stale
 * `<path>.compact` from an interrupted compaction is removed. *precovery
 * (may be NULL) reports what was found. On failure, errmsg (may be NULL)
 * receives a sentence naming the file and what to do.
 *
 * Errors: -EINVAL (bad arguments or config), -ENOMEM, -errno from the
 * filesystem, AEGIS_ERR_MALFORMED (not a journal, wrong kind or damaged
 * header: the file is left untouched), AEGIS_ERR_UNSUPPORTED (newer format
 * version), or whatever on_record returned.
 */
int agent_journal_open(const char *path, const struct agent_journal_config *cfg,
                       const struct agent_io *io, const struct aegis_mem *mem,
                       agent_journal_record_fn on_record, void *user_data,
                       struct agent_journal_recovery *precovery, char *errmsg, size_t errlen,
                       struct agent_journal **pjournal);

/* agent_journal_del closes the journal (nothing is written). NULL is fine. */
void agent_journal_del(struct agent_journal *j);

/*
 * agent_journal_append writes one record and fdatasyncs it. Returns 0 only
 * when the record is durable; *pseq (may be NULL) gets its sequence.
 *
 * Errors: -EINVAL, AEGIS_ERR_TOO_LARGE (payload over max_record),
 * AEGIS_ERR_LIMIT (the file would exceed max_bytes: compact first),
 * -ENOMEM, -errno from write (the partial record is truncated away and the journal
 * stays usable), or -errno from fdatasync. After a failed fdatasync, or any
 * failure that leaves the file in an unknown state, the journal is poisoned:
 * every later append and compaction returns the same error until it is
 * reopened, because the kernel may have dropped the dirty pages and a retry
 * could report durable data that is not (the "fsyncgate" lesson).
 */
int agent_journal_append(struct agent_journal *j, const void *payload, size_t len, uint64_t *pseq);

/*
 * agent_journal_compact replaces the file with the records emit adds. The
 * new file gets fresh, consecutive sequences continuing after the last one
 * used. Errors: -errno, -ENOMEM, AEGIS_ERR_LIMIT/TOO_LARGE from
 * agent_journal_compactor_add, or emit's return value; before the rename the
 * old file and the journal are intact. If the directory fsync after the
 * rename fails, the journal switches to the new file but is poisoned (the
 * rename might not survive a crash, so later appends could be lost).
 */
int agent_journal_compact(struct agent_journal *j, agent_journal_emit_fn emit, void *user_data);

/* agent_journal_compactor_add appends one live record to the file being
 * built. Errors: AEGIS_ERR_TOO_LARGE, AEGIS_ERR_LIMIT, -errno. */
int agent_journal_compactor_add(struct agent_journal_compactor *c, const void *payload, size_t len);

/* agent_journal_record_size is the on-disk size of a record with a payload
 * of len bytes; owners sum it over their live records. */
static inline uint64_t agent_journal_record_size(size_t len)
{
    return AGENT_JOURNAL_RECORD_OVERHEAD + (uint64_t)len;
}

/* agent_journal_fits says whether a payload of len bytes can be appended
 * without exceeding max_bytes. */
int agent_journal_fits(const struct agent_journal *j, size_t len);

/* agent_journal_needs_compaction says whether the file is large enough and
 * holds enough garbage (file size minus live_bytes) to be worth rewriting. */
int agent_journal_needs_compaction(const struct agent_journal *j, uint64_t live_bytes);

/* agent_journal_size is the current file size in bytes. */
uint64_t agent_journal_size(const struct agent_journal *j);

/* agent_journal_next_seq is the sequence the next append will get. */
uint64_t agent_journal_next_seq(const struct agent_journal *j);

/* agent_journal_poisoned returns 0 or the error that poisoned the journal. */
int agent_journal_poisoned(const struct agent_journal *j);

#endif
