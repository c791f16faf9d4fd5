/*
 * Start-up schema migrations (DESIGN §6). This is the only blocking libpq code in
 * aegis-control: it runs before the event loop starts, so blocking is harmless here and keeps
 * the all-or-nothing transaction simple.
 *
 * Concurrency: every instance takes the same transaction-scoped advisory lock before it even
 * creates schema_migrations, so instances starting together serialize; the second one then
 * finds everything applied. PostgreSQL DDL is transactional, so a failed migration leaves
 * nothing behind.
 */
#include "ctl_db.h"
#include "ctl_migrate.h"

#include <aegis/err.h>

#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The advisory lock key: "AEGISMIG" read as a big-endian integer, unlikely to collide with
 * another application's locks in a shared database. */
#define MIGRATE_LOCK_KEY "4703243766114109767"
/* Bound on connecting and on waiting for another instance's migration. */
#define MIGRATE_DEFAULT_TIMEOUT (60 * AEGIS_NS_PER_S)
/* schema_migrations rows read at most (versions are four digits). */
#define MIGRATE_MAX_APPLIED 9999

static int fail(int rv, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int rv, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* libpq messages end in a newline; keep the error one line. */
        for (char *p = err; *p; p++)
            if (*p == '\n')
                *p = ' ';
    }
    return rv;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* check maps a command result to 0 or an error with a message naming what. */
static int check(PGresult *res, ExecStatusType want, const char *what, char *err, size_t errlen)
{
    const char *state;
    int rv;

    if (res && PQresultStatus(res) == want)
        return 0;
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0))
        rv = AEGIS_ERR_TIMEOUT; /* lock_not_available (lock_timeout), query_canceled */
    else if (state && strncmp(state, "08", 2) == 0)
        rv = AEGIS_ERR_UNAVAILABLE;
    else
        rv = res ? AEGIS_ERR_DATABASE : -ENOMEM;
    return fail(rv, err, errlen, "%s failed: %s%s%s", what,
                res ? PQresultErrorMessage(res) : "out of memory",
                rv == AEGIS_ERR_TIMEOUT ? " (another instance may be migrating; retry)" : "", "");
}

static int exec_ok(PGconn *pg, const char *sql, ExecStatusType want, const char *what, char *err,
                   size_t errlen)
{
    PGresult *res = PQexec(pg, sql);
    int rv = check(res, want, what, err, errlen);

    PQclear(res);
    return rv;
}

