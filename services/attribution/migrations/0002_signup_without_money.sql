-- A SIGNUP may carry no money (seed 003 ON_SIGNUP bounties); a PAYMENT or
-- RENEWAL always carries some.
ALTER TABLE sales DROP CONSTRAINT sales_amount_check;
ALTER TABLE sales ADD CONSTRAINT sales_amount_check
    CHECK (amount > 0 OR (event_type = 'SIGNUP' AND amount = 0));
