-- Qualified overrides (issue 16 item 3): an override plan may require each
-- ancestor to qualify for its level (personal volume over a trailing window,
-- ACTIVE direct sub-partners). NULL: no qualification, as before. The JSON
-- is the domain's `Qualification` ({"personal_volume": {"minimum":
-- {"currency_code", "amount"}, "window_days"}, "min_active_direct_partners"}).
ALTER TABLE override_plans ADD COLUMN qualification jsonb;
