-- Aegis control plane schema, part 1: identities and the audit log (DESIGN §4, §6).
-- Applied by aegis-control at start-up inside one transaction under an advisory lock;
-- never edit this file once released: add a new NNNN_name.sql instead.

-- One row per running aegis-control process; agents.connected_instance points here so a
-- command or revocation for an agent held by another instance can be routed to it.
CREATE TABLE control_instances (
    id          uuid PRIMARY KEY,
    hostname    text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    heartbeat   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id                  uuid PRIMARY KEY,
    host_id             text NOT NULL,
    hostname            text NOT NULL,
    -- SHA-256 of the SubjectPublicKeyInfo of the key the fleet certificate was issued for.
    spki_sha256         bytea NOT NULL UNIQUE CHECK (length(spki_sha256) = 32),
    machine_id_hash     bytea NOT NULL CHECK (length(machine_id_hash) = 32),
    -- Highest agent version seen; Authenticate refuses a lower one (seed 002).
    version             text NOT NULL,
    labels              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    status              text NOT NULL DEFAULT 'enrolled' CHECK (status IN ('enrolled', 'revoked')),
    enrolled_at         timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    last_seen           timestamptz,
    connected_instance  uuid REFERENCES control_instances (id) ON DELETE SET NULL,
    -- Per-agent command stream (DESIGN §5): next_sequence is handed out under a row lock,
    -- Subscribe resumes after last_acked_sequence.
    last_acked_sequence bigint NOT NULL DEFAULT 0 CHECK (last_acked_sequence >= 0),
    next_sequence       bigint NOT NULL DEFAULT 1 CHECK (next_sequence > last_acked_sequence),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX agents_labels_idx ON agents USING gin (labels jsonb_path_ops);
CREATE INDEX agents_connected_instance_idx ON agents (connected_instance)
    WHERE connected_instance IS NOT NULL;
CREATE INDEX agents_host_id_idx ON agents (host_id);

-- Every instance keeps the enrolled/revoked set in memory so a handshake costs no query; this
-- trigger tells all of them about any change, even one made by hand in psql.
CREATE FUNCTION agents_notify_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('aegis_agents', json_build_object('id', OLD.id, 'op', 'delete',
            'spki_sha256', encode(OLD.spki_sha256, 'hex'))::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('aegis_agents', json_build_object('id', NEW.id, 'op', lower(TG_OP),
        'status', NEW.status, 'spki_sha256', encode(NEW.spki_sha256, 'hex'),
        'connected_instance', NEW.connected_instance)::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_notify_identity_trg
    AFTER INSERT OR DELETE OR UPDATE OF status, spki_sha256 ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_notify_identity();

-- Only the SHA-256 of a token is stored: a database dump does not leak usable tokens.
CREATE TABLE enrollment_tokens (
    id           uuid PRIMARY KEY,
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    description  text NOT NULL DEFAULT '',
    -- Labels given to agents that enroll with this token.
    labels       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    uses_left    integer NOT NULL CHECK (uses_left >= 0),
    revoked      boolean NOT NULL DEFAULT false,
    CHECK (expires_at > created_at)
);

CREATE TABLE operators (
    spki_sha256 bytea PRIMARY KEY CHECK (length(spki_sha256) = 32),
    name        text NOT NULL UNIQUE,
    -- Recorded when the operator certificate is issued (aegis-certs).
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked     boolean NOT NULL DEFAULT false
);

-- Every security decision is a row here (DESIGN §4). Append-only by convention.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail      jsonb NOT NULL DEFAULT '{}',
    instance_id uuid
);
CREATE INDEX audit_log_ts_idx ON audit_log (ts);
CREATE INDEX audit_log_actor_ts_idx ON audit_log (actor, ts);
CREATE INDEX audit_log_action_ts_idx ON audit_log (action, ts);
