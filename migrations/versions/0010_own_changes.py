"""Which tablet made a change: a tablet's own earlier offline edits are not a conflict with its later ones.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from migrations import run_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- The tablet whose push made the change (NULL: REST, CLI, imports, reviewers). A push names its
    -- device for its own transaction (`canbao.device_id`, set by `lock_sync_device`); the capture
    -- triggers of 0008 insert without naming this column, so the default stamps every row. A push
    -- compares a base version only with changes other parties made: offline, a tablet's base stays
    -- the version it last pulled while its own edits move the server on.
    ALTER TABLE record_changes
        ADD COLUMN device_id uuid DEFAULT nullif(current_setting('canbao.device_id', true), '')::uuid;
    """)


def downgrade() -> None:
    run_sql("ALTER TABLE record_changes DROP COLUMN device_id;")
