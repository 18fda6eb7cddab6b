-- Tree depth is not the override depth (issue 8 item 3): a program paying
-- three override levels may have a tree twenty levels deep. Existing trees are
-- at most 32 deep (the old shared cap), so the default fits them all.
ALTER TABLE programs
    ADD COLUMN max_tree_depth integer NOT NULL DEFAULT 32 CHECK (max_tree_depth BETWEEN 1 AND 1024),
    ADD COLUMN updated_at timestamptz;

UPDATE programs SET updated_at = created_at;

ALTER TABLE programs ALTER COLUMN updated_at SET NOT NULL;

-- The settlement settings over time. A sale is settled under the version in
-- force at its occurred_at; version 1 also covers sales that occurred before
-- the program was created (backfills). Append-only.
CREATE TABLE program_settings_versions (
    program_id          uuid        NOT NULL REFERENCES programs (id),
    version             integer     NOT NULL CHECK (version >= 1),
    effective_from      timestamptz NOT NULL,
    rounding_mode       text        NOT NULL CHECK (rounding_mode IN ('HALF_AWAY_FROM_ZERO', 'HALF_EVEN')),
    override_depth_cap  integer     NOT NULL CHECK (override_depth_cap BETWEEN 1 AND 32),
    compression_enabled boolean     NOT NULL,
    PRIMARY KEY (program_id, version)
);

INSERT INTO program_settings_versions (program_id, version, effective_from, rounding_mode, override_depth_cap, compression_enabled)
SELECT id, 1, created_at, rounding_mode, override_depth_cap, compression_enabled FROM programs;

CREATE FUNCTION reject_settings_version_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'program_settings_versions is append-only';
END;
$$;

CREATE TRIGGER program_settings_versions_append_only
    BEFORE UPDATE OR DELETE ON program_settings_versions
    FOR EACH ROW EXECUTE FUNCTION reject_settings_version_change();

-- UpdateProgram idempotency (AIP-155): a key with the fingerprint of the
-- request it answered (accrue_kit::idempotency); the same key with another
-- body is ALREADY_EXISTS.
CREATE TABLE program_updates (
    program_id   uuid        NOT NULL REFERENCES programs (id),
    request_id   text        NOT NULL,
    request_hash bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (program_id, request_id)
);
