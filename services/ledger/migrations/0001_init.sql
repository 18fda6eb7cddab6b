-- ledger schema (DESIGN §5, seed 003): the search_path is already "ledger"
-- (see accrue_kit::db), so every name here is unqualified.
--
-- Entries, status events and postings are append-only: a trigger rejects
-- UPDATE, DELETE and TRUNCATE (after Blnk). The only mutable tables are the
-- current-status projection `entry_states` (updated in the same transaction as
-- each status event) and `payout_reservations`.

CREATE FUNCTION reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger table % is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- One row per posted sale (idempotency key + request hash, after
-- TigerBeetle / Formance): same key and hash → the stored result; same key,
-- other hash → ALREADY_EXISTS.
CREATE TABLE postings (
    program_id      uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    sale_id         text        NOT NULL,
    request_hash    bytea       NOT NULL,
    entry_ids       uuid[]      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, idempotency_key)
);

CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- Immutable earnings entries. `amount` is always positive; a DEBIT subtracts.
--
-- Entries, their creation events and their status rows are written by ONE
-- statement from the rows its posting insert returned, and status events only
-- for rows locked in `entry_states`; so the references below are kept by
-- construction, without foreign-key triggers on the hot path (PostEntries
-- writes ~2,000 lines per call). Only `payout_reservations` keeps its foreign
-- key: it is the table other services' actions write through.
CREATE TABLE entries (
    id                uuid        PRIMARY KEY,
    program_id        uuid        NOT NULL,
    partner_id        uuid        NOT NULL,
    sale_id           text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('DIRECT', 'SPLIT', 'OVERRIDE', 'MARGIN')),
    entry_type        text        NOT NULL CHECK (entry_type IN ('CREDIT', 'DEBIT')),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount            numeric     NOT NULL CHECK (amount > 0),
    level             integer     NOT NULL CHECK (level >= 0),
    source_partner_id uuid,
    occurred_at       timestamptz NOT NULL,
    clears_at         timestamptz NOT NULL,
    breakdown         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key   text        NOT NULL,
    line_index        integer     NOT NULL CHECK (line_index >= 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX entries_partner_idx ON entries (program_id, partner_id);
CREATE INDEX entries_sale_idx ON entries (program_id, sale_id);
CREATE INDEX entries_created_idx ON entries (program_id, created_at, id);

CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- Append-only status history (from UNSPECIFIED for the creation event).
CREATE TABLE entry_status_events (
    id          bigserial   PRIMARY KEY,
    entry_id    uuid        NOT NULL,
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    actor       text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX entry_status_events_entry_idx ON entry_status_events (entry_id, id);

CREATE TRIGGER entry_status_events_immutable BEFORE UPDATE OR DELETE ON entry_status_events
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER entry_status_events_no_truncate BEFORE TRUNCATE ON entry_status_events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- Current status of each entry: a projection of the latest status event,
-- written in the same transaction. Queries read this, never the event log.
CREATE TABLE entry_states (
    entry_id   uuid        PRIMARY KEY,
    program_id uuid        NOT NULL,
    partner_id uuid        NOT NULL,
    currency   text        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('PENDING', 'CLEARED', 'APPROVED', 'PAID', 'DISPUTED', 'REVERSED', 'VOIDED')),
    clears_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX entry_states_status_idx ON entry_states (program_id, status, clears_at);
CREATE INDEX entry_states_partner_idx ON entry_states (program_id, partner_id, currency, status);

-- An entry is in at most one payout: the primary key enforces it (DESIGN §5).
CREATE TABLE payout_reservations (
    entry_id   uuid        PRIMARY KEY REFERENCES entries (id),
    payout_id  uuid        NOT NULL,
    program_id uuid        NOT NULL,
    partner_id uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payout_reservations_payout_idx ON payout_reservations (payout_id);
