/*
 * agent_spool: the bounded on-disk telemetry spool (DESIGN §5, §8).
 *
 * Each batch is one file `<dir>/<id as 16 hex digits>.batch`:
 *
 *   header (32 bytes) "AEGSPL01", u64 id, u64 created, u32 len, u32 CRC32C
 *   payload (len bytes)
 *
 * written with tmp + fdatasync + rename + directory fsync, so a batch is
 * either complete or absent. Batch ids increase forever (they are the
 * TelemetryBatch.batch_id the server deduplicates on): the highest id ever
 * handed out is kept, reserved in blocks, in `<dir>/spool.state` together
 * with the drop and corruption counters.
 *
 * When a new batch would take the spool over its byte or count cap, the
 * oldest batches are deleted first and counted (batches and bytes) in the
 * persistent drop counters. A batch leaves the spool otherwise only through
 * agent_spool_commit (the server's summary listed it as committed). A batch
 * file that fails its checks is deleted and counted as corrupt; it never
 * stops the spool.
 *
 * Single-threaded; no clock reads (creation time is passed in).
 */
#ifndef AGENT_SPOOL_H
#define AGENT_SPOOL_H

#include "agent_io.h"

#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

/* DESIGN §8: 256 MiB of telemetry on disk, oldest dropped first. */
#define AGENT_SPOOL_DEFAULT_MAX_BYTES (256u << 20)
/* One batch: the RPC message limit (DESIGN §8), since a batch is sent as one
 * message. */
#define AGENT_SPOOL_DEFAULT_MAX_BATCH (4u << 20)
/* Batch files: 65536 batches of >= 4 KiB fill 256 MiB; more files than that
 * only cost directory scans at start-up. */
#define AGENT_SPOOL_DEFAULT_MAX_BATCHES 65536u
#define AGENT_SPOOL_HEADER_SIZE 32u

struct agent_spool_config {
    uint64_t max_bytes;   /* total of batch files (headers included); 0 = default */
    uint32_t max_batch;   /* one payload; 0 = default */
    uint32_t max_batches; /* 0 = default */
};

struct agent_spool_batch {
    uint64_t id;
    aegis_tstamp created;
    uint32_t len; /* payload bytes */
};

struct agent_spool_stats {
    uint64_t batches;         /* batches in the spool */
    uint64_t bytes;           /* their on-disk size */
    uint64_t dropped_batches; /* dropped for space, ever (persistent) */
    uint64_t dropped_bytes;
    uint64_t corrupt_batches; /* found damaged and deleted, ever (persistent) */
    uint64_t corrupt_bytes;
    int state_reset; /* spool.state was damaged at open; counters restarted */
};

struct agent_spool;

/*
 * agent_spool_open opens the spool directory dir (created 0700 if missing;
 * refused if others can write to it), loads the state file, indexes the
 * batch files (checking each header and size; damaged files are deleted and
 * counted) and removes leftover temporary files. If the spool is over the
 * caps (they were lowered), the oldest batches are dropped. dir/cfg are
 * copied; io and mem (NULL = defaults) are borrowed. errmsg (may be NULL)
 * gets a sentence on failure.
 *
 * Errors: -EINVAL, -ENOMEM, AEGIS_ERR_PERMISSION (see
 * agent_state_dir_ensure), -errno from the filesystem.
 */
int agent_spool_open(const char *dir, const struct agent_spool_config *cfg,
                     const struct agent_io *io, const struct aegis_mem *mem, char *errmsg,
                     size_t errlen, struct agent_spool **pspool);

/* agent_spool_del frees the spool (everything is already on disk). NULL ok. */
void agent_spool_del(struct agent_spool *sp);

/*
 * agent_spool_append stores a batch durably (data is copied to disk, not
 * kept) and returns its id in *pid. Older batches are dropped first if
 * needed. Errors: -EINVAL, AEGIS_ERR_TOO_LARGE (len over max_batch, or a
 * single batch larger than max_bytes), -ENOMEM, -errno (nothing was stored;
 * batches dropped to make room stay dropped and counted).
 */
int agent_spool_append(struct agent_spool *sp, const void *data, size_t len, aegis_tstamp created,
                       uint64_t *pid);

/*
 * agent_spool_next finds the oldest batch with an id greater than after (0
 * for the first) and describes it in *pbatch. Errors: AEGIS_ERR_NOT_FOUND
 * when there is none.
 */
int agent_spool_next(const struct agent_spool *sp, uint64_t after,
                     struct agent_spool_batch *pbatch);

/*
 * agent_spool_read copies batch id's payload into buf (capacity cap) and
 * sets *plen. A batch that fails its checks is deleted, counted as corrupt
 * and reported as AEGIS_ERR_MALFORMED: skip it and go on. Errors: -EINVAL,
 * AEGIS_ERR_NOT_FOUND, AEGIS_ERR_TOO_LARGE (cap too small; nothing
 * changed), AEGIS_ERR_MALFORMED, -errno.
 */
int agent_spool_read(struct agent_spool *sp, uint64_t id, void *buf, size_t cap, size_t *plen);

/*
 * agent_spool_commit deletes batch id (the server committed it). Errors:
 * AEGIS_ERR_NOT_FOUND (not in the spool: a duplicate summary), -errno.
 */
int agent_spool_commit(struct agent_spool *sp, uint64_t id);

/* agent_spool_stats fills *pstats. */
void agent_spool_stats(const struct agent_spool *sp, struct agent_spool_stats *pstats);

#endif
