-- Schemes (seed 002; DESIGN §4 "Scheme margins"): a tree per program of
-- (service_code, role) → absolute rates, NULL (no row) = inherit from the parent.

CREATE TABLE schemes (
    id                  uuid PRIMARY KEY,
    program_id          uuid NOT NULL,
    -- NULL for the program's root. Never changes, so the tree cannot form a cycle.
    parent_id           uuid REFERENCES schemes (id),
    display_name        text NOT NULL,
    clearance_days      integer NOT NULL CHECK (clearance_days BETWEEN 0 AND 3650),
    request_id          text,
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- When its rates last changed.
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schemes_request_key UNIQUE (program_id, request_id)
);

-- Exactly one root per program.
CREATE UNIQUE INDEX schemes_one_root ON schemes (program_id) WHERE parent_id IS NULL;
CREATE INDEX schemes_parent ON schemes (parent_id);

-- A scheme's own set rates; an absent row is NULL (inherit).
CREATE TABLE scheme_rates (
    scheme_id    uuid NOT NULL REFERENCES schemes (id),
    program_id   uuid NOT NULL,
    service_code text NOT NULL,
    role         text NOT NULL,
    rate         numeric NOT NULL CHECK (rate >= 0 AND rate <= 1),
    PRIMARY KEY (scheme_id, service_code, role)
);

-- Settlement loads a program's whole tree with its rates in one query.
CREATE INDEX scheme_rates_program ON scheme_rates (program_id);

-- SetSchemeRates idempotency keys (AIP-155), per program.
CREATE TABLE scheme_rate_requests (
    program_id          uuid NOT NULL,
    request_id          text NOT NULL,
    scheme_id           uuid NOT NULL REFERENCES schemes (id),
    request_fingerprint text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, request_id)
);

-- A partner's scheme (else the program's root applies).
CREATE TABLE scheme_assignments (
    partner_id uuid PRIMARY KEY,
    program_id uuid NOT NULL,
    scheme_id  uuid NOT NULL REFERENCES schemes (id),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX scheme_assignments_program ON scheme_assignments (program_id, partner_id);
