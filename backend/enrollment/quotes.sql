-- Named SQL of backend/enrollment/quotes.py.

-- name: quote_members
SELECT p.id AS person_id, p.name, m.relation, e.id AS enrollment_id, e.status, e.premium_fen, e.subsidy_fen
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: allocated_to_persons
-- What payments that were not voided put towards each person for the year.
SELECT a.person_id, sum(a.amount_fen)::bigint AS amount_fen
FROM payment_allocations a
JOIN payment_ledger p ON p.id = a.payment_id
WHERE p.household_id = $1 AND p.coverage_year = $2 AND p.kind = 'premium' AND NOT p.voided
GROUP BY a.person_id;

-- name: household_money
-- Paid for a household and year, derived from events: payments − approved voids − approved refunds.
SELECT coalesce(sum(amount_fen), 0)::bigint AS payments_fen,
       coalesce(sum(amount_fen) FILTER (WHERE voided), 0)::bigint AS voided_fen,
       coalesce(sum(refunded_fen), 0)::bigint AS refunded_fen
FROM payment_ledger
WHERE household_id = $1 AND coverage_year = $2 AND kind = 'premium';
