#include "agent_journal.h"
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

#define KIND 0x54534554u /* "TEST" */
#define MAXREC 64

struct fixture {
    char dir[512];
    char path[PATH_MAX];
};

/* Records seen by the open callback. */
struct seen {
    size_t n;
    uint64_t seq[MAXREC];
    size_t len[MAXREC];
    uint8_t data[MAXREC][256];
};

static int collect(uint64_t seq, const uint8_t *p, size_t len, void *ud)
{
    struct seen *s = ud;
    assert_true(s->n < MAXREC);
    assert_true(len <= sizeof(s->data[0]));
    s->seq[s->n] = seq;
    s->len[s->n] = len;
    memcpy(s->data[s->n], p, len);
    s->n++;
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    agent_test_mkdtemp(f->dir, sizeof(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/test.journal", f->dir);
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

static const struct agent_journal_config cfg = {.kind = KIND};

/* Payload i: i+1 bytes of a pattern, so every record has a distinct size. */
static size_t payload(size_t i, uint8_t *out)
{
    size_t len = 3 + 7 * i;
    for (size_t k = 0; k < len; k++)
        out[k] = (uint8_t)(i * 31 + k);
    return len;
}

static struct agent_journal *open_ok(const char *path, const struct agent_journal_config *c,
                                     const struct agent_io *io, struct seen *s,
                                     struct agent_journal_recovery *rec)
{
    struct agent_journal *j = NULL;
    char err[256] = "";
    int rv = agent_journal_open(path, c, io, NULL, collect, s, rec, err, sizeof(err), &j);
    if (rv != 0)
        fail_msg("open %s: %s (%s)", path, aegis_strerror(rv), err);
    return j;
}

static void write_records(const char *path, size_t n, uint64_t *ends)
{
    struct seen s = {0};
    struct agent_journal *j = open_ok(path, &cfg, NULL, &s, NULL);
    for (size_t i = 0; i < n; i++) {
        uint8_t b[256];
        uint64_t seq = 0;
        assert_int_equal(agent_journal_append(j, b, payload(i, b), &seq), 0);
        assert_int_equal(seq, i + 1);
        if (ends)
            ends[i] = agent_journal_size(j);
    }
    agent_journal_del(j);
}

static void check_prefix(const struct seen *s, size_t n)
{
    assert_int_equal(s->n, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t b[256];
        size_t len = payload(i, b);
        assert_int_equal(s->len[i], len);
        assert_memory_equal(s->data[i], b, len);
        assert_int_equal(s->seq[i], i + 1);
    }
}

static void create_append_reopen(void **state)
{
    struct fixture *f = *state;
    struct agent_journal_recovery rec;
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, NULL, &s, &rec);
    assert_int_equal(rec.created, 1);
    assert_int_equal(s.n, 0);
    assert_int_equal(agent_journal_size(j), AGENT_JOURNAL_HEADER_SIZE);
    agent_journal_del(j);
    assert_int_equal(agent_test_file_size(f->path), AGENT_JOURNAL_HEADER_SIZE);

    write_records(f->path, 6, NULL);
    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, &rec);
    assert_int_equal(rec.created, 0);
    assert_int_equal(rec.tail, AGENT_JOURNAL_TAIL_CLEAN);
    assert_int_equal(rec.truncated_bytes, 0);
    assert_int_equal(rec.records, 6);
    check_prefix(&s, 6);
    assert_int_equal(agent_journal_next_seq(j), 7);
    /* Appending after a reopen continues the sequence. */
    uint64_t seq;
    assert_int_equal(agent_journal_append(j, "x", 1, &seq), 0);
    assert_int_equal(seq, 7);
    agent_journal_del(j);
}

/* Cut the file at every byte offset: every record that ended at or before
 * the cut survives, nothing after it does, and the journal is usable. */
static void truncation_at_every_offset(void **state)
{
    struct fixture *f = *state;
    enum { N = 5 };
    uint64_t ends[N];
    write_records(f->path, N, ends);
    uint8_t *orig;
    size_t size;
    assert_int_equal(agent_test_read(f->path, &orig, &size), 0);
    assert_int_equal(size, ends[N - 1]);

    for (size_t cut = 0; cut <= size; cut++) {
        assert_int_equal(agent_test_write(f->path, orig, cut), 0);
        size_t expect = 0;
        while (expect < N && ends[expect] <= cut)
            expect++;
        struct seen s = {0};
        struct agent_journal_recovery rec;
        struct agent_journal *j = open_ok(f->path, &cfg, NULL, &s, &rec);
        check_prefix(&s, expect);
        uint64_t good = expect ? ends[expect - 1] : AGENT_JOURNAL_HEADER_SIZE;
        assert_int_equal(agent_journal_size(j), good);
        assert_int_equal(agent_test_file_size(f->path), (long)good);
        if (cut < AGENT_JOURNAL_HEADER_SIZE) {
            assert_int_equal(rec.header_reset, 1);
        } else {
            assert_int_equal(rec.truncated_bytes, cut - good);
            assert_int_equal(rec.tail,
                             cut == good ? AGENT_JOURNAL_TAIL_CLEAN : AGENT_JOURNAL_TAIL_TORN);
        }
        /* The next append lands right after the last good record. */
        assert_int_equal(agent_journal_append(j, "new", 3, NULL), 0);
        agent_journal_del(j);
        memset(&s, 0, sizeof(s));
        j = open_ok(f->path, &cfg, NULL, &s, &rec);
        assert_int_equal(s.n, expect + 1);
        assert_int_equal(s.len[expect], 3);
        assert_memory_equal(s.data[expect], "new", 3);
        assert_int_equal(rec.tail, AGENT_JOURNAL_TAIL_CLEAN);
        agent_journal_del(j);
    }
    free(orig);
}

/* Flip one bit in every byte after the header: the record holding the byte
 * and everything after it is dropped, everything before it survives. */
static void bit_flip_drops_tail(void **state)
{
    struct fixture *f = *state;
    enum { N = 5 };
    uint64_t ends[N];
    write_records(f->path, N, ends);
    uint8_t *orig;
    size_t size;
    assert_int_equal(agent_test_read(f->path, &orig, &size), 0);
    uint8_t *copy = malloc(size);
    assert_non_null(copy);
    for (size_t pos = AGENT_JOURNAL_HEADER_SIZE; pos < size; pos++) {
        memcpy(copy, orig, size);
        copy[pos] ^= (uint8_t)(1u << (pos % 8));
        assert_int_equal(agent_test_write(f->path, copy, size), 0);
        size_t victim = 0;
        while (ends[victim] <= pos)
            victim++;
        struct seen s = {0};
        struct agent_journal_recovery rec;
        struct agent_journal *j = open_ok(f->path, &cfg, NULL, &s, &rec);
        check_prefix(&s, victim);
        uint64_t good = victim ? ends[victim - 1] : AGENT_JOURNAL_HEADER_SIZE;
        assert_int_equal(agent_test_file_size(f->path), (long)good);
        assert_int_equal(rec.truncated_bytes, size - good);
        /* A flipped length can make the record look longer than the file
         * (torn); anything else is caught by the CRC or sequence. */
        assert_true(rec.tail != AGENT_JOURNAL_TAIL_CLEAN);
        agent_journal_del(j);
    }
    free(copy);
    free(orig);
}

static void damaged_header_is_refused(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 2, NULL);
    uint8_t *orig;
    size_t size;
    assert_int_equal(agent_test_read(f->path, &orig, &size), 0);
    struct agent_journal *j = NULL;
    char err[256] = "";

    orig[0] ^= 0xff; /* magic */
    assert_int_equal(agent_test_write(f->path, orig, size), 0);
    assert_int_equal(
        agent_journal_open(f->path, &cfg, NULL, NULL, NULL, NULL, NULL, err, sizeof(err), &j),
        AEGIS_ERR_MALFORMED);
    assert_null(j);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "move it aside"));
    /* The file is evidence: untouched. */
    assert_int_equal(agent_test_file_size(f->path), (long)size);
    orig[0] ^= 0xff;

    orig[20] ^= 0x01; /* base sequence: header CRC */
    assert_int_equal(agent_test_write(f->path, orig, size), 0);
    assert_int_equal(
        agent_journal_open(f->path, &cfg, NULL, NULL, NULL, NULL, NULL, err, sizeof(err), &j),
        AEGIS_ERR_MALFORMED);
    orig[20] ^= 0x01;

    assert_int_equal(agent_test_write(f->path, orig, size), 0);
    struct agent_journal_config other = {.kind = KIND + 1};
    assert_int_equal(
        agent_journal_open(f->path, &other, NULL, NULL, NULL, NULL, NULL, err, sizeof(err), &j),
        AEGIS_ERR_MALFORMED);
    assert_non_null(strstr(err, "kind"));
    free(orig);
}

