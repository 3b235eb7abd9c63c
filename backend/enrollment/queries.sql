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
-- (`household_for_enrolment` and `coverage_facts` order the versions the same way: a change here
-- goes there too.)
SELECT * FROM policy_versions
WHERE coverage_year = $1
ORDER BY (effective_from <= $2) DESC,
         CASE WHEN effective_from <= $2 THEN effective_from END DESC,
         CASE WHEN effective_from <= $2 THEN version END DESC,
         effective_from, version
LIMIT 1;

-- name: policy_by_id
SELECT * FROM policy_versions WHERE id = $1;

-- name: division_level
SELECT level FROM divisions WHERE code = $1;

-- name: set_head
UPDATE households SET head_person_id = $2 WHERE id = $1;

-- name: insert_members
-- New persons and the memberships of these members (new and reused persons) in one statement. The
-- foreign keys are checked at the statement's end, when both sets of rows exist.
WITH new_persons AS (
    INSERT INTO persons (id, id_number, birth_cert_no, id_converted_from_15, name, sex, birth_date, phone)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[], $5::text[], $6::text[], $7::date[],
                         $8::text[])
)
INSERT INTO memberships (id, person_id, household_id, relation)
SELECT m.id, m.person_id, $9, m.relation
FROM unnest($10::uuid[], $11::uuid[], $12::text[]) AS m(id, person_id, relation);

-- name: person_ids_by_identity
-- Who already holds one of these numbers, with the village of their current household (if any).
SELECT p.id, p.id_number, p.birth_cert_no, h.id AS household_id, h.village_code
FROM persons p
LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
LEFT JOIN households h ON h.id = m.household_id
WHERE p.id_number = ANY($1::text[]) OR p.birth_cert_no = ANY($2::text[]);

-- name: village_and_people_by_identity
-- The level of division $1 (NULL if there is none) on every row, with who already holds one of these
-- numbers and the village of their current household (if any): one row of NULLs when nobody does.
SELECT d.level, p.id, p.id_number, p.birth_cert_no, h.id AS household_id, h.village_code
FROM (SELECT (SELECT level FROM divisions WHERE code = $1) AS level) AS d
LEFT JOIN (persons p
           LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
           LEFT JOIN households h ON h.id = m.household_id)
       ON p.id_number = ANY($2::text[]) OR p.birth_cert_no = ANY($3::text[]);

-- name: household
SELECT id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at, updated_at
FROM households WHERE id = $1;

-- name: household_for_update
SELECT id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at, updated_at
FROM households WHERE id = $1 FOR UPDATE;

-- name: members_with_enrollment
SELECT p.id AS person_id, p.name, p.id_number, p.birth_cert_no, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone, p.row_version AS person_version, m.id AS membership_id, m.relation, m.joined_at,
       e.id AS enrollment_id, e.status AS enrollment_status, e.coverage_start, e.coverage_end,
       e.coverage_reason
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: household_with_members
-- A household and its current members in one read: a row per member (a single row with NULL member
-- columns when it has none), each with their live enrolment for year $2, if any.
SELECT h.id, h.village_code, h.household_no, h.address, h.phone, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number, p.birth_cert_no, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone AS member_phone, m.relation, m.joined_at,
       e.id AS enrollment_id, e.status AS enrollment_status, e.coverage_start, e.coverage_end, e.coverage_reason
FROM households h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE h.id = $1
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: bump_household_with_members
-- `bump_household`, answering the household as `household_with_members` reads it (no enrolments): the
-- row as bumped, its members as the earlier statements of this transaction left them.
WITH h AS (
    UPDATE households SET row_version = row_version + 1, updated_at = now() WHERE id = $1
    RETURNING id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at,
              updated_at
)
SELECT h.id, h.village_code, h.household_no, h.address, h.phone, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number, p.birth_cert_no, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone AS member_phone, m.relation, m.joined_at
FROM h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: update_household_with_members
-- `update_household`, answering the household as `household_with_members` reads it (no enrolments).
WITH h AS (
    UPDATE households SET household_no = $2, address = $3, phone = $4,
        row_version = row_version + 1, updated_at = now()
    WHERE id = $1
    RETURNING id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at,
              updated_at
)
SELECT h.id, h.village_code, h.household_no, h.address, h.phone, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number, p.birth_cert_no, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone AS member_phone, m.relation, m.joined_at
FROM h
LEFT JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: household_for_update_with_people
-- `household_for_update`, with who already holds one of the numbers $2/$3 (as `person_ids_by_identity`,
-- under other names): a row each, or one with NULL `known_` columns when nobody does.
SELECT h.id, h.village_code, h.household_no, h.address, h.phone, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       k.id AS known_id, k.id_number AS known_id_number, k.birth_cert_no AS known_birth_cert_no,
       k.household_id AS known_household_id, k.village_code AS known_village_code
