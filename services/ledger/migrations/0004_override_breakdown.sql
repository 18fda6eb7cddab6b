-- Reports by source partner (issue 14 item 4): the override breakdown reads
-- a partner's OVERRIDE entries by source, and a downline roster counts each
-- source partner's funded sales.
CREATE INDEX entries_source_idx ON entries (program_id, source_partner_id, occurred_at)
    WHERE source_partner_id IS NOT NULL;
CREATE INDEX entries_partner_kind_idx ON entries (program_id, partner_id, kind, occurred_at);
