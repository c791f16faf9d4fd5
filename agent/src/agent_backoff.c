#include "agent_backoff.h"

#include <errno.h>
#include <stddef.h>

/* splitmix64 (Steele, Lea, Flood 2014): tiny, full period, good enough for
 * jitter; the security of nothing depends on it. */
static uint64_t splitmix64(void *ud)
{
    uint64_t *s = ud;
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

int agent_backoff_init(struct agent_backoff *b, const struct agent_backoff_config *cfg,
                       agent_backoff_rand_fn rand, void *rand_user_data, uint64_t seed)
{
    if (!b)
        return -EINVAL;
    struct agent_backoff_config c = {0, 0, 0};
    if (cfg)
        c = *cfg;
    if (!c.base)
        c.base = AGENT_BACKOFF_DEFAULT_BASE;
    if (!c.cap)
        c.cap = AGENT_BACKOFF_DEFAULT_CAP;
    if (!c.max_hint)
        c.max_hint = AGENT_BACKOFF_DEFAULT_MAX_HINT;
    if (c.cap < c.base)
        return -EINVAL;
    b->cfg = c;
    b->prng_state = seed;
    if (rand) {
        b->rand = rand;
        b->rand_user_data = rand_user_data;
    } else {
        b->rand = splitmix64;
        b->rand_user_data = &b->prng_state;
    }
    b->attempt = 0;
    return 0;
}

aegis_tstamp agent_backoff_window(const struct agent_backoff *b)
{
    aegis_tstamp w = b->cfg.base;
    for (unsigned i = 0; i < b->attempt && w < b->cfg.cap; i++)
        w = w > b->cfg.cap / 2 ? b->cfg.cap : w * 2;
    return w < b->cfg.cap ? w : b->cfg.cap;
}

aegis_tstamp agent_backoff_next(struct agent_backoff *b, aegis_tstamp retry_after)
{
    /* A rand_user_data that moved with a copied struct would point at the
     * old copy; re-anchor the built-in generator on every call. */
    if (b->rand == splitmix64)
        b->rand_user_data = &b->prng_state;
    aegis_tstamp w = agent_backoff_window(b);
    /* Uniform in [0, w] by multiply-high, which has no modulo bias worth
     * mentioning and no loop. w <= cap < 2^64 - 1 in any sane config. */
    uint64_t r = b->rand(b->rand_user_data);
    aegis_tstamp d = w == UINT64_MAX ? r : (aegis_tstamp)(((unsigned __int128)r * (w + 1)) >> 64);
    /* Saturate: once the window reached the cap, more doubling is pointless,
     * and a bounded counter cannot overflow. */
    if (b->attempt < 64)
        b->attempt++;
    if (retry_after > b->cfg.max_hint)
        retry_after = b->cfg.max_hint;
    return d < retry_after ? retry_after : d;
}

aegis_tstamp agent_backoff_deadline(struct agent_backoff *b, aegis_tstamp now,
                                    aegis_tstamp retry_after)
{
    aegis_tstamp d = agent_backoff_next(b, retry_after);
    return d > AEGIS_TSTAMP_NEVER - now ? AEGIS_TSTAMP_NEVER : now + d;
}

void agent_backoff_reset(struct agent_backoff *b)
{
    b->attempt = 0;
}
