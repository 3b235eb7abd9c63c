-- Continuous years of basic insurance and the serious-illness ceiling (backend/enrollment/continuity.py).

-- name: known_years
-- Per person of $1: the years up to $2 known covered and known uncovered, as `coverage_facts`
-- (enrollments.sql) reads them for gaps, the year itself included; and the years the person is on
-- a zero-reimbursement list of the settlement system (the newest loaded version of that year and
-- scope). $3: the local time zone (a member on 1 January of a year is known uncovered that year
-- unless something shows cover). With a date $4 (else NULL), on one row (any) the policy version of
-- year $2 in force on $4 (as policy's `policy_in_force`, the row as JSON; NULL: none; on one row only,
-- so that the client decodes it once), so that a person's continuity is one round trip. The year
-- lists may name a year twice (UNION ALL, as in `coverage_facts`): they are read as sets.
SELECT p.id AS person_id, p.birth_date, CASE WHEN row_number() OVER () = 1 THEN policy.version END AS policy, ARRAY(
    SELECT coverage_year FROM enrollments
    WHERE person_id = p.id AND coverage_year <= $2
      AND (status IN ('paid', 'subsidised', 'confirmed')
           OR (status = 'cancelled' AND cancel_reason = 'employee_insurance'))
    UNION ALL
    SELECT coverage_year FROM enrollment_history
    WHERE id_number_hash = p.id_number_hash AND coverage_year <= $2 AND status <> 'cancelled'
    UNION ALL
    SELECT y
    FROM (  -- each period once, however many loaded versions of the list repeat it
        SELECT DISTINCT extract(year FROM coalesce(le.valid_from, lv.effective_from))::int AS first_year,
               least($2, coalesce(extract(year FROM le.valid_to)::int, $2)) AS last_year
        FROM list_entries le
        JOIN list_versions lv ON lv.id = le.version_id AND lv.list_type = 'employee_insurance' AND lv.status = 'loaded'
        WHERE le.id_number_hash = p.id_number_hash
    ) AS listed
    CROSS JOIN LATERAL generate_series(listed.first_year, listed.last_year) AS y
) AS covered_years, ARRAY(
    SELECT coverage_year FROM enrollment_history
    WHERE id_number_hash = p.id_number_hash AND coverage_year <= $2 AND status = 'cancelled'
    UNION ALL
    -- A membership's years as in enrollments.sql's coverage_facts: one range per membership.
    SELECT y
    FROM memberships m
    CROSS JOIN LATERAL generate_series(
        greatest(extract(year FROM m.joined_at AT TIME ZONE $3::text)::int + 1, extract(year FROM p.birth_date)::int,
                 $2 - 60),
        least(extract(year FROM m.left_at AT TIME ZONE $3::text)::int, $2)) AS y
    WHERE m.person_id = p.id AND m.left_reason IS DISTINCT FROM 'data_error'
) AS uncovered_years, ARRAY(
    SELECT DISTINCT lv.concerns_year
    FROM list_entries le
    JOIN list_versions lv ON lv.id = le.version_id
    WHERE le.id_number_hash = p.id_number_hash
      AND lv.list_type = 'zero_reimbursement' AND lv.kind = 'settlement' AND lv.status = 'loaded'
      AND lv.concerns_year < $2
      AND lv.version = (SELECT max(w.version) FROM list_versions w
                        WHERE w.list_type = lv.list_type AND w.division_code = lv.division_code
                          AND w.concerns_year = lv.concerns_year AND w.status = 'loaded')
) AS zero_claim_years
FROM persons p
LEFT JOIN LATERAL (
    SELECT to_jsonb(v) AS version FROM policy_versions v
    WHERE $4::date IS NOT NULL AND v.coverage_year = $2
    ORDER BY (v.effective_from <= $4) DESC,
             CASE WHEN v.effective_from <= $4 THEN v.effective_from END DESC,
             CASE WHEN v.effective_from <= $4 THEN v.version END DESC,
             v.effective_from, v.version
    LIMIT 1
) AS policy ON true
WHERE p.id = ANY($1::uuid[]);
