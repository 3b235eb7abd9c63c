-- Named SQL of backend/enrollment/enrollments.py.

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
  AND ($9::text IS NULL
       OR ($9 = 'unknown_years' AND status <> 'cancelled' AND coverage_facts -> 'unknown_years' IS NOT NULL)
       OR ($9 = 'gap_review' AND status <> 'cancelled' AND gap_review IS NOT NULL))
ORDER BY id
LIMIT $8;

-- name: queue_people
-- Who enrolments are for, as a reviewer confirms them (`queue_people`): name and sealed numbers.
SELECT id, name, id_number_enc, birth_cert_enc FROM persons WHERE id = ANY($1::uuid[]);

-- name: coverage_facts
-- Per (person, year) what cover from a business date ($3) depends on: the person's birth date; the
-- earlier years known covered and known uncovered (mobile_sync_protocol/rules/gaps.py); the years
-- before `year` the person paid back (补缴) by payments neither voided nor refunded; and the year's
-- policy version in force on that date (as policy's `policy_in_force`, the row as JSON; NULL: none; on
-- one row of each year only, so that the client decodes it once).
--   Known covered: a funded enrolment here, or one cancelled because the person is insured as an
--   employee; an imported history year marked paid, subsidised or confirmed; a row of a loaded
--   employee-insurance list (or of the list of employee insurance that ended) whose period (valid_from, else its version's effective date, to
--   valid_to, else open) overlaps the year.
--   Known uncovered: a member of a household here on 1 January of the year in local time ($4; a
--   membership entered in error does not count; the last 30 years), or an imported history year
--   marked cancelled.
--   (A year both covered and uncovered is covered; every other year is unknown.)
-- And whether the person's live enrolment for the year was registered as a new university student's,
-- and whether anything could show the person exempt from waiting (`evidence_possible`: a row of any
-- list, or a claim accepted for the year; what `eligibility.exemption_evidence` reads is among them).
-- The year lists may name a year twice (UNION ALL): they are read as sets. A UNION hashed each
-- person's years into a table sized by the planner's guess (a thousand years per generate_series),
-- set up and walked whole for every person: 0.53 → 0.23 ms per payment of a household of four in
-- bench/sync_push.py.
SELECT t.person_id, t.year, p.birth_date,
       CASE WHEN row_number() OVER (PARTITION BY t.year) = 1 THEN policy.version END AS policy,
       EXISTS (SELECT 1 FROM list_entries le WHERE le.id_number_hash = p.id_number_hash)
       OR EXISTS (SELECT 1 FROM eligibility_claims c
                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted' AND c.coverage_year = t.year)
           AS evidence_possible, EXISTS (
    SELECT 1 FROM enrollments
    WHERE person_id = t.person_id AND coverage_year = t.year AND status <> 'cancelled' AND new_student
) AS new_student, ARRAY(
    SELECT coverage_year FROM enrollments
    WHERE person_id = t.person_id AND coverage_year < t.year
      AND (status IN ('paid', 'subsidised', 'confirmed')
           OR (status = 'cancelled' AND cancel_reason = 'employee_insurance'))
    UNION ALL
    SELECT coverage_year FROM enrollment_history
    WHERE id_number_hash = p.id_number_hash AND coverage_year < t.year AND status <> 'cancelled'
    UNION ALL
    SELECT y
    FROM (  -- each period once, however many loaded versions of the lists repeat it
        SELECT DISTINCT extract(year FROM coalesce(le.valid_from, lv.effective_from))::int AS first_year,
               least(t.year - 1, coalesce(extract(year FROM le.valid_to)::int, t.year - 1)) AS last_year
        FROM list_entries le
        JOIN list_versions lv ON lv.id = le.version_id AND lv.status = 'loaded'
                              AND lv.list_type IN ('employee_insurance', 'employee_insurance_ended')
        WHERE le.id_number_hash = p.id_number_hash
    ) AS listed
    CROSS JOIN LATERAL generate_series(listed.first_year, listed.last_year) AS y
) AS covered_years, ARRAY(
    SELECT coverage_year FROM enrollment_history
    WHERE id_number_hash = p.id_number_hash AND coverage_year < t.year AND status = 'cancelled'
    UNION ALL
    -- A membership spans the 1 Januaries after the local year it began in, up to that of the local year
    -- it ended in (joined_at < local New Year of y ⇔ its local year < y): one range per membership,
    -- not a time-zone look-up per year and membership.
    SELECT y
    FROM memberships m
    CROSS JOIN LATERAL generate_series(
        greatest(extract(year FROM m.joined_at AT TIME ZONE $4::text)::int + 1, extract(year FROM p.birth_date)::int,
                 t.year - 30),
        least(extract(year FROM m.left_at AT TIME ZONE $4::text)::int, t.year - 1)) AS y
    WHERE m.person_id = t.person_id AND m.left_reason IS DISTINCT FROM 'data_error'
) AS uncovered_years, ARRAY(
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
    coverage_facts = u.facts, waiting_months = u.waiting, row_version = e.row_version + 1, updated_at = now()
FROM unnest($1::uuid[], $4::int[], $5::date[], $6::date[], $7::text[], $8::text[], $9::int[], $10::jsonb[])
     AS u(id, subsidy_fen, starts, ends, reason_code, reason, waiting, facts)
WHERE e.id = u.id
RETURNING e.*;

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
       OR EXISTS (SELECT 1 FROM enrollment_history eh WHERE eh.id_number_hash = p.id_number_hash
                  AND eh.coverage_year = $3 - 1 AND eh.status <> 'cancelled'))
  AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.person_id = p.id AND e.coverage_year = $3
                  AND e.status <> 'cancelled')
