"""Residents: login with ID number, name and query code that tells nobody who exists, attempt limits
and lockout, tokens limited to one household, and every coverage state a resident can be in."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor
from backend.app import create_app
from backend.auth.tokens import SigningKey
from backend.enrollment import enrollments, households, quotes
from backend.errors import InvalidInput
from backend.premiums import adjustments, payments, receipts
from backend.premiums.adjustments import AdjustmentRequest, Decision
from backend.premiums.payments import PaymentIn
from backend.residents import service as residents
from mobile_sync_protocol.rules.coverage_state import coverage_state
from tests.conftest import JWT_SECRET, auth_headers, make_settings
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy
from tests.premiums.test_payments import actor_of

Client = AsyncTestClient[Litestar]
KEY = SigningKey.from_secret(JWT_SECRET.encode())
LOGIN = "/api/v1/resident/login"
COVERAGE = "/api/v1/resident/coverage"
UNKNOWN_ID = ID_NUMBERS[5]  # valid, but nobody holds it


class Home:
    """Two households of township A enrolled for 2026: 张三 and 李四 (H1), 张小明 (H2)."""

    def __init__(self, h1: dict[str, Any], code1: str, h2: dict[str, Any], code2: str) -> None:
        self.h1, self.code1, self.h2, self.code2 = h1, code1, h2, code2


async def enrol(client: Client, headers: dict[str, str], household: dict[str, Any], person_ids: list[str]) -> Any:
    response = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": person_ids},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def make_home(client: Client) -> Home:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    h1 = await create_household(client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")])
    h2 = await create_household(client, staff, [member(ID_NUMBERS[3], "张小明")], household_no="0002")
    code1 = (await enrol(client, staff, h1, [m["person_id"] for m in h1["members"]]))["query_code"]
    code2 = (await enrol(client, staff, h2, [h2["members"][0]["person_id"]]))["query_code"]
    assert code1 and code2 and code1 != code2
    return Home(h1, code1, h2, code2)


@pytest.fixture(name="home")
async def home_fixture(client: Client) -> Home:
    return await make_home(client)


async def resident_login(client: Client, id_number: str, name: str, code: str) -> Any:
    return await client.post(LOGIN, json={"id_number": id_number, "name": name, "query_code": code})


async def resident_headers(client: Client, id_number: str, name: str, code: str) -> dict[str, str]:
    response = await resident_login(client, id_number, name, code)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def comparable(response: Any) -> tuple[int, dict[str, Any], str | None]:
    body = {k: v for k, v in response.json().items() if k not in ("instance", "request_id")}
    return response.status_code, body, response.headers.get("www-authenticate")


# Login -------------------------------------------------------------------------------------------


async def test_resident_logs_in_and_sees_their_household_with_masked_id_numbers(client: Client, home: Home) -> None:
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", home.code1)
    response = await client.get(COVERAGE, params={"year": 2026}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["household_id"] == home.h1["id"]
    assert [(m["name"], m["id_number_masked"]) for m in body["members"]] == [
        ("张三", "110105********0016"),
        ("李四", "110105********0026"),
    ]
    for number in (ID_NUMBERS[1], ID_NUMBERS[2], ID_NUMBERS[3]):
        assert number not in response.text
    assert "张小明" not in response.text and home.h2["id"] not in response.text


async def test_a_residents_own_read_is_audited_without_waiting_for_the_disk(
    client: Client,
    home: Home,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """The one write of a resident's read of their household, its audit row, commits without waiting
    for its WAL to be flushed (audit `insert_unflushed`); a staff member's read of the same household
    still waits (the SPEC's audit of reads)."""
    household_id = UUID(home.h1["id"])
    resident = Actor.resident(UUID(home.h1["members"][0]["person_id"]), household_id, uuid.uuid4())
    reads = "SELECT count(*) FROM audit_log WHERE entity = $1 AND entity_id = $2 AND action = 'read'"
    await conn.execute("SET synchronous_commit = on")  # as in production (the tests' server runs without)
    for read, entity, flushed in (
        (residents.coverage(conn, resident, 2026, date(2026, 3, 1)), "resident_coverage", "off"),
        (receipts.resident_payments(conn, resident, 2026), "resident_payments", "off"),
        (households.get_household(conn, await actor_of(conn, "staff_a"), household_id, 2026), "household", "on"),
    ):
        async with conn.transaction():
            await read
            assert await conn.fetchval("SHOW synchronous_commit") == flushed, entity
        assert await conn.fetchval(reads, entity, str(household_id)) == 1, entity
        assert await conn.fetchval("SHOW synchronous_commit") == "on"  # for this transaction only
    async with conn.transaction():  # a transaction that wrote before it waits, as any other
        await conn.execute("UPDATE households SET address = address WHERE id = $1", household_id)
        await residents.coverage(conn, resident, 2026, date(2026, 3, 1))
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    await conn.execute("RESET synchronous_commit")


async def test_code_is_read_without_regard_to_case_spaces_or_full_width(client: Client, home: Home) -> None:
    sloppy = " ".join(home.code1.lower()[i : i + 4] for i in (0, 4))
    assert (await resident_login(client, ID_NUMBERS[2], " 李 四 ", sloppy)).status_code == 200
    full_width_id = ID_NUMBERS[2].translate({ord(c): 0xFF10 + int(c) for c in "0123456789"})
    assert (await resident_login(client, full_width_id, "李四", home.code1)).status_code == 200


@pytest.mark.parametrize(
    "case",
    ["unknown_person", "wrong_name", "wrong_code", "code_of_another_household", "another_member_of_no_household"],
)
async def test_wrong_id_name_or_code_answers_exactly_like_an_unknown_person(
    client: Client, home: Home, case: str
) -> None:
    unknown = comparable(await resident_login(client, UNKNOWN_ID, "王五", home.code1))
    attempt = {
        "unknown_person": (ID_NUMBERS[6], "李四", home.code1),
        "wrong_name": (ID_NUMBERS[2], "李五", home.code1),
        "wrong_code": (ID_NUMBERS[2], "李四", "ABCDEFGH"),
        "code_of_another_household": (ID_NUMBERS[2], "李四", home.code2),
        "another_member_of_no_household": (ID_NUMBERS[3], "张小明", home.code1),
    }[case]
    assert comparable(await resident_login(client, *attempt)) == unknown
    assert unknown[0] == 401 and unknown[1]["code"] == "invalid_credentials"


async def test_a_malformed_id_number_is_refused_for_its_form_alone(client: Client, home: Home) -> None:
    response = await resident_login(client, ID_NUMBERS[2][:-1] + "9", "李四", home.code1)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "id_number"
    assert ID_NUMBERS[2][:-1] not in response.text


async def test_every_attempt_is_audited_without_personal_data(
    client: Client, conn: asyncpg.Connection, home: Home
) -> None:  # type: ignore[type-arg]
    await resident_login(client, UNKNOWN_ID, "王五", home.code1)
    await resident_login(client, ID_NUMBERS[2], "李四", "ABCDEFGH")
    await resident_login(client, ID_NUMBERS[2], "李四", home.code1)
    rows = await conn.fetch(
        "SELECT actor_kind, action, entity, entity_id, summary::text AS summary FROM audit_log "
        "WHERE entity IN ('resident_login', 'resident_session') ORDER BY id"
    )
    assert [(r["action"], r["actor_kind"]) for r in rows] == [
        ("resident_login_failed", "system"),
        ("resident_login_failed", "system"),
        ("login", "resident"),
    ]
    # A failure for an unknown person and one for a known person leave rows of the same shape.
    assert json.loads(rows[0]["summary"]).keys() == json.loads(rows[1]["summary"]).keys()
    assert rows[0]["entity_id"] is None and rows[1]["entity_id"] is None
    text = " ".join(str(dict(r)) for r in rows)
    for personal in (UNKNOWN_ID, ID_NUMBERS[2], "李四", "王五", home.code1, "ABCDEFGH"):
        assert personal not in text


# Attempt limits and lockout ----------------------------------------------------------------------


@pytest.fixture(name="strict")
async def strict_client(seeded: None, db_dsn: str) -> AsyncIterator[Client]:
    """Three failures per ID number in a window, eight per address, a lockout of 60 s."""
    settings = make_settings(
        db_dsn, resident_max_failures_per_id=3, resident_max_failures_per_address=8, resident_lockout_s=60
    )
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as test_client:
        yield test_client


async def test_failures_per_id_number_lock_it_out_even_for_the_right_code(
    strict: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    home = await make_home(strict)
    for _ in range(3):
        assert (await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")).status_code == 401
    locked = await resident_login(strict, ID_NUMBERS[2], "李四", home.code1)
    assert locked.status_code == 429 and locked.json()["code"] == "too_many_attempts"
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    # Another person's number is not affected; the lockout is per number.
    assert (await resident_login(strict, ID_NUMBERS[1], "张三", home.code1)).status_code == 200
    # The counts are kept under keyed hashes: no number, name or code in the table.
    keys = await conn.fetch("SELECT key FROM resident_login_limits")
    assert keys and all(len(r["key"]) == 32 and ID_NUMBERS[2].encode() not in r["key"] for r in keys)
    refused = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'resident_login_refused'")
    assert refused == 1


async def test_an_unknown_number_is_locked_out_after_the_same_count(strict: Client) -> None:
    home = await make_home(strict)
    answers = [(await resident_login(strict, UNKNOWN_ID, "王五", home.code1)).status_code for _ in range(4)]
    known = [(await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")).status_code for _ in range(4)]
    assert answers == known == [401, 401, 401, 429]


async def test_a_second_lockout_lasts_twice_as_long(strict: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    home = await make_home(strict)
    for _ in range(4):
        await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")
    await conn.execute(
        "UPDATE resident_login_limits SET locked_until = now() - interval '1 s', "
        "window_start = now() - interval '1 hour' WHERE lockouts = 1"
    )
    for _ in range(3):
        assert (await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")).status_code == 401
    again = await resident_login(strict, ID_NUMBERS[2], "李四", home.code1)
    assert again.status_code == 429
    assert 60 < int(again.headers["retry-after"]) <= 120


async def test_failures_per_client_address_are_limited_across_numbers(strict: Client) -> None:
    home = await make_home(strict)
    numbers = [ID_NUMBERS[i] for i in (5, 6, 7, 8)] * 2  # two tries each: under the per-number limit
    answers = [(await resident_login(strict, n, "王五", home.code1)).status_code for n in numbers]
    assert answers == [401] * 8
    assert (await resident_login(strict, ID_NUMBERS[2], "李四", home.code1)).status_code == 429


async def test_a_successful_login_clears_the_count_for_that_number(strict: Client) -> None:
    home = await make_home(strict)
    for _ in range(2):
        await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")
    assert (await resident_login(strict, ID_NUMBERS[2], "李四", home.code1)).status_code == 200
    answers = [(await resident_login(strict, ID_NUMBERS[2], "李四", "ABCDEFGH")).status_code for _ in range(3)]
    assert answers == [401, 401, 401]


# Tokens ------------------------------------------------------------------------------------------


def claims_of(headers: dict[str, str]) -> dict[str, Any]:
    token = headers["Authorization"].split()[1]
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def signed(claims: dict[str, Any], secret: str = JWT_SECRET, kid: str = KEY.kid) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})}


async def test_resident_token_is_short_lived_and_limited_to_resident_routes(client: Client, home: Home) -> None:
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", home.code1)
    claims = claims_of(headers)
    assert (claims["act"], claims["scope"]) == ("resident", "resident")
    assert claims["exp"] - claims["iat"] == 600
    staff_route = await client.get(f"/api/v1/households/{home.h1['id']}", headers=headers)
    assert staff_route.status_code == 403
    assert (await client.get("/api/v1/policy-years", headers=headers)).status_code == 403
    staff = await auth_headers(client, "staff_a")
    assert (await client.get(COVERAGE, headers=staff)).status_code == 403


@pytest.mark.parametrize("flaw", ["expired", "wrong_key", "staff_act", "no_scope", "other_session", "fhir_scope"])
async def test_expired_or_forged_resident_tokens_are_401(client: Client, home: Home, flaw: str) -> None:
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", home.code1)
    other = claims_of(await resident_headers(client, ID_NUMBERS[3], "张小明", home.code2))
    claims = claims_of(headers)
    now = int(time.time())
    assert (await client.get(COVERAGE, headers=signed(dict(claims, iat=now, exp=now + 60)))).status_code == 200
    bad = {
        "expired": signed(dict(claims, iat=now - 700, exp=now - 100)),
        "wrong_key": signed(claims, secret="another-secret-" + "y" * 40),
        "staff_act": signed(dict(claims, act="user", scope=None)),
        "no_scope": signed({k: v for k, v in claims.items() if k != "scope"}),
        "other_session": signed(dict(claims, sid=other["sid"])),
        "fhir_scope": signed(dict(claims, scope="fhir")),
    }[flaw]
    response = await client.get(COVERAGE, headers=bad)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_token"


async def test_logout_and_leaving_the_household_end_the_token(client: Client, home: Home) -> None:
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", home.code1)
    assert (await client.post("/api/v1/resident/logout", headers=headers)).status_code == 204
    assert (await client.get(COVERAGE, headers=headers)).status_code == 401
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", home.code1)
    staff = await auth_headers(client, "staff_a")
    moved = await client.post(
        f"/api/v1/households/{home.h1['id']}/members/{home.h1['members'][1]['person_id']}/move",
        json={"to_household_id": home.h2["id"], "relation": "spouse"},
        headers={**staff, "If-Match": f'"{home.h1["row_version"]}"'},
    )
    assert moved.status_code == 200, moved.text
    assert (await client.get(COVERAGE, headers=headers)).status_code == 401
    # In the new household, the old household's code no longer opens anything.
    assert (await resident_login(client, ID_NUMBERS[2], "李四", home.code1)).status_code == 401
    assert (await resident_login(client, ID_NUMBERS[2], "李四", home.code2)).status_code == 200


async def test_a_subsidised_resident_who_never_paid_logs_in(client: Client) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    listed = await upload(
        client, await auth_headers(client, "civil"), csv(f"{ID_NUMBERS[1]},张三,,"), list_type="te_kun"
    )
    assert listed.status_code == 201, listed.text
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    code = (await enrol(client, staff, household, [household["members"][0]["person_id"]]))["query_code"]
    headers = await resident_headers(client, ID_NUMBERS[1], "张三", code)
    body = (await client.get(COVERAGE, params={"year": 2026}, headers=headers)).json()
    (only,) = body["members"]
    assert (only["enrollment_status"], only["subsidy_categories"]) == ("subsidised", ["te_kun"])
    assert (only["premium_fen"], only["subsidy_fen"], only["paid_fen"], only["balance_fen"]) == (40000, 40000, 0, 0)
    assert (body["balance_fen"], body["refund_due_fen"], body["last_receipt_no"]) == (0, 0, None)


# Coverage states ---------------------------------------------------------------------------------


async def test_every_coverage_state_a_resident_can_be_in(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    """One household, one member per state, seen on 2026-03-01."""
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    ids = {
        "window": ID_NUMBERS[1],
        "review": ID_NUMBERS[2],
        "waiting": ID_NUMBERS[3],
        "too_late": ID_NUMBERS[4],
        "unpaid": ID_NUMBERS[5],
        "cancelled": ID_NUMBERS[6],
        "absent": ID_NUMBERS[7],
    }
    members = [member(number, f"成员{i}", "head" if i == 0 else "child") for i, number in enumerate(ids.values())]
    members.append(
        {"name": "宝宝", "relation": "child", "birth_cert_no": "O123456789", "birth_date": "2026-01-15", "sex": "male"}
    )
    household = await create_household(client, staff, members)
    person = {name: UUID(m["person_id"]) for name, m in zip([*ids, "newborn"], household["members"], strict=True)}
    for number in ids.values():  # covered in 2025: no gap, so a late payer waits the fixed 3 months only
        await add_history(conn, number, 2025)
    enrolled = await enrol(client, staff, household, [str(p) for n, p in person.items() if n != "absent"])
    enrolment = {e["person_id"]: UUID(e["id"]) for e in enrolled["items"]}
    await issue_r_block(client, conn)
    collector = await actor_of(conn, "staff_a")

    async def pay(name: str, paid_on: date, receipt_no: str) -> None:
        at = datetime(paid_on.year, paid_on.month, paid_on.day, 2, 0, tzinfo=UTC)
        data = PaymentIn(
            id=uuid.uuid4(),
            household_id=UUID(household["id"]),
            coverage_year=2026,
            person_ids=[person[name]],
            amount_fen=40000,
            method="cash",
            receipt_no=receipt_no,
            collected_at=at,
            acknowledge_no_cover=name == "too_late",  # (the resident was told: no cover in 2026)
        )
        async with conn.transaction():
            await conn.execute(  # registered before the day it is paid (a payment is never dated before)
                "UPDATE enrollments SET registered_on = least(registered_on, $2), "
                "registered_at = least(registered_at, $2::timestamptz) WHERE person_id = $1",
                person[name],
                paid_on,
            )
            await payments.record_payment(conn, collector, data, timezone="Asia/Shanghai", code_key=KEY.secret, now=at)

    await pay("window", date(2025, 10, 8), "R00000001")
    await pay("review", date(2025, 11, 8), "R00000002")
    await pay("waiting", date(2026, 2, 10), "R00000003")
    await pay("too_late", date(2026, 11, 1), "R00000004")
    await pay("newborn", date(2026, 2, 1), "R00000005")
    reviewer = await actor_of(conn, "reviewer_a")
    async with conn.transaction():
        await enrollments.confirm(conn, reviewer, [enrolment[str(person["window"])]])
        await enrollments.cancel(
            conn, reviewer, enrolment[str(person["cancelled"])], enrollments.CancelRequest(reason="employee_insurance")
        )
    actor = Actor.resident(person["window"], UUID(household["id"]))
    async with conn.transaction():
        view = await residents.coverage(conn, actor, 2026, date(2026, 3, 1))
    by_name = {m.person_id: m for m in view.members}
    got = {name: by_name[pid] for name, pid in person.items()}
    expected = {
        "window": (True, "in_force", "confirmed", date(2026, 1, 1), None, "in_window"),
        "review": (True, "in_force", "paid", date(2026, 1, 1), None, "in_window"),
        "waiting": (False, "waiting_period", "paid", date(2026, 5, 10), date(2026, 5, 10), "waiting_period"),
        "too_late": (False, "no_cover_this_year", "paid", None, None, "no_cover_this_year"),
        "newborn": (True, "in_force", "paid", date(2026, 1, 15), None, "newborn"),
        "unpaid": (False, "unpaid", "registered", None, None, None),
        "cancelled": (False, "cancelled", "cancelled", None, None, None),
        "absent": (False, "not_enrolled", None, None, None, None),
    }
    for name, (in_force, state, status, start, waiting_until, reason) in expected.items():
        m = got[name]
        assert (
            m.in_force_today,
            m.coverage_state,
            m.enrollment_status,
            m.coverage_start,
            m.waiting_until,
            m.coverage_reason_code,
        ) == (in_force, state, status, start, waiting_until, reason), name
    assert "covered from 2026-05-10" in got["waiting"].explanation
    assert "within 90 days of birth" in got["newborn"].explanation
    assert "awaits review" in got["review"].explanation and "awaits review" not in got["window"].explanation
    assert "employee" in got["cancelled"].explanation
    assert got["newborn"].id_number_masked == "O******789"
    # Money: paid members owe nothing and show their receipt; the unpaid one owes the premium.
    assert (got["waiting"].paid_fen, got["waiting"].balance_fen, got["waiting"].last_receipt_no) == (
        40000,
        0,
        "R00000003",
    )
    assert (got["unpaid"].due_fen, got["unpaid"].paid_fen, got["unpaid"].balance_fen) == (40000, 0, 40000)
    assert (got["cancelled"].due_fen, got["absent"].due_fen) == (0, 0)
    assert (view.paid_fen, view.balance_fen, view.refund_due_fen) == (5 * 40000, 40000, 0)
    assert view.last_receipt_no == "R00000004"


@pytest.mark.parametrize(
    ("status", "start", "reason", "on", "expected"),
    [
        (None, None, None, date(2026, 3, 1), (False, "not_enrolled")),
        ("registered", None, None, date(2026, 3, 1), (False, "unpaid")),
        ("cancelled", None, None, date(2026, 3, 1), (False, "cancelled")),
        ("paid", None, "no_cover_this_year", date(2026, 3, 1), (False, "no_cover_this_year")),
        ("paid", date(2026, 5, 10), "waiting_period", date(2026, 3, 1), (False, "waiting_period")),
        ("paid", date(2026, 5, 10), "waiting_period", date(2026, 5, 10), (True, "in_force")),
        ("paid", date(2026, 1, 1), "in_window", date(2025, 12, 1), (False, "not_started")),
        ("subsidised", date(2026, 1, 1), "in_window", date(2026, 12, 31), (True, "in_force")),
        ("confirmed", date(2026, 1, 1), "in_window", date(2027, 1, 1), (False, "ended")),
    ],
)
def test_coverage_state_follows_payment_and_dates(
    status: str | None, start: date | None, reason: str | None, on: date, expected: tuple[bool, str]
) -> None:
    end = date(2026, 12, 31) if start else None
    state = coverage_state(year=2026, on=on, status=status, start=start, end=end, reason_code=reason)
    assert (state.in_force, state.code) == expected
    assert state.words


async def test_a_code_made_on_a_tablet_opens_the_household_and_the_derived_one_no_longer_does(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    home: Home,
) -> None:
    from backend.sync import query_codes
    from mobile_sync_protocol import messages

    device = await client.post(
        "/api/v1/devices", json={"model": "Tab", "app_version": "1"}, headers=await auth_headers(client, "staff_a")
    )
    device_id = UUID(device.json()["device"]["id"])
    household_id = UUID(home.h1["id"])
    tablet_hash = messages.query_code_hash(
        query_codes.device_key(KEY.secret, device_id), household_id, 2026, "K7M2P9QX"
    )
    await conn.execute(
        "UPDATE household_query_codes SET code_hash = $3, device_id = $4 "
        "WHERE household_id = $1 AND coverage_year = $2",
        household_id,
        2026,
        query_codes.rekey(KEY.secret, tablet_hash),
        device_id,
    )
    assert (await resident_login(client, ID_NUMBERS[2], "李四", "k7m2p9qx")).status_code == 200
    assert (await resident_login(client, ID_NUMBERS[2], "李四", home.code1)).status_code == 401


# Benefit facts and money after a refund -----------------------------------------------------------

BENEFITS = {
    "levels": [
        {"level": "township", "deductible_fen": 10000, "reimbursement_basis_points": 9000},
        {"level": "county", "deductible_fen": 50000, "reimbursement_basis_points": 7500},
        {"level": "above_county", "deductible_fen": 100000, "reimbursement_basis_points": 6000},
    ],
    "annual_ceiling_fen": 20000000,
}


async def test_the_view_gives_the_years_benefit_facts_from_the_policy(client: Client) -> None:
    rules = {"benefits": BENEFITS, "serious_illness": {"original_ceiling_fen": 40000000}}
    await publish_policy(client, await auth_headers(client, "admin"), rules=rules)
    staff = await auth_headers(client, "staff_a")
    h = await create_household(client, staff, [member(ID_NUMBERS[4], "王芳")], household_no="0009")
    code = (await enrol(client, staff, h, [h["members"][0]["person_id"]]))["query_code"]
    headers = await resident_headers(client, ID_NUMBERS[4], "王芳", code)
    body = (await client.get(COVERAGE, params={"year": 2026}, headers=headers)).json()
    benefits = body["benefits"]
    assert [(b["level"], b["deductible_fen"], b["reimbursement_rate"]) for b in benefits["levels"]] == [
        ("township", 10000, "90%"),
        ("county", 50000, "75%"),
        ("above_county", 100000, "60%"),
    ]
    assert benefits["levels"][1]["words"] == (
        "County hospital: the first CN¥500.00 of a hospital stay are paid by you (deductible), "
        "75% of the covered costs above it by the insurance."
    )
    assert (
        benefits["ceiling_words"]
        == "Basic medical insurance pays at most CN¥200,000.00 in 2026 for each insured person."
    )
    # Without benefit facts in the policy: none in the view.
    other = await make_home(client)
    headers = await resident_headers(client, ID_NUMBERS[3], "张小明", other.code2)
    assert (await client.get(COVERAGE, params={"year": 2027}, headers=headers)).json()["benefits"] is None


async def issue_r_block(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    """Receipt numbers R00000001–R00000050 issued to staff_a by reviewer_a."""
    staff_id = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_id, "prefix": "R", "first_no": 1, "last_no": 50},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text


async def paid_then_refunded(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    staff: Actor,
    reviewer: Actor,
    data: PaymentIn,
    persons: list[UUID],
    refund_fen: int,
    day: date,
    cancelled: tuple[UUID, ...] = (),
) -> None:
    """`data` recorded at its collection time for `persons` (their enrolments registered on 2025-09-01,
    before it), then `refund_fen` of it refunded, requested by `staff` and approved by `reviewer`;
    first the 2026 enrolments of `cancelled` cancelled (enrolled elsewhere too): a refund never takes
    what pays an enrolment in force."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE enrollments SET registered_on = '2025-09-01', registered_at = '2025-09-01' "
            "WHERE person_id = ANY($1::uuid[])",
            persons,
        )
        await payments.record_payment(
            conn, staff, data, timezone="Asia/Shanghai", code_key=KEY.secret, now=data.collected_at
        )
        for person in cancelled:
            enrolment = await conn.fetchval(
                "SELECT id FROM enrollments WHERE person_id = $1 AND coverage_year = 2026", person
            )
            await enrollments.cancel(conn, reviewer, enrolment, enrollments.CancelRequest(reason="duplicate"))
        asked = AdjustmentRequest(kind="refund", reason="double_enrolment", amount_fen=refund_fen)
        refund = await adjustments.request_adjustment(conn, staff, data.id, asked, day)
        await adjustments.decide_adjustment(conn, reviewer, refund.id, Decision(approve=True), day)


async def test_a_cancelled_members_share_is_refunded_after_what_the_payment_left_over(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    home: Home,
) -> None:
    """¥1,000 for 张三 and 李四 (¥400 each, ¥200 left over); 张三's enrolment cancelled. A refund
    comes off what was left over first, then off the shares of enrolments no longer live, never off
    李四's: after ¥200, 张三 still shows ¥400 (to be refunded); after ¥400 more, nothing. The resident's
    view and the office's quote count alike."""
    await issue_r_block(client, conn)
    persons = [UUID(m["person_id"]) for m in home.h1["members"]]
    household = UUID(home.h1["id"])
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    at, day = datetime(2025, 10, 8, 2, 0, tzinfo=UTC), date(2025, 10, 8)
    data = PaymentIn(
        id=uuid.uuid4(),
        household_id=household,
        coverage_year=2026,
        person_ids=persons,
        amount_fen=100000,
        method="cash",
        receipt_no="R00000001",
        collected_at=at,
    )
    await paid_then_refunded(conn, staff, reviewer, data, persons, 20000, day, cancelled=(persons[0],))

    async def shown() -> tuple[list[int], list[int]]:
        view = await residents.coverage(conn, Actor.resident(persons[1], household, uuid.uuid4()), 2026, day)
        quote = await quotes.premium_quote(conn, staff, household, 2026, day)
        return [m.paid_fen for m in view.members], [q.paid_fen for q in quote.members]

    assert await shown() == ([40000, 40000], [40000, 40000])
    async with conn.transaction():
        asked = AdjustmentRequest(kind="refund", reason="double_enrolment", amount_fen=40000)
        refund = await adjustments.request_adjustment(conn, staff, data.id, asked, day)
        await adjustments.decide_adjustment(conn, reviewer, refund.id, Decision(approve=True), day)
    assert await shown() == ([0, 40000], [0, 40000])


async def test_a_refund_comes_off_the_members_paid_as_off_the_households(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    home: Home,
) -> None:
    """One payment of ¥800 for 张三 and 李四. ¥400 refunded while both enrolments are in force is
    refused (the money pays them); with 李四's cancelled (enrolled elsewhere too) it is his share:
    the household has ¥400 paid and owes nothing, and so do its members together — not ¥800 member
    by member, and not 李四 in force with nothing paid for him."""
    await issue_r_block(client, conn)
    persons = [UUID(m["person_id"]) for m in home.h1["members"]]
    at = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    data = PaymentIn(
        id=uuid.uuid4(),
        household_id=UUID(home.h1["id"]),
        coverage_year=2026,
        person_ids=persons,
        amount_fen=80000,
        method="cash",
        receipt_no="R00000001",
        collected_at=at,
    )
    day = date(2025, 10, 8)
    with pytest.raises(InvalidInput) as refused:  # 李四's share pays his enrolment, in force
        await paid_then_refunded(conn, staff, reviewer, data, persons, 40000, day)
    assert refused.value.extra["errors"][0]["field"] == "amount_fen"
    await paid_then_refunded(conn, staff, reviewer, data, persons, 40000, day, cancelled=(persons[1],))
    resident = Actor.resident(persons[0], UUID(home.h1["id"]), uuid.uuid4())
    view = await residents.coverage(conn, resident, 2026, day)
    assert [(m.name, m.enrollment_status, m.paid_fen, m.balance_fen) for m in view.members] == [
        ("张三", "paid", 40000, 0),
        ("李四", "cancelled", 0, 0),
    ]
    assert (view.paid_fen, view.money.paid_fen, view.balance_fen) == (40000, 40000, 0)
    assert sum(m.paid_fen for m in view.members) == view.paid_fen
    # The office's quote counts alike.
    quote = await quotes.premium_quote(conn, staff, UUID(home.h1["id"]), 2026, day)
    assert [(q.name, q.paid_fen) for q in quote.members] == [("张三", 40000), ("李四", 0)]
    assert quote.paid_fen == 40000
