-- Fewer index entries per posted line (settlement speed, issue 15).
--
-- `entry_states_partner_idx` (program, partner, currency, status) indexed
-- every line from the moment it was posted, yet its one reader, the payout
-- reservation (store::reservations), asks only for APPROVED entries. Indexing
-- just those moves the cost from PostEntries (every line, PENDING) to the
-- approval (a status change rewrites the row's index entries anyway).
DROP INDEX entry_states_partner_idx;
CREATE INDEX entry_states_approved_idx ON entry_states (program_id, partner_id, currency) WHERE status = 'APPROVED';
