/*
 * ctl_loop: the control server's event-loop glue. Only ctl_loop_ev.c includes libev; the
 * database pool and (later) the RPC services see file-descriptor watchers and one-shot timers
 * with nanosecond times.
 *
 * Nothing here is thread-safe: one loop, one thread. Watchers may be started, stopped and
 * re-armed from inside their own callbacks; they must not be deleted from inside them.
 */
#ifndef CTL_LOOP_H
#define CTL_LOOP_H

#include <aegis/mem.h>
#include <aegis/tstamp.h>

struct ctl_loop;
struct ctl_io;
struct ctl_timer;

/* Event bits for ctl_io. */
#define CTL_IO_READ 0x1
#define CTL_IO_WRITE 0x2

typedef void (*ctl_io_cb)(struct ctl_io *io, int events, void *user_data);
typedef void (*ctl_timer_cb)(struct ctl_timer *timer, void *user_data);

/*
 * ctl_loop_new wraps an existing libev loop (`struct ev_loop *`, passed as void * so callers
 * need not include ev.h); NULL means libev's default loop. The loop is borrowed, not owned.
 * Errors: -ENOMEM.
 */
int ctl_loop_new(void *ev_loop, const struct aegis_mem *mem, struct ctl_loop **ploop);
/* ctl_loop_del frees the wrapper (not the libev loop). Accepts NULL. */
void ctl_loop_del(struct ctl_loop *loop);

/* ctl_loop_now returns the monotonic clock in nanoseconds (aegis_now). */
aegis_tstamp ctl_loop_now(const struct ctl_loop *loop);

/*
 * ctl_loop_run_until runs the loop until done(user_data) returns non-zero, checked after every
 * loop iteration, or until timeout nanoseconds have passed. Returns 0 when done,
 * AEGIS_ERR_TIMEOUT, or -EINVAL (NULL loop or done). Meant for tests and start-up/shutdown phases;
 * never call it from inside a callback of the same loop.
 */
int ctl_loop_run_until(struct ctl_loop *loop, int (*done)(void *user_data), void *user_data,
                       aegis_tstamp timeout);

/* ctl_io_new makes a stopped watcher. cb/user_data are copied. Errors: -ENOMEM. */
int ctl_io_new(struct ctl_loop *loop, ctl_io_cb cb, void *user_data, struct ctl_io **pio);
/*
 * ctl_io_set watches fd for events (CTL_IO_READ|CTL_IO_WRITE); events 0 or fd < 0 stops the
 * watcher. Re-arming with the same fd and events is cheap (no system call).
 */
void ctl_io_set(struct ctl_io *io, int fd, int events);
/* ctl_io_del stops and frees the watcher. Accepts NULL. */
void ctl_io_del(struct ctl_io *io);

/* ctl_timer_new makes a stopped one-shot timer. Errors: -ENOMEM. */
int ctl_timer_new(struct ctl_loop *loop, ctl_timer_cb cb, void *user_data,
                  struct ctl_timer **ptimer);
/* ctl_timer_start (re)arms the timer to fire once after `after` nanoseconds. */
void ctl_timer_start(struct ctl_timer *timer, aegis_tstamp after);
void ctl_timer_stop(struct ctl_timer *timer);
/* ctl_timer_active returns non-zero while the timer is armed. */
int ctl_timer_active(const struct ctl_timer *timer);
/* ctl_timer_del stops and frees the timer. Accepts NULL. */
void ctl_timer_del(struct ctl_timer *timer);

#endif
