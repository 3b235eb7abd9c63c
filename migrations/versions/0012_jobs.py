"""Durable background jobs: the work a request hands off (list imports, history imports,
reconciliations), stored with its upload so that a restart loses nothing.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from migrations import run_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    -- One row is both the job people see (`GET /api/v1/jobs/{id}`) and the queue entry workers
    -- claim (`FOR UPDATE SKIP LOCKED`): a job's result is written in the same transaction as the
    -- data it produced, so a job is done exactly when its data is there.
    CREATE TABLE jobs (
        id               uuid PRIMARY KEY,
        kind             text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
        state            text NOT NULL DEFAULT 'queued'
                         CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        params           jsonb NOT NULL DEFAULT '{}',
        actor            jsonb,            -- who asked, as they were then (re-checked at run time)
        created_by       uuid REFERENCES users (id),
        division_code    text NOT NULL,    -- the scope the job works in; readers see it by scope
        file_name        text,
        file_bytes       bigint,
        created_at       timestamptz NOT NULL DEFAULT now(),
        started_at       timestamptz,
        finished_at      timestamptz,
        attempts         integer NOT NULL DEFAULT 0,
        max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
        locked_by        text,             -- the worker running it
        locked_until     timestamptz,      -- its lease: a worker that stops renewing it has died
        cancel_requested boolean NOT NULL DEFAULT false,
        progress_done    bigint NOT NULL DEFAULT 0,
        progress_total   bigint,
        progress_unit    text,
        result           jsonb,
        error            jsonb,
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
    );
    CREATE INDEX jobs_ready_idx ON jobs (created_at) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_owner_idx ON jobs (created_by, created_at) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_division_idx ON jobs (division_code, created_at);
    CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

    -- The upload a job reads, in pieces of about a megabyte; deleted when the job ends.
    CREATE TABLE job_files (
        job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq    integer NOT NULL,
        data   bytea NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """)


def downgrade() -> None:
    run_sql("DROP TABLE job_files; DROP TABLE jobs;")
