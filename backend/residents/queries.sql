-- name: login_candidate
-- The person with this ID number in a current, active household, with the household's query codes
-- of its two latest coverage years (device_id set: a tablet made the code, see backend/sync/query_codes.py).
-- No row for an unknown person: the caller then checks dummy values.
SELECT p.id AS person_id, p.name, h.id AS household_id, h.village_code, q.coverage_year, q.code_hash, q.device_id
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN LATERAL (
    SELECT c.coverage_year, c.code_hash, c.device_id FROM household_query_codes c
    WHERE c.household_id = h.id
    ORDER BY c.coverage_year DESC
    LIMIT 2
) q ON true
WHERE p.id_number_hash = $1
ORDER BY q.coverage_year DESC NULLS LAST;

-- name: insert_session
INSERT INTO resident_sessions (id, person_id, household_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5);

-- name: end_session
UPDATE resident_sessions SET revoked_at = now() WHERE id = $1 AND person_id = $2 AND revoked_at IS NULL;

-- name: household
-- The household and its money for year $2 in one round trip: the money as `household_money`
-- (backend/enrollment/quotes.sql) reads it (a change there goes here too); and per person, the
-- receipt of the latest payment (not voided) of the year that covered them, as arrays in one order:
-- one that paid their enrolment living in the household, whichever household paid it (the money
-- follows the enrolment), or one of the household's own (one round trip for what were two, issue 20).
-- In a transaction, its later statements run on generic plans (`plan_cache_mode`, as a sync push
-- does): the members' statements are keyed by the household and its persons, and under the default
-- PostgreSQL kept planning them anew for every request (bench/prefecture.py --quick, statement log:
-- their binds 0.35 and 0.19 ms a request, 0.18 and 0.11 with the plans kept). The resident's routes
-- read outside a transaction (no BEGIN and COMMIT: two round trips of eight), where the setting ends
-- with this statement: the binds are paid again, and the requests are still 3-10 % faster (1431237,
-- 883a7f4).
SELECT h.id, h.village_code, h.household_no, h.status, e.premium_fen, e.subsidy_fen,
       (SELECT coalesce(sum(m.amount_fen), 0)::bigint FROM premium_money m
        WHERE m.household_id = h.id AND m.coverage_year = $2) AS paid_fen,
       r.person_ids AS receipt_person_ids, r.receipt_nos, r.collected_ats AS receipt_collected_ats
FROM households h
CROSS JOIN LATERAL (
    SELECT coalesce(sum(premium_fen), 0)::bigint AS premium_fen,
           coalesce(sum(subsidy_fen) FILTER (WHERE premium_fen IS NOT NULL), 0)::bigint AS subsidy_fen
    FROM enrollments
    WHERE household_id = h.id AND coverage_year = $2 AND status <> 'cancelled') AS e
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(x.person_id ORDER BY x.person_id), '{}') AS person_ids,
           coalesce(array_agg(x.receipt_no ORDER BY x.person_id), '{}') AS receipt_nos,
           coalesce(array_agg(x.collected_at ORDER BY x.person_id), '{}') AS collected_ats
    FROM (
        SELECT DISTINCT ON (x.person_id) x.person_id, x.receipt_no, x.collected_at
        FROM (
            SELECT a.person_id, p.receipt_no, p.collected_at, p.id
            FROM enrollments en
            JOIN payment_allocations a ON a.enrollment_id = en.id
            JOIN payment_ledger p ON p.id = a.payment_id
            WHERE en.household_id = h.id AND en.coverage_year = $2 AND en.status <> 'cancelled' AND NOT p.voided
            UNION ALL
            SELECT a.person_id, p.receipt_no, p.collected_at, p.id
            FROM payment_ledger p
            JOIN payment_allocations a ON a.payment_id = p.id
            WHERE p.household_id = h.id AND p.coverage_year = $2 AND NOT p.voided
        ) AS x
        ORDER BY x.person_id, x.collected_at DESC, x.id DESC
    ) AS x) AS r,
    set_config('plan_cache_mode', 'force_generic_plan', true) AS plans
WHERE h.id = $1;

-- name: members_coverage
-- Current members, each with the enrolment for the year: the live one, else the latest cancelled;
-- and the year's status in the imported enrolment history, if any; and, when a funded enrolment
-- for the year after $2 gives cover on $3 already (a new university student's starts on 1 September
-- of the year before its coverage year), its year and dates (at most one live per person and year);
-- and what was paid for the member's year (`paid`), as `allocated_to_members` (backend/enrollment/
-- quotes.sql) reads it: towards the live enrolment, whichever household paid, net of refunds
-- (`premium_money`); without a live enrolment, what the household's payments put towards them, net
-- of refunds as `allocated_to_members` counts it (a change there goes here too). One round trip for
-- what were two (issue 20).
SELECT p.id AS person_id, p.name, p.id_number_enc, p.birth_cert_enc, m.relation,
       p.id_number_hash, p.birth_date,
       e.id AS enrollment_id, e.status, e.premium_fen, e.subsidy_fen, e.coverage_start, e.coverage_end,
       e.coverage_reason, e.coverage_note, e.coverage_facts, e.cancel_reason,
       (SELECT h.status FROM enrollment_history h
        WHERE h.id_number_hash = p.id_number_hash AND h.coverage_year = $2) AS history_status,
       nx.coverage_year AS next_year, nx.coverage_start AS next_year_start, nx.coverage_end AS next_year_end,
       coalesce(
           (SELECT sum(pm.amount_fen) FROM premium_money pm
            WHERE pm.person_id = p.id AND pm.coverage_year = $2 AND pm.enrollment_id IS NOT NULL),
           CASE WHEN e.status IS NULL OR e.status = 'cancelled' THEN  -- no live enrolment (`e` is it when there is)
           (SELECT sum(a.amount_fen - least(a.amount_fen, greatest(pl.refunded_fen - t.left_over_fen - t.after_fen, 0)))
            FROM payment_ledger pl
            JOIN payment_allocations a ON a.payment_id = pl.id
            CROSS JOIN LATERAL (
                SELECT pl.amount_fen - coalesce(sum(b.amount_fen), 0)::bigint AS left_over_fen,
                       coalesce(sum(b.amount_fen) FILTER (
                           WHERE array_position(pl.person_ids, b.person_id) > array_position(pl.person_ids, a.person_id)
                             AND NOT EXISTS (SELECT 1 FROM enrollments f
                                             WHERE f.id = b.enrollment_id AND f.status <> 'cancelled')),
                           0)::bigint AS after_fen
                FROM payment_allocations b
                WHERE b.payment_id = pl.id
            ) AS t
            WHERE pl.household_id = $1 AND pl.coverage_year = $2 AND pl.kind = 'premium' AND NOT pl.voided
              AND a.person_id = p.id) END,
           0)::bigint AS paid_fen
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN LATERAL (
    SELECT * FROM enrollments en
    WHERE en.person_id = p.id AND en.coverage_year = $2
    ORDER BY en.status = 'cancelled', en.registered_at DESC
    LIMIT 1
) e ON true
LEFT JOIN LATERAL (
    SELECT n.coverage_year, n.coverage_start, n.coverage_end FROM enrollments n
    WHERE n.person_id = p.id AND n.coverage_year = $2 + 1 AND n.status IN ('paid', 'subsidised', 'confirmed')
      AND n.coverage_start <= $3 AND n.coverage_end >= $3
    LIMIT 1
) nx ON true
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