FROM households h
LEFT JOIN (
    SELECT p.id, p.id_number, p.birth_cert_no, kh.id AS household_id, kh.village_code
    FROM persons p
    LEFT JOIN memberships km ON km.person_id = p.id AND km.left_at IS NULL
    LEFT JOIN households kh ON kh.id = km.household_id
    WHERE p.id_number = ANY($2::text[]) OR p.birth_cert_no = ANY($3::text[])
) AS k ON true
WHERE h.id = $1
FOR UPDATE OF h;

-- name: bump_household
UPDATE households SET row_version = row_version + 1, updated_at = now() WHERE id = $1
RETURNING row_version;

-- name: update_household
UPDATE households SET household_no = $2, address = $3, phone = $4,
    row_version = row_version + 1, updated_at = now()
WHERE id = $1
RETURNING id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at, updated_at;

-- name: current_membership
SELECT m.id, m.relation, m.household_id, h.village_code
FROM memberships m JOIN households h ON h.id = m.household_id
WHERE m.person_id = $1 AND m.left_at IS NULL;

-- name: person_for_update
SELECT id, id_number, birth_cert_no, id_converted_from_15, name, sex, birth_date, phone, row_version
FROM persons WHERE id = $1 FOR UPDATE;

-- name: update_person
UPDATE persons SET id_number = $2, birth_cert_no = $3, id_converted_from_15 = $4, name = $5, sex = $6,
    birth_date = $7, phone = $8, row_version = row_version + 1, updated_at = now()
WHERE id = $1;

-- name: set_relation
UPDATE memberships SET relation = $2 WHERE id = $1;

-- name: leave_household
UPDATE memberships SET left_at = now(), left_reason = $2 WHERE id = $1 AND left_at IS NULL;

-- name: insert_membership
INSERT INTO memberships (id, person_id, household_id, relation) VALUES ($1, $2, $3, $4);

-- name: insert_move
INSERT INTO person_moves (id, person_id, from_household_id, to_household_id, relation, status, note, requested_by,
                          decided_by, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $9::uuid IS NULL THEN NULL ELSE now() END)
RETURNING *;

-- name: move_for_update
SELECT mv.*, hf.village_code AS from_village, ht.village_code AS to_village
FROM person_moves mv
JOIN households hf ON hf.id = mv.from_household_id
JOIN households ht ON ht.id = mv.to_household_id
WHERE mv.id = $1
FOR UPDATE OF mv;

-- name: decide_move
UPDATE person_moves SET status = $2, decided_by = $3, decided_at = now(), decision_reason = $4 WHERE id = $1
RETURNING *;

-- name: moves_in_scope
SELECT mv.*, hf.village_code AS from_village, ht.village_code AS to_village
FROM person_moves mv
JOIN households hf ON hf.id = mv.from_household_id
JOIN households ht ON ht.id = mv.to_household_id
WHERE (ht.village_code BETWEEN $1 AND $2 OR hf.village_code BETWEEN $1 AND $2)
  AND ($3::text IS NULL OR mv.status = $3)
  AND ($4::uuid IS NULL OR mv.id > $4)
ORDER BY mv.id
LIMIT $5;

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

-- name: households_of_identity
SELECT m.household_id
FROM persons p JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
WHERE p.id_number = $1 OR p.birth_cert_no = $1;

-- name: current_members_of
SELECT m.person_id FROM memberships m WHERE m.household_id = $1 AND m.left_at IS NULL;

