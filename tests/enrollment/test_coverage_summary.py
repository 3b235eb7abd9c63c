"""The 应保尽保 report's summary (`coverage_tallies`, migration 0025) is kept by the transaction that
changes the facts: after any mix of the services' writes it gives the figures counted from the facts
(the report's query before the summary, kept as the oracle), and two transactions changing the same
village or the same person at once lose neither change."""

from __future__ import annotations

import asyncio
import random
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.db import init_connection
from backend.enrollment import enrollments, members
from backend.enrollment.coverage_report import VillageCounts, village_counts
from backend.enrollment.history import HistoryRow, import_history
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
DISTRICT = ("330106000000", "330106999999")
VILLAGES = ("330106001001", "330106001002", "330106001201")


async def figures(conn: asyncpg.Connection, year: int) -> tuple[list[VillageCounts], list[VillageCounts]]:  # type: ignore[type-arg]
    """(from the summary, from the facts) for the whole district."""
    return (
        await village_counts(conn, *DISTRICT, year),
        await village_counts(conn, *DISTRICT, year, from_facts=True),
    )


async def assert_summary_is_the_facts(conn: asyncpg.Connection, what: str) -> None:  # type: ignore[type-arg]
    for year in (2025, 2026):
        summary, facts = await figures(conn, year)
        assert summary == facts, f"after {what}, {year}"


async def households(client: Client) -> list[dict[str, Any]]:
    """Township A: three households of three in its three villages (ID_NUMBERS[0..8])."""
    staff = await auth_headers(client, "staff_a")
    made = []
    for i, village in enumerate(VILLAGES):
        numbers = ID_NUMBERS[3 * i : 3 * i + 3]
        made.append(
            await create_household(
                client,
                staff,
                [member(numbers[0], "张三"), member(numbers[1], "李四", "spouse"), member(numbers[2], "张丽", "child")],
                village_code=village,
                household_no=f"000{i + 1}",
            )
        )
    return made


async def test_the_summary_is_the_facts_after_any_mix_of_writes(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await publish_policy(client, await auth_headers(client, "admin"))
    staff, reviewer = await auth_headers(client, "staff_a"), await auth_headers(client, "reviewer_a")
    made = await households(client)
    await assert_summary_is_the_facts(conn, "registering")
    counts = await village_counts(conn, *DISTRICT, 2026)
    assert [(c.village_code, c.persons, c.funded) for c in counts] == [(v, 3, 0) for v in VILLAGES]
    pick = random.Random(20)  # noqa: S311 - a repeatable mix of writes, not a secret
    done: dict[str, int] = {}
    history_used: set[tuple[str, int]] = set()

    async def live(status: str | None = None) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT id, household_id, person_id FROM enrollments WHERE coverage_year = 2026 "
            "AND status <> 'cancelled' AND ($1::text IS NULL OR status = $1) ORDER BY id",
            status,
        )

    async def current_members(heads: bool) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT m.household_id, m.person_id, h.row_version FROM memberships m "
            "JOIN households h ON h.id = m.household_id AND h.status = 'active' "
            "WHERE m.left_at IS NULL AND (m.relation = 'head') = $1 ORDER BY m.person_id",
            heads,
        )

    for step in range(40):
        op = pick.choice(["enrol", "enrol", "pay", "pay", "confirm", "cancel", "move", "deceased", "history"])
        if op == "enrol":
            household = pick.choice(made)
            response = await client.post(
                "/api/v1/enrollments",
                json={
                    "household_id": household["id"],
                    "coverage_year": 2026,
                    "person_ids": [
                        str(p)
                        for p in await conn.fetchval(
                            "SELECT coalesce(array_agg(person_id), '{}') FROM memberships "
                            "WHERE household_id = $1 AND left_at IS NULL",
                            UUID(household["id"]),
                        )
                    ],
                },
                headers=staff,
            )
            assert response.status_code < 500, response.text
        elif op == "pay" and (rows := await live("registered")):
            async with conn.transaction():
                await enrollments.mark_paid(conn, None, pick.choice(rows)["id"], date(2025, 10, 1))
        elif op == "confirm" and (rows := await live("paid")):
            response = await client.post(
                "/api/v1/enrollments/confirm", json={"ids": [str(pick.choice(rows)["id"])]}, headers=reviewer
            )
            assert response.status_code < 500, response.text
        elif op == "cancel" and (rows := await live()):
            response = await client.post(
                f"/api/v1/enrollments/{pick.choice(rows)['id']}/cancel", json={"reason": "data_error"}, headers=staff
            )
            assert response.status_code < 500, response.text
        elif op == "move" and (rows := await current_members(False)):
            row = pick.choice(rows)
            targets = [h for h in made if UUID(h["id"]) != row["household_id"]]
            response = await client.post(
                f"/api/v1/households/{row['household_id']}/members/{row['person_id']}/move",
                json={"to_household_id": pick.choice(targets)["id"], "relation": "other"},
                headers={**staff, "If-Match": f'"{row["row_version"]}"'},
            )
            assert response.status_code < 500, response.text
        elif op == "deceased" and (rows := await current_members(False)):
            row = pick.choice(rows)
            async with conn.transaction():
                membership = await members.current_membership(conn, row["person_id"])
                assert membership is not None
                await members.leave_household(conn, membership["id"], "deceased")
        elif op == "history":
            number, year = pick.choice(ID_NUMBERS[:9]), pick.choice([2025, 2026])
            if (number, year) in history_used:
                continue
            history_used.add((number, year))
            status = pick.choice(["paid", "subsidised", "cancelled"])
            async with conn.transaction():
                await import_history(
                    conn, [HistoryRow(row=2, id_number=number, coverage_year=year, status=status)], "history.csv"
                )
        else:
            continue
        done[op] = done.get(op, 0) + 1
        await assert_summary_is_the_facts(conn, f"step {step}: {op}")
    # The mix did what it says: every kind of write happened.
    assert set(done) == {"enrol", "pay", "confirm", "cancel", "move", "deceased", "history"}, done
    # Folding the deltas, or rebuilding from the facts, changes no figure.
    before = {year: await village_counts(conn, *DISTRICT, year) for year in (2025, 2026)}
    assert await conn.fetchval("SELECT coverage_compact()") > 0
    assert await conn.fetchval("SELECT count(*) = count(DISTINCT (coverage_year, village_code)) FROM coverage_tallies")
    assert {year: await village_counts(conn, *DISTRICT, year) for year in (2025, 2026)} == before
    await conn.execute("SELECT coverage_rebuild()")
    assert {year: await village_counts(conn, *DISTRICT, year) for year in (2025, 2026)} == before