static void write_failure_is_not_durable(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 3, NULL);
    struct faultio fio;
    faultio_init(&fio);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
    uint64_t before = agent_journal_size(j);

    /* The disk fills up half-way through the record. */
    fio.fail_op = FIO_PWRITE;
    fio.fail_at = fio.count[FIO_PWRITE] + 1;
    fio.fail_errno = ENOSPC;
    fio.torn = 1;
    uint8_t b[256];
    assert_int_equal(agent_journal_append(j, b, payload(3, b), NULL), -ENOSPC);
    /* The partial record was cut off again; the journal is still usable. */
    assert_int_equal(agent_test_file_size(f->path), (long)before);
    assert_int_equal(agent_journal_poisoned(j), 0);
    assert_int_equal(agent_journal_append(j, b, payload(3, b), NULL), 0);
    agent_journal_del(j);

    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, NULL);
    check_prefix(&s, 4);
    agent_journal_del(j);
}

static void fsync_failure_poisons(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 3, NULL);
    struct faultio fio;
    faultio_init(&fio);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
    fio.fail_op = FIO_FDATASYNC;
    fio.fail_at = fio.count[FIO_FDATASYNC] + 1;
    fio.fail_errno = EIO;
    assert_int_equal(agent_journal_append(j, "lost", 4, NULL), -EIO);
    assert_int_equal(agent_journal_poisoned(j), -EIO);
    /* Even though fdatasync would work now, nothing more is accepted. */
    assert_int_equal(agent_journal_append(j, "more", 4, NULL), -EIO);
    assert_int_equal(agent_journal_compact(j, NULL, NULL), -EINVAL);
    agent_journal_del(j);

    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, NULL);
    check_prefix(&s, 3); /* the failed record is not there */
    agent_journal_del(j);
}

