-- name: lock_prefix
SELECT pg_advisory_xact_lock(hashtext('receipt_prefix:' || $1));

-- name: overlapping_blocks
SELECT id FROM receipt_blocks WHERE prefix = $1 AND first_no <= $3 AND last_no >= $2;

-- name: insert_block
INSERT INTO receipt_blocks (id, township_code, prefix, first_no, last_no, digits, collector_id, device_id,
                            refill_of, issued_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: block
SELECT * FROM receipt_blocks WHERE id = $1;

-- name: block_balances
-- issued = used + voided + retired + open, per block. A voided payment's number stays used up:
-- it counts as voided, not used.
SELECT b.*,
       (b.last_no - b.first_no + 1) AS issued,
       count(p.id) FILTER (WHERE NOT p.voided) AS used,
       count(p.id) FILTER (WHERE p.voided) AS voided,
       coalesce((SELECT sum(r.last_no - r.first_no + 1) FROM receipt_retirements r WHERE r.block_id = b.id), 0)::bigint
           AS retired
FROM receipt_blocks b
LEFT JOIN payment_ledger p ON p.receipt_block_id = b.id
WHERE b.township_code BETWEEN $1 AND $2
  AND ($3::uuid IS NULL OR b.collector_id = $3)
GROUP BY b.id
ORDER BY b.issued_at, b.id;

-- name: used_numbers
SELECT receipt_no FROM payments WHERE receipt_block_id = $1;

-- name: retired_ranges
SELECT first_no, last_no FROM receipt_retirements WHERE block_id = $1;

-- name: insert_retirement
INSERT INTO receipt_retirements (id, block_id, first_no, last_no, reason, retired_by) VALUES ($1, $2, $3, $4, $5, $6);

-- name: open_blocks_of_device
SELECT * FROM receipt_blocks WHERE device_id = $1;

-- name: household_for_payment
-- A payment's first statement. First the request's claim of its idempotency key, when it brings one
-- ($4 … $7, as `idempotency.claim`; $5 NULL: none): a key taken by a request still running is waited
-- for, and `replay` is true when the key was taken (nothing else is then locked or read; the stored
-- answer is read by the next statement, which sees the request that took it committed). Then the
-- locks: the policy of year $1 shared (exclusive with an edit of it), then the row of household $2 (FOR
-- NO KEY UPDATE: a household's payments go one at a time, so the household's totals on each receipt
-- count every payment before it; inserts referencing the household are not held up). Answers the
-- household (NULL household columns if there is none) with each of collector $3's receipt blocks,
-- oldest first (one row of NULL block columns if they have none).
-- For the rest of the transaction, statements run on generic plans (`plan_cache_mode`, as a sync push
-- does): a payment's statements are the same ones keyed by ids every time, and under the default the
-- reads under its locks (`reads_for_payment`) were planned anew at each payment, their planning costing
-- more than their run.
WITH claimed AS (
    INSERT INTO idempotency_keys (actor_id, key, route, request_hash)
    SELECT $4::uuid, $5::text, $6::text, $7::bytea WHERE $5::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING true
), claim AS MATERIALIZED (
    SELECT $5::text IS NOT NULL AND NOT EXISTS (SELECT FROM claimed) AS replay
), locks AS MATERIALIZED (
    SELECT pg_advisory_xact_lock_shared(hashtext('policy_versions'), $1),
           set_config('plan_cache_mode', 'force_generic_plan', true)
    FROM claim WHERE NOT claim.replay
)
SELECT claim.replay, x.*
FROM claim
LEFT JOIN LATERAL (
    SELECT h.id AS household_id, h.village_code AS household_village_code, h.status AS household_status, b.*
    FROM locks
    CROSS JOIN households h
    LEFT JOIN receipt_blocks b ON b.collector_id = $3
    WHERE h.id = $2 AND NOT claim.replay
    ORDER BY b.issued_at
    FOR NO KEY UPDATE OF h
) AS x ON true
ORDER BY x.issued_at;

-- name: reads_for_payment
-- What a payment reads under its locks (`lock_block_and_enrollments`), in a snapshot taken once they
-- are held: whether receipt number $3 of block $2 was retired; what payments not voided already put
-- towards each of enrolments $4 (the live enrolments it pays, whichever household's payments they
-- were: the money follows the enrolment; a payment allocates only to enrolments it has locked); the
-- last day collector $1 had closed (closing and remittance take the collector's lock exclusively),
-- and the days closed from $5 on (its remittance date is chosen among the others); whether
-- a payment not voided names channel reference $7 by method $6 (one transfer is one payment); what is
-- paid for household $8's year $9 before it (as `household_money`: the money of its live enrolments,
-- whichever household paid, and its own payments' rest), what its live enrolments owe, and the
-- generation of its query code; and the transaction's time (the payment's `received_at`).
SELECT EXISTS (SELECT 1 FROM receipt_retirements r WHERE r.block_id = $2 AND $3 BETWEEN r.first_no AND r.last_no)
           AS retired,
       coalesce(array_agg(a.enrollment_id) FILTER (WHERE a.enrollment_id IS NOT NULL), '{}') AS allocated_enrollment_ids,
       coalesce(array_agg(a.amount_fen) FILTER (WHERE a.enrollment_id IS NOT NULL), '{}') AS allocated_fen,
       (SELECT max(d.business_date) FROM collector_days d WHERE d.collector_id = $1) AS last_closed_day,
       ARRAY(SELECT d.business_date FROM collector_days d WHERE d.collector_id = $1 AND d.business_date >= $5)
           AS closed_days,
       EXISTS (SELECT 1 FROM payment_ledger p
               WHERE $7::text IS NOT NULL AND p.method = $6 AND p.channel_ref = $7 AND NOT p.voided)
           AS channel_ref_taken,
       (SELECT coalesce(sum(m.amount_fen), 0)::bigint FROM premium_money m
        WHERE m.household_id = $8 AND m.coverage_year = $9) AS paid_before_fen,
       (SELECT coalesce(sum(e.premium_fen - e.subsidy_fen), 0)::bigint FROM enrollments e
        WHERE e.household_id = $8 AND e.coverage_year = $9 AND e.status <> 'cancelled') AS due_fen,
       (SELECT q.generation FROM household_query_codes q
        WHERE q.household_id = $8 AND q.coverage_year = $9 AND q.device_id IS NULL) AS code_generation,
       now() AS received_at
FROM (SELECT al.enrollment_id, sum(al.amount_fen)::bigint AS amount_fen
      FROM payment_allocations al
      JOIN payment_ledger p ON p.id = al.payment_id
      WHERE al.enrollment_id = ANY($4::uuid[]) AND p.kind = 'premium' AND NOT p.voided
      GROUP BY al.enrollment_id) AS a;

-- name: live_enrollments_for_payment
-- Every column: the live enrolments payment $1 paid (its allocations name them), wherever they live
-- now, locked in the order `enrollment.enrollments_for_update` locks in.
SELECT e.*
FROM enrollments e
WHERE e.id IN (SELECT a.enrollment_id FROM payment_allocations a WHERE a.payment_id = $1)
  AND e.status <> 'cancelled'
ORDER BY e.id
FOR UPDATE;

-- name: lock_block_and_enrollments
-- The receipt block's row shared (a retirement of its unused numbers waits for this payment), and the
-- rows of `live_enrollments_for_payment` ($2 … $4) locked: one row each, with the block's id; one row of
-- NULL enrolment columns when there is none. `registered_now`: the enrolment was registered in this
-- transaction. Once all of them are held (`collector` counts them first), the collector's lock ($5)
-- shared: a payment can never land in a day while that day is being closed (closing and remittance
-- take it exclusively), but a collector's payments (a tablet's sync and the counter at once) and void
-- decisions do not wait for each other; and, for a payment naming a channel reference ($6:
-- method:reference), that reference's lock. `reads_for_payment` reads under all of them.
WITH locked AS MATERIALIZED (
    SELECT b.id AS block_id, e.*, e.registered_at = now() AS registered_now
    FROM (SELECT id FROM receipt_blocks WHERE id = $1 FOR SHARE) AS b
    LEFT JOIN LATERAL (
        SELECT * FROM enrollments e
        WHERE e.household_id = $2 AND e.coverage_year = $3 AND e.person_id = ANY($4::uuid[])
          AND e.status <> 'cancelled'
        ORDER BY e.id
        FOR UPDATE
    ) AS e ON true
), collector AS MATERIALIZED (
    SELECT pg_advisory_xact_lock_shared(hashtext('collector:' || $5::uuid::text)),
           CASE WHEN $6::text IS NOT NULL THEN pg_advisory_xact_lock(hashtext('channel_ref:' || $6)) END
    FROM (SELECT count(*) FROM locked) AS n
)
SELECT locked.* FROM collector CROSS JOIN locked;

