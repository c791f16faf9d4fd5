#include "agent_acks.h"
#include "agent_test_util.h"

#include <aegis/err.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

enum { RECEIVED = 3, RUNNING = 4, SUCCEEDED = 5, FAILED = 6 };

struct fixture {
    char dir[512];
    char path[PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    agent_test_mkdtemp(f->dir, sizeof(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/acks.journal", f->dir);
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

static struct agent_acks *open_ok(const char *path, const struct agent_acks_config *cfg,
                                  const struct agent_io *io)
{
    struct agent_acks *a = NULL;
    char err[256] = "";
    int rv = agent_acks_open(path, cfg, io, NULL, err, sizeof(err), &a);
    if (rv != 0)
        fail_msg("open %s: %s (%s)", path, aegis_strerror(rv), err);
    return a;
}

static void check_ack(const struct agent_ack *k, const char *id, uint64_t seq, uint32_t state,
                      const char *detail)
{
    assert_non_null(k);
    assert_string_equal(k->id, id);
    assert_int_equal(k->seq, seq);
    assert_int_equal(k->state, state);
    assert_string_equal(k->detail, detail);
}

static void restart_preserves_pending(void **state)
{
    struct fixture *f = *state;
    struct agent_acks *a = open_ok(f->path, NULL, NULL);
    uint8_t result[3000];
    for (size_t i = 0; i < sizeof(result); i++)
        result[i] = (uint8_t)(i * 7);
    assert_int_equal(agent_acks_append(a, "c1", 1, RECEIVED, 0, NULL, NULL, 0), 0);
    assert_int_equal(agent_acks_append(a, "c1", 1, SUCCEEDED, 0, "done", result, sizeof(result)),
                     0);
    assert_int_equal(
        agent_acks_append(a, "c2", 2, FAILED, AGENT_ACK_DUPLICATE, "interrupted", NULL, 0), 0);
    /* Same (id, state) again: nothing new. */
    assert_int_equal(agent_acks_append(a, "c2", 2, FAILED, 0, "other", NULL, 0), 0);
    assert_int_equal(agent_acks_count(a), 3);
    agent_acks_del(a);

    a = open_ok(f->path, NULL, NULL);
    assert_int_equal(agent_acks_count(a), 3);
    check_ack(agent_acks_at(a, 0), "c1", 1, RECEIVED, "");
    check_ack(agent_acks_at(a, 1), "c1", 1, SUCCEEDED, "done");
    const struct agent_ack *k = agent_acks_at(a, 1);
    assert_int_equal(k->result_len, sizeof(result));
    assert_memory_equal(k->result, result, sizeof(result));
    check_ack(agent_acks_at(a, 2), "c2", 2, FAILED, "interrupted");
    assert_int_equal(agent_acks_at(a, 2)->flags, AGENT_ACK_DUPLICATE);
    assert_null(agent_acks_at(a, 3));
    assert_int_equal(agent_acks_skipped(a), 0);
    agent_acks_del(a);
}

static void confirmed_acks_disappear(void **state)
{
    struct fixture *f = *state;
    struct agent_acks *a = open_ok(f->path, NULL, NULL);
    char id[32];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "cmd-%d", i);
        assert_int_equal(agent_acks_append(a, id, (uint64_t)i, SUCCEEDED, 0, "ok", NULL, 0), 0);
    }
    assert_int_equal(agent_acks_confirm(a, "cmd-3", RUNNING), AEGIS_ERR_NOT_FOUND);
    for (int i = 0; i < 50; i++) {
        if (i == 10 || i == 20)
            continue;
        snprintf(id, sizeof(id), "cmd-%d", i);
        assert_int_equal(agent_acks_confirm(a, id, SUCCEEDED), 0);
    }
    assert_int_equal(agent_acks_confirm(a, "cmd-0", SUCCEEDED), AEGIS_ERR_NOT_FOUND);
    assert_int_equal(agent_acks_count(a), 2);
    agent_acks_del(a);

    /* Confirmed acks stay gone after a restart... */
    a = open_ok(f->path, NULL, NULL);
    assert_int_equal(agent_acks_count(a), 2);
    check_ack(agent_acks_at(a, 0), "cmd-10", 10, SUCCEEDED, "ok");
    check_ack(agent_acks_at(a, 1), "cmd-20", 20, SUCCEEDED, "ok");
    /* ...and compaction drops them from the file. */
    uint64_t before = agent_acks_journal_size(a);
    assert_int_equal(agent_acks_compact(a), 0);
    uint64_t after = agent_acks_journal_size(a);
    assert_true(after < before / 10);
    assert_int_equal((long)after, agent_test_file_size(f->path));
    agent_acks_del(a);
    a = open_ok(f->path, NULL, NULL);
    assert_int_equal(agent_acks_count(a), 2);
    check_ack(agent_acks_at(a, 1), "cmd-20", 20, SUCCEEDED, "ok");
    agent_acks_del(a);
}

static void automatic_compaction(void **state)
{
    struct fixture *f = *state;
    struct agent_acks_config cfg = {.compact_min_bytes = 2048};
    struct agent_acks *a = open_ok(f->path, &cfg, NULL);
    char id[40];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof(id), "cmd-%d", i);
        assert_int_equal(agent_acks_append(a, id, (uint64_t)i, SUCCEEDED, 0, "ok", NULL, 0), 0);
        assert_int_equal(agent_acks_confirm(a, id, SUCCEEDED), 0);
        /* Garbage never builds up much past the compaction threshold. */
        assert_true(agent_acks_journal_size(a) < 2 * 2048);
    }
    agent_acks_del(a);
}

