#include <aegis/tstamp.h>

#include <time.h>

static aegis_tstamp read_clock(clockid_t id)
{
    struct timespec ts;
    /* clock_gettime on these two clocks cannot fail on Linux. */
    clock_gettime(id, &ts);
    return (aegis_tstamp)ts.tv_sec * AEGIS_NS_PER_S + (aegis_tstamp)ts.tv_nsec;
}

aegis_tstamp aegis_now(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

aegis_tstamp aegis_wallclock(void)
{
    return read_clock(CLOCK_REALTIME);
}
