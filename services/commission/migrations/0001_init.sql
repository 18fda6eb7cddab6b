-- commission schema: the search_path is already "commission" (see accrue_kit::db).
SELECT 1;
