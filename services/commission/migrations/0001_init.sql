-- commission schema: the search_path is already "commission" (see accrue_kit::db).

-- One agreement per scope: a partner, or the program default (partner_id NULL).
CREATE TABLE agreements (
    id          uuid PRIMARY KEY,
    program_id  uuid NOT NULL,
    partner_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agreements_scope_key UNIQUE NULLS NOT DISTINCT (program_id, partner_id)
);

-- Immutable versions of an agreement's rules (DESIGN §4: never edited).
CREATE TABLE agreement_versions (
    id                  uuid PRIMARY KEY,
    agreement_id        uuid NOT NULL REFERENCES agreements (id),
    program_id          uuid NOT NULL,
    version             integer NOT NULL CHECK (version >= 1),
    effective_from      timestamptz NOT NULL,
    rules               jsonb NOT NULL,
    request_id          text,
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agreement_versions_version_key UNIQUE (agreement_id, version),
    CONSTRAINT agreement_versions_request_key UNIQUE (program_id, request_id)
);

CREATE FUNCTION reject_agreement_version_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agreement_versions are immutable (% rejected)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER agreement_versions_immutable
    BEFORE UPDATE OR DELETE ON agreement_versions
    FOR EACH ROW EXECUTE FUNCTION reject_agreement_version_change();

CREATE TRIGGER agreement_versions_no_truncate
    BEFORE TRUNCATE ON agreement_versions
    FOR EACH STATEMENT EXECUTE FUNCTION reject_agreement_version_change();

-- Override plans (seed 004): the program's (partner_id NULL) or an upline's own.
CREATE TABLE override_plans (
    program_id          uuid NOT NULL,
    partner_id          uuid,
    mode                text NOT NULL CHECK (mode IN ('PERCENTAGE', 'FLAT')),
    basis               text NOT NULL CHECK (basis IN ('DEAL_AMOUNT', 'BASE_COMMISSION')),
    levels              jsonb NOT NULL,
    request_id          text,
    request_fingerprint text,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT override_plans_scope_key UNIQUE NULLS NOT DISTINCT (program_id, partner_id)
);
