-- name: partner_by_client_id
SELECT p.id, p.active, p.secret_hash, p.division_code, dv.level
FROM partners p JOIN divisions dv ON dv.code = p.division_code
WHERE p.client_id = $1;

-- name: person_by_id_number
SELECT id FROM persons WHERE id_number_hash = $1;

-- name: enrollments_of_person
-- A person's enrolments in the partner's scope ($2..$3), newest year first; in a year the live one
-- before cancelled ones. $4: one year only, or NULL for all.
SELECT e.id, e.coverage_year, e.status, e.coverage_start, e.coverage_end, e.coverage_reason, e.coverage_note,
       e.coverage_facts, e.cancel_reason, e.village_code
FROM enrollments e
WHERE e.person_id = $1
  AND e.village_code BETWEEN $2 AND $3
  AND ($4::int IS NULL OR e.coverage_year = $4)
ORDER BY e.coverage_year DESC, e.status = 'cancelled', e.registered_at DESC;

-- name: history_of_person
-- The years the imported enrolment history marks paid, subsidised or confirmed, of a person whose
-- current household is in the partner's scope ($2..$3); $4: one year only, or NULL for all.
-- The household is looked up by its key (`OFFSET 0`: the scope is a filter on it, never the way in).
-- The generic plan PostgreSQL keeps after five runs guesses a scope of a few dozen households and
-- otherwise hashes every household in it for each request: 24,000 index entries read per request
-- at 50,000 persons (tests/api/test_lookup_plans.py).
SELECT h.coverage_year, h.status, hh.village_code
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
CROSS JOIN LATERAL (SELECT x.village_code FROM households x WHERE x.id = m.household_id OFFSET 0) AS hh
JOIN enrollment_history h ON h.id_number_hash = p.id_number_hash
WHERE p.id = $1 AND h.status <> 'cancelled'
  AND hh.village_code BETWEEN $2 AND $3
  AND ($4::int IS NULL OR h.coverage_year = $4)
ORDER BY h.coverage_year DESC;
