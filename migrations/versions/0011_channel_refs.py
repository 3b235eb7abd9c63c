"""An index to find a payment by its QR or bank transaction reference: one transfer is recorded once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from migrations import run_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- A payment naming a channel reference already recorded (and not voided) is refused
    -- (`premiums.channel_ref_taken`, under a lock per reference). Not a unique index: a voided
    -- payment's transfer may be recorded again, rightly.
    CREATE INDEX payments_channel_ref_idx ON payments (method, channel_ref) WHERE channel_ref IS NOT NULL;
    """)


def downgrade() -> None:
    run_sql("DROP INDEX payments_channel_ref_idx;")
