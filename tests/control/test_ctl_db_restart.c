/*
 * PostgreSQL restarts in the middle of traffic (fast shutdown, then immediate shutdown, i.e. a
 * crash): the pool survives; the request in flight fails with AEGIS_ERR_CLOSED (outcome
 * unknown), queued and new requests fail fast with AEGIS_ERR_UNAVAILABLE while the database is
 * down; the pool reconnects by itself; and no write acknowledged as committed is lost, while
 * no write reported as never sent appears.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_db.h"
#include "ctl_test_util.h"

#include <aegis/err.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Writes kept in flight at once (the window of the traffic generator). */
#define WINDOW 8
#define MAX_IDS 2000000

enum outcome { O_NONE = 0, O_PENDING, O_COMMITTED, O_CLOSED, O_UNAVAILABLE, O_OTHER };

struct traffic {
    struct ctl_db *db;
    struct ctl_timer *tick;
    struct test_events ev;
    unsigned char *state; /* per id: enum outcome */
    long next_id;
    int outstanding;
    long committed;
    long closed;
    long unavailable_cb;
    long rejected_unavailable;
    long rejected_limit;
    long other;
    int stop;
    /* the long request parked on one connection across the restart */
    int sleeper_done;
    int sleeper_rv;
    /* restart child */
    int child; /* status pipe of the restart script, or -1 */
    int child_done;
    int child_status;
    long committed_at_restart;
    int downs_at_restart;
    aegis_tstamp script_done_at, down_at, up_at; /* observed at tick resolution (2 ms) */
    int notes;
    char note[64];
    int ups_at_restart;
};

static void write_cb(int rv, const struct ctl_db_result *res, void *ud);

static void top_up(struct traffic *t)
{
    char idbuf[24];
    const char *v[1] = {idbuf};
    int guard;

    for (guard = 0; guard < WINDOW && !t->stop && t->outstanding < WINDOW; guard++) {
        long id = t->next_id;
        int rv;

        assert_true(id < MAX_IDS);
        snprintf(idbuf, sizeof(idbuf), "%ld", id);
        rv = ctl_db_exec_prepared(t->db, 0, 1, v, NULL, NULL, 0, write_cb, (void *)(intptr_t)id);
        if (rv == AEGIS_ERR_UNAVAILABLE) {
            t->rejected_unavailable++;
            return;
        }
        if (rv == AEGIS_ERR_LIMIT) {
            t->rejected_limit++;
            return;
        }
        assert_int_equal(rv, 0);
        t->state[id] = O_PENDING;
        t->next_id++;
        t->outstanding++;
    }
}

static struct traffic *g_t;

static void write_cb(int rv, const struct ctl_db_result *res, void *ud)
{
    struct traffic *t = g_t;
    long id = (long)(intptr_t)ud;

    (void)res;
    assert_int_equal(t->state[id], O_PENDING);
    t->outstanding--;
    switch (rv) {
    case 0:
        t->state[id] = O_COMMITTED;
        t->committed++;
        break;
    case AEGIS_ERR_CLOSED:
        t->state[id] = O_CLOSED;
        t->closed++;
        break;
    case AEGIS_ERR_UNAVAILABLE:
        t->state[id] = O_UNAVAILABLE;
        t->unavailable_cb++;
        break;
    default:
        fprintf(stderr, "write %ld: unexpected %s\n", id, aegis_strerror(rv));
        t->state[id] = O_OTHER;
        t->other++;
    }
}

static void tick_cb(struct ctl_timer *timer, void *ud)
{
    struct traffic *t = ud;

    top_up(t);
    if (t->child >= 0 && !t->child_done) {
        t->child_done = test_child_exited(t->child, &t->child_status);
        if (t->child_done)
            t->script_done_at = aegis_now();
    }
    if (t->child >= 0 && !t->down_at && t->ev.down > t->downs_at_restart)
        t->down_at = aegis_now();
    if (t->child >= 0 && !t->up_at && t->ev.up > t->ups_at_restart)
        t->up_at = aegis_now();
    /* A steady, modest rate keeps the id bookkeeping small. */
    ctl_timer_start(timer, 2 * AEGIS_NS_PER_MS);
}

static int reached(void *ud)
{
    struct traffic *t = ud;
    return t->committed >= 500;
}

static int restarted_and_flowing(void *ud)
{
    struct traffic *t = ud;
    return t->child_done && t->sleeper_done && t->ev.up > t->ups_at_restart &&
           t->committed >= t->committed_at_restart + 500;
}

