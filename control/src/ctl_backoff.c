#include "ctl_backoff.h"

void ctl_backoff_init(struct ctl_backoff *b, aegis_tstamp base, aegis_tstamp max)
{
    b->base = base ? base : 1;
    b->max = max < b->base ? b->base : max;
    b->attempt = 0;
}

aegis_tstamp ctl_backoff_ceiling(const struct ctl_backoff *b)
{
    aegis_tstamp c = b->base;
    unsigned i;

    /* Doubling stops at the cap, so at most 64 steps and never an overflow. */
    for (i = 0; i < b->attempt && c < b->max; i++) {
        if (c > b->max / 2) {
            c = b->max;
            break;
        }
        c *= 2;
    }
    return c < b->max ? c : b->max;
}

aegis_tstamp ctl_backoff_next(struct ctl_backoff *b, uint64_t rnd)
{
    aegis_tstamp ceiling = ctl_backoff_ceiling(b);
    aegis_tstamp d;

    d = ceiling == UINT64_MAX ? rnd : rnd % (ceiling + 1);
    if (b->attempt < 64)
        b->attempt++;
    return d;
}

void ctl_backoff_reset(struct ctl_backoff *b)
{
    b->attempt = 0;
}

uint64_t ctl_rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : UINT64_C(0x9E3779B97F4A7C15);

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}
