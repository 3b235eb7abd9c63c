"""Enrolments found by person at any status: a person's enrolment of a year (the resident's
coverage, FHIR, the eligibility check, quotes) read all of `enrollments` once per person, because the
only index on person_id was the partial unique one of live enrolments, which a query that also
wants a cancelled enrolment cannot use. At 50,000 persons that made a resident's coverage 42 ms;
at a prefecture's 5 million, seconds.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE INDEX enrollments_person_year_idx ON enrollments (person_id, coverage_year);
    """)


def downgrade() -> None:
    run_sql("""
    DROP INDEX enrollments_person_year_idx;
    """)
