#include <aegis/mem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

static void default_allocator_works(void **state)
{
    (void)state;
    char *s = aegis_strdup(NULL, "hello");
    assert_non_null(s);
    assert_string_equal(s, "hello");
    s = aegis_realloc(NULL, s, 64);
    assert_non_null(s);
    aegis_free(NULL, s);
    aegis_free(NULL, NULL); /* accepts NULL */
    int *z = aegis_calloc(aegis_mem_default(), 4, sizeof(int));
    assert_non_null(z);
    assert_int_equal(z[3], 0);
    aegis_free(aegis_mem_default(), z);
}

static void failmem_fails_exactly_the_nth(void **state)
{
    (void)state;
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 3, 0);
    void *a = aegis_malloc(&fm.mem, 8);
    void *b = aegis_calloc(&fm.mem, 1, 8);
    void *c = aegis_malloc(&fm.mem, 8); /* third: fails */
    void *d = aegis_malloc(&fm.mem, 8); /* fourth: fine again */
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d);
    assert_int_equal(fm.nalloc, 4);
    assert_int_equal(fm.nfailed, 1);
    assert_int_equal(fm.live, 3);
    aegis_free(&fm.mem, a);
    aegis_free(&fm.mem, b);
    aegis_free(&fm.mem, d);
    assert_int_equal(fm.live, 0);
}

static void failmem_fail_after(void **state)
{
    (void)state;
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 2, 1);
    void *a = aegis_malloc(&fm.mem, 8);
    assert_non_null(a);
    for (int i = 0; i < 5; i++)
        assert_null(aegis_malloc(&fm.mem, 8));
    /* A failed realloc leaves the original block alone. */
    assert_null(aegis_realloc(&fm.mem, a, 64));
    assert_int_equal(fm.live, 1);
    aegis_free(&fm.mem, a);
    assert_int_equal(fm.live, 0);
}

/* Every allocation failure point of a small multi-step routine ends without
 * a leak: the pattern the other modules' allocation-failure tests follow. */
static int build_three(const struct aegis_mem *mem, char ***out)
{
    char **v = aegis_calloc(mem, 3, sizeof(*v));
    if (!v)
        return -1;
    for (int i = 0; i < 3; i++) {
        v[i] = aegis_strdup(mem, "x");
        if (!v[i]) {
            for (int j = 0; j < i; j++)
                aegis_free(mem, v[j]);
            aegis_free(mem, v);
            return -1;
        }
    }
    *out = v;
    return 0;
}

static void every_failure_point_is_leak_free(void **state)
{
    (void)state;
    unsigned long n;
    for (n = 1;; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        char **v = NULL;
        int rv = build_three(&fm.mem, &v);
        if (rv == 0) {
            for (int i = 0; i < 3; i++)
                aegis_free(&fm.mem, v[i]);
            aegis_free(&fm.mem, v);
            assert_int_equal(fm.live, 0);
            break;
        }
        assert_null(v); /* out-parameter untouched on failure */
        assert_int_equal(fm.nfailed, 1);
        assert_int_equal(fm.live, 0);
    }
    assert_int_equal(n, 5); /* 4 allocations: failing #1..#4 all exercised */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_allocator_works),
        cmocka_unit_test(failmem_fails_exactly_the_nth),
        cmocka_unit_test(failmem_fail_after),
        cmocka_unit_test(every_failure_point_is_leak_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
