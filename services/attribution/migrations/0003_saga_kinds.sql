-- The sagas table is shared by every saga kind the attribution service runs
-- (SettleSale today, ClawbackSale next), each driven by accrue-saga's engine,
-- which claims only its own kind.

-- A saga states its kind: a default would start an unintended saga silently.
ALTER TABLE sagas ALTER COLUMN kind DROP DEFAULT;

-- Step names belong to each kind's definition, not to the table (the engine
-- marks a saga whose log names a step its kind lacks stuck).
ALTER TABLE saga_step_events DROP CONSTRAINT saga_step_events_step_check;
ALTER TABLE saga_step_events ADD CONSTRAINT saga_step_events_step_check CHECK (step ~ '^[a-z][a-z_]{0,63}$');

-- Claims filter on kind, then take the oldest runnable sagas.
DROP INDEX sagas_runnable;
CREATE INDEX sagas_runnable ON sagas (kind, created_at, id) WHERE state IN ('running', 'unwinding');