-- name: household_for_enrolment
-- The household, and for each person asked ($2, in order) whether a current member of it and their
-- identity number (one row with a NULL person when none is asked); on every row, those of them with
-- a live enrolment for year $3; whether eligibility can know anything of any of them (what
-- `eligibility.facts` reads is list rows and accepted claims of the year, by identity number); and
-- the year's policy version in force on $4 (as `policy_in_force`, the row as JSON; NULL: none).
SELECT h.village_code, h.status, t.person_id, m.id IS NOT NULL AS member, p.id_number, policy.version AS policy,
       ARRAY(SELECT e.person_id FROM enrollments e
             WHERE e.person_id = ANY($2::uuid[]) AND e.coverage_year = $3 AND e.status <> 'cancelled') AS enrolled,
       EXISTS (SELECT 1 FROM persons x JOIN list_entries l ON l.id_number = x.id_number
               WHERE x.id = ANY($2::uuid[]))
       OR EXISTS (SELECT 1 FROM persons x JOIN eligibility_claims c ON c.id_number = x.id_number
                  WHERE x.id = ANY($2::uuid[]) AND c.status = 'accepted' AND c.coverage_year = $3) AS eligibility_known
FROM households h
LEFT JOIN unnest($2::uuid[]) WITH ORDINALITY AS t(person_id, n) ON true
LEFT JOIN memberships m ON m.household_id = h.id AND m.person_id = t.person_id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
LEFT JOIN LATERAL (
    SELECT to_jsonb(v) AS version FROM policy_versions v
    WHERE v.coverage_year = $3
    ORDER BY (v.effective_from <= $4) DESC,
             CASE WHEN v.effective_from <= $4 THEN v.effective_from END DESC,
             CASE WHEN v.effective_from <= $4 THEN v.version END DESC,
             v.effective_from, v.version
    LIMIT 1
) AS policy ON true
WHERE h.id = $1
ORDER BY t.n;

-- name: insert_enrollments_with_code
-- The enrolments, the household's query code for the year unless it has one (`code_created` on every
-- row tells which), and their audit rows ($10 … $18, as `audit.insert_rows`).
WITH code AS (
    INSERT INTO household_query_codes (household_id, coverage_year, code_hash) VALUES ($3, $5, $9)
    ON CONFLICT DO NOTHING
    RETURNING household_id
), inserted AS (
    INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, policy_version_id,
                             registered_on, premium_fen)
    SELECT id, person_id, $3, $4, $5, 'registered', $6, $7, $8
    FROM unnest($1::uuid[], $2::uuid[]) AS e(id, person_id)
    RETURNING *
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($10::text[], $11::uuid[], $12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[],
                $17::jsonb[], $18::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
)
SELECT inserted.*, EXISTS (SELECT 1 FROM code) AS code_created FROM inserted;

-- name: query_code_generation
-- A code a tablet made (device_id set) cannot be derived again: the tablet printed it.
SELECT generation FROM household_query_codes WHERE household_id = $1 AND coverage_year = $2 AND device_id IS NULL;

-- name: enrollment
SELECT * FROM enrollments WHERE id = $1;

-- name: enrollments_for_update
SELECT * FROM enrollments WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;

-- name: set_confirmed
UPDATE enrollments SET status = 'confirmed', confirmed_at = now(), confirmed_by = $2,
    row_version = row_version + 1, updated_at = now()
WHERE id = ANY($1::uuid[])
RETURNING *;

-- name: set_cancelled
UPDATE enrollments SET status = 'cancelled', cancelled_at = now(), cancelled_by = $2, cancel_reason = $3,
    cancel_note = $4, row_version = row_version + 1, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: enrollment_queue
SELECT * FROM enrollments
WHERE village_code BETWEEN $1 AND $2
  AND coverage_year = $3
  AND ($4::text IS NULL OR status = $4)
  AND ($5::text IS NULL OR village_code = $5)
  AND ($6::uuid IS NULL OR household_id = $6)
  AND ($7::uuid IS NULL OR id > $7)
ORDER BY id
LIMIT $8;

