"""An enrolment whose cover a later history import would change waits for a reviewer.

enrollments.gap_review holds `GapReview` (backend/enrollment/enrollments.py) as JSON while a review
is open: the history years that changed what is known and the cover the enrolment would have now.
A reviewer applies that cover or keeps the one it has (audited); either way the column is cleared.
Cover already fixed never changes silently.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08
"""

from migrations import run_sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE enrollments ADD COLUMN gap_review jsonb
        CHECK (gap_review IS NULL OR jsonb_typeof(gap_review) = 'object');
    CREATE INDEX enrollments_gap_review_idx ON enrollments (coverage_year, village_code) WHERE gap_review IS NOT NULL;
    """)


def downgrade() -> None:
    run_sql("""
    DROP INDEX enrollments_gap_review_idx;
    ALTER TABLE enrollments DROP COLUMN gap_review;
    """)
