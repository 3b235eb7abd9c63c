-- Named SQL of backend/enrollment/history.py (the upsert itself is `upsert_history` in queries.sql).

-- name: lock_history
-- One import at a time, so that its counts of new, updated and unchanged rows are exact; readers
-- (coverage, renewal) are not blocked.
LOCK TABLE enrollment_history IN SHARE ROW EXCLUSIVE MODE;

-- name: count_existing_history
SELECT count(*)
FROM enrollment_history h
JOIN unnest($1::text[], $2::int[]) AS k(id_number, coverage_year) USING (id_number, coverage_year);
