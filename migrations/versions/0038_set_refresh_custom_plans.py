"""The set refresh of the 应保尽保 summary is planned for the persons it is given, each time (issue 20
point 4).

`coverage_refresh(ids)` runs at the commit of every transaction that touched more than 64 persons:
every page of a tablet's push that registers or edits a few households. PL/pgSQL keeps a plan per
statement and connection; from a connection's sixth call PostgreSQL may switch to one plan for any
`ids` (a generic plan), which takes the array for ten persons. On the pool's connections in
bench/sync_offline_month.py it did, and that plan updated the changed persons' rows by a nested loop
that read every person of `ids` again for each changed one: a page of 700 persons read 231,111 rows
of `coverage_persons` and its commit took 210–370 ms, against 23–52 ms for the same pages while the
connection still planned each call (pages 1–16 of 21 in one run; all of them slow in another). The
cost grows with the square of the page, so a larger push or a list import would pay more.

The function now sets `plan_cache_mode = force_custom_plan` for its own run: each call is planned
with its array, about 3 ms of planning against 30 ms or more of work, and only on the set path (64
persons or fewer are refreshed one by one by other functions). On a connection past its fifth call
the same refresh of 700 changed persons: 133–145 ms before, 34–44 ms with custom plans (the month's
data, one connection, 12 calls each way).

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-07
"""

from migrations import run_sql

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("ALTER FUNCTION coverage_refresh(uuid[]) SET plan_cache_mode = force_custom_plan")


def downgrade() -> None:
    run_sql("ALTER FUNCTION coverage_refresh(uuid[]) RESET plan_cache_mode")