-- name: quote_members
SELECT p.id AS person_id, p.name, m.relation, e.id AS enrollment_id, e.status, e.premium_fen, e.subsidy_fen
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: renewal_candidates
-- Current members of active households in scope who had cover (or a live enrolment) last year
-- and have no live enrolment this year.
SELECT p.id AS person_id, p.name, h.id AS household_id, h.village_code, h.household_no
FROM memberships m
JOIN households h ON h.id = m.household_id AND h.status = 'active'
JOIN persons p ON p.id = m.person_id
WHERE m.left_at IS NULL
  AND h.village_code BETWEEN $1 AND $2
  AND ($4::text IS NULL OR h.village_code = $4)
  AND ($5::uuid IS NULL OR p.id > $5)
  AND (EXISTS (SELECT 1 FROM enrollments e WHERE e.person_id = p.id AND e.coverage_year = $3 - 1
                AND e.status <> 'cancelled')
       OR EXISTS (SELECT 1 FROM enrollment_history eh WHERE eh.id_number = p.id_number
                  AND eh.coverage_year = $3 - 1 AND eh.status <> 'cancelled'))
  AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.person_id = p.id AND e.coverage_year = $3
                  AND e.status <> 'cancelled')
ORDER BY p.id
LIMIT $6;

-- name: households_of_persons
SELECT m.person_id, m.household_id FROM memberships m WHERE m.person_id = ANY($1::uuid[]) AND m.left_at IS NULL;

-- name: coverage_by_village
SELECT h.village_code,
       count(*) AS persons,
       count(e.id) AS enrolled,
       count(e.id) FILTER (WHERE e.status = 'confirmed') AS confirmed
FROM memberships m
JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled'
WHERE m.left_at IS NULL AND h.village_code BETWEEN $1 AND $2
GROUP BY h.village_code;

-- name: division_names
SELECT code, name, level, parent_code FROM divisions WHERE code BETWEEN $1 AND $2;

-- name: upsert_history
INSERT INTO enrollment_history (id_number, coverage_year, status, source_file)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])
ON CONFLICT (id_number, coverage_year) DO UPDATE SET status = EXCLUDED.status, source_file = EXCLUDED.source_file,
    imported_at = now()
WHERE enrollment_history.status IS DISTINCT FROM EXCLUDED.status;

-- name: allocated_to_persons
-- What payments that were not voided put towards each person for the year.
SELECT a.person_id, sum(a.amount_fen)::bigint AS amount_fen
FROM payment_allocations a
JOIN payment_ledger p ON p.id = a.payment_id
WHERE p.household_id = $1 AND p.coverage_year = $2 AND p.kind = 'premium' AND NOT p.voided
GROUP BY a.person_id;

-- name: household_money
-- Paid for a household and year, derived from events: payments − approved voids − approved refunds.
SELECT coalesce(sum(amount_fen), 0)::bigint AS payments_fen,
       coalesce(sum(amount_fen) FILTER (WHERE voided), 0)::bigint AS voided_fen,
       coalesce(sum(refunded_fen), 0)::bigint AS refunded_fen
FROM payment_ledger
WHERE household_id = $1 AND coverage_year = $2 AND kind = 'premium';

-- name: search_by_identity
-- A search by identity number on its own plan: the general search's generic plan would scan the scope.
SELECT h.id, h.village_code, h.household_no, h.address, h.status, h.row_version, hp.name AS head_name,
       (SELECT count(*) FROM memberships c WHERE c.household_id = h.id AND c.left_at IS NULL) AS member_count
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id
LEFT JOIN persons hp ON hp.id = h.head_person_id
WHERE (p.id_number = $1 OR p.birth_cert_no = $1) AND h.village_code BETWEEN $2 AND $3;

