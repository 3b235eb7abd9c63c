"""Money through sync: a payment is a fact recorded once by its id and content, kept aside when it
cannot be applied (never dropped), settled by a reviewer; a pushed void becomes a void request."""

from __future__ import annotations

import uuid

import asyncpg

from backend import clock
from mobile_sync_protocol import messages as m
from tests.conftest import auth_headers
from tests.sync_world import Client, clear, enrol, household_create, payment, push, register_tablet, world


async def test_a_payment_is_recorded_once_and_its_answer_shows_the_balance(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    paid = payment(tablet, created, amount_fen=50000, due_fen=80000)
    answer = await push(client, tablet, [created, enrolled, paid])
    last = answer.answers[2]
    assert (last.status, last.code, last.due_fen, last.paid_fen, last.balance_fen) == (
        "applied",
        None,
        80000,
        50000,
        30000,
    )
    # Reported again under a new seq (a reinstalled app re-exporting its queue): a duplicate.
    again = msgs_copy(paid, seq=tablet.seq(), mutation_id=uuid.uuid4())
    answer = await push(client, tablet, [again])
    assert [(a.status, a.code) for a in answer.answers] == [("duplicate", "payment_already_recorded")]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


def msgs_copy(p: m.PaymentRecord, **changes: object) -> m.PaymentRecord:
    import msgspec

    return msgspec.structs.replace(p, **changes)


async def test_the_tablets_different_amount_due_is_a_conflict_and_the_payment_stands(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    paid = payment(tablet, created, amount_fen=80000, due_fen=40000)  # the tablet thought one member was subsidised
    answer = await push(client, tablet, [created, enrolled, paid])
    last = answer.answers[2]
    assert (last.status, last.code, last.balance_fen) == ("applied_with_conflict", "due_differs", 0)
    assert await conn.fetchval("SELECT amount_fen FROM payments WHERE id = $1", paid.payment_id) == 80000


async def test_a_payment_id_reused_with_another_amount_is_kept_aside_and_never_applied(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    first = payment(tablet, created)
    await push(client, tablet, [created, enrolled, first])
    reused = msgs_copy(first, seq=tablet.seq(), mutation_id=uuid.uuid4(), amount_fen=1000, receipt_no="T00000002")
    answer = await push(client, tablet, [reused])
    assert [(a.status, a.code) for a in answer.answers] == [("quarantined", "payment_id_reused")]
    assert await conn.fetchval("SELECT amount_fen FROM payments WHERE id = $1", first.payment_id) == 80000
    held = clear(await conn.fetchrow("SELECT payment_id, reason, status, body_enc FROM sync_quarantine"))
    assert (held["payment_id"], held["reason"], held["status"], held["body"]["amount_fen"]) == (
        first.payment_id,
        "payment_id_reused",
        "open",
        1000,
    )


async def test_payments_that_cannot_be_applied_are_quarantined_and_acknowledged(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    dissolved, live = household_create(tablet), household_create(tablet, numbers=(3,), household_no="0102")
    setup = [dissolved, live, enrol(tablet, dissolved), enrol(tablet, live), payment(tablet, live, receipt=5)]
    dissolve = m.HouseholdDissolve(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=dissolved.household_id,
        base_version=1,
        reason="data_error",
    )
    assert [a.status for a in (await push(client, tablet, [*setup, dissolve])).answers] == ["applied"] * 6
    tablet_b = await world(client, "staff_b", publish=False)
    b_household = household_create(tablet_b, numbers=(6,), household_no="0201", village_code="330106002201")
    await push(client, tablet_b, [b_household, enrol(tablet_b, b_household)])
    cases = [
        payment(tablet, dissolved, receipt=1),  # the household was dissolved meanwhile
        payment(tablet, b_household, receipt=2),  # not in staff_a's scope
        payment(tablet, live, receipt=5),  # receipt number already used
        payment(tablet, live, receipt=101),  # not in a block issued to the tablet
        msgs_copy(payment(tablet, live, receipt=3), coverage_year=2031),  # no live enrolment that year
    ]
    answer = await push(client, tablet, cases)
    assert [(a.status, a.code) for a in answer.answers] == [
        ("quarantined", "household_dissolved"),
        ("quarantined", "out_of_scope"),
        ("quarantined", "receipt_clash"),
        ("quarantined", "receipt_not_issued"),
        ("quarantined", "not_applicable"),
    ]
    assert all(a.quarantine_id is not None for a in answer.answers)
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1
    # The reviewer of township A sees all five; township B's reviewer none.
    reviewer_a = await auth_headers(client, "reviewer_a")
    listed = await client.get("/api/v1/sync/quarantine", headers=reviewer_a)
    assert [i["reason"] for i in listed.json()["items"]] == [
        "household_dissolved",
        "out_of_scope",
        "receipt_clash",
        "receipt_not_issued",
        "not_applicable",
    ]
    other = await client.get("/api/v1/sync/quarantine", headers=await auth_headers(client, "reviewer_b"))
    assert other.json()["items"] == []
    # Retrying the same push answers the same, and keeps nothing twice.
    tablet.next_seq -= len(cases)
    assert [a.status for a in (await push(client, tablet, cases)).answers] == ["duplicate"] * 5
    assert await conn.fetchval("SELECT count(*) FROM sync_quarantine") == 5


async def test_a_reviewer_settles_quarantined_payments(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    early = payment(tablet, created, receipt=7)  # pushed before the enrolment it pays for
    answer = await push(client, tablet, [created, early, enrol(tablet, created)])
    assert [(a.status, a.code) for a in answer.answers] == [
        ("applied", None),
        ("quarantined", "not_applicable"),
        ("applied", None),
    ]
    quarantine_id = answer.answers[1].quarantine_id
    staff = await auth_headers(client, "staff_a")
    forbidden = await client.post(
        f"/api/v1/sync/quarantine/{quarantine_id}/settle",
        json={"resolution": "apply", "note": "enrolled now"},
        headers=staff,
    )
    assert forbidden.status_code == 403
    reviewer = await auth_headers(client, "reviewer_a")
    settled = await client.post(
        f"/api/v1/sync/quarantine/{quarantine_id}/settle",
        json={"resolution": "apply", "note": "enrolled now"},
        headers=reviewer,
    )
    assert settled.status_code == 200, settled.text
    assert settled.json()["status"] == "applied"
    row = await conn.fetchrow(
        "SELECT collector_id, device_id, amount_fen FROM payments WHERE id = $1", early.payment_id
    )
    assert dict(row.items()) == {"collector_id": tablet.user_id, "device_id": tablet.device_id, "amount_fen": 80000}
    twice = await client.post(
        f"/api/v1/sync/quarantine/{quarantine_id}/settle",
        json={"resolution": "dismiss", "note": "again"},
        headers=reviewer,
    )
    assert twice.status_code == 409 and twice.json()["code"] == "not_settleable"


async def test_a_pushed_void_becomes_a_void_request_awaiting_a_reviewer(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    now = clock.now()
    # (paid today for 2026: no cover before the year ends, which the resident was told)
    paid = payment(tablet, created, collected_at=now, acknowledge_no_cover=True)
    void = m.PaymentVoid(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        payment_id=paid.payment_id,
        reason="wrong_household",
        device_time=now,
    )
    answer = await push(client, tablet, [created, enrolled, paid, void])
    assert [a.status for a in answer.answers] == ["applied"] * 4
    event = await conn.fetchrow("SELECT id, kind, amount_fen, actor_id FROM payment_events")
    assert (event["id"], event["kind"], event["amount_fen"], event["actor_id"]) == (
        answer.answers[3].void_request_id,
        "void_requested",
        80000,
        tablet.user_id,
    )
    # A void of a payment that never reached the ledger is kept aside too.
    lost = m.PaymentVoid(seq=tablet.seq(), mutation_id=uuid.uuid4(), payment_id=uuid.uuid4(), reason="x")
    assert [(a.status, a.code) for a in (await push(client, tablet, [lost])).answers] == [
        ("quarantined", "unknown_payment")
    ]
    assert await register_tablet(client)  # a second tablet of the same collector registers fine meanwhile


async def test_a_qr_transfer_already_recorded_is_quarantined_not_recorded_twice(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """The same QR transfer recorded on the tablet and again (another receipt, another household)
    is one payment: the second waits for a reviewer as `channel_ref_clash`."""
    tablet = await world(client)
    first, second = household_create(tablet), household_create(tablet, numbers=(3,), household_no="0102")
    setup = [first, second, enrol(tablet, first), enrol(tablet, second)]
    assert [a.status for a in (await push(client, tablet, setup)).answers] == ["applied"] * 4
    paid = msgs_copy(payment(tablet, first, receipt=1), method="qr", channel_ref="WX-4200001")
    again = msgs_copy(payment(tablet, second, receipt=2), method="qr", channel_ref="WX-4200001")
    answer = await push(client, tablet, [paid, again])
    assert [(a.status, a.code) for a in answer.answers] == [("applied", None), ("quarantined", "channel_ref_clash")]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1
    assert await conn.fetchval("SELECT reason FROM sync_quarantine") == "channel_ref_clash"
