#include "agent_spool.h"
#include "agent_test_util.h"

#include <aegis/err.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define BATCH 100u
#define FILE_SIZE (AGENT_SPOOL_HEADER_SIZE + BATCH)

struct fixture {
    char dir[512];
    char spool[600];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    agent_test_mkdtemp(f->dir, sizeof(f->dir));
    snprintf(f->spool, sizeof(f->spool), "%s/spool", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(agent_test_rmtree(f->dir), 0);
    free(f);
    return 0;
}

static struct agent_spool *open_ok(const char *dir, const struct agent_spool_config *cfg,
                                   const struct agent_io *io)
{
    struct agent_spool *sp = NULL;
    char err[256] = "";
    int rv = agent_spool_open(dir, cfg, io, NULL, err, sizeof(err), &sp);
    if (rv != 0)
        fail_msg("open %s: %s (%s)", dir, aegis_strerror(rv), err);
    return sp;
}

static void fill(uint8_t *b, size_t len, unsigned tag)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(tag * 13 + i);
}

static uint64_t append(struct agent_spool *sp, unsigned tag)
{
    uint8_t b[BATCH];
    fill(b, sizeof(b), tag);
    uint64_t id = 0;
    assert_int_equal(agent_spool_append(sp, b, sizeof(b), 1000 + tag, &id), 0);
    return id;
}

static void check_batch(struct agent_spool *sp, uint64_t id, unsigned tag)
{
    uint8_t b[BATCH], want[BATCH];
    size_t len = 0;
    assert_int_equal(agent_spool_read(sp, id, b, sizeof(b), &len), 0);
    assert_int_equal(len, BATCH);
    fill(want, sizeof(want), tag);
    assert_memory_equal(b, want, BATCH);
}

static void batch_file(const struct fixture *f, uint64_t id, char *out, size_t len)
{
    snprintf(out, len, "%s/%016" PRIx64 ".batch", f->spool, id);
}

static void append_iterate_commit_reopen(void **state)
{
    struct fixture *f = *state;
    struct agent_spool *sp = open_ok(f->spool, NULL, NULL);
    struct stat st;
    assert_int_equal(stat(f->spool, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    uint64_t ids[5];
    for (unsigned i = 0; i < 5; i++)
        ids[i] = append(sp, i);
    for (unsigned i = 1; i < 5; i++)
        assert_true(ids[i] > ids[i - 1]);
    /* Commit exactly the middle one. */
    assert_int_equal(agent_spool_commit(sp, ids[2]), 0);
    assert_int_equal(agent_spool_commit(sp, ids[2]), AEGIS_ERR_NOT_FOUND);
    agent_spool_del(sp);

    sp = open_ok(f->spool, NULL, NULL);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 4);
    assert_int_equal(stats.bytes, 4 * FILE_SIZE);
    /* Iteration in order, skipping the committed batch. */
    unsigned want[] = {0, 1, 3, 4};
    uint64_t after = 0;
    for (unsigned k = 0; k < 4; k++) {
        struct agent_spool_batch b;
        assert_int_equal(agent_spool_next(sp, after, &b), 0);
        assert_int_equal(b.id, ids[want[k]]);
        assert_int_equal(b.len, BATCH);
        assert_int_equal(b.created, 1000 + want[k]);
        check_batch(sp, b.id, want[k]);
        after = b.id;
    }
    struct agent_spool_batch b;
    assert_int_equal(agent_spool_next(sp, after, &b), AEGIS_ERR_NOT_FOUND);
    /* A too-small buffer changes nothing. */
    uint8_t small[10];
    size_t len;
    assert_int_equal(agent_spool_read(sp, ids[0], small, sizeof(small), &len), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(agent_spool_read(sp, ids[2], small, sizeof(small), &len), AEGIS_ERR_NOT_FOUND);

    /* Ids never repeat, even once everything was committed. */
    for (unsigned k = 0; k < 4; k++)
        assert_int_equal(agent_spool_commit(sp, ids[want[k]]), 0);
    agent_spool_del(sp);
    sp = open_ok(f->spool, NULL, NULL);
    assert_true(append(sp, 9) > ids[4]);
    agent_spool_del(sp);
}

static void overflow_drops_oldest(void **state)
{
    struct fixture *f = *state;
    struct agent_spool_config cfg = {.max_bytes = 10 * FILE_SIZE};
    struct agent_spool *sp = open_ok(f->spool, &cfg, NULL);
    uint64_t ids[15];
    for (unsigned i = 0; i < 15; i++)
        ids[i] = append(sp, i);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 10);
    assert_int_equal(stats.bytes, 10 * FILE_SIZE);
    assert_int_equal(stats.dropped_batches, 5);
    assert_int_equal(stats.dropped_bytes, 5 * FILE_SIZE);
    struct agent_spool_batch b;
    assert_int_equal(agent_spool_next(sp, 0, &b), 0);
    assert_int_equal(b.id, ids[5]); /* the five oldest went */
    char path[700];
    batch_file(f, ids[4], path, sizeof(path));
    assert_int_equal(access(path, F_OK), -1);
    agent_spool_del(sp);

    /* Counters survive a restart and keep counting. */
    sp = open_ok(f->spool, &cfg, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 10);
    assert_int_equal(stats.dropped_batches, 5);
    assert_int_equal(stats.dropped_bytes, 5 * FILE_SIZE);
    append(sp, 20);
    agent_spool_del(sp);

    /* A lower cap at open drops the oldest right away. */
    struct agent_spool_config lower = {.max_bytes = 4 * FILE_SIZE};
    sp = open_ok(f->spool, &lower, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 4);
    assert_int_equal(stats.dropped_batches, 12);
    assert_int_equal(stats.dropped_bytes, 12 * FILE_SIZE);
    agent_spool_del(sp);
    sp = open_ok(f->spool, &lower, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.dropped_batches, 12);
    agent_spool_del(sp);
}

static void count_cap_and_size_limits(void **state)
{
    struct fixture *f = *state;
    struct agent_spool_config cfg = {
        .max_batches = 3, .max_batch = BATCH, .max_bytes = 100 * FILE_SIZE};
    struct agent_spool *sp = open_ok(f->spool, &cfg, NULL);
    for (unsigned i = 0; i < 5; i++)
        append(sp, i);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 3);
    assert_int_equal(stats.dropped_batches, 2);
    uint8_t big[BATCH + 1] = {0};
    uint64_t id;
    assert_int_equal(agent_spool_append(sp, big, sizeof(big), 0, &id), AEGIS_ERR_TOO_LARGE);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 3); /* nothing dropped for a batch that can't fit */
    agent_spool_del(sp);
}