async def test_a_transaction_refreshes_each_person_once_at_its_commit(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Enrolled, then paid, in one transaction: one refresh at the commit writes the year's funded +1
    and nothing for `registered_unpaid` (a refresh per statement would add it, then take it back).
    A savepoint rolled back takes its writes' notes with it, and no note outlives its transaction."""
    await publish_policy(client, await auth_headers(client, "admin"))
    made = await households(client)
    person = UUID(made[0]["members"][0]["person_id"])
    other = await members.current_membership(conn, UUID(made[1]["members"][0]["person_id"]))
    assert other is not None
    deltas_before = await conn.fetchval("SELECT count(*) FROM coverage_tallies WHERE coverage_year = 2026")
    async with conn.transaction():
        enrolment = await conn.fetchval(
            "INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, registered_on,"
            " premium_fen) VALUES (gen_random_uuid(), $1, $2, $3, 2026, 'registered', $4, 40000) RETURNING id",
            person,
            UUID(made[0]["id"]),
            VILLAGES[0],
            date(2026, 11, 2),
        )
        assert await conn.fetchval("SELECT count(*) FROM coverage_dirty") == 1  # noted, not yet refreshed
        summary, _facts = await figures(conn, 2026)
        assert summary[0].registered_unpaid == 0
        await enrollments.mark_paid(conn, None, enrolment, date(2026, 11, 2))
        try:
            async with conn.transaction():
                await members.leave_household(conn, other["id"], "removed")
                assert await conn.fetchval("SELECT count(*) FROM coverage_dirty") == 2
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert await conn.fetchval("SELECT person_id FROM coverage_dirty") == person  # the other's note went
    assert await conn.fetchval("SELECT count(*) FROM coverage_dirty") == 0
    assert await conn.fetchval("SELECT count(*) FROM coverage_dirty_xacts") == 0
    added = await conn.fetch(
        "SELECT village_code, persons, funded, registered_unpaid, confirmed FROM coverage_tallies"
        " WHERE coverage_year = 2026 ORDER BY ctid OFFSET $1",
        deltas_before,
    )
    assert [tuple(r) for r in added] == [(VILLAGES[0], 0, 1, 0, 0)]
    await assert_summary_is_the_facts(conn, "one transaction")


async def test_two_commits_refreshing_one_person_count_what_the_later_one_sees(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    admin_db_dsn: str,
) -> None:
    """Both refreshes at their commits (migration 0032), on one person: one transaction takes a
    person out of their household and holds the person's summary row (its refresh run early), while
    another pays the person's enrolment and commits. That commit's refresh waits for the row, then
    counts from what the first committed: the person paid, in no village. Counting from its own
    snapshot instead (no lock, or the lock taken after the reads) would leave the person paid in their
    old village, against the facts."""
    await publish_policy(client, await auth_headers(client, "admin"))
    made = await households(client)
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": made[0]["id"], "coverage_year": 2026, "person_ids": [made[0]["members"][2]["person_id"]]},
        headers=await auth_headers(client, "staff_a"),
    )
    assert enrolled.status_code == 201, enrolled.text
    person, enrolment = UUID(made[0]["members"][2]["person_id"]), UUID(enrolled.json()["items"][0]["id"])
    holder, payer = await asyncpg.connect(admin_db_dsn), await asyncpg.connect(admin_db_dsn)
    try:
        for c in (holder, payer):
            await init_connection(c)
        holding = holder.transaction()
        await holding.start()
        membership = await members.current_membership(holder, person)
        assert membership is not None
        await members.leave_household(holder, membership["id"], "removed")
        await holder.execute("SET CONSTRAINTS coverage_dirty_at_commit IMMEDIATE")  # holds the person's row
        paying = payer.transaction()
        await paying.start()
        await enrollments.mark_paid(payer, None, enrolment, date(2025, 10, 1))
        commit = asyncio.ensure_future(paying.commit())  # its refresh runs in the commit
        await asyncio.sleep(0.3)
        assert not commit.done()  # waiting for the person's row
        await holding.commit()
        await asyncio.wait_for(commit, 10)
    finally:
        await holder.close()
        await payer.close()
    await assert_summary_is_the_facts(conn, "two commits")
    summary = await village_counts(conn, *DISTRICT, 2026)
    assert (summary[0].village_code, summary[0].persons, summary[0].funded) == (VILLAGES[0], 2, 0)


