"""Lists from the medical-insurance settlement system, concerning one year: the persons with zero
reimbursement (零报销人员) in a year raise their serious-illness ceiling the next year (issue 17
point 3, 国办发〔2024〕38号).

A new list kind, `settlement`, beside subsidy, exclusion and roster. `concerns_year` is the year a
settlement list is about: required for that kind, refused for the others. Which version applies
to a year is the newest loaded one of that year and scope (README, Lists).

Merging note: another migration that adds a list kind rewrites the same CHECK; the set of kinds is
the union of both.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-09
"""

from migrations import run_sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE list_versions DROP CONSTRAINT IF EXISTS list_versions_kind_check;
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_kind_check
        CHECK (kind IN ('subsidy', 'exclusion', 'roster', 'settlement'));
    ALTER TABLE list_versions ADD COLUMN concerns_year integer CHECK (concerns_year BETWEEN 2000 AND 2100);
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_settlement_year
        CHECK ((kind = 'settlement') = (concerns_year IS NOT NULL) OR kind IS NULL);
    CREATE INDEX list_versions_settlement_idx ON list_versions (list_type, concerns_year, division_code, version)
        WHERE status = 'loaded' AND kind = 'settlement';
    """)


def downgrade() -> None:
    run_sql("""
    DROP INDEX list_versions_settlement_idx;
    ALTER TABLE list_versions DISABLE TRIGGER list_versions_append_only;
    ALTER TABLE list_entries DISABLE TRIGGER list_entries_append_only;
    DELETE FROM list_entries WHERE version_id IN (SELECT id FROM list_versions WHERE kind = 'settlement');
    DELETE FROM list_versions WHERE kind = 'settlement';
    ALTER TABLE list_entries ENABLE TRIGGER list_entries_append_only;
    ALTER TABLE list_versions ENABLE TRIGGER list_versions_append_only;
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_settlement_year;
    ALTER TABLE list_versions DROP COLUMN concerns_year;
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_kind_check;
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_kind_check CHECK (kind IN ('subsidy', 'exclusion', 'roster'));
    """)
