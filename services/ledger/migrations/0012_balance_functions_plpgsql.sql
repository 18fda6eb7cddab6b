-- The balance projection's functions in PL/pgSQL (issue 15; same statements,
-- same results). A LANGUAGE sql function that is not inlined (these write) has
-- its body parsed and planned again on every call: ~2 ms of planning against
-- 0.2 ms of execution for a five-line refund, which made
-- apply_balance_changes two thirds of a clawback's cost in the ledger
-- (ReverseSale calls it once per refund). PL/pgSQL keeps each statement's plan
-- for the session.
CREATE OR REPLACE FUNCTION apply_balance_changes(ids uuid[], old_status text[], old_reserved boolean[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
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
END;
$$;

CREATE OR REPLACE FUNCTION apply_posted_balances(program uuid, partner_ids uuid[], currencies text[], entry_types text[],
                                                 amounts numeric[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
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
END;
$$;
