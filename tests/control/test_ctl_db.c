/* Integration tests for ctl_db.c (the async pool) against a real PostgreSQL
 * (tests/support/pgtmp.sh): concurrency, bounded queue, prepared statements, errors and
 * rollback, COPY, LISTEN/NOTIFY between two pools, and an unreachable database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_copybuf.h"
#include "ctl_db.h"
#include "ctl_schema.h"
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

static void pool_open(struct fixture *f, struct ctl_db_config *cfg)
{
    memset(&f->ev, 0, sizeof(f->ev));
    if (!cfg->conninfo)
        cfg->conninfo = test_dsn();
    cfg->on_event = test_on_event;
    cfg->user_data = &f->ev;
    cfg->log = &test_log;
    if (!f->loop)
        assert_int_equal(ctl_loop_new(NULL, NULL, &f->loop), 0);
    assert_int_equal(ctl_db_new(f->loop, cfg, NULL, &f->db), 0);
}

static void pool_close(struct fixture *f)
{
    ctl_db_del(f->db);
    f->db = NULL;
    ctl_loop_del(f->loop);
    f->loop = NULL;
}

static int setup_schema(void **state)
{
    (void)state;
    test_migrate(test_dsn());
    return 0;
}

/* ---- many concurrent round trips ------------------------------------------------------ */

struct rt {
    int done;
    int bad;
};

struct expect_val {
    struct rt *rt;
    long want;
};

static void val_cb(int rv, const struct ctl_db_result *res, void *ud)
{
    struct expect_val *e = ud;

    e->rt->done++;
    if (rv != 0 || ctl_db_result_ntuples(res) != 1 ||
        strtol(ctl_db_result_value(res, 0, 0), NULL, 10) != e->want)
        e->rt->bad++;
}

static int all_ready(void *ud)
{
    struct ctl_db_stats st;

    ctl_db_stats(((struct fixture *)ud)->db, &st);
    return st.conns_ready == 4;
}

static struct rt *g_rt;
static int g_rt_target;
static int rt_done(void *ud)
{
    (void)ud;
    return g_rt->done >= g_rt_target;
}

static void many_concurrent_round_trips(void **state)
{
    enum { N = 2000 };
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct ctl_db_stats st;
    static struct expect_val ev[N];
    struct rt rt = {0, 0};
    char num[N][16];
    aegis_tstamp t0;
    int i;

    (void)state;
    cfg.nconns = 4;
    cfg.queue_max = N;
    pool_open(&f, &cfg);
    /* Submitted while STARTING: queued, not refused. */
    t0 = aegis_now();
    for (i = 0; i < N; i++) {
        const char *v[1];
        snprintf(num[i], sizeof(num[i]), "%d", i);
        v[0] = num[i];
        ev[i].rt = &rt;
        ev[i].want = i + 1;
        assert_int_equal(
            ctl_db_exec_params(f.db, "SELECT $1::int + 1", 1, v, NULL, NULL, 0, val_cb, &ev[i]), 0);
    }
    ctl_db_stats(f.db, &st);
    assert_int_equal(st.queued, N);
    g_rt = &rt;
    g_rt_target = N;
    assert_int_equal(ctl_loop_run_until(f.loop, rt_done, NULL, WAIT), 0);
    fprintf(stderr, "bench: %d parameterized round trips, pipelined over 4 connections, %.1f ms\n",
            N, (double)(aegis_now() - t0) / 1e6);
    /* Every connection comes up (the first ones may have done all the work). */
    assert_int_equal(ctl_loop_run_until(f.loop, all_ready, &f, WAIT), 0);
    assert_int_equal(rt.bad, 0);
    ctl_db_stats(f.db, &st);
    assert_int_equal(st.completed, N);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.conns_ready, 4);
    assert_int_equal(f.ev.up, 1);
    assert_int_equal(f.ev.down, 0);
    pool_close(&f);
}

/* ---- bounded queue --------------------------------------------------------------------- */

static void count_cb(int rv, const struct ctl_db_result *res, void *ud)
{
    struct rt *rt = ud;

    (void)res;
    rt->done++;
    if (rv != 0)
        rt->bad++;
}

