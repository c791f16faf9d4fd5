/*
 * bench_proc: what the benches read about a process: CPU time, resident memory, and a
 * comparison for sorting samples. Shared by aegis-bench and aegis-bench-fleet.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdint.h>

/* utime + stime of this process in microseconds. */
uint64_t bench_cpu_us_self(void);

/* utime + stime of pid in microseconds; 0 if pid <= 0 or /proc/PID/stat is unreadable. */
uint64_t bench_cpu_us_pid(long pid);

/* VmRSS of pid in bytes (pid <= 0: this process); 0 if unreadable. */
uint64_t bench_rss_bytes(long pid);

/* qsort comparison of two uint64_t, ascending. */
int bench_cmp_u64(const void *a, const void *b);

#endif