static void limits(void **state)
{
    struct fixture *f = *state;
    struct agent_acks_config cfg = {.max_pending = 4};
    struct agent_acks *a = open_ok(f->path, &cfg, NULL);
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        assert_int_equal(agent_acks_append(a, id, 1, RECEIVED, 0, NULL, NULL, 0), 0);
    }
    assert_int_equal(agent_acks_append(a, "c9", 1, RECEIVED, 0, NULL, NULL, 0), AEGIS_ERR_LIMIT);
    assert_int_equal(agent_acks_confirm(a, "c0", RECEIVED), 0);
    assert_int_equal(agent_acks_append(a, "c9", 1, RECEIVED, 0, NULL, NULL, 0), 0);

    char big[AGENT_ACKS_DETAIL_MAX + 2];
    memset(big, 'd', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(agent_acks_append(a, "c1", 1, FAILED, 0, big, NULL, 0), -EINVAL);
    assert_int_equal(agent_acks_append(a, "", 1, FAILED, 0, NULL, NULL, 0), -EINVAL);
    assert_int_equal(agent_acks_append(a, "c1", 1, FAILED, 0, NULL, big, AGENT_ACKS_RESULT_MAX + 1),
                     -EINVAL);
    agent_acks_del(a);
}

static void full_journal_still_confirms(void **state)
{
    struct fixture *f = *state;
    struct agent_acks_config cfg = {.max_bytes = 2048};
    struct agent_acks *a = open_ok(f->path, &cfg, NULL);
    int rv = 0, n = 0;
    char id[32];
    while (rv == 0 && n < 1000) {
        snprintf(id, sizeof(id), "pending-%d", n);
        rv = agent_acks_append(a, id, (uint64_t)n, RUNNING, 0, "working on it", NULL, 0);
        if (rv == 0)
            n++;
    }
    /* Full of unconfirmed acks: refused, none dropped. */
    assert_int_equal(rv, AEGIS_ERR_LIMIT);
    assert_int_equal(agent_acks_count(a), (size_t)n);
    /* Not even a confirmation record fits, yet confirming works (by
     * compacting the ack away). */
    assert_int_equal(agent_acks_confirm(a, "pending-0", RUNNING), 0);
    assert_int_equal(agent_acks_count(a), (size_t)n - 1);
    agent_acks_del(a);
    a = open_ok(f->path, &cfg, NULL);
    assert_int_equal(agent_acks_count(a), (size_t)n - 1);
    check_ack(agent_acks_at(a, 0), "pending-1", 1, RUNNING, "working on it");
    agent_acks_del(a);
}

