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

-- name: demo_resident
-- The head of the first household of a village with a funded enrolment for the year: the demo's
-- resident for the residents' page.
SELECT h.id AS household_id, p.name, p.id_number_enc
FROM households h
JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL AND m.relation = 'head'
JOIN persons p ON p.id = m.person_id
JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status IN ('paid', 'confirmed')
WHERE h.village_code = $1 AND p.id_number_enc IS NOT NULL
ORDER BY h.household_no
LIMIT 1;

-- name: demo_resident_code
-- The household's query code for the year, as an enrolment made here stores it (the code the
-- server derives, generation 1), unless it has one.
INSERT INTO household_query_codes (household_id, coverage_year, code_hash) VALUES ($1, $2, $3)
ON CONFLICT (household_id, coverage_year) DO NOTHING;