-- name: insert_household_with_members
-- The household, its new persons, every membership and its audit rows ($20 … $28, as
-- `audit.insert_rows`), in one statement (one round trip), which returns the household as
-- `household_with_members` reads it (no enrolments yet): a row per member, new persons from what was
-- inserted, reused persons ($19) as they are stored. The foreign keys are checked at the statement's
-- end, when all three sets of rows exist.
WITH new_persons AS (
    INSERT INTO persons (id, id_number, birth_cert_no, id_converted_from_15, name, sex, birth_date, phone)
    SELECT * FROM unnest($7::uuid[], $8::text[], $9::text[], $10::boolean[], $11::text[], $12::text[], $13::date[],
                         $14::text[])
    RETURNING id, name, id_number, birth_cert_no, id_converted_from_15, birth_date, sex, phone
), new_household AS (
    INSERT INTO households (id, village_code, household_no, address, phone, created_by, head_person_id)
    VALUES ($1, $2, $3, $4, $5, $6, $15)
    RETURNING id, village_code, household_no, address, phone, head_person_id, status, row_version, created_at,
              updated_at
), new_memberships AS (
    INSERT INTO memberships (id, person_id, household_id, relation)
    SELECT m.id, m.person_id, (SELECT id FROM new_household), m.relation
    FROM unnest($16::uuid[], $17::uuid[], $18::text[]) AS m(id, person_id, relation)
    RETURNING id, person_id, relation, joined_at
), people AS (
    SELECT * FROM new_persons
    UNION ALL
    SELECT id, name, id_number, birth_cert_no, id_converted_from_15, birth_date, sex, phone
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
SELECT h.id, h.village_code, h.household_no, h.address, h.phone, h.head_person_id, h.status, h.row_version,
       h.created_at, h.updated_at,
       p.id AS person_id, p.name, p.id_number, p.birth_cert_no, p.id_converted_from_15, p.birth_date, p.sex,
       p.phone AS member_phone, m.relation, m.joined_at
FROM new_household h
CROSS JOIN new_memberships m
JOIN people p ON p.id = m.person_id
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: coverage_facts
-- Per (person, year) what cover from a business date ($3) depends on: the person's birth date; the
-- latest earlier year with cover, here or in the imported history; the years before `year` the person
-- paid back (补缴) by payments neither voided nor refunded; and the year's policy version in force on
-- that date (as `policy_in_force`, the row as JSON; NULL: none).
SELECT t.person_id, t.year, p.birth_date, policy.version AS policy, (
    SELECT max(c.y) FROM (
        SELECT coverage_year AS y FROM enrollments
        WHERE person_id = t.person_id AND coverage_year < t.year AND status IN ('paid', 'subsidised', 'confirmed')
        UNION ALL
        SELECT coverage_year FROM enrollment_history
        WHERE id_number = p.id_number AND coverage_year < t.year AND status <> 'cancelled'
    ) AS c
) AS last_year, ARRAY(
    SELECT DISTINCT y
    FROM payment_ledger l, unnest(l.back_years) AS y
    WHERE l.kind = 'back_payment' AND l.person_ids @> ARRAY[t.person_id] AND NOT l.voided AND l.refunded_fen = 0
      AND y < t.year
) AS back_paid_years
FROM unnest($1::uuid[], $2::int[]) AS t(person_id, year)
JOIN persons p ON p.id = t.person_id
LEFT JOIN LATERAL (
    SELECT to_jsonb(v) AS version FROM policy_versions v
    WHERE v.coverage_year = t.year
    ORDER BY (v.effective_from <= $3) DESC,
             CASE WHEN v.effective_from <= $3 THEN v.effective_from END DESC,
             CASE WHEN v.effective_from <= $3 THEN v.version END DESC,
             v.effective_from, v.version
    LIMIT 1
) AS policy ON true
WHERE p.id = ANY($1::uuid[]);  -- (looked up by key, however few rows the planner expects)

-- name: set_funded_many
UPDATE enrollments AS e SET status = $2, funding = $2, business_date = $3, subsidy_fen = u.subsidy_fen,
    coverage_start = u.starts, coverage_end = u.ends, coverage_reason = u.reason_code, coverage_note = u.reason,
    waiting_months = u.waiting, row_version = e.row_version + 1, updated_at = now()
FROM unnest($1::uuid[], $4::int[], $5::date[], $6::date[], $7::text[], $8::text[], $9::int[])
     AS u(id, subsidy_fen, starts, ends, reason_code, reason, waiting)
WHERE e.id = u.id
RETURNING e.*;
