#include "agent_state_dir.h"
#include "agent_test_util.h"

#include <aegis/err.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
    char dir[512];
    char state[600];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    agent_test_mkdtemp(f->dir, sizeof(f->dir));
    snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(agent_test_rmtree(f->dir), 0);
    free(f);
    return 0;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void creates_private_directory(void **state)
{
    struct fixture *f = *state;
    struct agent_state_dir *sd = NULL;
    char err[256] = "";
    /* Missing without CREATE: a clear error that says what to do. */
    assert_int_equal(agent_state_dir_open(f->state, 0, NULL, NULL, err, sizeof(err), &sd), -ENOENT);
    assert_null(sd);
    assert_non_null(strstr(err, f->state));
    assert_non_null(strstr(err, "enroll"));

    assert_int_equal(
        agent_state_dir_open(f->state, AGENT_STATE_DIR_CREATE, NULL, NULL, err, sizeof(err), &sd),
        0);
    assert_int_equal(mode_of(f->state), 0700);
    assert_string_equal(agent_state_dir_path(sd), f->state);
    agent_state_dir_del(sd);
}

static void unsafe_modes_and_types(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    assert_int_equal(mkdir(f->state, 0700), 0);

    /* World- or group-writable: refused, mode left alone for inspection. */
    assert_int_equal(chmod(f->state, 0777), 0);
    assert_int_equal(agent_state_dir_ensure(f->state, 0, NULL, err, sizeof(err)),
                     AEGIS_ERR_PERMISSION);
    assert_non_null(strstr(err, "writable"));
    assert_non_null(strstr(err, "0777"));
    assert_non_null(strstr(err, "chmod 0700"));
    assert_int_equal(mode_of(f->state), 0777);
    assert_int_equal(chmod(f->state, 0770), 0);
    assert_int_equal(agent_state_dir_ensure(f->state, 0, NULL, err, sizeof(err)),
                     AEGIS_ERR_PERMISSION);

    /* Merely readable by others: tightened to 0700. */
    assert_int_equal(chmod(f->state, 0755), 0);
    assert_int_equal(agent_state_dir_ensure(f->state, 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(mode_of(f->state), 0700);

    /* A symlink to a good directory is still refused. */
    char link[700];
    snprintf(link, sizeof(link), "%s/link", f->dir);
    assert_int_equal(symlink(f->state, link), 0);
    /* O_DIRECTORY | O_NOFOLLOW on a symlink gives ENOTDIR or ELOOP. */
    int rv = agent_state_dir_ensure(link, 0, NULL, err, sizeof(err));
    assert_true(rv == -ENOTDIR || rv == -ELOOP);
    assert_non_null(strstr(err, "symlink"));

    /* A regular file is not a directory. */
    char file[700];
    snprintf(file, sizeof(file), "%s/file", f->dir);
    assert_int_equal(agent_test_write(file, "x", 1), 0);
    assert_int_equal(agent_state_dir_ensure(file, AGENT_STATE_DIR_CREATE, NULL, err, sizeof(err)),
                     -ENOTDIR);
}

static void wrong_owner_is_refused(void **state)
{
    struct fixture *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can hand a directory to another uid */
    assert_int_equal(mkdir(f->state, 0700), 0);
    assert_int_equal(chown(f->state, 65534, 65534), 0);
    char err[256] = "";
    assert_int_equal(agent_state_dir_ensure(f->state, 0, NULL, err, sizeof(err)),
                     AEGIS_ERR_PERMISSION);
    assert_non_null(strstr(err, "uid 65534"));
    assert_non_null(strstr(err, "chown"));
}

static void lock_names_the_holder(void **state)
{
    struct fixture *f = *state;
    struct agent_state_dir *a = NULL, *b = NULL;
    assert_int_equal(
        agent_state_dir_open(f->state, AGENT_STATE_DIR_CREATE, NULL, NULL, NULL, 0, &a), 0);
    assert_int_equal(agent_state_dir_open(f->state, 0, NULL, NULL, NULL, 0, &b), 0);
    assert_int_equal(agent_state_dir_lock(a, 4242, NULL, 0), 0);
    assert_int_equal(agent_state_dir_lock(a, 4242, NULL, 0), AEGIS_ERR_STATE);
    /* flock is per open file, so a second handle in this process conflicts
     * exactly like a second agent would. */
    char err[256] = "";
    assert_int_equal(agent_state_dir_lock(b, 1, err, sizeof(err)), -EBUSY);
    assert_non_null(strstr(err, "pid 4242"));
    assert_non_null(strstr(err, f->state));
    /* Released when the holder goes away. */
    agent_state_dir_del(a);
    assert_int_equal(agent_state_dir_lock(b, 77, err, sizeof(err)), 0);
    char path[700];
    snprintf(path, sizeof(path), "%s/lock", f->state);
    uint8_t *data;
    size_t len;
    assert_int_equal(agent_test_read(path, &data, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "77\n", 3);
    free(data);
    agent_state_dir_del(b);
}

static void atomic_writes(void **state)
{
    struct fixture *f = *state;
    struct faultio fio;
    faultio_init(&fio);
    struct agent_state_dir *sd = NULL;
    assert_int_equal(
        agent_state_dir_open(f->state, AGENT_STATE_DIR_CREATE, &fio.io, NULL, NULL, 0, &sd), 0);
    assert_int_equal(agent_state_dir_write(sd, "agent.crt", "old", 3, 0600), 0);
    char buf[16];
    size_t len = 0;
    assert_int_equal(agent_state_dir_read(sd, "agent.crt", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "old", 3);
    char path[700], tmp[720];
    snprintf(path, sizeof(path), "%s/agent.crt", f->state);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(mode_of(path), 0600);

    /* Each failure before the rename keeps the old content, leaves no tmp. */
    enum faultio_op ops[] = {FIO_OPEN, FIO_PWRITE, FIO_FDATASYNC, FIO_RENAME};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        fio.fail_op = ops[i];
        fio.fail_at = fio.count[ops[i]] + 1;
        fio.fail_errno = i == 1 ? ENOSPC : EIO;
        fio.torn = 1;
        int rv = agent_state_dir_write(sd, "agent.crt", "new content", 11, 0600);
        assert_int_equal(rv, i == 1 ? -ENOSPC : -EIO);
        fio.fail_at = 0;
        assert_int_equal(agent_state_dir_read(sd, "agent.crt", buf, sizeof(buf), &len), 0);
        assert_int_equal(len, 3);
        assert_memory_equal(buf, "old", 3);
        assert_int_equal(access(tmp, F_OK), -1);
    }
    assert_int_equal(agent_state_dir_write(sd, "agent.crt", "new content", 11, 0600), 0);
    assert_int_equal(agent_state_dir_read(sd, "agent.crt", buf, sizeof(buf), &len), 0);
    assert_memory_equal(buf, "new content", 11);
    assert_int_equal(agent_state_dir_read(sd, "agent.crt", buf, 4, &len), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(agent_state_dir_read(sd, "missing", buf, sizeof(buf), &len), -ENOENT);

    /* Names stay inside the directory. */
    assert_int_equal(agent_state_dir_write(sd, "../escape", "x", 1, 0600), -EINVAL);
    assert_int_equal(agent_state_dir_write(sd, "..", "x", 1, 0600), -EINVAL);
    assert_int_equal(agent_state_dir_write(sd, "", "x", 1, 0600), -EINVAL);
    assert_int_equal(agent_state_dir_read(sd, "a/b", buf, sizeof(buf), &len), -EINVAL);
    agent_state_dir_del(sd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(creates_private_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(unsafe_modes_and_types, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_owner_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_names_the_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(atomic_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
