"""The summary's rows taken in one statement before a set refresh (issue 20 point 3).

Above 64 persons, the refresh at the commit (0032) first takes each person's `coverage_persons` row in
id order, inserting the missing ones in their turn (the set refresh alone would insert them all before
locking the others: a deadlock with a transaction refreshing one of them by itself). It did so with
two statements per person, each started, checked (the table's CHECK constraint read back from its
stored form for every INSERT) and ended on its own: for a push of 500 households, 4,000 statements at
its commit. One statement does the same: `INSERT … SELECT … ORDER BY` takes the rows one after the
other in id order, and its `ON CONFLICT DO UPDATE … WHERE false` locks an existing row as FOR UPDATE
did without writing it (PostgreSQL locks every conflicting row of a DO UPDATE, updated or not).
tests/enrollment/test_coverage_tallies_random.py's race holds a lower row meanwhile: the commit waits
for it before it inserts the missing row, as before.

The commit refreshing 2,000 persons (a push of 500 households): 68 → 38 ms (median of 12 each,
interleaved, on one connection).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-06
"""

from migrations import edit_function

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

LOOP = """            FOREACH person IN ARRAY ids LOOP
                INSERT INTO coverage_persons (person_id) VALUES (person) ON CONFLICT DO NOTHING;
                PERFORM 1 FROM coverage_persons WHERE person_id = person FOR UPDATE;
            END LOOP;"""
STATEMENT = """            INSERT INTO coverage_persons (person_id)
            SELECT i FROM unnest(ids) AS i ORDER BY i
            ON CONFLICT (person_id) DO UPDATE SET person_id = excluded.person_id WHERE false;"""


def upgrade() -> None:
    edit_function("coverage_flush()", [(LOOP, STATEMENT)])


def downgrade() -> None:
    edit_function("coverage_flush()", [(STATEMENT, LOOP)])
