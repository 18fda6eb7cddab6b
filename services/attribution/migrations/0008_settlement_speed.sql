-- Settlement speed (issue 15).
--
-- 1. A seller's prior volume (the Σ gross of its earlier attributed sales,
--    which TIERED rates read) was a window over the seller's whole history at
--    every claimed batch: per batch, work proportional to every sale recorded
--    so far, so settling N sales cost O(N²). `seller_volumes` keeps the same
--    Σ per seller, currency and calendar year, month and day (UTC), added to
--    by the statement that inserts the sales (a sale's seller, currency,
--    amount, time and whether it is attributed never change after insert),
--    and hour too: a busy seller's day may hold thousands of sales.
--    A sale's prior volume is then Σ of the earlier years, of the earlier
--    months of its year, of the earlier days of its month, of the earlier
--    hours of its day, and of its own hour's earlier sales: work bounded by
--    the calendar and the hour's sales, not by the history.
CREATE TABLE seller_volumes (
    program_id uuid      NOT NULL,
    partner_id uuid      NOT NULL,
    currency   text      NOT NULL,
    grain      text      NOT NULL CHECK (grain IN ('year', 'month', 'day', 'hour')),
    -- Start of the year, month, day or hour, UTC.
    period     timestamp NOT NULL,
    -- Σ gross of the seller's attributed sales in the period (major units).
    amount     numeric   NOT NULL,
    PRIMARY KEY (program_id, partner_id, currency, grain, period)
);

CREATE FUNCTION seller_volumes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Ordered, so that two concurrent inserts lock the bucket rows they share
    -- in the same order (no deadlock).
    INSERT INTO seller_volumes AS v (program_id, partner_id, currency, grain, period, amount)
    SELECT n.program_id, n.partner_id, n.currency, g.grain,
           date_trunc(g.grain, n.occurred_at AT TIME ZONE 'UTC'), sum(n.amount)
    FROM new_sales n CROSS JOIN (VALUES ('year'), ('month'), ('day'), ('hour')) AS g(grain)
    WHERE n.partner_id IS NOT NULL AND n.state <> 'UNATTRIBUTED'
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (program_id, partner_id, currency, grain, period)
        DO UPDATE SET amount = v.amount + excluded.amount;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sales_seller_volumes AFTER INSERT ON sales
    REFERENCING NEW TABLE AS new_sales
    FOR EACH STATEMENT EXECUTE FUNCTION seller_volumes_add();

INSERT INTO seller_volumes (program_id, partner_id, currency, grain, period, amount)
SELECT s.program_id, s.partner_id, s.currency, g.grain, date_trunc(g.grain, s.occurred_at AT TIME ZONE 'UTC'),
       sum(s.amount)
FROM sales s CROSS JOIN (VALUES ('year'), ('month'), ('day'), ('hour')) AS g(grain)
WHERE s.partner_id IS NOT NULL AND s.state <> 'UNATTRIBUTED'
GROUP BY 1, 2, 3, 4, 5;

-- 2. The step log's foreign key checked (and key-share locked) the saga row
--    once per logged event, ten times per settled sale; the engine's append
--    already joins `sagas` and share-locks the row it fences on, so every
--    event references an existing saga by construction.
ALTER TABLE saga_step_events DROP CONSTRAINT saga_step_events_saga_id_fkey;

-- 3. Step outputs over the TOAST threshold (compute's lines with their
--    breakdowns) are compressed with lz4, several times faster than pglz.
ALTER TABLE saga_step_events ALTER COLUMN detail SET COMPRESSION lz4;
