-- Named SQL of backend/enrollment/coverage_report.py.

-- name: division_names
SELECT code, name, level, parent_code FROM divisions WHERE code BETWEEN $1 AND $2;

-- name: coverage_by_village
-- Per village: current members of active households; those whose live enrolment for year $3 is
-- funded (paid, subsidised or confirmed), or registered and not yet paid; confirmed ones.
SELECT h.village_code,
       count(*) AS persons,
       count(e.id) FILTER (WHERE e.status IN ('paid', 'subsidised', 'confirmed')) AS funded,
       count(e.id) FILTER (WHERE e.status = 'registered') AS registered_unpaid,
       count(e.id) FILTER (WHERE e.status = 'confirmed') AS confirmed
FROM memberships m
JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled'
WHERE m.left_at IS NULL AND h.village_code BETWEEN $1 AND $2
GROUP BY h.village_code;
