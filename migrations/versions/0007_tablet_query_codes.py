"""Query codes made on a tablet: the household's code row remembers which tablet's key hashed it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from migrations import run_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- NULL: the server derived the code (it can print it again on receipts). A device: the tablet made
    -- the code offline and sent its hash under that tablet's query-code key; the server re-keyed it
    -- and cannot print the code (PROTOCOL.md, query codes).
    ALTER TABLE household_query_codes ADD COLUMN device_id uuid REFERENCES devices (id);
    """)


def downgrade() -> None:
    run_sql("""
    ALTER TABLE household_query_codes DROP COLUMN device_id;
    """)
