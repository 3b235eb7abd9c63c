-- name: partner_by_client_id
SELECT p.id, p.active, p.secret_hash, p.division_code, dv.level
FROM partners p JOIN divisions dv ON dv.code = p.division_code
WHERE p.client_id = $1;

-- name: coverage_of_person
-- The person whose identity number's blind index is $1, with one row for each of their enrolments in
-- the partner's scope ($2..$3) and each year the imported enrolment history marks paid, subsidised or
-- confirmed while their current household is in that scope (`history`); the years $4 to $5, or all
-- when $4 is NULL. No row: nobody holds the number; one row without a year: the person, with nothing
-- in scope. One round trip for what were three, and four more when the next year was asked for too
-- (issue 20). In a year, the live enrolment before cancelled ones, the latest registered first, then
-- by id (two registered in one transaction, a push's, share the time: one order whatever the plan).
-- The household is reached from the person by its key (`OFFSET 0`: the scope is a filter on it,
-- never the way in). The generic plan PostgreSQL keeps after five runs guesses a scope of a few dozen
-- households and otherwise hashed every household in it for each request: 24,000 index entries read
-- per request at 50,000 persons (tests/api/test_lookup_plans.py).
SELECT p.id AS person_id, c.*
FROM persons p
LEFT JOIN LATERAL (
    SELECT false AS history, e.id, e.coverage_year, e.status, e.coverage_start, e.coverage_end, e.coverage_reason,
           e.coverage_note, e.coverage_facts, e.cancel_reason, e.village_code, e.registered_at
    FROM enrollments e
    WHERE e.person_id = p.id
      AND e.village_code BETWEEN $2 AND $3
      AND ($4::int IS NULL OR e.coverage_year BETWEEN $4 AND $5)
    UNION ALL
    SELECT true, NULL, h.coverage_year, h.status, NULL, NULL, NULL, NULL, NULL, NULL, hh.village_code, NULL
    FROM memberships m
    CROSS JOIN LATERAL (SELECT x.village_code FROM households x WHERE x.id = m.household_id OFFSET 0) AS hh
    JOIN enrollment_history h ON h.id_number_hash = p.id_number_hash
    WHERE m.person_id = p.id AND m.left_at IS NULL AND h.status <> 'cancelled'
      AND hh.village_code BETWEEN $2 AND $3
      AND ($4::int IS NULL OR h.coverage_year BETWEEN $4 AND $5)
) AS c ON true
WHERE p.id_number_hash = $1
ORDER BY c.coverage_year DESC, c.status = 'cancelled', c.registered_at DESC, c.id;
