-- Free notes on a payout (seed 001; UpdatePayout while PENDING_APPROVAL).
ALTER TABLE payouts ADD COLUMN notes text NOT NULL DEFAULT '';