/* Compaction keeps records 1, 3 and 5 (odd indexes). */
static int emit_odd(struct agent_journal_compactor *c, void *ud)
{
    (void)ud;
    for (size_t i = 1; i < 6; i += 2) {
        uint8_t b[256];
        int rv = agent_journal_compactor_add(c, b, payload(i, b));
        if (rv != 0)
            return rv;
    }
    return 0;
}

static int is_compacted(const struct seen *s)
{
    if (s->n != 3)
        return 0;
    for (size_t k = 0; k < 3; k++) {
        uint8_t b[256];
        size_t len = payload(2 * k + 1, b);
        if (s->len[k] != len || memcmp(s->data[k], b, len) != 0 || s->seq[k] != 7 + k)
            return 0;
    }
    return 1;
}

static void compaction_rewrites_live_records(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 6, NULL);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, NULL, &s, NULL);
    uint64_t before = agent_journal_size(j);
    assert_int_equal(agent_journal_compact(j, emit_odd, NULL), 0);
    assert_true(agent_journal_size(j) < before);
    assert_int_equal(agent_journal_size(j), (uint64_t)agent_test_file_size(f->path));
    assert_int_equal(agent_journal_next_seq(j), 10);
    assert_int_equal(agent_journal_append(j, "after", 5, NULL), 0);
    agent_journal_del(j);
    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, NULL);
    assert_int_equal(s.n, 4);
    s.n = 3;
    assert_true(is_compacted(&s));
    assert_int_equal(s.seq[3], 10);
    agent_journal_del(j);
}

/* Kill the process at every I/O call of a compaction; whatever the point,
 * reopening yields either the old records or exactly the compacted ones. */