static void full_queue_fails_fast(void **state)
{
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct ctl_db_stats st;
    struct rt rt = {0, 0};
    int i;

    (void)state;
    cfg.nconns = 2;
    cfg.queue_max = 8;
    pool_open(&f, &cfg);
    assert_int_equal(ctl_loop_run_until(f.loop, is_up, &f, WAIT), 0);
    for (i = 0; i < 8; i++)
        assert_int_equal(ctl_db_exec(f.db, "SELECT pg_sleep(0.01)", count_cb, &rt), 0);
    /* The ninth is refused at once, without a callback: the caller answers UNAVAILABLE. */
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", count_cb, &rt), AEGIS_ERR_LIMIT);
    assert_int_equal(ctl_db_retry_hint(f.db), CTL_DB_OVERLOAD_RETRY);
    ctl_db_stats(f.db, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.queued, 8);
    g_rt = &rt;
    g_rt_target = 8;
    assert_int_equal(ctl_loop_run_until(f.loop, rt_done, NULL, WAIT), 0);
    assert_int_equal(rt.bad, 0);
    assert_int_equal(rt.done, 8);
    /* Room again. */
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", count_cb, &rt), 0);
    g_rt_target = 9;
    assert_int_equal(ctl_loop_run_until(f.loop, rt_done, NULL, WAIT), 0);
    pool_close(&f);
}

/* ---- prepared statements, binary values, SQL errors, rollback --------------------------- */

struct one {
    int done;
    int rv;
    char sqlstate[8];
    unsigned char val[64];
    int len;
    uint64_t tuples;
};

static void one_cb(int rv, const struct ctl_db_result *res, void *ud)
{
    struct one *o = ud;

    o->done = 1;
    o->rv = rv;
    o->len = -1;
    o->tuples = ctl_db_result_cmd_tuples(res);
    snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", res ? ctl_db_result_sqlstate(res) : "");
    if (rv == 0 && ctl_db_result_ntuples(res) > 0 && !ctl_db_result_isnull(res, 0, 0)) {
        o->len = ctl_db_result_length(res, 0, 0);
        if (o->len > (int)sizeof(o->val))
            o->len = (int)sizeof(o->val);
        memcpy(o->val, ctl_db_result_value(res, 0, 0), (size_t)o->len);
    }
}

static int one_done(void *ud)
{
    return ((struct one *)ud)->done;
}

static void run_one(struct fixture *f, struct one *o)
{
    assert_int_equal(ctl_loop_run_until(f->loop, one_done, o, WAIT), 0);
}

enum { ST_PUT, ST_GET };
static const struct ctl_db_statement kv_stmts[] = {
    {"kv_put", "INSERT INTO kv (k, v) VALUES ($1, $2)", 2},
    {"kv_get", "SELECT v FROM kv WHERE k = $1", 1},
};

static void prepared_statements_and_errors(void **state)
{
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    const unsigned char blob[5] = {0x00, 0x01, 0xff, 0x00, 0x7f};
    const char *vals[2];
    int lens[2] = {0, 5}, fmts[2] = {0, 1};
    struct one o;

    (void)state;
    assert_int_equal(
        test_query(test_dsn(), "CREATE TABLE kv (k int PRIMARY KEY, v bytea)", NULL, 0), 0);
    cfg.nconns = 1; /* one session: the rollback check below must land on it */
    cfg.statements = kv_stmts;
    cfg.nstatements = 2;
    pool_open(&f, &cfg);

    vals[0] = "1";
    vals[1] = (const char *)blob;
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec_prepared(f.db, ST_PUT, 2, vals, lens, fmts, 0, one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.tuples, 1);

    /* Binary result: the bytes come back exactly, NULs included. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec_prepared(f.db, ST_GET, 1, vals, NULL, NULL, 1, one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.len, 5);
    assert_memory_equal(o.val, blob, 5);

    /* Wrong parameter count or statement index: refused before queueing. */
    assert_int_equal(ctl_db_exec_prepared(f.db, ST_GET, 2, vals, NULL, NULL, 0, one_cb, &o),
                     -EINVAL);
    assert_int_equal(ctl_db_exec_prepared(f.db, 7, 0, NULL, NULL, NULL, 0, one_cb, &o), -EINVAL);

    /* Duplicate key: AEGIS_ERR_DATABASE with the SQLSTATE. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec_prepared(f.db, ST_PUT, 2, vals, lens, fmts, 0, one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, AEGIS_ERR_DATABASE);
    assert_string_equal(o.sqlstate, "23505");

    /* A failed multi-statement string leaves an aborted transaction; the pool rolls it back,
     * so the insert is gone and the session is usable. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(
        ctl_db_exec(f.db, "BEGIN; INSERT INTO kv VALUES (2, 'x'); SELECT 1/0; COMMIT", one_cb, &o),
        0);
    run_one(&f, &o);
    assert_int_equal(o.rv, AEGIS_ERR_DATABASE);
    assert_string_equal(o.sqlstate, "22012");
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec(f.db, "SELECT count(*) FROM kv", one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.len, 1);
    assert_memory_equal(o.val, "1", 1);

    /* A transaction left open on purpose is rolled back too. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec(f.db, "BEGIN; INSERT INTO kv VALUES (3, 'y')", one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec(f.db, "SELECT count(*) FROM kv", one_cb, &o), 0);
    run_one(&f, &o);
    assert_memory_equal(o.val, "1", 1);
    pool_close(&f);
}

/* A statement that cannot be prepared keeps the pool from coming up, and says why. */
static void bad_prepared_statement_keeps_pool_down(void **state)
{
    static const struct ctl_db_statement bad[] = {{"bad", "SELECT * FROM no_such_table", 0}};
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};

    (void)state;
    cfg.nconns = 1;
    cfg.statements = bad;
    cfg.nstatements = 1;
    cfg.backoff_base = 20 * AEGIS_NS_PER_MS;
    cfg.backoff_max = 50 * AEGIS_NS_PER_MS;
    pool_open(&f, &cfg);
    assert_int_equal(ctl_loop_run_until(f.loop, is_up, &f, 300 * AEGIS_NS_PER_MS),
                     AEGIS_ERR_TIMEOUT);
    assert_int_equal(f.ev.down, 1);
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", NULL, NULL), AEGIS_ERR_UNAVAILABLE);
    pool_close(&f);
}

