"""FHIR for partners: client-credential tokens, CoverageEligibilityRequest → Response with the reason
when not in force, Coverage/_search with the identifier in the body, every answer audited and every
output valid FHIR (checked with the `fhir.resources` R4B models)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from fhir.resources.R4B.operationoutcome import OperationOutcome
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import enrollments
from backend.fhir.resources import EXT_COVER_STARTS_ON, EXT_COVERAGE_STATE, RESIDENT_ID_SYSTEM
from backend.premiums import payments
from backend.premiums.payments import PaymentIn
from tests.conftest import JWT_SECRET, auth_headers
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy
from tests.premiums.test_payments import actor_of

Client = AsyncTestClient[Litestar]
ELIGIBILITY = "/fhir/CoverageEligibilityRequest"
SEARCH = "/fhir/Coverage/_search"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


class Partner:
    def __init__(self, client_id: str, secret: str, partner_id: str) -> None:
        self.client_id, self.secret, self.id = client_id, secret, partner_id


async def register_partner(client: Client, name: str = "县人民医院") -> Partner:
    created = await client.post("/api/v1/partners", json={"name": name}, headers=await auth_headers(client, "admin"))
    assert created.status_code == 201, created.text
    body = created.json()
    return Partner(body["partner"]["client_id"], body["client_secret"], body["partner"]["id"])


async def token(client: Client, partner: Partner, secret: str | None = None) -> Any:
    return await client.post(
        "/fhir/token",
        data={
            "grant_type": "client_credentials",
            "client_id": partner.client_id,
            "client_secret": secret or partner.secret,
        },
    )


async def partner_headers(client: Client, partner: Partner) -> dict[str, str]:
    response = await token(client, partner)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def request_for(id_number: str, on: str | None = "2026-03-01", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "CoverageEligibilityRequest",
        "identifier": [{"system": "urn:hospital:his", "value": "req-1"}],
        "status": "active",
        "purpose": ["validation"],
        "patient": {"identifier": {"system": RESIDENT_ID_SYSTEM, "value": id_number}},
        "created": "2026-03-01T09:00:00+08:00",
        "insurer": {"display": "城乡居民基本医疗保险"},
        **extra,
    }
    if on:
        body["servicedDate"] = on
    return body


class World:
    """Township A: 张三 paid in the window (in force), 李四 paid late (waiting until 2026-05-10),
    张小明 registered and unpaid, 王芳 cancelled; ID_NUMBERS[7] belongs to nobody."""

    persons: dict[str, UUID]


@pytest.fixture(name="world")
async def world_fixture(client: Client, conn: asyncpg.Connection) -> World:  # type: ignore[type-arg]
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    numbers = {"window": ID_NUMBERS[1], "waiting": ID_NUMBERS[2], "unpaid": ID_NUMBERS[3], "cancelled": ID_NUMBERS[4]}
    household = await create_household(
        client, staff, [member(n, name, "head" if i == 0 else "child") for i, (name, n) in enumerate(numbers.items())]
    )
    persons = {name: UUID(m["person_id"]) for name, m in zip(numbers, household["members"], strict=True)}
    for number in numbers.values():
        await add_history(conn, number, 2025)
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": [str(p) for p in persons.values()]},
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    ids = {e["person_id"]: UUID(e["id"]) for e in enrolled.json()["items"]}
    staff_id = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_id, "prefix": "F", "first_no": 1, "last_no": 50},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    collector = await actor_of(conn, "staff_a")
    for name, paid_on, receipt in (
        ("window", date(2025, 10, 8), "F00000001"),
        ("waiting", date(2026, 2, 10), "F00000002"),
    ):
        at = datetime(paid_on.year, paid_on.month, paid_on.day, 2, tzinfo=UTC)
        data = PaymentIn(
            id=uuid.uuid4(),
            household_id=UUID(household["id"]),
            coverage_year=2026,
            person_ids=[persons[name]],
            amount_fen=40000,
            method="cash",
            receipt_no=receipt,
            collected_at=at,
        )
        async with conn.transaction():
            await conn.execute(  # registered before the day it is paid (a payment is never dated before)
                "UPDATE enrollments SET registered_on = least(registered_on, $2), "
                "registered_at = least(registered_at, $2::timestamptz) WHERE person_id = $1",
                persons[name],
                paid_on,
            )
            await payments.record_payment(
                conn, collector, data, timezone="Asia/Shanghai", code_key=JWT_SECRET.encode(), now=at
            )
    async with conn.transaction():
        await enrollments.cancel(
            conn,
            await actor_of(conn, "reviewer_a"),
            ids[str(persons["cancelled"])],
            enrollments.CancelRequest(reason="duplicate"),
        )
    world = World()
    world.persons = persons
    return world


def state_of(answer: dict[str, Any]) -> tuple[bool, str, str | None]:
    (insurance,) = answer["insurance"]
    ext = {e["url"]: e for e in insurance.get("extension", [])}
    starts = ext.get(EXT_COVER_STARTS_ON, {}).get("valueDate")
    return insurance["inforce"], ext[EXT_COVERAGE_STATE]["valueCodeableConcept"]["coding"][0]["code"], starts


# Tokens ------------------------------------------------------------------------------------------


async def test_partner_gets_a_token_with_its_client_credentials_and_basic_auth_too(client: Client) -> None:
    partner = await register_partner(client)
    response = await token(client, partner)
    assert response.status_code == 200, response.text
    assert (response.json()["token_type"], response.json()["scope"]) == ("bearer", "fhir")
    basic = await client.post(
        "/fhir/token", data={"grant_type": "client_credentials"}, auth=(partner.client_id, partner.secret)
    )
    assert basic.status_code == 200, basic.text


async def test_wrong_secret_unknown_client_and_disabled_partner_are_refused_alike(client: Client) -> None:
    partner = await register_partner(client)
    wrong = await token(client, partner, secret="x" * 43)
    unknown = await token(client, Partner("partner-0000000000000000", partner.secret, ""))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_client"
    await client.post(f"/api/v1/partners/{partner.id}/disable", headers=await auth_headers(client, "admin"))
    assert (await token(client, partner)).status_code == 401


async def test_rotating_or_disabling_ends_issued_tokens(client: Client, world: World) -> None:
    partner = await register_partner(client)
    headers = await partner_headers(client, partner)
    assert (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=headers)).status_code == 200
    admin = await auth_headers(client, "admin")
    await client.post(f"/api/v1/partners/{partner.id}/rotate-credential", headers=admin)
    refused = await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=headers)
    assert refused.status_code == 401
    OperationOutcome.model_validate(refused.json())


async def test_partner_token_opens_only_fhir_and_staff_tokens_do_not_open_fhir(client: Client, world: World) -> None:
    headers = await partner_headers(client, await register_partner(client))
    assert (await client.get("/api/v1/policy-years", headers=headers)).status_code == 403
    assert (await client.get("/api/v1/resident/coverage", headers=headers)).status_code == 403
    staff = await auth_headers(client, "admin")
    refused = await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=staff)
    assert refused.status_code == 403
    OperationOutcome.model_validate(refused.json())


# Eligibility -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "on", "expected"),
    [
        ("window", "2026-03-01", (True, "in_force", None)),
        ("waiting", "2026-03-01", (False, "waiting_period", "2026-05-10")),
        ("waiting", "2026-05-10", (True, "in_force", None)),
        ("unpaid", "2026-03-01", (False, "unpaid", None)),
        ("cancelled", "2026-03-01", (False, "cancelled", None)),
        ("nobody", "2026-03-01", (False, "not_enrolled", None)),
        ("window", "2027-01-05", (False, "not_enrolled", None)),
    ],
)
async def test_eligibility_answers_inforce_and_why_not(
    client: Client,
    conn: asyncpg.Connection,
    world: World,
    who: str,
    on: str,
    expected: tuple[Any, ...],  # type: ignore[type-arg]
) -> None:
    number = {
        "window": ID_NUMBERS[1],
        "waiting": ID_NUMBERS[2],
        "unpaid": ID_NUMBERS[3],
        "cancelled": ID_NUMBERS[4],
        "nobody": ID_NUMBERS[7],
    }[who]
    headers = await partner_headers(client, await register_partner(client))
    response = await client.post(ELIGIBILITY, content=_json(request_for(number, on)), headers={**headers, **FHIR_JSON})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    answer = response.json()
    CoverageEligibilityResponse.model_validate(answer)
    assert state_of(answer) == expected
    assert answer["servicedDate"] == on and answer["outcome"] == "complete"
    assert answer["request"] == {"identifier": {"system": "urn:hospital:his", "value": "req-1"}}
    if expected[0]:
        assert answer["insurance"][0]["benefitPeriod"]["start"] <= on
    # Audited as a read of personal data, without the number.
    row = await conn.fetchrow(
        "SELECT actor_kind, action, entity, entity_id, summary FROM audit_log "
        "WHERE entity = 'coverage_eligibility' ORDER BY id DESC LIMIT 1"
    )
    assert (row["actor_kind"], row["action"]) == ("partner", "read")
    assert row["entity_id"] == (None if who == "nobody" else str(world.persons[who]))
    assert row["summary"]["inforce"] is expected[0] and number not in str(dict(row))


async def test_a_contained_patient_identifies_the_person_and_the_date_defaults_to_today(
    client: Client, world: World
) -> None:
    headers = await partner_headers(client, await register_partner(client))
    body = request_for(ID_NUMBERS[1], on=None)
    body["contained"] = [
        {"resourceType": "Patient", "id": "p1", "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": ID_NUMBERS[1]}]}
    ]
    body["patient"] = {"reference": "#p1"}
    response = await client.post(ELIGIBILITY, json=body, headers=headers)
    assert response.status_code == 200, response.text
    CoverageEligibilityResponse.model_validate(response.json())
    assert response.json()["patient"]["identifier"]["value"] == ID_NUMBERS[1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resourceType": "Patient"}, "resourceType"),
        (request_for("11010519491231002Y"), "patient.identifier.value"),
        ({**request_for(ID_NUMBERS[1]), "patient": {"display": "张三"}}, "patient"),
        ({**request_for(ID_NUMBERS[1]), "servicedDate": "yesterday"}, "servicedDate"),
    ],
)
async def test_bad_requests_answer_an_operation_outcome_naming_the_field(
    client: Client, world: World, body: dict[str, Any], field: str
) -> None:
    headers = await partner_headers(client, await register_partner(client))
    response = await client.post(ELIGIBILITY, json=body, headers=headers)
    assert response.status_code == 422, response.text
    outcome = response.json()
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["expression"] == [field]
    assert "11010519491231002" not in response.text


# Coverage search ---------------------------------------------------------------------------------


async def test_coverage_search_takes_the_identifier_in_the_form_body(
    client: Client,
    conn: asyncpg.Connection,
    world: World,  # type: ignore[type-arg]
) -> None:
    headers = await partner_headers(client, await register_partner(client))
    response = await client.post(SEARCH, data={"identifier": f"{RESIDENT_ID_SYSTEM}|{ID_NUMBERS[2]}"}, headers=headers)
    assert response.status_code == 200, response.text
    bundle = response.json()
    Bundle.model_validate(bundle)
    # 2026 enrolled here; 2025 paid in the imported history, which covers the whole year.
    assert (bundle["type"], bundle["total"]) == ("searchset", 2)
    coverage, history = (e["resource"] for e in bundle["entry"])
    assert (coverage["status"], coverage["period"]) == ("active", {"start": "2026-05-10", "end": "2026-12-31"})
    assert (history["status"], history["period"]) == ("active", {"start": "2025-01-01", "end": "2025-12-31"})
    assert ID_NUMBERS[2] not in bundle["link"][0]["url"]
    cancelled = await client.post(SEARCH, data={"identifier": ID_NUMBERS[4]}, headers=headers)
    assert [e["resource"]["status"] for e in cancelled.json()["entry"]] == ["cancelled", "active"]
    nobody = await client.post(SEARCH, data={"identifier": ID_NUMBERS[7]}, headers=headers)
    Bundle.model_validate(nobody.json())
    assert nobody.json()["total"] == 0
    audited = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE entity = 'coverage' AND action = 'read' AND actor_kind = 'partner'"
    )
    assert audited == 3


async def test_enrolments_of_a_year_registered_at_one_time_come_in_id_order(
    client: Client,
    conn: asyncpg.Connection,
    world: World,  # type: ignore[type-arg]
) -> None:
    """Two enrolments registered in one transaction (a push's) share their time: the answer must not
    depend on the order PostgreSQL happens to read them in. A second cancelled 2026 enrolment of 王芳,
    written after the first but with a lower id, both registered at the same instant."""
    [first] = await conn.fetch("SELECT id FROM enrollments WHERE person_id = $1", world.persons["cancelled"])
    lower = UUID(int=1)  # below any id, written after the first: the physical order is the other way round
    await conn.execute(
        "INSERT INTO enrollments SELECT (jsonb_populate_record(NULL::enrollments,"
        " to_jsonb(e) || jsonb_build_object('id', $2::uuid))).* FROM enrollments e WHERE e.id = $1",
        first["id"],
        lower,
    )
    await conn.execute(
        "UPDATE enrollments SET registered_at = '2026-02-01T00:00Z' WHERE person_id = $1", world.persons["cancelled"]
    )
    headers = await partner_headers(client, await register_partner(client))
    found = await client.post(SEARCH, data={"identifier": ID_NUMBERS[4]}, headers=headers)
    assert found.status_code == 200, found.text
    coverages = [e["resource"] for e in found.json()["entry"] if e["resource"]["status"] == "cancelled"]
    assert [c["id"] for c in coverages] == [str(lower), str(first["id"])]


@pytest.mark.parametrize(
    ("url", "kwargs", "status"),
    [
        (SEARCH + f"?identifier={ID_NUMBERS[1]}", {"data": {}}, 422),
        (SEARCH, {"data": {"identifier": [ID_NUMBERS[1], ID_NUMBERS[2]]}}, 422),
        (SEARCH, {"data": {"identifier": f"{ID_NUMBERS[1]},{ID_NUMBERS[2]}"}}, 422),
        (SEARCH, {"data": {"name": "张三"}}, 422),
        (SEARCH, {"json": {"identifier": ID_NUMBERS[1]}}, 415),
    ],
    ids=["identifier_in_url", "two_identifiers", "or_list", "other_parameter", "json_body"],
)
async def test_coverage_search_answers_about_one_person_named_in_the_body_only(
    client: Client, world: World, url: str, kwargs: dict[str, Any], status: int
) -> None:
    headers = await partner_headers(client, await register_partner(client))
    response = await client.post(url, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    OperationOutcome.model_validate(response.json())
    assert "张三" not in response.text and ID_NUMBERS[1] not in response.text


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()