static void compaction_crash_points(void **state)
{
    struct fixture *f = *state;
    /* Count the calls a full compaction makes. */
    write_records(f->path, 6, NULL);
    struct faultio fio;
    faultio_init(&fio);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
    unsigned long base = fio.total;
    assert_int_equal(agent_journal_compact(j, emit_odd, NULL), 0);
    unsigned long ops = fio.total - base;
    agent_journal_del(j);
    assert_true(ops >= 6);

    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.compact", f->path);
    int saw_old = 0, saw_new = 0;
    for (unsigned long k = 1; k <= ops; k++) {
        unlink(f->path);
        write_records(f->path, 6, NULL);
        faultio_init(&fio);
        memset(&s, 0, sizeof(s));
        j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
        fio.crash_at = fio.total + k;
        int rv = agent_journal_compact(j, emit_odd, NULL);
        agent_journal_del(j);

        memset(&s, 0, sizeof(s));
        j = open_ok(f->path, &cfg, NULL, &s, NULL);
        if (is_compacted(&s)) {
            saw_new++;
        } else {
            /* A compaction that reported success must have taken effect
             * (only the final close can fail unnoticed). */
            assert_int_not_equal(rv, 0);
            check_prefix(&s, 6);
            saw_old++;
        }
        assert_int_equal(access(tmp, F_OK), -1); /* leftovers are removed */
        agent_journal_del(j);
    }
    assert_true(saw_old > 0);
    assert_true(saw_new > 0); /* crash after the rename */
}

static void compaction_rename_failure_keeps_old(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 6, NULL);
    struct faultio fio;
    faultio_init(&fio);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
    fio.fail_op = FIO_RENAME;
    fio.fail_at = 1;
    fio.fail_errno = EIO;
    assert_int_equal(agent_journal_compact(j, emit_odd, NULL), -EIO);
    /* Not poisoned: the old file is intact and appends continue. */
    assert_int_equal(agent_journal_poisoned(j), 0);
    uint8_t b[256];
    assert_int_equal(agent_journal_append(j, b, payload(6, b), NULL), 0);
    agent_journal_del(j);
    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, NULL);
    check_prefix(&s, 7);
    agent_journal_del(j);
}

static void compaction_dir_fsync_failure_poisons(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 6, NULL);
    struct faultio fio;
    faultio_init(&fio);
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &cfg, &fio.io, &s, NULL);
    fio.fail_op = FIO_FSYNC;
    fio.fail_at = fio.count[FIO_FSYNC] + 1;
    fio.fail_errno = EIO;
    assert_int_equal(agent_journal_compact(j, emit_odd, NULL), -EIO);
    assert_int_equal(agent_journal_poisoned(j), -EIO);
    assert_int_equal(agent_journal_append(j, "x", 1, NULL), -EIO);
    agent_journal_del(j);
    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &cfg, NULL, &s, NULL);
    assert_true(is_compacted(&s));
    agent_journal_del(j);
}

static int emit_too_much(struct agent_journal_compactor *c, void *ud)
{
    (void)ud;
    uint8_t b[100] = {0};
    for (int i = 0; i < 1000; i++) {
        int rv = agent_journal_compactor_add(c, b, sizeof(b));
        if (rv != 0)
            return rv;
    }
    return 0;
}

