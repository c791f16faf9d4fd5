#include <aegis/err.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

static void domain_codes_have_messages(void **state)
{
    (void)state;
#define CHECK(name, value, msg)                                                                    \
    assert_int_equal(name, value);                                                                 \
    assert_true((value) <= -1000);                                                                 \
    assert_string_equal(aegis_strerror(name), msg);                                                \
    assert_string_equal(aegis_errname(name), #name);
    AEGIS_ERR_LIST(CHECK)
#undef CHECK
}

static void errno_codes_use_libc_text(void **state)
{
    (void)state;
    assert_string_equal(aegis_strerror(-ENOMEM), "Cannot allocate memory");
    assert_string_equal(aegis_strerror(-EINVAL), "Invalid argument");
    assert_string_equal(aegis_errname(-ENOENT), "ENOENT");
}

static void edge_values(void **state)
{
    (void)state;
    assert_string_equal(aegis_strerror(0), "success");
    assert_string_equal(aegis_strerror(-999999), "unknown error");
    assert_string_equal(aegis_strerror(-1999), "unknown error");
    assert_string_equal(aegis_strerror(42), "unknown error");
    assert_null(aegis_errname(-1999));
    assert_null(aegis_errname(0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(domain_codes_have_messages),
        cmocka_unit_test(errno_codes_use_libc_text),
        cmocka_unit_test(edge_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
