"""Premium collection: receipt blocks, payments exactly once, voids and refunds approved by
another reviewer, append-only events, remittance, and the ledger invariants."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import clock, crypto, idempotency
from backend.actor import Actor, Role, Scope
from backend.db import init_connection, load_queries
from backend.enrollment import enrollments
from backend.errors import Conflict, Forbidden, InvalidInput
from backend.premiums import adjustments, payments, remittance
from backend.premiums.adjustments import AdjustmentRequest, Decision
from backend.premiums.payments import PaymentIn
from backend.premiums.remittance import RemittanceIn
from tests.api.test_lookup_plans import rows_of
from tests.conftest import JWT_SECRET, auth_headers
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, add_history, create_household, insert_person, member, publish_policy, sealed
from tests.sync.test_trigger_plans import DISTRICT

Client = AsyncTestClient[Litestar]
KEY = JWT_SECRET.encode()
TZ = "Asia/Shanghai"
# 2025-10-08 09:00 in Shanghai, received ten minutes later.
COLLECTED = datetime(2025, 10, 8, 1, 0, tzinfo=UTC)
RECEIVED = datetime(2025, 10, 8, 1, 10, tzinfo=UTC)


class World:
    def __init__(self, household: dict[str, Any], enrolled: dict[str, Any], block: dict[str, Any]) -> None:
        self.household = household
        self.enrolled = enrolled
        self.block = block

    @property
    def person_ids(self) -> list[str]:
        return [m["person_id"] for m in self.household["members"]]


async def actor_of(conn: asyncpg.Connection, username: str) -> Actor:  # type: ignore[type-arg]
    row = await conn.fetchrow(
        "SELECT u.id, u.role, u.division_code, d.level FROM users u JOIN divisions d ON d.code = u.division_code "
        "WHERE username = $1",
        username,
    )
    return Actor(kind="user", id=row["id"], role=Role(row["role"]), scope=Scope(row["division_code"], row["level"]))


@pytest.fixture(name="world")
async def world_fixture(client: Client, conn: asyncpg.Connection) -> World:  # type: ignore[type-arg]
    """A 2026 policy (premium 40000 fen), a household of two enrolled in township A, and receipt
    numbers A00000001–A00000100 issued to staff_a."""
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    for number in (ID_NUMBERS[1], ID_NUMBERS[2]):
        await add_history(conn, number, 2025)
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=staff,
    )
    # The story is told in 2025's window: the household registered before the payments below.
    await backdate_registration(conn, household["id"])
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "A", "first_no": 1, "last_no": 100},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    return World(household, enrolled.json(), block.json())


async def backdate_registration(conn: asyncpg.Connection, household_id: str, on: date = date(2025, 9, 1)) -> None:  # type: ignore[type-arg]
    """The household's enrolments as if registered on `on` (a payment is never dated before them)."""
    await conn.execute(
        "UPDATE enrollments SET registered_on = $2, registered_at = $2::date::timestamptz WHERE household_id = $1",
        UUID(household_id),
        on,
    )


async def second_household(client: Client, conn: asyncpg.Connection) -> dict[str, Any]:  # type: ignore[type-arg]
    """Another household of township A: one member (王五), enrolled for 2026, registered in 2025's window."""
    staff = await auth_headers(client, "staff_a")
    second = await create_household(client, staff, [member(ID_NUMBERS[3], "王五")], household_no="0002")
    enrolled = await client.post(
        "/api/v1/enrollments",
        headers=staff,
        json={"household_id": second["id"], "coverage_year": 2026, "person_ids": [second["members"][0]["person_id"]]},
    )
    assert enrolled.status_code == 201, enrolled.text
    await backdate_registration(conn, second["id"])
    return second


def payment(world: World, receipt_no: str = "A00000001", amount_fen: int = 80000, **extra: Any) -> PaymentIn:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "household_id": UUID(world.household["id"]),
        "coverage_year": 2026,
        "person_ids": [UUID(p) for p in world.person_ids],
        "amount_fen": amount_fen,
        "method": "cash",
        "receipt_no": receipt_no,
        "collected_at": COLLECTED,
    }
    values.update(extra)
    return PaymentIn(**values)


async def pay(conn: asyncpg.Connection, world: World, **extra: Any) -> payments.Receipt:  # type: ignore[type-arg]
    async with conn.transaction():
        return await payments.record_payment(
            conn, await actor_of(conn, "staff_a"), payment(world, **extra), timezone=TZ, code_key=KEY, now=RECEIVED
        )


def http_body(world: World, receipt_no: str = "A00000001", amount_fen: int = 80000, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "household_id": world.household["id"],
        "coverage_year": 2026,
        "person_ids": world.person_ids,
        "amount_fen": amount_fen,
        "method": "cash",
        "receipt_no": receipt_no,
        "collected_at": clock.now().isoformat(),
        # Paid today for 2026, whose window closed in 2025: the cover would start after the year
        # (tests of that rule send False).
        "acknowledge_no_cover": True,
        **extra,
    }


# Receipt blocks ----------------------------------------------------------------------------------


async def test_blocks_do_not_overlap_and_only_reviewers_issue(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    reviewer = await auth_headers(client, "reviewer_a")
    overlap = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "A", "first_no": 100, "last_no": 120},
        headers=reviewer,
    )
    assert overlap.status_code == 409
    other_prefix = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "B", "first_no": 100, "last_no": 120},
        headers=reviewer,
    )
    assert other_prefix.status_code == 201
    by_staff = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "C", "first_no": 1, "last_no": 2},
        headers=await auth_headers(client, "staff_a"),
    )
    assert by_staff.status_code == 403
    staff_b = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_b'")
    outside = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_b, "prefix": "D", "first_no": 1, "last_no": 2},
        headers=reviewer,
    )
    assert outside.status_code == 422
    assert outside.json()["errors"][0]["field"] == "collector_id"


async def test_block_balance_is_issued_used_voided_retired_open(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    await pay(conn, world, receipt_no="A00000001", amount_fen=40000, person_ids=[UUID(world.person_ids[0])])
    voided = await pay(conn, world, receipt_no="A00000002", amount_fen=40000, person_ids=[UUID(world.person_ids[1])])
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn,
            await actor_of(conn, "staff_a"),
            voided.payment.id,
            AdjustmentRequest(kind="void", reason="wrong amount"),
            date(2025, 10, 8),
        )
        await adjustments.decide_adjustment(
            conn, await actor_of(conn, "reviewer_a"), request.id, Decision(approve=True), date(2025, 10, 8)
        )
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO receipt_retirements (id, block_id, first_no, last_no, reason, retired_by) "
            "SELECT gen_random_uuid(), $1, 91, 100, 'damaged', issued_by FROM receipt_blocks WHERE id = $1",
            UUID(world.block["id"]),
        )
    report = await client.get("/api/v1/receipt-blocks", headers=await auth_headers(client, "reviewer_a"))
    (balance,) = report.json()["items"]
    assert (balance["issued"], balance["used"], balance["voided"], balance["retired"], balance["open"]) == (
        100,
        1,
        1,
        10,
        88,
    )


