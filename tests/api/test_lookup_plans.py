"""A look-up of one person reads that person's household, not every household of the caller's scope.

After five runs of a prepared statement PostgreSQL may keep one generic plan for it, and a generic
plan cannot know the scope: it guesses that `village_code BETWEEN $2 AND $3` holds half a percent of
the households, a few dozen. For a hospital's eligibility request that plan read every household of
the partner's district and hashed them (24,000 index entries per request at 50,000 persons,
`bench/prefecture.py --quick`); for a page of a list version, the rows with no division were checked
against every member of the scope. A clerk's search by identity number had the same shape (a review
found it; under the default costs it kept the good plan). The statements now reach the household by its key and test the
scope on it, so no costing can take the scope as the way in. Each test runs its statement on the
generic plan with hash joins preferred to nested loops (the costs under which the scope's households
were read) and counts the household rows read (EXPLAIN ANALYZE); each fails on the statements as
they were."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import asyncpg

from backend.db import load_queries
from tests.conftest import fix_planner_costs
from tests.sync.test_trigger_plans import DISTRICT, HOUSEHOLDS, VILLAGE

Conn = asyncpg.Connection  # type: ignore[type-arg]
FHIR = load_queries("backend.fhir")
SEARCH = load_queries("backend.enrollment", "search.sql")
LISTS = load_queries("backend.eligibility")
DISTRICT_SCOPE = (VILLAGE[:6] + "000000", VILLAGE[:6] + "999999")
PAGE = 50


def rows_of(plan: dict[str, Any], relation: str) -> float:
    """The rows the plan's nodes read from `relation`, over all their loops."""
    own = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 0) if plan.get("Relation Name") == relation else 0
    return float(own) + sum(rows_of(child, relation) for child in plan.get("Plans", []))


def literal(value: object) -> str:
    """`value` as SQL (EXECUTE under EXPLAIN takes no bound parameters)."""
    if value is None or isinstance(value, bool):
        return {None: "NULL", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    return "'" + str(value).replace("'", "''") + "'"


async def households_read(conn: Conn, sql: str, *args: object) -> float:
    """Household rows read by `sql` with `args`, run on its generic plan."""
    await conn.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
    # Whatever the costs: with other joins preferred to nested loops, the statement still has no way
    # in but the person's own rows.
    await conn.execute("SELECT set_config('enable_nestloop', 'off', true), set_config('enable_mergejoin', 'off', true)")
    await conn.execute(f"PREPARE lookup AS {sql}")
    try:
        explained = await conn.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE lookup({', '.join(map(literal, args))})"
        )
    finally:
        await conn.execute("DEALLOCATE lookup")
    return rows_of(json.loads(explained)[0]["Plan"], "households")


async def district(conn: Conn) -> None:
    """The district's households with their heads (tests.sync.test_trigger_plans), committed and
    vacuumed as a district's tables are (an index-only scan of an all-visible table is what the
    generic plan found cheap), and planned at its size."""
    await conn.execute(DISTRICT, HOUSEHOLDS, VILLAGE)
    await conn.execute(  # a quarter of them with a year of imported history
        "INSERT INTO enrollment_history (id_number_hash, id_number_enc, coverage_year, status, source_file)"
        " SELECT decode(md5('n' || g), 'hex'), '\\x00', 2025, 'paid', 'h.csv' FROM generate_series(3, $1, 4) AS g",
        HOUSEHOLDS,
    )
    await vacuum(conn)


async def vacuum(conn: Conn) -> None:
    await conn.execute("VACUUM (ANALYZE) persons, households, memberships, enrollment_history, list_entries")