async def test_a_dissolved_household_and_a_corrected_number_leave_the_counts(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    made = await households(client)
    async with conn.transaction():
        await import_history(conn, [HistoryRow(row=2, id_number=ID_NUMBERS[9], coverage_year=2026, status="paid")], "h")
    # A person with history whose number is corrected to it counts as funded; a household dissolved
    # counts nobody.
    target = made[1]["members"][0]["person_id"]
    await conn.execute(
        "UPDATE persons SET id_number_hash = (SELECT id_number_hash FROM enrollment_history LIMIT 1) WHERE id = $1",
        UUID(target),
    )
    await conn.execute("UPDATE households SET status = 'dissolved' WHERE id = $1", UUID(made[2]["id"]))
    summary, facts = await figures(conn, 2026)
    assert summary == facts
    assert [(c.village_code, c.persons, c.funded) for c in summary] == [(VILLAGES[0], 3, 0), (VILLAGES[1], 3, 1)]


async def test_two_transactions_on_one_village_or_one_person_lose_nothing(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    admin_db_dsn: str,
) -> None:
    """Two connections at a barrier: paying two persons of one village at once (insert-only deltas,
    neither waits), then paying a person while another transaction takes them out of their household
    (the second waits for the first's row of `coverage_persons`, then counts from what it committed).
    The refresh runs at the commit (migration 0032); the first transaction runs it early, with
    `SET CONSTRAINTS … IMMEDIATE`, so that it holds the person's row while the other commits."""
    await publish_policy(client, await auth_headers(client, "admin"))
    made = await households(client)
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": made[0]["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in made[0]["members"]],
        },
        headers=await auth_headers(client, "staff_a"),
    )
    ids = {UUID(e["person_id"]): UUID(e["id"]) for e in enrolled.json()["items"]}
    people = [UUID(m["person_id"]) for m in made[0]["members"]]
    first, second = await asyncpg.connect(admin_db_dsn), await asyncpg.connect(admin_db_dsn)
    try:
        for c in (first, second):
            await init_connection(c)
        barrier = asyncio.Barrier(2)

        async def pay(c: asyncpg.Connection, person: UUID) -> None:  # type: ignore[type-arg]
            async with c.transaction():
                await barrier.wait()
                await enrollments.mark_paid(c, None, ids[person], date(2025, 10, 1))
                await barrier.wait()  # both written, neither committed

        await asyncio.wait_for(asyncio.gather(pay(first, people[0]), pay(second, people[1])), 10)
        counts = await village_counts(conn, *DISTRICT, 2026)
        assert (counts[0].village_code, counts[0].persons, counts[0].funded, counts[0].registered_unpaid) == (
            VILLAGES[0],
            3,
            2,
            1,
        )

        held = asyncio.Event()

        async def take_out_and_hold(c: asyncpg.Connection) -> None:  # type: ignore[type-arg]
            async with c.transaction():
                membership = await members.current_membership(c, people[2])
                assert membership is not None
                await members.leave_household(c, membership["id"], "removed")
                await c.execute("SET CONSTRAINTS coverage_dirty_at_commit IMMEDIATE")
                held.set()
                await barrier.wait()
                await asyncio.sleep(0.3)  # the other is waiting for this person's row meanwhile

        async def history_meanwhile(c: asyncpg.Connection) -> None:  # type: ignore[type-arg]
            await held.wait()
            await barrier.wait()
            async with c.transaction():
                # 2025 paid in the old system: it would count in their village, had they still one.
                await import_history(
                    c, [HistoryRow(row=2, id_number=ID_NUMBERS[2], coverage_year=2025, status="paid")], "h"
                )

        await asyncio.wait_for(asyncio.gather(take_out_and_hold(first), history_meanwhile(second)), 10)
    finally:
        await first.close()
        await second.close()
    await assert_summary_is_the_facts(conn, "the race")
    assert (await village_counts(conn, *DISTRICT, 2025))[0].funded == 0
    summary = await village_counts(conn, *DISTRICT, 2026)
    assert [(c.village_code, c.persons, c.funded, c.registered_unpaid) for c in summary] == [
        (VILLAGES[0], 2, 2, 0),
        (VILLAGES[1], 3, 0, 0),
        (VILLAGES[2], 3, 0, 0),
    ]
