"""Uploads being received, one row each while the body arrives: the per-person and per-township
limit on concurrent uploads holds across workers and instances.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- A row lives while its upload is received and handled; a process that died leaves one that
    -- expires (the upload's own time limit) and is then ignored and deleted.
    CREATE TABLE upload_slots (
        id            uuid PRIMARY KEY,
        user_id       uuid NOT NULL,
        division_code text NOT NULL,
        started_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz NOT NULL
    );
    CREATE INDEX upload_slots_user_idx ON upload_slots (user_id);
    CREATE INDEX upload_slots_division_idx ON upload_slots (division_code);
    """)


def downgrade() -> None:
    run_sql("DROP TABLE upload_slots;")
