"""Evidence of exemptions from the waiting period: lists that are neither subsidies nor exclusions
(kind `evidence`: soldiers discharged, 退役军人; employee insurance that ended, 职工医保停保), and
claims that prove an exemption instead of a subsidy category (purpose `exemption`), with the dates
of the paper proof (an employee-insurance leaver's insured period).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-10
"""

from __future__ import annotations

from migrations import run_sql

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_kind_check;
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_kind_check
        CHECK (kind IN ('subsidy', 'exclusion', 'roster', 'settlement', 'evidence'));

    ALTER TABLE eligibility_claims
        ADD COLUMN purpose text NOT NULL DEFAULT 'subsidy' CHECK (purpose IN ('subsidy', 'exemption')),
        ADD COLUMN valid_from date,
        ADD COLUMN valid_to date,
        ADD CONSTRAINT eligibility_claims_valid_order CHECK (valid_to >= valid_from);
    """)


def downgrade() -> None:
    run_sql("""
    DELETE FROM eligibility_claims WHERE purpose = 'exemption';
    ALTER TABLE eligibility_claims DROP COLUMN purpose, DROP COLUMN valid_from, DROP COLUMN valid_to;
    DELETE FROM list_entries WHERE version_id IN (SELECT id FROM list_versions WHERE kind = 'evidence');
    DELETE FROM list_versions WHERE kind = 'evidence';
    ALTER TABLE list_versions DROP CONSTRAINT list_versions_kind_check;
    ALTER TABLE list_versions ADD CONSTRAINT list_versions_kind_check
        CHECK (kind IN ('subsidy', 'exclusion', 'roster', 'settlement'));
    """)
