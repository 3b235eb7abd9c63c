"""The set refresh of the 应保尽保 summary (`coverage_refresh`, above 64 persons: a tablet's push of
17 households or more) reads `coverage_persons` by key (migration 0034). Scanning it instead costs a
pass over every person of the pooling area at each such commit, a cost that grows with the area, not
with the push; at 21,576 persons PostgreSQL chose the scan, so the test runs at that size."""

from __future__ import annotations

import asyncpg

from tests.conftest import fix_planner_costs

Conn = asyncpg.Connection  # type: ignore[type-arg]
COUNTED = 21_576  # persons in the summary
REFRESHED = 80  # a push of 20 households of 4


async def scans(conn: Conn) -> int:
    """Sequential scans of `coverage_persons` in this transaction so far."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables WHERE relname = 'coverage_persons'"
        )
    )


async def test_the_set_refresh_looks_persons_up_by_key(conn: Conn) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "INSERT INTO coverage_persons (person_id) SELECT gen_random_uuid() FROM generate_series(1, $1)", COUNTED
        )
        await conn.execute("ANALYZE coverage_persons")
        await fix_planner_costs(conn)  # the costs the scan was seen under
        ids = await conn.fetchval(
            "SELECT array_agg(person_id) FROM (SELECT person_id FROM coverage_persons LIMIT $1) AS s", REFRESHED
        )
        tallies = await conn.fetchval("SELECT count(*) FROM coverage_tallies")
        before = await scans(conn)
        await conn.execute("SELECT coverage_refresh($1::uuid[])", ids)
        assert await scans(conn) == before
        # The same figures: persons counted nowhere add nothing.
        assert await conn.fetchval("SELECT count(*) FROM coverage_tallies") == tallies
    finally:
        await tx.rollback()
