"""The money follows the enrolment: what a payment put towards a person is tied to the enrolment it
paid, and a household's money is counted over the enrolments live in it now.

An enrolment is the person's and follows them on a move (PROTOCOL.md §3, A person's enrolment);
the payment stays as recorded, naming the household that paid. payment_allocations.enrollment_id
names the enrolment an allocation paid (NULL for a back-payment), so what is paid for an enrolment
is read by it (indexed), whichever household's payment it was, and a later enrolment of the same
person and year never inherits the money of a cancelled one. Existing allocations are linked to
the enrolment of their person and year that was live when the payment was received (else the
latest one); the append-only trigger is off for that one statement only.

`premium_money` splits every premium payment not voided, net of its refunds, into the parts that
count for a household now: each allocation to a live enrolment counts for the household the
enrolment lives in; the rest (money over what was owed, allocations to cancelled enrolments) stays
with the household that paid, as on its receipt. A refund comes off that rest first and then off
the allocations to live enrolments, the last person of the payment first (the reverse of the order
the money was applied in). Summed over every household it is payments − voids − refunds.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-09
"""

from migrations import run_sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE payment_allocations ADD COLUMN enrollment_id uuid REFERENCES enrollments (id);
    ALTER TABLE payment_allocations DISABLE TRIGGER payment_allocations_append_only;
    UPDATE payment_allocations a SET enrollment_id = (
        SELECT e.id FROM enrollments e
        WHERE e.person_id = a.person_id AND e.coverage_year = p.coverage_year
        ORDER BY (e.registered_at <= p.received_at AND (e.cancelled_at IS NULL OR e.cancelled_at >= p.received_at))
                     DESC,
                 e.status <> 'cancelled' DESC, e.registered_at DESC, e.id
        LIMIT 1)
    FROM payments p
    WHERE p.id = a.payment_id AND p.kind = 'premium';
    ALTER TABLE payment_allocations ENABLE TRIGGER payment_allocations_append_only;
    CREATE INDEX payment_allocations_enrollment_idx ON payment_allocations (enrollment_id)
        WHERE enrollment_id IS NOT NULL;

    CREATE VIEW premium_money AS
    SELECT p.id AS payment_id, p.coverage_year, e.household_id, e.id AS enrollment_id, a.person_id,
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
    """)


def downgrade() -> None:
    run_sql("""
    DROP VIEW premium_money;
    DROP INDEX payment_allocations_enrollment_idx;
    ALTER TABLE payment_allocations DROP COLUMN enrollment_id;
    """)
