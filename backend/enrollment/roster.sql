-- The enrolment roster (参保人员花名册) of a year (backend/enrollment/roster.py).

-- name: plan_each_run
-- A page is planned for its own cursor: the generic plan of a prepared statement (after five runs)
-- cannot start at the cursor's village and sorts the whole scope for every page (a township's 60,000
-- enrolments: 200–450 ms a page instead of 15–35 ms). Until the transaction ends, or reset below.
SELECT set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: plan_cached
SELECT set_config('plan_cache_mode', 'auto', true);

-- name: enrolment_roster
-- The enrolments of year $3 in the scope $1..$2 (optionally of status $4 and village $5), by
-- village, household number, household, person and enrolment; $6..$10: the key of the last row of
-- the page before (NULL: the first page). The person's relation is the one in the enrolment's
-- household (their latest membership there), computed for the page's rows only; paid is what payments not voided, net of refunds, put
-- towards the enrolment (`premium_money`: 0 for a cancelled one).
SELECT e.id, e.person_id, e.household_id, e.village_code, h.household_no, p.name, p.id_number_enc,
       (SELECT m.relation FROM memberships m
        WHERE m.person_id = e.person_id AND m.household_id = e.household_id
        ORDER BY m.joined_at DESC
        LIMIT 1) AS relation,
       e.status, e.coverage_start, e.coverage_end, e.coverage_reason, e.premium_fen, e.subsidy_fen,
       (SELECT coalesce(sum(pm.amount_fen), 0)::bigint
        FROM premium_money pm WHERE pm.enrollment_id = e.id) AS paid_fen
FROM enrollments e
JOIN households h ON h.id = e.household_id
JOIN persons p ON p.id = e.person_id
WHERE e.village_code BETWEEN $1 AND $2
  AND e.coverage_year = $3
  AND ($4::text IS NULL OR e.status = $4)
  AND ($5::text IS NULL OR e.village_code = $5)
  -- The villages before the cursor's are left out by the index; the row comparison places it.
  AND ($6::text IS NULL OR e.village_code >= $6)
  AND ($6::text IS NULL
       OR (e.village_code, h.household_no, e.household_id, e.person_id, e.id)
          > ($6::text, $7::text, $8::uuid, $9::uuid, $10::uuid))
ORDER BY e.village_code, h.household_no, e.household_id, e.person_id, e.id
LIMIT $11;
