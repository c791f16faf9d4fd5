/* Integration tests for ctl_batch.c against a real PostgreSQL (tests/support/pgtmp.sh): items
 * of one loop turn become one statement, each item gets exactly its rows, values survive the
 * array encoding, a failing statement fails every waiting item (nothing lost, nothing
 * answered twice), the queue is bounded, binary results, cancellation at delete. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_batch.h"
#include "ctl_db.h"
#include "ctl_test_util.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT (30 * AEGIS_NS_PER_S)

struct fixture {
    struct ctl_loop *loop;
    struct ctl_db *db;
    struct test_events ev;
};

static int is_up(void *ud)
{
    return ctl_db_is_up(((struct fixture *)ud)->db);
}

static void open_pool(struct fixture *f)
{
    struct ctl_db_config cfg = {0};
    memset(f, 0, sizeof(*f));
    cfg.conninfo = test_dsn();
    cfg.nconns = 2;
    cfg.on_event = test_on_event;
    cfg.user_data = &f->ev;
    cfg.log = &test_log;
    assert_int_equal(ctl_loop_new(NULL, NULL, &f->loop), 0);
    assert_int_equal(ctl_db_new(f->loop, &cfg, NULL, &f->db), 0);
    assert_int_equal(ctl_loop_run_until(f->loop, is_up, f, WAIT), 0);
}

static void close_pool(struct fixture *f)
{
    ctl_db_del(f->db);
    ctl_loop_del(f->loop);
}

/* One item's outcome. */
struct got {
    int calls;
    int rv;
    int nrows;
    long long v[4];
    char text[64];
    int isnull;
    char sqlstate[8];
};

static int g_done, g_target;
static const struct ctl_batch *g_batch;

static int all_done(void *ud)
{
    (void)ud;
    return g_done >= g_target;
}

static void item_cb(int rv, const struct ctl_db_result *res, int row, int nrows, void *ud)
{
    struct got *g = ud;
    g->calls++;
    g->rv = rv;
    g->nrows = nrows;
    g_done++;
    if (rv == AEGIS_ERR_DATABASE && res)
        snprintf(g->sqlstate, sizeof(g->sqlstate), "%s", ctl_db_result_sqlstate(res));
    if (rv != 0)
        return;
    for (int i = 0; i < nrows && i < 4; i++)
        g->v[i] = ctl_batch_i64(g_batch, res, row + i, 1);
    if (nrows >= 1 && ctl_db_result_nfields(res) >= 3) {
        snprintf(g->text, sizeof(g->text), "%s", ctl_db_result_value(res, row, 2));
        g->isnull = ctl_db_result_isnull(res, row, 2);
    }
}

/* ---- many items, few statements, each item its own row -------------------------------- */

static void items_of_one_turn_share_statements(void **state)
{
    enum { N = 2500 };
    struct fixture f;
    struct ctl_batch *b;
    static struct got g[N];
    struct ctl_batch_stats st;
    (void)state;
    open_pool(&f);
    struct ctl_batch_config cfg = {
        .name = "double",
        .sql = "SELECT s.i, s.v * 2 FROM unnest($1::bigint[]) WITH ORDINALITY AS s(v, i)"
               " ORDER BY s.i",
        .ncols = 1,
        .max_items = 1000,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    g_batch = b;
    memset(g, 0, sizeof(g));
    for (int i = 0; i < N; i++) {
        char num[24];
        snprintf(num, sizeof(num), "%d", i * 7);
        const char *v[1] = {num};
        assert_int_equal(ctl_batch_add(b, v, item_cb, &g[i]), 0);
    }
    /* Nothing runs inside ctl_batch_add. */
    assert_int_equal(g[0].calls, 0);
    g_done = 0;
    g_target = N;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].rv, 0);
        assert_int_equal(g[i].nrows, 1);
        assert_int_equal(g[i].v[0], (long long)i * 14);
    }
    ctl_batch_stats(b, &st);
    assert_int_equal(st.items, N);
    assert_int_equal(st.statements, 3); /* 1000 + 1000 + 500 */
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.in_flight, 0);
    ctl_batch_del(b);
    close_pool(&f);
}

/* ---- text values with quotes, backslashes, braces, commas, NULL; 0..n rows per item ----- */