/* ---- COPY -------------------------------------------------------------------------------- */

static void copy_100k_telemetry_rows(void **state)
{
    enum { ROWS = 100000 };
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct ctl_copybuf b;
    struct one o;
    aegis_tstamp now = aegis_wallclock(), t0;
    const unsigned char body[4] = {0xde, 0xad, 0x00, 0x01};
    int i;

    (void)state;
    ctl_copybuf_init(&b, NULL, 0);
    for (i = 0; i < ROWS; i++) {
        assert_int_equal(ctl_copybuf_cstr(&b, (i & 1) ? "00000000-0000-4000-8000-000000000001"
                                                      : "00000000-0000-4000-8000-000000000002"),
                         0);
        assert_int_equal(ctl_copybuf_int(&b, i / 1000), 0);
        assert_int_equal(ctl_copybuf_int(&b, i % 1000), 0);
        assert_int_equal(ctl_copybuf_timestamp(&b, now - (aegis_tstamp)(i % 1000) * 1000), 0);
        assert_int_equal(ctl_copybuf_cstr(&b, (i % 3) ? "metric" : "event"), 0);
        assert_int_equal(ctl_copybuf_cstr(&b, "rule\thits\\n"), 0);
        assert_int_equal(ctl_copybuf_double(&b, i * 0.5), 0);
        assert_int_equal(
            ctl_copybuf_cstr(&b, (i % 7) ? NULL : "{\"rule\": 7, \"dir\": \"egress\"}"), 0);
        assert_int_equal(ctl_copybuf_bytea(&b, body, sizeof(body)), 0);
        assert_int_equal(ctl_copybuf_end_row(&b), 0);
    }
    assert_int_equal(b.rows, ROWS);

    cfg.nconns = 2;
    pool_open(&f, &cfg);
    memset(&o, 0, sizeof(o));
    t0 = aegis_now();
    assert_int_equal(ctl_db_copy_in(f.db, CTL_SQL_TELEMETRY_COPY, b.data, b.len, one_cb, &o), 0);
    run_one(&f, &o);
    fprintf(stderr, "bench: COPY of %d telemetry rows (%.1f MB) in %.1f ms\n", ROWS,
            (double)b.len / 1e6, (double)(aegis_now() - t0) / 1e6);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.tuples, ROWS); /* all new */
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM telemetry"), ROWS);
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM telemetry_default"), 0);
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM telemetry WHERE name = "
                                               "E'rule\\thits\\\\n' AND body = '\\xdead0001'"),
                     ROWS);
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM telemetry WHERE "
                                               "attrs->>'dir' = 'egress'"),
                     (ROWS + 6) / 7);

    /* The agent re-sends the same batches (it never saw the summary): nothing is doubled. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_copy_in(f.db, CTL_SQL_TELEMETRY_COPY, b.data, b.len, one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.tuples, 0);
    assert_int_equal(test_query_ll(test_dsn(), "SELECT count(*) FROM telemetry"), ROWS);

    /* Malformed data: the whole batch is refused, nothing half-loaded, session reusable. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_copy_in(f.db, CTL_SQL_TELEMETRY_COPY, "not\ta\trow\n", 10, one_cb, &o),
                     0);
    run_one(&f, &o);
    assert_int_equal(o.rv, AEGIS_ERR_DATABASE);
    assert_string_equal(o.sqlstate, "22P02"); /* invalid text representation (uuid) */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", one_cb, &o), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, 0);
    ctl_copybuf_free(&b);
    pool_close(&f);
}

