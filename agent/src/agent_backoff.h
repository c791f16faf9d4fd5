/*
 * agent_backoff: reconnect delays with exponential growth and full jitter
 * (DESIGN §5). Attempt n waits a uniformly random time in
 * [0, min(cap, base * 2^n)] -- "full jitter", which spreads a fleet that lost
 * its server at the same instant over the whole window instead of having it
 * return in synchronized waves. A retry-after hint from the server (gRPC
 * UNAVAILABLE with a hint) is a floor: we never retry sooner than it says.
 *
 * Pure logic: no clock reads (now is passed in) and no global randomness
 * (the PRNG is injected), so tests are deterministic.
 */
#ifndef AGENT_BACKOFF_H
#define AGENT_BACKOFF_H

#include <aegis/tstamp.h>

#include <stdint.h>

/* First retry window: long enough not to hammer a server that just went
 * down, short enough that a blip costs a user-invisible second. */
#define AGENT_BACKOFF_DEFAULT_BASE (1 * AEGIS_NS_PER_S)
/* Ceiling of the window: 5 minutes keeps a fleet of thousands from
 * overwhelming a recovering server yet reconnects well within an
 * operator's patience. */
#define AGENT_BACKOFF_DEFAULT_CAP (300 * AEGIS_NS_PER_S)
/* Largest retry-after hint we honour: an authenticated server asking for
 * more than an hour is more likely broken than busy, and an agent that
 * never calls back is unmanageable. */
#define AGENT_BACKOFF_DEFAULT_MAX_HINT (3600 * AEGIS_NS_PER_S)

/* Returns 64 uniformly random bits. */
typedef uint64_t (*agent_backoff_rand_fn)(void *user_data);

struct agent_backoff_config {
    aegis_tstamp base;     /* 0 = default */
    aegis_tstamp cap;      /* 0 = default; must be >= base */
    aegis_tstamp max_hint; /* 0 = default */
};

struct agent_backoff {
    struct agent_backoff_config cfg;
    agent_backoff_rand_fn rand;
    void *rand_user_data;
    uint64_t prng_state; /* used when rand is NULL */
    unsigned attempt;    /* failures since the last reset */
};

/*
 * agent_backoff_init prepares b. rand (may be NULL) supplies randomness;
 * when NULL, a built-in splitmix64 generator seeded with `seed` is used (the
 * program seeds it from getrandom(2); tests pass a constant). Returns 0, or
 * -EINVAL if cap < base.
 */
int agent_backoff_init(struct agent_backoff *b, const struct agent_backoff_config *cfg,
                       agent_backoff_rand_fn rand, void *rand_user_data, uint64_t seed);

/*
 * agent_backoff_next records one more failure and returns the delay before
 * the next attempt: uniform in [0, min(cap, base * 2^attempt)], raised to
 * retry_after (0 = no hint; clamped to max_hint) if that is longer. Never
 * fails.
 */
aegis_tstamp agent_backoff_next(struct agent_backoff *b, aegis_tstamp retry_after);

/* agent_backoff_deadline is now + agent_backoff_next(b, retry_after),
 * saturating at AEGIS_TSTAMP_NEVER. */
aegis_tstamp agent_backoff_deadline(struct agent_backoff *b, aegis_tstamp now,
                                    aegis_tstamp retry_after);

/* agent_backoff_window is the upper bound of the next delay's jitter window
 * (without a hint), for status output and tests. */
aegis_tstamp agent_backoff_window(const struct agent_backoff *b);

/* agent_backoff_reset forgets past failures (call after a successful
 * Authenticate, not merely after the handshake). */
void agent_backoff_reset(struct agent_backoff *b);

#endif
