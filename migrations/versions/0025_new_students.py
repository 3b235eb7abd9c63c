"""New university students (高校新生, 闽政办〔2025〕3号 §1): an enrolment registered at the school as a
new student's. Under a policy with `rules.new_students`, such a student who was continuously
insured and pays inside the window is covered from 1 September of the year before the coverage year;
`coverage_start` has never been checked to lie in the coverage year, so nothing else changes.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-12
"""

from __future__ import annotations

from migrations import run_sql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE enrollments ADD COLUMN new_student boolean NOT NULL DEFAULT false;
    """)


def downgrade() -> None:
    run_sql("""
    ALTER TABLE enrollments DROP COLUMN new_student;
    """)
