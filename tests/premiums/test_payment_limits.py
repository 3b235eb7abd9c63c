"""What a payment may not do: buy no cover without the resident's word, be dated before its
enrolment was registered, or (at the counter) be dated further back than the policy allows or on a
collector's closed day, unless a reviewer records it for the collector. Literal dates throughout:
the household of two was covered in 2025 (imported history) and enrolled for 2026, whose window
closed on 2025-12-31; a payment after it waits 3 months."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import clock
from backend.errors import Forbidden
from backend.policy import service as policies
from backend.premiums import payments
from tests.conftest import auth_headers
from tests.factories import POLICY_2026
from tests.premiums.test_payments import (
    KEY,
    TZ,
    World,
    actor_of,
    backdate_registration,
    http_body,
    payment,
    world_fixture,  # noqa: F401 (the fixture `world`)
)

Client = AsyncTestClient[Litestar]


def shanghai(year: int, month: int, day: int, hour: int = 10) -> datetime:
    """That local time in Shanghai (UTC+8), as a UTC instant."""
    return datetime(year, month, day, hour - 8, 0, tzinfo=UTC)


async def record(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    *,
    now: datetime,
    collected: datetime,
    username: str = "staff_a",
    **extra: Any,
) -> payments.Receipt:
    async with conn.transaction():
        return await payments.record_payment(
            conn,
            await actor_of(conn, username),
            payment(world, collected_at=collected, **extra),
            timezone=TZ,
            code_key=KEY,
            now=now,
        )


async def enrolments(conn: asyncpg.Connection, world: World) -> list[tuple[str, date | None, str | None]]:  # type: ignore[type-arg]
    rows = await conn.fetch(
        "SELECT status, coverage_start, coverage_reason FROM enrollments WHERE household_id = $1 ORDER BY id",
        UUID(world.household["id"]),
    )
    return [(r["status"], r["coverage_start"], r["coverage_reason"]) for r in rows]


# No premium without a clear word ------------------------------------------------------------------


async def test_paying_on_2_december_for_2026_needs_the_residents_acknowledgement(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    dec_2 = shanghai(2026, 12, 2)
    with pytest.raises(payments.NoCoverThisYear) as refused:
        await record(conn, world, now=dec_2, collected=dec_2)
    assert refused.value.extra["person_ids"] == world.person_ids
    assert refused.value.extra["next_year"] == 2027
    assert refused.value.extra["errors"][0]["field"] == "acknowledge_no_cover"
    assert refused.value.detail == (
        "paid on 2026-12-02, the cover of 2 persons would start on 2027-03-02 or later, in 2027: no cover in "
        "2026. Tell the resident, then send acknowledge_no_cover: true"
    )
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    receipt = await record(conn, world, now=dec_2, collected=dec_2, acknowledge_no_cover=True)
    assert (receipt.payment.business_date, len(receipt.enrollments_paid)) == (date(2026, 12, 2), 2)
    # Paid (it counts as a year insured), and no cover this year.
    assert await enrolments(conn, world) == [("paid", None, "no_cover_this_year")] * 2


async def test_a_payment_in_time_needs_no_acknowledgement(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Paid on 2026-03-10: covered from 2026-06-10 (3 months' wait), nothing to acknowledge."""
    await backdate_registration(conn, world.household["id"], date(2026, 3, 1))
    receipt = await record(conn, world, now=shanghai(2026, 3, 10), collected=shanghai(2026, 3, 10))
    assert len(receipt.enrollments_paid) == 2
    assert await enrolments(conn, world) == [("paid", date(2026, 6, 10), "waiting_period")] * 2


