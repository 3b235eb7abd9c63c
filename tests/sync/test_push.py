"""Push: exactly once per device sequence, answers replayed, gaps and bad mutations never block,
concurrent pushes of one tablet apply nothing twice, authorization against current state."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date

import asyncpg
import httpx
import msgspec
from litestar import Litestar

from backend import metrics
from mobile_sync_protocol import messages as m
from tests.conftest import make_settings
from tests.factories import ID_NUMBERS
from tests.sync_world import (
    Client,
    Tablet,
    clear,
    envelope,
    household_create,
    push,
    push_raw,
    register_tablet,
    world,
)


async def counts(conn: asyncpg.Connection) -> tuple[int, int, int]:  # type: ignore[type-arg]
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM households) AS h, (SELECT count(*) FROM persons) AS p, "
        "(SELECT count(*) FROM sync_mutations) AS l"
    )
    assert row is not None
    return row["h"], row["p"], row["l"]


async def test_a_household_pushed_from_a_tablet_is_created_with_its_members(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2, 3))
    answer = await push(client, tablet, [created])
    assert answer.last_seq == 1
    assert [(a.seq, a.status, a.household_version) for a in answer.answers] == [(1, "applied", 1)]
    row = await conn.fetchrow("SELECT household_no, created_by FROM households WHERE id = $1", created.household_id)
    assert row is not None and row["household_no"] == "0101" and row["created_by"] == tablet.user_id
    members = await conn.fetchval("SELECT count(*) FROM memberships WHERE household_id = $1", created.household_id)
    assert members == 3
    audit = await conn.fetchval(
        "SELECT device_id FROM audit_log WHERE action = 'create' AND entity = 'household' AND entity_id = $1",
        str(created.household_id),
    )
    assert audit == tablet.device_id


async def test_a_push_whose_answer_was_lost_is_retried_and_changes_nothing(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    batch = [household_create(tablet), household_create(tablet, numbers=(3,), household_no="0102")]
    body = envelope(tablet, batch)
    lost = await push_raw(client, tablet, body)  # committed; the tablet never reads the answer
    assert lost.status_code == 200
    before = await counts(conn)
    retried = msgspec.json.decode((await push_raw(client, tablet, body)).content, type=m.PushResponse)
    assert await counts(conn) == before == (2, 3, 2)
    first = msgspec.json.decode(lost.content, type=m.PushResponse).answers
    assert [a.status for a in retried.answers] == ["duplicate", "duplicate"]
    assert [a.first for a in retried.answers] == first
    assert retried.last_seq == 2
    # Any part of the batch, again: the same.
    again = await push(client, tablet, batch[1:])
    assert [(a.seq, a.status) for a in again.answers] == [(2, "duplicate")]


async def test_a_sequence_gap_is_not_applied_and_names_the_expected_seq(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    await push(client, tablet, [household_create(tablet)])
    tablet.seq()  # seq 2 is lost on the tablet side
    skipped = household_create(tablet, numbers=(3,), household_no="0102")
    answer = await push(client, tablet, [skipped])
    assert [(a.seq, a.status, a.code, a.expected_seq) for a in answer.answers] == [(3, "not_applied", "seq_gap", 2)]
    assert answer.last_seq == 1
    assert await conn.fetchval("SELECT count(*) FROM households WHERE id = $1", skipped.household_id) == 0


async def test_a_seq_reused_for_another_mutation_is_not_applied(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    await push(client, tablet, [household_create(tablet)])
    tablet.next_seq = 1  # a restored backup reuses its numbers
    other = household_create(tablet, numbers=(3,), household_no="0102")
    answer = await push(client, tablet, [other])
    assert [(a.status, a.code, a.expected_seq) for a in answer.answers] == [("not_applied", "seq_reused", 2)]
    assert await conn.fetchval("SELECT count(*) FROM households WHERE id = $1", other.household_id) == 0


async def test_an_unknown_or_bad_mutation_in_the_middle_gets_its_own_answer(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    first = household_create(tablet)
    unknown = {"type": "household.teleport", "seq": tablet.seq(), "mutation_id": str(uuid.uuid4())}
    bad_village = household_create(tablet, numbers=(3,), household_no="0102", village_code="330106002201")
    last = household_create(tablet, numbers=(4,), household_no="0103")
    answer = await push(client, tablet, [first, unknown, bad_village, last])
    assert [(a.seq, a.status, a.code) for a in answer.answers] == [
        (1, "applied", None),
        (2, "rejected", "unknown_mutation"),
        (3, "rejected", "validation_error"),  # township B's village: not in staff_a's scope
        (4, "applied", None),
    ]
    assert answer.last_seq == 4
    assert await counts(conn) == (2, 3, 4)
    ledger = await conn.fetch("SELECT seq, kind, status FROM sync_mutations ORDER BY seq")
    assert [(r["seq"], r["kind"], r["status"]) for r in ledger] == [
        (1, "household.create", "applied"),
        (2, "household.teleport", "rejected"),
        (3, "household.create", "rejected"),
        (4, "household.create", "applied"),
    ]


async def test_a_household_of_another_township_is_not_found_when_the_mutation_is_applied(client: Client) -> None:
    tablet_b = await world(client, "staff_b")
    created = household_create(tablet_b, village_code="330106002201", household_no="0201")
    assert (await push(client, tablet_b, [created])).answers[0].status == "applied"
    tablet_a = await register_tablet(client, "staff_a")
    edit = m.HouseholdUpdate(
        seq=tablet_a.seq(), mutation_id=uuid.uuid4(), household_id=created.household_id, base_version=1, address="改"
    )
    answer = await push(client, tablet_a, [edit])
    assert [(a.status, a.code) for a in answer.answers] == [("rejected", "not_found")]


async def test_members_edited_moved_and_removed_through_sync(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    first = household_create(tablet, numbers=(1, 2, 3))
    second = household_create(tablet, numbers=(4,), household_no="0102")
    await push(client, tablet, [first, second])
    spouse, child = first.members[1].person_id, first.members[2].person_id
    newborn = m.NewMember(
        person_id=uuid.uuid4(),
        name="新生儿",
        relation="child",
        birth_cert_no="A123456789",
        birth_date=date(2025, 6, 1),
        sex="female",
    )
    mutations = [
        m.MemberUpdate(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=first.household_id,
            person_id=spouse,
            base_version=1,
            phone="13900000002",
        ),
        m.MemberCreate(
            seq=tablet.seq(), mutation_id=uuid.uuid4(), household_id=first.household_id, base_version=2, member=newborn
        ),
        m.MemberMove(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=first.household_id,
            person_id=child,
            base_version=3,
            to_household_id=second.household_id,
            relation="other",
        ),
        m.MemberRemove(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=first.household_id,
            person_id=spouse,
            base_version=4,
            reason="deceased",
        ),
        m.HouseholdDissolve(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=second.household_id,
            base_version=2,
            reason="data_error",
        ),
    ]
    answer = await push(client, tablet, mutations)
    assert [(a.status, a.household_version) for a in answer.answers] == [
        ("applied", 2),
        ("applied", 3),
        ("applied", 4),
        ("applied", 5),
        ("applied", 4),  # the second household: moved into (2), then two members left (3, 4)
    ]
    current = await conn.fetch(
        "SELECT p.name FROM memberships ms JOIN persons p ON p.id = ms.person_id "
        "WHERE ms.household_id = $1 AND ms.left_at IS NULL ORDER BY p.name",
        first.household_id,
    )
    assert [r["name"] for r in current] == ["成员1", "新生儿"]
    assert await conn.fetchval("SELECT status FROM households WHERE id = $1", second.household_id) == "dissolved"


async def test_enrolment_created_and_cancelled_through_sync(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    enrol = m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        coverage_year=2026,
        person_ids=[x.person_id for x in created.members],
    )
    cancel = m.EnrollmentCancel(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        person_id=created.members[1].person_id,
        coverage_year=2026,
        reason="employee_insurance",
    )
    answer = await push(client, tablet, [created, enrol, cancel])
    assert [a.status for a in answer.answers] == ["applied", "applied", "applied"]
    rows = await conn.fetch("SELECT person_id, status FROM enrollments ORDER BY status")
    assert [(r["person_id"], r["status"]) for r in rows] == [
        (created.members[1].person_id, "cancelled"),
        (created.members[0].person_id, "registered"),
    ]


async def test_the_same_batch_pushed_twice_at_once_applies_nothing_twice(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    db_dsn: str,
) -> None:
    tablet = await world(client)
    body = envelope(tablet, [household_create(tablet), household_create(tablet, numbers=(3,), household_no="0102")])
    # A push that holds the device's ledger row: the second push of the same tablet is a 409 at once.
    holder = await asyncpg.connect(db_dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM sync_devices WHERE device_id = $1 FOR UPDATE", tablet.device_id)
            blocked = await push_raw(client, tablet, body)
            assert blocked.status_code == 409, blocked.text
            assert blocked.json()["code"] == "push_in_progress"
    finally:
        await holder.close()
    assert await counts(conn) == (0, 0, 0)
    # Truly concurrent requests through a second app: one applies, the other is refused or replays.
    from backend.app import create_app

    racing_app: Litestar = create_app(make_settings(db_dsn), configure_logs=False)
    transport = httpx.ASGITransport(app=racing_app)
    async with racing_app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first, second = await asyncio.gather(push_raw(http, tablet, body), push_raw(http, tablet, body))
    outcomes = sorted([first, second], key=lambda r: r.status_code)
    assert outcomes[0].status_code == 200, outcomes[0].text
    applied = msgspec.json.decode(outcomes[0].content, type=m.PushResponse)
    if outcomes[1].status_code == 409:
        assert [a.status for a in applied.answers] == ["applied", "applied"]
    else:  # the second ran after the first committed: it replays
        replay = msgspec.json.decode(outcomes[1].content, type=m.PushResponse)
        assert sorted(a.status for a in applied.answers + replay.answers) == [
            "applied",
            "applied",
            "duplicate",
            "duplicate",
        ]
    assert await counts(conn) == (2, 3, 2)


async def test_a_token_without_a_device_or_for_another_device_cannot_push(client: Client) -> None:
    from tests.conftest import auth_headers

    tablet = await world(client)
    plain = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/sync/push", content=envelope(tablet, []), headers={**plain, "Content-Type": m.JSON}
    )
    assert response.status_code == 403 and response.json()["code"] == "device_required", response.text
    other = await register_tablet(client, "staff_a")
    other.headers = tablet.headers  # the body names a device the token is not bound to
    response = await push_raw(client, other, envelope(other, []))
    assert response.status_code == 403 and response.json()["code"] == "device_mismatch", response.text
    assert ID_NUMBERS  # the factories module is the source of the identities used above


def phone_edits(tablet: Tablet, household_id: uuid.UUID, count: int, *, failing: set[int], phone: str) -> list[object]:
    """`count` edits of the household's phone in seq order, each at the version the one before left
    (the household is at version 1), except at the positions in `failing`: a member edit naming
    nobody of the household, refused `not_found`, which changes no version."""
    edits: list[object] = []
    version = 1
    for i in range(count):
        if i in failing:
            edits.append(
                m.MemberUpdate(
                    seq=tablet.seq(),
                    mutation_id=uuid.uuid4(),
                    household_id=household_id,
                    person_id=uuid.uuid4(),
                    base_version=version,
                    name="改名",
                )
            )
            continue
        edits.append(
            m.HouseholdUpdate(
                seq=tablet.seq(),
                mutation_id=uuid.uuid4(),
                household_id=household_id,
                base_version=version,
                phone=f"{phone}{i:04d}",
            )
        )
        version += 1
    return edits


async def test_a_failure_inside_a_large_batch_undoes_only_that_mutation(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    # 60 edits pass the fast path's chunk of 50; the 30th names nobody in the household and fails,
    # so its chunk is undone; the 29 before it are applied again on the fast path, the failing one
    # alone under its savepoint, and the fast path resumes after it: everything else exactly once,
    # and only one mutation applied one by one.
    tablet = await world(client)
    one_by_one = metrics.SYNC_ONE_BY_ONE._value.get()
    created = household_create(tablet, numbers=(1,))
    edits = phone_edits(tablet, created.household_id, 60, failing={29}, phone="1380000")
    answer = await push(client, tablet, [created, *edits])
    statuses = [a.status for a in answer.answers]
    assert statuses.count("applied") == 60 and answer.answers[30].code == "not_found"
    assert answer.last_seq == 61
    household = clear(await conn.fetchrow("SELECT row_version, phone_enc FROM households"))
    assert (household["row_version"], household["phone"]) == (60, "13800000059")
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'update' AND entity = 'household'") == 59
    assert await conn.fetchval("SELECT count(*) FROM sync_mutations") == 61
    assert metrics.SYNC_ONE_BY_ONE._value.get() - one_by_one == 1


async def test_a_chunk_that_keeps_failing_goes_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """After RESUMES + 1 failures in one chunk, the rest of it is applied one by one: every answer
    is the same as on the fast path, each failure is its own."""
    tablet = await world(client)
    created = household_create(tablet, numbers=(1,))
    one_by_one = metrics.SYNC_ONE_BY_ONE._value.get()
    edits = phone_edits(tablet, created.household_id, 20, failing={1, 5, 9, 13, 17}, phone="1390000")
    answer = await push(client, tablet, [created, *edits])
    codes = [a.code for a in answer.answers[1:]]
    assert codes == ["not_found" if i % 4 == 1 else None for i in range(20)], codes
    assert [a.status for a in answer.answers].count("applied") == 16 and answer.last_seq == 21
    household = clear(await conn.fetchrow("SELECT row_version, phone_enc FROM households"))
    assert (household["row_version"], household["phone"]) == (16, "13900000019")
    # Failures at 2 and 6 (positions in the chunk, the household first) each alone; the third, at
    # 10, fails the fast attempt from 7 on, and from there the chunk goes one by one (14 mutations).
    assert metrics.SYNC_ONE_BY_ONE._value.get() - one_by_one == 2 + 14


async def test_generic_plans_stay_inside_the_push_transaction(client: Client, app: Litestar) -> None:
    """A push plans its statements generically (`plan_cache_mode`, set for its transaction only):
    every pooled connection is back to the server's default for the next request."""
    tablet = await world(client)
    answer = await push(client, tablet, [household_create(tablet)])
    assert [a.status for a in answer.answers] == ["applied"]
    pool = app.state.pool

    async def modes() -> set[str]:
        held = [await pool.acquire() for _ in range(pool.get_size())]
        try:
            return {await c.fetchval("SHOW plan_cache_mode") for c in held}
        finally:
            for c in held:
                await pool.release(c)

    assert client.blocking_portal is not None
    assert client.blocking_portal.call(modes) == {"auto"}  # the pool lives on the app's event loop
