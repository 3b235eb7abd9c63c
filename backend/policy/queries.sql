-- Named SQL of backend/policy/service.py.

-- name: year_has_money
-- Money counts as collected once any payment for the year was recorded, or any enrolment paid.
SELECT EXISTS (SELECT 1 FROM payments WHERE coverage_year = $1)
    OR EXISTS (SELECT 1 FROM enrollments WHERE coverage_year = $1 AND funding = 'paid');

-- name: next_policy_version
SELECT coalesce(max(version), 0) + 1 FROM policy_versions WHERE coverage_year = $1;

-- name: insert_policy_version
INSERT INTO policy_versions (id, coverage_year, version, effective_from, premium_fen, window_start, window_end,
                             rules, note, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: policy_version_for_update
SELECT * FROM policy_versions WHERE coverage_year = $1 AND version = $2 FOR UPDATE;

-- name: update_policy_version
UPDATE policy_versions SET effective_from = $2, premium_fen = $3, window_start = $4, window_end = $5,
    rules = $6, note = $7, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: policy_versions_of_year
SELECT * FROM policy_versions WHERE coverage_year = $1 ORDER BY version;

-- name: version_has_enrollments
SELECT EXISTS (SELECT 1 FROM enrollments WHERE policy_version_id = $1);

-- name: policy_years
SELECT DISTINCT coverage_year FROM policy_versions ORDER BY coverage_year;

-- name: policy_in_force
-- (`households_for_enrolments` and `coverage_facts` in backend/enrollment/enrollments.sql, and
-- `known_years` in backend/enrollment/continuity.sql, order the versions the same way: a change here
-- goes there too.)
SELECT * FROM policy_versions
WHERE coverage_year = $1
ORDER BY (effective_from <= $2) DESC,
         CASE WHEN effective_from <= $2 THEN effective_from END DESC,
         CASE WHEN effective_from <= $2 THEN version END DESC,
         effective_from, version
LIMIT 1;
