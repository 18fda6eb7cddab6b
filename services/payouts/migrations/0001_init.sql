-- payouts schema: the search_path is already "payouts" (see accrue_kit::db).
SELECT 1;
