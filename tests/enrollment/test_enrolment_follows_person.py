"""A person's live enrolment of an open year is the person's: it follows them on a move (status and
money unchanged, the receipt of a past payment as issued, naming the household that paid), so it can
be paid in the household they are in now; a removal cancels it when the person died, and otherwise
while nothing is paid. Past years stay with the household they were made in."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import members, moves
from backend.enrollment.members import MemberRemove
from backend.enrollment.moves import MoveIn
from backend.errors import InvalidInput
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member
from tests.premiums.test_payments import World, actor_of, pay, race, world_fixture

__all__ = ["world_fixture"]  # the fixture `world`: a household of two enrolled for 2026, receipt numbers

Client = AsyncTestClient[Litestar]
OPEN = date(2026, 3, 2)  # a day of 2026: its enrolments are of an open year
LATER = date(2027, 1, 4)  # 2026 is history


async def target_household(client: Client) -> dict[str, Any]:
    staff = await auth_headers(client, "staff_a")
    return await create_household(
        client, staff, [member(ID_NUMBERS[3], "王五")], village_code="330106001201", household_no="0002"
    )


async def move(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    target: dict[str, Any],
    today: date = OPEN,
) -> UUID:
    """Moves the household's second member (the spouse) to `target`; answers the person's id."""
    person = UUID(world.person_ids[1])
    version = await conn.fetchval("SELECT row_version FROM households WHERE id = $1", UUID(world.household["id"]))
    async with conn.transaction():
        done = await moves.move_member(
            conn,
            await actor_of(conn, "staff_a"),
            UUID(world.household["id"]),
            person,
            version,
            MoveIn(to_household_id=UUID(target["id"]), relation="other"),
            today,
        )
    assert done.status == "accepted"
    return person


async def enrolment_of(conn: asyncpg.Connection, person: UUID) -> asyncpg.Record:  # type: ignore[type-arg]
    row = await conn.fetchrow(
        "SELECT * FROM enrollments WHERE person_id = $1 AND coverage_year = 2026 AND status <> 'cancelled'", person
    )
    assert row is not None
    return row


async def test_a_registered_enrolment_follows_the_moved_person_and_is_paid_in_the_new_household(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    target = await target_household(client)
    person = await move(conn, world, target)
    moved = await enrolment_of(conn, person)
    assert (str(moved["household_id"]), moved["village_code"], moved["status"]) == (
        target["id"],
        "330106001201",
        "registered",
    )
    audit = await conn.fetchrow(
        "SELECT summary FROM audit_log WHERE action = 'follow_move' AND entity = 'enrollment' AND entity_id = $1",
        str(moved["id"]),
    )
    assert audit is not None
    assert (audit["summary"]["from"], audit["summary"]["to"]) == (world.household["id"], target["id"])
    # Paid where the person is now; the household they left can no longer be charged for them.
    receipt = await pay(conn, world, household_id=UUID(target["id"]), person_ids=[person], amount_fen=40000)
    assert receipt.enrollments_paid == [moved["id"]]
    assert (await enrolment_of(conn, person))["status"] == "paid"
    with pytest.raises(InvalidInput) as refused:
        await pay(conn, world, receipt_no="A00000002", person_ids=[person], amount_fen=40000)
    assert refused.value.extra["errors"][0]["field"] == "person_ids[0]"


async def test_a_paid_enrolment_follows_too_and_the_receipt_still_names_the_household_that_paid(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    receipt = await pay(conn, world)
    before = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", receipt.payment.id)
    paid = await enrolment_of(conn, UUID(world.person_ids[1]))
    target = await target_household(client)
    person = await move(conn, world, target)
    moved = await enrolment_of(conn, person)
    assert (moved["id"], str(moved["household_id"]), moved["status"]) == (paid["id"], target["id"], "paid")
    assert (moved["coverage_start"], moved["coverage_end"], moved["business_date"]) == (
        paid["coverage_start"],
        paid["coverage_end"],
        paid["business_date"],
    )
    after = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", receipt.payment.id)
    assert dict(after.items()) == dict(before.items())
    assert str(after["household_id"]) == world.household["id"]
    allocations = await conn.fetch(
        "SELECT person_id, amount_fen FROM payment_allocations WHERE payment_id = $1", after["id"]
    )
    assert {(r["person_id"], r["amount_fen"]) for r in allocations} == {(UUID(p), 40000) for p in world.person_ids}


async def test_an_enrolment_of_a_past_year_stays_with_the_household_it_was_made_in(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    target = await target_household(client)
    person = await move(conn, world, target, today=LATER)
    assert str((await enrolment_of(conn, person))["household_id"]) == world.household["id"]


async def remove(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    person: UUID,
    reason: Literal["removed", "deceased", "data_error"],
) -> None:
    household = UUID(world.household["id"])
    version = await conn.fetchval("SELECT row_version FROM households WHERE id = $1", household)
    async with conn.transaction():
        await members.remove_member(
            conn,
            await actor_of(conn, "staff_a"),
            household,
            person,
            version,
            MemberRemove(reason=reason),
            OPEN,
        )


async def statuses(conn: asyncpg.Connection, world: World) -> dict[str, tuple[str, str | None]]:  # type: ignore[type-arg]
    rows = await conn.fetch(
        "SELECT person_id, status, cancel_reason FROM enrollments WHERE person_id = ANY($1::uuid[])",
        [UUID(p) for p in world.person_ids],
    )
    return {str(r["person_id"]): (r["status"], r["cancel_reason"]) for r in rows}


async def test_a_removal_as_deceased_cancels_the_enrolment_paid_or_not(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    head, spouse = world.person_ids
    await pay(conn, world, person_ids=[UUID(spouse)], amount_fen=40000)
    await remove(conn, world, UUID(spouse), "deceased")
    assert await statuses(conn, world) == {head: ("registered", None), spouse: ("cancelled", "deceased")}
    audit = await conn.fetchrow(
        "SELECT summary FROM audit_log WHERE action = 'cancel' AND entity = 'enrollment' AND summary->>'from' = 'paid'"
    )
    assert audit is not None and audit["summary"]["reason"] == "deceased"


async def test_another_removal_cancels_an_unpaid_enrolment_and_keeps_a_paid_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    head, spouse = world.person_ids
    await pay(conn, world, person_ids=[UUID(spouse)], amount_fen=40000)
    # The household dissolves as its members leave (the head last).
    await remove(conn, world, UUID(spouse), "removed")
    await remove(conn, world, UUID(head), "data_error")
    assert await statuses(conn, world) == {head: ("cancelled", "data_error"), spouse: ("paid", None)}
    assert await conn.fetchval("SELECT status FROM households WHERE id = $1", UUID(world.household["id"])) == (
        "dissolved"
    )


async def test_a_payment_and_a_move_of_the_same_person_at_once_both_land_in_order(
    client: Client,
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """The payment holds the household's row and the enrolments; the move waits for it (same lock
    order: household, then enrolments), then carries the paid enrolment along. No deadlock."""
    from backend.premiums import payments
    from tests.premiums.test_payments import KEY, RECEIVED, TZ, payment

    target = await target_household(client)
    person = UUID(world.person_ids[1])
    version = await conn.fetchval("SELECT row_version FROM households WHERE id = $1", UUID(world.household["id"]))
    staff = await actor_of(conn, "staff_a")

    async def paying(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await payments.record_payment(c, staff, payment(world), timezone=TZ, code_key=KEY, now=RECEIVED)

    async def moving(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await moves.move_member(
            c,
            staff,
            UUID(world.household["id"]),
            person,
            version,
            MoveIn(to_household_id=UUID(target["id"]), relation="other"),
            OPEN,
        )

    paid, moved = await race(db_dsn, paying, moving)
    assert isinstance(paid, payments.Receipt), paid
    assert not isinstance(moved, Exception), moved
    followed = await enrolment_of(conn, person)
    assert (str(followed["household_id"]), followed["status"]) == (target["id"], "paid")
    assert uuid.UUID(str(followed["id"])) in paid.enrollments_paid


async def test_a_paid_enrolment_follows_a_removed_person_registered_again_elsewhere(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Someone removed keeps a paid enrolment; registered again in another household (the person's
    record reused), they bring it along, as on a move."""
    from backend.enrollment import households
    from backend.enrollment.households import HouseholdCreate

    spouse = UUID(world.person_ids[1])
    await pay(conn, world, person_ids=[spouse], amount_fen=40000)
    await remove(conn, world, spouse, "removed")
    data = msgspec.convert(
        {
            "village_code": "330106001201",
            "household_no": "0003",
            "members": [member(ID_NUMBERS[3], "王五"), member(ID_NUMBERS[2], "李四", "spouse")],
        },
        HouseholdCreate,
    )
    async with conn.transaction():
        created = await households.create_household(conn, await actor_of(conn, "staff_a"), data, OPEN)
    members = await conn.fetch(
        "SELECT person_id FROM memberships WHERE household_id = $1 AND left_at IS NULL", created["id"]
    )
    assert spouse in [m["person_id"] for m in members]
    followed = await enrolment_of(conn, spouse)
    assert (followed["household_id"], followed["status"]) == (created["id"], "paid")