static void failed_append_is_not_pending(void **state)
{
    struct fixture *f = *state;
    struct faultio fio;
    faultio_init(&fio);
    struct agent_acks *a = open_ok(f->path, NULL, &fio.io);
    fio.fail_op = FIO_PWRITE;
    fio.fail_at = fio.count[FIO_PWRITE] + 1;
    fio.fail_errno = ENOSPC;
    fio.torn = 1;
    assert_int_equal(agent_acks_append(a, "c1", 1, SUCCEEDED, 0, "ok", NULL, 0), -ENOSPC);
    assert_int_equal(agent_acks_count(a), 0);
    assert_int_equal(agent_acks_append(a, "c2", 2, SUCCEEDED, 0, "ok", NULL, 0), 0);
    agent_acks_del(a);
    a = open_ok(f->path, NULL, NULL);
    assert_int_equal(agent_acks_count(a), 1);
    check_ack(agent_acks_at(a, 0), "c2", 2, SUCCEEDED, "ok");
    agent_acks_del(a);
}

/* Kill the process at every I/O call of an append, then of a confirm. An
 * ack whose append returned 0 is pending after a restart; once confirm
 * returned 0 it never comes back. (A confirm that failed may still have
 * taken effect: harmless, the server had already committed the ack.) */
static void crash_at_every_point(void **state)
{
    struct fixture *f = *state;
    for (int phase = 0; phase < 2; phase++) {
        int pending = 0, gone = 0;
        for (unsigned long k = 1; k < 40; k++) {
            unlink(f->path);
            struct faultio fio;
            faultio_init(&fio);
            struct agent_acks *a = open_ok(f->path, NULL, &fio.io);
            int rv;
            if (phase == 0) {
                fio.crash_at = fio.total + k;
                rv = agent_acks_append(a, "c1", 1, SUCCEEDED, 0, "ok", NULL, 0);
            } else {
                assert_int_equal(agent_acks_append(a, "c1", 1, SUCCEEDED, 0, "ok", NULL, 0), 0);
                fio.crash_at = fio.total + k;
                rv = agent_acks_confirm(a, "c1", SUCCEEDED);
            }
            int crashed = fio.crashed;
            agent_acks_del(a);
            a = open_ok(f->path, NULL, NULL);
            size_t n = agent_acks_count(a);
            if (phase == 0 && rv == 0)
                assert_int_equal(n, 1);
            if (phase == 1 && rv == 0)
                assert_int_equal(n, 0);
            if (n) {
                check_ack(agent_acks_at(a, 0), "c1", 1, SUCCEEDED, "ok");
                pending++;
            } else {
                gone++;
            }
            agent_acks_del(a);
            if (!crashed)
                break;
        }
        assert_true(pending > 0);
        assert_true(gone > 0);
    }
}

static void allocation_failures(void **state)
{
    struct fixture *f = *state;
    struct agent_acks *a = open_ok(f->path, NULL, NULL);
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        assert_int_equal(agent_acks_append(a, id, 1, RECEIVED, 0, "d", "r", 1), 0);
    }
    agent_acks_del(a);
    for (unsigned long k = 1;; k++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, k, 1);
        a = NULL;
        int rv = agent_acks_open(f->path, NULL, NULL, &fm.mem, NULL, 0, &a);
        if (rv == 0) {
            assert_int_equal(agent_acks_count(a), 20);
            agent_acks_del(a);
            assert_int_equal(fm.live, 0);
            break;
        }
        assert_int_equal(rv, -ENOMEM);
        assert_int_equal(fm.live, 0);
        assert_true(k < 200);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(restart_preserves_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(confirmed_acks_disappear, setup, teardown),
        cmocka_unit_test_setup_teardown(automatic_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(limits, setup, teardown),
        cmocka_unit_test_setup_teardown(full_journal_still_confirms, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_append_is_not_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_at_every_point, setup, teardown),
        cmocka_unit_test_setup_teardown(allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
