"""`premium_money` reads the year of an allocation to a live enrolment from the enrolment, not the
payment (they are the same: a premium payment allocates only to enrolments of its own year), so
`household_id = … AND coverage_year = …` becomes the enrolments' index condition
(`enrollments_household_year_idx`) and the household's money is read from its few enrolments. With the
payment's year the planner could start from every payment of the year and join out to the household
(at 500 payments in one push, 4 ms a payment, growing with the year's payments: issue 20).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-10
"""

from migrations import run_sql

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_VIEW = """
    CREATE OR REPLACE VIEW premium_money AS
    SELECT p.id AS payment_id, {year} AS coverage_year, e.household_id, e.id AS enrollment_id, a.person_id,
           (a.amount_fen - least(a.amount_fen,
                                 greatest(p.refunded_fen - (p.amount_fen - t.live_fen) - t.after_fen, 0)))::bigint
               AS amount_fen
    FROM payment_allocations a
    JOIN enrollments e ON e.id = a.enrollment_id AND e.status <> 'cancelled'
    JOIN payment_ledger p ON p.id = a.payment_id AND p.kind = 'premium' AND NOT p.voided
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(b.amount_fen), 0)::bigint AS live_fen,
               coalesce(sum(b.amount_fen) FILTER (
                   WHERE array_position(p.person_ids, b.person_id) > array_position(p.person_ids, a.person_id)),
                   0)::bigint AS after_fen
        FROM payment_allocations b
        JOIN enrollments f ON f.id = b.enrollment_id AND f.status <> 'cancelled'
        WHERE b.payment_id = p.id
    ) AS t
    UNION ALL
    SELECT p.id, p.coverage_year, p.household_id, NULL::uuid, NULL::uuid,
           greatest(p.amount_fen - t.live_fen - p.refunded_fen, 0)::bigint
    FROM payment_ledger p
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(b.amount_fen), 0)::bigint AS live_fen
        FROM payment_allocations b
        JOIN enrollments f ON f.id = b.enrollment_id AND f.status <> 'cancelled'
        WHERE b.payment_id = p.id
    ) AS t
    WHERE p.kind = 'premium' AND NOT p.voided;
"""


def upgrade() -> None:
    run_sql(_VIEW.format(year="e.coverage_year"))


def downgrade() -> None:
    run_sql(_VIEW.format(year="p.coverage_year"))