async def test_the_counter_answers_409_no_cover_this_year_naming_the_persons(
    client: Client,
    world: World,
) -> None:
    """Paid today for 2026 (any day after 2026-09-30 leaves no cover in 2026)."""
    staff = await auth_headers(client, "staff_a")
    body = http_body(world, acknowledge_no_cover=False)
    refused = await client.post("/api/v1/payments", json=body, headers={**staff, "Idempotency-Key": "no-cover-1"})
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert (problem["code"], problem["person_ids"], problem["next_year"]) == (
        "no_cover_this_year",
        world.person_ids,
        2027,
    )
    assert problem["errors"][0]["field"] == "acknowledge_no_cover"
    chinese = await client.post(
        "/api/v1/payments",
        json=body,
        headers={**staff, "Idempotency-Key": "no-cover-2", "Accept-Language": "zh-CN"},
    )
    assert chinese.json()["code"] == "no_cover_this_year"
    assert chinese.json()["title"] == "本次缴费在本参保年度不享受待遇"
    assert "2027年" in chinese.json()["detail"]
    paid = await client.post(
        "/api/v1/payments",
        json={**body, "acknowledge_no_cover": True},
        headers={**staff, "Idempotency-Key": "no-cover-3"},
    )
    assert paid.status_code == 201, paid.text


# Back-dating has limits ---------------------------------------------------------------------------


