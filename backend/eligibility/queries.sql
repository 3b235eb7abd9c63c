-- Named SQL of backend/eligibility.

-- name: lock_list
-- One upload per list type and scope at a time: version numbers and diffs follow upload order.
SELECT pg_advisory_xact_lock(hashtext('list_versions'), hashtext($1::text || ':' || $2::text));

-- name: policy_category_exists
SELECT EXISTS (
    SELECT 1 FROM policy_versions v, jsonb_array_elements(v.rules -> 'categories') AS c
    WHERE c ->> 'category' = $1
);

-- name: division
SELECT code, level, name FROM divisions WHERE code = $1;

-- name: district_divisions
SELECT code, level FROM divisions WHERE level = 'district' ORDER BY code;

-- name: division_names_in_scope
SELECT name, code FROM divisions WHERE code BETWEEN $1 AND $2;

-- name: previous_version
-- The newest loaded version: the one a new version is diffed against, and the one in force from its
-- effective date on (a new version dated before it must say it supersedes it). A settlement list's
-- versions are those of the year it concerns ($3; NULL for other kinds).
SELECT id, version, effective_from FROM list_versions
WHERE list_type = $1 AND division_code = $2 AND status = 'loaded' AND concerns_year IS NOT DISTINCT FROM $3::int
ORDER BY version DESC
LIMIT 1;

-- name: next_version
-- Rejected uploads take no number (those of before migration 0019 keep theirs: numbered after them).
SELECT coalesce(max(version), 0) + 1 FROM list_versions WHERE list_type = $1 AND division_code = $2;

-- name: policy_categories
-- The subsidy categories some published policy names: list types a file's category column may give.
SELECT DISTINCT c ->> 'category' AS category
FROM policy_versions v, jsonb_array_elements(v.rules -> 'categories') AS c
WHERE c ->> 'category' IS NOT NULL;

-- name: insert_version
INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version, effective_from, status,
    partial, rows_read, rows_loaded, rows_rejected, errors, previous_id, added, removed, changed, file_name,
    file_sha256, uploaded_by, supersedes, concerns_year)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
RETURNING *;

-- name: diff_counts
-- Persons added, removed and changed from version $2 (none: every person is added) to version $1. A
-- person is the same by the blind index (the sealed values differ on every load: fresh nonces).
SELECT count(*) FILTER (WHERE o.id_number_hash IS NULL) AS added,
       count(*) FILTER (WHERE n.id_number_hash IS NULL) AS removed,
       count(*) FILTER (WHERE n.id_number_hash IS NOT NULL AND o.id_number_hash IS NOT NULL
           AND (n.name, n.valid_from, n.valid_to, n.division_code)
               IS DISTINCT FROM (o.name, o.valid_from, o.valid_to, o.division_code)) AS changed
FROM (SELECT * FROM list_entries WHERE version_id = $1) AS n
FULL JOIN (SELECT * FROM list_entries WHERE version_id = $2) AS o ON o.id_number_hash = n.id_number_hash;

-- name: entries_unplaced_exist
-- Whether a township's upload ($1) has a row with no division whose person lives in no household
-- of that township (staging.sql's staging_unplaced finds them for the report).
SELECT EXISTS (
    SELECT 1 FROM list_entries e
    WHERE e.version_id = $1 AND e.division_code IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM persons p
        JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
        JOIN households h ON h.id = m.household_id
        WHERE p.id_number_hash = e.id_number_hash AND h.village_code BETWEEN $2 AND $3
      )
);

-- name: open_exclusion_reviews
-- Live enrolments, for the version's year or later, of persons on a new exclusion list version.
INSERT INTO exclusion_reviews (id, enrollment_id, village_code, coverage_year, list_type, list_version_id, row_no)
SELECT gen_random_uuid(), e.id, e.village_code, e.coverage_year, $2, $1, l.row_no
FROM list_entries l
JOIN persons p ON p.id_number_hash = l.id_number_hash
JOIN enrollments e ON e.person_id = p.id AND e.status <> 'cancelled' AND e.coverage_year >= $3
WHERE l.version_id = $1
ON CONFLICT ON CONSTRAINT exclusion_reviews_once DO NOTHING
RETURNING id;