static void values_round_trip_and_row_ranges(void **state)
{
    static const char *const texts[] = {
        "plain", "with \"quotes\"", "back\\slash\\", "{braces}", "a,b,c", "", "NULL",
        NULL,    "ünïcödé",         " spaced "};
    enum { N = sizeof(texts) / sizeof(texts[0]) };
    struct fixture f;
    struct ctl_batch *b;
    static struct got g[N];
    (void)state;
    open_pool(&f);
    /* Item k gets k rows (so item 0 none), each carrying the text back. */
    struct ctl_batch_config cfg = {
        .name = "echo",
        .sql = "SELECT s.i, n, s.t FROM unnest($1::text[], $2::int[]) WITH ORDINALITY"
               " AS s(t, k, i) CROSS JOIN LATERAL generate_series(1, s.k) n ORDER BY s.i, n",
        .ncols = 2,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    g_batch = b;
    memset(g, 0, sizeof(g));
    for (int i = 0; i < N; i++) {
        char k[8];
        snprintf(k, sizeof(k), "%d", i);
        const char *v[2] = {texts[i], k};
        assert_int_equal(ctl_batch_add(b, v, item_cb, &g[i]), 0);
    }
    g_done = 0;
    g_target = N;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].rv, 0);
        assert_int_equal(g[i].nrows, i);
        for (int r = 0; r < i && r < 4; r++)
            assert_int_equal(g[i].v[r], r + 1);
        if (i == 0)
            continue;
        if (texts[i]) {
            assert_int_equal(g[i].isnull, 0);
            assert_string_equal(g[i].text, texts[i]);
        } else {
            assert_int_equal(g[i].isnull, 1);
        }
    }
    ctl_batch_del(b);
    close_pool(&f);
}

/* ---- a failing statement fails every waiting item; the next one works ------------------- */

static void failing_statement_fails_each_item(void **state)
{
    enum { N = 50 };
    struct fixture f;
    struct ctl_batch *b;
    static struct got g[N + 1];
    (void)state;
    open_pool(&f);
    char dummy[8];
    test_query(test_dsn(), "CREATE TABLE IF NOT EXISTS batch_t (k int PRIMARY KEY, v int NOT NULL)",
               dummy, sizeof(dummy));
    test_query(test_dsn(), "TRUNCATE batch_t", dummy, sizeof(dummy));
    struct ctl_batch_config cfg = {
        .name = "insert",
        .sql = "WITH ins AS (INSERT INTO batch_t (k, v) SELECT k, 100 / d FROM unnest($1::int[],"
               " $2::int[]) AS s(k, d) RETURNING k)"
               " SELECT s.i, ins.k FROM unnest($1::int[]) WITH ORDINALITY AS s(k, i)"
               " JOIN ins ON ins.k = s.k ORDER BY s.i",
        .ncols = 2,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    g_batch = b;
    memset(g, 0, sizeof(g));
    /* Item 17 divides by zero: the whole statement (one transaction) fails. */
    for (int i = 0; i < N; i++) {
        char k[8], d[8];
        snprintf(k, sizeof(k), "%d", i);
        snprintf(d, sizeof(d), "%d", i == 17 ? 0 : 1);
        const char *v[2] = {k, d};
        assert_int_equal(ctl_batch_add(b, v, item_cb, &g[i]), 0);
    }
    g_done = 0;
    g_target = N;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].rv, AEGIS_ERR_DATABASE);
        assert_string_equal(g[i].sqlstate, "22012");
    }
    /* Nothing of it committed. */
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM batch_t"), 0);
    struct ctl_batch_stats st;
    ctl_batch_stats(b, &st);
    assert_int_equal(st.failed, N);
    /* The batch is usable again. */
    const char *v[2] = {"1000", "1"};
    assert_int_equal(ctl_batch_add(b, v, item_cb, &g[N]), 0);
    g_target = N + 1;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    assert_int_equal(g[N].rv, 0);
    assert_int_equal(g[N].nrows, 1);
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM batch_t"), 1);
    ctl_batch_del(b);
    close_pool(&f);
}

/* ---- bounded: the queue refuses beyond queue_max, with no callback ---------------------- */

