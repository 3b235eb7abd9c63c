"""A history import's look-up of the enrolments it bears on grows with the file, not with its square.

After an import, `enrollments.reopen_after_history` reads the live enrolments of later years of every
person whose history changed, each with the changed years before its own
(`enrollments_after_history`). The statement used to walk all the changed pairs twice for each
enrolment it found: 4,000 persons re-imported while this year's enrolments stood took 3.2 s, 16,000
would take about 50 s, a district's file of a million rows days. The test counts the rows every step
of the statement's plan handled (EXPLAIN ANALYZE: rows produced and rows filtered out, over all
loops), which is what the time followed, and holds it to a bounded number per pair."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from backend.enrollment.enrollments import Q
from tests.sync.test_trigger_plans import DISTRICT

Conn = asyncpg.Connection  # type: ignore[type-arg]
PERSONS = 2_000
TWICE = 500  # persons with two changed years (2024 and 2025), the rest one (2025)

# A registered 2026 enrolment for each person g of the district (tests/sync/test_trigger_plans.py's
# households g, each with its head, person g, in village $2).
ENROL = """
INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, registered_on)
SELECT md5('r' || g)::uuid, md5('p' || g)::uuid, md5('h' || g)::uuid, $2, 2026, 'registered', date '2025-10-01'
FROM generate_series(1, $1) AS g
"""


def rows_handled(node: dict[str, Any]) -> float:
    """Rows a plan node and those under it produced or filtered out, over all their loops."""
    loops = node.get("Actual Loops", 1)
    own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
    return own + sum(rows_handled(child) for child in node.get("Plans", []))


async def test_the_enrolments_after_a_history_import_are_found_in_time_linear_in_the_file(
    conn: Conn, seeded: None
) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        village = await conn.fetchval("SELECT code FROM divisions WHERE level = 'village' ORDER BY code LIMIT 1")
        await conn.execute(DISTRICT, PERSONS, village)
        await conn.execute(ENROL, PERSONS, village)
        hashes = [
            r[0]
            for r in await conn.fetch("SELECT decode(md5('n' || g), 'hex') FROM generate_series(1, $1) AS g", PERSONS)
        ]
        pairs = [(h, 2025) for h in hashes] + [(h, 2024) for h in hashes[:TWICE]]
        args = ([h for h, _y in pairs], [y for _h, y in pairs])

        rows = await conn.fetch(Q["enrollments_after_history"], *args)
        assert len(rows) == PERSONS  # each enrolment once, however many of its years changed
        years = sorted(tuple(r["changed_years"]) for r in rows)
        assert years == [(2024, 2025)] * TWICE + [(2025,)] * (PERSONS - TWICE)
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)

        (plan,) = json.loads(
            await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + Q["enrollments_after_history"], *args)
        )
        assert rows_handled(plan["Plan"]) <= 100 * len(pairs)  # 12 a pair today; the old walk: 4,000
    finally:
        await tx.rollback()
