"""The capture triggers look up the rows their transition tables name by key, whatever size of batch
they first saw (issue 20 point 4).

The statement triggers that note what a write changed (`sync_capture`, `sync_capture_subsidies`,
`record_changes_capture`, `coverage_facts_changed`) join their transition tables (`new_rows`,
`old_rows`) to households, memberships, persons, payments, receipt blocks, list entries and claims.
PL/pgSQL plans each of those queries once per connection and keeps the plan. A query without
parameters is never planned again. The planner sizes a transition table by the rows it holds at
that first call.

When a connection's first membership insert was a set (a tablet's registration day: 25 households
and their members), the plan kept was the one for a hundred rows: hash the whole households table.
Every later one-member insert on that connection read every household again. In
bench/sync_offline_month.py such an insert took 1.3 ms of PostgreSQL, 0.5 of it in
`record_changes_capture` and 0.3 in each sync trigger. The same insert takes 0.28 ms in all on a
connection whose first call was small. How fast a clerk's edit was depended on what its
connection had done first, and the larger the district, the larger the scan.

Each such join is now a lookup per row of the transition table: a `LATERAL` subquery that names
the row it needs (`OFFSET 0` keeps PostgreSQL from folding it back into a join it could hash), and
`OFFSET 0` in the `EXISTS` tests for the same reason. Every table looked up has an index on that
key, so any batch costs one index probe a row. Joins of the two transition tables with each other
still hash. Left as they were: the list-version branch of `sync_capture_subsidies` (one version
row, whose plan follows the tables' statistics) and the bump's `UPDATE record_changes`, which reads
only rows not yet stamped through their partial index. Every other join and its result are the same
rows as before. tests/sync/test_trigger_plans.py proves the rule: after a set of 300 rows on a
connection, a one-row write reads no table whole.

The functions are edited in place: each part below is found exactly once as the earlier migrations
left it, or the migration fails.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-06
"""

from migrations import edit_function

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

# A person's current membership and its household, looked up for a row `n` (or `p`) of a batch.
_MEMBERSHIP_OF = "CROSS JOIN LATERAL (SELECT m.household_id FROM memberships m WHERE m.person_id = {p}.id AND m.left_at IS NULL OFFSET 0) m"
_HOUSEHOLD_OF = "CROSS JOIN LATERAL (SELECT h.village_code FROM households h WHERE h.id = {ref} OFFSET 0) h"


def _membership(p: str, indent: str) -> str:
    return _MEMBERSHIP_OF.format(p=p) + "\n" + indent + _HOUSEHOLD_OF.format(ref="m.household_id")


