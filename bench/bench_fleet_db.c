/*
 * The benchmark's own PostgreSQL connection (libpq lives only in this file): enrolls the
 * pre-issued identities directly with COPY (one transaction, so the control's NOTIFY trigger
 * tells it about all of them at commit) and answers the scenarios' polls of the deliveries
 * and telemetry tables. Calls are synchronous and short; the scenarios poll with deadlines.
 */
#include "bench_fleet.h"

#include <aegis/err.h>
#include <aegis/hex.h>

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fleet_db {
    PGconn *pg;
};

int fleet_db_open(const char *dsn, struct fleet_db **pdb)
{
    struct fleet_db *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    db->pg = PQconnectdb(dsn);
    if (PQstatus(db->pg) != CONNECTION_OK) {
        fprintf(stderr, "%s: cannot connect to PostgreSQL (%s): %s", fleet_prog, dsn,
                PQerrorMessage(db->pg));
        PQfinish(db->pg);
        free(db);
        return AEGIS_ERR_DATABASE;
    }
    *pdb = db;
    return 0;
}

void fleet_db_close(struct fleet_db *db)
{
    if (!db)
        return;
    PQfinish(db->pg);
    free(db);
}

int fleet_db_enroll(struct fleet_db *db, const struct fleet_ident *ids, size_t n)
{
    PGresult *r = PQexec(db->pg, "COPY agents (id, host_id, hostname, spki_sha256,"
                                 " machine_id_hash, version, labels) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        fprintf(stderr, "%s: COPY agents: %s", fleet_prog, PQerrorMessage(db->pg));
        PQclear(r);
        return AEGIS_ERR_DATABASE;
    }
    PQclear(r);
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        char spki[65], mid[65], line[512];
        aegis_hex_encode(ids[i].spki_sha256, 32, spki, sizeof(spki));
        aegis_hex_encode(ids[i].machine_id_hash, 32, mid, sizeof(mid));
        /* COPY text format: bytea as \x..., the backslash itself escaped. */
        int l = snprintf(line, sizeof(line),
                         "%s\t%s\t%s\t\\\\x%s\t\\\\x%s\t%s\t{\"" FLEET_LABEL_KEY
                         "\": \"" FLEET_LABEL_VALUE "\"}\n",
                         ids[i].agent_id, ids[i].host_id, ids[i].host_id, spki, mid,
                         FLEET_AGENT_VERSION);
        if (PQputCopyData(db->pg, line, l) != 1)
            rv = AEGIS_ERR_DATABASE;
    }
    if (PQputCopyEnd(db->pg, rv ? "aborted" : NULL) != 1)
        rv = AEGIS_ERR_DATABASE;
    while ((r = PQgetResult(db->pg)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "%s: COPY agents: %s", fleet_prog, PQresultErrorMessage(r));
            rv = AEGIS_ERR_DATABASE;
        }
        PQclear(r);
    }
    return rv;
}

int fleet_db_row(struct fleet_db *db, const char *sql, const char *param, char out[][64], int ncols)
{
    const char *v[1] = {param};
    PGresult *r = PQexecParams(db->pg, sql, param ? 1 : 0, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) < ncols) {
        fprintf(stderr, "%s: query failed: %s (%s)\n", fleet_prog, PQresultErrorMessage(r), sql);
        PQclear(r);
        return AEGIS_ERR_DATABASE;
    }
    for (int i = 0; i < ncols; i++)
        snprintf(out[i], 64, "%s", PQgetisnull(r, 0, i) ? "" : PQgetvalue(r, 0, i));
    PQclear(r);
    return 0;
}