-- name: list_version
SELECT * FROM list_versions WHERE id = $1;

-- name: list_versions
-- Versions whose scope overlaps the caller's: theirs, those under it, and those above it.
SELECT * FROM list_versions
WHERE (division_code BETWEEN $1 AND $2 OR left($3::text, length(scope_prefix)) = scope_prefix)
  AND ($4::text IS NULL OR list_type = $4)
  AND ($5::text IS NULL OR status = $5)
  AND ($6::uuid IS NULL OR id < $6)
ORDER BY id DESC
LIMIT $7;

-- name: list_entries_page
-- A version's rows the caller may see: all ($6, the version lies in the caller's scope), else by the
-- row's division, else by the person's household. The household is reached from the row's person by
-- key (`OFFSET 0`): a generic plan guesses a scope of a few dozen households, and otherwise hashed
-- every member of the scope for each page (tests/api/test_lookup_plans.py).
SELECT e.row_no, e.id_number_enc, e.name, e.valid_from, e.valid_to, e.division_code
FROM list_entries e
WHERE e.version_id = $1 AND e.row_no > $4
  AND ($6 OR e.division_code BETWEEN $2 AND $3
       OR (e.division_code IS NULL AND EXISTS (
           SELECT 1 FROM persons p
           JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
           CROSS JOIN LATERAL (SELECT x.village_code FROM households x WHERE x.id = m.household_id OFFSET 0) AS h
           WHERE p.id_number_hash = e.id_number_hash AND h.village_code BETWEEN $2 AND $3)))
ORDER BY e.row_no
LIMIT $5;

-- name: list_diff
-- Persons added, removed or changed from version $2 to version $1, in blind-index order (arbitrary
-- but stable; $3 is the last hash of the page before, '' for the first page). A row with no division
-- is shown by its person's household, reached by key as in `list_entries_page`.
SELECT coalesce(n.id_number_hash, o.id_number_hash) AS id_number_hash,
       coalesce(n.id_number_enc, o.id_number_enc) AS id_number_enc,
       CASE WHEN o.id_number_hash IS NULL THEN 'added' WHEN n.id_number_hash IS NULL THEN 'removed' ELSE 'changed' END
           AS change,
       n.row_no AS row_no, o.row_no AS previous_row_no,
       n.name, o.name AS previous_name,
       n.valid_from, o.valid_from AS previous_valid_from,
       n.valid_to, o.valid_to AS previous_valid_to,
       n.division_code, o.division_code AS previous_division_code
FROM (SELECT * FROM list_entries WHERE version_id = $1) AS n
FULL JOIN (SELECT * FROM list_entries WHERE version_id = $2) AS o ON o.id_number_hash = n.id_number_hash
WHERE (n.id_number_hash IS NULL OR o.id_number_hash IS NULL
       OR (n.name, n.valid_from, n.valid_to, n.division_code)
          IS DISTINCT FROM (o.name, o.valid_from, o.valid_to, o.division_code))
  AND coalesce(n.id_number_hash, o.id_number_hash) > $3::bytea
  AND ($7 OR coalesce(n.division_code, o.division_code) BETWEEN $4 AND $5
       OR (coalesce(n.division_code, o.division_code) IS NULL AND EXISTS (
           SELECT 1 FROM persons p
           JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
           CROSS JOIN LATERAL (SELECT x.village_code FROM households x WHERE x.id = m.household_id OFFSET 0) AS h
           WHERE p.id_number_hash = coalesce(n.id_number_hash, o.id_number_hash)
             AND h.village_code BETWEEN $4 AND $5)))
ORDER BY 1
LIMIT $6;

