"""The capture triggers look rows up by key, whatever batch a connection first gave them (migration 0036).

PL/pgSQL keeps one plan per trigger query and connection, made at its first call and sized by the
transition table of that call. A connection whose first write of a kind was a set (a tablet's
registration day) kept the plan for a set: hash the whole households table. Every later one-row
write of that kind then read every household again, 1 ms where it takes 0.3 (bench/sync_offline_month.py).

Each test gives a fresh connection a set first, then one row, and counts the sequential scans of
the tables that grow with the district. The sizes are those where PostgreSQL chose the scans
(3,000 households of the demo district, a set of 300), under fixed planner costs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from backend.tools.demo import TOWNSHIP_A
from tests.conftest import fix_planner_costs

Conn = asyncpg.Connection  # type: ignore[type-arg]
HOUSEHOLDS = 3_000
SET = 300
VILLAGE = TOWNSHIP_A[:9] + "001"
# Tables that grow with the district; the capture triggers join each of them to what changed.
GROWING = (
    "households",
    "persons",
    "memberships",
    "record_changes",
    "list_entries",
    "eligibility_claims",
    "enrollment_history",
    "payments",
)

# Households g of the district, each with its head (person g) and a spare person (n) per member
# added later; ids and hashes derived from the numbers, so statements can name them.
DISTRICT = """
WITH people AS (
    INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date)
    SELECT md5('p' || g)::uuid, decode(md5('n' || g), 'hex'), decode(md5('e' || g), 'hex'), '户主', 'male',
           date '1980-01-01'
    FROM generate_series(1, $1) AS g
), homes AS (
    INSERT INTO households (id, village_code, household_no, head_person_id)
    SELECT md5('h' || g)::uuid, $2, 'T-' || g, md5('p' || g)::uuid FROM generate_series(1, $1) AS g
)
INSERT INTO memberships (id, person_id, household_id, relation)
SELECT md5('m' || g)::uuid, md5('p' || g)::uuid, md5('h' || g)::uuid, 'head' FROM generate_series(1, $1) AS g
"""
# New members: persons from..to, each joining household (n mod the district) + 1.
JOIN = """
WITH people AS (
    INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date)
    SELECT md5('q' || g)::uuid, decode(md5('k' || g), 'hex'), decode(md5('f' || g), 'hex'), '成员', 'female',
           date '2010-01-01'
    FROM generate_series($1::int, $2::int) AS g
)
INSERT INTO memberships (id, person_id, household_id, relation)
SELECT md5('j' || g)::uuid, md5('q' || g)::uuid, md5('h' || (g % $3 + 1))::uuid, 'child'
FROM generate_series($1::int, $2::int) AS g
"""
NAMED = "(SELECT md5({p} || g)::uuid FROM generate_series($1::int, $2::int) AS g)"  # the rows from..to
RENAME = "UPDATE persons SET name = name || '甲' WHERE id IN " + NAMED.format(p="'p'")
READDRESS = "UPDATE households SET address = 'x', status = 'dissolved' WHERE id IN " + NAMED.format(p="'h'")
LEAVE = "UPDATE memberships SET left_at = now(), left_reason = 'moved' WHERE id IN " + NAMED.format(p="'j'")


async def scans(conn: Conn) -> dict[str, int]:
    """Sequential scans of the growing tables in this transaction so far."""
    rows = await conn.fetch(
        "SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE relname = ANY($1::text[])", list(GROWING)
    )
    return {r["relname"]: r["seq_scan"] for r in rows}


async def a_set_then_one(conn: Conn, write: Callable[[int, int], Awaitable[object]]) -> dict[str, int]:
    """On a connection that has not run the triggers yet: the district, then `write` of a set (its
    plans made for the set), then of one row; the scans that one row's write made."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(DISTRICT, HOUSEHOLDS, VILLAGE)
        await conn.execute(JOIN, 1, 2 * SET + 1, HOUSEHOLDS)  # members the set and the one row may name
        await conn.execute("ANALYZE persons, households, memberships")  # plans made after this see the sizes
        await fix_planner_costs(conn)
        await write(SET + 1, 2 * SET)  # the first call since ANALYZE: a set
        before = await scans(conn)
        await write(2 * SET + 1, 2 * SET + 1)  # one row
        after = await scans(conn)
        return {t: after.get(t, 0) - before.get(t, 0) for t in GROWING if after.get(t, 0) != before.get(t, 0)}
    finally:
        await tx.rollback()


async def test_one_member_added_after_a_set_reads_no_table_whole(conn: Conn, seeded: None) -> None:
    async def join(first: int, last: int) -> None:
        await conn.execute(JOIN, first + 2 * SET, last + 2 * SET, HOUSEHOLDS)  # persons after the district's

    assert await a_set_then_one(conn, join) == {}


async def test_one_person_edited_after_a_set_reads_no_table_whole(conn: Conn, seeded: None) -> None:
    async def rename(first: int, last: int) -> None:
        await conn.execute(RENAME, first, last)

    assert await a_set_then_one(conn, rename) == {}


async def test_one_household_changed_after_a_set_reads_no_table_whole(conn: Conn, seeded: None) -> None:
    async def readdress(first: int, last: int) -> None:
        await conn.execute(READDRESS, first, last)

    assert await a_set_then_one(conn, readdress) == {}


async def test_one_member_leaving_after_a_set_reads_no_table_whole(conn: Conn, seeded: None) -> None:
    async def leave(first: int, last: int) -> None:
        await conn.execute(LEAVE, first - SET, last - SET)  # members the district already has

    assert await a_set_then_one(conn, leave) == {}
