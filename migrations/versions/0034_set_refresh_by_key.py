"""The set refresh of the 应保尽保 summary reads `coverage_persons` by key, never the whole table
(issue 20 point 3).

`coverage_refresh(ids)` (0026) runs at the commit of every transaction that touched more than 64
persons (0032): a tablet's push of 17 or more new households, a list import, a move of a village.
Two of its statements joined `coverage_persons` to rows derived from `ids` (the fresh figures, then
the changed ones) without naming `ids` there, and PostgreSQL, expecting twice as many rows as there
were, could hash the whole table instead of looking the persons up: two sequential scans of every
person counted, at each such commit. It did so with 21,576 persons counted (80 refreshed: 5–13 ms,
now 3.5–4 ms); with 1,000,000 it chose the key by itself (about 3 ms either way). Which plan a
district got depended on its size and statistics; now it does not. (bench/sync_concurrent_push.py,
whose pushes take this path, did not move measurably.)

Both joins now also say `person_id = ANY (ids)` (true of every row they join already: the same
figures), so the table is read through its key. The function is edited in place: its definition as
the database holds it, with exactly these two joins changed (the migration fails if either is not
found as 0026 wrote it).

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-06
"""

from migrations import edit_function

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

# (as 0026 wrote it, as it is now)
JOINS = (
    (
        "FROM fresh f JOIN coverage_persons c USING (person_id)",
        "FROM fresh f JOIN coverage_persons c ON c.person_id = f.person_id AND c.person_id = ANY (ids)",
    ),
    (
        "FROM changed ch WHERE c.person_id = ch.person_id",
        "FROM changed ch WHERE c.person_id = ch.person_id AND c.person_id = ANY (ids)",
    ),
)


def upgrade() -> None:
    edit_function("coverage_refresh(uuid[])", [(old, new) for old, new in JOINS])


def downgrade() -> None:
    edit_function("coverage_refresh(uuid[])", [(new, old) for old, new in JOINS])
