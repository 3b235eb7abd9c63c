"""What an export job produces: a file (CSV or XLSX) its owner downloads from the job.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    ALTER TABLE jobs ADD COLUMN output_name text, ADD COLUMN output_media_type text,
                     ADD COLUMN output_bytes bigint;
    -- Written in the job's transaction, with its end; deleted with the job (its retention).
    CREATE TABLE job_outputs (
        job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq    integer NOT NULL,
        data   bytea NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE job_outputs;
    ALTER TABLE jobs DROP COLUMN output_name, DROP COLUMN output_media_type, DROP COLUMN output_bytes;
    """)
