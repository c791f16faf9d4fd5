#include "agent_io.h"
#include "agent_test_util.h"

#include <aegis/err.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* A file system that moves at most 3 bytes per call and interrupts every
 * other call: short transfers and EINTR must be retried transparently. */
struct slow {
    struct agent_io io;
    unsigned calls;
    int stuck; /* pwrite makes no progress at all */
};

static ssize_t slow_pwrite(int fd, const void *buf, size_t len, off_t off, void *ud)
{
    struct slow *s = ud;
    if (s->stuck)
        return 0;
    if (s->calls++ % 2)
        return -EINTR;
    return agent_io_default()->pwrite(fd, buf, len < 3 ? len : 3, off, NULL);
}

static ssize_t slow_pread(int fd, void *buf, size_t len, off_t off, void *ud)
{
    struct slow *s = ud;
    if (s->calls++ % 2)
        return -EINTR;
    return agent_io_default()->pread(fd, buf, len < 3 ? len : 3, off, NULL);
}

static void short_transfers_and_eintr(void **state)
{
    (void)state;
    char dir[512], path[600];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/f", dir);
    struct slow s;
    s.io = *agent_io_default();
    s.io.pwrite = slow_pwrite;
    s.io.pread = slow_pread;
    s.io.user_data = &s;
    s.calls = 0;
    s.stuck = 0;
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    const char msg[] = "twenty-six bytes of text!";
    assert_int_equal(agent_io_write_all(&s.io, fd, msg, sizeof(msg), 5), 0);
    char back[64];
    size_t got = 0;
    assert_int_equal(agent_io_read_full(&s.io, fd, back, sizeof(back), 5, &got), 0);
    assert_int_equal(got, sizeof(msg)); /* stops at end of file */
    assert_memory_equal(back, msg, sizeof(msg));
    /* A write that never progresses fails instead of spinning. */
    s.stuck = 1;
    assert_int_equal(agent_io_write_all(&s.io, fd, msg, sizeof(msg), 0), -EIO);
    close(fd);
    assert_int_equal(agent_test_rmtree(dir), 0);
}

static void atomic_file_round_trip(void **state)
{
    (void)state;
    char dir[512], path[600];
    agent_test_mkdtemp(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/counter", dir);
    assert_int_equal(agent_io_write_file_atomic(NULL, dir, "counter", "1", 1, 0600), 0);
    assert_int_equal(agent_io_write_file_atomic(NULL, dir, "counter", "22", 2, 0600), 0);
    char buf[8];
    size_t len = 0;
    assert_int_equal(agent_io_read_file(NULL, path, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "22", 2);
    assert_int_equal(agent_io_read_file(NULL, path, buf, 1, &len), AEGIS_ERR_TOO_LARGE);

    char longname[PATH_MAX + 10];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(agent_io_write_file_atomic(NULL, dir, longname, "x", 1, 0600), -ENAMETOOLONG);
    char out[16];
    assert_int_equal(agent_io_path(out, sizeof(out), "/a", "b"), 0);
    assert_string_equal(out, "/a/b");
    assert_int_equal(agent_io_path(out, sizeof(out), "/aaaaaaaaaaaa", "bbbb"), -ENAMETOOLONG);
    assert_int_equal(agent_test_rmtree(dir), 0);
}

/* /proc files report size 0: their content is read to end of file, and a
 * cap that is too small is an error, not a silent truncation. */
static void proc_files_are_read_whole(void **state)
{
    (void)state;
    char buf[65536];
    size_t n = 0;
    assert_int_equal(agent_io_read_file(NULL, "/proc/self/status", buf, sizeof(buf) - 1, &n), 0);
    assert_true(n > 0);
    buf[n] = 0;
    assert_non_null(strstr(buf, "Name:"));
    size_t small = 0;
    assert_int_equal(agent_io_read_file(NULL, "/proc/self/status", buf, 8, &small),
                     AEGIS_ERR_TOO_LARGE);
    assert_int_equal(agent_io_read_file(NULL, "/proc/loadavg", buf, sizeof(buf), &n), 0);
    assert_true(n > 0);
}

static void errmsg_formats_and_passes_rv(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(agent_errmsg(buf, sizeof(buf), -EIO, "file %s: %d", "x", 7), -EIO);
    assert_string_equal(buf, "file x: 7");
    assert_int_equal(agent_errmsg(NULL, 0, AEGIS_ERR_LIMIT, "ignored"), AEGIS_ERR_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(short_transfers_and_eintr),
        cmocka_unit_test(atomic_file_round_trip),
        cmocka_unit_test(proc_files_are_read_whole),
        cmocka_unit_test(errmsg_formats_and_passes_rv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
