-- payouts schema: the search_path is already "payouts" (see accrue_kit::db).
--
-- Payout runs (one per program, currency and period), the payouts they create
-- and an append-only audit log of every payout state change (seed 001).

CREATE TABLE payout_runs (
    id                     uuid        PRIMARY KEY,
    program_id             uuid        NOT NULL,
    currency               text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- "YYYY-MM", a calendar month in UTC.
    period                 text        NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    cutoff                 timestamptz NOT NULL,
    -- The minimum payout applied to every partner in the run.
    minimum_amount         numeric     NOT NULL CHECK (minimum_amount >= 0),
    state                  text        NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE')),
    payout_count           bigint      NOT NULL DEFAULT 0 CHECK (payout_count >= 0),
    total_amount           numeric     NOT NULL DEFAULT 0,
    carried_forward_count  bigint      NOT NULL DEFAULT 0 CHECK (carried_forward_count >= 0),
    carried_forward_amount numeric     NOT NULL DEFAULT 0,
    request_id             text,
    created_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at           timestamptz,
    CONSTRAINT payout_runs_period_key UNIQUE (program_id, currency, period)
);

CREATE TABLE payouts (
    id            uuid        PRIMARY KEY,
    payout_run_id uuid        NOT NULL REFERENCES payout_runs (id),
    program_id    uuid        NOT NULL,
    partner_id    uuid        NOT NULL,
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount        numeric     NOT NULL CHECK (amount > 0),
    status        text        NOT NULL CHECK (status IN (
                      'PENDING_APPROVAL', 'APPROVED', 'REJECTED', 'PROCESSING', 'PAID', 'FAILED')),
    period        text        NOT NULL,
    entry_count   bigint      NOT NULL CHECK (entry_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- One payout per partner per run.
    CONSTRAINT payouts_run_partner_key UNIQUE (payout_run_id, partner_id)
);

CREATE INDEX payouts_program_created ON payouts (program_id, created_at, id);
CREATE INDEX payouts_partner_created ON payouts (partner_id, created_at, id);
CREATE INDEX payouts_run_created ON payouts (payout_run_id, created_at, id);

-- Append-only: who moved a payout from what to what, when and why.
CREATE TABLE payout_audit_events (
    id          bigserial   PRIMARY KEY,
    payout_id   uuid        NOT NULL REFERENCES payouts (id),
    actor       text        NOT NULL,
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX payout_audit_events_payout ON payout_audit_events (payout_id, id);

CREATE FUNCTION reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payout_audit_events is append-only';
END;
$$;

CREATE TRIGGER payout_audit_events_append_only
    BEFORE UPDATE OR DELETE ON payout_audit_events
    FOR EACH ROW EXECUTE FUNCTION reject_audit_change();
