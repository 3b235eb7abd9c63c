-- Named SQL of backend/demo.py: the demo population's presence and its summary.

-- name: demo_households_exist
SELECT EXISTS (SELECT 1 FROM households WHERE village_code = ANY($1::text[]));

-- name: population_counts
SELECT count(DISTINCT h.id) AS households, count(m.id) AS persons
FROM households h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
WHERE h.village_code = ANY($1::text[]);

-- name: enrollments_by_year_and_status
SELECT coverage_year, status, count(*) AS n
FROM enrollments
WHERE village_code = ANY($1::text[])
GROUP BY coverage_year, status
ORDER BY coverage_year, status;

-- name: history_rows_of_residents
-- Rows of the imported history that belong to people now living in the villages.
SELECT count(*)
FROM enrollment_history eh
WHERE EXISTS (SELECT 1 FROM persons p
              JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
              JOIN households h ON h.id = m.household_id
              WHERE p.id_number_hash = eh.id_number_hash AND h.village_code = ANY($1::text[]));