async def test_money_is_never_collected_before_the_enrolment_was_registered(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await backdate_registration(conn, world.household["id"], date(2026, 11, 20))
    with pytest.raises(payments.CollectedBeforeRegistration) as refused:
        await record(conn, world, now=shanghai(2026, 11, 20), collected=shanghai(2026, 11, 19))
    assert refused.value.extra["person_ids"] == world.person_ids
    assert refused.value.extra["errors"][0]["field"] == "collected_at"
    assert refused.value.detail == (
        "the money cannot have been collected on 2026-11-19, before the enrolment was registered on 2026-11-20"
    )
    # Not even a reviewer recording it for the collector may date it so.
    with pytest.raises(payments.CollectedBeforeRegistration):
        await record(
            conn,
            world,
            now=shanghai(2026, 11, 20),
            collected=shanghai(2026, 11, 19),
            username="reviewer_a",
            collector_id=await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'"),
        )
    # The day of the registration is fine.
    receipt = await record(
        conn, world, now=shanghai(2026, 11, 20), collected=shanghai(2026, 11, 20, 9), acknowledge_no_cover=True
    )
    assert receipt.payment.business_date == date(2026, 11, 20)


async def test_a_counter_payment_14_months_back_is_refused(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Registered 2025-09-01, collected (says the collector) 2025-10-02, recorded 2026-12-02."""
    with pytest.raises(payments.BackdatedPayment) as refused:
        await record(conn, world, now=shanghai(2026, 12, 2), collected=shanghai(2025, 10, 2))
    assert (refused.value.extra["allowance_days"], refused.value.extra["errors"][0]["field"]) == (7, "collected_at")
    assert refused.value.detail == (
        "a payment is dated at most 7 days back by its collector: one dated 2025-10-02 is recorded by a reviewer "
        "for the collector (collector_id)"
    )
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0


async def test_within_the_allowance_cover_runs_from_the_collection_date(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Registered 2026-03-01; recorded 2026-03-15. Collected 2026-03-08 (7 days back): accepted, and
    the 3-month wait runs from the 8th, not from the day it was recorded; 2026-03-07 (8 days) is not."""
    await backdate_registration(conn, world.household["id"], date(2026, 3, 1))
    with pytest.raises(payments.BackdatedPayment):
        await record(conn, world, now=shanghai(2026, 3, 15), collected=shanghai(2026, 3, 7))
    receipt = await record(conn, world, now=shanghai(2026, 3, 15), collected=shanghai(2026, 3, 8))
    assert (receipt.payment.business_date, receipt.payment.clock_flag) == (date(2026, 3, 8), None)
    assert await enrolments(conn, world) == [("paid", date(2026, 6, 8), "waiting_period")] * 2


async def test_the_policy_sets_the_allowance_and_old_documents_keep_the_default(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    stored = await conn.fetchval("SELECT rules FROM policy_versions WHERE coverage_year = 2026")
    legacy = {k: v for k, v in stored.items() if k != "payment_backdating_days"}  # a document from before
    assert policies.PolicyRules().payment_backdating_days == 7
    await conn.execute("UPDATE policy_versions SET rules = $1 WHERE coverage_year = 2026", legacy)
    version = await policies.in_force(conn, 2026, date(2026, 3, 15))
    assert version is not None and version.rules.payment_backdating_days == 7
    bad = await client.post(
        "/api/v1/policy-years/2026/versions",
        json={**POLICY_2026, "rules": {**POLICY_2026["rules"], "payment_backdating_days": -1}},
        headers=await auth_headers(client, "admin"),
    )
    assert bad.status_code == 422, bad.text
    assert "payment_backdating_days" in bad.json()["errors"][0]["field"]
    await conn.execute("UPDATE policy_versions SET rules = rules || '{\"payment_backdating_days\": 30}'::jsonb")
    await backdate_registration(conn, world.household["id"], date(2026, 2, 1))
    receipt = await record(conn, world, now=shanghai(2026, 3, 15), collected=shanghai(2026, 3, 1))
    assert receipt.payment.business_date == date(2026, 3, 1)


async def test_a_counter_payment_on_or_before_the_collectors_closed_day_is_refused(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    staff_a = await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'")
    reviewer = await conn.fetchval("SELECT id FROM users WHERE username = 'reviewer_a'")
    await conn.execute(
        "INSERT INTO collector_days (collector_id, business_date, expected_fen, remitted_fen, closed_by) "
        "VALUES ($1, '2026-12-03', 0, 0, $2)",
        staff_a,
        reviewer,
    )
    with pytest.raises(payments.BackdatedPayment) as refused:
        await record(conn, world, now=shanghai(2026, 12, 5), collected=shanghai(2026, 12, 3), acknowledge_no_cover=True)
    assert refused.value.extra["last_closed_day"] == "2026-12-03"
    receipt = await record(
        conn, world, now=shanghai(2026, 12, 5), collected=shanghai(2026, 12, 4), acknowledge_no_cover=True
    )
    assert receipt.payment.business_date == date(2026, 12, 4)


async def test_a_reviewer_records_a_back_dated_payment_for_the_collector(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    staff_a = await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'")
    reviewer_a = await conn.fetchval("SELECT id FROM users WHERE username = 'reviewer_a'")
    # The collector cannot approve it, nor a reviewer their own.
    with pytest.raises(Forbidden):
        await record(conn, world, now=shanghai(2026, 12, 2), collected=shanghai(2025, 10, 2), collector_id=staff_a)
    with pytest.raises(Forbidden):
        await record(
            conn,
            world,
            now=shanghai(2026, 12, 2),
            collected=shanghai(2025, 10, 2),
            username="reviewer_a",
            collector_id=reviewer_a,
        )
    receipt = await record(
        conn,
        world,
        now=shanghai(2026, 12, 2),
        collected=shanghai(2025, 10, 2),
        username="reviewer_a",
        collector_id=staff_a,
    )
    assert (receipt.payment.collector_id, receipt.payment.business_date) == (staff_a, date(2025, 10, 2))
    # In the window of 2026: covered the whole year.
    assert await enrolments(conn, world) == [("paid", date(2026, 1, 1), "in_window")] * 2
    approval = await conn.fetchrow(
        "SELECT actor_id, summary FROM audit_log WHERE action = 'approve_backdated' AND entity_id = $1",
        str(receipt.payment.id),
    )
    assert approval is not None and approval["actor_id"] == reviewer_a
    # Through the API: the collector is told a reviewer records it.
    staff = await auth_headers(client, "staff_a")
    old = (clock.now() - timedelta(days=425)).isoformat()
    refused = await client.post(
        "/api/v1/payments",
        json=http_body(world, receipt_no="A00000002", collected_at=old),
        headers={**staff, "Idempotency-Key": "backdated-1"},
    )
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["errors"][0]["field"]) == ("backdated_payment", "collected_at")
