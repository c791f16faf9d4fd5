#include "ctl_test_util.h"

#include "ctl_migrate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

const struct aegis_log test_log = {AEGIS_LOG_WARN, aegis_log_stderr_write, NULL};

const char *test_dsn(void)
{
    const char *dsn = getenv("AEGIS_TEST_PG_DSN");

    if (!dsn || !dsn[0]) {
        fprintf(stderr, "SKIP: AEGIS_TEST_PG_DSN is not set (run through "
                        "tests/support/pgtmp.sh run -- TEST, as ctest does)\n");
        exit(77);
    }
    return dsn;
}

void test_migrate(const char *dsn)
{
    char err[512] = "";
    unsigned applied = 0;
    int rv = ctl_db_migrate(dsn, ctl_migrations_embedded, ctl_migrations_embedded_count,
                            30 * AEGIS_NS_PER_S, &applied, err, sizeof(err));

    if (rv != 0)
        fprintf(stderr, "migrate: %s\n", err);
    assert_int_equal(rv, 0);
}

int test_pgtmp_spawn(const char *action, const char *arg)
{
    const char *sh = getenv("AEGIS_TEST_PGTMP");
    const char *dir = getenv("AEGIS_TEST_PGTMP_DIR");
    int p[2];
    pid_t pid;

    assert_non_null(sh);
    assert_non_null(dir);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* libev's default loop reaps every child on SIGCHLD, so the test cannot waitpid the
         * script itself: this intermediate process does, and reports the status through a
         * pipe. */
        int st = -1;
        pid_t gc;

        signal(SIGCHLD, SIG_DFL);
        close(p[0]);
        gc = fork();
        if (gc == 0) {
            execl("/bin/bash", "bash", sh, action, dir, arg, (char *)NULL);
            _exit(127);
        }
        if (gc > 0) {
            while (waitpid(gc, &st, 0) < 0 && errno == EINTR)
                ;
        }
        if (write(p[1], &st, sizeof(st)) != (ssize_t)sizeof(st))
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    return p[0];
}

int test_child_exited(int fd, int *pstatus)
{
    int st;
    ssize_t n = read(fd, &st, sizeof(st));

    if (n == (ssize_t)sizeof(st)) {
        *pstatus = st;
        close(fd);
        return 1;
    }
    if (n == 0) { /* the reporter died without a word */
        *pstatus = -1;
        close(fd);
        return 1;
    }
    return 0;
}

void test_on_event(struct ctl_db *db, enum ctl_db_event ev, void *user_data)
{
    struct test_events *e = user_data;

    (void)db;
    if (ev == CTL_DB_EVENT_UP)
        e->up++;
    else if (ev == CTL_DB_EVENT_DOWN)
        e->down++;
    else if (ev == CTL_DB_EVENT_LISTEN_RESTORED)
        e->restored++;
}

struct query {
    int done;
    int rv;
    char *out;
    size_t outlen;
};

static void query_cb(int rv, const struct ctl_db_result *res, void *user_data)
{
    struct query *q = user_data;

    q->rv = rv;
    q->done = 1;
    if (!q->outlen)
        return;
    if (rv == 0 && ctl_db_result_ntuples(res) > 0)
        snprintf(q->out, q->outlen, "%s", ctl_db_result_value(res, 0, 0));
    else if (rv != 0 && res)
        snprintf(q->out, q->outlen, "%s: %s", ctl_db_result_sqlstate(res),
                 ctl_db_result_error(res));
    else
        q->out[0] = '\0';
}

static int query_done(void *user_data)
{
    return ((struct query *)user_data)->done;
}

int test_query(const char *dsn, const char *sql, char *out, size_t outlen)
{
    struct ctl_db_config cfg = {0};
    struct ctl_loop *loop;
    struct ctl_db *db;
    struct query q = {0, 0, out, outlen};

    cfg.conninfo = dsn;
    cfg.nconns = 1;
    cfg.log = &test_log;
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    assert_int_equal(ctl_db_new(loop, &cfg, NULL, &db), 0);
    assert_int_equal(ctl_db_exec(db, sql, query_cb, &q), 0);
    assert_int_equal(ctl_loop_run_until(loop, query_done, &q, 30 * AEGIS_NS_PER_S), 0);
    ctl_db_del(db);
    ctl_loop_del(loop);
    return q.rv;
}

long long test_query_ll(const char *dsn, const char *sql)
{
    char out[256] = "";
    int rv = test_query(dsn, sql, out, sizeof(out));

    if (rv != 0)
        fprintf(stderr, "query '%s' failed: %s\n", sql, out);
    assert_int_equal(rv, 0);
    return strtoll(out, NULL, 10);
}
