-- Event numbers in runs (issue 15; docs/events.md).
--
-- The sequencer wrote one `event_numbers` row per event — about seven per
-- settled sale across the services, each with its primary-key entry — to
-- say what a pass had already decided: the events of a program that a pass
-- takes get the program's next numbers in (xid, position) order. A pass
-- takes every final event between the watermark and its last one, so the
-- events of one program in one pass are exactly the visible events of that
-- program between its first and last (xid, position): none can be added
-- among them later (every writer of an xid below the pass's xmin had
-- ended), and an event rolled back is never visible. One row per program
-- and pass (a run, at most RUN_LIMIT events: accrue_kit's sequencer) says
-- it all: the n-th of those events, in (xid, position) order, is number
-- first_sequence + n − 1.
CREATE TABLE event_runs (
    program_id     uuid   NOT NULL,
    first_sequence bigint NOT NULL,
    last_sequence  bigint NOT NULL CHECK (last_sequence >= first_sequence),
    -- The run's first and last event, in (xid, position) order.
    first_xid      xid8   NOT NULL,
    first_position bigint NOT NULL,
    last_xid       xid8   NOT NULL,
    last_position  bigint NOT NULL,
    PRIMARY KEY (program_id, first_sequence)
);

-- Events numbered before the numbers left the event rows (the
-- event_numbers migration) have no xid: they get the lowest, as a restore
-- gives numbered events, and the watermark is moved past them if it is not
-- already, so no pass takes them again.
UPDATE event_watermark w SET xid = '0', position = m.last
FROM (SELECT max(position) AS last FROM events WHERE xid IS NULL) m
WHERE m.last IS NOT NULL AND (w.xid, w.position) < ('0'::xid8, m.last);
UPDATE events SET xid = '0' WHERE xid IS NULL;
ALTER TABLE events ALTER COLUMN xid SET NOT NULL;

-- What was numbered keeps its number, as a run of one.
INSERT INTO event_runs (program_id, first_sequence, last_sequence, first_xid, first_position, last_xid, last_position)
SELECT n.program_id, n.sequence, n.sequence, e.xid, e.position, e.xid, e.position
FROM event_numbers n JOIN events e ON e.position = n.position;

-- A webhook delivery keeps its event's position: the claim reads the event
-- by it rather than by number.
ALTER TABLE webhook_deliveries ADD COLUMN event_position bigint;
UPDATE webhook_deliveries d SET event_position = n.position
FROM event_numbers n WHERE n.program_id = d.program_id AND n.sequence = d.sequence;
-- A delivery whose event is gone cannot be sent (never happens: events are
-- never deleted); it is given up rather than left to fail every pass.
UPDATE webhook_deliveries SET state = 'DEAD', last_error = 'event not found when numbering moved to runs'
WHERE event_position IS NULL AND state = 'PENDING';

DROP VIEW sequenced_events;
DROP TABLE event_numbers;

-- The numbered events of the first `runs` runs of `program` (NULL: all)
-- that end after sequence `after`, each with its number; unordered. A
-- reader keeps the numbers above `after` and pages on by runs: the work is
-- bounded by `runs` × RUN_LIMIT events, whatever the feed's length.
CREATE FUNCTION numbered_events(program uuid, after bigint, runs bigint)
RETURNS TABLE (program_id uuid, sequence bigint, "position" bigint, id uuid, type text, subject text,
               partner_id uuid, "time" timestamptz, data bytea)
-- Its tables are this schema's whoever calls it (an operator's session, the
-- view from another search path).
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT r.program_id,
           r.first_sequence - 1 + row_number() OVER (PARTITION BY r.first_sequence ORDER BY e.xid, e.position),
           e.position, e.id, e.type, e.subject, e.partner_id, e.time, e.data
    FROM (SELECT * FROM event_runs WHERE event_runs.program_id = program AND last_sequence > after
          ORDER BY first_sequence LIMIT runs) r
    JOIN events e ON e.program_id = r.program_id
        AND (e.xid, e.position) >= (r.first_xid, r.first_position)
        AND (e.xid, e.position) <= (r.last_xid, r.last_position)
$$;

-- Every numbered event with its number, for tests and operators (it
-- numbers every run: a feed or a webhook reads a window at a time).
CREATE VIEW sequenced_events AS
SELECT n.* FROM (SELECT DISTINCT program_id FROM event_runs) p CROSS JOIN LATERAL numbered_events(p.program_id, 0, NULL) n;