static void queue_is_bounded(void **state)
{
    struct fixture f;
    struct ctl_batch *b;
    static struct got g[12];
    (void)state;
    open_pool(&f);
    struct ctl_batch_config cfg = {
        .name = "bounded",
        .sql = "SELECT s.i FROM unnest($1::int[]) WITH ORDINALITY AS s(v, i) ORDER BY s.i",
        .ncols = 1,
        .queue_max = 10,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    g_batch = b;
    memset(g, 0, sizeof(g));
    const char *v[1] = {"1"};
    for (int i = 0; i < 10; i++)
        assert_int_equal(ctl_batch_add(b, v, item_cb, &g[i]), 0);
    assert_int_equal(ctl_batch_add(b, v, item_cb, &g[10]), AEGIS_ERR_LIMIT);
    struct ctl_batch_stats st;
    ctl_batch_stats(b, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.waiting, 10);
    g_done = 0;
    g_target = 10;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    assert_int_equal(g[10].calls, 0);
    /* Room again once they were sent. */
    assert_int_equal(ctl_batch_add(b, v, item_cb, &g[11]), 0);
    g_target = 11;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    assert_int_equal(g[11].rv, 0);
    ctl_batch_del(b);
    close_pool(&f);
}

/* ---- binary results: raw bytea and a binary ordinal ------------------------------------- */

static const uint8_t *g_bytes;
static size_t g_bytes_len;
static int g_bytes_ok;

static void bytes_cb(int rv, const struct ctl_db_result *res, int row, int nrows, void *ud)
{
    (void)ud;
    g_done++;
    if (rv != 0 || nrows != 1)
        return;
    const char *p = ctl_db_result_value(res, row, 1);
    g_bytes_ok = (size_t)ctl_db_result_length(res, row, 1) == g_bytes_len &&
                 memcmp(p, g_bytes, g_bytes_len) == 0;
}

static void binary_result_is_raw(void **state)
{
    struct fixture f;
    struct ctl_batch *b;
    (void)state;
    open_pool(&f);
    struct ctl_batch_config cfg = {
        .name = "bin",
        .sql = "SELECT s.i, decode(s.h, 'hex') FROM unnest($1::text[]) WITH ORDINALITY"
               " AS s(h, i) ORDER BY s.i",
        .ncols = 1,
        .binary_result = 1,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    static const uint8_t bytes[] = {0x00, 0xff, 0x5c, 0x22, 0x00, 0x7b, 0x01};
    g_bytes = bytes;
    g_bytes_len = sizeof(bytes);
    g_bytes_ok = 0;
    const char *first[1] = {"abcd"}, *second[1] = {"00ff5c22007b01"};
    assert_int_equal(ctl_batch_add(b, first, NULL, NULL), 0);
    assert_int_equal(ctl_batch_add(b, second, bytes_cb, NULL), 0);
    g_done = 0;
    g_target = 1;
    assert_int_equal(ctl_loop_run_until(f.loop, all_done, NULL, WAIT), 0);
    assert_int_equal(g_bytes_ok, 1);
    ctl_batch_del(b);
    close_pool(&f);
}

/* ---- delete cancels what never ran ------------------------------------------------------ */

static void delete_cancels_waiting_items(void **state)
{
    struct fixture f;
    struct ctl_batch *b;
    static struct got g[3];
    (void)state;
    open_pool(&f);
    struct ctl_batch_config cfg = {
        .name = "cancel",
        .sql = "SELECT s.i FROM unnest($1::int[]) WITH ORDINALITY AS s(v, i) ORDER BY s.i",
        .ncols = 1,
    };
    assert_int_equal(ctl_batch_new(f.db, f.loop, &cfg, NULL, &b), 0);
    memset(g, 0, sizeof(g));
    const char *v[1] = {"1"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(ctl_batch_add(b, v, item_cb, &g[i]), 0);
    ctl_batch_del(b);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].rv, -ECANCELED);
    }
    close_pool(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(items_of_one_turn_share_statements),
        cmocka_unit_test(values_round_trip_and_row_ranges),
        cmocka_unit_test(failing_statement_fails_each_item),
        cmocka_unit_test(queue_is_bounded),
        cmocka_unit_test(binary_result_is_raw),
        cmocka_unit_test(delete_cancels_waiting_items),
    };
    (void)test_dsn();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
