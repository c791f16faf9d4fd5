/* Helpers shared by the database integration tests (tests/support/pgtmp.sh provides the
 * server). */
#ifndef CTL_TEST_UTIL_H
#define CTL_TEST_UTIL_H

#include "ctl_db.h"
#include "ctl_loop.h"

#include <sys/types.h>

/* test_dsn returns AEGIS_TEST_PG_DSN, or exits 77 (skip) with the reason when unset. */
const char *test_dsn(void);

/* test_migrate applies the embedded migrations to dsn and fails the test on error. */
void test_migrate(const char *dsn);

/* test_pgtmp_spawn starts `pgtmp.sh ACTION $AEGIS_TEST_PGTMP_DIR [ARG]` in the background
 * (the loop keeps running meanwhile) and returns a descriptor for test_child_exited. */
int test_pgtmp_spawn(const char *action, const char *arg);

/* test_child_exited returns 1 once the script has exited (its wait status in *pstatus, -1 if
 * unknown) and closes fd, else 0. Never blocks. */
int test_child_exited(int fd, int *pstatus);

/* A counter of events from a pool. */
struct test_events {
    int up;
    int down;
    int restored;
};
void test_on_event(struct ctl_db *db, enum ctl_db_event ev, void *user_data);

/* test_log is a stderr sink at warn level for the pool under test. */
extern const struct aegis_log test_log;

/* test_query runs sql on dsn through a one-connection pool and copies the first value of the
 * last statement (or the error message) into out. Returns the request's rv. */
int test_query(const char *dsn, const char *sql, char *out, size_t outlen);

/* test_query_ll runs sql and returns its first value as a number (fails the test on error). */
long long test_query_ll(const char *dsn, const char *sql);
#endif