static int drained(void *ud)
{
    return ((struct traffic *)ud)->outstanding == 0;
}

static void on_note(const char *channel, const char *payload, void *ud)
{
    struct traffic *t = ud;

    (void)channel;
    t->notes++;
    snprintf(t->note, sizeof(t->note), "%s", payload);
}

static int listening_again(void *ud)
{
    struct traffic *t = ud;
    /* LISTEN_RESTORED: once at start, once after each of the two restarts. */
    return ctl_db_listening(t->db) && t->ev.restored >= 3;
}

static int got_note(void *ud)
{
    return ((struct traffic *)ud)->notes > 0;
}

static void sleeper_cb(int rv, const struct ctl_db_result *res, void *ud)
{
    struct traffic *t = ud;

    (void)res;
    t->sleeper_done = 1;
    t->sleeper_rv = rv;
}

/* id_array renders the ids in the given states as a bigint[] literal (malloc'd). */
static char *id_array(const struct traffic *t, int s1, int s2)
{
    size_t cap = (size_t)t->next_id * 12 + 16, len = 0;
    char *buf = malloc(cap);
    long id;

    assert_non_null(buf);
    len += (size_t)snprintf(buf + len, cap - len, "'{-1");
    for (id = 0; id < t->next_id; id++)
        if (t->state[id] == s1 || t->state[id] == s2)
            len += (size_t)snprintf(buf + len, cap - len, ",%ld", id);
    snprintf(buf + len, cap - len, "}'::bigint[]");
    return buf;
}

/* query_with runs head || arr || tail and returns the number it yields. */
static long long query_with(const char *head, const char *arr, const char *tail)
{
    size_t n = strlen(head) + strlen(arr) + strlen(tail) + 1;
    char *sql = malloc(n);
    long long v;

    assert_non_null(sql);
    snprintf(sql, n, "%s%s%s", head, arr, tail);
    v = test_query_ll(test_dsn(), sql);
    free(sql);
    return v;
}

/* check_ledger compares the table with what the pool reported, id by id. */
static void check_ledger(struct traffic *t)
{
    char *committed = id_array(t, O_COMMITTED, O_COMMITTED);
    char *maybe = id_array(t, O_COMMITTED, O_CLOSED);

    /* Every write acknowledged as committed is in the table... */
    assert_int_equal(query_with("SELECT count(*) FROM unnest(", committed,
                                ") AS c(id) WHERE c.id >= 0 AND NOT EXISTS "
                                "(SELECT 1 FROM ledger l WHERE l.id = c.id)"),
                     0);
    /* ...and nothing else is, except writes whose outcome was reported unknown (CLOSED): no
     * write reported as never sent (UNAVAILABLE) reached the table. */
    assert_int_equal(query_with("SELECT count(*) FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM "
                                "unnest(",
                                maybe, ") AS c(id) WHERE c.id = l.id)"),
                     0);
    fprintf(stderr, "ledger: %lld rows, %ld acknowledged, %ld of unknown outcome\n",
            test_query_ll(test_dsn(), "SELECT count(*) FROM ledger"), t->committed, t->closed);
    free(committed);
    free(maybe);
}

static void restart_round(struct traffic *t, struct ctl_loop *loop, const char *mode)
{
    aegis_tstamp t0;
    int rv;

    /* Park a long statement on one connection so a request is surely in flight. */
    t->sleeper_done = 0;
    assert_int_equal(ctl_db_exec(t->db, "SELECT pg_sleep(60)", sleeper_cb, t), 0);
    t->committed_at_restart = t->committed;
    t->ups_at_restart = t->ev.up;
    t->downs_at_restart = t->ev.down;
    t->script_done_at = t->down_at = t->up_at = 0;
    t->child_done = 0;
    t0 = aegis_now();
    t->child = test_pgtmp_spawn("restart", mode);
    rv = ctl_loop_run_until(loop, restarted_and_flowing, t, 60 * AEGIS_NS_PER_S);
    if (rv != 0)
        fprintf(stderr,
                "stuck: child_done=%d sleeper_done=%d up=%d (at restart %d) down=%d "
                "committed=%ld (at restart %ld) outstanding=%d\n",
                t->child_done, t->sleeper_done, t->ev.up, t->ups_at_restart, t->ev.down,
                t->committed, t->committed_at_restart, t->outstanding);
    assert_int_equal(rv, 0);
    assert_true(t->child_status >= 0 && WIFEXITED(t->child_status));
    assert_int_equal(WEXITSTATUS(t->child_status), 0);
    fprintf(stderr,
            "restart (%s): back to +500 commits %.0f ms after the restart began; so far "
            "committed=%ld closed=%ld unavailable_cb=%ld rejected_unavailable=%ld "
            "rejected_limit=%ld\n",
            mode, (double)(aegis_now() - t0) / 1e6, t->committed, t->closed, t->unavailable_cb,
            t->rejected_unavailable, t->rejected_limit);
    fprintf(stderr,
            "bench: restart (%s): pool DOWN at +%.0f ms, UP again at +%.0f ms (outage %.0f ms), "
            "restart script done at +%.0f ms\n",
            mode, (double)(t->down_at - t0) / 1e6, (double)(t->up_at - t0) / 1e6,
            (double)(t->up_at - t->down_at) / 1e6, (double)(t->script_done_at - t0) / 1e6);
    /* The parked request was in flight when the server went away: outcome unknown. */
    assert_int_equal(t->sleeper_rv, AEGIS_ERR_CLOSED);
    t->child = -1;
}

