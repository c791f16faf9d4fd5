/*
 * ctl_batch: many small requests of one kind run as ONE statement (DESIGN §6, §8).
 *
 * At fleet scale the same short statement arrives thousands of times a second (an Ack per
 * agent, an Authenticate lookup per agent, a Subscribe query per agent woken by a fan-out).
 * One round trip each saturates a small pool long before PostgreSQL itself is busy. A batch
 * collects the items submitted during one loop turn and runs them as one statement whose
 * parameters are arrays, one element per item:
 *
 *     SELECT s.i, ... FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS s(a, q, i) ...
 *
 * The statement's rows say which item they belong to: the first result column is the item's
 * 1-based ordinal in the arrays (bigint; 8 bytes big-endian when binary_result is set), and
 * rows must come ORDER BY that column. Each item's callback then sees only its own rows.
 *
 * Flow and limits
 *  - Items added in one loop turn go out together on the next turn (a zero timer), so a
 *    burst becomes one statement without any added wait. A statement holds at most
 *    max_items; while max_in_flight statements are running, new items keep collecting (a
 *    busy database gets bigger, fewer statements), up to queue_max items waiting in all.
 *    Beyond that ctl_batch_add fails with AEGIS_ERR_LIMIT: the caller sheds with a retry-after
 *    hint (DESIGN §5).
 *  - A statement that fails calls every item's callback with the same error (and the result,
 *    for AEGIS_ERR_DATABASE): nothing is dropped silently. A deadlock or serialization failure
 *    (SQLSTATE 40P01, 40001: concurrent batches touching the same rows) is retried up to
 *    CTL_BATCH_RETRIES times first, since the statement rolled back as a whole.
 *  - Callbacks run on the loop, never from inside ctl_batch_add. They may add new items.
 */
#ifndef CTL_BATCH_H
#define CTL_BATCH_H

#include "ctl_db.h"
#include "ctl_loop.h"

#include <aegis/mem.h>

#include <stddef.h>
#include <stdint.h>

struct ctl_batch;

/* Array parameters of one statement (each one is an array with an element per item). */
#define CTL_BATCH_MAX_COLS 16
/* A thousand items make a statement of a few hundred kilobytes at most and take PostgreSQL a
 * few milliseconds: large enough to amortize a round trip, small enough that a waiting reply
 * is never stuck behind a huge statement. */
#define CTL_BATCH_DEFAULT_MAX_ITEMS 1000u
/* Items waiting across all statements not yet sent: a whole 10,000-agent fan-out's worth of
 * acks twice over; beyond it the caller sheds. */
#define CTL_BATCH_DEFAULT_QUEUE_MAX 20000u
/* Re-runs of a statement that lost a deadlock or serialization race. */
#define CTL_BATCH_RETRIES 3
/* One value (before quoting); a longer one is refused with -E2BIG. The largest item of ours
 * is an Ack's 1 MiB result, hex-encoded. */
#define CTL_BATCH_MAX_VALUE (4u * 1024u * 1024u)
/* A statement is closed once its arrays reach this size, whatever its item count. */
#define CTL_BATCH_STMT_BYTES (8u * 1024u * 1024u)
/* Bytes of array text waiting in all (memory bound beside queue_max). */
#define CTL_BATCH_DEFAULT_BYTES_MAX (64u * 1024u * 1024u)

struct ctl_batch_config {
    const char *name;       /* short, for logs ("ack", "auth_load") */
    const char *sql;        /* copied; $1..$ncols are the arrays */
    int ncols;              /* 1..CTL_BATCH_MAX_COLS */
    int binary_result;      /* rows in binary format (bytea without hex) */
    size_t max_items;       /* 0 = CTL_BATCH_DEFAULT_MAX_ITEMS */
    size_t queue_max;       /* 0 = CTL_BATCH_DEFAULT_QUEUE_MAX */
    size_t bytes_max;       /* 0 = CTL_BATCH_DEFAULT_BYTES_MAX */
    unsigned max_in_flight; /* 0 = 1 */
};

struct ctl_batch_stats {
    uint64_t items;      /* added */
    uint64_t statements; /* statements that completed (any outcome) */
    uint64_t failed;     /* items whose statement failed */
    uint64_t rejected;   /* ctl_batch_add refusals */
    uint64_t retries;    /* statements re-run after a deadlock/serialization failure */
    size_t waiting;      /* items not yet sent */
    size_t in_flight;    /* statements running */
};

/*
 * The item's callback: rv 0 and its rows [row, row + nrows) of res (nrows may be 0), or
 * rv < 0 (the statement failed: AEGIS_ERR_DATABASE with res carrying the SQLSTATE,
 * AEGIS_ERR_LIMIT / AEGIS_ERR_UNAVAILABLE when the pool refused it, AEGIS_ERR_CLOSED when the
 * connection died with it in flight (it may have committed), -ECANCELED at ctl_batch_del).
 * res is valid only inside the callback.
 */
typedef void (*ctl_batch_cb)(int rv, const struct ctl_db_result *res, int row, int nrows,
                             void *user_data);

/* ctl_batch_new makes a batch on db's loop. Errors: -EINVAL (bad config), -ENOMEM. */
int ctl_batch_new(struct ctl_db *db, struct ctl_loop *loop, const struct ctl_batch_config *cfg,
                  const struct aegis_mem *mem, struct ctl_batch **pb);

/* ctl_batch_del fails every waiting item with -ECANCELED (callbacks run now) and frees the
 * batch; statements in flight are completed with -ECANCELED by ctl_db_del later, which must
 * come AFTER this. Accepts NULL. Not from a batch callback. */
void ctl_batch_del(struct ctl_batch *b);

/*
 * ctl_batch_add queues one item: values[0..ncols-1] (text; NULL = SQL NULL) are copied into
 * the arrays. cb may be NULL (fire and forget: failures are counted, not reported).
 * Errors: AEGIS_ERR_LIMIT (queue_max items or bytes_max bytes waiting), -E2BIG (a value
 * over CTL_BATCH_MAX_VALUE), -ENOMEM. On error cb is never called. A database that is down
 * is reported through the callback (AEGIS_ERR_UNAVAILABLE) on the next loop turn.
 */
int ctl_batch_add(struct ctl_batch *b, const char *const *values, ctl_batch_cb cb, void *user_data);

/* ctl_batch_ordinal reads the first column of a row (the item ordinal), or -1. */
int64_t ctl_batch_ordinal(const struct ctl_batch *b, const struct ctl_db_result *res, int row);

/* ctl_batch_i64 reads an int8 column of a row in the batch's result format. */
int64_t ctl_batch_i64(const struct ctl_batch *b, const struct ctl_db_result *res, int row, int col);

void ctl_batch_stats(const struct ctl_batch *b, struct ctl_batch_stats *st);

#endif