async def test_a_partners_lookup_reads_the_persons_household_only(conn: Conn, seeded: None) -> None:
    await district(conn)
    number = await conn.fetchval("SELECT id_number_hash FROM persons WHERE id = md5('p' || 7)::uuid")  # with history
    lookup = FHIR["coverage_of_person"]
    async with conn.transaction():
        await fix_planner_costs(conn)
        answer = await conn.fetch(lookup, number, *DISTRICT_SCOPE, None, None)
        assert [(r["history"], r["coverage_year"], r["village_code"]) for r in answer] == [(True, 2025, VILLAGE)]
        assert await households_read(conn, lookup, number, *DISTRICT_SCOPE, 2025, 2026) <= 1
        # Out of the partner's scope: the person alone, nothing of theirs, and still one household read.
        outside = ("110000000000", "110999999999")
        assert [r["coverage_year"] for r in await conn.fetch(lookup, number, *outside, None, None)] == [None]
        assert await households_read(conn, lookup, number, *outside, None, None) <= 1


async def test_a_search_by_identity_number_reads_the_persons_household_only(conn: Conn, seeded: None) -> None:
    await district(conn)
    number = await conn.fetchval("SELECT id_number_hash FROM persons WHERE id = md5('p' || 7)::uuid")
    # The other criteria none, a page of 50, and the audit row's columns (search.sql).
    rest: tuple[object, ...] = (None, None, None, None, 50, "user", str(uuid4()), None, VILLAGE, '["id_number"]', None)
    async with conn.transaction():
        await fix_planner_costs(conn)
        township = (VILLAGE[:9] + "000", VILLAGE[:9] + "999")
        [found] = await conn.fetch(SEARCH["search_by_identity"], number, *township, None, *rest)
        assert (found["household_no"], found["member_count"]) == ("T-7", 1)
        assert await households_read(conn, SEARCH["search_by_identity"], number, *township, None, *rest) <= 1
        # Another township's search: nothing, and the one household read.
        other = ("330106002000", "330106002999")
        assert await conn.fetch(SEARCH["search_by_identity"], number, *other, None, *rest) == []
        assert await households_read(conn, SEARCH["search_by_identity"], number, *other, None, *rest) <= 1


async def test_a_list_page_checks_its_unplaced_rows_by_their_persons_households(conn: Conn, seeded: None) -> None:
    await district(conn)
    # A district list whose rows name no division: each is shown if its person lives in scope.
    versions = []
    for version, count in ((1, PAGE), (2, PAGE // 2)):
        versions.append(
            await conn.fetchval(
                "INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version,"
                " effective_from, status, rows_read, rows_loaded, rows_rejected, file_name, file_sha256,"
                " uploaded_by)"
                " SELECT gen_random_uuid(), 'di_bao', 'subsidy', $1, $2, $3, date '2026-01-01', 'loaded',"
                " $4, $4, 0, 'l.csv', '\\x00', (SELECT id FROM users ORDER BY id LIMIT 1) RETURNING id",
                VILLAGE[:6] + "000000",
                VILLAGE[:6],
                version,
                count,
            )
        )
    for version_id, count in zip(versions, (PAGE, PAGE // 2), strict=True):
        await conn.execute(
            "INSERT INTO list_entries (version_id, row_no, id_number_hash, id_number_enc, name)"
            " SELECT $1, g, decode(md5('n' || g), 'hex'), '\\x00', '某' FROM generate_series(1, $2) AS g",
            version_id,
            count,
        )
    await vacuum(conn)
    async with conn.transaction():
        await fix_planner_costs(conn)
        scope = (VILLAGE[:9] + "000", VILLAGE[:9] + "999")  # the township: a row is shown by its household
        page = await conn.fetch(LISTS["list_entries_page"], versions[0], *scope, 0, PAGE, False)
        assert len(page) == PAGE
        read = await households_read(conn, LISTS["list_entries_page"], versions[0], *scope, 0, PAGE, False)
        assert read <= PAGE
        changes = await conn.fetch(LISTS["list_diff"], versions[0], versions[1], b"", *scope, PAGE, False)
        assert len(changes) == PAGE // 2  # the rows version 1 has and version 2 lacks
        read = await households_read(conn, LISTS["list_diff"], versions[0], versions[1], b"", *scope, PAGE, False)
        assert read <= PAGE
