-- The payout lifecycle (issue 12 items 1, 3 and 4; seed 001, DESIGN §5):
-- who created a run (maker-checker), who approved a payout and when, the
-- payment's reference, method and time, the reason of a rejection or a
-- failed payment, and the request id (AIP-155) and body hash each audited
-- change was made under, so that a repeat answers without a second change.
ALTER TABLE payout_runs ADD COLUMN created_by text;

ALTER TABLE payouts ADD COLUMN approved_by text;
ALTER TABLE payouts ADD COLUMN approved_at timestamptz;
ALTER TABLE payouts ADD COLUMN payment_reference text;
ALTER TABLE payouts ADD COLUMN payment_method text;
ALTER TABLE payouts ADD COLUMN paid_at timestamptz;
ALTER TABLE payouts ADD COLUMN status_reason text;

ALTER TABLE payout_audit_events ADD COLUMN request_id text;
ALTER TABLE payout_audit_events ADD COLUMN request_hash bytea;

-- A request id names one change of one payout.
CREATE UNIQUE INDEX payout_audit_events_request ON payout_audit_events (payout_id, request_id)
    WHERE request_id IS NOT NULL;

-- GetPayoutStats and the ListPayouts filters.
CREATE INDEX payouts_program_status ON payouts (program_id, currency, status);