/* ---- LISTEN/NOTIFY between two pools ("instances") -------------------------------------- */

struct inbox {
    int n;
    char last[256];
    int agents;
    char agent_payload[512];
};

static void on_note(const char *channel, const char *payload, void *ud)
{
    struct inbox *in = ud;

    if (strcmp(channel, CTL_CHANNEL_AGENTS) == 0) {
        in->agents++;
        snprintf(in->agent_payload, sizeof(in->agent_payload), "%s", payload);
        return;
    }
    in->n++;
    snprintf(in->last, sizeof(in->last), "%s", payload);
}

struct two {
    struct ctl_db *a;
    struct ctl_db *b;
    struct inbox *ia;
    struct inbox *ib;
};

static int both_listening(void *ud)
{
    struct two *t = ud;
    return ctl_db_listening(t->a) && ctl_db_listening(t->b);
}

static int b_got_one(void *ud)
{
    struct two *t = ud;
    return t->ib->n >= 1 && t->ia->n >= 1;
}

static int b_got_agent(void *ud)
{
    return ((struct two *)ud)->ib->agents >= 1;
}

static void listen_notify_between_two_pools(void **state)
{
    struct ctl_loop *loop;
    struct ctl_db *a, *b;
    struct ctl_db_config cfg = {0};
    struct test_events ea = {0}, eb = {0};
    struct inbox ia = {0}, ib = {0};
    struct two t;
    struct one o;
    aegis_tstamp t0;

    (void)state;
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    cfg.conninfo = test_dsn();
    cfg.nconns = 1;
    cfg.listener = 1;
    cfg.log = &test_log;
    cfg.on_event = test_on_event;
    cfg.user_data = &ea;
    assert_int_equal(ctl_db_new(loop, &cfg, NULL, &a), 0);
    cfg.user_data = &eb;
    assert_int_equal(ctl_db_new(loop, &cfg, NULL, &b), 0);
    assert_int_equal(ctl_db_listen(a, "aegis_test", on_note, &ia), 0);
    assert_int_equal(ctl_db_listen(b, "aegis_test", on_note, &ib), 0);
    assert_int_equal(ctl_db_listen(b, CTL_CHANNEL_AGENTS, on_note, &ib), 0);
    assert_int_equal(ctl_db_listen(b, "", on_note, &ib), -EINVAL);
    t.a = a;
    t.b = b;
    t.ia = &ia;
    t.ib = &ib;
    assert_int_equal(ctl_loop_run_until(loop, both_listening, &t, WAIT), 0);
    assert_int_equal(eb.restored, 1);

    t0 = aegis_now();
    assert_int_equal(ctl_db_notify(a, "aegis_test", "revoke 42", NULL, NULL), 0);
    assert_int_equal(ctl_loop_run_until(loop, b_got_one, &t, 5 * AEGIS_NS_PER_S), 0);
    fprintf(stderr, "bench: NOTIFY from pool A reached pool B in %.2f ms\n",
            (double)(aegis_now() - t0) / 1e6);
    assert_string_equal(ib.last, "revoke 42");
    assert_string_equal(ia.last, "revoke 42");

    /* The agents trigger notifies every instance of an enrollment. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(
        ctl_db_exec(a,
                    "INSERT INTO agents (id, host_id, hostname, spki_sha256, machine_id_hash, "
                    "version) VALUES ('11111111-1111-4111-8111-111111111111', 'h1', 'host1', "
                    "sha256('k1'), sha256('m1'), '1.0.0')",
                    one_cb, &o),
        0);
    assert_int_equal(ctl_loop_run_until(loop, b_got_agent, &t, 5 * AEGIS_NS_PER_S), 0);
    assert_int_equal(o.rv, 0);
    assert_non_null(strstr(ib.agent_payload, "11111111-1111-4111-8111-111111111111"));
    assert_non_null(strstr(ib.agent_payload, "\"status\" : \"enrolled\""));
    assert_int_equal(ia.agents, 0); /* a did not subscribe to that channel */

    ctl_db_del(a);
    ctl_db_del(b);
    ctl_loop_del(loop);
}

