-- Named SQL of backend/enrollment/quotes.py.

-- name: quote_members
SELECT p.id AS person_id, p.name, m.relation, e.id AS enrollment_id, e.household_id, e.status, e.premium_fen,
       e.subsidy_fen
FROM memberships m
JOIN persons p ON p.id = m.person_id
LEFT JOIN enrollments e ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled'
WHERE m.household_id = $1 AND m.left_at IS NULL
ORDER BY m.relation <> 'head', m.joined_at, m.id;

-- name: allocated_to_members
-- What payments not voided put towards each current member of household $1 for year $2: towards the
-- member's live enrolment, whichever household's payment it was (the money follows the enrolment),
-- net of refunds as the household's money counts them (`premium_money`: a refund comes off what the
-- payment left over first, then off the last person of the payment first); for a member with no
-- live enrolment, what the household's payments put towards them, net of refunds alike: a refund
-- comes off what the payment left over first, then off its persons with no live enrolment, the last
-- first (a refund never takes what pays a live enrolment: `premiums.refundable`). With scalar parameters only,
-- PostgreSQL keeps the statement's generic plan after its fifth run; with a list of persons it
-- planned every run anew (1.4 ms of planning the view for 0.2 ms of work, issue 20). The view is
-- read per member (LATERAL): as a semi-join on the members it would be read whole.
SELECT c.person_id, t.amount_fen
FROM memberships c
CROSS JOIN LATERAL (
    SELECT sum(m.amount_fen)::bigint AS amount_fen
    FROM premium_money m
    WHERE m.person_id = c.person_id AND m.coverage_year = $2 AND m.enrollment_id IS NOT NULL
    GROUP BY m.person_id
) AS t
WHERE c.household_id = $1 AND c.left_at IS NULL
UNION ALL
SELECT a.person_id,
       sum(a.amount_fen - least(a.amount_fen, greatest(p.refunded_fen - t.left_over_fen - t.after_fen, 0)))::bigint
           AS amount_fen
FROM payment_ledger p
JOIN payment_allocations a ON a.payment_id = p.id
CROSS JOIN LATERAL (
    SELECT p.amount_fen - coalesce(sum(b.amount_fen), 0)::bigint AS left_over_fen,
           coalesce(sum(b.amount_fen) FILTER (
               WHERE array_position(p.person_ids, b.person_id) > array_position(p.person_ids, a.person_id)
                 AND NOT EXISTS (SELECT 1 FROM enrollments f WHERE f.id = b.enrollment_id AND f.status <> 'cancelled')),
               0)::bigint AS after_fen
    FROM payment_allocations b
    WHERE b.payment_id = p.id
) AS t
WHERE p.household_id = $1 AND p.coverage_year = $2 AND p.kind = 'premium' AND NOT p.voided
  AND a.person_id IN (SELECT c.person_id FROM memberships c WHERE c.household_id = $1 AND c.left_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM enrollments e
                  WHERE e.person_id = a.person_id AND e.coverage_year = $2 AND e.status <> 'cancelled')
GROUP BY a.person_id;

-- name: household_money
-- A household's money for year $2: what its live enrolments come to (premium, subsidy) and what is
-- paid for them and for it (`premium_money`: what payments not voided, net of refunds, put towards
-- the enrolments live in it now, whichever household paid, and what its own payments left over).
SELECT e.premium_fen, e.subsidy_fen,
       (SELECT coalesce(sum(m.amount_fen), 0)::bigint FROM premium_money m
        WHERE m.household_id = $1 AND m.coverage_year = $2) AS paid_fen
FROM (SELECT coalesce(sum(premium_fen), 0)::bigint AS premium_fen,
             coalesce(sum(subsidy_fen) FILTER (WHERE premium_fen IS NOT NULL), 0)::bigint AS subsidy_fen
      FROM enrollments
      WHERE household_id = $1 AND coverage_year = $2 AND status <> 'cancelled') AS e;
