"""What a household's edits in the transaction that created it leave for others (migration 0037).

Nobody can hold a version of a household before the one its creating transaction commits, so an
edit made in that transaction (a push's registration and the phone noted after it) leaves no change
record for later conflicts, and no second row for tablets to pull unless it moved the household to
another township. The same edit of a household made earlier leaves both, as before. A push writes a
new household with its edit in one statement; applied one by one, it must leave the same world
(tests/sync/test_push_sets_same_batch.py)."""

from __future__ import annotations

import uuid

import asyncpg

from backend.tools.demo import TOWNSHIP_A, TOWNSHIP_B

Conn = asyncpg.Connection  # type: ignore[type-arg]
HERE = TOWNSHIP_A[:9] + "001"  # a village of township A
THERE = TOWNSHIP_B[:9] + "201"  # a village of township B


async def _household(conn: Conn, village: str) -> uuid.UUID:
    household_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO households (id, village_code, household_no) VALUES ($1, $2, $3)",
        household_id,
        village,
        household_id.hex[:12],
    )
    return household_id


async def _left(conn: Conn, household_id: uuid.UUID) -> tuple[list[str], list[str]]:
    """The household's change records (fields) and its rows for tablets to pull (townships), oldest first."""
    fields = await conn.fetch("SELECT field FROM record_changes WHERE household_id = $1 ORDER BY id", household_id)
    townships = await conn.fetch(
        "SELECT township_code FROM sync_changes WHERE entity = 'household' AND entity_id = $1 ORDER BY id",
        household_id,
    )
    return [r["field"] for r in fields], [r["township_code"] for r in townships]


async def test_an_edit_in_the_creating_transaction_leaves_no_record_and_no_second_row(conn: Conn, seeded: None) -> None:
    async with conn.transaction():
        made = await _household(conn, HERE)
        await conn.execute("UPDATE households SET address = 'x', row_version = 2 WHERE id = $1", made)
    assert await _left(conn, made) == ([], [TOWNSHIP_A])


async def test_an_edit_in_a_later_transaction_leaves_a_record_and_a_row(conn: Conn, seeded: None) -> None:
    made = await _household(conn, HERE)
    await conn.execute("UPDATE households SET address = 'x', row_version = 2 WHERE id = $1", made)
    assert await _left(conn, made) == (["address"], [TOWNSHIP_A, TOWNSHIP_A])


async def test_a_move_in_the_creating_transaction_is_pulled_in_both_townships(conn: Conn, seeded: None) -> None:
    async with conn.transaction():
        made = await _household(conn, HERE)
        await conn.execute("UPDATE households SET village_code = $2 WHERE id = $1", made, THERE)
        await conn.execute("UPDATE households SET address = 'x' WHERE id = $1", made)  # (in B already)
    fields, townships = await _left(conn, made)
    assert fields == []
    assert townships[0] == TOWNSHIP_A and sorted(townships[1:]) == [TOWNSHIP_A, TOWNSHIP_B]