/* ---- an unreachable database: fail fast ------------------------------------------------- */

static int is_down(void *ud)
{
    return ((struct fixture *)ud)->ev.down > 0;
}

static void unreachable_database_fails_fast(void **state)
{
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct ctl_db_stats st;
    struct one o;

    (void)state;
    cfg.conninfo = "host=/nonexistent-aegis-socket-dir port=1 dbname=x";
    cfg.nconns = 2;
    cfg.backoff_base = 10 * AEGIS_NS_PER_MS;
    cfg.backoff_max = 20 * AEGIS_NS_PER_MS;
    pool_open(&f, &cfg);
    /* Queued while starting, then failed with UNAVAILABLE once every connection has tried. */
    memset(&o, 0, sizeof(o));
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", one_cb, &o), 0);
    assert_int_equal(ctl_loop_run_until(f.loop, is_down, &f, WAIT), 0);
    run_one(&f, &o);
    assert_int_equal(o.rv, AEGIS_ERR_UNAVAILABLE);
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", one_cb, &o), AEGIS_ERR_UNAVAILABLE);
    /* Down: the hint covers the next reconnect (at most 20 ms away here) plus the base. */
    assert_true(ctl_db_retry_hint(f.db) >= CTL_DB_OVERLOAD_RETRY);
    assert_true(ctl_db_retry_hint(f.db) <= CTL_DB_OVERLOAD_RETRY + 20 * AEGIS_NS_PER_MS);
    ctl_db_stats(f.db, &st);
    assert_int_equal(st.conns_ready, 0);
    assert_int_equal(st.rejected, 1);
    pool_close(&f);
}

/* ---- allocation failures in ctl_db_new ---------------------------------------------------- */

static void allocation_failures_are_clean(void **state)
{
    struct ctl_loop *loop;
    struct ctl_db_config cfg = {0};
    unsigned long n;
    int ok = 0;

    (void)state;
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    cfg.conninfo = test_dsn();
    cfg.nconns = 2;
    cfg.listener = 1;
    cfg.statements = kv_stmts;
    cfg.nstatements = 2;
    for (n = 1; n < 100 && !ok; n++) {
        struct aegis_failmem fm;
        struct ctl_db *db = NULL;
        int rv;

        aegis_failmem_init(&fm, NULL, n, 0);
        rv = ctl_db_new(loop, &cfg, &fm.mem, &db);
        if (rv == 0) {
            ok = 1;
            ctl_db_del(db);
        } else {
            assert_int_equal(rv, -ENOMEM);
        }
        assert_int_equal(fm.live, 0);
    }
    assert_true(ok);

    /* Submissions that cannot allocate fail with -ENOMEM and leave nothing behind. */
    {
        struct aegis_failmem fm;
        struct ctl_db *db;
        const char *v[1] = {"1"};

        aegis_failmem_init(&fm, NULL, 0, 0);
        assert_int_equal(ctl_db_new(loop, &cfg, &fm.mem, &db), 0);
        fm.fail_at = fm.nalloc + 1;
        fm.fail_after = 1;
        assert_int_equal(ctl_db_exec(db, "SELECT 1", NULL, NULL), -ENOMEM);
        assert_int_equal(ctl_db_exec_prepared(db, ST_GET, 1, v, NULL, NULL, 0, NULL, NULL),
                         -ENOMEM);
        assert_int_equal(ctl_db_listen(db, "ch", on_note, NULL), 0); /* preallocated slots */
        ctl_db_del(db);
        assert_int_equal(fm.live, 0);
    }
    ctl_loop_del(loop);
}

/* ---- a deadlock loser is run again --------------------------------------------------------- */

static int two_ready(void *ud)
{
    struct ctl_db_stats st;

    ctl_db_stats(((struct fixture *)ud)->db, &st);
    return st.conns_ready == 2;
}

