-- Named SQL of backend/enrollment/search.py.

-- name: search_households
SELECT h.id, h.village_code, h.household_no, h.address, h.status, h.row_version, hp.name AS head_name,
       (SELECT count(*) FROM memberships c WHERE c.household_id = h.id AND c.left_at IS NULL) AS member_count
FROM households h
LEFT JOIN persons hp ON hp.id = h.head_person_id
WHERE h.village_code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR h.household_no = $3)
  AND ($4::text IS NULL OR hp.name LIKE $4 || '%')
  AND ($5::text IS NULL OR h.village_code = $5)
  AND ($6::uuid IS NULL OR h.id > $6)
ORDER BY h.id
LIMIT $7;

-- name: search_by_identity
-- A search by identity number on its own plan: the general search's generic plan would scan the scope.
-- The household is reached from the person by its key (`OFFSET 0`, as FHIR's `history_of_person`):
-- the scope is a filter on it, never the way in (tests/api/test_lookup_plans.py).
-- person_id: whom the search found, for the audit.
SELECT p.id AS person_id, h.id, h.village_code, h.household_no, h.address, h.status, h.row_version, hp.name AS head_name,
       (SELECT count(*) FROM memberships c WHERE c.household_id = h.id AND c.left_at IS NULL) AS member_count
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
CROSS JOIN LATERAL (
    SELECT x.id, x.village_code, x.household_no, x.address, x.status, x.row_version, x.head_person_id
    FROM households x WHERE x.id = m.household_id OFFSET 0
) AS h
LEFT JOIN persons hp ON hp.id = h.head_person_id
-- $1 and $4: the blind indexes of the number as an identity and as a birth-certificate number.
WHERE (p.id_number_hash = $1 OR p.birth_cert_hash = $4) AND h.village_code BETWEEN $2 AND $3;
