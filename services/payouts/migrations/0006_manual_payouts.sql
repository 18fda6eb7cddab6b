-- Manual payouts and soft deletion (issue 12 item 2; seed 001, AIP-164).
--
-- A manual payout (CreatePayout) belongs to no run; its creator is kept on
-- the payout for maker-checker, and the hash of the request that created it
-- so that a repeat of its request id with another body is refused.
ALTER TABLE payouts ALTER COLUMN payout_run_id DROP NOT NULL;
ALTER TABLE payouts ADD COLUMN created_by text;
ALTER TABLE payouts ADD COLUMN create_request_hash bytea;

-- DeletePayout moves a payout awaiting approval to DELETED; its audit trail
-- (which references it) stays, so the row is kept.
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check CHECK (status IN (
    'PENDING_APPROVAL', 'APPROVED', 'REJECTED', 'PROCESSING', 'PAID', 'FAILED', 'DELETED'));
