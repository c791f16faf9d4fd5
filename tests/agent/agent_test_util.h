/*
 * Helpers shared by the agent's unit tests: throwaway directories and a
 * fault-injecting agent_io table.
 */
#ifndef AGENT_TEST_UTIL_H
#define AGENT_TEST_UTIL_H

#include "agent_io.h"

#include <stddef.h>
#include <stdint.h>

/* agent_test_mkdtemp creates a fresh directory under $TMPDIR (or /tmp) and
 * writes its path to out; aborts the test on failure. */
void agent_test_mkdtemp(char *out, size_t len);

/* agent_test_rmtree removes a directory tree; returns 0 or -errno. */
int agent_test_rmtree(const char *path);

/* Whole-file helpers for tests that damage files on purpose. */
int agent_test_read(const char *path, uint8_t **pdata, size_t *plen);
int agent_test_write(const char *path, const void *data, size_t len);
long agent_test_file_size(const char *path);

enum faultio_op {
    FIO_OPEN,
    FIO_CLOSE,
    FIO_PREAD,
    FIO_PWRITE,
    FIO_FDATASYNC,
    FIO_FSYNC,
    FIO_FTRUNCATE,
    FIO_FSTAT,
    FIO_RENAME,
    FIO_UNLINK,
    FIO_MKDIR,
    FIO_NOPS,
};

/*
 * faultio wraps the default table. Two kinds of fault:
 *  - fail_op/fail_at/fail_errno: the fail_at-th call (1-based) of fail_op
 *    returns -fail_errno without doing anything (with `torn`, a pwrite
 *    first writes half its bytes, like a disk that filled up mid-write);
 *    with `sticky`, every later call of that op fails too.
 *  - crash_at: from the crash_at-th call of any op on, every call fails
 *    with -EIO and does nothing (close still releases the descriptor), like
 *    a process that died at that instant. The file system keeps exactly
 *    what was done before.
 */
struct faultio {
    struct agent_io io; /* hand &f.io to the code under test */
    enum faultio_op fail_op;
    unsigned long fail_at;
    int fail_errno;
    int torn;
    int sticky;
    unsigned long crash_at;
    int crashed;
    unsigned long total;
    unsigned long count[FIO_NOPS];
};

void faultio_init(struct faultio *f);

#endif
