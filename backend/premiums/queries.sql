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

-- name: blocks_of_collector
SELECT * FROM receipt_blocks WHERE collector_id = $1 ORDER BY issued_at;

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
SELECT id, village_code, status FROM households WHERE id = $1 FOR SHARE;

-- name: live_enrollments_for_payment
SELECT e.id, e.person_id, e.status, e.premium_fen, e.subsidy_fen
FROM enrollments e
WHERE e.household_id = $1 AND e.coverage_year = $2 AND e.person_id = ANY($3::uuid[]) AND e.status <> 'cancelled'
FOR UPDATE;

-- name: day_closed
SELECT EXISTS (SELECT 1 FROM collector_days WHERE collector_id = $1 AND business_date = $2);

-- name: insert_payment
INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                      back_years, receipt_no, receipt_block_id, collector_id, device_id, collected_at,
                      business_date, clock_flag, remittance_date, channel_ref)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
RETURNING *;

-- name: insert_allocations
INSERT INTO payment_allocations (payment_id, person_id, amount_fen)
SELECT $1, person_id, amount_fen FROM unnest($2::uuid[], $3::bigint[]) AS a(person_id, amount_fen);

-- name: payment
SELECT * FROM payments WHERE id = $1;

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
    coverage_end = NULL, coverage_reason = NULL, coverage_note = NULL, waiting_months = NULL,
    row_version = row_version + 1, updated_at = now()
WHERE id = $1;

-- name: remitted_on
SELECT coalesce(sum(amount_fen), 0)::bigint FROM remittances WHERE collector_id = $1 AND business_date = $2;

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
SELECT pg_advisory_xact_lock(hashtext('collector:' || $1::uuid::text));

-- name: payment_confirmed_enrollments
SELECT EXISTS (SELECT 1 FROM enrollments WHERE household_id = $1 AND coverage_year = $2
               AND person_id = ANY($3::uuid[]) AND status = 'confirmed');

-- name: pending_voids_of_day
SELECT EXISTS (
    SELECT 1 FROM payment_events q JOIN payments p ON p.id = q.payment_id
    WHERE p.collector_id = $1 AND p.remittance_date = $2 AND q.kind = 'void_requested'
      AND NOT EXISTS (SELECT 1 FROM payment_events d WHERE d.request_id = q.id));

-- name: share_block
SELECT 1 FROM receipt_blocks WHERE id = $1 FOR SHARE;

-- name: lock_block
SELECT 1 FROM receipt_blocks WHERE id = $1 FOR UPDATE;

-- name: share_policy_year
SELECT pg_advisory_xact_lock_shared(hashtext('policy_versions'), $1);
