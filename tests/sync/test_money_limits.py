"""A tablet's payment under the rules of the counter that apply offline: one that buys no cover in
its coverage year needs the resident's acknowledgement, and none is dated before its enrolment was
registered (the tablet's own offline registration counts). Money collected offline is never refused:
what breaks a rule is quarantined for a reviewer."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import msgspec

from backend import clock
from backend.clock import local_date
from mobile_sync_protocol import messages as m
from tests.conftest import auth_headers
from tests.sync_world import Client, enrol, household_create, payment, push, world

TZ = "Asia/Shanghai"


async def test_a_payment_that_buys_no_cover_this_year_waits_for_the_acknowledgement(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Paid today for 2026, whose window closed on 2025-12-31: cover would start after the year."""
    tablet = await world(client)
    created = household_create(tablet)
    now = clock.now()
    enrolled = enrol(tablet, created)
    silent = payment(tablet, created, collected_at=now)
    answer = await push(client, tablet, [created, enrolled, silent])
    quarantined = answer.answers[2]
    assert (quarantined.status, quarantined.code) == ("quarantined", "no_cover_this_year")
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    held = await conn.fetchrow("SELECT reason, detail FROM sync_quarantine WHERE id = $1", quarantined.quarantine_id)
    assert held["reason"] == "no_cover_this_year" and "acknowledge_no_cover" in held["detail"]
    told = payment(tablet, created, receipt=2, collected_at=now, acknowledge_no_cover=True)
    assert [(a.status, a.code) for a in (await push(client, tablet, [told])).answers] == [("applied", None)]
    rows = await conn.fetch("SELECT status, coverage_start, coverage_reason FROM enrollments")
    assert [(r["status"], r["coverage_start"], r["coverage_reason"]) for r in rows] == [
        ("paid", None, "no_cover_this_year")
    ] * 2


async def test_the_acknowledgement_is_not_a_fact_of_the_payment(client: Client) -> None:
    """The same payment reported again with it is the quarantined one: the reviewer settles it."""
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    silent = payment(tablet, created, collected_at=clock.now())
    await push(client, tablet, [created, enrolled, silent])
    again = msgspec.structs.replace(silent, seq=tablet.seq(), mutation_id=uuid.uuid4(), acknowledge_no_cover=True)
    assert m.payment_content_hash(again) == m.payment_content_hash(silent)
    answer = (await push(client, tablet, [again])).answers[0]
    assert (answer.status, answer.code) == ("duplicate", "payment_already_quarantined")


async def test_a_reviewer_applies_a_quarantined_payment_that_buys_no_cover(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    silent = payment(tablet, created, collected_at=clock.now())
    answer = await push(client, tablet, [created, enrolled, silent])
    settled = await client.post(
        f"/api/v1/sync/quarantine/{answer.answers[2].quarantine_id}/settle",
        json={"resolution": "apply", "note": "the resident was told: no cover in 2026, pays for continuity"},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert settled.status_code == 200, settled.text
    assert await conn.fetchval("SELECT count(*) FROM payments WHERE id = $1", silent.payment_id) == 1


async def test_the_tablets_offline_registration_time_counts(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Registered on the tablet two days ago (pushed today), paid yesterday (pushed later): the
    payment stands. One dated three days ago, before the tablet registered them, is kept aside."""
    tablet = await world(client)
    created = household_create(tablet)
    now = clock.now()
    enrolled = msgspec.structs.replace(enrol(tablet, created), device_time=now - timedelta(days=2))
    assert [a.status for a in (await push(client, tablet, [created, enrolled])).answers] == ["applied"] * 2
    registered_on = await conn.fetchval("SELECT min(registered_on) FROM enrollments")
    assert registered_on == local_date(now, TZ)  # the server's record of it is today
    before = payment(tablet, created, receipt=2, collected_at=now - timedelta(days=3), acknowledge_no_cover=True)
    paid = payment(tablet, created, collected_at=now - timedelta(days=1), acknowledge_no_cover=True)
    answer = await push(client, tablet, [before, paid])
    assert [(a.status, a.code) for a in answer.answers] == [
        ("quarantined", "collected_before_registration"),
        ("applied", None),
    ]
    business_date = await conn.fetchval("SELECT business_date FROM payments WHERE id = $1", paid.payment_id)
    assert business_date == local_date(now - timedelta(days=1), TZ)


async def test_a_payment_dated_before_a_counter_registration_is_kept_aside_and_applied_from_it(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Registered at the counter today; the tablet says it collected the money yesterday."""
    tablet = await world(client)
    created = household_create(tablet)
    assert [a.status for a in (await push(client, tablet, [created])).answers] == ["applied"]
    staff = await auth_headers(client, "staff_a")
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": str(created.household_id),
            "coverage_year": 2026,
            "person_ids": [str(x.person_id) for x in created.members],
        },
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    now = clock.now()
    early = payment(tablet, created, collected_at=now - timedelta(days=1), acknowledge_no_cover=True)
    answer = (await push(client, tablet, [early])).answers[0]
    assert (answer.status, answer.code) == ("quarantined", "collected_before_registration")
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    settled = await client.post(
        f"/api/v1/sync/quarantine/{answer.quarantine_id}/settle",
        json={"resolution": "apply", "note": "collected on the day of registration, the tablet's clock was off"},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert settled.status_code == 200, settled.text
    # Dated the day of the registration: cover never starts before the enrolment nor the money.
    row = await conn.fetchrow("SELECT business_date, collected_at FROM payments WHERE id = $1", early.payment_id)
    assert row["business_date"] == local_date(now, TZ)
    assert row["collected_at"] == early.collected_at
