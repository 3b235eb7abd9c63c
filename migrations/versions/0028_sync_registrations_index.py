"""An index of a tablet's applied enrolments by the time they were applied, for a payment's
`registered_by_tablet` (backend/sync/queries.sql): it looked through every ledger row of the tablet
for each payment, so a tablet back with 10,000 queued mutations paid for its ledger's length on every
payment (1.6 ms a payment after a month offline: issue 20). Partial: only `enrollment.create` rows
that applied, a small part of an append-only table.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-10
"""

from migrations import run_sql

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE INDEX sync_mutations_enrolments_at_idx ON sync_mutations (device_id, at)
        WHERE kind = 'enrollment.create' AND status IN ('applied', 'applied_with_conflict');
    """)


def downgrade() -> None:
    run_sql("DROP INDEX sync_mutations_enrolments_at_idx;")
