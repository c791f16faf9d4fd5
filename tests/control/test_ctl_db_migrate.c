/* Integration tests for ctl_db_migrate.c against a real PostgreSQL (tests/support/pgtmp.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_db.h"
#include "ctl_migrate.h"
#include "ctl_test_util.h"

#include <aegis/err.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same key as control/src/ctl_db_migrate.c ("AEGISMIG"). */
#define LOCK_KEY "4703243766114109767"

static char dsn_buf[8][512];

/* fresh_db creates database NAME and returns a DSN for it (later keywords win in libpq). */
static const char *fresh_db(int slot, const char *name)
{
    char sql[128], out[256];

    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    assert_int_equal(test_query(test_dsn(), sql, out, sizeof(out)), 0);
    snprintf(dsn_buf[slot], sizeof(dsn_buf[slot]), "%s dbname=%s", test_dsn(), name);
    return dsn_buf[slot];
}

static int migrate(const char *dsn, const struct ctl_migration *m, size_t n, unsigned *applied,
                   char *err, size_t errlen)
{
    return ctl_db_migrate(dsn, m, n, 20 * AEGIS_NS_PER_S, applied, err, errlen);
}

static void apply_from_empty_then_idempotent(void **state)
{
    const char *dsn = fresh_db(0, "m_empty");
    unsigned applied = 999;
    char err[512] = "";
    int rv;

    (void)state;
    rv = migrate(dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, &applied, err,
                 sizeof(err));
    if (rv)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rv, 0);
    assert_int_equal(applied, ctl_migrations_embedded_count);
    assert_int_equal(test_query_ll(dsn, "SELECT count(*) FROM schema_migrations"),
                     (long long)ctl_migrations_embedded_count);
    /* The schema is there: every table of DESIGN §6 exists and is empty. */
    assert_int_equal(test_query_ll(dsn,
                                   "SELECT count(*) FROM agents, enrollment_tokens, operators, "
                                   "commands, deliveries, artifacts, artifact_assignments, "
                                   "policies, telemetry, audit_log, control_instances"),
                     0);
    /* Daily telemetry partitions were created ahead (yesterday + 8 days). */
    assert_true(test_query_ll(dsn, "SELECT count(*) FROM pg_inherits "
                                   "WHERE inhparent = 'telemetry'::regclass") >= 10);
    assert_int_equal(test_query_ll(dsn, "SELECT telemetry_ensure_partitions(current_date, 3)"), 0);

    applied = 999;
    assert_int_equal(migrate(dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, &applied,
                             err, sizeof(err)),
                     0);
    assert_int_equal(applied, 0);
    assert_int_equal(test_query_ll(dsn, "SELECT count(*) FROM schema_migrations"),
                     (long long)ctl_migrations_embedded_count);
}

struct applier {
    const char *dsn;
    pthread_barrier_t *barrier;
    int rv;
    unsigned applied;
    char err[512];
};

static void *applier_main(void *arg)
{
    struct applier *a = arg;

    pthread_barrier_wait(a->barrier);
    a->rv = migrate(a->dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, &a->applied,
                    a->err, sizeof(a->err));
    return NULL;
}

static void concurrent_appliers_apply_once(void **state)
{
    enum { N = 4 };
    const char *dsn = fresh_db(1, "m_conc");
    pthread_barrier_t barrier;
    pthread_t th[N];
    struct applier a[N];
    unsigned total = 0, winners = 0;
    int i;

    (void)state;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, N), 0);
    for (i = 0; i < N; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        a[i].dsn = dsn;
        a[i].barrier = &barrier;
        assert_int_equal(pthread_create(&th[i], NULL, applier_main, &a[i]), 0);
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (a[i].rv)
            fprintf(stderr, "applier %d: %s\n", i, a[i].err);
        assert_int_equal(a[i].rv, 0);
        total += a[i].applied;
        winners += a[i].applied ? 1u : 0u;
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(winners, 1);
    assert_int_equal(total, ctl_migrations_embedded_count);
    assert_int_equal(test_query_ll(dsn, "SELECT count(*) FROM schema_migrations"),
                     (long long)ctl_migrations_embedded_count);
}

static void changed_or_unknown_migration_refused(void **state)
{
    const char *dsn = fresh_db(2, "m_tamper");
    size_t n = ctl_migrations_embedded_count;
    struct ctl_migration *m = calloc(n, sizeof(*m));
    unsigned applied = 0;
    char err[512] = "";

    (void)state;
    assert_non_null(m);
    assert_true(n >= 2);
    assert_int_equal(migrate(dsn, ctl_migrations_embedded, n, &applied, err, sizeof(err)), 0);

    /* Someone edited 0002 after release: same version, other bytes, other checksum. */
    memcpy(m, ctl_migrations_embedded, n * sizeof(*m));
    m[1].sql = "CREATE TABLE sneaky (a int)";
    m[1].sql_len = strlen(m[1].sql);
    m[1].checksum = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(migrate(dsn, m, n, &applied, err, sizeof(err)), AEGIS_ERR_STATE);
    fprintf(stderr, "expected refusal: %s\n", err);
    {
        char expect[96];
        snprintf(expect, sizeof(expect), "%04u_%s was changed after it was applied", m[1].version,
                 m[1].name);
        assert_non_null(strstr(err, expect));
    }
    assert_int_equal(test_query_ll(dsn, "SELECT count(*) FROM pg_class WHERE relname = 'sneaky'"),
                     0);

    /* An older binary (knows only the first migration) against this newer schema. */
    assert_int_equal(migrate(dsn, ctl_migrations_embedded, 1, &applied, err, sizeof(err)),
                     AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "newer aegis-control"));
    free(m);
}

