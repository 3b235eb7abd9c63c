-- The enrolment roster (参保人员花名册) of a year (backend/enrollment/roster.py).

-- name: enrolment_roster
-- The enrolments of year $3 in the scope $1..$2 (optionally of status $4 and village $5), by
-- village, household number, household, person and enrolment; $6..$10: the key of the last row of
-- the page before (NULL: the first page). The person's relation is the one in the enrolment's
-- household (their latest membership there); paid is what payments not voided, net of refunds, put
-- towards the enrolment (`premium_money`: 0 for a cancelled one).
SELECT e.id, e.person_id, e.household_id, e.village_code, h.household_no, p.name, p.id_number_enc,
       m.relation, e.status, e.coverage_start, e.coverage_end, e.coverage_reason, e.premium_fen,
       e.subsidy_fen,
       (SELECT coalesce(sum(pm.amount_fen), 0)::bigint
        FROM premium_money pm WHERE pm.enrollment_id = e.id) AS paid_fen
FROM enrollments e
JOIN households h ON h.id = e.household_id
JOIN persons p ON p.id = e.person_id
LEFT JOIN LATERAL (
    SELECT relation FROM memberships
    WHERE person_id = e.person_id AND household_id = e.household_id
    ORDER BY joined_at DESC
    LIMIT 1
) AS m ON true
WHERE e.village_code BETWEEN $1 AND $2
  AND e.coverage_year = $3
  AND ($4::text IS NULL OR e.status = $4)
  AND ($5::text IS NULL OR e.village_code = $5)
  AND ($6::text IS NULL
       OR (e.village_code, h.household_no, e.household_id, e.person_id, e.id)
          > ($6::text, $7::text, $8::uuid, $9::uuid, $10::uuid))
ORDER BY e.village_code, h.household_no, e.household_id, e.person_id, e.id
LIMIT $11;