# (function, [(as the earlier migrations left it, as it is now)])
EDITS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "sync_capture()",
        [
            (
                "FROM new_rows n\n"
                "            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL\n"
                "            JOIN households h ON h.id = m.household_id;",
                "FROM new_rows n\n            " + _membership("n", "            ") + ";",
            ),
            (
                "FROM new_rows n\n            JOIN households h ON h.id = n.household_id\n            CROSS JOIN LATERAL (VALUES",
                "FROM new_rows n\n            "
                + _HOUSEHOLD_OF.format(ref="n.household_id")
                + "\n            CROSS JOIN LATERAL (VALUES",
            ),
            (
                "FROM new_rows n JOIN payments p ON p.id = n.payment_id;",
                "FROM new_rows n\n            CROSS JOIN LATERAL "
                "(SELECT p.village_code FROM payments p WHERE p.id = n.payment_id OFFSET 0) p;",
            ),
            (
                "FROM new_rows n JOIN receipt_blocks b ON b.id = n.block_id;",
                "FROM new_rows n\n            CROSS JOIN LATERAL "
                "(SELECT b.id, b.township_code FROM receipt_blocks b WHERE b.id = n.block_id OFFSET 0) b;",
            ),
        ],
    ),
    (
        "sync_capture_subsidies()",
        [
            (  # an accepted claim changed
                "JOIN persons p ON p.id_number_hash IN (o.id_number_hash, n.id_number_hash)\n"
                "                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL\n"
                "                JOIN households h ON h.id = m.household_id",
                "CROSS JOIN LATERAL (SELECT p.id FROM persons p\n"
                "                                    WHERE p.id_number_hash IN (o.id_number_hash, n.id_number_hash) OFFSET 0) p\n"
                "                " + _membership("p", "                "),
            ),
            (  # a claim accepted
                "FROM new_rows n\n"
                "                JOIN persons p ON p.id_number_hash = n.id_number_hash\n"
                "                JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL\n"
                "                JOIN households h ON h.id = m.household_id",
                "FROM new_rows n\n"
                "                CROSS JOIN LATERAL (SELECT p.id FROM persons p WHERE p.id_number_hash = n.id_number_hash OFFSET 0) p\n"
                "                " + _membership("p", "                "),
            ),
            (  # a person's identity number changed
                "JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL\n"
                "            JOIN households h ON h.id = m.household_id\n"
                "            WHERE o.id_number_hash IS DISTINCT FROM n.id_number_hash;",
                _membership("n", "            ")
                + "\n            WHERE o.id_number_hash IS DISTINCT FROM n.id_number_hash;",
            ),
            (  # a membership changed
                "FROM old_rows o JOIN new_rows n ON n.id = o.id\n"
                "                JOIN households h ON h.id = n.household_id\n"
                "                JOIN persons p ON p.id = n.person_id\n"
                "                WHERE (o.household_id <> n.household_id OR o.left_at IS DISTINCT FROM n.left_at)\n"
                "                  AND (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id\n"
                "                               WHERE e.id_number_hash = p.id_number_hash\n"
                "                                 AND list_travels_to_tablets(v.kind, v.list_type))\n"
                "                       OR EXISTS (SELECT 1 FROM eligibility_claims c\n"
                "                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'));",
                "FROM old_rows o JOIN new_rows n ON n.id = o.id\n"
                "                " + _HOUSEHOLD_OF.format(ref="n.household_id") + "\n"
                "                CROSS JOIN LATERAL (SELECT p.id_number_hash FROM persons p WHERE p.id = n.person_id OFFSET 0) p\n"
                "                WHERE (o.household_id <> n.household_id OR o.left_at IS DISTINCT FROM n.left_at)\n"
                "                  AND (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id\n"
                "                               WHERE e.id_number_hash = p.id_number_hash\n"
                "                                 AND list_travels_to_tablets(v.kind, v.list_type) OFFSET 0)\n"
                "                       OR EXISTS (SELECT 1 FROM eligibility_claims c\n"
                "                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'\n"
                "                                  OFFSET 0));",
            ),
            (  # a membership begun
                "FROM new_rows n\n"
                "                JOIN households h ON h.id = n.household_id\n"
                "                JOIN persons p ON p.id = n.person_id\n"
                "                WHERE (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id\n"
                "                               WHERE e.id_number_hash = p.id_number_hash\n"
                "                                 AND list_travels_to_tablets(v.kind, v.list_type))\n"
                "                       OR EXISTS (SELECT 1 FROM eligibility_claims c\n"
                "                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'));",
                "FROM new_rows n\n"
                "                " + _HOUSEHOLD_OF.format(ref="n.household_id") + "\n"
                "                CROSS JOIN LATERAL (SELECT p.id_number_hash FROM persons p WHERE p.id = n.person_id OFFSET 0) p\n"
                "                WHERE (EXISTS (SELECT 1 FROM list_entries e JOIN list_versions v ON v.id = e.version_id\n"
                "                               WHERE e.id_number_hash = p.id_number_hash\n"
                "                                 AND list_travels_to_tablets(v.kind, v.list_type) OFFSET 0)\n"
                "                       OR EXISTS (SELECT 1 FROM eligibility_claims c\n"
                "                                  WHERE c.id_number_hash = p.id_number_hash AND c.status = 'accepted'\n"
                "                                  OFFSET 0));",
            ),
        ],
    ),
    (
        "record_changes_capture()",
        [
            (
                "FROM old_rows o JOIN new_rows n ON n.id = o.id\n"
                "            JOIN memberships m ON m.person_id = n.id AND m.left_at IS NULL\n",
                "FROM old_rows o JOIN new_rows n ON n.id = o.id\n            " + _MEMBERSHIP_OF.format(p="n") + "\n",
            ),
            (
                "FROM new_rows n JOIN households h ON h.id = n.household_id\n            WHERE h.created_at <> now();",
                "FROM new_rows n\n"
                "            CROSS JOIN LATERAL "
                "(SELECT h.created_at FROM households h WHERE h.id = n.household_id OFFSET 0) h\n"
                "            WHERE h.created_at <> now();",
            ),
        ],
    ),
    (
        "coverage_facts_changed()",
        [
            (
                "JOIN memberships m ON m.household_id = n.id AND m.left_at IS NULL\n",
                "CROSS JOIN LATERAL (SELECT m.person_id FROM memberships m\n"
                "                                    WHERE m.household_id = n.id AND m.left_at IS NULL OFFSET 0) m\n",
            ),
            (
                "ids := ARRAY(SELECT p.id FROM new_rows r JOIN persons p ON p.id_number_hash = r.id_number_hash);",
                "ids := ARRAY(SELECT p.id FROM new_rows r CROSS JOIN LATERAL\n"
                "                    (SELECT p.id FROM persons p WHERE p.id_number_hash = r.id_number_hash OFFSET 0) p);",
            ),
            (
                "ids := ARRAY(SELECT p.id FROM old_rows r JOIN persons p ON p.id_number_hash = r.id_number_hash);",
                "ids := ARRAY(SELECT p.id FROM old_rows r CROSS JOIN LATERAL\n"
                "                    (SELECT p.id FROM persons p WHERE p.id_number_hash = r.id_number_hash OFFSET 0) p);",
            ),
            (
                "JOIN persons p ON p.id_number_hash = r.id_number_hash);\n            END IF;",
                "CROSS JOIN LATERAL\n"
                "                        (SELECT p.id FROM persons p WHERE p.id_number_hash = r.id_number_hash OFFSET 0) p);\n"
                "            END IF;",
            ),
        ],
    ),
]


def upgrade() -> None:
    for signature, pairs in EDITS:
        edit_function(signature, pairs)


def downgrade() -> None:
    for signature, pairs in EDITS:
        edit_function(signature, [(now, before) for before, now in pairs])
