-- Telemetry: range-partitioned by UTC day, loaded with COPY (DESIGN §6).
--
-- No foreign key to agents: a per-row check would slow bulk loads, and telemetry outlives a
-- deleted agent. The unique key makes re-sent batches idempotent (INSERT ... ON CONFLICT DO
-- NOTHING from a COPY staging table); PostgreSQL requires a unique key on a partitioned table
-- to contain the partition key, so ts is part of it (a re-send carries the same ts).
CREATE TABLE telemetry (
    ts          timestamptz NOT NULL,
    agent_id    uuid NOT NULL,
    batch_id    bigint NOT NULL,
    idx         integer NOT NULL CHECK (idx >= 0),
    kind        text NOT NULL,
    name        text NOT NULL,
    value       double precision,
    attrs       jsonb,
    body        bytea,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, batch_id, idx, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX telemetry_agent_ts_idx ON telemetry (agent_id, ts);
CREATE INDEX telemetry_kind_ts_idx ON telemetry (kind, ts);

-- Rows whose day has no partition (an agent clock far off) land here instead of failing the
-- whole batch.
CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT;

-- telemetry_ensure_partitions creates the daily partitions for p_days days from p_from (UTC)
-- that do not exist yet and returns how many it created. Safe to call from several instances
-- at once (advisory lock). A day that already has rows in telemetry_default is skipped with a
-- notice (PostgreSQL cannot attach it without moving them).
CREATE FUNCTION telemetry_ensure_partitions(p_from date, p_days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    pname   text;
    created integer := 0;
BEGIN
    IF p_days < 0 OR p_days > 366 THEN
        RAISE EXCEPTION 'telemetry_ensure_partitions: p_days must be 0..366, got %', p_days;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('aegis.telemetry_partitions'));
    FOR i IN 0 .. p_days - 1 LOOP
        d := p_from + i;
        pname := 'telemetry_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(quote_ident(pname)) IS NOT NULL;
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                           pname, (d::timestamp AT TIME ZONE 'UTC'),
                           ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE 'telemetry partition % skipped: telemetry_default holds rows for that day',
                pname;
        END;
    END LOOP;
    RETURN created;
END
$$;

-- telemetry_drop_partitions_before drops the daily partitions entirely before p_before (UTC)
-- and returns how many it dropped (retention).
CREATE FUNCTION telemetry_drop_partitions_before(p_before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r       record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('aegis.telemetry_partitions'));
    FOR r IN SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'telemetry'::regclass
                AND c.relname ~ '^telemetry_p[0-9]{8}$'
                AND to_date(substr(c.relname, 12), 'YYYYMMDD') < p_before LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

SELECT telemetry_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
