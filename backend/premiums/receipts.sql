-- name: receipt_payment
-- A payment as its receipt prints it: the ledger's row (voided, refunded), the household, the
-- village with its township, and the collector's name.
SELECT l.id, l.household_id, l.village_code, l.coverage_year, l.person_ids, l.amount_fen, l.method, l.kind,
       l.back_years, l.receipt_no, l.business_date, l.voided, l.refunded_fen,
       h.household_no, h.address, v.name AS village_name, t.name AS township_name,
       u.full_name AS collector_name, u.username AS collector_username
FROM payment_ledger l
JOIN households h ON h.id = l.household_id
JOIN divisions v ON v.code = l.village_code
LEFT JOIN divisions t ON t.code = v.parent_code
JOIN users u ON u.id = l.collector_id
WHERE l.id = $1;

-- name: receipt_members
-- The persons a payment was for, in its order, with what it put towards each and, for the year,
-- their live enrolment's premium and subsidy (else the latest cancelled one's).
SELECT x.person_id, p.name, p.id_number_enc, p.birth_cert_enc, coalesce(a.amount_fen, 0)::bigint AS paid_fen,
       e.premium_fen, e.subsidy_fen
FROM unnest($2::uuid[]) WITH ORDINALITY AS x(person_id, n)
JOIN persons p ON p.id = x.person_id
LEFT JOIN payment_allocations a ON a.payment_id = $1 AND a.person_id = x.person_id
LEFT JOIN LATERAL (
    SELECT en.premium_fen, en.subsidy_fen FROM enrollments en
    WHERE en.person_id = x.person_id AND en.coverage_year = $3
    ORDER BY en.status = 'cancelled', en.registered_at DESC
    LIMIT 1
) e ON true
ORDER BY x.n;

-- name: receipt_to_check
-- What a receipt's verification code is made of, found by its number (for the public check).
SELECT household_id, receipt_no, amount_fen, business_date, coverage_year, voided, refunded_fen
FROM payment_ledger WHERE receipt_no = $1;

-- name: household_payments
-- A household's payments (of a year, or all), oldest first, as the ledger sees them now.
SELECT id, receipt_no, coverage_year, amount_fen, method, kind, business_date, voided, refunded_fen, village_code
FROM payment_ledger
WHERE household_id = $1 AND ($2::int IS NULL OR coverage_year = $2)
ORDER BY received_at, id;
