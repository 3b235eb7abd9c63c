-- Named SQL of backend/enrollment/search.py.
--
-- A search is a read of personal data and leaves its audit row in the same statement: the rows it
-- answers and the row that says so commit together (outside a transaction, as the API runs it, the
-- statement is its own), and neither costs a round trip of its own. The audit row's columns after
-- the search's own parameters: the actor's kind, id and device, the division, what was searched by
-- (`criteria`, field names only) and the request id (as `audit.service.record` writes them).

-- name: search_households
WITH found AS (
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
    LIMIT $7 + 1  -- one more than the page: whether there is a next one
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT $8, $9, $10, 'search', 'household', NULL, $11,
           jsonb_build_object('criteria', $12::jsonb, 'results', least((SELECT count(*) FROM found), $7)), $13
)
SELECT * FROM found ORDER BY id;

-- name: search_by_identity
-- A search by identity number on its own plan: the general search's generic plan would scan the scope.
-- The household is reached from the person by its key (`OFFSET 0`, as FHIR's `history_of_person`):
-- the scope is a filter on it, never the way in (tests/api/test_lookup_plans.py). $1 and $4: the
-- blind indexes of the number as an identity and as a birth-certificate number; $5 … $9 the other
-- criteria and the page. The audit row names whom the number found in scope (`person_ids`, as
-- `audit.service.persons` gives them), whether or not the other criteria kept their households.
WITH matched AS MATERIALIZED (
    SELECT p.id AS person_id, h.id, h.village_code, h.household_no, h.address, h.status, h.row_version,
           hp.name AS head_name,
           (SELECT count(*) FROM memberships c WHERE c.household_id = h.id AND c.left_at IS NULL) AS member_count
    FROM persons p
    JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
    CROSS JOIN LATERAL (
        SELECT x.id, x.village_code, x.household_no, x.address, x.status, x.row_version, x.head_person_id
        FROM households x WHERE x.id = m.household_id OFFSET 0
    ) AS h
    LEFT JOIN persons hp ON hp.id = h.head_person_id
    WHERE (p.id_number_hash = $1 OR p.birth_cert_hash = $4) AND h.village_code BETWEEN $2 AND $3
), found AS (
    SELECT * FROM matched
    WHERE ($5::text IS NULL OR household_no = $5)
      AND ($6::text IS NULL OR starts_with(coalesce(head_name, ''), $6))
      AND ($7::text IS NULL OR village_code = $7)
      AND ($8::uuid IS NULL OR id > $8)
    ORDER BY id
    LIMIT $9
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT $10, $11, $12, 'search', 'household', NULL, $13,
           jsonb_build_object(
               'criteria', $14::jsonb,
               'results', (SELECT count(*) FROM found),
               'person_ids', coalesce((SELECT jsonb_agg(DISTINCT person_id::text COLLATE "C"
                                                        ORDER BY person_id::text COLLATE "C")
                                       FROM matched), '[]')),
           $15
)
SELECT * FROM found ORDER BY id;
