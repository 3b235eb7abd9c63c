"""Whether a payment is voided and what was refunded of it, kept as each decision is recorded
(issue 20 point 2: a summary kept by the transaction that changes the facts).

`payment_ledger` derived both for every payment it read, with two subqueries each joining the
payment's events to their decisions; every statement that reads money (`premium_money` reads the
ledger twice) carried them as plan nodes that PostgreSQL starts for each execution, whether or not a
payment was ever voided. A resident's coverage spent about a third of its PostgreSQL time starting
such plans (docs/scaling.md, "What removing whole costs would buy a payment" and the resident's
statements).

`payment_states` has a row for each payment with an approved void or refund: voided, and the sum of
the refunds approved. A trigger on `payment_events` keeps it as each approval is inserted, in the
approval's statement; the ledger joins it, so a payment without a row is neither voided nor refunded.
The money's definition is unchanged (tests/premiums/test_payments.py compares the ledger with the
events after voids, refunds, rejections and requests still pending).

The service cannot write the table (`backend.roles.READ_ONLY_TABLES`): the trigger's function runs
as the owner (SECURITY DEFINER), so a void or a refund is still only ever the insert of an
append-only event.

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-07
"""

from migrations import run_sql

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE payment_states (
        payment_id uuid PRIMARY KEY REFERENCES payments (id),
        voided boolean NOT NULL DEFAULT false,
        refunded_fen bigint NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0)
    );

    INSERT INTO payment_states (payment_id, voided, refunded_fen)
    SELECT q.payment_id, bool_or(q.kind = 'void_requested'),
           coalesce(sum(q.amount_fen) FILTER (WHERE q.kind = 'refund_requested'), 0)
    FROM payment_events q
    JOIN payment_events d ON d.request_id = q.id AND d.kind = 'approved'
    WHERE q.kind IN ('void_requested', 'refund_requested')
    GROUP BY q.payment_id;

    -- An approved decision: its request's payment voided, or the refund's amount added. A request is
    -- decided once (`payment_events_one_decision`), and its payment's decisions are taken one at a
    -- time under the payment's lock (`adjustments.decide_adjustment`).
    CREATE FUNCTION payment_state_of_decision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    BEGIN
        INSERT INTO payment_states AS s (payment_id, voided, refunded_fen)
        SELECT q.payment_id, q.kind = 'void_requested',
               CASE q.kind WHEN 'refund_requested' THEN coalesce(q.amount_fen, 0) ELSE 0 END
        FROM payment_events q
        WHERE q.id = NEW.request_id AND q.kind IN ('void_requested', 'refund_requested')
        ON CONFLICT (payment_id) DO UPDATE
            SET voided = s.voided OR excluded.voided, refunded_fen = s.refunded_fen + excluded.refunded_fen;
        RETURN NULL;
    END
    $$;
    REVOKE ALL ON FUNCTION payment_state_of_decision() FROM PUBLIC;

    CREATE TRIGGER payment_events_state AFTER INSERT ON payment_events
        FOR EACH ROW WHEN (NEW.kind = 'approved') EXECUTE FUNCTION payment_state_of_decision();

    CREATE OR REPLACE VIEW payment_ledger AS
    SELECT p.*, coalesce(s.voided, false) AS voided, coalesce(s.refunded_fen, 0)::bigint AS refunded_fen
    FROM payments p
    LEFT JOIN payment_states s ON s.payment_id = p.id;
    """)


def downgrade() -> None:
    run_sql("""
    CREATE OR REPLACE VIEW payment_ledger AS
    SELECT p.*,
           EXISTS (SELECT 1 FROM payment_events q
                   JOIN payment_events d ON d.request_id = q.id AND d.kind = 'approved'
                   WHERE q.payment_id = p.id AND q.kind = 'void_requested') AS voided,
           coalesce((SELECT sum(q.amount_fen) FROM payment_events q
                     JOIN payment_events d ON d.request_id = q.id AND d.kind = 'approved'
                     WHERE q.payment_id = p.id AND q.kind = 'refund_requested'), 0)::bigint AS refunded_fen
    FROM payments p;
    DROP TRIGGER payment_events_state ON payment_events;
    DROP FUNCTION payment_state_of_decision();
    DROP TABLE payment_states;
    """)