static int both_done(void *ud)
{
    struct one *o = ud;
    return o[0].done && o[1].done;
}

/* Two statements take two advisory locks in opposite orders. On their first run (told apart by
 * a sequence, which a rollback does not undo) each waits until the other holds its second lock,
 * so they deadlock for certain; PostgreSQL aborts one with 40P01 and the pool runs it again. */
static void deadlock_loser_is_run_again(void **state)
{
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct ctl_db_stats st;
    struct one o[2];

    (void)state;
    cfg.nconns = 2;
    pool_open(&f, &cfg);
    assert_int_equal(ctl_loop_run_until(f.loop, two_ready, &f, WAIT), 0);
    memset(o, 0, sizeof(o));
    assert_int_equal(
        ctl_db_exec(f.db,
                    "DROP SEQUENCE IF EXISTS dl_seq; CREATE SEQUENCE dl_seq;"
                    " CREATE OR REPLACE FUNCTION dl_cross(a int, b int) RETURNS int"
                    " LANGUAGE plpgsql AS $$ BEGIN"
                    "  PERFORM pg_advisory_xact_lock(a);"
                    "  IF nextval('dl_seq') <= 2 THEN"
                    "   FOR i IN 1..1000 LOOP"
                    "    EXIT WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                    "     AND objid = b AND granted AND pid <> pg_backend_pid());"
                    "    PERFORM pg_sleep(0.01);"
                    "   END LOOP;"
                    "  END IF;"
                    "  PERFORM pg_advisory_xact_lock(b); RETURN 1; END $$",
                    one_cb, &o[0]),
        0);
    assert_int_equal(ctl_loop_run_until(f.loop, one_done, &o[0], WAIT), 0);
    assert_int_equal(o[0].rv, 0);
    memset(o, 0, sizeof(o));
    assert_int_equal(
        ctl_db_exec_params(f.db, "SELECT dl_cross(71, 72)", 0, NULL, NULL, NULL, 0, one_cb, &o[0]),
        0);
    assert_int_equal(
        ctl_db_exec_params(f.db, "SELECT dl_cross(72, 71)", 0, NULL, NULL, NULL, 0, one_cb, &o[1]),
        0);
    assert_int_equal(ctl_loop_run_until(f.loop, both_done, o, WAIT), 0);
    assert_int_equal(o[0].rv, 0);
    assert_int_equal(o[1].rv, 0);
    ctl_db_stats(f.db, &st);
    assert_int_equal(st.conflict_retries, 1);
    pool_close(&f);
}

/* ---- deleting a pool with work in flight ------------------------------------------------ */

static int one_in_flight(void *ud)
{
    struct ctl_db_stats st;

    ctl_db_stats(((struct fixture *)ud)->db, &st);
    return st.in_flight == 1;
}

static void delete_cancels_pending_work(void **state)
{
    struct fixture f = {0};
    struct ctl_db_config cfg = {0};
    struct one slow, queued;

    (void)state;
    cfg.nconns = 1;
    pool_open(&f, &cfg);
    memset(&slow, 0, sizeof(slow));
    memset(&queued, 0, sizeof(queued));
    assert_int_equal(ctl_db_exec(f.db, "SELECT pg_sleep(20)", one_cb, &slow), 0);
    assert_int_equal(ctl_db_exec(f.db, "SELECT 1", one_cb, &queued), 0);
    assert_int_equal(ctl_loop_run_until(f.loop, one_in_flight, &f, WAIT), 0);
    ctl_db_del(f.db);
    f.db = NULL;
    assert_true(slow.done && queued.done);
    assert_int_equal(slow.rv, -ECANCELED);
    assert_int_equal(queued.rv, -ECANCELED);
    pool_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_concurrent_round_trips),
        cmocka_unit_test(full_queue_fails_fast),
        cmocka_unit_test(prepared_statements_and_errors),
        cmocka_unit_test(bad_prepared_statement_keeps_pool_down),
        cmocka_unit_test(copy_100k_telemetry_rows),
        cmocka_unit_test(listen_notify_between_two_pools),
        cmocka_unit_test(unreachable_database_fails_fast),
        cmocka_unit_test(allocation_failures_are_clean),
        cmocka_unit_test(delete_cancels_pending_work),
        cmocka_unit_test(deadlock_loser_is_run_again),
    };
    (void)test_dsn();
    return cmocka_run_group_tests(tests, setup_schema, NULL);
}
