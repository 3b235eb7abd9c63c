"""An index of premium allocations by person, for what a person's payments put towards their year
(`paid_for`, backend/enrollment/quotes.sql, through the `premium_money` view): without it a
resident's coverage page read every allocation of the district (a sequential scan: 164 ms of
PostgreSQL per request with 5,000,000 persons, bench/prefecture.py; issue 20).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("CREATE INDEX payment_allocations_person_idx ON payment_allocations (person_id);")


def downgrade() -> None:
    run_sql("DROP INDEX payment_allocations_person_idx;")
