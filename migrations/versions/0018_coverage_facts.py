"""The facts of an enrolment's cover (why it starts when it does), so the explanation is put into
words when it is read, in the reader's language, rather than stored as English.

enrollments.coverage_facts holds `CoverageFacts` (mobile_sync_protocol/rules/coverage.py) as JSON,
written with coverage_start … coverage_note when an enrolment is funded and cleared with them.
Rows funded before this revision keep NULL: their English coverage_note is what they show.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from migrations import run_sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE enrollments ADD COLUMN coverage_facts jsonb
        CHECK (coverage_facts IS NULL OR jsonb_typeof(coverage_facts) = 'object');
    """)


def downgrade() -> None:
    run_sql("""
    ALTER TABLE enrollments DROP COLUMN coverage_facts;
    """)