-- name: collector_with_level
SELECT u.id, u.role, u.division_code, u.active, d.level
FROM users u JOIN divisions d ON d.code = u.division_code
WHERE u.id = $1;

-- name: day_closed
SELECT EXISTS (SELECT 1 FROM collector_days WHERE collector_id = $1 AND business_date = $2);

-- name: insert_payment
-- A payment's writes, in one statement: the payment ($1 … $18; received at the transaction's time),
-- how it is allocated to persons ($19, $20) and the enrolment each allocation pays ($38; NULL for a
-- back-payment), the enrolments it pays (as `enrollment.set_funded_many`: $21 … $28, funding 'paid'
-- from business date $15), audit rows ($29 … $37, as `audit.insert_rows`) and, for a request that
-- claimed idempotency key $41 of actor $40 (NULL: none), its answer ($39, sealed: as
-- `idempotency.store`). Foreign keys are checked at the statement's end.
WITH payment AS (
    INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                          back_years, receipt_no, receipt_block_id, collector_id, device_id, collected_at,
                          business_date, clock_flag, remittance_date, channel_ref)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    RETURNING id
), allocations AS (
    INSERT INTO payment_allocations (payment_id, person_id, amount_fen, enrollment_id)
    SELECT $1, person_id, amount_fen, enrollment_id
    FROM unnest($19::uuid[], $20::bigint[], $38::uuid[]) AS a(person_id, amount_fen, enrollment_id)
), funded AS (
    UPDATE enrollments AS e SET status = 'paid', funding = 'paid', business_date = $15, subsidy_fen = u.subsidy_fen,
        coverage_start = u.starts, coverage_end = u.ends, coverage_reason = u.reason_code, coverage_note = u.reason,
        coverage_facts = u.facts, waiting_months = u.waiting, row_version = e.row_version + 1, updated_at = now()
    FROM unnest($21::uuid[], $22::int[], $23::date[], $24::date[], $25::text[], $26::text[], $27::int[],
                $28::jsonb[])
         AS u(id, subsidy_fen, starts, ends, reason_code, reason, waiting, facts)
    WHERE e.id = u.id
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($29::text[], $30::uuid[], $31::uuid[], $32::text[], $33::text[], $34::text[], $35::text[],
                $36::jsonb[], $37::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
), answer AS (
    UPDATE idempotency_keys SET status = 201, response = $39 WHERE actor_id = $40 AND key = $41
)
-- The payment is read, so written, first: a payment recorded twice is refused by its own key.
SELECT id FROM payment;

-- name: payment
SELECT * FROM payments WHERE id = $1;

-- name: payments_by_ids
SELECT * FROM payments WHERE id = ANY($1::uuid[]);

-- name: payment_allocations
SELECT person_id, amount_fen FROM payment_allocations WHERE payment_id = $1 ORDER BY person_id;

-- name: payment_events
SELECT * FROM payment_events WHERE payment_id = $1 ORDER BY at, id;

-- name: lock_payment
SELECT pg_advisory_xact_lock(hashtext('payment:' || $1::uuid::text));

-- name: insert_event
INSERT INTO payment_events (id, payment_id, kind, request_id, amount_fen, reason, actor_id, business_date)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *;

-- name: event
SELECT e.*, p.village_code, p.collector_id, p.business_date AS payment_date, p.amount_fen AS payment_amount_fen,
       p.household_id, p.coverage_year
FROM payment_events e JOIN payments p ON p.id = e.payment_id
WHERE e.id = $1;

-- name: pending_requests
SELECT q.*, p.village_code, p.receipt_no, p.amount_fen AS payment_amount_fen
FROM payment_events q
JOIN payments p ON p.id = q.payment_id
WHERE q.kind IN ('void_requested', 'refund_requested')
  AND NOT EXISTS (SELECT 1 FROM payment_events d WHERE d.request_id = q.id)
  AND p.village_code BETWEEN $1 AND $2
ORDER BY q.at, q.id;

-- name: enrollments_paid_by
-- Enrolments this payment made paid (and nothing else has paid since).
SELECT e.id FROM enrollments e
WHERE e.household_id = $1 AND e.coverage_year = $2 AND e.person_id = ANY($3::uuid[]) AND e.status = 'paid'
FOR UPDATE;

-- name: unpay_enrollment
UPDATE enrollments SET status = 'registered', funding = NULL, business_date = NULL, coverage_start = NULL,
    coverage_end = NULL, coverage_reason = NULL, coverage_note = NULL, coverage_facts = NULL, waiting_months = NULL,
    row_version = row_version + 1, updated_at = now()
WHERE id = $1;

-- name: remitted_on
SELECT coalesce(sum(amount_fen), 0)::bigint FROM remittances WHERE collector_id = $1 AND business_date = $2;

-- name: remittance_recorded
-- Whether collector $1's day $2 has a remittance of bank reference $3 already: the same slip recorded
-- twice (a retried request whose answer was lost) would count its cash twice.
SELECT EXISTS (SELECT 1 FROM remittances WHERE collector_id = $1 AND business_date = $2 AND bank_reference = $3);

-- name: insert_remittance
INSERT INTO remittances (id, collector_id, business_date, amount_fen, bank_reference, recorded_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: cash_for_day
-- Cash a collector owes for a day: cash payments counted on that day (late arrivals included, by
-- remittance_date) less cash voided.
SELECT
    coalesce(sum(p.amount_fen), 0)::bigint AS collected_fen,
    coalesce(sum(p.amount_fen) FILTER (WHERE p.voided), 0)::bigint AS voided_fen,
    count(*) FILTER (WHERE p.remittance_date <> p.business_date) AS late_arrivals
FROM payment_ledger p
WHERE p.collector_id = $1 AND p.remittance_date = $2 AND p.method = 'cash';

-- name: cash_in_hand
-- What a collector still holds of a day's cash ($1, $2): cash counted on that day (late arrivals
-- included, by remittance_date) not voided, less what was remitted for the day. A void of cash
-- already handed to the bank would leave the day over-remitted and its enrolments unpaid while the
-- money sits in the bank: that is a refund's case (SPEC §2: voids the same day, before remittance).
SELECT (SELECT coalesce(sum(p.amount_fen) FILTER (WHERE NOT p.voided), 0) FROM payment_ledger p
        WHERE p.collector_id = $1 AND p.remittance_date = $2 AND p.method = 'cash')
     - (SELECT coalesce(sum(r.amount_fen), 0) FROM remittances r WHERE r.collector_id = $1 AND r.business_date = $2)
       AS in_hand_fen;

-- name: close_day
INSERT INTO collector_days (collector_id, business_date, expected_fen, remitted_fen, closed_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: collector
SELECT u.id, u.role, u.division_code FROM users u WHERE u.id = $1;

-- name: payments_of_household
SELECT * FROM payments WHERE household_id = $1 AND ($2::int IS NULL OR coverage_year = $2)
ORDER BY received_at, id;

-- name: payment_state
SELECT l.voided, l.refunded_fen,
       EXISTS (SELECT 1 FROM payment_events q WHERE q.payment_id = l.id AND q.kind LIKE '%\_requested'
               AND NOT EXISTS (SELECT 1 FROM payment_events d WHERE d.request_id = q.id)) AS pending
FROM payment_ledger l WHERE l.id = $1;

-- name: channel_payments
-- QR and bank payments in scope whose business date falls in the statement's range.
SELECT id, receipt_no, channel_ref, amount_fen, method, business_date, voided
FROM payment_ledger
WHERE village_code BETWEEN $1 AND $2 AND method IN ('qr', 'bank') AND business_date BETWEEN $3 AND $4;

-- name: collections_report
-- Collections by township, collector or day, from the ledger.
SELECT CASE $5::text WHEN 'township' THEN left(p.village_code, 9) || '000'
                     WHEN 'collector' THEN p.collector_id::text
                     ELSE p.business_date::text END AS key,
       count(*) AS payments,
       coalesce(sum(p.amount_fen) FILTER (WHERE p.method = 'cash'), 0)::bigint AS cash_fen,
       coalesce(sum(p.amount_fen) FILTER (WHERE p.method = 'qr'), 0)::bigint AS qr_fen,
       coalesce(sum(p.amount_fen) FILTER (WHERE p.method = 'bank'), 0)::bigint AS bank_fen,
       coalesce(sum(p.amount_fen) FILTER (WHERE p.voided), 0)::bigint AS voided_fen,
       coalesce(sum(p.refunded_fen), 0)::bigint AS refunded_fen
FROM payment_ledger p
WHERE p.village_code BETWEEN $1 AND $2 AND p.business_date BETWEEN $3 AND $4
GROUP BY 1
ORDER BY 1;

-- name: prefix_widths
SELECT DISTINCT digits FROM receipt_blocks WHERE prefix = $1;

-- name: lock_collector
-- Exclusive: a day's closing or remittance waits for the collector's payments and void decisions in
-- flight (which hold it shared: `lock_block_and_enrollments`, `share_collector`) and holds off new
-- ones until it commits.
SELECT pg_advisory_xact_lock(hashtext('collector:' || $1::uuid::text));

-- name: share_collector
-- Shared: a void decision waits for a day of the collector being closed or remitted, and holds them off
-- until it commits. Not exclusive: it locks the enrolments its payment paid first, as a payment does,
-- and a tablet's push holds the lock shared from its first payment on while it locks enrolments for
-- its later mutations; waiting for the push there, the void would hold what the push waits for.
SELECT pg_advisory_xact_lock_shared(hashtext('collector:' || $1::uuid::text));

-- name: payment_confirmed_enrollments
-- Whether an enrolment payment $1 paid is confirmed, wherever it lives now.
SELECT EXISTS (SELECT 1 FROM payment_allocations a JOIN enrollments e ON e.id = a.enrollment_id
               WHERE a.payment_id = $1 AND e.status = 'confirmed');

-- name: pending_voids_of_day
SELECT EXISTS (
    SELECT 1 FROM payment_events q JOIN payments p ON p.id = q.payment_id
    WHERE p.collector_id = $1 AND p.remittance_date = $2 AND q.kind = 'void_requested'
      AND NOT EXISTS (SELECT 1 FROM payment_events d WHERE d.request_id = q.id));

-- name: lock_block
SELECT 1 FROM receipt_blocks WHERE id = $1 FOR UPDATE;

-- name: current_members_of
SELECT m.person_id FROM memberships m WHERE m.household_id = $1 AND m.left_at IS NULL;

-- name: refund_live_shares
-- What payment $1 put towards enrolments still live (not cancelled), wherever they live now, with
-- each one's person and premium: a refund never takes what pays an enrolment in force beyond what
-- its person's subsidy today leaves to pay (`adjustments.request_adjustment`).
SELECT a.person_id, a.amount_fen, e.premium_fen
FROM payment_allocations a
JOIN enrollments e ON e.id = a.enrollment_id AND e.status <> 'cancelled'
WHERE a.payment_id = $1;

-- name: lock_cash_day
-- Exclusive per collector ($1) and day ($2): approvals of voids of that day's cash wait for each
-- other, so that each reads what the others left in hand (taken after `share_collector`).
SELECT pg_advisory_xact_lock(hashtext('cash-day:' || $1::uuid::text || ':' || $2::date::text));

-- name: allocated_to_enrollments
-- What payments not voided put towards each of enrolments $1, whichever household paid.
SELECT a.enrollment_id, sum(a.amount_fen)::bigint AS amount_fen
FROM payment_allocations a
JOIN payment_ledger p ON p.id = a.payment_id
WHERE a.enrollment_id = ANY($1::uuid[]) AND p.kind = 'premium' AND NOT p.voided
GROUP BY a.enrollment_id;


-- name: households_for_payments
-- The first statement of a tablet's payments applied as a set (`record_payments`; a sync push): as
-- `household_for_payment` for each of households $2 (year $1, collector $3), with no idempotency key:
-- the policy of the year shared, the households' rows in id order (FOR NO KEY UPDATE), each with the
-- collector's receipt blocks, oldest first.
WITH locks AS MATERIALIZED (
    SELECT pg_advisory_xact_lock_shared(hashtext('policy_versions'), $1) AS policy,
           set_config('plan_cache_mode', 'force_generic_plan', true) AS plans
), held AS MATERIALIZED (
    SELECT h.id, h.village_code, h.status
    FROM locks CROSS JOIN households h
    WHERE h.id = ANY($2::uuid[])
    ORDER BY h.id
    FOR NO KEY UPDATE OF h
)
SELECT held.id AS household_id, held.village_code AS household_village_code, held.status AS household_status, b.*
FROM held
LEFT JOIN receipt_blocks b ON b.collector_id = $3
ORDER BY held.id, b.issued_at;

-- name: lock_blocks_and_enrollments
-- `lock_block_and_enrollments` for payments applied as a set: receipt blocks $1 shared, in id order;
-- then the live enrolments of year $4 of each (household $2, person $3) pair, in id order; then the
-- collector's lock ($5) shared and the locks of channel references $6 (method:reference), in order.
-- Answers the enrolments (one row of NULL columns when there is none).
WITH blocks AS MATERIALIZED (
    SELECT id FROM receipt_blocks WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE
), locked AS MATERIALIZED (
    SELECT e.*, e.registered_at = now() AS registered_now
    FROM (SELECT count(*) FROM blocks) AS b
    CROSS JOIN LATERAL (
        SELECT e.* FROM enrollments e
        JOIN unnest($2::uuid[], $3::uuid[]) AS w (household_id, person_id)
          ON e.household_id = w.household_id AND e.person_id = w.person_id
        WHERE e.coverage_year = $4 AND e.status <> 'cancelled'
        ORDER BY e.id
        FOR UPDATE OF e
    ) AS e
), collector AS MATERIALIZED (
    SELECT pg_advisory_xact_lock_shared(hashtext('collector:' || $5::uuid::text)),
           (SELECT count(pg_advisory_xact_lock(hashtext('channel_ref:' || c)))
            FROM (SELECT c FROM unnest($6::text[]) AS c ORDER BY c) AS c)
    FROM (SELECT count(*) FROM locked) AS n
)
SELECT locked.* FROM collector LEFT JOIN locked ON true;

-- name: reads_for_payments
-- `reads_for_payment` for payments applied as a set (of one collector $1, year $2, distinct
-- households), one row each in order: receipt number $6 of block $5, method $7 and channel reference
-- $8, household $9. What was allocated to any of enrolments $4 and the collector's days closed from
-- $3 (the earliest business date) on are the same on every row.
SELECT EXISTS (SELECT 1 FROM receipt_retirements r
               WHERE r.block_id = w.block_id AND w.number BETWEEN r.first_no AND r.last_no) AS retired,
       a.allocated_enrollment_ids, a.allocated_fen, c.last_closed_day, c.closed_days,
       EXISTS (SELECT 1 FROM payment_ledger p
               WHERE w.channel_ref IS NOT NULL AND p.method = w.method AND p.channel_ref = w.channel_ref
                 AND NOT p.voided) AS channel_ref_taken,
       (SELECT coalesce(sum(m.amount_fen), 0)::bigint FROM premium_money m
        WHERE m.household_id = w.household_id AND m.coverage_year = $2) AS paid_before_fen,
       (SELECT coalesce(sum(e.premium_fen - e.subsidy_fen), 0)::bigint FROM enrollments e
        WHERE e.household_id = w.household_id AND e.coverage_year = $2 AND e.status <> 'cancelled') AS due_fen,
       (SELECT q.generation FROM household_query_codes q
        WHERE q.household_id = w.household_id AND q.coverage_year = $2 AND q.device_id IS NULL) AS code_generation,
       now() AS received_at
FROM unnest($5::uuid[], $6::bigint[], $7::text[], $8::text[], $9::uuid[]) WITH ORDINALITY
     AS w (block_id, number, method, channel_ref, household_id, n)
CROSS JOIN (
    SELECT coalesce(array_agg(s.enrollment_id), '{}') AS allocated_enrollment_ids,
           coalesce(array_agg(s.amount_fen), '{}') AS allocated_fen
    FROM (SELECT al.enrollment_id, sum(al.amount_fen)::bigint AS amount_fen
          FROM payment_allocations al
          JOIN payment_ledger p ON p.id = al.payment_id
          WHERE al.enrollment_id = ANY($4::uuid[]) AND p.kind = 'premium' AND NOT p.voided
          GROUP BY al.enrollment_id) AS s
) AS a
CROSS JOIN (
    SELECT (SELECT max(d.business_date) FROM collector_days d WHERE d.collector_id = $1) AS last_closed_day,
           ARRAY(SELECT d.business_date FROM collector_days d WHERE d.collector_id = $1 AND d.business_date >= $3)
               AS closed_days
) AS c
ORDER BY w.n;

-- name: insert_payments
-- The writes of a tablet's premium payments applied as a set, in one statement, as `insert_payment`
-- writes one (no idempotency key): the payments, one element of $1 … $13 each, of collector $14 and
-- device $15 (their person ids: their allocations' persons, in order); the allocations of them all
-- ($16 payment, $17 person, $18 amount, $19 enrolment); the enrolments they pay ($20 … $27 as
-- `set_funded_many`, each from its payment's business date $28); audit rows ($29 … $37). Answers how
-- many payments were written.
WITH allocated AS (
    SELECT * FROM unnest($16::uuid[], $17::uuid[], $18::bigint[], $19::uuid[]) WITH ORDINALITY
                  AS a (payment_id, person_id, amount_fen, enrollment_id, n)
), payment AS (
    INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                          back_years, receipt_no, receipt_block_id, collector_id, device_id, collected_at,
                          business_date, clock_flag, remittance_date, channel_ref)
    SELECT w.id, w.household_id, w.village_code, w.coverage_year,
           ARRAY(SELECT a.person_id FROM allocated a WHERE a.payment_id = w.id ORDER BY a.n),
           w.amount_fen, w.method, 'premium', '{}', w.receipt_no, w.block_id, $14, $15, w.collected_at,
           w.business_date, w.clock_flag, w.remittance_date, w.channel_ref
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::bigint[], $6::text[], $7::text[], $8::uuid[],
                $9::timestamptz[], $10::date[], $11::text[], $12::date[], $13::text[]) WITH ORDINALITY
         AS w (id, household_id, village_code, coverage_year, amount_fen, method, receipt_no, block_id,
               collected_at, business_date, clock_flag, remittance_date, channel_ref, n)
    ORDER BY w.n
    RETURNING id
), allocations AS (
    INSERT INTO payment_allocations (payment_id, person_id, amount_fen, enrollment_id)
    SELECT a.payment_id, a.person_id, a.amount_fen, a.enrollment_id FROM allocated a ORDER BY a.n
), funded AS (
    UPDATE enrollments AS e SET status = 'paid', funding = 'paid', business_date = u.business_date,
        subsidy_fen = u.subsidy_fen, coverage_start = u.starts, coverage_end = u.ends,
        coverage_reason = u.reason_code, coverage_note = u.reason, coverage_facts = u.facts,
        waiting_months = u.waiting, row_version = e.row_version + 1, updated_at = now()
    FROM unnest($20::uuid[], $21::int[], $22::date[], $23::date[], $24::text[], $25::text[], $26::int[],
                $27::jsonb[], $28::date[])
         AS u(id, subsidy_fen, starts, ends, reason_code, reason, waiting, facts, business_date)
    WHERE e.id = u.id
), audit AS (
    INSERT INTO audit_log (actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary,
                           request_id)
    SELECT r.actor_kind, r.actor_id, r.device_id, r.action, r.entity, r.entity_id, r.division_code, r.summary,
           r.request_id
    FROM unnest($29::text[], $30::uuid[], $31::uuid[], $32::text[], $33::text[], $34::text[], $35::text[],
                $36::jsonb[], $37::text[]) WITH ORDINALITY
         AS r(actor_kind, actor_id, device_id, action, entity, entity_id, division_code, summary, request_id, n)
    ORDER BY r.n
)
-- The payments are read, so written, first: one recorded already is refused by its own key.
SELECT count(*) FROM payment;
