-- Named SQL of backend/enrollment/households.py.

-- name: division_level
SELECT level FROM divisions WHERE code = $1;

-- name: person_ids_by_identity
-- Who already holds one of these numbers, with the village of their current household (if any).
SELECT p.id, p.id_number_hash, p.birth_cert_hash, h.id AS household_id, h.village_code
FROM persons p
LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
LEFT JOIN households h ON h.id = m.household_id
WHERE p.id_number_hash = ANY($1::bytea[]) OR p.birth_cert_hash = ANY($2::bytea[]);

-- name: deceased_among
-- Which of these persons (known, in no household now) have a death on record: a membership that
-- ended `deceased`. Asked only when someone would be reused, so a new household's path pays nothing.
SELECT DISTINCT person_id FROM memberships WHERE person_id = ANY($1::uuid[]) AND left_reason = 'deceased';

-- name: village_and_people_by_identity
-- The level of division $1 (NULL if there is none) on every row, with who already holds one of these
-- numbers and the village of their current household (if any): one row of NULLs when nobody does.
-- The lookup is the function of migration 0033, which plans it once per connection (as this first
-- statement of the transaction it would otherwise be planned anew for every household).
-- For the rest of the transaction, statements run on generic plans (`plan_cache_mode`, as a sync push
-- does): registering a household runs the same statements keyed by ids every time, and under the
-- default the enrolment's and the continuity's reads were planned anew for each household.
SELECT f.level, f.id, f.id_number_hash, f.birth_cert_hash, f.household_id, f.village_code
FROM village_and_people_by_identity($1, $2::bytea[], $3::bytea[]) AS f,
     set_config('plan_cache_mode', 'force_generic_plan', true) AS plans;

-- name: insert_household_with_members
-- The household (at version $33: 1, or more for members added at once, `create_household_and_add`),
-- its new persons, every membership and its audit rows ($20 … $28, as
-- `audit.insert_rows`), in one statement (one round trip), which returns the household as
-- `household_with_members` reads it (no enrolments yet): a row per member, new persons from what was
-- inserted, reused persons ($19) as they are stored. The foreign keys are checked at the statement's
-- end, when all three sets of rows exist.
WITH new_persons AS (
    INSERT INTO persons (id, id_number_hash, id_number_enc, birth_cert_hash, birth_cert_enc, id_converted_from_15,
                         name, sex, birth_date, phone_hash, phone_enc)
    SELECT * FROM unnest($7::uuid[], $8::bytea[], $29::bytea[], $9::bytea[], $30::bytea[], $10::boolean[], $11::text[],
                         $12::text[], $13::date[], $14::bytea[], $31::bytea[])
    RETURNING id, name, id_number_enc, birth_cert_enc, id_converted_from_15, birth_date, sex, phone_enc
), new_household AS (
    INSERT INTO households (id, village_code, household_no, address, phone_hash, phone_enc, created_by, head_person_id,
                            row_version)
    VALUES ($1, $2, $3, $4, $5, $32, $6, $15, $33)
    RETURNING id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at,
              updated_at
), new_memberships AS (
    INSERT INTO memberships (id, person_id, household_id, relation)
    SELECT m.id, m.person_id, (SELECT id FROM new_household), m.relation
    FROM unnest($16::uuid[], $17::uuid[], $18::text[]) AS m(id, person_id, relation)
    RETURNING id, person_id, relation, joined_at
), people AS (
    SELECT * FROM new_persons
    UNION ALL
    SELECT id, name, id_number_enc, birth_cert_enc, id_converted_from_15, birth_date, sex, phone_enc
    FROM persons WHERE id = ANY($19::uuid[])
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($20::text[], $21::uuid[], $22::uuid[], $23::text[], $24::text[], $25::text[], $26::text[],
                $27::jsonb[], $28::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
)
SELECT h.id, h.village_code, h.household_no, h.address, h.phone_enc, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone_enc AS member_phone_enc, m.relation, m.joined_at
FROM new_household h
CROSS JOIN new_memberships m
JOIN people p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: villages_and_people_by_identity
-- `village_and_people_by_identity` for the households of `create_households`: the villages $1 (each
-- once) and their levels on every row as one object (`levels`: code → level; a code that is no
-- division is missing), with who already holds one of the numbers.
SELECT f.id, f.id_number_hash, f.birth_cert_hash, f.household_id, f.village_code,
       (SELECT coalesce(jsonb_object_agg(d.code, d.level), '{}') FROM divisions d WHERE d.code = ANY($1::text[]))
           AS levels
FROM village_and_people_by_identity(($1::text[])[1], $2::bytea[], $3::bytea[]) AS f,
     set_config('plan_cache_mode', 'force_generic_plan', true) AS plans;

-- name: insert_households_with_members
-- Households of new persons only (`create_households`), each as `insert_household_with_members`
-- writes one (at version $33: 1, or more for members added at once and an edit), in one statement:
-- the persons ($1 … $8 clear, $9 … $11 sealed, as there), the households ($12 … $18: id, village,
-- number, address, phone's index and sealed phone, head; created by $19), the memberships ($20 … $23:
-- id, person, household, relation) and the audit rows ($24 … $32, as `audit.insert_rows`). Answers
-- each household's row as `household` reads it. The foreign keys are checked at the statement's end,
-- when all the rows exist.
WITH new_persons AS (
    INSERT INTO persons (id, id_number_hash, id_number_enc, birth_cert_hash, birth_cert_enc, id_converted_from_15,
                         name, sex, birth_date, phone_hash, phone_enc)
    SELECT * FROM unnest($1::uuid[], $2::bytea[], $9::bytea[], $3::bytea[], $10::bytea[], $4::boolean[], $5::text[],
                         $6::text[], $7::date[], $8::bytea[], $11::bytea[])
), new_households AS (
    INSERT INTO households (id, village_code, household_no, address, phone_hash, phone_enc, created_by, head_person_id,
                            row_version)
    SELECT h.id, h.village_code, h.household_no, h.address, h.phone_hash, h.phone_enc, $19, h.head_person_id,
           h.row_version
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::bytea[], $17::bytea[], $18::uuid[],
                $33::integer[])
         WITH ORDINALITY AS h(id, village_code, household_no, address, phone_hash, phone_enc, head_person_id,
                              row_version, n)
    ORDER BY h.n
    RETURNING id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at,
              updated_at
), new_memberships AS (
    INSERT INTO memberships (id, person_id, household_id, relation)
    SELECT * FROM unnest($20::uuid[], $21::uuid[], $22::uuid[], $23::text[])
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($24::text[], $25::uuid[], $26::uuid[], $27::text[], $28::text[], $29::text[], $30::text[],
                $31::jsonb[], $32::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
)
SELECT * FROM new_households;

-- name: insert_members
-- New persons and the memberships of these members (new and reused persons) in one statement. The
-- foreign keys are checked at the statement's end, when both sets of rows exist.
WITH new_persons AS (
    INSERT INTO persons (id, id_number_hash, id_number_enc, birth_cert_hash, birth_cert_enc, id_converted_from_15,
                         name, sex, birth_date, phone_hash, phone_enc)
    SELECT * FROM unnest($1::uuid[], $2::bytea[], $13::bytea[], $3::bytea[], $14::bytea[], $4::boolean[], $5::text[],
                         $6::text[], $7::date[], $8::bytea[], $15::bytea[])
)
INSERT INTO memberships (id, person_id, household_id, relation)
SELECT m.id, m.person_id, $9, m.relation
FROM unnest($10::uuid[], $11::uuid[], $12::text[]) AS m(id, person_id, relation);

-- name: household
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at, updated_at
FROM households WHERE id = $1;

-- name: household_for_update
SELECT id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at, updated_at
FROM households WHERE id = $1 FOR UPDATE;

-- name: household_with_members
-- A household and its current members in one read: a row per member (a single row with NULL member
-- columns when it has none), each with their live enrolment for year $2, if any, and their live
-- enrolments of the years $3 (the open years), by year.
SELECT h.id, h.village_code, h.household_no, h.address, h.phone_enc, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone_enc AS member_phone_enc, m.relation, m.joined_at,
       e.id AS enrollment_id, e.status AS enrollment_status, e.coverage_start, e.coverage_end, e.coverage_reason,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', o.id, 'coverage_year', o.coverage_year, 'status', o.status,
                   'coverage_start', o.coverage_start, 'coverage_end', o.coverage_end,
                   'coverage_reason', o.coverage_reason) ORDER BY o.coverage_year), '[]'::jsonb)
        FROM enrollments o
        WHERE o.person_id = p.id AND o.coverage_year = ANY($3::int[]) AND o.status <> 'cancelled') AS enrollments
