#include <aegis/log.h>
#include <aegis/tstamp.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

struct capture {
    int calls;
    enum aegis_log_level level;
    char line[2048];
};

static void capture_write(enum aegis_log_level level, const char *line, void *ud)
{
    struct capture *c = ud;
    c->calls++;
    c->level = level;
    strncpy(c->line, line, sizeof(c->line) - 1);
}

static int formatted;
static int count_format(void)
{
    formatted++;
    return 7;
}

static void level_filters_before_formatting(void **state)
{
    (void)state;
    struct capture c = {0};
    struct aegis_log log = {AEGIS_LOG_INFO, capture_write, &c};
    formatted = 0;
    AEGIS_LOG(&log, AEGIS_LOG_DEBUG, "x=%d", count_format());
    assert_int_equal(c.calls, 0);
    assert_int_equal(formatted, 0); /* the argument was never evaluated */
    AEGIS_LOG(&log, AEGIS_LOG_WARN, "conn=%d method=%s", count_format(), "/a/b");
    assert_int_equal(c.calls, 1);
    assert_int_equal(formatted, 1);
    assert_int_equal(c.level, AEGIS_LOG_WARN);
    assert_string_equal(c.line, "conn=7 method=/a/b");
    AEGIS_LOG((struct aegis_log *)NULL, AEGIS_LOG_ERROR, "ignored");
}

static void long_lines_are_truncated(void **state)
{
    (void)state;
    struct capture c = {0};
    struct aegis_log log = {AEGIS_LOG_TRACE, capture_write, &c};
    char big[1500];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    aegis_log_emit(&log, AEGIS_LOG_INFO, "%s", big);
    assert_int_equal(strlen(c.line), 1023);
}

static void level_names_round_trip(void **state)
{
    (void)state;
    for (int l = AEGIS_LOG_ERROR; l <= AEGIS_LOG_TRACE; l++) {
        enum aegis_log_level p;
        assert_int_equal(aegis_log_level_parse(aegis_log_level_name((enum aegis_log_level)l), &p),
                         0);
        assert_int_equal((int)p, l);
    }
    enum aegis_log_level p = AEGIS_LOG_INFO;
    assert_int_equal(aegis_log_level_parse("loud", &p), -EINVAL);
    assert_int_equal(p, AEGIS_LOG_INFO);
}

static void clocks_move_forward(void **state)
{
    (void)state;
    aegis_tstamp a = aegis_now(), b = aegis_now();
    assert_true(b >= a);
    /* Wall clock is after 2024-01-01 on any machine that builds this. */
    assert_true(aegis_wallclock() > UINT64_C(1704067200) * AEGIS_NS_PER_S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(level_filters_before_formatting),
        cmocka_unit_test(long_lines_are_truncated),
        cmocka_unit_test(level_names_round_trip),
        cmocka_unit_test(clocks_move_forward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
