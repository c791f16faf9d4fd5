/* Unit tests for ctl_artcache.c: hits and misses, least recently used evicted first, held
 * chunks never freed under a reader, a full budget of held chunks gives private copies, a
 * zero budget caches nothing, allocation failures are clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_artcache.h"

#include <errno.h>
#include <string.h>

static const uint8_t SHA_A[32] = {1, 2, 3};
static const uint8_t SHA_B[32] = {9, 8, 7};

static void put_release(struct ctl_artcache *c, const uint8_t *sha, uint32_t idx, uint8_t fill,
                        size_t len)
{
    uint8_t buf[256];
    const struct ctl_artchunk *ch;
    memset(buf, fill, sizeof(buf));
    assert_int_equal(ctl_artcache_put(c, sha, idx, buf, len, &ch), 0);
    ctl_artcache_release(c, ch);
}

static void hit_and_miss(void **state)
{
    struct ctl_artcache *c;
    struct ctl_artcache_stats st;
    (void)state;
    assert_int_equal(ctl_artcache_new(NULL, 1024, &c), 0);
    assert_null(ctl_artcache_get(c, SHA_A, 0));
    put_release(c, SHA_A, 0, 0xaa, 100);
    const struct ctl_artchunk *ch = ctl_artcache_get(c, SHA_A, 0);
    assert_non_null(ch);
    assert_int_equal(ch->len, 100);
    assert_int_equal(ch->data[0], 0xaa);
    assert_int_equal(ch->data[99], 0xaa);
    /* Same index of another artifact, another index of the same: misses. */
    assert_null(ctl_artcache_get(c, SHA_B, 0));
    assert_null(ctl_artcache_get(c, SHA_A, 1));
    ctl_artcache_release(c, ch);
    ctl_artcache_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, 100);
    ctl_artcache_del(c);
}

static void least_recent_goes_first(void **state)
{
    struct ctl_artcache *c;
    struct ctl_artcache_stats st;
    (void)state;
    assert_int_equal(ctl_artcache_new(NULL, 300, &c), 0);
    put_release(c, SHA_A, 0, 1, 100);
    put_release(c, SHA_A, 1, 2, 100);
    put_release(c, SHA_A, 2, 3, 100);
    /* Touch 0: 1 is now the coldest. */
    ctl_artcache_release(c, ctl_artcache_get(c, SHA_A, 0));
    put_release(c, SHA_A, 3, 4, 100);
    const struct ctl_artchunk *ch;
    assert_null(ctl_artcache_get(c, SHA_A, 1));
    assert_non_null(ch = ctl_artcache_get(c, SHA_A, 0));
    ctl_artcache_release(c, ch);
    assert_non_null(ch = ctl_artcache_get(c, SHA_A, 3));
    ctl_artcache_release(c, ch);
    ctl_artcache_stats(c, &st);
    assert_int_equal(st.evictions, 1);
    assert_true(st.bytes <= 300);
    ctl_artcache_del(c);
}

static void held_chunks_survive_and_overflow_is_private(void **state)
{
    struct ctl_artcache *c;
    struct ctl_artcache_stats st;
    const struct ctl_artchunk *a, *b, *x;
    uint8_t buf[200];
    (void)state;
    assert_int_equal(ctl_artcache_new(NULL, 200, &c), 0);
    memset(buf, 0x11, sizeof(buf));
    assert_int_equal(ctl_artcache_put(c, SHA_A, 0, buf, 100, &a), 0);
    memset(buf, 0x22, sizeof(buf));
    assert_int_equal(ctl_artcache_put(c, SHA_A, 1, buf, 100, &b), 0);
    /* Budget full of held chunks: a new one is a private copy, nothing held is evicted. */
    memset(buf, 0x33, sizeof(buf));
    assert_int_equal(ctl_artcache_put(c, SHA_B, 0, buf, 100, &x), 0);
    assert_int_equal(x->data[50], 0x33);
    assert_int_equal(a->data[50], 0x11);
    assert_int_equal(b->data[50], 0x22);
    assert_null(ctl_artcache_get(c, SHA_B, 0));
    ctl_artcache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 0);
    ctl_artcache_release(c, x); /* freed (ASan would see a leak otherwise) */
    /* A second reference keeps a chunk through the first release. */
    ctl_artcache_ref(c, a);
    ctl_artcache_release(c, a);
    assert_int_equal(a->data[99], 0x11);
    ctl_artcache_release(c, a);
    ctl_artcache_release(c, b);
    /* Now evictable. */
    put_release(c, SHA_B, 0, 0x44, 150);
    ctl_artcache_stats(c, &st);
    assert_true(st.bytes <= 200);
    assert_int_equal(st.evictions, 2);
    ctl_artcache_del(c);
}

static void zero_budget_caches_nothing(void **state)
{
    struct ctl_artcache *c;
    const struct ctl_artchunk *a;
    uint8_t buf[64] = {5};
    (void)state;
    assert_int_equal(ctl_artcache_new(NULL, 0, &c), 0);
    assert_int_equal(ctl_artcache_put(c, SHA_A, 0, buf, sizeof(buf), &a), 0);
    assert_int_equal(a->data[0], 5);
    assert_null(ctl_artcache_get(c, SHA_A, 0));
    ctl_artcache_release(c, a);
    ctl_artcache_del(c);
}

static void allocation_failures_are_clean(void **state)
{
    (void)state;
    for (unsigned long n = 1; n <= 3; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        struct ctl_artcache *c = NULL;
        const struct ctl_artchunk *a = NULL;
        uint8_t buf[32] = {0};
        int rv = ctl_artcache_new(&fm.mem, 1024, &c);
        if (rv != 0) {
            assert_int_equal(rv, -ENOMEM);
            continue;
        }
        rv = ctl_artcache_put(c, SHA_A, 0, buf, sizeof(buf), &a);
        if (rv == 0)
            ctl_artcache_release(c, a);
        else
            assert_int_equal(rv, -ENOMEM);
        ctl_artcache_del(c);
        assert_int_equal(fm.live, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hit_and_miss),
        cmocka_unit_test(least_recent_goes_first),
        cmocka_unit_test(held_chunks_survive_and_overflow_is_private),
        cmocka_unit_test(zero_budget_caches_nothing),
        cmocka_unit_test(allocation_failures_are_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
