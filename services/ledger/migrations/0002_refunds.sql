-- Refunds and clawbacks (DESIGN §4 "Refunds", §5; issue 9): debit links on
-- entries, the append-only reversal log, and the balance projection.

-- A clawback DEBIT names the CREDIT line it claws back and the refund it is
-- for, and where it goes: 'TRAVELS' (the line was neither paid nor reserved:
-- the debit keeps the line's clearance and follows its status changes) or
-- 'AT_ONCE' (the line was paid or reserved: the debit is APPROVED at once and
-- nets against the partner's next payout). A CREDIT has none of the three.
-- A DEBIT posted by PostEntries with a negative amount (a manual adjustment,
-- allowed since 0001) links to no line and has none of them either, so the
-- rule is "all three or none, and none on a CREDIT".
-- Adding nullable columns rewrites no row, so the immutability trigger is not
-- involved.
ALTER TABLE entries
    ADD COLUMN reverses_entry_id uuid,
    ADD COLUMN refund_id         uuid,
    ADD COLUMN placement         text CHECK (placement IN ('TRAVELS', 'AT_ONCE')),
    ADD CONSTRAINT entries_debit_links CHECK (
        (reverses_entry_id IS NULL AND refund_id IS NULL AND placement IS NULL)
        OR (entry_type = 'DEBIT' AND reverses_entry_id IS NOT NULL AND refund_id IS NOT NULL
            AND placement IS NOT NULL)
    );

CREATE INDEX entries_reverses_idx ON entries (reverses_entry_id) WHERE reverses_entry_id IS NOT NULL;

-- One row per applied ReverseSale (idempotency key + request hash, like
-- `postings`): the figures it computed, the debits it posted, the CREDIT lines
-- it moved to REVERSED and the travelling debits it moved to REVERSED with
-- them (so VoidReversal can give exactly those back their earlier status).
CREATE TABLE reversals (
    program_id             uuid        NOT NULL,
    idempotency_key        text        NOT NULL,
    sale_id                text        NOT NULL,
    refund_id              uuid        NOT NULL,
    request_hash           bytea       NOT NULL,
    currency               text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    debit_ids              uuid[]      NOT NULL,
    lines_total            numeric     NOT NULL CHECK (lines_total >= 0),
    target                 numeric     NOT NULL CHECK (target >= 0),
    previously_clawed_back numeric     NOT NULL CHECK (previously_clawed_back >= 0),
    clawed_back            numeric     NOT NULL CHECK (clawed_back >= 0),
    reversed_line_ids      uuid[]      NOT NULL,
    reversed_debit_ids     uuid[]      NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, idempotency_key)
);

CREATE INDEX reversals_sale_idx ON reversals (program_id, sale_id);

CREATE TRIGGER reversals_immutable BEFORE UPDATE OR DELETE ON reversals
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER reversals_no_truncate BEFORE TRUNCATE ON reversals
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- One row per VoidReversal that changed something: a reversal is undone at
-- most once (a second call finds this row and changes nothing).
CREATE TABLE reversal_voids (
    program_id        uuid        NOT NULL,
    idempotency_key   text        NOT NULL,
    voided_ids        uuid[]      NOT NULL,
    restored_ids      uuid[]      NOT NULL,
    actor             text        NOT NULL,
    reason            text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, idempotency_key),
    FOREIGN KEY (program_id, idempotency_key) REFERENCES reversals (program_id, idempotency_key)
);

CREATE TRIGGER reversal_voids_immutable BEFORE UPDATE OR DELETE ON reversal_voids
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER reversal_voids_no_truncate BEFORE TRUNCATE ON reversal_voids
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

-- Balance projection (DESIGN §5): per (program, partner, currency) the signed
-- sum (CREDIT +, DEBIT −) of the entries in each bucket of their current
-- state — PENDING, CLEARED, APPROVED and not reserved, APPROVED and reserved,
-- PAID, DISPUTED (REVERSED and VOIDED entries are in no bucket) — and
-- `clawed_back`, Σ of non-VOIDED DEBIT amounts (positive). Written only by
-- apply_balance_changes() in the same transaction as the entry or status
-- change it reflects.
CREATE TABLE balances (
    program_id  uuid        NOT NULL,
    partner_id  uuid        NOT NULL,
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    pending     numeric     NOT NULL DEFAULT 0,
    cleared     numeric     NOT NULL DEFAULT 0,
    approved    numeric     NOT NULL DEFAULT 0,
    reserved    numeric     NOT NULL DEFAULT 0,
    paid        numeric     NOT NULL DEFAULT 0,
    disputed    numeric     NOT NULL DEFAULT 0,
    clawed_back numeric     NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, partner_id, currency)
);

