"""Enrolment: registration with a query code, the lifecycle, one live enrolment per person and year
(under a race too), coverage dates from the business date, the review queue, renewal, the quote."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor, Role, Scope
from backend.app import create_app
from backend.db import init_connection
from backend.enrollment import enrollments
from backend.enrollment.enrollments import AlreadyEnrolled, EnrollmentCreate, IllegalTransition
from mobile_sync_protocol.query_codes import query_code_hash
from tests.conftest import JWT_SECRET, auth_headers, make_settings
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
TODAY = date(2025, 10, 8)
KEY = JWT_SECRET.encode()


@pytest.fixture
async def household(client: Client) -> dict[str, Any]:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    return await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )


async def staff_actor(conn: asyncpg.Connection, username: str = "staff_a") -> Actor:  # type: ignore[type-arg]
    row = await conn.fetchrow("SELECT u.id, u.role, u.division_code FROM users u WHERE username = $1", username)
    return Actor(kind="user", id=row["id"], role=Role(row["role"]), scope=Scope(row["division_code"], "township"))


async def enrol_all(client: Client, household: dict[str, Any], year: int = 2026) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": year,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=await auth_headers(client, "staff_a"),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_enrolment_registers_and_gives_the_household_a_query_code_once(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    first = await enrol_all(client, {**household, "members": household["members"][:1]})
    assert [e["status"] for e in first["items"]] == ["registered"]
    assert first["items"][0]["premium_fen"] == 40000
    code = first["query_code"]
    assert len(code) == 8 and set(code) <= set("23456789ABCDEFGHJKMNPQRSTUVWXYZ")
    second = await enrol_all(client, {**household, "members": household["members"][1:]})
    assert second["query_code"] is None
    stored = await conn.fetchval("SELECT code_hash FROM household_query_codes")
    assert stored == query_code_hash(KEY, UUID(household["id"]), 2026, code)
    assert code.encode() not in stored


async def test_second_live_enrolment_for_the_year_is_a_409(client: Client, household: dict[str, Any]) -> None:
    await enrol_all(client, household)
    again = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [household["members"][1]["person_id"]],
        },
        headers=await auth_headers(client, "staff_a"),
    )
    assert again.status_code == 409
    assert again.json()["code"] == "already_enrolled"
    assert again.json()["errors"] == [{"field": "person_ids[0]", "message": "already enrolled for the year"}]


async def test_year_without_policy_is_refused(client: Client, household: dict[str, Any]) -> None:
    response = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2031,
            "person_ids": [household["members"][0]["person_id"]],
        },
        headers=await auth_headers(client, "staff_a"),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "coverage_year"


async def test_racing_enrolments_end_with_one_enrolment_and_one_conflict(
    db_dsn: str,
    client: Client,
    household: dict[str, Any],
) -> None:
    """Two connections, both inside their transactions past the duplicate check: the unique index
    `enrollments_one_live_per_person_year` is all that stands between them."""
    first, second = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    await init_connection(first)
    await init_connection(second)
    try:
        actor = await staff_actor(first)
        data = EnrollmentCreate(
            household_id=UUID(household["id"]),
            coverage_year=2026,
            person_ids=[UUID(household["members"][0]["person_id"])],
        )
        barrier = asyncio.Barrier(2)
        tx1, tx2 = first.transaction(), second.transaction()
        await tx1.start()
        await tx2.start()
        await asyncio.gather(barrier.wait(), barrier.wait())  # both transactions are open before either writes

        async def second_enrols() -> Exception | None:
            try:
                await enrollments.enrol(second, actor, data, TODAY, KEY)
                await tx2.commit()
            except AlreadyEnrolled as exc:
                await tx2.rollback()
                return exc
            return None

        await enrollments.enrol(first, actor, data, TODAY, KEY)  # inserted, not yet committed
        racer = asyncio.create_task(second_enrols())
        # Hold the first transaction open until the second is blocked on the index (or done).
        pid = second.get_server_pid()
        for _ in range(200):
            waiting = await first.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
            if waiting or racer.done():
                break
            await asyncio.sleep(0.01)
        await tx1.commit()
        outcome = await racer
        assert isinstance(outcome, AlreadyEnrolled)
        live = await first.fetchval("SELECT count(*) FROM enrollments WHERE status <> 'cancelled'")
        assert live == 1
    finally:
        await first.close()
        await second.close()


async def test_racing_http_enrolments_give_one_201_and_one_409(
    db_dsn: str, client: Client, household: dict[str, Any]
) -> None:
    headers = await auth_headers(client, "staff_a")
    body = {
        "household_id": household["id"],
        "coverage_year": 2026,
        "person_ids": [household["members"][0]["person_id"]],
    }
    # AsyncTestClient runs each request to completion in its own loop; an app driven in this
    # test's loop through an ASGI transport lets the requests truly overlap.
    racing_app = create_app(make_settings(db_dsn), configure_logs=False)
    transport = httpx.ASGITransport(app=racing_app)
    async with racing_app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        statuses = sorted(
            r.status_code
            for r in await asyncio.gather(
                *(http.post("/api/v1/enrollments", json=body, headers=headers) for _ in range(4))
            )
        )
    assert statuses == [201, 409, 409, 409]


async def test_lifecycle_transitions_and_illegal_ones(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    await add_history(conn, ID_NUMBERS[1], 2025)
    created = await enrol_all(client, household)
    paid_id, subsidised_id = (UUID(e["id"]) for e in created["items"])
    actor = await staff_actor(conn)
    async with conn.transaction():
        paid = await enrollments.mark_paid(conn, actor, paid_id, date(2025, 10, 8))
        subsidised = await enrollments.mark_subsidised(conn, actor, subsidised_id)
    assert (paid.status, paid.funding, paid.coverage_start, paid.coverage_end) == (
        "paid",
        "paid",
        date(2026, 1, 1),
        date(2026, 12, 31),
    )
    assert (subsidised.status, subsidised.subsidy_fen) == ("subsidised", 40000)
    with pytest.raises(IllegalTransition):
        async with conn.transaction():
            await enrollments.mark_paid(conn, actor, paid_id, date(2025, 10, 9))
    reviewer = await auth_headers(client, "reviewer_a")
    confirmed = await client.post("/api/v1/enrollments/confirm", json={"ids": [str(paid_id)]}, headers=reviewer)
    assert [e["status"] for e in confirmed.json()["items"]] == ["confirmed"]
    cancelled = await client.post(
        f"/api/v1/enrollments/{subsidised_id}/cancel", json={"reason": "duplicate"}, headers=reviewer
    )
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == ("cancelled", "duplicate")
    twice = await client.post(
        f"/api/v1/enrollments/{subsidised_id}/cancel", json={"reason": "duplicate"}, headers=reviewer
    )
    assert twice.status_code == 409
    assert twice.json()["code"] == "illegal_transition"
    actions = [
        r["action"] for r in await conn.fetch("SELECT action FROM audit_log WHERE entity = 'enrollment' ORDER BY id")
    ]
    assert actions == ["enrol", "enrol", "paid", "subsidised", "confirm", "cancel"]


async def test_bulk_confirm_is_all_or_nothing_and_for_reviewers(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    created = await enrol_all(client, household)
    ids = [e["id"] for e in created["items"]]
    async with conn.transaction():
        await enrollments.mark_paid(conn, await staff_actor(conn), UUID(ids[0]), date(2025, 10, 8))
    staff = await auth_headers(client, "staff_a")
    assert (await client.post("/api/v1/enrollments/confirm", json={"ids": ids}, headers=staff)).status_code == 403
    reviewer = await auth_headers(client, "reviewer_a")
    refused = await client.post("/api/v1/enrollments/confirm", json={"ids": ids}, headers=reviewer)
    assert refused.status_code == 409
    assert refused.json()["enrollment_ids"] == [ids[1]]
    statuses = {str(r["id"]): r["status"] for r in await conn.fetch("SELECT id, status FROM enrollments")}
    assert statuses == {ids[0]: "paid", ids[1]: "registered"}
    other_reviewer = await auth_headers(client, "reviewer_b")
    hidden = await client.post("/api/v1/enrollments/confirm", json={"ids": ids[:1]}, headers=other_reviewer)
    assert hidden.status_code == 404


async def test_review_queue_filters_by_status(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    created = await enrol_all(client, household)
    async with conn.transaction():
        await enrollments.mark_paid(conn, await staff_actor(conn), UUID(created["items"][1]["id"]), date(2025, 10, 8))
    reviewer = await auth_headers(client, "reviewer_a")
    queue = await client.get("/api/v1/enrollments", params={"year": 2026, "status": "paid"}, headers=reviewer)
    assert [e["id"] for e in queue.json()["items"]] == [created["items"][1]["id"]]
    everything = await client.get("/api/v1/enrollments", params={"year": 2026, "limit": 1}, headers=reviewer)
    assert everything.json()["next_cursor"] is not None


@pytest.mark.parametrize(
    ("business_date", "history", "start", "reason", "waiting"),
    [
        # Paid inside the window (1 Sep – 31 Dec 2025): the whole of 2026.
        (date(2025, 12, 31), [(2025, "paid")], date(2026, 1, 1), "in_window", None),
        # Paid late, no gap: 3 months from the payment date.
        (date(2026, 3, 15), [(2025, "paid")], date(2026, 6, 15), "waiting_period", 3),
        # In the window, covered in 2024 and known uncovered in 2025 (the old system cancelled it):
        # a gap of 2025 → 3 + 1 months from 1 January.
        (date(2025, 11, 1), [(2024, "paid"), (2025, "cancelled")], date(2026, 5, 1), "waiting_period", 4),
        # In the window, covered in 2024, nothing known of 2025: unknown is not a gap.
        (date(2025, 11, 1), [(2024, "paid")], date(2026, 1, 1), "in_window", None),
    ],
)
async def test_coverage_follows_the_business_date_and_history(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
    business_date: date,
    history: list[tuple[int, str]],
    start: date,
    reason: str,
    waiting: int | None,
) -> None:
    for year, status in history:
        await add_history(conn, ID_NUMBERS[1], year, status)
    created = await enrol_all(client, {**household, "members": household["members"][:1]})
    async with conn.transaction():
        paid = await enrollments.mark_paid(
            conn, await staff_actor(conn), UUID(created["items"][0]["id"]), business_date
        )
    assert (paid.coverage_start, paid.coverage_end, paid.coverage_reason) == (start, date(2026, 12, 31), reason)
    assert paid.waiting_months == (waiting or 0)
    assert paid.coverage_note


async def test_renewal_lists_last_years_members_and_enrols_them(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    admin = await auth_headers(client, "admin")
    await publish_policy(
        client, admin, year=2027, effective_from="2026-09-01", window_start="2026-09-01", window_end="2026-12-31"
    )
    await enrol_all(client, {**household, "members": household["members"][:1]})
    staff = await auth_headers(client, "staff_a")
    roster = await client.get("/api/v1/renewals", params={"year": 2027}, headers=staff)
    assert [c["person_id"] for c in roster.json()["items"]] == [household["members"][0]["person_id"]]
    renewed = await client.post(
        "/api/v1/renewals",
        json={"coverage_year": 2027, "person_ids": [household["members"][0]["person_id"]]},
        headers=staff,
    )
    assert renewed.status_code == 201, renewed.text
    assert [e["coverage_year"] for e in renewed.json()["items"]] == [2027]
    assert list(renewed.json()["query_codes"]) == [household["id"]]
    empty = await client.get("/api/v1/renewals", params={"year": 2027}, headers=staff)
    assert empty.json()["items"] == []


async def test_premium_quote_per_member_and_household(client: Client, household: dict[str, Any]) -> None:
    await enrol_all(client, {**household, "members": household["members"][:1]})
    staff = await auth_headers(client, "staff_a")
    quote = await client.get(f"/api/v1/households/{household['id']}/premium", params={"year": 2026}, headers=staff)
    assert quote.status_code == 200, quote.text
    body = quote.json()
    assert [(m["status"], m["premium_fen"], m["due_fen"], m["balance_fen"]) for m in body["members"]] == [
        ("registered", 40000, 40000, 40000),
        (None, 40000, 40000, 40000),
    ]
    # The household owes for its enrolled member only; the other is quoted for information.
    assert (body["premium_fen"], body["subsidy_fen"], body["due_fen"], body["balance_fen"]) == (40000, 0, 40000, 40000)


async def test_enrolment_and_cover_take_the_version_in_force_that_day(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Enrolment (with the household) and cover (with the persons' facts) read the version in force
    themselves: the one `policy.in_force` picks, before the first version, between versions and after
    the last."""
    from backend.policy import service as policy

    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin, effective_from="2025-09-01", premium_fen=40000)
    await publish_policy(client, admin, effective_from="2025-11-01", premium_fen=42000)
    await publish_policy(client, admin, effective_from="2025-10-01", premium_fen=41000)
    staff = await auth_headers(client, "staff_a")
    actor = await staff_actor(conn)
    for n, day in enumerate((date(2025, 8, 1), date(2025, 9, 30), date(2025, 10, 15), date(2026, 2, 1))):
        household = await create_household(client, staff, [member(ID_NUMBERS[n + 1], "张三")], household_no=str(n))
        data = EnrollmentCreate(
            household_id=UUID(household["id"]), coverage_year=2026, person_ids=[household["members"][0]["person_id"]]
        )
        async with conn.transaction():
            enrolled = await enrollments.enrol(conn, actor, data, day, KEY)
        expected = await policy.in_force(conn, 2026, day)
        assert expected is not None
        assert (enrolled.items[0].policy_version_id, enrolled.items[0].premium_fen) == (
            expected.id,
            expected.premium_fen,
        ), day
        # Cover paid for that day is computed under the same version.
        inputs = await enrollments.coverage_inputs(conn, [(enrolled.items[0].person_id, 2026)], day)
        assert inputs.in_force[2026] == expected, day


