/* Unit tests for ctl_loop_ev.c: fd watchers, one-shot timers, bounded runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_loop.h"

#include <aegis/err.h>

#include <unistd.h>

struct ctx {
    int reads;
    int writes;
    int fired;
    int fd;
};

static int done_read(void *ud)
{
    return ((struct ctx *)ud)->reads > 0;
}

static int done_fired(void *ud)
{
    return ((struct ctx *)ud)->fired > 0;
}

static int never(void *ud)
{
    (void)ud;
    return 0;
}

static void on_io(struct ctl_io *io, int events, void *ud)
{
    struct ctx *c = ud;
    char buf[8];

    if (events & CTL_IO_READ) {
        c->reads++;
        assert_true(read(c->fd, buf, sizeof(buf)) > 0);
        ctl_io_set(io, -1, 0); /* stopping from inside the callback is allowed */
    }
    if (events & CTL_IO_WRITE)
        c->writes++;
}

static void on_timer(struct ctl_timer *t, void *ud)
{
    (void)t;
    ((struct ctx *)ud)->fired++;
}

static void io_watcher_sees_readable_pipe(void **state)
{
    struct ctl_loop *loop;
    struct ctl_io *io;
    struct ctx c = {0};
    int p[2];

    (void)state;
    assert_int_equal(pipe(p), 0);
    c.fd = p[0];
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    assert_int_equal(ctl_io_new(loop, on_io, &c, &io), 0);
    ctl_io_set(io, p[0], CTL_IO_READ);
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(ctl_loop_run_until(loop, done_read, &c, 2 * AEGIS_NS_PER_S), 0);
    assert_int_equal(c.reads, 1);
    /* stopped: more data does not call back */
    assert_int_equal(write(p[1], "y", 1), 1);
    assert_int_equal(ctl_loop_run_until(loop, never, &c, 50 * AEGIS_NS_PER_MS), AEGIS_ERR_TIMEOUT);
    assert_int_equal(c.reads, 1);
    ctl_io_del(io);
    ctl_loop_del(loop);
    close(p[0]);
    close(p[1]);
}

static void timer_fires_once_and_can_stop(void **state)
{
    struct ctl_loop *loop;
    struct ctl_timer *t;
    struct ctx c = {0};
    aegis_tstamp t0;

    (void)state;
    assert_int_equal(ctl_loop_new(NULL, NULL, &loop), 0);
    assert_int_equal(ctl_timer_new(loop, on_timer, &c, &t), 0);
    t0 = aegis_now();
    ctl_timer_start(t, 20 * AEGIS_NS_PER_MS);
    assert_true(ctl_timer_active(t));
    assert_int_equal(ctl_loop_run_until(loop, done_fired, &c, 2 * AEGIS_NS_PER_S), 0);
    assert_true(aegis_now() - t0 >= 19 * AEGIS_NS_PER_MS);
    assert_false(ctl_timer_active(t));
    c.fired = 0;
    ctl_timer_start(t, 10 * AEGIS_NS_PER_MS);
    ctl_timer_stop(t);
    assert_int_equal(ctl_loop_run_until(loop, done_fired, &c, 60 * AEGIS_NS_PER_MS),
                     AEGIS_ERR_TIMEOUT);
    assert_int_equal(c.fired, 0);
    ctl_timer_del(t);
    ctl_timer_del(NULL);
    ctl_io_del(NULL);
    ctl_loop_del(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(io_watcher_sees_readable_pipe),
        cmocka_unit_test(timer_fires_once_and_can_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