static void restart_in_the_middle_of_traffic(void **state)
{
    static const struct ctl_db_statement stmts[] = {
        {"ledger_put", "INSERT INTO ledger (id) VALUES ($1::bigint)", 1},
    };
    struct ctl_db_config cfg = {0};
    struct ctl_loop *loop;
    struct traffic t;
    struct ctl_db_stats st;

    (void)state;
    memset(&t, 0, sizeof(t));
    t.child = -1;
    g_t = &t;
    t.state = calloc(MAX_IDS, 1);
    assert_non_null(t.state);
    assert_int_equal(test_query(test_dsn(), "CREATE TABLE ledger (id bigint PRIMARY KEY)", NULL, 0),
                     0);
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    cfg.conninfo = test_dsn();
    cfg.nconns = 4;
    cfg.queue_max = 64;
    cfg.statements = stmts;
    cfg.nstatements = 1;
    cfg.backoff_base = 20 * AEGIS_NS_PER_MS;
    cfg.backoff_max = 200 * AEGIS_NS_PER_MS;
    cfg.log = &test_log;
    cfg.on_event = test_on_event;
    cfg.user_data = &t.ev;
    cfg.listener = 1;
    assert_int_equal(ctl_db_new(loop, &cfg, NULL, &t.db), 0);
    assert_int_equal(ctl_db_listen(t.db, "aegis_test", on_note, &t), 0);
    assert_int_equal(ctl_timer_new(loop, tick_cb, &t, &t.tick), 0);
    ctl_timer_start(t.tick, 0);
    assert_int_equal(ctl_loop_run_until(loop, reached, &t, 30 * AEGIS_NS_PER_S), 0);

    restart_round(&t, loop, "fast");
    restart_round(&t, loop, "immediate");

    t.stop = 1;
    assert_int_equal(ctl_loop_run_until(loop, drained, &t, 30 * AEGIS_NS_PER_S), 0);
    ctl_db_stats(t.db, &st);
    fprintf(stderr,
            "final: ids=%ld committed=%ld closed=%ld unavailable_cb=%ld rejected_unavailable=%ld "
            "reconnects=%llu down_events=%d up_events=%d\n",
            t.next_id, t.committed, t.closed, t.unavailable_cb, t.rejected_unavailable,
            (unsigned long long)st.reconnects, t.ev.down, t.ev.up);
    assert_int_equal(t.other, 0);
    assert_true(t.ev.down >= 2);
    assert_true(t.ev.up >= 3);
    assert_true(st.reconnects >= 8); /* 4 connections, twice */
    assert_true(t.closed >= 2);      /* at least the two parked requests */
    /* While the database was down, work was refused fast rather than queued. */
    assert_true(t.rejected_unavailable + t.unavailable_cb > 0);
    check_ledger(&t);

    /* The listener came back after each restart and LISTENs again. */
    assert_int_equal(ctl_loop_run_until(loop, listening_again, &t, 30 * AEGIS_NS_PER_S), 0);
    assert_int_equal(ctl_db_notify(t.db, "aegis_test", "after-restarts", NULL, NULL), 0);
    assert_int_equal(ctl_loop_run_until(loop, got_note, &t, 10 * AEGIS_NS_PER_S), 0);
    assert_string_equal(t.note, "after-restarts");

    ctl_timer_del(t.tick);
    ctl_db_del(t.db);
    ctl_loop_del(loop);
    free(t.state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restart_in_the_middle_of_traffic),
    };
    (void)test_dsn();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
