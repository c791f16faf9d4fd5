-- Artifacts, their per-host assignments, and policy versions (DESIGN §3, §7).

-- Content is stored as 64 KiB bytea chunks in artifact_chunks rather than one bytea value or
-- a large object: a single bytea value cannot exceed 1 GB, which is below our 1 GiB cap, and
-- is read whole; large objects are not covered by foreign keys or ON DELETE CASCADE (orphans
-- need lo_unlink triggers) and need extra privileges. Chunks the size of a wire chunk (§8)
-- make FetchArtifact from an offset one primary-key range scan, and an interrupted upload
-- resumes at the first missing chunk.
CREATE TABLE artifacts (
    sha256       bytea PRIMARY KEY CHECK (length(sha256) = 32),
    name         text NOT NULL,
    kind         text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0 AND size <= 1073741824),
    chunk_size   integer NOT NULL DEFAULT 65536 CHECK (chunk_size > 0 AND chunk_size <= 4194304),
    -- Made by the operator's artifact key (aegisctl); the control server never holds it.
    signature    bytea NOT NULL,
    key_id       text NOT NULL,
    -- True once every chunk is stored and the SHA-256 of the content was checked.
    complete     boolean NOT NULL DEFAULT false,
    uploaded_by  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE artifact_chunks (
    sha256 bytea NOT NULL REFERENCES artifacts (sha256) ON DELETE CASCADE,
    idx    integer NOT NULL CHECK (idx >= 0),
    data   bytea NOT NULL,
    PRIMARY KEY (sha256, idx)
);
-- Artifacts arrive compressed/signed: skip TOAST compression, keep them out of line.
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE artifact_assignments (
    artifact    bytea NOT NULL REFERENCES artifacts (sha256) ON DELETE CASCADE,
    agent_id    uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'downloaded', 'loaded', 'failed')),
    detail      text NOT NULL DEFAULT '',
    assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (artifact, agent_id)
);
CREATE INDEX artifact_assignments_agent_idx ON artifact_assignments (agent_id);

-- A policy is a versioned MapSnapshot (seed 004). At most one version is active per
-- selector; rollback re-activates the previous one.
CREATE TABLE policies (
    version        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    selector       text NOT NULL DEFAULT '',
    snapshot       bytea NOT NULL,
    snapshot_sha256 bytea NOT NULL CHECK (length(snapshot_sha256) = 32),
    state          text NOT NULL DEFAULT 'draft'
                       CHECK (state IN ('draft', 'active', 'superseded', 'rolled_back')),
    author         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    promoted_at    timestamptz,
    rolled_back_at timestamptz
);
CREATE UNIQUE INDEX policies_one_active_idx ON policies (selector) WHERE state = 'active';