async def test_revoking_a_tablet_retires_its_unused_numbers(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    device = (await client.post("/api/v1/devices", json={"model": "T", "app_version": "1"}, headers=staff)).json()[
        "device"
    ]
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "device_id": device["id"], "prefix": "T", "first_no": 1, "last_no": 20},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201
    revoked = await client.delete(f"/api/v1/devices/{device['id']}", headers=await auth_headers(client, "admin"))
    assert revoked.status_code == 200
    retired = await conn.fetchval(
        "SELECT sum(last_no - first_no + 1) FROM receipt_retirements WHERE block_id = $1", UUID(block.json()["id"])
    )
    assert retired == 20


# Payments exactly once ---------------------------------------------------------------------------


async def test_payment_pays_the_members_it_covers_and_prints_the_query_code(
    conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world)
    assert receipt.payment.business_date == date(2025, 10, 8)
    assert receipt.payment.clock_flag is None
    assert [a.amount_fen for a in receipt.allocations] == [40000, 40000]
    assert len(receipt.enrollments_paid) == 2
    assert (receipt.household.due_fen, receipt.household.paid_fen, receipt.household.balance_fen) == (80000, 80000, 0)
    assert receipt.query_code == world.enrolled["query_code"]
    rows = await conn.fetch("SELECT status, coverage_start, business_date FROM enrollments ORDER BY id")
    assert {(r["status"], r["coverage_start"], r["business_date"]) for r in rows} == {
        ("paid", date(2026, 1, 1), date(2025, 10, 8))
    }


async def test_a_payment_is_five_statements_on_generic_plans_for_its_own_transaction(
    conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    """Members on no list and with no claim: the household and its locks, what cover depends on, the
    block, the enrolments and the collector's lock, the reads under them, the write; the evidence of an
    exemption from waiting is not asked for. They are planned generically (the connection's
    `plan_cache_mode`) until the transaction ends, and the connection is as it was after it."""
    await pay(conn, world, amount_fen=1)  # (asyncpg reads the types of the statements' columns once)
    actor = await actor_of(conn, "staff_a")
    statements: list[str] = []
    conn.add_query_logger(lambda q: statements.append(q.query))
    async with conn.transaction():
        receipt = await payments.record_payment(
            conn, actor, payment(world, "A00000002", 79999), timezone=TZ, code_key=KEY, now=RECEIVED
        )
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    await asyncio.sleep(0)  # (asyncpg calls query loggers soon after, not at once)
    written = statements[1 : statements.index("SHOW plan_cache_mode")]  # between BEGIN and the SHOW
    assert len(receipt.enrollments_paid) == 2
    assert len(written) == 5, written
    assert await conn.fetchval("SHOW plan_cache_mode") == "auto"


async def test_a_keyed_payment_claims_its_key_and_stores_its_answer_within_the_same_five_statements(
    conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    """The request's claim of its idempotency key rides on the first statement, its answer on the
    write: the key's stored answer is the receipt's JSON, and a second claim of the key gets it."""
    await pay(conn, world, amount_fen=1)
    actor = await actor_of(conn, "staff_a")
    claim = idempotency.Claim(actor.id, "pay-0003-abcdef", "POST /api/v1/payments", b"\x01" * 32)
    statements: list[str] = []
    conn.add_query_logger(lambda q: statements.append(q.query))
    async with conn.transaction():
        answer = await payments.record_claimed_payment(
            conn, actor, payment(world, "A00000002", 79999), claim, timezone=TZ, code_key=KEY, now=RECEIVED
        )
    await asyncio.sleep(0)  # (asyncpg calls query loggers soon after, not at once)
    assert not isinstance(answer, idempotency.Stored)
    receipt, body = answer
    assert (statements[0], statements[-1], len(statements)) == ("BEGIN;", "COMMIT;", 7), statements
    assert body == msgspec.json.encode(receipt)
    assert (await idempotency.stored(conn, claim)).body == body
    async with conn.transaction():
        again = await payments.record_claimed_payment(
            conn, actor, payment(world, "A00000002", 79999), claim, timezone=TZ, code_key=KEY, now=RECEIVED
        )
    assert again == idempotency.Stored(status=201, body=body)


async def test_a_payments_answer_shows_it_as_recorded(client: Client, world: World) -> None:
    """The receipt is answered (and stored for its key) before the payment is read back: it shows
    the payment as the ledger gives it (times in UTC, received at the transaction's time)."""
    staff = {**await auth_headers(client, "staff_a"), "Idempotency-Key": "pay-0004-abcdef"}
    collected = (clock.now() - timedelta(hours=1)).replace(microsecond=123456)
    body = http_body(world, collected_at=collected.astimezone(timezone(timedelta(hours=8))).isoformat())
    first = await client.post("/api/v1/payments", json=body, headers=staff)
    assert first.status_code == 201, first.text
    recorded = await client.get(f"/api/v1/payments/{first.json()['payment']['id']}", headers=staff)
    assert recorded.status_code == 200, recorded.text
    assert first.json()["payment"] == recorded.json()
    assert first.json()["payment"]["collected_at"] == collected.isoformat().replace("+00:00", "Z")


async def test_under_and_over_payment_are_accepted_and_show_balance_or_refund(
    conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    under = await pay(conn, world, amount_fen=50000)
    assert [a.amount_fen for a in under.allocations] == [40000, 10000]
    assert len(under.enrollments_paid) == 1
    assert under.household.balance_fen == 30000
    over = await pay(conn, world, receipt_no="A00000002", amount_fen=35000, person_ids=[UUID(world.person_ids[1])])
    assert [a.amount_fen for a in over.allocations] == [30000]
    assert len(over.enrollments_paid) == 1
    assert (over.household.paid_fen, over.household.balance_fen) == (85000, -5000)


async def test_tablet_clock_ahead_is_flagged_and_the_server_date_used(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world, collected_at=datetime(2025, 10, 9, 6, 0, tzinfo=UTC))
    assert (receipt.payment.clock_flag, receipt.payment.business_date) == ("ahead", date(2025, 10, 8))


async def test_replay_of_the_key_gives_the_same_answer_and_one_payment(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    staff = {**await auth_headers(client, "staff_a"), "Idempotency-Key": "pay-0001-abcdef"}
    body = http_body(world)
    first = await client.post("/api/v1/payments", json=body, headers=staff)
    assert first.status_code == 201, first.text
    again = await client.post("/api/v1/payments", json=body, headers=staff)
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    other_body = await client.post("/api/v1/payments", json={**body, "amount_fen": 1}, headers=staff)
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_key_is_required_and_receipt_numbers_are_checked(client: Client, world: World) -> None:
    staff = await auth_headers(client, "staff_a")
    missing = await client.post("/api/v1/payments", json=http_body(world), headers=staff)
    assert missing.status_code == 428
    outside = await client.post(
        "/api/v1/payments",
        json=http_body(world, receipt_no="Z00000001"),
        headers={**staff, "Idempotency-Key": "k-outside-1"},
    )
    assert outside.status_code == 422
    assert outside.json()["errors"][0]["field"] == "receipt_no"
    first = await client.post(
        "/api/v1/payments", json=http_body(world, amount_fen=40000), headers={**staff, "Idempotency-Key": "k-first-001"}
    )
    assert first.status_code == 201
    reused = await client.post(
        "/api/v1/payments", json=http_body(world, amount_fen=40000), headers={**staff, "Idempotency-Key": "k-second-01"}
    )
    assert reused.status_code == 409
    assert reused.json()["code"] == "receipt_number_used"


async def race(
    db_dsn: str,
    first: Callable[[asyncpg.Connection], Awaitable[Any]],
    second: Callable[[asyncpg.Connection], Awaitable[Any]],  # type: ignore[type-arg]
) -> tuple[Any, Any]:
    """Runs `first` in a transaction and holds it open until `second`, in its own transaction on
    another connection, is blocked behind it (or done); then commits both. Returns each outcome:
    its result, or the exception it raised."""
    one, two = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    await init_connection(one)
    await init_connection(two)
    try:
        tx1 = one.transaction()
        await tx1.start()
        outcome1: Any = await first(one)

        async def run_second() -> Any:
            try:
                async with two.transaction():
                    return await second(two)
            except Exception as exc:
                return exc

        task = asyncio.create_task(run_second())
        pid = two.get_server_pid()
        for _ in range(300):
            if task.done() or await one.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                break
            await asyncio.sleep(0.01)
        await tx1.commit()
        return outcome1, await task
    finally:
        await one.close()
        await two.close()


async def test_two_identical_requests_at_a_barrier_record_one_payment(
    db_dsn: str, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    """The same key and body twice at once: the second waits on the idempotency row and replays."""
    data = payment(world)
    digest = idempotency.request_hash("POST /api/v1/payments", data)

    async def attempt(c: asyncpg.Connection) -> bytes:  # type: ignore[type-arg]
        actor = await actor_of(c, "staff_a")
        claim = idempotency.Claim(actor.id, "race-key-000001", "POST /api/v1/payments", digest)
        answer = await payments.record_claimed_payment(c, actor, data, claim, timezone=TZ, code_key=KEY, now=RECEIVED)
        if isinstance(answer, idempotency.Stored):
            return answer.body
        assert answer[1] is not None
        return answer[1]

    first, second = await race(db_dsn, attempt, attempt)
    assert second == first
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_same_payment_id_through_two_keys_is_recorded_once(
    db_dsn: str, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    """A retry that arrives with another key (another path): the payment id decides."""
    data = payment(world)

    async def with_receipt(receipt_no: str) -> Callable[[asyncpg.Connection], Awaitable[Any]]:  # type: ignore[type-arg]
        async def attempt(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
            return await payments.record_payment(
                c,
                await actor_of(c, "staff_a"),
                msgspec.structs.replace(data, receipt_no=receipt_no),
                timezone=TZ,
                code_key=KEY,
                now=RECEIVED,
            )

        return attempt

    _, second = await race(db_dsn, await with_receipt("A00000001"), await with_receipt("A00000002"))
    assert isinstance(second, payments.PaymentAlreadyRecorded)
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_one_receipt_number_for_two_payments_at_once_records_one(
    db_dsn: str, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    async def attempt(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await payments.record_payment(
            c, await actor_of(c, "staff_a"), payment(world, amount_fen=40000), timezone=TZ, code_key=KEY, now=RECEIVED
        )

    _, second = await race(db_dsn, attempt, attempt)
    assert isinstance(second, payments.ReceiptNumberUsed)
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


# Voids, refunds, append-only ---------------------------------------------------------------------


async def test_void_needs_another_reviewer_and_undoes_the_payment(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world)
    day = date(2025, 10, 8)
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="wrong household"), day
        )
    with pytest.raises(Forbidden):
        async with conn.transaction():
            await adjustments.decide_adjustment(conn, staff, request.id, Decision(approve=True), day)
    async with conn.transaction():
        await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), day)
    money = await payments.household_money(conn, UUID(world.household["id"]), 2026)
    assert (money.paid_fen, money.balance_fen) == (0, 80000)
    assert {r["status"] for r in await conn.fetch("SELECT status FROM enrollments")} == {"registered"}
    with pytest.raises(adjustments.NotAdjustable):
        async with conn.transaction():
            await adjustments.request_adjustment(
                conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="again"), day
            )


async def test_void_is_same_day_only_and_refund_needs_a_refundable_reason(
    conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world, amount_fen=90000)
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    with pytest.raises(adjustments.NotAdjustable):
        async with conn.transaction():
            await adjustments.request_adjustment(
                conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="late"), date(2025, 10, 9)
            )
    with pytest.raises(InvalidInput) as refused:
        async with conn.transaction():
            await adjustments.request_adjustment(
                conn,
                staff,
                receipt.payment.id,
                AdjustmentRequest(kind="refund", reason="changed mind"),
                date(2025, 10, 9),
            )
    assert refused.value.extra["errors"][0]["field"] == "reason"
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn,
            staff,
            receipt.payment.id,
            AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=10000),
            date(2025, 10, 9),
        )
        await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), date(2025, 10, 9))
    money = await payments.household_money(conn, UUID(world.household["id"]), 2026)
    assert (money.paid_fen, money.balance_fen) == (80000, 0)


