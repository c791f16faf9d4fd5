#include "agent_backoff.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define S AEGIS_NS_PER_S
#define MS AEGIS_NS_PER_MS

static const struct agent_backoff_config cfg = {
    .base = 100 * MS, .cap = 10 * S, .max_hint = 600 * S};

static void windows_double_up_to_the_cap(void **state)
{
    (void)state;
    struct agent_backoff b;
    assert_int_equal(agent_backoff_init(&b, &cfg, NULL, NULL, 42), 0);
    aegis_tstamp expect = 100 * MS;
    for (int i = 0; i < 80; i++) {
        assert_int_equal(agent_backoff_window(&b), expect);
        aegis_tstamp d = agent_backoff_next(&b, 0);
        assert_true(d <= expect);
        expect = expect * 2 > 10 * S ? 10 * S : expect * 2;
    }
    /* Many failures later, still exactly the cap. */
    assert_int_equal(agent_backoff_window(&b), 10 * S);
}

/* Full jitter: the mean of each attempt's delay is half its window, so the
 * expectation doubles per attempt until the cap. 4000 draws per attempt
 * estimate the mean within a few percent (the seed makes it repeatable). */
static void mean_grows_exponentially(void **state)
{
    (void)state;
    struct agent_backoff b;
    assert_int_equal(agent_backoff_init(&b, &cfg, NULL, NULL, 7), 0);
    double prev = 0;
    for (unsigned attempt = 0; attempt < 9; attempt++) {
        double sum = 0;
        aegis_tstamp lo = UINT64_MAX, hi = 0;
        aegis_tstamp window = 0;
        for (int k = 0; k < 4000; k++) {
            agent_backoff_reset(&b);
            for (unsigned i = 0; i < attempt; i++)
                agent_backoff_next(&b, 0);
            window = agent_backoff_window(&b);
            aegis_tstamp d = agent_backoff_next(&b, 0);
            assert_true(d <= window);
            sum += (double)d;
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        double mean = sum / 4000;
        assert_true(mean > 0.45 * (double)window);
        assert_true(mean < 0.55 * (double)window);
        /* Spread over the whole window, not clustered. */
        assert_true((double)lo < 0.05 * (double)window);
        assert_true((double)hi > 0.95 * (double)window);
        if (attempt > 0 && window < 10 * S)
            assert_true(mean > 1.7 * prev);
        prev = mean;
    }
}

static void retry_after_is_a_floor(void **state)
{
    (void)state;
    struct agent_backoff b;
    assert_int_equal(agent_backoff_init(&b, &cfg, NULL, NULL, 1), 0);
    for (int i = 0; i < 200; i++) {
        /* The hint is honoured even above the backoff cap. */
        aegis_tstamp window = agent_backoff_window(&b);
        aegis_tstamp d = agent_backoff_next(&b, 30 * S);
        assert_true(d >= 30 * S);
        /* It is a floor, not an addition: with a 10 s cap it is exact. */
        assert_true(window <= 10 * S);
        assert_int_equal(d, 30 * S);
    }
    /* Absurd hints are clamped to max_hint. */
    assert_int_equal(agent_backoff_next(&b, 100000 * S), 600 * S);
    /* Deadlines add now and saturate. */
    aegis_tstamp now = 1000 * S;
    assert_true(agent_backoff_deadline(&b, now, 5 * S) >= now + 5 * S);
    assert_int_equal(agent_backoff_deadline(&b, AEGIS_TSTAMP_NEVER - 1, 5 * S), AEGIS_TSTAMP_NEVER);
}

static uint64_t fixed_rand(void *ud)
{
    return *(uint64_t *)ud;
}

static void injected_prng_and_reset(void **state)
{
    (void)state;
    uint64_t r = UINT64_MAX;
    struct agent_backoff b;
    assert_int_equal(agent_backoff_init(&b, &cfg, fixed_rand, &r, 0), 0);
    /* The top of the PRNG range maps to the top of the window... */
    assert_int_equal(agent_backoff_next(&b, 0), 100 * MS);
    assert_int_equal(agent_backoff_next(&b, 0), 200 * MS);
    assert_int_equal(agent_backoff_next(&b, 0), 400 * MS);
    /* ...and zero to zero. */
    r = 0;
    assert_int_equal(agent_backoff_next(&b, 0), 0);
    agent_backoff_reset(&b);
    r = UINT64_MAX;
    assert_int_equal(agent_backoff_next(&b, 0), 100 * MS);

    /* Same seed, same sequence. */
    struct agent_backoff x, y;
    agent_backoff_init(&x, &cfg, NULL, NULL, 99);
    agent_backoff_init(&y, &cfg, NULL, NULL, 99);
    for (int i = 0; i < 20; i++)
        assert_int_equal(agent_backoff_next(&x, 0), agent_backoff_next(&y, 0));
}

static void config(void **state)
{
    (void)state;
    struct agent_backoff b;
    struct agent_backoff_config bad = {.base = 10 * S, .cap = 1 * S};
    assert_int_equal(agent_backoff_init(&b, &bad, NULL, NULL, 0), -EINVAL);
    assert_int_equal(agent_backoff_init(&b, NULL, NULL, NULL, 0), 0);
    assert_int_equal(agent_backoff_window(&b), AGENT_BACKOFF_DEFAULT_BASE);
    for (int i = 0; i < 30; i++)
        assert_true(agent_backoff_next(&b, 0) <= AGENT_BACKOFF_DEFAULT_CAP);
    assert_int_equal(agent_backoff_window(&b), AGENT_BACKOFF_DEFAULT_CAP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(windows_double_up_to_the_cap),
        cmocka_unit_test(mean_grows_exponentially),
        cmocka_unit_test(retry_after_is_a_floor),
        cmocka_unit_test(injected_prng_and_reset),
        cmocka_unit_test(config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
