-- ledger schema: the search_path is already "ledger" (see accrue_kit::db).
SELECT 1;
