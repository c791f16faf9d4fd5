#include "ctl_migrate.h"

#include <aegis/err.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Longest migration name: keeps log lines and the schema_migrations column readable. */
#define NAME_MAX_LEN 63

static int fail(int rv, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int rv, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rv;
}

static int valid_name(const char *s)
{
    size_t i;

    if (!s || !s[0])
        return 0;
    for (i = 0; s[i]; i++) {
        if (i >= NAME_MAX_LEN)
            return 0;
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    }
    return 1;
}

static int valid_checksum(const char *s)
{
    size_t i;

    if (!s)
        return 0;
    for (i = 0; i < CTL_MIGRATE_CHECKSUM_LEN; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return s[i] == '\0';
}

int ctl_migrate_validate(const struct ctl_migration *m, size_t n, char *err, size_t errlen)
{
    size_t i;

    if (!m && n)
        return fail(-EINVAL, err, errlen, "migration list is NULL");
    for (i = 0; i < n; i++) {
        if (m[i].version == 0 || m[i].version > CTL_MIGRATE_MAX_VERSION)
            return fail(AEGIS_ERR_MALFORMED, err, errlen,
                        "migration #%zu has version %u: versions are 1..%u (the NNNN of "
                        "NNNN_name.sql)",
                        i, m[i].version, CTL_MIGRATE_MAX_VERSION);
        if (i > 0 && m[i].version <= m[i - 1].version)
            return fail(AEGIS_ERR_MALFORMED, err, errlen,
                        "migration %04u follows %04u: versions must be unique and increasing "
                        "(rename the file)",
                        m[i].version, m[i - 1].version);
        if (!valid_name(m[i].name))
            return fail(AEGIS_ERR_MALFORMED, err, errlen,
                        "migration %04u has an invalid name: use 1..%d characters of [a-z0-9_]",
                        m[i].version, NAME_MAX_LEN);
        if (!valid_checksum(m[i].checksum))
            return fail(AEGIS_ERR_MALFORMED, err, errlen,
                        "migration %04u_%s has no valid SHA-256 checksum (rebuild)", m[i].version,
                        m[i].name);
        if (!m[i].sql || m[i].sql_len == 0 || strlen(m[i].sql) != m[i].sql_len)
            return fail(AEGIS_ERR_MALFORMED, err, errlen,
                        "migration %04u_%s has no SQL or contains a NUL byte", m[i].version,
                        m[i].name);
    }
    return 0;
}

static const struct ctl_migration *find(const struct ctl_migration *m, size_t n, unsigned version)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m[mid].version == version)
            return &m[mid];
        if (m[mid].version < version)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int ctl_migrate_plan(const struct ctl_migration *m, size_t n, const struct ctl_migration_applied *a,
                     size_t na, size_t *pfirst, char *err, size_t errlen)
{
    unsigned newest = 0;
    size_t i, first;

    if ((!m && n) || (!a && na) || !pfirst)
        return fail(-EINVAL, err, errlen, "invalid arguments");
    for (i = 0; i < na; i++) {
        const struct ctl_migration *e = find(m, n, a[i].version);

        if (!e)
            return fail(AEGIS_ERR_STATE, err, errlen,
                        "the database has migration %04u_%s applied, which this aegis-control "
                        "does not know (it knows up to %04u): run a newer aegis-control",
                        a[i].version, a[i].name ? a[i].name : "?", n ? m[n - 1].version : 0);
        if (!a[i].checksum || strcmp(a[i].checksum, e->checksum) != 0)
            return fail(AEGIS_ERR_STATE, err, errlen,
                        "migration %04u_%s was changed after it was applied (database has "
                        "checksum %.12s..., this build %.12s...): restore the released file and "
                        "put the change in a new migration",
                        e->version, e->name, a[i].checksum ? a[i].checksum : "(null)", e->checksum);
        if (!a[i].name || strcmp(a[i].name, e->name) != 0)
            return fail(AEGIS_ERR_STATE, err, errlen,
                        "migration %04u was applied as '%s' but this build calls it '%s': "
                        "restore the released file name",
                        e->version, a[i].name ? a[i].name : "(null)", e->name);
        if (a[i].version > newest)
            newest = a[i].version;
    }
    /* Everything up to the newest applied version must be applied; the rest is the plan. */
    for (first = 0; first < n && m[first].version <= newest; first++) {
        int applied = 0;

        for (i = 0; i < na && !applied; i++)
            applied = a[i].version == m[first].version;
        if (!applied)
            return fail(AEGIS_ERR_STATE, err, errlen,
                        "migration %04u_%s is not applied but the newer %04u is: renumber it "
                        "after %04u (migrations are applied in order only)",
                        m[first].version, m[first].name, newest, newest);
    }
    *pfirst = first;
    return 0;
}
