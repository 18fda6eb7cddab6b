-- Fewer rows per posted line (settlement speed).
--
-- A posted line's creation event (UNSPECIFIED → PENDING, by the caller,
-- reason 'posted', at the entry's created_at) says nothing its posting does
-- not: every line of a posting is created by the same caller in the same
-- transaction. So PostEntries records the caller once per posting, in
-- `postings.actor`, and writes no creation event; each line had cost an
-- `entry_status_events` row and its two index entries.
--
-- Adding a nullable column rewrites no row, so the immutability trigger is
-- not involved. Postings written before this migration keep a NULL actor and
-- their lines keep their stored creation events; a posting with an actor has
-- none stored. Clawback debits (ReverseSale) still store theirs.
ALTER TABLE postings ADD COLUMN actor text;

-- An entry's status history as every reader sees it: the stored events, and
-- for a line of a posting that recorded its actor, the creation event that
-- posting no longer stores, first (id 0 sorts before every bigserial id).
-- Lines of PostEntries are exactly the entries with no reverses_entry_id
-- (entries_debit_links); the filter keeps a clawback debit whose reversal key
-- equals a posting key from picking up that posting's event.
CREATE VIEW entry_history AS
SELECT e.id AS entry_id, 0::bigint AS id, 'UNSPECIFIED'::text AS from_status, 'PENDING'::text AS to_status,
       p.actor, 'posted'::text AS reason, e.created_at
FROM entries e
JOIN postings p ON p.program_id = e.program_id AND p.idempotency_key = e.idempotency_key
WHERE p.actor IS NOT NULL AND e.reverses_entry_id IS NULL
UNION ALL
SELECT entry_id, id, from_status, to_status, actor, reason, created_at
FROM entry_status_events;