-- name: facts_in_force
-- What eligibility knows of persons (by their numbers' blind index) on date $2 for year $3, in one
-- round trip: the list rows that apply (`source` 'list': per list type and uploader scope, the
-- version in force on that date — the highest-numbered loaded one effective on or before it: README,
-- Lists — and rows valid on it), then the accepted claims of subsidy categories of the year (`source`
-- 'claim'; a claim proving an exemption gives no category), each person's in the order raised.
WITH in_force AS (
    SELECT DISTINCT ON (list_type, division_code) id, list_type, kind, version, effective_from
    FROM list_versions
    WHERE status = 'loaded' AND effective_from <= $2
    ORDER BY list_type, division_code, version DESC
)
SELECT 'list' AS source, e.id_number_hash, e.row_no, e.valid_from, e.valid_to, v.id AS list_id, v.list_type,
       v.kind, v.version, v.effective_from, NULL::uuid AS claim_id, NULL::text AS category,
       NULL::uuid AS decided_by, NULL::timestamptz AS decided_at, NULL::timestamptz AS raised_at
FROM list_entries e
JOIN in_force v ON v.id = e.version_id
WHERE e.id_number_hash = ANY($1::bytea[])
  AND (e.valid_from IS NULL OR e.valid_from <= $2)
  AND (e.valid_to IS NULL OR e.valid_to >= $2)
UNION ALL
SELECT 'claim', c.id_number_hash, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.id, c.category, c.decided_by,
       c.decided_at, c.raised_at
FROM eligibility_claims c
WHERE c.status = 'accepted' AND c.purpose = 'subsidy' AND c.coverage_year = $3 AND c.id_number_hash = ANY($1::bytea[])
ORDER BY source DESC, id_number_hash, list_type, version, raised_at;  -- 'list' before 'claim'

-- name: exemption_evidence
-- What can show registered persons ($1) exempt from the waiting period in year $2 for a business date
-- $3: rows of the lists $4 in the version in force on $3 (as facts_in_force's list rows; a row's own dates are
-- for the rule to judge, mobile_sync_protocol/rules/exemptions.py), and claims accepted for the year
-- of the categories $4 (subsidy or exemption), with the dates of their proof.
WITH in_force AS (
    SELECT DISTINCT ON (list_type, division_code) id, list_type, version
    FROM list_versions
    WHERE status = 'loaded' AND effective_from <= $3 AND list_type = ANY($4::text[])
    ORDER BY list_type, division_code, version DESC
), people AS (
    SELECT id, id_number_hash FROM persons WHERE id = ANY($1::uuid[]) AND id_number_hash IS NOT NULL
)
SELECT x.id AS person_id, 'list' AS source, v.list_type, e.valid_from, e.valid_to, v.id AS list_id, v.version,
       e.row_no AS row, NULL::uuid AS claim_id
FROM people x
JOIN list_entries e ON e.id_number_hash = x.id_number_hash
JOIN in_force v ON v.id = e.version_id
UNION ALL
SELECT x.id, 'claim', c.category, c.valid_from, c.valid_to, NULL, NULL, NULL, c.id
FROM people x
JOIN eligibility_claims c ON c.id_number_hash = x.id_number_hash
WHERE c.status = 'accepted' AND c.coverage_year = $2 AND c.category = ANY($4::text[]);

-- name: persons_and_live_enrollments_by_id_number
-- Who holds these numbers (whom a check touched, for the audit: their record ids), each with their
-- live enrolment of year $2 if any (`enrollment_id` NULL: none) and the village of their current
-- household (`home_village` NULL: none). One row per person: a number is held once, a person has one
-- live enrolment a year and one current household.
SELECT p.id AS person_id, p.id_number_hash, e.id AS enrollment_id, e.village_code, h.village_code AS home_village
FROM persons p
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
LEFT JOIN households h ON h.id = m.household_id
WHERE p.id_number_hash = ANY($1::bytea[]);

-- name: id_numbers_of_persons
-- The blind index of registered persons' numbers (persons with a birth certificate only have none).
SELECT id, id_number_hash FROM persons WHERE id = ANY($1::uuid[]) AND id_number_hash IS NOT NULL;

-- name: persons_for_subsidy
-- Registered persons' blind index (NULL: a birth certificate only) and birth date (their age).
SELECT id, id_number_hash, birth_date FROM persons WHERE id = ANY($1::uuid[]);

-- name: person_home
SELECT p.id, p.id_number_hash, p.id_number_enc, h.village_code
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id
WHERE p.id = $1;

-- name: insert_claim
-- The person's number as the person's row keeps it (hash and sealed value of the same kind).
INSERT INTO eligibility_claims (id, person_id, id_number_hash, id_number_enc, village_code, coverage_year, category,
    note, evidence_ref, raised_by, purpose, valid_from, valid_to)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING *;

-- name: claim
SELECT * FROM eligibility_claims WHERE id = $1;

-- name: claim_for_update
SELECT * FROM eligibility_claims WHERE id = $1 FOR UPDATE;

-- name: decide_claim
UPDATE eligibility_claims SET status = $2, decided_by = $3, decided_at = now(), reason = $4,
    row_version = row_version + 1
WHERE id = $1
RETURNING *;

-- name: claim_queue
SELECT * FROM eligibility_claims
WHERE village_code BETWEEN $1 AND $2
  AND ($3::text IS NULL OR status = $3)
  AND ($4::text IS NULL OR category = $4)
  AND ($5::int IS NULL OR coverage_year = $5)
  AND ($6::text IS NULL OR village_code = $6)
  AND ($7::uuid IS NULL OR id > $7)
ORDER BY id
LIMIT $8;

-- name: set_registered_subsidy
-- The subsidy known at registration, shown until payment fixes it.
UPDATE enrollments SET subsidy_fen = $2, row_version = row_version + 1, updated_at = now()
WHERE id = $1 AND status = 'registered';

-- name: subsidised_not_enrolled
-- Persons on a subsidy list in force on $4 (or with an accepted claim for year $3) who are not
-- enrolled for $3: the people a township must visit first. Placed by their household, else by
-- the list row's division. In blind-index order ($5: the last hash of the page before).
WITH in_force AS (
    SELECT DISTINCT ON (list_type, division_code) id, list_type, version
    FROM list_versions
    WHERE status = 'loaded' AND kind = 'subsidy' AND effective_from <= $4
    ORDER BY list_type, division_code, version DESC
), held AS (
    SELECT e.id_number_hash, e.id_number_enc, e.name, v.list_type AS category, e.division_code
    FROM list_entries e JOIN in_force v ON v.id = e.version_id
    WHERE (e.valid_from IS NULL OR e.valid_from <= $4) AND (e.valid_to IS NULL OR e.valid_to >= $4)
    UNION ALL
    SELECT c.id_number_hash, c.id_number_enc, p.name, c.category, c.village_code
    FROM eligibility_claims c JOIN persons p ON p.id = c.person_id
    WHERE c.status = 'accepted' AND c.coverage_year = $3 AND c.id_number_hash IS NOT NULL
), placed AS (
    SELECT h.id_number_hash, (array_agg(h.id_number_enc))[1] AS id_number_enc, min(h.name) AS name,
           array_agg(DISTINCT h.category ORDER BY h.category) AS categories,
           min(p.id::text)::uuid AS person_id, min(hh.id::text)::uuid AS household_id,
           coalesce(min(hh.village_code), min(h.division_code)) AS division_code
    FROM held h
    LEFT JOIN persons p ON p.id_number_hash = h.id_number_hash
    LEFT JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
    LEFT JOIN households hh ON hh.id = m.household_id
    GROUP BY h.id_number_hash
)
SELECT placed.*
FROM placed
WHERE division_code BETWEEN $1 AND $2
  AND NOT EXISTS (
    SELECT 1 FROM enrollments e
    WHERE e.person_id = placed.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled')
  AND NOT EXISTS (
    -- not on an exclusion list in force either (deceased, employee insurance)
    SELECT 1 FROM list_entries x
    JOIN list_versions xv ON xv.id = x.version_id AND xv.kind = 'exclusion' AND xv.status = 'loaded'
    WHERE x.id_number_hash = placed.id_number_hash
      AND xv.id = (SELECT id FROM list_versions w
                   WHERE w.list_type = xv.list_type AND w.division_code = xv.division_code
                     AND w.status = 'loaded' AND w.effective_from <= $4
                   ORDER BY w.version DESC LIMIT 1))
  AND ($5::bytea IS NULL OR id_number_hash > $5)
ORDER BY id_number_hash
LIMIT $6;

-- name: lists_in_force
-- Whether a household-registration roster (户籍人口) in force on $3 covers any of the caller's scope;
-- and the versions in force on $3 of each roster and exclusion list (the latest of its list type and
-- division), by kind: the lists `denominator_adjustments` reads.
SELECT EXISTS (
           SELECT 1 FROM list_versions
           WHERE status = 'loaded' AND kind = 'roster' AND effective_from <= $3
             AND (division_code BETWEEN $1 AND $2 OR left($4::text, length(scope_prefix)) = scope_prefix)
       ) AS roster_loaded,
       coalesce(array_agg(v.id) FILTER (WHERE v.kind = 'roster'), '{}') AS rosters,
       coalesce(array_agg(v.id) FILTER (WHERE v.kind = 'exclusion'), '{}') AS exclusions
FROM (
    SELECT DISTINCT ON (list_type, division_code) id, kind
    FROM list_versions
    WHERE status = 'loaded' AND kind IN ('roster', 'exclusion') AND effective_from <= $3
    ORDER BY list_type, division_code, version DESC
) AS v;

-- name: denominator_adjustments
-- Per division: persons on the rosters $5 (the versions in force, `lists_in_force`) who are
-- registered in no household (placed by the roster row's division), and registered persons not
-- enrolled for $3 who are on an exclusion list $6 (deceased, employee insurance) on $4. Neither kind
-- is counted twice. Only the scope's rows and the listed persons are read: registered persons are
-- looked up by the lists' blind index, never gathered whole (that was a hash of every person of the
-- system, whatever the scope). The versions come as values, not a join, and the statement is planned
-- for them on each run (`coverage_report` sets plan_cache_mode): the planner then knows an exclusion
-- list's size from the statistics of its version (a thousandth of the persons for the deceased), so
-- it looks the listed persons up one by one. Joined to the versions it guessed half of every list's
-- entries (a district's subsidy lists among them) and hashed every membership of the system for a
-- township (230 ms of 250 at 1,000,000 persons; issue 20).
WITH excluded AS (
    SELECT DISTINCT e.id_number_hash
    FROM list_entries e
    WHERE e.version_id = ANY($6::uuid[])
      AND (e.valid_from IS NULL OR e.valid_from <= $4) AND (e.valid_to IS NULL OR e.valid_to >= $4)
)
SELECT division_code, sum(roster_only)::int AS roster_only, sum(excluded)::int AS excluded FROM (
    SELECT r.division_code, count(DISTINCT r.id_number_hash) AS roster_only, 0 AS excluded
    FROM list_entries r
    WHERE r.version_id = ANY($5::uuid[]) AND r.division_code BETWEEN $1 AND $2
      AND NOT EXISTS (SELECT 1 FROM persons p
                      JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
                      JOIN households h ON h.id = m.household_id AND h.status = 'active'
                      WHERE p.id_number_hash = r.id_number_hash)
      AND NOT EXISTS (SELECT 1 FROM excluded x WHERE x.id_number_hash = r.id_number_hash)
    GROUP BY r.division_code
    UNION ALL
    SELECT h.village_code, 0, count(*)
    FROM excluded x
    JOIN persons p ON p.id_number_hash = x.id_number_hash
    JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
    JOIN households h ON h.id = m.household_id AND h.status = 'active'
    WHERE h.village_code BETWEEN $1 AND $2
      AND NOT EXISTS (SELECT 1 FROM enrollments e
                      WHERE e.person_id = p.id AND e.coverage_year = $3 AND e.status <> 'cancelled')
    GROUP BY h.village_code
) AS t
GROUP BY division_code;
