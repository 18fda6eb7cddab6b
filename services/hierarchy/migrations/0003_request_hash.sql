-- What a create with a request_id asked for (SHA-256 of the request body), so
-- that a repeat with another body is ALREADY_EXISTS instead of silently
-- answered with the first result. NULL for rows made before this column:
-- their repeats are answered as before.
ALTER TABLE programs ADD COLUMN request_hash bytea;
ALTER TABLE partners ADD COLUMN request_hash bytea;