static int apply_all(PGconn *pg, const struct ctl_migration *m, size_t n, unsigned *papplied,
                     char *err, size_t errlen)
{
    struct ctl_migration_applied *a = NULL;
    PGresult *res = NULL;
    size_t na = 0, first, i;
    int rv;

    rv = exec_ok(pg, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", PGRES_TUPLES_OK,
                 "waiting for the migration lock", err, errlen);
    if (rv)
        return rv;
    rv = exec_ok(pg,
                 "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 " version integer PRIMARY KEY,"
                 " name text NOT NULL,"
                 " checksum text NOT NULL,"
                 " applied_at timestamptz NOT NULL DEFAULT now())",
                 PGRES_COMMAND_OK, "creating schema_migrations", err, errlen);
    if (rv)
        return rv;
    res = PQexec(pg, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if ((rv = check(res, PGRES_TUPLES_OK, "reading schema_migrations", err, errlen)) != 0)
        goto out;
    if (PQntuples(res) > MIGRATE_MAX_APPLIED) {
        rv = fail(AEGIS_ERR_STATE, err, errlen,
                  "schema_migrations has %d rows, more than any valid history: inspect it",
                  PQntuples(res));
        goto out;
    }
    na = (size_t)PQntuples(res);
    if (na) {
        a = calloc(na, sizeof(*a));
        if (!a) {
            rv = -ENOMEM;
            goto out;
        }
    }
    for (i = 0; i < na; i++) {
        long v = strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
        a[i].version = v > 0 ? (unsigned)v : 0;
        a[i].name = PQgetvalue(res, (int)i, 1);
        a[i].checksum = PQgetvalue(res, (int)i, 2);
    }
    if ((rv = ctl_migrate_plan(m, n, a, na, &first, err, errlen)) != 0)
        goto out;
    for (i = first; i < n; i++) {
        char what[128];
        char version[16];
        const char *params[3];
        PGresult *r;

        snprintf(what, sizeof(what), "migration %04u_%s", m[i].version, m[i].name);
        /* Several statements in one simple query run inside our open transaction. */
        r = PQexec(pg, m[i].sql);
        rv = check(r, PQresultStatus(r) == PGRES_TUPLES_OK ? PGRES_TUPLES_OK : PGRES_COMMAND_OK,
                   what, err, errlen);
        PQclear(r);
        if (rv)
            goto out;
        snprintf(version, sizeof(version), "%u", m[i].version);
        params[0] = version;
        params[1] = m[i].name;
        params[2] = m[i].checksum;
        r = PQexecParams(pg,
                         "INSERT INTO schema_migrations (version, name, checksum) "
                         "VALUES ($1, $2, $3)",
                         3, NULL, params, NULL, NULL, 0);
        rv = check(r, PGRES_COMMAND_OK, "recording the migration", err, errlen);
        PQclear(r);
        if (rv)
            goto out;
    }
    if (papplied)
        *papplied = (unsigned)(n - first);
out:
    PQclear(res);
    free(a);
    return rv;
}

int ctl_db_migrate(const char *conninfo, const struct ctl_migration *m, size_t n,
                   aegis_tstamp timeout, unsigned *papplied, char *err, size_t errlen)
{
    char tmo_s[32], lock_sql[64];
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {tmo_s, "aegis-control-migrate", conninfo, NULL};
    unsigned applied = 0;
    PGconn *pg;
    int rv;

    if (!conninfo)
        return fail(-EINVAL, err, errlen, "no database connection string");
    if ((rv = ctl_migrate_validate(m, n, err, errlen)) != 0)
        return rv;
    if (!timeout)
        timeout = MIGRATE_DEFAULT_TIMEOUT;
    snprintf(tmo_s, sizeof(tmo_s), "%llu",
             (unsigned long long)((timeout + AEGIS_NS_PER_S - 1) / AEGIS_NS_PER_S));
    /* expand_dbname: the conninfo given wins over the defaults listed before it. */
    pg = PQconnectdbParams(keys, vals, 1);
    if (!pg)
        return fail(-ENOMEM, err, errlen, "out of memory connecting to the database");
    if (PQstatus(pg) != CONNECTION_OK) {
        rv = fail(AEGIS_ERR_UNAVAILABLE, err, errlen,
                  "cannot connect to the database to migrate the schema: %s(check the DSN and "
                  "that PostgreSQL is running)",
                  PQerrorMessage(pg));
        PQfinish(pg);
        return rv;
    }
    PQsetNoticeProcessor(pg, quiet, NULL);
    snprintf(lock_sql, sizeof(lock_sql), "SET lock_timeout = %llu",
             (unsigned long long)(timeout / AEGIS_NS_PER_MS));
    rv = exec_ok(pg, lock_sql, PGRES_COMMAND_OK, "setting lock_timeout", err, errlen);
    if (!rv)
        rv = exec_ok(pg, "BEGIN", PGRES_COMMAND_OK, "BEGIN", err, errlen);
    if (!rv) {
        rv = apply_all(pg, m, n, &applied, err, errlen);
        if (!rv)
            rv = exec_ok(pg, "COMMIT", PGRES_COMMAND_OK, "committing the migrations", err, errlen);
        else
            PQclear(PQexec(pg, "ROLLBACK"));
    }
    PQfinish(pg);
    if (!rv && papplied)
        *papplied = applied;
    return rv;
}
