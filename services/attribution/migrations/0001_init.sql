-- attribution schema: the search_path is already "attribution" (see accrue_kit::db).
SELECT 1;
