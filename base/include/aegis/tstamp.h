/*
 * Time. Everything in Aegis is uint64_t nanoseconds (aegis_tstamp); libev's
 * double seconds appear only in the loop glue. Protocol cores never read the
 * clock themselves: callers pass `now` in.
 */
#ifndef AEGIS_TSTAMP_H
#define AEGIS_TSTAMP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t aegis_tstamp;

#define AEGIS_NS_PER_US UINT64_C(1000)
#define AEGIS_NS_PER_MS UINT64_C(1000000)
#define AEGIS_NS_PER_S UINT64_C(1000000000)
/* A deadline that never comes. */
#define AEGIS_TSTAMP_NEVER UINT64_MAX

/* aegis_now returns CLOCK_MONOTONIC in nanoseconds (for deadlines, timers). */
aegis_tstamp aegis_now(void);

/* aegis_wallclock returns CLOCK_REALTIME in nanoseconds since the Unix epoch
 * (for certificates, command expiry, records that leave the process). */
aegis_tstamp aegis_wallclock(void);

#ifdef __cplusplus
}
#endif
#endif