-- Entries that existed before this migration enter the projection once.
INSERT INTO balances (program_id, partner_id, currency, pending, cleared, approved, reserved, paid, disputed, clawed_back)
SELECT e.program_id, e.partner_id, e.currency,
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'PENDING'), 0),
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'CLEARED'), 0),
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'APPROVED' AND r.entry_id IS NULL), 0),
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'APPROVED' AND r.entry_id IS NOT NULL), 0),
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'PAID'), 0),
       COALESCE(sum(v.signed) FILTER (WHERE s.status = 'DISPUTED'), 0),
       COALESCE(sum(e.amount) FILTER (WHERE e.entry_type = 'DEBIT' AND s.status <> 'VOIDED'), 0)
FROM entries e
JOIN entry_states s ON s.entry_id = e.id
LEFT JOIN payout_reservations r ON r.entry_id = e.id
CROSS JOIN LATERAL (SELECT CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END AS signed) v
GROUP BY e.program_id, e.partner_id, e.currency;

-- Applies to `balances` the change of the entries `ids`, given what each was
-- before (`old_status` NULL for an entry created in this transaction;
-- `old_reserved` NULL = not reserved) and reading what it is now from
-- entry_states and payout_reservations. Callers call it ONCE per transaction,
-- after their writes, so each transaction touches its balance rows in one
-- statement and in key order (no deadlock between two of them). Arrays of
-- different lengths are padded with NULLs by unnest, so a caller that only
-- created entries passes empty old_* arrays.
CREATE FUNCTION apply_balance_changes(ids uuid[], old_status text[], old_reserved boolean[])
RETURNS void LANGUAGE sql AS $$
    WITH c AS (
        SELECT e.program_id, e.partner_id, e.currency, e.entry_type, e.amount,
               CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END AS v,
               o.old_status AS os, COALESCE(o.old_reserved, false) AS ores,
               s.status AS ns, EXISTS (SELECT 1 FROM payout_reservations r WHERE r.entry_id = e.id) AS nres
        FROM unnest(ids, old_status, old_reserved) AS o(id, old_status, old_reserved)
        JOIN entries e ON e.id = o.id
        JOIN entry_states s ON s.entry_id = o.id
        WHERE o.id IS NOT NULL
    ), d AS (
        SELECT program_id, partner_id, currency,
               sum(v * ((ns = 'PENDING')::int - (os IS NOT DISTINCT FROM 'PENDING')::int)) AS pending,
               sum(v * ((ns = 'CLEARED')::int - (os IS NOT DISTINCT FROM 'CLEARED')::int)) AS cleared,
               sum(v * ((ns = 'APPROVED' AND NOT nres)::int
                        - (os IS NOT DISTINCT FROM 'APPROVED' AND NOT ores)::int)) AS approved,
               sum(v * ((ns = 'APPROVED' AND nres)::int
                        - (os IS NOT DISTINCT FROM 'APPROVED' AND ores)::int)) AS reserved,
               sum(v * ((ns = 'PAID')::int - (os IS NOT DISTINCT FROM 'PAID')::int)) AS paid,
               sum(v * ((ns = 'DISPUTED')::int - (os IS NOT DISTINCT FROM 'DISPUTED')::int)) AS disputed,
               sum(CASE WHEN entry_type = 'DEBIT'
                        THEN amount * ((ns <> 'VOIDED')::int - (os IS NOT NULL AND os <> 'VOIDED')::int)
                        ELSE 0 END) AS clawed_back
        FROM c
        GROUP BY program_id, partner_id, currency
    )
    INSERT INTO balances AS b (program_id, partner_id, currency, pending, cleared, approved, reserved, paid,
                               disputed, clawed_back)
    SELECT program_id, partner_id, currency, pending, cleared, approved, reserved, paid, disputed, clawed_back
    FROM d
    ORDER BY program_id, partner_id, currency
    ON CONFLICT (program_id, partner_id, currency) DO UPDATE SET
        pending     = b.pending + EXCLUDED.pending,
        cleared     = b.cleared + EXCLUDED.cleared,
        approved    = b.approved + EXCLUDED.approved,
        reserved    = b.reserved + EXCLUDED.reserved,
        paid        = b.paid + EXCLUDED.paid,
        disputed    = b.disputed + EXCLUDED.disputed,
        clawed_back = b.clawed_back + EXCLUDED.clawed_back,
        updated_at  = now();
$$;