async def test_a_top_up_for_everyone_lowers_the_amount_due_at_registration(client: Client) -> None:
    """No list and no claim names the person: a district top-up without categories still applies."""
    rules = {"top_ups": [{"code": "district_all", "rule": {"type": "fixed", "amount_fen": 5000}}]}
    await publish_policy(client, await auth_headers(client, "admin"), rules=rules)
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    enrolled = await enrol_all(client, household)
    assert [(e["status"], e["subsidy_fen"]) for e in enrolled["items"]] == [("registered", 5000)]


async def test_an_accepted_claim_counts_at_registration_like_a_list_row(client: Client) -> None:
    admin, staff, civil = [await auth_headers(client, u) for u in ("admin", "staff_a", "civil")]
    await publish_policy(client, admin)
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    claim = {"person_id": household["members"][0]["person_id"], "coverage_year": 2026, "category": "di_bao"}
    raised = await client.post("/api/v1/eligibility/claims", json=claim, headers=staff)
    assert raised.status_code == 201, raised.text
    accepted = await client.post(f"/api/v1/eligibility/claims/{raised.json()['id']}/accept", json={}, headers=civil)
    assert accepted.status_code == 200, accepted.text
    enrolled = await enrol_all(client, household)
    assert [(e["status"], e["subsidy_fen"]) for e in enrolled["items"]] == [("registered", 20000)]


