"""A household's edits in the transaction that created it leave no change record, nor a second row
for tablets to pull (issue 20 point 3).

`record_changes` tells a tablet's edit what others changed after the version it was based on. A
household's first statement writes no record (migration 0008: nobody can have seen it), and neither
do the first members added with it. But an edit of the household later in the same transaction, a
tablet's registration followed by the phone noted at the end of the visit, in one push, was
recorded: a record nobody can ever be told, since no one can hold a version of the household before
the one its transaction commits (and the device that made it is never told its own changes).

A push now writes such a household with its edit in one statement (the household created at the
version the edit leaves); applied one by one, the same push must leave the same world. So the
households' branch of `record_changes_capture` skips the rows of a household created in the current
transaction (`created_at = now()`, the transaction's start, as the memberships' branch already
tells a household's first members from later joiners). Likewise `sync_capture` notes such an edit
for tablets to pull only when it moves the household to another township: the household's insert
in this transaction noted it already where it was made (and a move, where it went), and a pull reads
the household as it is. Persons' and memberships' changes are as before.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-06
"""

from migrations import edit_function

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

BEFORE = """                ('status', o.status, n.status, o.status IS DISTINCT FROM n.status)
            ) AS f (field, old_value, new_value, changed)
            WHERE f.changed;"""
AFTER = """                ('status', o.status, n.status, o.status IS DISTINCT FROM n.status)
            ) AS f (field, old_value, new_value, changed)
            WHERE f.changed AND n.created_at <> now();  -- (a household made in this transaction: 0037)"""


SYNC_BEFORE = """            INSERT INTO sync_changes (entity, entity_id, township_code, op)
            SELECT DISTINCT 'household', id, township_of(village_code), 'upsert' FROM new_rows;
            IF TG_OP = 'UPDATE' THEN"""
SYNC_AFTER = """            IF TG_OP = 'INSERT' THEN
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'household', id, township_of(village_code), 'upsert' FROM new_rows;
            ELSE  -- not again for a household made in this transaction, unless it changed township (0037)
                INSERT INTO sync_changes (entity, entity_id, township_code, op)
                SELECT DISTINCT 'household', n.id, township_of(n.village_code), 'upsert'
                FROM old_rows o JOIN new_rows n ON n.id = o.id
                WHERE n.created_at <> now() OR township_of(o.village_code) <> township_of(n.village_code);"""


def upgrade() -> None:
    edit_function("record_changes_capture()", [(BEFORE, AFTER)])
    edit_function("sync_capture()", [(SYNC_BEFORE, SYNC_AFTER)])


def downgrade() -> None:
    edit_function("sync_capture()", [(SYNC_AFTER, SYNC_BEFORE)])
    edit_function("record_changes_capture()", [(AFTER, BEFORE)])
