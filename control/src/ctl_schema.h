/*
 * ctl_schema: names and canned SQL tied to control/sql/ that several control files share.
 */
#ifndef CTL_SCHEMA_H
#define CTL_SCHEMA_H

/* NOTIFY channel of the agents trigger (0001_core.sql): JSON {id, op, status, spki_sha256,
 * connected_instance} on every enrollment, revocation or key change. */
#define CTL_CHANNEL_AGENTS "aegis_agents"

/* Columns of a telemetry COPY row, in order (ctl_copybuf fields). */
#define CTL_TELEMETRY_COPY_COLUMNS "agent_id, batch_id, idx, ts, kind, name, value, attrs, body"

/*
 * CTL_SQL_TELEMETRY_COPY: the ctl_db_copy_in string for one telemetry batch. COPY goes into a
 * session-local staging table, then INSERT ... ON CONFLICT DO NOTHING moves the rows, so a
 * re-sent batch (same agent_id, batch_id, idx, ts) is accepted without duplicates. The
 * staging table empties itself at COMMIT; a failure rolls everything back. Result:
 * ctl_db_result_copy_rows = rows received, ctl_db_result_cmd_tuples = rows newly stored.
 */
#define CTL_SQL_TELEMETRY_COPY                                                                     \
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_stage"                                              \
    " (LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"                                  \
    " BEGIN;"                                                                                      \
    " COPY telemetry_stage (" CTL_TELEMETRY_COPY_COLUMNS ") FROM STDIN;"                           \
    " INSERT INTO telemetry (" CTL_TELEMETRY_COPY_COLUMNS ")"                                      \
    " SELECT " CTL_TELEMETRY_COPY_COLUMNS " FROM telemetry_stage ON CONFLICT DO NOTHING;"          \
    " COMMIT"

#endif
