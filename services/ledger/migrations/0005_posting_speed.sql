-- Settlement speed (issue 15).

-- (program_id, partner_id) is the prefix of entries_partner_kind_idx
-- (program_id, partner_id, kind, occurred_at), which serves every lookup this
-- one served; each posted line paid for both.
DROP INDEX entries_partner_idx;

-- The balance change of entries a posting just created, from the posting's
-- own lines: what apply_balance_changes computes for an entry created in this
-- transaction (no old status, not reserved, now PENDING) — pending moves by
-- the signed amount (CREDIT +, DEBIT −) and clawed_back by a DEBIT's amount —
-- without reading the new entries and their states back (a third of
-- PostEntries' cost when it did). Callers pass only the lines of postings that
-- were inserted, and call it once per transaction after their writes, so the
-- balance rows are touched in one statement and in key order, as
-- apply_balance_changes does.
CREATE FUNCTION apply_posted_balances(program uuid, partner_ids uuid[], currencies text[], entry_types text[],
                                      amounts numeric[])
RETURNS void LANGUAGE sql AS $$
    WITH d AS (
        SELECT l.partner_id, l.currency,
               sum(CASE WHEN l.entry_type = 'CREDIT' THEN l.amount ELSE -l.amount END) AS pending,
               sum(CASE WHEN l.entry_type = 'DEBIT' THEN l.amount ELSE 0 END) AS clawed_back
        FROM unnest(partner_ids, currencies, entry_types, amounts) AS l(partner_id, currency, entry_type, amount)
        GROUP BY l.partner_id, l.currency
    )
    INSERT INTO balances AS b (program_id, partner_id, currency, pending, clawed_back)
    SELECT program, partner_id, currency, pending, clawed_back
    FROM d
    ORDER BY partner_id, currency
    ON CONFLICT (program_id, partner_id, currency) DO UPDATE SET
        pending     = b.pending + EXCLUDED.pending,
        clawed_back = b.clawed_back + EXCLUDED.clawed_back,
        updated_at  = now();
$$;