@pytest.mark.parametrize("table", ["payments", "payment_events", "payment_allocations", "remittances"])
@pytest.mark.parametrize("statement", ["UPDATE {table} SET {column} = {column}", "DELETE FROM {table}"])
async def test_money_rows_are_append_only(conn: asyncpg.Connection, world: World, table: str, statement: str) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world)
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn,
            await actor_of(conn, "staff_a"),
            receipt.payment.id,
            AdjustmentRequest(kind="void", reason="x"),
            date(2025, 10, 8),
        )
        staff_a = await actor_of(conn, "staff_a")
        await remittance.record_remittance(
            conn,
            await actor_of(conn, "reviewer_a"),
            RemittanceIn(
                collector_id=staff_a.id, business_date=date(2025, 10, 8), amount_fen=80000, bank_reference="B1"
            ),
        )
    assert request.kind == "void_requested"
    column = {
        "payments": "amount_fen",
        "payment_events": "reason",
        "payment_allocations": "amount_fen",
        "remittances": "amount_fen",
    }[table]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(statement.format(table=table, column=column))


# Remittance and ledger invariants ---------------------------------------------------------------


async def test_a_payment_waits_for_a_day_being_closed_and_counts_in_the_next_one(db_dsn: str, world: World) -> None:  # type: ignore[type-arg]
    """The day's closing holds the collector's lock exclusively: a payment of that day, in flight,
    waits and then lands in the next open day (without the lock it would slip into the closed day)."""
    day = date(2025, 10, 8)

    async def close(c: asyncpg.Connection) -> remittance.CollectorDay:  # type: ignore[type-arg]
        return await remittance.close_day(c, await actor_of(c, "reviewer_a"), (await actor_of(c, "staff_a")).id, day)

    async def record(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await payments.record_payment(
            c, await actor_of(c, "staff_a"), payment(world), timezone=TZ, code_key=KEY, now=RECEIVED
        )

    closed, receipt = await race(db_dsn, close, record)
    assert (closed.closed, closed.expected_fen) == (True, 0)
    assert isinstance(receipt, payments.Receipt), receipt
    assert (receipt.payment.business_date, receipt.payment.remittance_date) == (day, date(2025, 10, 9))


async def test_a_day_being_closed_waits_for_a_payment_in_flight_and_counts_it(db_dsn: str, world: World) -> None:  # type: ignore[type-arg]
    """Payments hold the collector's lock shared (they do not wait for one another): a closing that
    starts while one is in flight waits for it and counts it."""
    day = date(2025, 10, 8)

    async def record(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await payments.record_payment(
            c, await actor_of(c, "staff_a"), payment(world), timezone=TZ, code_key=KEY, now=RECEIVED
        )

    async def close(c: asyncpg.Connection) -> remittance.CollectorDay:  # type: ignore[type-arg]
        return await remittance.close_day(c, await actor_of(c, "reviewer_a"), (await actor_of(c, "staff_a")).id, day)

    receipt, closed = await race(db_dsn, record, close)
    assert receipt.payment.remittance_date == day
    assert isinstance(closed, remittance.CollectorDay), closed
    assert (closed.closed, closed.cash_collected_fen, closed.expected_fen) == (True, 80000, 80000)


async def test_cash_day_expected_remitted_difference_and_late_arrivals(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    await pay(conn, world, amount_fen=40000, person_ids=[UUID(world.person_ids[0])])
    voided = await pay(conn, world, receipt_no="A00000002", amount_fen=40000, person_ids=[UUID(world.person_ids[1])])
    await pay(conn, world, receipt_no="A00000003", amount_fen=5000, method="qr", person_ids=[UUID(world.person_ids[1])])
    day = date(2025, 10, 8)
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, staff, voided.payment.id, AdjustmentRequest(kind="void", reason="x"), day
        )
        await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), day)
        await remittance.record_remittance(
            conn,
            staff,
            RemittanceIn(collector_id=staff.id, business_date=day, amount_fen=39000, bank_reference="ICBC-1"),
        )
        closed = await remittance.close_day(conn, reviewer, staff.id, day)
    figures = (closed.cash_collected_fen, closed.cash_voided_fen, closed.expected_fen, closed.remitted_fen)
    assert (*figures, closed.difference_fen) == (
        80000,
        40000,
        40000,
        39000,
        -1000,
    )
    assert closed.closed
    # A payment synced later for the closed day keeps its date and counts in the next open day.
    late = await pay(
        conn,
        world,
        receipt_no="A00000004",
        amount_fen=40000,
        person_ids=[UUID(world.person_ids[1])],
        collected_at=datetime(2025, 10, 8, 3, 0, tzinfo=UTC),
    )
    assert (late.payment.business_date, late.payment.remittance_date) == (date(2025, 10, 8), date(2025, 10, 9))
    next_day = await remittance.collector_day(conn, reviewer, staff.id, date(2025, 10, 9))
    assert (next_day.expected_fen, next_day.late_arrivals) == (40000, 1)
    with pytest.raises(Forbidden):
        async with conn.transaction():
            await remittance.close_day(conn, staff, staff.id, date(2025, 10, 9))