FROM households h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE h.id = $1
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: update_household
-- The household's number, address and phone changed (its version bumped), answering its row.
UPDATE households SET household_no = $2, address = $3, phone_hash = $4, phone_enc = $5,
    row_version = row_version + 1, updated_at = now()
WHERE id = $1
RETURNING id, village_code, household_no, address, phone_enc, head_person_id, status, row_version, created_at,
          updated_at;

-- name: household_and_members
-- Household $1 and its current members as `household_with_members` reads them (no enrolments);
-- households.py puts `update_household` in the place of `h`, to answer the household it updates.
WITH h AS (SELECT * FROM households WHERE id = $1)
SELECT h.id, h.village_code, h.household_no, h.address, h.phone_enc, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone_enc AS member_phone_enc, m.relation, m.joined_at
FROM h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: enrolments_follow
-- The live enrolments of open years (coverage year $3 or later) of persons $1 follow them into
-- household $2, where they are members now (a move, or a registration that reuses them): its id and
-- village change, status and money do not (payments keep naming the household that paid). Locked in
-- `enrollment.enrollments_for_update`'s order, after the households' rows (as a payment locks its
-- household's row before the enrolments). Answers each with the household it left.
WITH old AS (
    SELECT id, household_id FROM enrollments
    WHERE person_id = ANY($1::uuid[]) AND coverage_year >= $3 AND status <> 'cancelled' AND household_id <> $2
    ORDER BY id
    FOR UPDATE
)
UPDATE enrollments AS e SET household_id = h.id, village_code = h.village_code, row_version = e.row_version + 1,
    updated_at = now()
FROM old, households h
WHERE e.id = old.id AND h.id = $2
RETURNING e.id, e.person_id, e.coverage_year, e.status, e.village_code, old.household_id AS from_household_id;
