/* Version comparison (seed 002: downgrades are refused, so this decides). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include "agent_version.h"

#include <errno.h>

#include <cmocka.h>

static int cmp(const char *a, const char *b)
{
    int c = 99;
    assert_int_equal(agent_version_cmp(a, b, &c), 0);
    return c;
}

static void test_order(void **state)
{
    (void)state;
    assert_int_equal(cmp("0.1.0", "0.1.0"), 0);
    assert_true(cmp("0.1.0", "0.1.1") < 0);
    assert_true(cmp("0.2.0", "0.1.9") > 0);
    assert_true(cmp("0.10.0", "0.9.0") > 0); /* numeric, not lexical */
    assert_true(cmp("1", "0.99.99") > 0);
    assert_int_equal(cmp("1.2", "1.2.0"), 0); /* missing parts are 0 */
    assert_true(cmp("1.2", "1.2.0.1") < 0);
    assert_int_equal(cmp("007.1", "7.1"), 0);
}

static void test_malformed(void **state)
{
    (void)state;
    int c;
    const char *bad[] = {
        "",   "1.",   ".1",  "1..2", "v1.2", "1.2-rc1", "1.2.3.4.5.6.7.8.9", "1234567890.1",
        "-1", "1 .2", "1.2 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(agent_version_cmp(bad[i], "1.0", &c), -EINVAL);
        assert_int_equal(agent_version_cmp("1.0", bad[i], &c), -EINVAL);
    }
    assert_int_equal(agent_version_cmp(NULL, "1", &c), -EINVAL);
    assert_int_equal(agent_version_cmp("1", "1", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