ORDER BY p.id
LIMIT $6;

-- name: households_of_persons
SELECT m.person_id, m.household_id FROM memberships m WHERE m.person_id = ANY($1::uuid[]) AND m.left_at IS NULL;

-- name: enrollments_after_history
-- Live enrolments, locked, of persons whose history changed ($1 blind indexes, $2 years, pairwise)
-- for a year after a changed one, each with the changed years before its own. The pairs are grouped
-- by person once and joined: each enrolment walked all of them twice before, quadratic in the file
-- (4,000 persons re-imported with this year's enrolments: 3.2 s; a district's file, days).
WITH changed AS (
    SELECT c.h, array_agg(DISTINCT c.y ORDER BY c.y) AS years
    FROM unnest($1::bytea[], $2::int[]) AS c(h, y)
    GROUP BY c.h
)
SELECT e.*, ARRAY(SELECT y FROM unnest(c.years) AS y WHERE y < e.coverage_year ORDER BY 1) AS changed_years
FROM changed c
JOIN persons p ON p.id_number_hash = c.h
JOIN enrollments e ON e.person_id = p.id
WHERE e.status <> 'cancelled' AND e.coverage_year > c.years[1]
ORDER BY e.id
FOR UPDATE OF e;

-- name: open_gap_reviews
UPDATE enrollments AS e SET gap_review = u.review, updated_at = now()
FROM unnest($1::uuid[], $2::jsonb[]) AS u(id, review)
WHERE e.id = u.id;

-- name: apply_gap_review
-- The cover as known now (decided again from the business date), the review closed.
UPDATE enrollments SET coverage_start = $2, coverage_end = $3, coverage_reason = $4, coverage_note = $5,
    waiting_months = $6, coverage_facts = $7, gap_review = NULL, row_version = row_version + 1, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: close_gap_review
UPDATE enrollments SET gap_review = NULL, row_version = row_version + 1, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: households_for_enrolments
-- What an enrolment reads of its household (`enrol`; `enrol_many` for several households at once, a
-- sync push): for each (household $1, person $2) pair, in order, the household (NULL columns if there
-- is none), whether the person is a current member of it and their identity number; on every row,
-- those of the persons with a live enrolment for year $3, and whether eligibility can know anything of
-- any of them (what `eligibility.facts` reads is list rows and accepted claims of the year, by identity
-- number); and the year's policy version in force on $4 (as policy's `policy_in_force`, the row as
-- JSON; NULL: none; on the first row only, so that the client decodes it once).
SELECT w.household_id, h.village_code, h.status, w.person_id, m.id IS NOT NULL AS member, p.id_number_enc,
       p.birth_date, CASE WHEN w.n = 1 THEN policy.version END AS policy,
       ARRAY(SELECT e.person_id FROM enrollments e
             WHERE e.person_id = ANY($2::uuid[]) AND e.coverage_year = $3 AND e.status <> 'cancelled') AS enrolled,
       EXISTS (SELECT 1 FROM persons x JOIN list_entries l ON l.id_number_hash = x.id_number_hash
               WHERE x.id = ANY($2::uuid[]))
       OR EXISTS (SELECT 1 FROM persons x JOIN eligibility_claims c ON c.id_number_hash = x.id_number_hash
                  WHERE x.id = ANY($2::uuid[]) AND c.status = 'accepted' AND c.coverage_year = $3) AS eligibility_known
FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS w (household_id, person_id, n)
LEFT JOIN households h ON h.id = w.household_id
LEFT JOIN memberships m ON m.household_id = w.household_id AND m.person_id = w.person_id AND m.left_at IS NULL
LEFT JOIN persons p ON p.id = m.person_id
LEFT JOIN LATERAL (
    SELECT to_jsonb(v) AS version FROM policy_versions v
    WHERE v.coverage_year = $3
    ORDER BY (v.effective_from <= $4) DESC,
             CASE WHEN v.effective_from <= $4 THEN v.effective_from END DESC,
             CASE WHEN v.effective_from <= $4 THEN v.version END DESC,
             v.effective_from, v.version
    LIMIT 1
) AS policy ON w.n = 1
ORDER BY w.n;

-- name: insert_enrollments_many_with_codes
-- The enrolments of one household or more (`enrol_many`): enrolments $1 of persons $2 in households $3
-- (villages $11), each household's query code for year $4 unless it has one (households $9, code
-- hashes $10; `code_created` on every row of a household tells which), and their audit rows ($12 …
-- $20, as `audit.insert_rows`). Policy version $5, registered on $6, premium $7, new students $8.
WITH code AS (
    INSERT INTO household_query_codes (household_id, coverage_year, code_hash)
    SELECT c.household_id, $4, c.code_hash FROM unnest($9::uuid[], $10::bytea[]) AS c (household_id, code_hash)
    ON CONFLICT DO NOTHING
    RETURNING household_id
), inserted AS (
    INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, policy_version_id,
                             registered_on, premium_fen, new_student)
    SELECT e.id, e.person_id, e.household_id, e.village_code, $4, 'registered', $5, $6, $7, $8
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $11::text[]) WITH ORDINALITY
         AS e (id, person_id, household_id, village_code, n)
    ORDER BY e.n
    RETURNING *
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($12::text[], $13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[], $18::text[],
                $19::jsonb[], $20::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
)
SELECT inserted.*, inserted.household_id IN (SELECT household_id FROM code) AS code_created FROM inserted;