async def test_a_bank_slip_is_remitted_once_a_day(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    """A remittance retried after its answer was lost must not count the cash twice (remittances are
    append-only): the same bank reference again for the collector's day is refused, naming the field;
    another slip, or the same reference on another day, is recorded; the audit row names the
    collector's township, so that township's audit views show it."""
    staff = await actor_of(conn, "staff_a")
    await pay(conn, world)
    day = date(2025, 10, 8)

    async def remit(reference: str, on: date = day) -> remittance.CollectorDay:
        async with conn.transaction():
            bank = RemittanceIn(collector_id=staff.id, business_date=on, amount_fen=40000, bank_reference=reference)
            return await remittance.record_remittance(conn, staff, bank)

    assert (await remit("ICBC-7")).remitted_fen == 40000
    with pytest.raises(Conflict) as again:
        await remit(" ICBC-7 ")
    assert again.value.extra["errors"][0]["field"] == "bank_reference"
    assert (await remit("ICBC-8")).remitted_fen == 80000
    assert (await remit("ICBC-7", date(2025, 10, 9))).remitted_fen == 40000
    divisions = await conn.fetch("SELECT division_code FROM audit_log WHERE action = 'remit'")
    assert [r["division_code"] for r in divisions] == [staff.scope.division_code] * 3


async def test_two_identical_remittances_at_a_barrier_record_one(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """The check of a slip recorded already runs under the collector's lock, which a remittance holds
    exclusively: the second of two identical requests waits for the first and is refused (without
    the lock both would be recorded)."""
    await pay(conn, world)
    day = date(2025, 10, 8)

    async def remit(c: asyncpg.Connection) -> remittance.CollectorDay:  # type: ignore[type-arg]
        staff = await actor_of(c, "staff_a")
        bank = RemittanceIn(collector_id=staff.id, business_date=day, amount_fen=80000, bank_reference="ICBC-9")
        return await remittance.record_remittance(c, staff, bank)

    first, second = await race(db_dsn, remit, remit)
    assert isinstance(first, remittance.CollectorDay) and first.remitted_fen == 80000
    assert isinstance(second, Conflict), second
    assert await conn.fetchval("SELECT count(*) FROM remittances") == 1


async def test_a_subsidy_recognised_after_payment_can_be_refunded_and_no_more(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """张三 paid his ¥400; then a 低保 list (50 %) names him, and the quote shows ¥200 to refund. A
    refund takes what his subsidy today leaves unowed (¥200), never the ¥200 that still pays his
    enrolment in force; an amount of 0 left is refused as 0, never negative."""
    first = UUID(world.person_ids[0])
    receipt = await pay(conn, world, amount_fen=40000, person_ids=[first])
    await upload(client, await auth_headers(client, "civil"), f"身份证号,姓名\n{ID_NUMBERS[1]},张三\n".encode())
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    day = date(2025, 10, 9)

    async def refund(fen: int | None) -> None:
        async with conn.transaction():
            asked = AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=fen)
            request = await adjustments.request_adjustment(conn, staff, receipt.payment.id, asked, day)
            await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), day)

    with pytest.raises(InvalidInput) as refused:
        await refund(20001)
    assert "20000" in refused.value.extra["errors"][0]["message"]
    await refund(20000)
    assert await conn.fetchval("SELECT status FROM enrollments WHERE person_id = $1", first) == "paid"
    with pytest.raises(InvalidInput) as nothing:
        await refund(None)
    assert "at most 0 fen" in nothing.value.extra["errors"][0]["message"]


async def test_household_paid_is_payments_less_voids_less_refunds(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    a = await pay(conn, world, amount_fen=30000)
    b = await pay(conn, world, receipt_no="A00000002", amount_fen=60000)
    c = await pay(conn, world, receipt_no="A00000003", amount_fen=7000)
    day = date(2025, 10, 8)
    async with conn.transaction():
        void = await adjustments.request_adjustment(
            conn, staff, a.payment.id, AdjustmentRequest(kind="void", reason="x"), day
        )
        await adjustments.decide_adjustment(conn, reviewer, void.id, Decision(approve=True), day)
        refund = await adjustments.request_adjustment(
            conn, staff, c.payment.id, AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=2000), day
        )
        await adjustments.decide_adjustment(conn, reviewer, refund.id, Decision(approve=True), day)
        rejected = await adjustments.request_adjustment(
            conn, staff, b.payment.id, AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=500), day
        )
        await adjustments.decide_adjustment(conn, reviewer, rejected.id, Decision(approve=False), day)
    money = await payments.household_money(conn, UUID(world.household["id"]), 2026)
    # 30000 + 60000 + 7000 − 30000 voided − 2000 refunded; the rejected refund changes nothing.
    assert money.paid_fen == 65000
    assert money.balance_fen == 15000
    assert isinstance(money.paid_fen, int)


