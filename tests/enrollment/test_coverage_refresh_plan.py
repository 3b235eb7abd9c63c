"""The set refresh of the 应保尽保 summary (`coverage_refresh`, above 64 persons: a tablet's push of
17 households or more) reads `coverage_persons` by key (migration 0034). Scanning it instead costs a
pass over every person of the pooling area at each such commit, a cost that grows with the area, not
with the push; at 21,576 persons PostgreSQL chose the scan, so the test runs at that size."""

from __future__ import annotations

import asyncpg

from backend.tools.demo import TOWNSHIP_A
from tests.conftest import fix_planner_costs

Conn = asyncpg.Connection  # type: ignore[type-arg]
COUNTED = 21_576  # persons in the summary
REFRESHED = 80  # a push of 20 households of 4
CHANGED = 400  # persons whose figures a push changed
VILLAGE = TOWNSHIP_A[:9] + "001"


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


async def test_the_set_refresh_is_planned_for_its_own_persons_each_time(conn: Conn) -> None:
    """Migration 0038. From a connection's sixth set refresh PostgreSQL may run one plan for any `ids`
    (generic: sized for ten persons); on the pool's connections in bench/sync_offline_month.py that
    plan updated the changed persons by a nested loop reading every person of `ids` once per changed
    one (700 persons: 231,111 rows, 210–370 ms of a commit against 23–52 ms). Which plan PostgreSQL
    makes depends on the tables' statistics, and this database's do not lead it there, so the test
    holds the rule that rules the plan out: the refresh's statements run under `force_custom_plan`,
    whatever the session says (a trigger on the summary, fired by the refresh, reads the setting)."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("CREATE TEMP TABLE seen (mode text) ON COMMIT DROP")
        await conn.execute(
            """CREATE FUNCTION pg_temp.note_mode() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO seen VALUES (current_setting('plan_cache_mode')); RETURN NULL; END $$"""
        )
        await conn.execute(
            "CREATE TRIGGER note_mode AFTER INSERT ON coverage_tallies "
            "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.note_mode()"
        )
        await conn.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
        # Persons the summary places in a village, now in none (no membership): each one changed.
        ids = await conn.fetchval(
            "WITH placed AS (INSERT INTO coverage_persons (person_id, village_code) "
            "SELECT gen_random_uuid(), $2 FROM generate_series(1, $1) RETURNING person_id) "
            "SELECT array_agg(person_id) FROM placed",
            CHANGED,
            VILLAGE,
        )
        await conn.execute("SELECT coverage_refresh($1::uuid[])", ids)
        assert await conn.fetchval("SELECT count(*) FROM coverage_persons WHERE village_code = $1", VILLAGE) == 0
        assert [r["mode"] for r in await conn.fetch("SELECT mode FROM seen")] == ["force_custom_plan"]
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"  # the session's, after it
    finally:
        await tx.rollback()
