-- Columns and helpers the RPC services of aegis-control need beyond 0001-0004.

-- Capabilities from the agent's last AuthHello, comma-separated.
ALTER TABLE agents ADD COLUMN capabilities text NOT NULL DEFAULT '';

-- What the operator asked for (0 = unlimited); uses_left counts down from it.
ALTER TABLE enrollment_tokens ADD COLUMN max_uses integer NOT NULL DEFAULT 0
    CHECK (max_uses >= 0);

-- A Command carries its per-agent sequence and scope, so each agent gets its own signed bytes:
-- the serialized SignedCommand exactly as pushed (and re-pushed) on Subscribe.
ALTER TABLE deliveries ADD COLUMN signed bytea;
-- The explicit target ids as given by the operator (commands.selector keeps the selector).
ALTER TABLE commands ADD COLUMN target_ids text[] NOT NULL DEFAULT '{}';

-- The signed ArtifactStatement bytes (the signature in artifacts.signature covers them).
ALTER TABLE artifacts ADD COLUMN statement bytea;
ALTER TABLE artifact_assignments ADD COLUMN bytes_fetched bigint NOT NULL DEFAULT 0;
ALTER TABLE artifact_assignments ADD COLUMN command_id uuid;

-- Policies are versioned per service (MapSnapshot.service_id). policies.selector holds
-- 'service:<id>' so the one-active-per-selector index means one promoted version per service;
-- the operator's target lives in target_selector / target_ids.
ALTER TABLE policies ADD COLUMN service_id bigint NOT NULL DEFAULT 0;
ALTER TABLE policies ADD COLUMN service_version bigint;
ALTER TABLE policies ADD COLUMN comment text NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN target_selector text NOT NULL DEFAULT '';
ALTER TABLE policies ADD COLUMN target_ids text[] NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX policies_service_version_idx ON policies (service_id, service_version);

-- Order of delivery states: an Ack only moves a delivery forward, so duplicate and late acks
-- are harmless (DESIGN §5 exactly-once effect).
CREATE FUNCTION aegis_delivery_rank(s text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE s WHEN 'queued' THEN 1 WHEN 'delivered' THEN 2 WHEN 'acked' THEN 3
                  WHEN 'running' THEN 4 ELSE 5 END
$$;

CREATE INDEX deliveries_command_idx ON deliveries (command_id, agent_id);

-- aegis_pb_varint_field encodes protobuf field f (wire type 0) with value v >= 0. Appended to a
-- serialized message it overrides an earlier occurrence (the last one wins): PushPolicy uses
-- it to stamp the version SQL assigned into the stored MapSnapshot bytes.
CREATE FUNCTION aegis_pb_varint_field(f integer, v bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    out bytea := set_byte('\x00'::bytea, 0, f * 8);
    x   bigint := v;
    b   integer;
BEGIN
    IF f < 1 OR f > 15 OR v < 0 THEN
        RAISE EXCEPTION 'aegis_pb_varint_field: field 1..15 and value >= 0, got % and %', f, v;
    END IF;
    LOOP
        b := (x & 127)::integer;
        x := x >> 7;
        IF x = 0 THEN
            RETURN out || set_byte('\x00'::bytea, 0, b);
        END IF;
        out := out || set_byte('\x00'::bytea, 0, b | 128);
    END LOOP;
END
$$;

-- aegis_policy_promote makes version p_version the one in force for its service, in one
-- transaction (the previous one steps down first, so the one-active index holds). Returns the
-- promoted row, or nothing if there is no such version.
CREATE FUNCTION aegis_policy_promote(p_service bigint, p_version bigint) RETURNS SETOF policies
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM policies WHERE service_id = p_service
                   AND service_version = p_version) THEN
        RETURN;
    END IF;
    UPDATE policies SET state = 'superseded'
     WHERE service_id = p_service AND state = 'active' AND service_version <> p_version;
    RETURN QUERY UPDATE policies SET state = 'active', promoted_at = now(), rolled_back_at = NULL
     WHERE service_id = p_service AND service_version = p_version RETURNING *;
END
$$;

-- aegis_policy_rollback puts version p_to (0 = the most recently superseded one) back in force
-- and marks the current one rolled back. Returns the restored row, or nothing.
CREATE FUNCTION aegis_policy_rollback(p_service bigint, p_to bigint) RETURNS SETOF policies
LANGUAGE plpgsql AS $$
DECLARE
    target bigint := nullif(p_to, 0);
BEGIN
    IF target IS NULL THEN
        SELECT service_version INTO target FROM policies
         WHERE service_id = p_service AND state = 'superseded' AND promoted_at IS NOT NULL
         ORDER BY promoted_at DESC LIMIT 1;
    END IF;
    IF target IS NULL OR NOT EXISTS (SELECT 1 FROM policies WHERE service_id = p_service
                                     AND service_version = target AND state <> 'active') THEN
        RETURN;
    END IF;
    UPDATE policies SET state = 'rolled_back', rolled_back_at = now()
     WHERE service_id = p_service AND state = 'active';
    RETURN QUERY UPDATE policies SET state = 'active', promoted_at = now()
     WHERE service_id = p_service AND service_version = target RETURNING *;
END
$$;
