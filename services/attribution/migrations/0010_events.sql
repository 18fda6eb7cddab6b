-- The event feed's transactional outbox (issue 16 item 1; docs/events.md).
-- Every service has these same two tables in its own schema: events are
-- inserted in the transaction of the change they report (sequence NULL) and
-- numbered per program, after they committed, by the service's sequencer
-- (accrue_kit::events::sequencer): 1, 2, 3, … without gaps.
CREATE TABLE events (
    -- Write order (the sequencer numbers in this order).
    position   bigserial   PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE,
    program_id uuid        NOT NULL,
    -- NULL until the sequencer numbers it.
    sequence   bigint,
    -- accrue.<context>.v1.<resource>.<past tense>
    type       text        NOT NULL,
    -- sales/{id}, entries/{id}, …
    subject    text        NOT NULL,
    -- The partner the event concerns (partner tokens see only their own).
    partner_id uuid,
    -- When the change happened.
    time       timestamptz NOT NULL,
    -- The data message (the type's proto message), encoded.
    data       bytea       NOT NULL
);

-- The feed's reads (program, after a sequence) and the gap-free guarantee.
CREATE UNIQUE INDEX events_program_sequence_key ON events (program_id, sequence) WHERE sequence IS NOT NULL;
-- The sequencer's work list: empty when it has caught up.
CREATE INDEX events_unsequenced_idx ON events (position) WHERE sequence IS NULL;

-- The last number given out per program.
CREATE TABLE event_sequences (
    program_id    uuid   PRIMARY KEY,
    last_sequence bigint NOT NULL
);