static void failing_migration_rolls_back_everything(void **state)
{
    const char *dsn = fresh_db(3, "m_fail");
    size_t n = ctl_migrations_embedded_count;
    struct ctl_migration *m = calloc(n + 1, sizeof(*m));
    unsigned applied = 77;
    char err[512] = "";

    (void)state;
    assert_non_null(m);
    memcpy(m, ctl_migrations_embedded, n * sizeof(*m));
    m[n].version = 9000;
    m[n].name = "broken";
    m[n].checksum = "1111111111111111111111111111111111111111111111111111111111111111";
    m[n].sql = "CREATE TABLE half_done (a int); SELECT no_such_function();";
    m[n].sql_len = strlen(m[n].sql);
    assert_int_equal(migrate(dsn, m, n + 1, &applied, err, sizeof(err)), AEGIS_ERR_DATABASE);
    fprintf(stderr, "expected failure: %s\n", err);
    assert_non_null(strstr(err, "9000_broken"));
    assert_non_null(strstr(err, "no_such_function"));
    assert_int_equal(applied, 77);
    /* All or nothing: not even the earlier migrations or schema_migrations remain. */
    assert_int_equal(test_query_ll(dsn, "SELECT count(*) FROM pg_class WHERE relname IN "
                                        "('half_done', 'agents', 'schema_migrations')"),
                     0);
    free(m);
}

static void set_done(int rv, const struct ctl_db_result *res, void *user_data)
{
    (void)res;
    assert_int_equal(rv, 0);
    *(int *)user_data = 1;
}

static int is_done(void *user_data)
{
    return *(int *)user_data;
}

static void lock_held_elsewhere_times_out(void **state)
{
    const char *dsn = fresh_db(4, "m_lock");
    struct ctl_db_config cfg = {0};
    struct ctl_loop *loop;
    struct ctl_db *db;
    char err[512] = "";
    unsigned applied = 0;
    int done = 0;
    aegis_tstamp t0;
    int rv;

    (void)state;
    /* Another "instance" holds the migration lock (a session lock on one pool connection). */
    cfg.conninfo = dsn;
    cfg.nconns = 1;
    cfg.log = &test_log;
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    assert_int_equal(ctl_db_new(loop, &cfg, NULL, &db), 0);
    assert_int_equal(ctl_db_exec(db, "SELECT pg_advisory_lock(" LOCK_KEY ")", set_done, &done), 0);
    assert_int_equal(ctl_loop_run_until(loop, is_done, &done, 10 * AEGIS_NS_PER_S), 0);
    t0 = aegis_now();
    rv = ctl_db_migrate(dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, AEGIS_NS_PER_S,
                        &applied, err, sizeof(err));
    fprintf(stderr, "expected timeout after %.2f s: %s\n", (double)(aegis_now() - t0) / 1e9, err);
    assert_int_equal(rv, AEGIS_ERR_TIMEOUT);
    assert_non_null(strstr(err, "migration lock"));
    ctl_db_del(db); /* closing the session releases its lock */
    ctl_loop_del(loop);
    assert_int_equal(migrate(dsn, ctl_migrations_embedded, ctl_migrations_embedded_count, &applied,
                             err, sizeof(err)),
                     0);
    assert_int_equal(applied, ctl_migrations_embedded_count);
}

static void unreachable_database_is_unavailable(void **state)
{
    char err[512] = "";
    unsigned applied = 0;

    (void)state;
    assert_int_equal(ctl_db_migrate("host=/nonexistent-aegis-socket-dir port=1 dbname=x",
                                    ctl_migrations_embedded, ctl_migrations_embedded_count,
                                    2 * AEGIS_NS_PER_S, &applied, err, sizeof(err)),
                     AEGIS_ERR_UNAVAILABLE);
    assert_non_null(strstr(err, "cannot connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(apply_from_empty_then_idempotent),
        cmocka_unit_test(concurrent_appliers_apply_once),
        cmocka_unit_test(changed_or_unknown_migration_refused),
        cmocka_unit_test(failing_migration_rolls_back_everything),
        cmocka_unit_test(lock_held_elsewhere_times_out),
        cmocka_unit_test(unreachable_database_is_unavailable),
    };
    (void)test_dsn();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
