/*
 * ctl_migrate: versioned schema migrations (DESIGN §6), the pure part.
 *
 * control/sql/NNNN_name.sql files are embedded into the binary at build time (CMake writes
 * ctl_migrations_data.c in the build directory with each file's bytes and SHA-256), so the
 * daemon needs no files at run time. ctl_migrate_plan compares them with the rows of
 * schema_migrations and decides what to apply; ctl_db_migrate (ctl_db_migrate.c) runs the plan
 * against PostgreSQL.
 */
#ifndef CTL_MIGRATE_H
#define CTL_MIGRATE_H

#include <stddef.h>

/* Length of a hex SHA-256 checksum, without the NUL. */
#define CTL_MIGRATE_CHECKSUM_LEN 64
/* Highest version number a file name may carry (four digits). */
#define CTL_MIGRATE_MAX_VERSION 9999u

struct ctl_migration {
    unsigned version;     /* NNNN of the file name, > 0 */
    const char *name;     /* the file name without NNNN_ and .sql */
    const char *checksum; /* lowercase hex SHA-256 of the file's bytes */
    const char *sql;      /* the file's bytes, NUL-terminated */
    size_t sql_len;
};

/* The migrations embedded at build time, ordered by version. */
extern const struct ctl_migration ctl_migrations_embedded[];
extern const size_t ctl_migrations_embedded_count;

/* One row of schema_migrations. */
struct ctl_migration_applied {
    unsigned version;
    const char *name;
    const char *checksum;
};

/*
 * ctl_migrate_validate checks a migration list: versions 1..CTL_MIGRATE_MAX_VERSION strictly
 * increasing, names of [a-z0-9_] (1..63 chars), checksums of 64 lowercase hex digits, SQL
 * present. Returns 0, or AEGIS_ERR_MALFORMED with a message naming the bad entry in err
 * (errlen bytes, always NUL-terminated when errlen > 0).
 */
int ctl_migrate_validate(const struct ctl_migration *m, size_t n, char *err, size_t errlen);

/*
 * ctl_migrate_plan decides which of the n migrations m (validated, ordered) to apply given the
 * na rows already applied (any order). On success *pfirst is the index of the first
 * migration to apply; m[*pfirst..n-1] are all unapplied (*pfirst == n: nothing to do).
 *
 * Errors (message in err):
 *  AEGIS_ERR_STATE  an applied migration's checksum or name differs from the embedded one (the
 *                   file was changed after it was applied); the database has a version this
 *                   binary does not know (it is older than the schema); or a migration older
 *                   than the newest applied one is missing (applying out of order is refused).
 *  -EINVAL          bad arguments.
 */
int ctl_migrate_plan(const struct ctl_migration *m, size_t n, const struct ctl_migration_applied *a,
                     size_t na, size_t *pfirst, char *err, size_t errlen);

#endif