async def test_each_enrolment_is_audited_with_its_registration(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    enrolled = await enrol_all(client, household)
    rows = await conn.fetch(
        "SELECT entity_id, division_code, summary FROM audit_log WHERE action = 'enrol' ORDER BY id"
    )
    assert [(r["entity_id"], r["division_code"], r["summary"]) for r in rows] == [
        (e["id"], "330106001001", {"person_id": e["person_id"], "year": 2026, "status": "registered"})
        for e in enrolled["items"]
    ]


async def test_household_created_and_enrolled_in_one_request(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    from tests.eligibility.test_check import csv
    from tests.eligibility.test_lists import upload

    await publish_policy(client, await auth_headers(client, "admin"))
    await upload(client, await auth_headers(client, "civil"), csv(f"{ID_NUMBERS[2]},李四,,"), list_type="te_kun")
    staff = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        json={
            "village_code": "330106001001",
            "household_no": "0001",
            "enrol_year": 2026,
            "members": [member(ID_NUMBERS[2], "李四", "spouse"), member(ID_NUMBERS[1], "张三")],
        },
        headers=staff,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["etag"] == f'"{body["row_version"]}"'
    # The same rules as POST /api/v1/enrollments: the te_kun member is subsidised in full.
    statuses = {m["id_number"]: m["enrollment"]["status"] for m in body["members"]}
    assert statuses == {ID_NUMBERS[1]: "registered", ID_NUMBERS[2]: "subsidised"}
    stored = await conn.fetch(
        "SELECT person_id, status, premium_fen, subsidy_fen FROM enrollments WHERE household_id = $1 ORDER BY status",
        UUID(body["id"]),
    )
    assert [(r["status"], r["premium_fen"], r["subsidy_fen"]) for r in stored] == [
        ("registered", 40000, 0),
        ("subsidised", 40000, 40000),
    ]
    code = body["query_code"]
    assert await conn.fetchval("SELECT code_hash FROM household_query_codes") == query_code_hash(
        KEY, UUID(body["id"]), 2026, code
    )
    actions = await conn.fetch("SELECT action, entity FROM audit_log WHERE entity IN ('household', 'enrollment')")
    assert sorted((a["action"], a["entity"]) for a in actions) == [
        ("create", "household"),
        ("enrol", "enrollment"),
        ("enrol", "enrollment"),
        ("subsidised", "enrollment"),
    ]
    # Without enrol_year nobody is enrolled and there is no code.
    plain = await create_household(client, staff, [member(ID_NUMBERS[3], "王五")], household_no="0002")
    assert "query_code" not in plain and plain["members"][0]["enrollment"] is None


@pytest.mark.parametrize(
    ("enrol_year", "status", "code", "field"),
    [
        (2026, 409, "on_exclusion_list", "members[0]"),  # the excluded one is the first entered, not the head
        (2031, 422, "validation_error", "enrol_year"),
    ],
)
async def test_a_refused_enrolment_fails_the_whole_registration_and_names_the_member(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    enrol_year: int,
    status: int,
    code: str,
    field: str,
) -> None:
    from tests.eligibility.test_check import csv
    from tests.eligibility.test_lists import upload

    await publish_policy(client, await auth_headers(client, "admin"))
    await upload(
        client, await auth_headers(client, "civil"), csv(f"{ID_NUMBERS[2]},李四,,"), list_type="employee_insurance"
    )
    response = await client.post(
        "/api/v1/households",
        json={
            "village_code": "330106001001",
            "household_no": "0001",
            "enrol_year": enrol_year,
            "members": [member(ID_NUMBERS[2], "李四", "spouse"), member(ID_NUMBERS[1], "张三")],
        },
        headers=await auth_headers(client, "staff_a"),
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["code"], body["errors"][0]["field"]) == (code, field)
    assert ID_NUMBERS[2] not in response.text
    for table in ("households", "persons", "memberships", "enrollments", "household_query_codes"):
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_a_person_enrolled_elsewhere_this_year_is_named_as_the_member(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    """Someone who left a household keeps the year's enrolment once it is paid (an unpaid one is
    cancelled by the removal): registering them in a new household with `enrol_year` is a 409 naming
    them as entered (`members[1]`), and writes nothing."""
    staff = await auth_headers(client, "staff_a")
    enrolled = await enrol_all(client, household)
    spouse = household["members"][1]["person_id"]
    (paid,) = [e["id"] for e in enrolled["items"] if e["person_id"] == spouse]
    await enrollments.mark_paid(conn, None, UUID(paid), TODAY)
    removed = await client.post(
        f"/api/v1/households/{household['id']}/members/{spouse}/remove",
        json={"reason": "removed"},
        headers={**staff, "If-Match": f'"{household["row_version"]}"'},
    )
    assert removed.status_code == 200, removed.text
    households_before = await conn.fetchval("SELECT count(*) FROM households")
    response = await client.post(
        "/api/v1/households",
        json={
            "village_code": "330106001002",
            "household_no": "0002",
            "enrol_year": 2026,
            "members": [member(ID_NUMBERS[3], "王五"), member(ID_NUMBERS[2], "李四", "spouse")],
        },
        headers=staff,
    )
    assert response.status_code == 409, response.text
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == ("already_enrolled", "members[1]")
    assert await conn.fetchval("SELECT count(*) FROM households") == households_before


async def test_an_idempotency_key_replays_the_registration_and_its_query_code(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """A retry after a lost answer gets the first answer (the query code is shown only there)."""
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = {**await auth_headers(client, "staff_a"), "Idempotency-Key": "door-visit-0001"}
    body = {
        "village_code": "330106001001",
        "household_no": "0001",
        "enrol_year": 2026,
        "members": [member(ID_NUMBERS[1], "张三")],
    }
    first = await client.post("/api/v1/households", json=body, headers=staff)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/api/v1/households", json=body, headers=staff)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and first.json()["query_code"]
    assert await conn.fetchval("SELECT count(*) FROM households") == 1
    other = await client.post("/api/v1/households", json={**body, "household_no": "0002"}, headers=staff)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    short = await client.post("/api/v1/households", json=body, headers={**staff, "Idempotency-Key": "x"})
    assert (short.status_code, short.json()["errors"][0]["field"]) == (422, "Idempotency-Key")


async def test_new_students_are_refused_under_a_policy_without_the_rule(
    client: Client,
    household: dict[str, Any],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    response = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [household["members"][0]["person_id"]],
            "new_student": True,
        },
        headers=await auth_headers(client, "staff_a"),
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "new_student"
    assert "no rule for new university students" in error["message"]
    assert await conn.fetchval("SELECT count(*) FROM enrollments") == 0