static void caps_are_enforced(void **state)
{
    struct fixture *f = *state;
    struct agent_journal_config small = {.kind = KIND, .max_bytes = 1024, .max_record = 100};
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &small, NULL, &s, NULL);
    uint8_t b[101] = {0};
    assert_int_equal(agent_journal_append(j, b, 101, NULL), AEGIS_ERR_TOO_LARGE);
    assert_false(agent_journal_fits(j, 101));
    int n = 0, rv;
    while ((rv = agent_journal_append(j, b, 100, NULL)) == 0)
        n++;
    assert_int_equal(rv, AEGIS_ERR_LIMIT);
    assert_int_equal(n, (1024 - AGENT_JOURNAL_HEADER_SIZE) / (100 + 16));
    assert_true(agent_journal_size(j) <= 1024);
    assert_int_equal(agent_journal_poisoned(j), 0);
    /* A compaction that would not fit fails and leaves everything as it was. */
    assert_int_equal(agent_journal_compact(j, emit_too_much, NULL), AEGIS_ERR_LIMIT);
    agent_journal_del(j);
    memset(&s, 0, sizeof(s));
    j = open_ok(f->path, &small, NULL, &s, NULL);
    assert_int_equal(s.n, (size_t)n);
    agent_journal_del(j);

    /* A record longer than this reader's max_record ends the journal. */
    struct agent_journal_config tiny = {.kind = KIND, .max_record = 50};
    memset(&s, 0, sizeof(s));
    struct agent_journal_recovery rec;
    j = open_ok(f->path, &tiny, NULL, &s, &rec);
    assert_int_equal(s.n, 0);
    assert_int_equal(rec.tail, AGENT_JOURNAL_TAIL_CORRUPT);
    agent_journal_del(j);

    struct agent_journal_config bad = {.kind = KIND, .compact_garbage_pct = 101};
    char err[128] = "";
    assert_int_equal(
        agent_journal_open(f->path, &bad, NULL, NULL, NULL, NULL, NULL, err, sizeof(err), &j),
        -EINVAL);
    assert_true(err[0] != '\0');
}

static void needs_compaction_by_size_and_garbage(void **state)
{
    struct fixture *f = *state;
    struct agent_journal_config c = {
        .kind = KIND, .compact_min_bytes = 1000, .compact_garbage_pct = 50};
    struct seen s = {0};
    struct agent_journal *j = open_ok(f->path, &c, NULL, &s, NULL);
    uint8_t b[84] = {0};
    for (int i = 0; i < 5; i++) /* 5 * 100 bytes: below the minimum */
        assert_int_equal(agent_journal_append(j, b, sizeof(b), NULL), 0);
    assert_false(agent_journal_needs_compaction(j, 0));
    for (int i = 0; i < 10; i++)
        assert_int_equal(agent_journal_append(j, b, sizeof(b), NULL), 0);
    /* 1500 bytes of records: compact at >= 50 % garbage only. */
    assert_false(agent_journal_needs_compaction(j, 1500));
    assert_false(agent_journal_needs_compaction(j, 751));
    assert_true(agent_journal_needs_compaction(j, 750));
    assert_true(agent_journal_needs_compaction(j, 0));
    agent_journal_del(j);
}

static int fail_on_third(uint64_t seq, const uint8_t *p, size_t len, void *ud)
{
    (void)p;
    (void)len;
    (void)ud;
    return seq == 3 ? -ECANCELED : 0;
}

static void callback_error_and_enomem(void **state)
{
    struct fixture *f = *state;
    write_records(f->path, 4, NULL);
    struct agent_journal *j = NULL;
    assert_int_equal(
        agent_journal_open(f->path, &cfg, NULL, NULL, fail_on_third, NULL, NULL, NULL, 0, &j),
        -ECANCELED);
    assert_null(j);
    /* Every allocation failure is reported as -ENOMEM and leaks nothing. */
    for (unsigned long k = 1;; k++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, k, 1);
        struct seen s = {0};
        int rv = agent_journal_open(f->path, &cfg, NULL, &fm.mem, collect, &s, NULL, NULL, 0, &j);
        if (rv == 0) {
            check_prefix(&s, 4);
            agent_journal_del(j);
            assert_int_equal(fm.live, 0);
            break;
        }
        assert_int_equal(rv, -ENOMEM);
        assert_int_equal(fm.live, 0);
        assert_true(k < 100);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_append_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(truncation_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(bit_flip_drops_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_header_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(write_failure_is_not_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(fsync_failure_poisons, setup, teardown),
        cmocka_unit_test_setup_teardown(compaction_rewrites_live_records, setup, teardown),
        cmocka_unit_test_setup_teardown(compaction_crash_points, setup, teardown),
        cmocka_unit_test_setup_teardown(compaction_rename_failure_keeps_old, setup, teardown),
        cmocka_unit_test_setup_teardown(compaction_dir_fsync_failure_poisons, setup, teardown),
        cmocka_unit_test_setup_teardown(caps_are_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(needs_compaction_by_size_and_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(callback_error_and_enomem, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
