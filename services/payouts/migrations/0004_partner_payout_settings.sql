-- Partner payout settings (issue 12 item 4): a partner's own minimum (in
-- one currency; runs of another currency use the run's or the program's),
-- a hold that carries its balance forward, and its payout method label.
CREATE TABLE partner_payout_settings (
    program_id       uuid        NOT NULL,
    partner_id       uuid        NOT NULL,
    minimum_currency text        CHECK (minimum_currency ~ '^[A-Z]{3}$'),
    minimum_amount   numeric     CHECK (minimum_amount >= 0),
    hold             boolean     NOT NULL DEFAULT false,
    payout_method    text        NOT NULL DEFAULT '',
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by       text        NOT NULL,
    PRIMARY KEY (program_id, partner_id),
    CHECK ((minimum_currency IS NULL) = (minimum_amount IS NULL))
);
