-- Releasing and settling payout reservations (issue 12 item 2, DESIGN §5).
--
-- A reservation row stays while its payout is live and after it is paid
-- (`settled_at`, `payment_reference` set by SettleReservation, which moves
-- the reserved APPROVED entries to PAID in the same transaction). A payout
-- that is rejected or deleted releases its rows: they are deleted, so the
-- primary key on entry_id lets a later run reserve the entries again, and
-- each release is kept in the append-only `payout_reservation_releases`
-- (who, when, why, from which payout).
ALTER TABLE payout_reservations ADD COLUMN settled_at timestamptz;
ALTER TABLE payout_reservations ADD COLUMN payment_reference text;

CREATE TABLE payout_reservation_releases (
    id          bigserial   PRIMARY KEY,
    entry_id    uuid        NOT NULL,
    payout_id   uuid        NOT NULL,
    program_id  uuid        NOT NULL,
    partner_id  uuid        NOT NULL,
    reserved_at timestamptz NOT NULL,
    released_at timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    reason      text        NOT NULL DEFAULT ''
);

CREATE INDEX payout_reservation_releases_payout_idx ON payout_reservation_releases (program_id, payout_id);

CREATE TRIGGER payout_reservation_releases_immutable BEFORE UPDATE OR DELETE ON payout_reservation_releases
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER payout_reservation_releases_no_truncate BEFORE TRUNCATE ON payout_reservation_releases
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();
