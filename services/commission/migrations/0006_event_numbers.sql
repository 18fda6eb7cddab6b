-- Numbering events without rewriting them (issue 15; docs/events.md).
--
-- The sequencer used to number an event by updating its row: a second,
-- non-HOT copy of every wide row (its data included) and three more index
-- entries, for each of the ~7 events a settled sale writes. Now an event is
-- written once and never changed; its number is a narrow row in
-- `event_numbers`. Which committed events are still unnumbered is told by
-- the writing transaction's id (`xid`) against a watermark instead of an
-- index on `sequence IS NULL`: every event whose transaction id is below the
-- oldest transaction still running (the snapshot's xmin) is final —
-- committed or rolled back, never to change — so a pass numbers the
-- committed ones after the watermark in (xid, position) order and moves the
-- watermark past them. Same guarantees: numbers 1..n per program without
-- gaps, a writer's later transaction after its earlier one, one
-- transaction's events in the order written.
CREATE TABLE event_numbers (
    program_id uuid   NOT NULL,
    sequence   bigint NOT NULL,
    -- events.position of the numbered event.
    position   bigint NOT NULL,
    PRIMARY KEY (program_id, sequence)
);

-- What was numbered keeps its number.
INSERT INTO event_numbers (program_id, sequence, position)
SELECT program_id, sequence, position FROM events WHERE sequence IS NOT NULL;

-- The writing transaction's id (pg_current_xact_id: 64 bits, never wraps).
-- Rows numbered before this migration have none; rows still waiting get the
-- lowest id, so the first pass numbers them, in position order.
ALTER TABLE events ADD COLUMN xid xid8;
UPDATE events SET xid = '1' WHERE sequence IS NULL;
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Drops events_program_sequence_key and events_unsequenced_idx with it.
ALTER TABLE events DROP COLUMN sequence;
-- No read looks an event up by id; the UUID v7 ids stay unique by construction.
ALTER TABLE events DROP CONSTRAINT events_id_key;
-- The sequencer's work list: the events after the watermark.
CREATE INDEX events_xid_idx ON events (xid, position);

-- The last event numbered, in (xid, position) order: one row.
CREATE TABLE event_watermark (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    xid      xid8    NOT NULL,
    position bigint  NOT NULL
);
INSERT INTO event_watermark (xid, position) VALUES ('0', 0);

-- The numbered events, as the feed and the webhook worker read them.
CREATE VIEW sequenced_events AS
SELECT n.program_id, n.sequence, e.position, e.id, e.type, e.subject, e.partner_id, e.time, e.data
FROM event_numbers n JOIN events e ON e.position = n.position;
