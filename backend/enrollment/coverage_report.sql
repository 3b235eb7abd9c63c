-- Named SQL of backend/enrollment/coverage_report.py.

-- name: division_names
SELECT code, name, level, parent_code FROM divisions WHERE code BETWEEN $1 AND $2;

-- name: coverage_by_village
-- Per village: current members of active households; those funded for year $3 (a live enrolment
-- paid, subsidised or confirmed, or, without a live enrolment, the imported history's year marked
-- paid, subsidised or confirmed: it covers the year), or registered and not yet paid; confirmed ones.
SELECT h.village_code,
       count(*) AS persons,
       count(*) FILTER (WHERE e.status IN ('paid', 'subsidised', 'confirmed')
                        OR (e.id IS NULL AND hist.covered)) AS funded,
       count(e.id) FILTER (WHERE e.status = 'registered') AS registered_unpaid,
       count(e.id) FILTER (WHERE e.status = 'confirmed') AS confirmed
FROM memberships m
JOIN households h ON h.id = m.household_id AND h.status = 'active'
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled'
LEFT JOIN LATERAL (
    SELECT true AS covered FROM enrollment_history eh
    WHERE eh.id_number_hash = p.id_number_hash AND eh.coverage_year = $3 AND eh.status <> 'cancelled'
) hist ON true
WHERE m.left_at IS NULL AND h.village_code BETWEEN $1 AND $2
GROUP BY h.village_code;
