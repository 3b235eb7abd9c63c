-- Named SQL of backend/enrollment/members.py.

-- name: household_for_update_with_people
-- households.sql's `household_for_update`, with who already holds one of the numbers $2/$3 (as its
-- `person_ids_by_identity`, under other names): a row each, or one with NULL `known_` columns when
-- nobody does.
SELECT h.id, h.village_code, h.household_no, h.address, h.phone_enc, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       k.id AS known_id, k.id_number_hash AS known_id_number_hash, k.birth_cert_hash AS known_birth_cert_hash,
       k.household_id AS known_household_id, k.village_code AS known_village_code
FROM households h
LEFT JOIN (
    SELECT p.id, p.id_number_hash, p.birth_cert_hash, kh.id AS household_id, kh.village_code
    FROM persons p
    LEFT JOIN memberships km ON km.person_id = p.id AND km.left_at IS NULL
    LEFT JOIN households kh ON kh.id = km.household_id
    WHERE p.id_number_hash = ANY($2::bytea[]) OR p.birth_cert_hash = ANY($3::bytea[])
) AS k ON true
WHERE h.id = $1
FOR UPDATE OF h;

-- name: bump_household_row
-- The household's version bumped (as moves.sql's `bump_household`), answering its row; members.py
-- answers it with its members (households.py `with_members`): the row as bumped, its members as the
-- earlier statements of this transaction left them.
UPDATE households SET row_version = row_version + 1, updated_at = now() WHERE id = $1
RETURNING id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at,
          updated_at;

-- name: bump_household_by_with_members
-- `bump_household_row` with the members, for members $2 added together (members.py `add_members`), in their
-- order: the version goes up by one for each, and each one's change record (`record_changes`, written
-- by the memberships' insert with no version yet) takes the version its own bump would have given,
-- as when they are added one by one; a change record of this transaction made before them takes the
-- first (the households' trigger stamps what is left, none, with the last).
WITH numbered AS (
    SELECT person_id, n::int FROM unnest($2::uuid[]) WITH ORDINALITY AS x(person_id, n)
), stamped AS (
    UPDATE record_changes c
    SET version = b.row_version + coalesce((SELECT x.n FROM numbered x
                                            WHERE x.person_id = c.person_id AND c.field = 'membership'), 1)
    FROM households b
    WHERE b.id = $1 AND c.household_id = $1 AND c.version IS NULL
), h AS (
    UPDATE households SET row_version = row_version + cardinality($2::uuid[]), updated_at = now() WHERE id = $1
    RETURNING id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at,
              updated_at
)
SELECT h.id, h.village_code, h.household_no, h.address, h.phone_enc, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone_enc AS member_phone_enc, m.relation, m.joined_at
FROM h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: current_membership
SELECT m.id, m.relation, m.household_id, h.village_code
FROM memberships m JOIN households h ON h.id = m.household_id
WHERE m.person_id = $1 AND m.left_at IS NULL;

-- name: person_for_update
SELECT id, id_number_hash, id_number_enc, birth_cert_enc, id_converted_from_15, name, sex, birth_date, phone_enc,
       row_version
FROM persons WHERE id = $1 FOR UPDATE;

-- name: update_person
UPDATE persons SET id_number_hash = $2, id_number_enc = $9, birth_cert_hash = $3, birth_cert_enc = $10,
    id_converted_from_15 = $4, name = $5, sex = $6, birth_date = $7, phone_hash = $8, phone_enc = $11,
    row_version = row_version + 1, updated_at = now()
WHERE id = $1;

-- name: set_relation
UPDATE memberships SET relation = $2 WHERE id = $1;

-- name: set_head
UPDATE households SET head_person_id = $2 WHERE id = $1;

-- name: members_with_enrollment
SELECT p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone_enc, p.row_version AS person_version, m.id AS membership_id, m.relation, m.joined_at,
       e.id AS enrollment_id, e.status AS enrollment_status, e.coverage_start, e.coverage_end,
       e.coverage_reason
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: leave_household
UPDATE memberships SET left_at = now(), left_reason = $2 WHERE id = $1 AND left_at IS NULL;

-- name: cancel_on_removal
-- A removed person's ($1) live enrolments of open years (coverage year $2 or later) cancelled with
-- reason $3 by $4: all of them ($5 true: the person died) or only those still `registered` (nothing
-- paid or subsidised; who left the household is no longer there to pay). Locked in
-- `enrollment.enrollments_for_update`'s order, after the household's row. Answers each with the state
-- it left.
WITH old AS (
    SELECT id, status FROM enrollments
    WHERE person_id = $1 AND coverage_year >= $2 AND status <> 'cancelled' AND ($5 OR status = 'registered')
    ORDER BY id
    FOR UPDATE
)
UPDATE enrollments AS e SET status = 'cancelled', cancelled_at = now(), cancelled_by = $4, cancel_reason = $3,
    cancel_note = '', row_version = e.row_version + 1, updated_at = now()
FROM old
WHERE e.id = old.id
RETURNING e.id, e.village_code, e.coverage_year, old.status AS from_status;
