-- attribution schema: the search_path is already "attribution" (see accrue_kit::db).
-- Links, leads, sales and the SettleSale saga with its append-only step log (DESIGN §3).

CREATE TABLE links (
    id               uuid        PRIMARY KEY,
    program_id       uuid        NOT NULL,
    owner_partner_id uuid        NOT NULL,
    key              text        NOT NULL CHECK (key ~ '^[a-z0-9_-]{1,64}$'),
    destination_url  text        NOT NULL DEFAULT '',
    -- [{"partner_id": "...", "basis_points": 3000}, ...] in split order; immutable.
    splits           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, key)
);
CREATE UNIQUE INDEX links_request_id ON links (program_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX links_program_order ON links (program_id, created_at, id);
CREATE INDEX links_owner_order ON links (program_id, owner_partner_id, created_at, id);

-- First touch: one lead per (program, customer).
CREATE TABLE leads (
    program_id           uuid        NOT NULL,
    customer_external_id text        NOT NULL,
    link_id              uuid        NOT NULL REFERENCES links (id),
    partner_id           uuid        NOT NULL,
    occurred_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, customer_external_id)
);

CREATE TABLE sales (
    id                   uuid        PRIMARY KEY,
    program_id           uuid        NOT NULL,
    external_id          text        NOT NULL,
    request_hash         text        NOT NULL,
    customer_external_id text,
    event_type           text        NOT NULL CHECK (event_type IN ('SIGNUP', 'PAYMENT', 'RENEWAL')),
    currency             text        NOT NULL,
    amount               numeric     NOT NULL CHECK (amount > 0),
    product_code         text        NOT NULL DEFAULT '',
    service_code         text        NOT NULL DEFAULT '',
    occurred_at          timestamptz NOT NULL,
    link_id              uuid,
    partner_id           uuid,
    -- Snapshot of the link's splits when the sale was recorded.
    splits               jsonb       NOT NULL DEFAULT '[]'::jsonb,
    state                text        NOT NULL CHECK (state IN ('PENDING', 'SETTLED', 'FAILED', 'UNATTRIBUTED')),
    failure_reason       text        NOT NULL DEFAULT '',
    saga_id              uuid,
    base_commission      numeric,
    total_commission     numeric,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, external_id)
);
-- Seller's prior volume (index-only: amount, currency and state are included).
CREATE INDEX sales_seller_order ON sales (program_id, partner_id, occurred_at, id) INCLUDE (amount, currency, state);
-- Customer's history and first payment.
CREATE INDEX sales_customer_order ON sales (program_id, customer_external_id, occurred_at, id);
-- ListSales.
CREATE INDEX sales_program_order ON sales (program_id, occurred_at, id);

CREATE TABLE sagas (
    id               uuid        PRIMARY KEY,
    program_id       uuid        NOT NULL,
    sale_id          uuid        NOT NULL REFERENCES sales (id),
    kind             text        NOT NULL DEFAULT 'SETTLE_SALE' CHECK (kind IN ('SETTLE_SALE')),
    state            text        NOT NULL CHECK (state IN ('running', 'unwinding', 'done', 'failed', 'stuck')),
    -- 1 for the first run; RetrySaga increments it (each run has its own log).
    run              integer     NOT NULL DEFAULT 1,
    -- Bumped on every claim; every log write and state change is fenced on it.
    generation       bigint      NOT NULL DEFAULT 0,
    owner            text,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0,
    failure_reason   text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sale_id, kind)
);
CREATE INDEX sagas_runnable ON sagas (created_at, id) WHERE state IN ('running', 'unwinding');
CREATE INDEX sagas_program_order ON sagas (program_id, created_at, id);

CREATE TABLE saga_step_events (
    id         bigserial   PRIMARY KEY,
    saga_id    uuid        NOT NULL REFERENCES sagas (id),
    run        integer     NOT NULL,
    step       text        NOT NULL CHECK (step IN ('resolve', 'upline', 'compute', 'post', 'settle')),
    event      text        NOT NULL CHECK (event IN ('started', 'succeeded', 'failed', 'undo_started', 'undo_finished')),
    detail     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    generation bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX saga_step_events_saga ON saga_step_events (saga_id, run, id);

-- The step log is append-only.
CREATE FUNCTION saga_step_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'saga_step_events is append-only (% rejected)', TG_OP;
END;
$$;
CREATE TRIGGER saga_step_events_append_only
    BEFORE UPDATE OR DELETE ON saga_step_events
    FOR EACH ROW EXECUTE FUNCTION saga_step_events_append_only();
