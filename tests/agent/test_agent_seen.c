#include "agent_seen.h"
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

#define S AEGIS_NS_PER_S
#define HOUR (3600 * S)
/* A plausible wall clock: 2026-11-23. */
#define T0 (UINT64_C(1795392000) * S)

struct fixture {
    char dir[512];
    char path[PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    agent_test_mkdtemp(f->dir, sizeof(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/seen.journal", f->dir);
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

static struct agent_seen *open_ok(const char *path, const struct agent_seen_config *cfg,
                                  const struct agent_io *io, aegis_tstamp now)
{
    struct agent_seen *s = NULL;
    char err[256] = "";
    int rv = agent_seen_open(path, cfg, io, NULL, now, err, sizeof(err), &s);
    if (rv != 0)
        fail_msg("open %s: %s (%s)", path, aegis_strerror(rv), err);
    return s;
}

enum { OUT_OK = 5, OUT_FAILED = 6, OUT_INTERRUPTED = 99 };

struct started_list {
    int n;
    char ids[4][AGENT_SEEN_ID_MAX + 1];
};

static int collect_started(const char *id, aegis_tstamp expiry, void *ud)
{
    struct started_list *l = ud;
    assert_int_equal(expiry, T0 + HOUR);
    assert_true(l->n < 4);
    snprintf(l->ids[l->n++], sizeof(l->ids[0]), "%s", id);
    return 0;
}

static void restart_preserves_state(void **state)
{
    struct fixture *f = *state;
    struct agent_seen *s = open_ok(f->path, NULL, NULL, T0);
    assert_int_equal(agent_seen_check(s, "cmd-a", NULL), AGENT_SEEN_NEW);
    assert_int_equal(agent_seen_mark_started(s, "cmd-a", T0 + HOUR, T0), 0);
    assert_int_equal(agent_seen_mark_started(s, "cmd-b", T0 + HOUR, T0), 0);
    assert_int_equal(agent_seen_mark_finished(s, "cmd-a", OUT_OK, T0), 0);
    assert_int_equal(agent_seen_mark_started(s, "cmd-c", T0 + HOUR, T0), 0);
    assert_int_equal(agent_seen_mark_finished(s, "cmd-c", OUT_FAILED, T0), 0);
    uint32_t out = 0;
    assert_int_equal(agent_seen_check(s, "cmd-a", &out), AGENT_SEEN_FINISHED);
    assert_int_equal(out, OUT_OK);
    agent_seen_del(s);

    /* "Restart": close and reopen. */
    s = open_ok(f->path, NULL, NULL, T0 + 60 * S);
    assert_int_equal(agent_seen_count(s), 3);
    out = 0;
    assert_int_equal(agent_seen_check(s, "cmd-a", &out), AGENT_SEEN_FINISHED);
    assert_int_equal(out, OUT_OK);
    assert_int_equal(agent_seen_check(s, "cmd-c", &out), AGENT_SEEN_FINISHED);
    assert_int_equal(out, OUT_FAILED);
    /* cmd-b crashed mid-run: reported as started with unknown outcome, so
     * the caller acks FAILED("interrupted") instead of running it again. */
    assert_int_equal(agent_seen_check(s, "cmd-b", NULL), AGENT_SEEN_STARTED);
    struct started_list l = {0};
    assert_int_equal(agent_seen_foreach_started(s, collect_started, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.ids[0], "cmd-b");
    assert_int_equal(agent_seen_mark_started(s, "cmd-b", T0 + HOUR, T0), AEGIS_ERR_EXISTS);
    assert_int_equal(agent_seen_mark_finished(s, "cmd-b", OUT_INTERRUPTED, T0 + 60 * S), 0);
    assert_int_equal(agent_seen_check(s, "cmd-d", NULL), AGENT_SEEN_NEW);
    agent_seen_del(s);

    s = open_ok(f->path, NULL, NULL, T0 + 120 * S);
    assert_int_equal(agent_seen_check(s, "cmd-b", &out), AGENT_SEEN_FINISHED);
    assert_int_equal(out, OUT_INTERRUPTED);
    l.n = 0;
    assert_int_equal(agent_seen_foreach_started(s, collect_started, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(agent_seen_skipped(s), 0);
    agent_seen_del(s);
}

static void misuse_is_rejected(void **state)
{
    struct fixture *f = *state;
    struct agent_seen *s = open_ok(f->path, NULL, NULL, T0);
    assert_int_equal(agent_seen_mark_finished(s, "nope", OUT_OK, T0), AEGIS_ERR_NOT_FOUND);
    assert_int_equal(agent_seen_mark_started(s, "x", T0 + HOUR, T0), 0);
    assert_int_equal(agent_seen_mark_finished(s, "x", OUT_OK, T0), 0);
    assert_int_equal(agent_seen_mark_finished(s, "x", OUT_OK, T0), AEGIS_ERR_STATE);
    assert_int_equal(agent_seen_mark_started(s, "", T0 + HOUR, T0), -EINVAL);
    char long_id[AGENT_SEEN_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(agent_seen_mark_started(s, long_id, T0 + HOUR, T0), -EINVAL);
    assert_int_equal(agent_seen_check(s, long_id, NULL), AGENT_SEEN_NEW);
    long_id[AGENT_SEEN_ID_MAX] = '\0'; /* exactly the maximum is fine */
    assert_int_equal(agent_seen_mark_started(s, long_id, T0 + HOUR, T0), 0);
    assert_int_equal(agent_seen_check(s, long_id, NULL), AGENT_SEEN_STARTED);
    /* Already past expiry + margin: recording it would be pointless. */
    assert_int_equal(agent_seen_mark_started(s, "old", T0 - 2 * HOUR, T0), AEGIS_ERR_EXPIRED);
    agent_seen_del(s);
}

static void expired_ids_are_forgotten(void **state)
{
    struct fixture *f = *state;
    struct agent_seen_config cfg = {.margin = HOUR};
    struct agent_seen *s = open_ok(f->path, &cfg, NULL, T0);
    assert_int_equal(agent_seen_mark_started(s, "short", T0 + 60 * S, T0), 0);
    assert_int_equal(agent_seen_mark_finished(s, "short", OUT_OK, T0), 0);
    assert_int_equal(agent_seen_mark_started(s, "long", T0 + 24 * HOUR, T0), 0);
    /* Within expiry + margin: still remembered. */
    assert_int_equal(agent_seen_expire(s, T0 + 60 * S + HOUR - 1), 0);
    assert_int_equal(agent_seen_check(s, "short", NULL), AGENT_SEEN_FINISHED);
    assert_int_equal(agent_seen_expire(s, T0 + 60 * S + HOUR), 1);
    assert_int_equal(agent_seen_check(s, "short", NULL), AGENT_SEEN_NEW);
    assert_int_equal(agent_seen_check(s, "long", NULL), AGENT_SEEN_STARTED);
    agent_seen_del(s);
    /* Reopening later forgets it too, without an explicit expire. */
    s = open_ok(f->path, &cfg, NULL, T0 + 2 * HOUR);
    assert_int_equal(agent_seen_count(s), 1);
    assert_int_equal(agent_seen_check(s, "long", NULL), AGENT_SEEN_STARTED);
    agent_seen_del(s);
    s = open_ok(f->path, &cfg, NULL, T0 + 26 * HOUR);
    assert_int_equal(agent_seen_count(s), 0);
    agent_seen_del(s);
}

static void count_is_bounded(void **state)
{
    struct fixture *f = *state;
    struct agent_seen_config cfg = {.max_entries = 8, .margin = HOUR};
    struct agent_seen *s = open_ok(f->path, &cfg, NULL, T0);
    char id[32];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        /* Half of them expire early. */
        aegis_tstamp exp = T0 + (i % 2 ? 24 * HOUR : 60 * S);
        assert_int_equal(agent_seen_mark_started(s, id, exp, T0), 0);
    }
    /* Full of live ids: refused, nothing evicted. */
    assert_int_equal(agent_seen_mark_started(s, "one-more", T0 + HOUR, T0), AEGIS_ERR_LIMIT);
    assert_int_equal(agent_seen_count(s), 8);
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        assert_int_equal(agent_seen_check(s, id, NULL), AGENT_SEEN_STARTED);
    }
    /* Once some expire, their room is reused. */
    aegis_tstamp later = T0 + 2 * HOUR;
    assert_int_equal(agent_seen_mark_started(s, "one-more", later + HOUR, later), 0);
    assert_int_equal(agent_seen_count(s), 5);
    assert_int_equal(agent_seen_check(s, "id-0", NULL), AGENT_SEEN_NEW);
    assert_int_equal(agent_seen_check(s, "id-1", NULL), AGENT_SEEN_STARTED);
    agent_seen_del(s);
}

static void compaction_keeps_live_ids(void **state)
{
    struct fixture *f = *state;
    struct agent_seen_config cfg = {.margin = HOUR, .compact_min_bytes = 4096, .max_bytes = 12288};
    struct agent_seen *s = open_ok(f->path, &cfg, NULL, T0);
    char id[40];
    aegis_tstamp now = T0;
    /* Far more records than fit in 12 KiB: only compaction of expired ids
     * keeps the journal going. */
    for (int i = 0; i < 600; i++) {
        snprintf(id, sizeof(id), "%08d-0000-4000-8000-000000000000", i);
        now = T0 + (aegis_tstamp)i * 60 * S;
        assert_int_equal(agent_seen_mark_started(s, id, now + 60 * S, now), 0);
        assert_int_equal(agent_seen_mark_finished(s, id, OUT_OK, now), 0);
        assert_true(agent_seen_journal_size(s) <= 12288);
    }
    /* Ids within expiry + margin (1 h 1 min) of now survive. */
    assert_true(agent_seen_expire(s, now) >= 0);
    assert_true(agent_seen_count(s) >= 60);
    assert_true(agent_seen_count(s) <= 62);
    assert_int_equal(agent_seen_check(s, "00000599-0000-4000-8000-000000000000", NULL),
                     AGENT_SEEN_FINISHED);
    size_t count = agent_seen_count(s);
    agent_seen_del(s);
    s = open_ok(f->path, &cfg, NULL, now);
    assert_int_equal(agent_seen_count(s), count);
    assert_int_equal(agent_seen_check(s, "00000599-0000-4000-8000-000000000000", NULL),
                     AGENT_SEEN_FINISHED);
    assert_int_equal(agent_seen_check(s, "00000000-0000-4000-8000-000000000000", NULL),
                     AGENT_SEEN_NEW);
    agent_seen_del(s);
}

static void journal_full_of_live_ids(void **state)
{
    struct fixture *f = *state;
    struct agent_seen_config cfg = {.max_bytes = 1024};
    struct agent_seen *s = open_ok(f->path, &cfg, NULL, T0);
    char id[32];
    int rv = 0, i;
    for (i = 0; i < 100 && rv == 0; i++) {
        snprintf(id, sizeof(id), "live-%d", i);
        rv = agent_seen_mark_started(s, id, T0 + HOUR, T0);
    }
    assert_int_equal(rv, AEGIS_ERR_LIMIT);
    assert_true(i > 10);
    /* The refused id was not recorded; all others still are. */
    assert_int_equal(agent_seen_check(s, id, NULL), AGENT_SEEN_NEW);
    assert_int_equal(agent_seen_count(s), (size_t)(i - 1));
    agent_seen_del(s);
}

static void failed_mark_is_not_recorded(void **state)
{
    struct fixture *f = *state;
    struct faultio fio;
    faultio_init(&fio);
    struct agent_seen *s = open_ok(f->path, NULL, &fio.io, T0);
    assert_int_equal(agent_seen_mark_started(s, "ok", T0 + HOUR, T0), 0);
    fio.fail_op = FIO_FDATASYNC;
    fio.fail_at = fio.count[FIO_FDATASYNC] + 1;
    fio.fail_errno = EIO;
    /* Not durable: the caller must not execute it, and it is not "seen". */
    assert_int_equal(agent_seen_mark_started(s, "cmd", T0 + HOUR, T0), -EIO);
    assert_int_equal(agent_seen_check(s, "cmd", NULL), AGENT_SEEN_NEW);
    assert_int_equal(agent_seen_mark_started(s, "cmd2", T0 + HOUR, T0), -EIO); /* poisoned */
    agent_seen_del(s);
    s = open_ok(f->path, NULL, NULL, T0);
    assert_int_equal(agent_seen_check(s, "ok", NULL), AGENT_SEEN_STARTED);
    assert_int_equal(agent_seen_check(s, "cmd", NULL), AGENT_SEEN_NEW);
    agent_seen_del(s);
}

/* Kill the process at every I/O call of mark_started/mark_finished: after a
 * restart the id is never silently forgotten once mark_started returned 0,
 * and never reported finished unless mark_finished ran its course. */
static void crash_at_every_point(void **state)
{
    struct fixture *f = *state;
    int outcomes[3] = {0, 0, 0};
    for (unsigned long k = 1; k < 40; k++) {
        unlink(f->path);
        struct faultio fio;
        faultio_init(&fio);
        struct agent_seen *s = open_ok(f->path, NULL, &fio.io, T0);
        fio.crash_at = fio.total + k;
        int started = agent_seen_mark_started(s, "cmd", T0 + HOUR, T0);
        int finished = started == 0 ? agent_seen_mark_finished(s, "cmd", OUT_OK, T0) : -1;
        int crashed = fio.crashed;
        agent_seen_del(s);
        s = open_ok(f->path, NULL, NULL, T0);
        uint32_t out = 0;
        enum agent_seen_state st = agent_seen_check(s, "cmd", &out);
        outcomes[st]++;
        if (started == 0)
            assert_int_not_equal(st, AGENT_SEEN_NEW);
        if (finished == 0) {
            assert_int_equal(st, AGENT_SEEN_FINISHED);
            assert_int_equal(out, OUT_OK);
        }
        agent_seen_del(s);
        if (!crashed)
            break; /* k is past the last call: every point was covered */
    }
    /* All three outcomes occur across the crash points. */
    assert_true(outcomes[AGENT_SEEN_NEW] > 0);
    assert_true(outcomes[AGENT_SEEN_STARTED] > 0);
    assert_true(outcomes[AGENT_SEEN_FINISHED] > 0);
}

static void allocation_failures(void **state)
{
    struct fixture *f = *state;
    struct agent_seen *s = open_ok(f->path, NULL, NULL, T0);
    char id[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        assert_int_equal(agent_seen_mark_started(s, id, T0 + HOUR, T0), 0);
    }
    agent_seen_del(s);
    for (unsigned long k = 1;; k++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, k, 1);
        s = NULL;
        int rv = agent_seen_open(f->path, NULL, NULL, &fm.mem, T0, NULL, 0, &s);
        if (rv == 0) {
            assert_int_equal(agent_seen_count(s), 100);
            agent_seen_del(s);
            assert_int_equal(fm.live, 0);
            break;
        }
        assert_int_equal(rv, -ENOMEM);
        assert_null(s);
        assert_int_equal(fm.live, 0);
        assert_true(k < 200);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(restart_preserves_state, setup, teardown),
        cmocka_unit_test_setup_teardown(misuse_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(expired_ids_are_forgotten, setup, teardown),
        cmocka_unit_test_setup_teardown(count_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(compaction_keeps_live_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(journal_full_of_live_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_mark_is_not_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_at_every_point, setup, teardown),
        cmocka_unit_test_setup_teardown(allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
