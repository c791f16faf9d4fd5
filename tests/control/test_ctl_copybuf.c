/* Unit tests for ctl_copybuf.c: COPY text-format encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_copybuf.h"

#include <aegis/err.h>

#include <errno.h>
#include <math.h>
#include <string.h>

static void assert_buf(const struct ctl_copybuf *b, const char *expect)
{
    assert_int_equal(b->len, strlen(expect));
    assert_memory_equal(b->data, expect, b->len);
}

static void escapes_and_separators(void **state)
{
    struct ctl_copybuf b;

    (void)state;
    ctl_copybuf_init(&b, NULL, 0);
    assert_int_equal(ctl_copybuf_cstr(&b, "a\tb\\c\nd\re"), 0);
    assert_int_equal(ctl_copybuf_null(&b), 0);
    assert_int_equal(ctl_copybuf_int(&b, -42), 0);
    assert_int_equal(ctl_copybuf_cstr(&b, NULL), 0);
    assert_int_equal(ctl_copybuf_end_row(&b), 0);
    assert_int_equal(ctl_copybuf_cstr(&b, ""), 0);
    assert_int_equal(ctl_copybuf_end_row(&b), 0);
    assert_buf(&b, "a\\tb\\\\c\\nd\\re\t\\N\t-42\t\\N\n\n");
    assert_int_equal(b.rows, 2);
    ctl_copybuf_free(&b);
}

static void bytea_double_timestamp(void **state)
{
    struct ctl_copybuf b;
    const unsigned char bytes[] = {0x00, 0x0a, 0xff, 0x5c};

    (void)state;
    ctl_copybuf_init(&b, NULL, 0);
    assert_int_equal(ctl_copybuf_bytea(&b, bytes, sizeof(bytes)), 0);
    assert_int_equal(ctl_copybuf_double(&b, 0.1), 0);
    assert_int_equal(ctl_copybuf_double(&b, NAN), 0);
    assert_int_equal(ctl_copybuf_double(&b, -INFINITY), 0);
    /* 2026-11-23 07:00:00.123456789 UTC: microseconds are truncated. */
    assert_int_equal(ctl_copybuf_timestamp(&b, UINT64_C(1795417200123456789)), 0);
    assert_int_equal(ctl_copybuf_end_row(&b), 0);
    assert_buf(&b, "\\\\x000aff5c\t0.10000000000000001\tNaN\t-Infinity\t"
                   "2026-11-23 07:00:00.123456+00\n");
    ctl_copybuf_free(&b);
}

static void limits_and_errors(void **state)
{
    struct ctl_copybuf b;
    char big[64];

    (void)state;
    memset(big, 'x', sizeof(big));
    ctl_copybuf_init(&b, NULL, 32);
    assert_int_equal(ctl_copybuf_end_row(&b), -EINVAL); /* empty row */
    assert_int_equal(ctl_copybuf_text(&b, big, 20), 0);
    assert_int_equal(ctl_copybuf_text(&b, big, 20), AEGIS_ERR_TOO_LARGE);
    /* sticky until reset */
    assert_int_equal(ctl_copybuf_int(&b, 1), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(ctl_copybuf_end_row(&b), AEGIS_ERR_TOO_LARGE);
    assert_true(b.len <= 32);
    ctl_copybuf_reset(&b);
    assert_int_equal(ctl_copybuf_text(&b, "a\0b", 3), AEGIS_ERR_MALFORMED);
    ctl_copybuf_reset(&b);
    assert_int_equal(ctl_copybuf_int(&b, 7), 0);
    assert_int_equal(ctl_copybuf_end_row(&b), 0);
    assert_buf(&b, "7\n");
    ctl_copybuf_free(&b);
}

static void allocation_failure_is_reported(void **state)
{
    struct aegis_failmem fm;
    struct ctl_copybuf b;

    (void)state;
    aegis_failmem_init(&fm, NULL, 1, 1);
    ctl_copybuf_init(&b, &fm.mem, 0);
    assert_int_equal(ctl_copybuf_int(&b, 1), -ENOMEM);
    ctl_copybuf_free(&b);
    assert_int_equal(fm.live, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_and_separators),
        cmocka_unit_test(bytea_double_timestamp),
        cmocka_unit_test(limits_and_errors),
        cmocka_unit_test(allocation_failure_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
