-- Signed webhooks over the event feed (issue 16 item 1; docs/events.md
-- "Webhooks"). Every service has these same two tables in its own schema;
-- accrue_kit::events::webhooks serves and delivers them.

-- A program's subscriptions to this service's events.
CREATE TABLE webhook_subscriptions (
    id              uuid        PRIMARY KEY,
    program_id      uuid        NOT NULL,
    -- Where events are POSTed (http or https).
    url             text        NOT NULL,
    -- Only these event types; empty: every type.
    types           text[]      NOT NULL,
    -- whsec_ + base64 of 24 random bytes: the HMAC key of the signatures.
    secret          text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('ACTIVE', 'DELETED')),
    -- The last sequence of the program's feed handed to delivery.
    cursor_sequence bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    -- Idempotency key of the create, and the fingerprint of its body.
    request_id      text,
    request_hash    bytea
);

CREATE UNIQUE INDEX webhook_subscriptions_request_key ON webhook_subscriptions (program_id, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX webhook_subscriptions_program_idx ON webhook_subscriptions (program_id, created_at DESC, id DESC);

-- One event's delivery to one subscription.
CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY,
    subscription_id  uuid        NOT NULL REFERENCES webhook_subscriptions (id),
    program_id       uuid        NOT NULL,
    -- The event: its sequence in the program's feed, its id and type.
    sequence         bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    event_type       text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due (PENDING); a claimed delivery's lease.
    next_attempt_at  timestamptz NOT NULL,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, sequence)
);

-- The worker's claim: each subscription's first pending delivery.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (subscription_id, sequence)
    WHERE state = 'PENDING';
