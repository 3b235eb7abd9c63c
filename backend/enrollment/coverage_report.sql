-- Named SQL of backend/enrollment/coverage_report.py.

-- name: division_names
SELECT code, name, level, parent_code FROM divisions WHERE code BETWEEN $1 AND $2;

-- name: plan_each_run
SELECT set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: plan_cached
SELECT set_config('plan_cache_mode', 'auto', true);

-- name: coverage_by_village
-- Per village: current members of active households (the rows of year 0); of them, those funded for
-- year $3 (a live enrolment paid, subsidised or confirmed, or, without a live enrolment, the
-- imported history's year not cancelled: it covers the year), registered and not yet paid, and
-- confirmed. Summed from `coverage_tallies`, the deltas the facts' triggers write in the
-- transaction that changes them (migration 0025): a few rows per village, whatever the persons.
SELECT village_code,
       coalesce(sum(persons) FILTER (WHERE coverage_year = 0), 0)::int AS persons,
       coalesce(sum(funded) FILTER (WHERE coverage_year = $3), 0)::int AS funded,
       coalesce(sum(registered_unpaid) FILTER (WHERE coverage_year = $3), 0)::int AS registered_unpaid,
       coalesce(sum(confirmed) FILTER (WHERE coverage_year = $3), 0)::int AS confirmed
FROM coverage_tallies
WHERE coverage_year IN (0, $3) AND village_code BETWEEN $1 AND $2
GROUP BY village_code;

-- name: compact
-- Folds the summary's deltas into one row per key (housekeeping); the sums do not change.
SELECT coverage_compact();

-- name: coverage_by_village_from_facts
-- The report's figures counted from the facts, as the report did before the summary: `canbao
-- reports verify` and the tests compare the summary with it.
-- Per village: current members of active households; those funded for year $3 (a live enrolment
-- paid, subsidised or confirmed, or, without a live enrolment, the imported history's year marked
-- paid, subsidised or confirmed: it covers the year), or registered and not yet paid; confirmed ones.
-- The history is looked up only for persons without a live enrolment (few), so the report joins no
-- persons: at a prefecture's size that join was most of its time. Planned for its range on every
-- run (`coverage_report` sets plan_cache_mode): a generic plan guesses a few hundred households for
-- any range and loops over a million enrolments one by one.
SELECT h.village_code,
       count(*) AS persons,
       count(*) FILTER (WHERE e.status IN ('paid', 'subsidised', 'confirmed')
                        OR (e.id IS NULL AND EXISTS (
                            SELECT 1 FROM persons p
                            JOIN enrollment_history eh ON eh.id_number_hash = p.id_number_hash
                            WHERE p.id = m.person_id AND eh.coverage_year = $3 AND eh.status <> 'cancelled'))) AS funded,
       count(e.id) FILTER (WHERE e.status = 'registered') AS registered_unpaid,
       count(e.id) FILTER (WHERE e.status = 'confirmed') AS confirmed
FROM memberships m
JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled'
WHERE m.left_at IS NULL AND h.village_code BETWEEN $1 AND $2
GROUP BY h.village_code;
