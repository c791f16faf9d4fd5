/* Unit tests for ctl_backoff.c: exponential backoff with full jitter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_backoff.h"

static void ceiling_doubles_then_caps(void **state)
{
    struct ctl_backoff b;
    aegis_tstamp expect = 100;
    unsigned i;

    (void)state;
    ctl_backoff_init(&b, 100, 1000);
    for (i = 0; i < 10; i++) {
        assert_int_equal(ctl_backoff_ceiling(&b), expect < 1000 ? expect : 1000);
        ctl_backoff_next(&b, 0);
        expect *= 2;
    }
    assert_int_equal(ctl_backoff_ceiling(&b), 1000);
    ctl_backoff_reset(&b);
    assert_int_equal(ctl_backoff_ceiling(&b), 100);
}

static void next_stays_within_ceiling(void **state)
{
    struct ctl_backoff b;
    uint64_t rnd = 42;
    aegis_tstamp lo = UINT64_MAX, hi = 0;
    unsigned i;

    (void)state;
    ctl_backoff_init(&b, 1000, 8000);
    for (i = 0; i < 3; i++)
        ctl_backoff_next(&b, 0);
    /* attempt 3: ceiling 8000; 2000 draws spread over [0, 8000]. */
    for (i = 0; i < 2000; i++) {
        struct ctl_backoff c = b;
        aegis_tstamp d = ctl_backoff_next(&c, ctl_rand_next(&rnd));
        assert_true(d <= 8000);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
    }
    /* Full jitter: both ends of the range are reached roughly. */
    assert_true(lo < 800);
    assert_true(hi > 7200);
    /* The extremes of the random input map to the extremes of the range. */
    {
        struct ctl_backoff c = b;
        assert_int_equal(ctl_backoff_next(&c, 8000), 8000);
        c = b;
        assert_int_equal(ctl_backoff_next(&c, 8001), 0);
    }
}

static void huge_values_do_not_overflow(void **state)
{
    struct ctl_backoff b;
    unsigned i;

    (void)state;
    ctl_backoff_init(&b, UINT64_MAX / 3, UINT64_MAX);
    for (i = 0; i < 200; i++)
        ctl_backoff_next(&b, UINT64_MAX);
    assert_int_equal(ctl_backoff_ceiling(&b), UINT64_MAX);
    assert_true(b.attempt <= 64);
    ctl_backoff_init(&b, 0, 0); /* degenerate: clamps to 1 */
    assert_int_equal(ctl_backoff_ceiling(&b), 1);
    ctl_backoff_init(&b, 500, 10); /* max below base is raised */
    assert_int_equal(ctl_backoff_ceiling(&b), 500);
}

static void rand_is_not_constant(void **state)
{
    uint64_t s = 0, a, b;

    (void)state;
    a = ctl_rand_next(&s);
    b = ctl_rand_next(&s);
    assert_true(s != 0);
    assert_true(a != b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ceiling_doubles_then_caps),
        cmocka_unit_test(next_stays_within_ceiling),
        cmocka_unit_test(huge_values_do_not_overflow),
        cmocka_unit_test(rand_is_not_constant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
