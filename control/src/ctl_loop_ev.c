/*
 * libev glue (STYLE: libev is touched only here). Converts nanoseconds to libev's double
 * seconds at this boundary only.
 */
#include "ctl_loop.h"

#include <aegis/err.h>

#include <errno.h>
#include <ev.h>
#include <stddef.h>

struct ctl_loop {
    struct ev_loop *ev;
    const struct aegis_mem *mem;
};

struct ctl_io {
    ev_io w; /* first: the libev callback casts back */
    struct ctl_loop *loop;
    ctl_io_cb cb;
    void *user_data;
    int fd;
    int events;
};

struct ctl_timer {
    ev_timer w;
    struct ctl_loop *loop;
    ctl_timer_cb cb;
    void *user_data;
};

static double ns_to_s(aegis_tstamp ns)
{
    return (double)ns / 1e9;
}

int ctl_loop_new(void *ev_loop, const struct aegis_mem *mem, struct ctl_loop **ploop)
{
    struct ctl_loop *loop;

    if (!ploop)
        return -EINVAL;
    loop = aegis_calloc(mem, 1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->ev = ev_loop ? (struct ev_loop *)ev_loop : EV_DEFAULT;
    loop->mem = mem;
    *ploop = loop;
    return 0;
}

void ctl_loop_del(struct ctl_loop *loop)
{
    if (loop)
        aegis_free(loop->mem, loop);
}

aegis_tstamp ctl_loop_now(const struct ctl_loop *loop)
{
    (void)loop;
    return aegis_now();
}

static void deadline_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    *(int *)w->data = 1;
    ev_break(ev, EVBREAK_ONE);
}

int ctl_loop_run_until(struct ctl_loop *loop, int (*done)(void *user_data), void *user_data,
                       aegis_tstamp timeout)
{
    ev_timer deadline;
    int expired = 0;
    int rv = 0;

    if (!loop || !done)
        return -EINVAL;
    ev_timer_init(&deadline, deadline_cb, ns_to_s(timeout), 0.);
    deadline.data = &expired;
    ev_now_update(loop->ev);
    ev_timer_start(loop->ev, &deadline);
    /* Each ev_run(ONCE) handles at least one event or the deadline, so the loop is bounded by
     * the deadline timer. */
    while (!done(user_data)) {
        if (expired) {
            rv = AEGIS_ERR_TIMEOUT;
            break;
        }
        ev_run(loop->ev, EVRUN_ONCE);
    }
    ev_timer_stop(loop->ev, &deadline);
    return rv;
}

static void io_trampoline(struct ev_loop *ev, ev_io *w, int revents)
{
    struct ctl_io *io = (struct ctl_io *)w;
    int events = 0;

    (void)ev;
    if (revents & EV_READ)
        events |= CTL_IO_READ;
    if (revents & EV_WRITE)
        events |= CTL_IO_WRITE;
    io->cb(io, events, io->user_data);
}

int ctl_io_new(struct ctl_loop *loop, ctl_io_cb cb, void *user_data, struct ctl_io **pio)
{
    struct ctl_io *io;

    if (!loop || !cb || !pio)
        return -EINVAL;
    io = aegis_calloc(loop->mem, 1, sizeof(*io));
    if (!io)
        return -ENOMEM;
    io->loop = loop;
    io->cb = cb;
    io->user_data = user_data;
    io->fd = -1;
    ev_init(&io->w, io_trampoline);
    *pio = io;
    return 0;
}

void ctl_io_set(struct ctl_io *io, int fd, int events)
{
    int evs = 0;

    if (fd < 0)
        events = 0;
    if (fd == io->fd && events == io->events && (events == 0 || ev_is_active(&io->w)))
        return;
    ev_io_stop(io->loop->ev, &io->w);
    io->fd = fd;
    io->events = events;
    if (!events)
        return;
    if (events & CTL_IO_READ)
        evs |= EV_READ;
    if (events & CTL_IO_WRITE)
        evs |= EV_WRITE;
    ev_io_set(&io->w, fd, evs);
    ev_io_start(io->loop->ev, &io->w);
}

void ctl_io_del(struct ctl_io *io)
{
    if (!io)
        return;
    ev_io_stop(io->loop->ev, &io->w);
    aegis_free(io->loop->mem, io);
}

static void timer_trampoline(struct ev_loop *ev, ev_timer *w, int revents)
{
    struct ctl_timer *t = (struct ctl_timer *)w;

    (void)ev;
    (void)revents;
    t->cb(t, t->user_data);
}

int ctl_timer_new(struct ctl_loop *loop, ctl_timer_cb cb, void *user_data,
                  struct ctl_timer **ptimer)
{
    struct ctl_timer *t;

    if (!loop || !cb || !ptimer)
        return -EINVAL;
    t = aegis_calloc(loop->mem, 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->loop = loop;
    t->cb = cb;
    t->user_data = user_data;
    ev_init(&t->w, timer_trampoline);
    *ptimer = t;
    return 0;
}

void ctl_timer_start(struct ctl_timer *timer, aegis_tstamp after)
{
    ev_timer_stop(timer->loop->ev, &timer->w);
    /* ev_now may be stale after a long callback; the timer is relative to the real now. */
    ev_now_update(timer->loop->ev);
    ev_timer_set(&timer->w, ns_to_s(after), 0.);
    ev_timer_start(timer->loop->ev, &timer->w);
}

void ctl_timer_stop(struct ctl_timer *timer)
{
    ev_timer_stop(timer->loop->ev, &timer->w);
}

int ctl_timer_active(const struct ctl_timer *timer)
{
    return ev_is_active(&timer->w);
}

void ctl_timer_del(struct ctl_timer *timer)
{
    if (!timer)
        return;
    ev_timer_stop(timer->loop->ev, &timer->w);
    aegis_free(timer->loop->mem, timer);
}
