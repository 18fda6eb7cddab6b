-- Clicks, archived links, last-touch attribution and per-sale attribution
-- records (issue 14 items 1–3).

-- An archived link takes no new clicks or leads; its customers' sales still
-- settle and its split config never changes (seed 000).
ALTER TABLE links ADD COLUMN archived_at timestamptz;
-- ListLinks' "links I share in": split partners by containment.
CREATE INDEX links_splits ON links USING gin (splits jsonb_path_ops);

-- Every click, idempotent on the caller's click id. The user agent is kept
-- only as a salted SHA-256 (hex); never raw.
CREATE TABLE clicks (
    id                   uuid        PRIMARY KEY,
    program_id           uuid        NOT NULL,
    click_id             text        NOT NULL,
    request_hash         text        NOT NULL,
    link_id              uuid        NOT NULL REFERENCES links (id),
    partner_id           uuid        NOT NULL,
    occurred_at          timestamptz NOT NULL,
    customer_external_id text,
    referrer             text        NOT NULL DEFAULT '',
    country_code         text        NOT NULL DEFAULT '' CHECK (country_code ~ '^([A-Z]{2})?$'),
    user_agent_hash      text        NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, click_id)
);
CREATE INDEX clicks_link_time ON clicks (link_id, occurred_at);
CREATE INDEX clicks_partner_time ON clicks (program_id, partner_id, occurred_at);
-- Last touch: a customer's clicks, newest first.
CREATE INDEX clicks_customer_time ON clicks (program_id, customer_external_id, occurred_at)
    WHERE customer_external_id IS NOT NULL;

-- Clicks per link per UTC day, kept in the same transaction as the clicks.
CREATE TABLE click_days (
    link_id uuid   NOT NULL REFERENCES links (id),
    day     date   NOT NULL,
    clicks  bigint NOT NULL CHECK (clicks >= 0),
    PRIMARY KEY (link_id, day)
);

-- Every lead credited to a link: under first touch the one lead a customer
-- gets, under last touch each TrackLead (the `leads` row then points at the
-- latest). Last touch reads them with the clicks.
CREATE TABLE lead_events (
    id                   bigserial   PRIMARY KEY,
    program_id           uuid        NOT NULL,
    customer_external_id text        NOT NULL,
    link_id              uuid        NOT NULL REFERENCES links (id),
    partner_id           uuid        NOT NULL,
    occurred_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (program_id, customer_external_id, link_id, occurred_at)
);
CREATE INDEX lead_events_customer_time ON lead_events (program_id, customer_external_id, occurred_at);
CREATE INDEX lead_events_link_time ON lead_events (link_id, occurred_at);
-- The leads that exist already were all credited under first touch.
INSERT INTO lead_events (program_id, customer_external_id, link_id, partner_id, occurred_at, created_at)
SELECT program_id, customer_external_id, link_id, partner_id, occurred_at, created_at FROM leads;

-- A program's attribution model, versioned: a version applies to leads and
-- sales that occur at or after `effective_from`. No row: first touch.
CREATE TABLE attribution_settings (
    program_id     uuid        NOT NULL,
    effective_from timestamptz NOT NULL,
    model          text        NOT NULL CHECK (model IN ('FIRST_TOUCH', 'LAST_TOUCH')),
    window_days    integer     NOT NULL CHECK (window_days >= 0 AND window_days <= 3650),
    request_id     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, effective_from)
);
CREATE UNIQUE INDEX attribution_settings_request ON attribution_settings (program_id, request_id)
    WHERE request_id IS NOT NULL;

-- The rule that chose each sale's link (sales recorded before: first touch).
ALTER TABLE sales ADD COLUMN attribution_model text NOT NULL DEFAULT 'FIRST_TOUCH'
    CHECK (attribution_model IN ('FIRST_TOUCH', 'LAST_TOUCH'));
ALTER TABLE sales ADD COLUMN attribution_window_days integer NOT NULL DEFAULT 0;
-- Link stats.
CREATE INDEX sales_link_time ON sales (link_id, occurred_at) WHERE link_id IS NOT NULL;
CREATE INDEX refunds_sale ON refunds (sale_id);
