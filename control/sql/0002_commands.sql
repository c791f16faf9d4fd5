-- Commands and their per-agent deliveries (DESIGN §4, §5).

CREATE TABLE commands (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    -- The serialized, signed Command exactly as agents receive it (signature over id, agent
    -- scope, issue time, expiry, nonce): redelivery resends these bytes unchanged.
    payload     bytea NOT NULL,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    -- The operator's target as given (ids or label selector), for `commands show`.
    selector    text NOT NULL DEFAULT '',
    CHECK (expires_at > issued_at)
);
CREATE INDEX commands_issued_at_idx ON commands (issued_at);

CREATE TABLE deliveries (
    agent_id      uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    sequence      bigint NOT NULL CHECK (sequence > 0),
    command_id    uuid NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'acked',
                      'running', 'succeeded', 'failed', 'expired')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_retry_at timestamptz,
    -- Copied from commands.expires_at so the expiry sweep is one index scan.
    expires_at    timestamptz NOT NULL,
    delivered_at  timestamptz,
    acked_at      timestamptz,
    finished_at   timestamptz,
    result        bytea,
    detail        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, sequence),
    UNIQUE (command_id, agent_id)
);
-- Redelivery and expiry scans look only at unfinished rows.
CREATE INDEX deliveries_retry_idx ON deliveries (next_retry_at)
    WHERE status IN ('queued', 'delivered');
CREATE INDEX deliveries_expiry_idx ON deliveries (expires_at)
    WHERE status IN ('queued', 'delivered', 'acked', 'running');
