-- A CreatePayoutRun request_id names one request (AIP-155, the rule every
-- other service follows): the body's hash is kept beside it, so a repeat with
-- another body is ALREADY_EXISTS REQUEST_ID_REUSED instead of a second run
-- (issue 11 item 2). Runs created before this migration have no hash; a
-- repeat of their request_id is accepted as before.
ALTER TABLE payout_runs ADD COLUMN request_hash bytea;

-- Before this migration one request_id could start runs of several periods;
-- the earliest run keeps it (those requests are long done), so that the
-- index below can hold.
UPDATE payout_runs AS r SET request_id = NULL
WHERE r.request_id IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM payout_runs AS e
      WHERE e.program_id = r.program_id AND e.request_id = r.request_id
        AND (e.created_at, e.id) < (r.created_at, r.id)
  );

CREATE UNIQUE INDEX payout_runs_request_id ON payout_runs (program_id, request_id) WHERE request_id IS NOT NULL;
