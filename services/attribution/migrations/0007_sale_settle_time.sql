-- When a sale's settlement saga last settled it (Sale.settle_time): what a
-- caller measures record → settled with through the API (issue 15 item 1).
-- NULL until settled, and again if the saga unwinds the settlement; sales
-- settled before this migration keep NULL.
ALTER TABLE sales ADD COLUMN settled_at timestamptz;
