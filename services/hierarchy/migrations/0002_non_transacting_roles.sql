-- Roles whose partners may not transact (seed 002: "Admin & SuperAdmin cannot
-- initiate transactions"). Attribution rejects a sale whose seller holds one.
-- Every entry is on the program's ladder. Programs created before this column
-- get the documented default: ADMIN when it is on their ladder, else none.

ALTER TABLE programs ADD COLUMN non_transacting_roles text[] NOT NULL DEFAULT '{}';

UPDATE programs SET non_transacting_roles = ARRAY['ADMIN'] WHERE 'ADMIN' = ANY (role_ladder);

ALTER TABLE programs
    ADD CONSTRAINT programs_non_transacting_roles_on_ladder CHECK (non_transacting_roles <@ role_ladder);
