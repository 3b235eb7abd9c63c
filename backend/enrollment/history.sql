-- Named SQL of backend/enrollment/history.py.

-- name: lock_history
-- One import at a time, so that its counts of new, updated and unchanged rows are exact; readers
-- (coverage, renewal) are not blocked.
LOCK TABLE enrollment_history IN SHARE ROW EXCLUSIVE MODE;

-- name: count_existing_history
SELECT count(*)
FROM enrollment_history h
JOIN unnest($1::bytea[], $2::int[]) AS k(id_number_hash, coverage_year) USING (id_number_hash, coverage_year);

-- name: upsert_history
INSERT INTO enrollment_history (id_number_hash, coverage_year, status, source_file, id_number_enc)
SELECT * FROM unnest($1::bytea[], $2::int[], $3::text[], $4::text[], $5::bytea[])
ON CONFLICT (id_number_hash, coverage_year) DO UPDATE SET status = EXCLUDED.status, source_file = EXCLUDED.source_file,
    imported_at = now()
WHERE enrollment_history.status IS DISTINCT FROM EXCLUDED.status
RETURNING id_number_hash, coverage_year;
