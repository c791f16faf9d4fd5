/*
 * ctl_backoff: exponential backoff with full jitter (DESIGN §5; AWS "Exponential Backoff and
 * Jitter"): attempt n waits a uniformly random time in [0, min(max, base * 2^n)]. Pure: the
 * caller supplies the random numbers, so tests are deterministic.
 */
#ifndef CTL_BACKOFF_H
#define CTL_BACKOFF_H

#include <aegis/tstamp.h>

#include <stdint.h>

struct ctl_backoff {
    aegis_tstamp base; /* ceiling of the first retry's delay */
    aegis_tstamp max;  /* cap on the ceiling */
    unsigned attempt;  /* failures since the last success */
};

/* ctl_backoff_init sets base and max (max < base is raised to base); attempt = 0. */
void ctl_backoff_init(struct ctl_backoff *b, aegis_tstamp base, aegis_tstamp max);

/* ctl_backoff_ceiling returns min(max, base * 2^attempt) without overflow. */
aegis_tstamp ctl_backoff_ceiling(const struct ctl_backoff *b);

/*
 * ctl_backoff_next returns the delay before the next attempt, a value in [0, ceiling] derived
 * from the 64-bit random number rnd, and counts the attempt.
 */
aegis_tstamp ctl_backoff_next(struct ctl_backoff *b, uint64_t rnd);

/* ctl_backoff_reset forgets past failures (call after a success). */
void ctl_backoff_reset(struct ctl_backoff *b);

/* ctl_rand_next advances a xorshift64* state (never 0) and returns a random number; good for
 * jitter, not for secrets. */
uint64_t ctl_rand_next(uint64_t *state);

#endif
