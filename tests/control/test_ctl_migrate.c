/* Unit tests for ctl_migrate.c (planning) and the build-time SQL embedding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctl_migrate.h"

#include <aegis/err.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUM_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SUM_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SUM_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static const struct ctl_migration three[] = {
    {1, "core", SUM_A, "SELECT 1", 8},
    {2, "more", SUM_B, "SELECT 2", 8},
    {5, "late", SUM_C, "SELECT 5", 8},
};

static void validate_accepts_good_list(void **state)
{
    char err[256];

    (void)state;
    assert_int_equal(ctl_migrate_validate(three, 3, err, sizeof(err)), 0);
    assert_int_equal(ctl_migrate_validate(three, 0, err, sizeof(err)), 0);
}

static void validate_rejects_bad_entries(void **state)
{
    struct ctl_migration m[2];
    char err[256];

    (void)state;
    memcpy(m, three, sizeof(m));
    m[1].version = 1;
    assert_int_equal(ctl_migrate_validate(m, 2, err, sizeof(err)), AEGIS_ERR_MALFORMED);
    assert_non_null(strstr(err, "increasing"));

    memcpy(m, three, sizeof(m));
    m[0].version = 0;
    assert_int_equal(ctl_migrate_validate(m, 2, err, sizeof(err)), AEGIS_ERR_MALFORMED);

    memcpy(m, three, sizeof(m));
    m[1].name = "Bad-Name";
    assert_int_equal(ctl_migrate_validate(m, 2, err, sizeof(err)), AEGIS_ERR_MALFORMED);
    assert_non_null(strstr(err, "0002"));

    memcpy(m, three, sizeof(m));
    m[1].checksum = "abc";
    assert_int_equal(ctl_migrate_validate(m, 2, err, sizeof(err)), AEGIS_ERR_MALFORMED);

    memcpy(m, three, sizeof(m));
    m[1].sql_len = 9; /* claims a byte past the NUL: an embedded NUL */
    assert_int_equal(ctl_migrate_validate(m, 2, err, sizeof(err)), AEGIS_ERR_MALFORMED);
}

static void plan_from_empty_applies_all(void **state)
{
    size_t first = 99;
    char err[256];

    (void)state;
    assert_int_equal(ctl_migrate_plan(three, 3, NULL, 0, &first, err, sizeof(err)), 0);
    assert_int_equal(first, 0);
}

static void plan_partial_and_complete(void **state)
{
    const struct ctl_migration_applied a[] = {{2, "more", SUM_B}, {1, "core", SUM_A}};
    const struct ctl_migration_applied all[] = {
        {1, "core", SUM_A}, {2, "more", SUM_B}, {5, "late", SUM_C}};
    size_t first = 99;
    char err[256];

    (void)state;
    assert_int_equal(ctl_migrate_plan(three, 3, a, 2, &first, err, sizeof(err)), 0);
    assert_int_equal(first, 2);
    assert_int_equal(ctl_migrate_plan(three, 3, all, 3, &first, err, sizeof(err)), 0);
    assert_int_equal(first, 3);
}

static void plan_refuses_changed_migration(void **state)
{
    const struct ctl_migration_applied a[] = {{1, "core", SUM_A}, {2, "more", SUM_C}};
    const struct ctl_migration_applied renamed[] = {{1, "kore", SUM_A}};
    size_t first = 99;
    char err[256];

    (void)state;
    assert_int_equal(ctl_migrate_plan(three, 3, a, 2, &first, err, sizeof(err)), AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "0002_more was changed"));
    assert_int_equal(first, 99); /* out-parameter untouched on failure */
    assert_int_equal(ctl_migrate_plan(three, 3, renamed, 1, &first, err, sizeof(err)),
                     AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "kore"));
}

static void plan_refuses_unknown_and_gaps(void **state)
{
    const struct ctl_migration_applied newer[] = {{1, "core", SUM_A}, {7, "future", SUM_A}};
    const struct ctl_migration_applied gap[] = {{1, "core", SUM_A}, {5, "late", SUM_C}};
    size_t first;
    char err[256];

    (void)state;
    assert_int_equal(ctl_migrate_plan(three, 3, newer, 2, &first, err, sizeof(err)),
                     AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "0007_future"));
    assert_non_null(strstr(err, "newer aegis-control"));
    assert_int_equal(ctl_migrate_plan(three, 3, gap, 2, &first, err, sizeof(err)), AEGIS_ERR_STATE);
    assert_non_null(strstr(err, "0002_more is not applied"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The embedded array must be exactly the control/sql files, in order, byte for byte, with the
 * file's SHA-256 (checked against coreutils' sha256sum). */
static void embedded_matches_source_files(void **state)
{
    char *names[64];
    size_t n = 0, i;
    DIR *d = opendir(CTL_TEST_SQL_DIR);
    struct dirent *e;
    char err[256];

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL && n < 64) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".sql") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    assert_true(n >= 1);
    assert_int_equal(n, ctl_migrations_embedded_count);
    assert_int_equal(ctl_migrate_validate(ctl_migrations_embedded, ctl_migrations_embedded_count,
                                          err, sizeof(err)),
                     0);
    for (i = 0; i < n; i++) {
        const struct ctl_migration *m = &ctl_migrations_embedded[i];
        char path[512], expect_name[128], cmd[600], sum[80];
        FILE *f;
        long len;
        char *buf;

        snprintf(expect_name, sizeof(expect_name), "%04u_%s.sql", m->version, m->name);
        assert_string_equal(names[i], expect_name);
        snprintf(path, sizeof(path), "%s/%s", CTL_TEST_SQL_DIR, names[i]);
        f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        len = ftell(f);
        rewind(f);
        buf = malloc((size_t)len + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        assert_int_equal(m->sql_len, (size_t)len);
        assert_memory_equal(m->sql, buf, (size_t)len);
        assert_int_equal(m->sql[len], '\0');
        free(buf);

        snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
        f = popen(cmd, "r");
        assert_non_null(f);
        assert_non_null(fgets(sum, sizeof(sum), f));
        pclose(f);
        sum[64] = '\0';
        assert_string_equal(m->checksum, sum);
        free(names[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validate_accepts_good_list),
        cmocka_unit_test(validate_rejects_bad_entries),
        cmocka_unit_test(plan_from_empty_applies_all),
        cmocka_unit_test(plan_partial_and_complete),
        cmocka_unit_test(plan_refuses_changed_migration),
        cmocka_unit_test(plan_refuses_unknown_and_gaps),
        cmocka_unit_test(embedded_matches_source_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
