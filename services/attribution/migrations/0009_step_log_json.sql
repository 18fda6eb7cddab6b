-- Settlement speed (issue 15): step-log details are stored as the JSON text
-- the engine wrote, not in jsonb's binary form. A settlement's post `started`
-- carries the outputs of resolve, upline and compute (several kB); building
-- jsonb from that text cost Postgres about three times what validating json
-- does, and the log is read whole (by saga id) or by a key path, which json
-- serves as well. (Rewrites the table once.)
ALTER TABLE saga_step_events
    ALTER COLUMN detail DROP DEFAULT,
    ALTER COLUMN detail TYPE json USING detail::json,
    ALTER COLUMN detail SET DEFAULT '{}'::json;
