-- Settlement without index churn (issue 15).
--
-- Settling a sale updates its state, totals and settle time; claiming a saga
-- updates its owner, generation and lease. Postgres keeps such an update on
-- the row's own page without a new entry in any index (a HOT update) only
-- when no indexed column changes and the page has room for the new version.
-- Pages filled to the brim by inserts had no room, and `sales_seller_order`
-- carried `state`, so each settle wrote a new entry into every one of the
-- sales table's seven indexes, and each claim into the sagas' four.
--
-- 1. Pages keep half their space free: each row is updated about once
--    (a sale at settle, a saga at claim) before its page is pruned.
ALTER TABLE sales SET (fillfactor = 50);
ALTER TABLE sagas SET (fillfactor = 50);

-- 2. The seller-volume index no longer carries `state`: a sale has a seller
--    exactly when it is attributed (recording sets `partner_id` only then,
--    and no later change touches either), so the volume queries need no
--    state test. The constraint keeps that true.
ALTER TABLE sales ADD CONSTRAINT sales_seller_iff_attributed
    CHECK ((partner_id IS NULL) = (state = 'UNATTRIBUTED'));
DROP INDEX sales_seller_order;
CREATE INDEX sales_seller_order ON sales (program_id, partner_id, occurred_at, id) INCLUDE (amount, currency);