async def test_a_plan_made_before_any_payment_reads_a_households_payments_by_key(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """What a payment reads under its locks runs on a connection's generic plan (`plan_cache_mode`),
    made once, perhaps on a new district's first day. The ledger must stay one relation that a
    payment is reached in by its key: a ledger that joined a table of the payments' states (tried,
    not kept: docs/scaling.md) let that plan start from a scan of every payment and probe the
    allocations for each (6.6 ms at 1,500 payments, growing with the district)."""
    statement = load_queries("backend.premiums")["reads_for_payment"]
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE reads AS {statement}")  # planned at its first run, before any payment
    enrolled = await conn.fetch(
        "SELECT id FROM enrollments WHERE household_id = $1 ORDER BY id", UUID(world.household["id"])
    )
    staff_a = await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'")
    args = (
        f"'{staff_a}', '{world.block['id']}', 2, '{{{','.join(str(r['id']) for r in enrolled)}}}', '2025-10-08', "
        f"'cash', NULL, '{world.household['id']}', 2026"
    )
    await conn.execute(f"EXECUTE reads({args})")
    await pay(conn, world)
    await conn.execute(DISTRICT, 300, world.household["village_code"])  # 300 households more
    await conn.execute(  # a payment of each, allocated to nobody
        """
        INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                              receipt_no, receipt_block_id, collector_id, collected_at, business_date,
                              remittance_date)
        SELECT gen_random_uuid(), h.id, h.village_code, p.coverage_year, p.person_ids, 100, p.method, p.kind,
               'Z' || lpad(h.n::text, 8, '0'), p.receipt_block_id, p.collector_id, p.collected_at, p.business_date,
               p.remittance_date
        FROM payments p,
             (SELECT id, village_code, row_number() OVER (ORDER BY id) AS n FROM households
              WHERE id <> $1 ORDER BY id LIMIT 300) AS h
        """,
        UUID(world.household["id"]),
    )
    explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE reads({args})")
    await conn.execute("DEALLOCATE reads")
    await conn.execute("RESET plan_cache_mode")

    # The household's one payment (its allocations' and its own, for what it paid before), not the 300.
    assert await conn.fetchval("SELECT count(*) FROM payments") == 301
    assert rows_of(json.loads(explained)[0]["Plan"], "payments") <= 3


async def test_back_payment_shortens_the_waiting_period(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    """Last covered in 2023, 2025 known uncovered (cancelled in the old system): a gap of which only
    2025 counts → 3 + 1 months. Paying 2025 back (补缴) removes the variable month: cover from
    1 April instead of 1 May."""
    await conn.execute(
        "DELETE FROM enrollment_history WHERE id_number_hash = $1", sealed(crypto.ID_NUMBER, ID_NUMBERS[2])[0]
    )
    await add_history(conn, ID_NUMBERS[2], 2023)
    await add_history(conn, ID_NUMBERS[2], 2025, "cancelled")  # unknown would not be a gap
    first, second = UUID(world.person_ids[0]), UUID(world.person_ids[1])
    without = await pay(conn, world, receipt_no="A00000001", amount_fen=40000, person_ids=[first])
    assert without.enrollments_paid
    await pay(
        conn,
        world,
        receipt_no="A00000002",
        amount_fen=40000,
        kind="back_payment",
        back_years=[2025],
        person_ids=[second],
    )
    paid = await pay(conn, world, receipt_no="A00000003", amount_fen=40000, person_ids=[second])
    coverage = await conn.fetchrow(
        "SELECT coverage_start, waiting_months FROM enrollments WHERE id = $1", paid.enrollments_paid[0]
    )
    assert (coverage["coverage_start"], coverage["waiting_months"]) == (date(2026, 4, 1), 3)


async def test_a_dissolved_household_takes_no_payment_at_the_counter(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await conn.execute("UPDATE households SET status = 'dissolved' WHERE id = $1", UUID(world.household["id"]))
    response = await client.post(
        "/api/v1/payments",
        json=http_body(world),
        headers={**await auth_headers(client, "staff_a"), "Idempotency-Key": "dissolved-0001"},
    )
    assert response.status_code == 409
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0


# Findings of the review, each pinned by a test --------------------------------------------------


async def test_a_payment_keeps_the_subsidy_recorded_at_registration(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    await conn.execute("UPDATE enrollments SET subsidy_fen = 20000 WHERE person_id = $1", UUID(world.person_ids[1]))
    receipt = await pay(conn, world, amount_fen=60000)
    assert len(receipt.enrollments_paid) == 2
    assert (receipt.household.due_fen, receipt.household.paid_fen, receipt.household.balance_fen) == (60000, 60000, 0)
    assert (
        await conn.fetchval("SELECT subsidy_fen FROM enrollments WHERE person_id = $1", UUID(world.person_ids[1]))
        == 20000
    )


async def test_back_payment_is_for_members_at_the_current_rate(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    outsider = await insert_person(conn, ID_NUMBERS[5], "外人")
    with pytest.raises(InvalidInput) as stranger:
        await pay(conn, world, kind="back_payment", back_years=[2024], person_ids=[outsider], amount_fen=40000)
    assert stranger.value.extra["errors"][0]["field"] == "person_ids[0]"
    with pytest.raises(InvalidInput) as too_little:
        await pay(
            conn,
            world,
            kind="back_payment",
            back_years=[2023, 2024],
            person_ids=[UUID(world.person_ids[0])],
            amount_fen=1,
        )
    assert too_little.value.extra["errors"][0]["field"] == "amount_fen"
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0


async def test_a_void_cannot_be_approved_once_the_day_is_closed(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    staff, reviewer, other = [await actor_of(conn, u) for u in ("staff_a", "reviewer_a", "admin")]
    receipt = await pay(conn, world, amount_fen=80100)  # ¥1 over: what a refund may take
    day = date(2025, 10, 8)
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="x"), day
        )
    with pytest.raises(Conflict):
        async with conn.transaction():
            await remittance.close_day(conn, reviewer, staff.id, day)  # a void awaits a decision
    async with conn.transaction():
        await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=False), day)
        await remittance.close_day(conn, reviewer, staff.id, day)
    async with conn.transaction():
        late = await adjustments.request_adjustment(
            conn, staff, receipt.payment.id, AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=100), day
        )
    assert late.kind == "refund_requested"
    assert other.role == Role.DISTRICT_ADMIN


async def test_a_void_is_refused_once_its_cash_was_remitted(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    """Voids are before remittance (SPEC §2): a cash payment whose money the day's remittances took
    is refunded, not voided. Cash is counted, not traced: while the day's cash not voided less what
    was remitted covers a payment, its void may be asked for; a QR payment's whatever was remitted."""
    staff = await actor_of(conn, "staff_a")
    day = date(2025, 10, 8)
    first = await pay(conn, world, amount_fen=40000, person_ids=[UUID(world.person_ids[0])])
    second = await pay(conn, world, receipt_no="A00000002", amount_fen=40000, person_ids=[UUID(world.person_ids[1])])
    qr = await pay(
        conn, world, receipt_no="A00000003", amount_fen=5000, method="qr", person_ids=[UUID(world.person_ids[1])]
    )

    async def remit(fen: int, reference: str) -> None:
        async with conn.transaction():
            bank = RemittanceIn(collector_id=staff.id, business_date=day, amount_fen=fen, bank_reference=reference)
            await remittance.record_remittance(conn, staff, bank)

    async def void(receipt: payments.Receipt) -> adjustments.PaymentEvent:
        async with conn.transaction():
            return await adjustments.request_adjustment(
                conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="x"), day
            )

    await remit(40000, "ICBC-1")  # 80,000 collected, 40,000 of it still in hand: either may be voided
    asked = await void(first)
    async with conn.transaction():
        await adjustments.decide_adjustment(
            conn, await actor_of(conn, "reviewer_a"), asked.id, Decision(approve=True), day
        )
    with pytest.raises(adjustments.NotAdjustable):  # the 40,000 left is at the bank
        await void(second)
    assert (await void(qr)).kind == "void_requested"
    assert await conn.fetchval("SELECT count(*) FROM payment_events WHERE kind = 'void_requested'") == 2


async def test_a_void_decision_waits_for_a_remittance_of_its_day_and_is_then_refused(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """A remittance holds the collector's lock exclusively and the decision shared: a decision that
    comes while its day's cash is being remitted waits, then finds the cash at the bank (without the
    lock it would void a payment whose money was remitted)."""
    day = date(2025, 10, 8)
    voided = await pay(conn, world)
    requests: list[adjustments.PaymentEvent] = []

    async def remit(c: asyncpg.Connection) -> remittance.CollectorDay:  # type: ignore[type-arg]
        staff = await actor_of(c, "staff_a")
        bank = RemittanceIn(collector_id=staff.id, business_date=day, amount_fen=80000, bank_reference="ICBC-9")
        remitted = await remittance.record_remittance(c, staff, bank)
        async with conn.transaction():  # asked for while the remittance is in flight: the cash was in hand
            requests.append(
                await adjustments.request_adjustment(
                    conn, staff, voided.payment.id, AdjustmentRequest(kind="void", reason="wrong household"), day
                )
            )
        return remitted

    async def decide(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await adjustments.decide_adjustment(
            c, await actor_of(c, "reviewer_a"), requests[0].id, Decision(approve=True), day
        )

    remitted, decision = await race(db_dsn, remit, decide)
    assert remitted.remitted_fen == 80000
    assert isinstance(decision, adjustments.NotAdjustable), decision
    assert await conn.fetchval("SELECT count(*) FROM payment_events WHERE kind = 'approved'") == 0
    assert await conn.fetchval("SELECT status FROM enrollments LIMIT 1") == "paid"


async def test_two_void_approvals_of_one_days_cash_wait_for_each_other(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Two cash payments of ¥400, ¥400 of the day remitted, both voids asked for: approved at once,
    each would find ¥400 in hand. The approvals take the collector's day exclusively for cash: the
    second waits for the first and then finds nothing in hand (without the lock both are voided and
    the day is over-remitted)."""
    staff = await actor_of(conn, "staff_a")
    day = date(2025, 10, 8)
    first = await pay(conn, world, amount_fen=40000, person_ids=[UUID(world.person_ids[0])])
    second = await pay(conn, world, receipt_no="A00000002", amount_fen=40000, person_ids=[UUID(world.person_ids[1])])
    async with conn.transaction():
        bank = RemittanceIn(collector_id=staff.id, business_date=day, amount_fen=40000, bank_reference="ICBC-3")
        await remittance.record_remittance(conn, staff, bank)
    asked = []
    for receipt in (first, second):
        async with conn.transaction():
            request = AdjustmentRequest(kind="void", reason="wrong household")
            asked.append(await adjustments.request_adjustment(conn, staff, receipt.payment.id, request, day))

    def approve(n: int) -> Callable[[asyncpg.Connection], Awaitable[Any]]:  # type: ignore[type-arg]
        async def decide(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
            return await adjustments.decide_adjustment(
                c, await actor_of(c, "reviewer_a"), asked[n].id, Decision(approve=True), day
            )

        return decide

    one, other = await race(db_dsn, approve(0), approve(1))
    assert isinstance(one, adjustments.PaymentEvent) and one.kind == "approved", one
    assert isinstance(other, adjustments.NotAdjustable), other
    assert await conn.fetchval("SELECT count(*) FROM payment_events WHERE kind = 'approved'") == 1


async def test_a_void_of_a_confirmed_enrolments_payment_is_refused(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world)
    confirmed = await client.post(
        "/api/v1/enrollments/confirm",
        json={"ids": [str(e) for e in receipt.enrollments_paid]},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert confirmed.status_code == 200
    with pytest.raises(adjustments.NotAdjustable):
        async with conn.transaction():
            await adjustments.request_adjustment(
                conn,
                await actor_of(conn, "staff_a"),
                receipt.payment.id,
                AdjustmentRequest(kind="void", reason="x"),
                date(2025, 10, 8),
            )


async def test_receipt_prefixes_are_letters_with_one_width(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    reviewer = await auth_headers(client, "reviewer_a")
    block = {"collector_id": staff_a, "first_no": 500, "last_no": 510}
    digit_prefix = await client.post(
        "/api/v1/receipt-blocks", json={**block, "prefix": "A1", "digits": 7}, headers=reviewer
    )
    assert digit_prefix.status_code in (400, 422)
    other_width = await client.post(
        "/api/v1/receipt-blocks", json={**block, "prefix": "A", "digits": 6}, headers=reviewer
    )
    assert other_width.status_code == 422
    assert other_width.json()["errors"][0]["field"] == "digits"


# What a payment answers and writes in one statement -----------------------------------------------


async def test_every_receipt_shows_the_household_money_the_ledger_shows(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    """The receipt's totals come with the payment's own statement: after each payment (an under-
    payment, two over-payments, a back-payment, around an approved void and a refund of what one
    left over) they are what `household_money` reads, and the query code is the one the household
    prints."""
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    household_id, day = UUID(world.household["id"]), date(2025, 10, 8)
    first, second = UUID(world.person_ids[0]), UUID(world.person_ids[1])
    steps: list[dict[str, Any]] = [
        {"receipt_no": "A00000001", "amount_fen": 30000, "person_ids": [first]},
        {"receipt_no": "A00000002", "amount_fen": 83000},  # ¥30 over both premiums
        {
            "receipt_no": "A00000003",
            "amount_fen": 41000,
            "kind": "back_payment",
            "back_years": [2025],
            "person_ids": [second],
        },
        {"receipt_no": "A00000004", "amount_fen": 45000},
    ]
    receipts = []
    for n, step in enumerate(steps):
        receipt = await pay(conn, world, **step)
        receipts.append(receipt)
        money = await payments.household_money(conn, household_id, 2026)
        code = await enrollments.household_query_code(conn, KEY, household_id, 2026)
        assert (receipt.household, receipt.query_code) == (money, code), step
        if n == 0:  # the first is voided, the second partly refunded: both count from then on
            async with conn.transaction():
                void = await adjustments.request_adjustment(
                    conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="x"), day
                )
                await adjustments.decide_adjustment(conn, reviewer, void.id, Decision(approve=True), day)
        if n == 1:
            async with conn.transaction():
                refund = await adjustments.request_adjustment(
                    conn,
                    staff,
                    receipt.payment.id,
                    AdjustmentRequest(kind="refund", reason="overpayment", amount_fen=3000),
                    day,
                )
                await adjustments.decide_adjustment(conn, reviewer, refund.id, Decision(approve=True), day)
    assert [r.household.paid_fen for r in receipts] == [30000, 83000, 80000, 125000]


@pytest.mark.parametrize(
    ("closed", "counted_on"),
    [
        ([], date(2025, 10, 8)),
        ([date(2025, 10, 8)], date(2025, 10, 9)),
        ([date(2025, 10, 8), date(2025, 10, 9)], date(2025, 10, 10)),
        ([date(2025, 10, 8), date(2025, 10, 10)], date(2025, 10, 9)),
        ([date(2025, 10, 9)], date(2025, 10, 8)),
    ],
)
async def test_a_payment_of_a_closed_day_counts_on_the_next_open_day(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    closed: list[date],
    counted_on: date,
) -> None:
    staff = await actor_of(conn, "staff_a")
    for day in closed:
        await conn.execute(
            "INSERT INTO collector_days (collector_id, business_date, expected_fen, remitted_fen, closed_by) "
            "VALUES ($1, $2, 0, 0, $1)",
            staff.id,
            day,
        )
    receipt = await pay(conn, world)
    assert (receipt.payment.business_date, receipt.payment.remittance_date) == (date(2025, 10, 8), counted_on)


async def test_a_payment_is_audited_with_each_enrolment_it_pays(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    receipt = await pay(conn, world)
    rows = await conn.fetch(
        "SELECT action, entity, entity_id, summary FROM audit_log WHERE action IN ('paid', 'record') ORDER BY id"
    )
    assert sorted((r["action"], r["entity"], r["entity_id"]) for r in rows[:-1]) == sorted(
        ("paid", "enrollment", str(e)) for e in receipt.enrollments_paid
    )
    assert (rows[-1]["action"], rows[-1]["entity"], rows[-1]["entity_id"]) == (
        "record",
        "payment",
        str(receipt.payment.id),
    )
    assert rows[-1]["summary"] == {
        "amount_fen": 80000,
        "method": "cash",
        "kind": "premium",
        "receipt_no": "A00000001",
        "clock_flag": None,
        "enrollments_paid": 2,
    }
    assert [(r["summary"]["from"], r["summary"]["to"], r["summary"]["business_date"]) for r in rows[:-1]] == [
        ("registered", "paid", "2025-10-08")
    ] * 2


async def test_a_payment_funds_an_enrolment_as_mark_paid_does(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    """The payment writes the funding in its own statement; it is the funding `mark_paid` writes."""
    first, second = UUID(world.person_ids[0]), UUID(world.person_ids[1])
    receipt = await pay(conn, world, amount_fen=40000, person_ids=[first])
    other = await conn.fetchval("SELECT id FROM enrollments WHERE person_id = $1", second)
    async with conn.transaction():
        await enrollments.mark_paid(conn, await actor_of(conn, "staff_a"), other, receipt.payment.business_date)
    columns = (
        "status, funding, business_date, subsidy_fen, coverage_start, coverage_end, coverage_reason, coverage_note, "
        "waiting_months, row_version"
    )
    rows = await conn.fetch(f"SELECT {columns} FROM enrollments WHERE person_id = ANY($1::uuid[])", [first, second])
    assert len(rows) == 2 and tuple(rows[0]) == tuple(rows[1])
    assert rows[0]["status"] == "paid" and rows[0]["coverage_start"] is not None


async def test_payments_of_one_collector_do_not_wait_for_each_other(
    client: Client,
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """The collector's lock is shared among payments: while one is in flight (uncommitted), another
    of the same collector for another household goes through (it would time out on an exclusive lock)."""
    second = await second_household(client, conn)
    one, two = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        await init_connection(one)
        await init_connection(two)
        staff_actor = await actor_of(one, "staff_a")
        async with one.transaction():
            await payments.record_payment(one, staff_actor, payment(world), timezone=TZ, code_key=KEY, now=RECEIVED)
            async with two.transaction():
                await two.execute("SET LOCAL lock_timeout = '3s'")
                other = PaymentIn(
                    id=uuid.uuid4(),
                    household_id=UUID(second["id"]),
                    coverage_year=2026,
                    person_ids=[UUID(second["members"][0]["person_id"])],
                    amount_fen=40000,
                    method="cash",
                    receipt_no="A00000002",
                    collected_at=COLLECTED,
                )
                receipt = await payments.record_payment(
                    two, staff_actor, other, timezone=TZ, code_key=KEY, now=RECEIVED
                )
        assert receipt.payment.household_id == UUID(second["id"])
    finally:
        await one.close()
        await two.close()
    assert await conn.fetchval("SELECT count(*) FROM payments") == 2


async def test_a_channel_reference_is_recorded_once_until_its_payment_is_voided(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    first, second = UUID(world.person_ids[0]), UUID(world.person_ids[1])
    recorded = await pay(conn, world, amount_fen=40000, method="qr", channel_ref="WX-77", person_ids=[first])
    with pytest.raises(payments.ChannelReferenceUsed) as refused:
        await pay(
            conn, world, receipt_no="A00000002", amount_fen=40000, method="qr", channel_ref="WX-77", person_ids=[second]
        )
    assert refused.value.extra["errors"] == [{"field": "channel_ref", "message": "already recorded"}]
    # A bank transfer's reference is another namespace than a QR payment's.
    await pay(
        conn, world, receipt_no="A00000003", amount_fen=100, method="bank", channel_ref="WX-77", person_ids=[second]
    )
    # Voided (recorded in error), the transfer may be recorded again, rightly.
    day = date(2025, 10, 8)
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, await actor_of(conn, "staff_a"), recorded.payment.id, AdjustmentRequest(kind="void", reason="x"), day
        )
        await adjustments.decide_adjustment(
            conn, await actor_of(conn, "reviewer_a"), request.id, Decision(approve=True), day
        )
    again = await pay(
        conn, world, receipt_no="A00000004", amount_fen=40000, method="qr", channel_ref="WX-77", person_ids=[first]
    )
    assert again.payment.channel_ref == "WX-77"


async def test_one_channel_reference_for_two_households_at_once_records_one(
    client: Client,
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Two payments of one transfer at once, for different households (nothing else orders them):
    the reference's lock makes the second see the first; without it both would be recorded."""
    other = await second_household(client, conn)

    async def here(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        data = payment(world, method="qr", channel_ref="WX-99")
        return await payments.record_payment(
            c, await actor_of(c, "staff_a"), data, timezone=TZ, code_key=KEY, now=RECEIVED
        )

    async def there(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        data = payment(
            world,
            receipt_no="A00000002",
            amount_fen=40000,
            method="qr",
            channel_ref="WX-99",
            household_id=UUID(other["id"]),
            person_ids=[UUID(other["members"][0]["person_id"])],
        )
        return await payments.record_payment(
            c, await actor_of(c, "staff_a"), data, timezone=TZ, code_key=KEY, now=RECEIVED
        )

    _, second = await race(db_dsn, here, there)
    assert isinstance(second, payments.ChannelReferenceUsed), second
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_a_deadlock_is_a_503_try_again_and_keeps_nothing(
    client: Client,
    admin_db_dsn: str,  # the other transaction sets deadlock_timeout, which only an administrator may
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """PostgreSQL breaks a real deadlock by failing one transaction: when that is a request's, the
    caller gets 503 `try_again` with Retry-After, never a 500, and nothing of the request is kept."""
    staff = {**await auth_headers(client, "staff_a"), "Idempotency-Key": "deadlock-01"}
    body = http_body(world)
    household_id = UUID(world.household["id"])
    locked = threading.Event()

    async def other_transaction() -> None:
        # In a thread of its own: the test client blocks this thread's event loop while it waits.
        other = await asyncpg.connect(admin_db_dsn)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute("SET LOCAL deadlock_timeout = '30s'")  # the request's backend detects it
            await other.execute("SELECT 1 FROM enrollments WHERE household_id = $1 FOR UPDATE", household_id)
            locked.set()
            # The payment locks the household's row, then waits for the enrolments' rows ...
            for _ in range(1000):
                if await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'canbao' "
                    "AND wait_event_type = 'Lock'"
                ):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the payment never waited for the enrolments")
            # ... which this transaction holds while it asks for the household's row: a cycle.
            await other.execute("SELECT 1 FROM households WHERE id = $1 FOR UPDATE", household_id)
            await tx.rollback()
        finally:
            await other.close()

    side = asyncio.create_task(asyncio.to_thread(asyncio.run, other_transaction()))
    assert await asyncio.to_thread(locked.wait, 30)
    response = await client.post("/api/v1/payments", json=body, headers=staff)
    await side
    assert response.status_code == 503, response.text
    assert (response.json()["code"], response.headers["retry-after"]) == ("try_again", "1")
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    # The retry the answer asks for, with the same key, records the payment.
    assert (await client.post("/api/v1/payments", json=body, headers=staff)).status_code == 201


async def test_a_void_decision_and_a_push_of_its_collector_never_wait_in_a_circle(
    client: Client,
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """A tablet's push holds its collector's lock shared from its first payment to its commit, and
    locks enrolments after it (a later payment, a cancellation); a void decision locks the
    enrolments its payment paid, then the collector's lock. Both take it shared: neither waits for
    the other in a circle. (Exclusive for the void, the void waited for the push's lock while the
    push waited for the void's enrolments, and PostgreSQL broke the cycle by failing one of them.)"""
    day = date(2025, 10, 8)
    voided = await pay(conn, world)
    staff_actor, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, staff_actor, voided.payment.id, AdjustmentRequest(kind="void", reason="wrong household"), day
        )
    second = await second_household(client, conn)
    first_payment = payment(
        world,
        receipt_no="A00000002",
        amount_fen=40000,
        household_id=UUID(second["id"]),
        person_ids=[UUID(second["members"][0]["person_id"])],
    )
    push, void = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    await init_connection(push)
    await init_connection(void)

    async def blocked_or_done(task: asyncio.Task[Any], pid: int) -> None:
        for _ in range(300):
            if task.done() or await conn.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return
            await asyncio.sleep(0.01)

    decided, release = asyncio.Event(), asyncio.Event()

    async def decide() -> Any:
        try:
            async with void.transaction():
                event = await adjustments.decide_adjustment(void, reviewer, request.id, Decision(approve=True), day)
                decided.set()
                await release.wait()
                return event
        except Exception as exc:
            return exc

    async def pay_again() -> Any:
        try:  # the household whose payment is being voided: its enrolments' rows
            return await payments.record_payment(
                push, staff_actor, payment(world, receipt_no="A00000003"), timezone=TZ, code_key=KEY, now=RECEIVED
            )
        except Exception as exc:
            return exc

    try:
        tx = push.transaction()
        await tx.start()
        await payments.record_payment(push, staff_actor, first_payment, timezone=TZ, code_key=KEY, now=RECEIVED)
        deciding = asyncio.create_task(decide())
        await blocked_or_done(deciding, void.get_server_pid())
        paying = asyncio.create_task(pay_again())
        await blocked_or_done(paying, push.get_server_pid())
        # Whatever waits for whom, a cycle is found within deadlock_timeout (1 s by default).
        await asyncio.wait([deciding, paying], timeout=3, return_when=asyncio.FIRST_EXCEPTION)
        release.set()
        outcome = await deciding
        paid = await paying
        if isinstance(paid, Exception):
            await tx.rollback()
        else:
            await tx.commit()
    finally:
        await push.close()
        await void.close()
    assert decided.is_set() and not isinstance(outcome, Exception), outcome
    assert isinstance(paid, payments.Receipt), paid
    assert await conn.fetchval("SELECT count(*) FROM payments") == 3
    assert await conn.fetchval("SELECT kind FROM payment_events WHERE request_id = $1", request.id) == "approved"
    # Voided, then paid again by the push's second payment.
    statuses = await conn.fetch("SELECT status FROM enrollments WHERE household_id = $1", UUID(world.household["id"]))
    assert {r["status"] for r in statuses} == {"paid"}


async def test_a_void_decision_waits_for_its_day_being_closed_and_is_then_refused(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """The void decision holds the collector's lock shared, which a day's closing holds exclusively:
    a decision that comes while the payment's day is being closed waits for the closing and then
    finds the day closed (without the lock it would void a payment of a closed day)."""
    day = date(2025, 10, 8)
    voided = await pay(conn, world)
    requests: list[adjustments.PaymentEvent] = []

    async def close(c: asyncpg.Connection) -> remittance.CollectorDay:  # type: ignore[type-arg]
        closed = await remittance.close_day(c, await actor_of(c, "reviewer_a"), (await actor_of(c, "staff_a")).id, day)
        # Asked for while the closing is in flight: nothing awaited a decision when it was checked.
        async with conn.transaction():
            requests.append(
                await adjustments.request_adjustment(
                    conn,
                    await actor_of(conn, "staff_a"),
                    voided.payment.id,
                    AdjustmentRequest(kind="void", reason="wrong household"),
                    day,
                )
            )
        return closed

    async def decide(c: asyncpg.Connection) -> Any:  # type: ignore[type-arg]
        return await adjustments.decide_adjustment(
            c, await actor_of(c, "reviewer_a"), requests[0].id, Decision(approve=True), day
        )

    closed, decision = await race(db_dsn, close, decide)
    assert (closed.closed, closed.expected_fen) == (True, 80000)
    assert isinstance(decision, adjustments.NotAdjustable), decision
    assert await conn.fetchval("SELECT count(*) FROM payment_events WHERE kind = 'approved'") == 0
    assert await conn.fetchval("SELECT status FROM enrollments LIMIT 1") == "paid"
