-- The step log's details (issue 15): post's `started` carries the outputs of
-- resolve, upline and compute, about 6 kB of JSON per sale, which Postgres
-- compresses on insert. pglz took about a tenth of Postgres's CPU in the
-- settlement profile; lz4 compresses several times faster. Rows written
-- before keep pglz (both read back transparently).
ALTER TABLE saga_step_events ALTER COLUMN detail SET COMPRESSION lz4;
