-- hierarchy schema: the search_path is already "hierarchy" (see accrue_kit::db).
SELECT 1;
