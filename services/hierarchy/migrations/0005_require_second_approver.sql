-- Maker-checker for payouts (issue 12 item 4): with it on, the identity that
-- created a payout run may not approve its payouts (the payouts service reads
-- it through GetProgram). Off for every existing program.
ALTER TABLE programs ADD COLUMN require_second_approver boolean NOT NULL DEFAULT false;
