-- Refunds and the ClawbackSale saga (DESIGN §3, §4 "Refunds"; issue 9).

-- A refund of (part of) a sale. Refunds of one sale are numbered 1, 2, … in
-- the order they were recorded (RecordRefund locks the sale row, so the
-- numbering and the running total are serial) and apply in that order.
CREATE TABLE refunds (
    id              uuid        PRIMARY KEY,
    program_id      uuid        NOT NULL,
    external_id     text        NOT NULL,
    request_hash    text        NOT NULL,
    sale_id         uuid        NOT NULL REFERENCES sales (id),
    sequence        integer     NOT NULL CHECK (sequence >= 1),
    currency        text        NOT NULL,
    amount          numeric     NOT NULL CHECK (amount > 0),
    -- T: Σ the sale's refunds up to and including this one.
    refunded_total  numeric     NOT NULL CHECK (refunded_total >= amount),
    occurred_at     timestamptz NOT NULL,
    reason          text        NOT NULL DEFAULT '',
    state           text        NOT NULL CHECK (state IN ('PENDING', 'APPLIED', 'FAILED')),
    failure_reason  text        NOT NULL DEFAULT '',
    -- Its ClawbackSale saga; NULL for a refund of an unattributed sale. No
    -- foreign key: the saga row references the refund (like sales.saga_id).
    saga_id         uuid,
    -- Σ the DEBIT entries the refund posted; NULL until APPLIED.
    clawback_amount numeric     CHECK (clawback_amount >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, external_id),
    UNIQUE (sale_id, sequence)
);
-- ListRefunds.
CREATE INDEX refunds_program_order ON refunds (program_id, occurred_at, id);

-- Σ the sale's recorded refunds; never above the sale.
ALTER TABLE sales ADD COLUMN refunded_amount numeric NOT NULL DEFAULT 0;
ALTER TABLE sales ADD CONSTRAINT sales_refunded_amount_check
    CHECK (refunded_amount >= 0 AND refunded_amount <= amount);
ALTER TABLE sales DROP CONSTRAINT sales_state_check;
ALTER TABLE sales ADD CONSTRAINT sales_state_check
    CHECK (state IN ('PENDING', 'SETTLED', 'FAILED', 'UNATTRIBUTED', 'PARTIALLY_REFUNDED', 'REFUNDED'));

-- A CLAWBACK_SALE saga applies one refund (of the sale it names); a
-- SETTLE_SALE saga names no refund.
ALTER TABLE sagas ADD COLUMN refund_id uuid REFERENCES refunds (id);
ALTER TABLE sagas DROP CONSTRAINT sagas_kind_check;
ALTER TABLE sagas ADD CONSTRAINT sagas_kind_check CHECK (kind IN ('SETTLE_SALE', 'CLAWBACK_SALE'));
ALTER TABLE sagas ADD CONSTRAINT sagas_refund_of_kind_check
    CHECK ((kind = 'CLAWBACK_SALE') = (refund_id IS NOT NULL));
-- One settlement per sale, one clawback per refund (a sale has many).
ALTER TABLE sagas DROP CONSTRAINT sagas_sale_id_kind_key;
CREATE UNIQUE INDEX sagas_settle_sale ON sagas (sale_id) WHERE kind = 'SETTLE_SALE';
CREATE UNIQUE INDEX sagas_clawback_refund ON sagas (refund_id) WHERE kind = 'CLAWBACK_SALE';
