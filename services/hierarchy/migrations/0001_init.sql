-- hierarchy schema: the search_path is already "hierarchy" (see accrue_kit::db).
--
-- Programs (tenants) and the partner tree. Every partner keeps a denormalized
-- ancestor path (nearest first) so uplines and downlines are one indexed
-- query; SetParent rewrites the paths of a moved subtree (seed 004).

CREATE TABLE programs (
    id                   uuid        PRIMARY KEY,
    display_name         text        NOT NULL CHECK (display_name <> ''),
    default_currency     text        NOT NULL CHECK (default_currency ~ '^[A-Z]{3}$'),
    rounding_mode        text        NOT NULL CHECK (rounding_mode IN ('HALF_AWAY_FROM_ZERO', 'HALF_EVEN')),
    override_depth_cap   integer     NOT NULL CHECK (override_depth_cap BETWEEN 1 AND 32),
    compression_enabled  boolean     NOT NULL DEFAULT false,
    auto_approve_cleared boolean     NOT NULL DEFAULT false,
    minimum_payout       numeric     NOT NULL DEFAULT 0 CHECK (minimum_payout >= 0),
    role_ladder          text[]      NOT NULL,
    request_id           text        CONSTRAINT programs_request_id_key UNIQUE,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE partners (
    id           uuid        PRIMARY KEY,
    program_id   uuid        NOT NULL REFERENCES programs (id),
    display_name text        NOT NULL CHECK (display_name <> ''),
    external_id  text,
    status       text        NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'TERMINATED')),
    role         text,
    parent_id    uuid        REFERENCES partners (id),
    -- Ancestors nearest first: parent, grandparent, …, root.
    ancestor_ids uuid[]      NOT NULL DEFAULT '{}',
    -- 0 for a root partner; always the length of ancestor_ids.
    depth        integer     NOT NULL CHECK (depth >= 0),
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT partners_external_id_key UNIQUE (program_id, external_id),
    CONSTRAINT partners_request_id_key UNIQUE (program_id, request_id),
    CONSTRAINT partners_depth_matches_path CHECK (depth = cardinality(ancestor_ids)),
    CONSTRAINT partners_parent_is_first_ancestor CHECK (
        (parent_id IS NULL AND depth = 0) OR (parent_id IS NOT NULL AND ancestor_ids[1] = parent_id)
    ),
    CONSTRAINT partners_not_own_ancestor CHECK (NOT (ancestor_ids @> ARRAY[id]))
);

CREATE INDEX partners_ancestor_ids_gin ON partners USING gin (ancestor_ids);
CREATE INDEX partners_program_created ON partners (program_id, created_at, id);
CREATE INDEX partners_program_status_created ON partners (program_id, status, created_at, id);
CREATE INDEX partners_parent ON partners (parent_id);

-- Append-only audit of status changes.
CREATE TABLE partner_status_events (
    id          bigserial   PRIMARY KEY,
    partner_id  uuid        NOT NULL REFERENCES partners (id),
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX partner_status_events_partner ON partner_status_events (partner_id, id);

CREATE FUNCTION reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'partner_status_events is append-only';
END;
$$;

CREATE TRIGGER partner_status_events_append_only
    BEFORE UPDATE OR DELETE ON partner_status_events
    FOR EACH ROW EXECUTE FUNCTION reject_audit_change();