static void corrupt_batches_are_skipped_and_counted(void **state)
{
    struct fixture *f = *state;
    struct agent_spool *sp = open_ok(f->spool, NULL, NULL);
    uint64_t ids[4];
    for (unsigned i = 0; i < 4; i++)
        ids[i] = append(sp, i);

    /* A flipped payload bit is found when the batch is read. */
    char path[700];
    batch_file(f, ids[1], path, sizeof(path));
    uint8_t *data;
    size_t size;
    assert_int_equal(agent_test_read(path, &data, &size), 0);
    data[AGENT_SPOOL_HEADER_SIZE + 5] ^= 0x10;
    assert_int_equal(agent_test_write(path, data, size), 0);
    free(data);
    uint8_t b[BATCH];
    size_t len;
    assert_int_equal(agent_spool_read(sp, ids[1], b, sizeof(b), &len), AEGIS_ERR_MALFORMED);
    assert_int_equal(access(path, F_OK), -1);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.corrupt_batches, 1);
    assert_int_equal(stats.corrupt_bytes, FILE_SIZE);
    assert_int_equal(stats.batches, 3);
    /* Iteration goes on past it. */
    struct agent_spool_batch nb;
    assert_int_equal(agent_spool_next(sp, ids[0], &nb), 0);
    assert_int_equal(nb.id, ids[2]);
    check_batch(sp, ids[2], 2);
    agent_spool_del(sp);

    /* A truncated batch and garbage under a batch name are found at open;
     * a leftover temporary file is removed. */
    batch_file(f, ids[3], path, sizeof(path));
    assert_int_equal(truncate(path, 20), 0);
    char junk[700], tmp[700];
    snprintf(junk, sizeof(junk), "%s/%016x.batch", f->spool, 0xabcdefu);
    assert_int_equal(
        agent_test_write(junk, "not a batch at all, but long enough to have a header", 52), 0);
    snprintf(tmp, sizeof(tmp), "%s/%016x.batch.tmp", f->spool, 0x99u);
    assert_int_equal(agent_test_write(tmp, "half", 4), 0);
    sp = open_ok(f->spool, NULL, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 2);
    assert_int_equal(stats.corrupt_batches, 3);
    assert_int_equal(stats.corrupt_bytes, FILE_SIZE + 20 + 52);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(junk, F_OK), -1);
    check_batch(sp, ids[0], 0);
    check_batch(sp, ids[2], 2);
    agent_spool_del(sp);
    sp = open_ok(f->spool, NULL, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.corrupt_batches, 3);
    /* Ids of deleted corrupt batches are not handed out again. */
    assert_true(append(sp, 7) > ids[3]);
    agent_spool_del(sp);
}

