"""The audit says whom: reads by identity number record the persons they touched (their ids, never
the numbers), and a request refused for scope leaves a denied row naming the actor, the route and
the record id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import clock
from mobile_sync_protocol import messages as m
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member, publish_policy
from tests.fhir.test_fhir import partner_headers, register_partner, request_for
from tests.sync_world import enrol, household_create, payment, push, world

Client = AsyncTestClient[Litestar]
Connection = asyncpg.Connection  # type: ignore[type-arg]
VILLAGE_B = "330106002201"


async def last_row(conn: Connection, action: str, entity: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT actor_kind, actor_id, action, entity, entity_id, division_code, summary, summary::text AS text "
        "FROM audit_log WHERE action = $1 AND entity = $2 ORDER BY id DESC LIMIT 1",
        action,
        entity,
    )
    assert row is not None, f"no {action} {entity} row"
    return row


async def user_id(conn: Connection, username: str) -> uuid.UUID:
    found: uuid.UUID = await conn.fetchval("SELECT id FROM users WHERE username = $1", username)
    return found


async def test_a_search_by_number_records_the_person_found_not_the_number(client: Client, conn: Connection) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    found = await client.post("/api/v1/households/search", json={"id_number": ID_NUMBERS[2]}, headers=staff)
    assert [h["id"] for h in found.json()["items"]] == [household["id"]]
    row = await last_row(conn, "search", "household")
    assert row["summary"] == {
        "criteria": ["id_number"],
        "results": 1,
        "person_ids": [household["members"][1]["person_id"]],
    }
    assert ID_NUMBERS[2] not in row["text"]
    # A search by other criteria names nobody; a number nobody in scope holds touches nobody.
    await client.post("/api/v1/households/search", json={"household_no": "0001"}, headers=staff)
    assert "person_ids" not in (await last_row(conn, "search", "household"))["summary"]
    staff_b = await auth_headers(client, "staff_b")
    await client.post("/api/v1/households/search", json={"id_number": ID_NUMBERS[2]}, headers=staff_b)
    assert (await last_row(conn, "search", "household"))["summary"]["person_ids"] == []


async def test_a_bulk_eligibility_check_records_the_registered_persons_in_one_row(
    client: Client, conn: Connection
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    before = await conn.fetchval("SELECT count(*) FROM audit_log")
    numbers = [ID_NUMBERS[2], ID_NUMBERS[7], ID_NUMBERS[1], "not a number", ID_NUMBERS[2]]
    checked = await client.post(
        "/api/v1/eligibility/check", json={"id_numbers": numbers, "coverage_year": 2026}, headers=staff
    )
    assert checked.status_code == 200, checked.text
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == before + 1
    row = await last_row(conn, "read", "eligibility")
    assert row["summary"]["persons"] == 5
    assert row["summary"]["person_ids"] == sorted(m["person_id"] for m in household["members"])
    assert not [n for n in ID_NUMBERS if n in row["text"]]


async def test_a_resident_login_records_the_person_and_a_failed_one_whose_door_was_tried(
    client: Client, conn: Connection
) -> None:
    staff = await auth_headers(client, "staff_a")
    await publish_policy(client, await auth_headers(client, "admin"))
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    person_id = household["members"][0]["person_id"]
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": [person_id]},
        headers=staff,
    )
    login = {"id_number": ID_NUMBERS[1], "name": "张三", "query_code": enrolled.json()["query_code"]}
    assert (await client.post("/api/v1/resident/login", json=login)).status_code == 200
    row = await last_row(conn, "login", "resident_session")
    assert (row["actor_kind"], str(row["actor_id"]), row["summary"]["person_ids"]) == (
        "resident",
        person_id,
        [person_id],
    )

    wrong = await client.post("/api/v1/resident/login", json={**login, "query_code": "ABCDEFGH"})
    assert wrong.status_code == 401
    failed = await last_row(conn, "resident_login_failed", "resident_login")
    assert failed["summary"]["person_ids"] == [person_id]
    unknown = await client.post("/api/v1/resident/login", json={**login, "id_number": ID_NUMBERS[7]})
    assert unknown.status_code == 401
    failed = await last_row(conn, "resident_login_failed", "resident_login")
    assert failed["summary"]["person_ids"] == []
    assert ID_NUMBERS[1] not in failed["text"] and ID_NUMBERS[7] not in failed["text"]


async def test_a_fhir_look_up_records_the_person(client: Client, conn: Connection) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    headers = await partner_headers(client, await register_partner(client))
    fhir = {**headers, "Content-Type": "application/fhir+json"}
    answered = await client.post(
        "/fhir/CoverageEligibilityRequest", content=json.dumps(request_for(ID_NUMBERS[1])), headers=fhir
    )
    assert answered.status_code == 200, answered.text
    row = await last_row(conn, "read", "coverage_eligibility")
    assert row["summary"]["person_ids"] == [household["members"][0]["person_id"]]
    assert ID_NUMBERS[1] not in row["text"]
    searched = await client.post(
        "/fhir/Coverage/_search", data={"identifier": ID_NUMBERS[1]}, headers={**headers, "Accept": "application/json"}
    )
    assert searched.status_code == 200, searched.text
    assert (await last_row(conn, "read", "coverage"))["summary"]["person_ids"] == [household["members"][0]["person_id"]]


# Refusals for scope ------------------------------------------------------------------------------


async def test_a_household_of_another_township_answers_404_and_leaves_a_denied_row(
    client: Client, conn: Connection
) -> None:
    household_b = await create_household(
        client, await auth_headers(client, "staff_b"), [member(ID_NUMBERS[1], "张三")], village_code=VILLAGE_B
    )
    staff_a = await auth_headers(client, "staff_a")
    refused = await client.get(f"/api/v1/households/{household_b['id']}", headers=staff_a)
    unknown = await client.get(f"/api/v1/households/{uuid.uuid4()}", headers=staff_a)
    assert refused.status_code == unknown.status_code == 404
    assert {**refused.json(), "instance": "", "request_id": ""} == {**unknown.json(), "instance": "", "request_id": ""}

    rows = await conn.fetch(
        "SELECT actor_kind, actor_id, entity, entity_id, division_code, summary FROM audit_log "
        "WHERE action = 'denied' ORDER BY id"
    )
    assert len(rows) == 2  # one per refused request (the unknown id is refused alike)
    denied = rows[0]
    assert (denied["actor_kind"], denied["actor_id"]) == ("user", await user_id(conn, "staff_a"))
    assert (denied["entity"], denied["entity_id"], denied["division_code"]) == (
        "household",
        household_b["id"],
        "330106001000",
    )
    assert denied["summary"] == {
        "route": "GET /api/v1/households/{household_id}",
        "answer": "not_found",
        "params": {"household_id": household_b["id"]},
    }
    # The read itself was rolled back with the request: no `read` row for B's household.
    reads = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'read' AND entity_id = $1", household_b["id"]
    )
    assert reads == 0


async def test_a_refused_write_is_recorded_although_its_transaction_rolled_back(
    client: Client, conn: Connection
) -> None:
    household_b = await create_household(
        client, await auth_headers(client, "staff_b"), [member(ID_NUMBERS[1], "张三")], village_code=VILLAGE_B
    )
    person_b = household_b["members"][0]["person_id"]
    staff_a = await auth_headers(client, "staff_a")
    refused = await client.patch(
        f"/api/v1/households/{household_b['id']}/members/{person_b}",
        json={"name": "王五"},
        headers={**staff_a, "If-Match": f'"{household_b["row_version"]}"'},
    )
    assert refused.status_code == 404, refused.text
    denied = await last_row(conn, "denied", "person")
    assert denied["entity_id"] == person_b
    assert denied["summary"]["params"] == {"household_id": household_b["id"], "person_id": person_b}
    assert await conn.fetchval("SELECT name FROM persons WHERE id = $1", uuid.UUID(person_b)) == "张三"


async def test_a_refusal_records_ids_never_a_text_parameter(client: Client, conn: Connection) -> None:
    """A text path parameter could be an identity number: only ids, numbers and dates are kept."""
    staff_a = await auth_headers(client, "staff_a")
    refused = await client.get("/api/v1/divisions/330106002000", headers=staff_a)  # township B
    assert refused.status_code == 404
    denied = await last_row(conn, "denied", "request")
    assert denied["entity_id"] is None
    assert denied["summary"] == {"route": "GET /api/v1/divisions/{code}", "answer": "not_found", "params": {}}
    assert "330106002000" not in denied["text"]


async def test_a_tablet_voiding_another_townships_payment_is_answered_as_for_an_unknown_payment(
    client: Client, conn: Connection
) -> None:
    tablet_a = await world(client, "staff_a")
    created = household_create(tablet_a)
    enrolled = enrol(tablet_a, created)
    paid = payment(tablet_a, created, collected_at=clock.now(), acknowledge_no_cover=True)
    setup = await push(client, tablet_a, [created, enrolled, paid])
    assert [a.status for a in setup.answers] == ["applied"] * 3

    tablet_b = await world(client, "staff_b", publish=False)
    voids = [
        m.PaymentVoid(seq=tablet_b.seq(), mutation_id=uuid.uuid4(), payment_id=payment_id, reason="wrong_household")
        for payment_id in (paid.payment_id, uuid.uuid4())
    ]
    theirs, unknown = (await push(client, tablet_b, voids)).answers
    assert theirs.status == "quarantined" and theirs.code == "unknown_payment"
    assert _answer(theirs) == _answer(unknown)
    held = await conn.fetch(
        "SELECT reason, detail FROM sync_quarantine WHERE device_id = $1 ORDER BY seq", tablet_b.device_id
    )
    assert [tuple(r) for r in held] == [("unknown_payment", "the payment to void is not recorded")] * 2
    assert await conn.fetchval("SELECT count(*) FROM payment_events") == 0


def _answer(answer: m.Answer) -> dict[str, Any]:
    """The whole answer but what differs between any two mutations: their seq, id and quarantine id."""
    body: dict[str, Any] = msgspec.to_builtins(answer)
    for key in ("seq", "mutation_id", "quarantine_id"):
        body.pop(key, None)
    return body
