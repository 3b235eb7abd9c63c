-- Named SQL of backend/enrollment/coverage_trend.py.

-- name: funded_by_week
-- Per division (the code's first $4 digits, padded to 12) and ISO week (its Monday) of the business
-- date: the live funded enrolments of year $3 (paid, subsidised, confirmed; one per person and year,
-- so persons) funded up to the end of that week, for enrolments funded on or before $5. Only weeks in
-- which something was funded appear: the caller carries the count over the weeks between.
-- `enrollments_queue_idx` (coverage_year, status, village_code) finds the rows of the year and status.
SELECT rpad(left(village_code, $4), 12, '0') AS division_code,
       business_date - (extract(isodow FROM business_date)::int - 1) AS week,
       (sum(count(*)) OVER (PARTITION BY rpad(left(village_code, $4), 12, '0')
                            ORDER BY business_date - (extract(isodow FROM business_date)::int - 1)))::int AS funded
FROM enrollments
WHERE coverage_year = $3
  AND status IN ('paid', 'subsidised', 'confirmed')
  AND village_code BETWEEN $1 AND $2
  AND business_date <= $5
GROUP BY 1, 2
ORDER BY 1, 2;