static void damaged_state_file_resets_counters(void **state)
{
    struct fixture *f = *state;
    struct agent_spool_config cfg = {.max_bytes = 2 * FILE_SIZE};
    struct agent_spool *sp = open_ok(f->spool, &cfg, NULL);
    uint64_t last = 0;
    for (unsigned i = 0; i < 4; i++)
        last = append(sp, i);
    agent_spool_del(sp);
    char path[700];
    snprintf(path, sizeof(path), "%s/spool.state", f->spool);
    assert_int_equal(agent_test_write(path, "garbage", 7), 0);
    sp = open_ok(f->spool, &cfg, NULL);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.state_reset, 1);
    assert_int_equal(stats.dropped_batches, 0);
    assert_int_equal(stats.batches, 2);
    assert_true(append(sp, 9) > last);
    agent_spool_del(sp);
}

static void failed_append_stores_nothing(void **state)
{
    struct fixture *f = *state;
    struct faultio fio;
    faultio_init(&fio);
    struct agent_spool *sp = open_ok(f->spool, NULL, &fio.io);
    uint64_t first = append(sp, 1);
    fio.fail_op = FIO_FDATASYNC;
    fio.fail_at = fio.count[FIO_FDATASYNC] + 1;
    fio.fail_errno = EIO;
    uint8_t b[BATCH] = {0};
    uint64_t id = 0;
    assert_int_equal(agent_spool_append(sp, b, sizeof(b), 0, &id), -EIO);
    assert_int_equal(id, 0);
    struct agent_spool_stats stats;
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 1);
    /* The failed id is never reused. */
    uint64_t next = append(sp, 2);
    assert_true(next > first + 1);
    agent_spool_del(sp);
    sp = open_ok(f->spool, NULL, NULL);
    agent_spool_stats(sp, &stats);
    assert_int_equal(stats.batches, 2);
    assert_int_equal(stats.corrupt_batches, 0);
    agent_spool_del(sp);
}

/* Kill the process at every I/O call of an append: after a restart the
 * batch is either absent or complete, never a corrupt half. */
static void crash_at_every_point(void **state)
{
    struct fixture *f = *state;
    int present = 0, absent = 0;
    for (unsigned long k = 1; k < 60; k++) {
        agent_test_rmtree(f->spool);
        struct agent_spool *sp = open_ok(f->spool, NULL, NULL);
        uint64_t first = append(sp, 1);
        agent_spool_del(sp);
        struct faultio fio;
        faultio_init(&fio);
        sp = open_ok(f->spool, NULL, &fio.io);
        fio.crash_at = fio.total + k;
        uint8_t b[BATCH];
        fill(b, sizeof(b), 2);
        uint64_t id = 0;
        int rv = agent_spool_append(sp, b, sizeof(b), 0, &id);
        int crashed = fio.crashed;
        agent_spool_del(sp);

        sp = open_ok(f->spool, NULL, NULL);
        struct agent_spool_stats stats;
        agent_spool_stats(sp, &stats);
        assert_int_equal(stats.corrupt_batches, 0);
        check_batch(sp, first, 1);
        struct agent_spool_batch nb;
        if (agent_spool_next(sp, first, &nb) == 0) {
            check_batch(sp, nb.id, 2);
            present++;
        } else {
            assert_int_not_equal(rv, 0); /* reported stored, but lost */
            absent++;
        }
        /* Whatever happened, the next id is new. */
        assert_true(append(sp, 3) > (id ? id : first));
        agent_spool_del(sp);
        if (!crashed)
            break;
    }
    assert_true(present > 0);
    assert_true(absent > 0);
}

static void unsafe_directory_is_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(mkdir(f->spool, 0777), 0);
    assert_int_equal(chmod(f->spool, 0777), 0);
    struct agent_spool *sp = NULL;
    char err[256] = "";
    assert_int_equal(agent_spool_open(f->spool, NULL, NULL, NULL, err, sizeof(err), &sp),
                     AEGIS_ERR_PERMISSION);
    assert_null(sp);
    assert_non_null(strstr(err, f->spool));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(append_iterate_commit_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(overflow_drops_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(count_cap_and_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_batches_are_skipped_and_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_state_file_resets_counters, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_append_stores_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_at_every_point, setup, teardown),
        cmocka_unit_test_setup_teardown(unsafe_directory_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
