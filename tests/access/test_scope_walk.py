"""Every route in the OpenAPI schema, walked as a user of another township: no data comes back.

Township A's records are created first; each route is then called with A's identifiers (and its
required query parameters) as a staff member and as a reviewer of township B, and as a resident
of another household of township A (who may see their own household, nothing else). A route may answer
400/401/403/404/405/409/412/415/422/428, an empty list, or — for the few routes whose answer is not a
township's data (the district's policy, the caller's own report) — data that names nothing of A.
A new route with a new path or query parameter fails here until it gets a sample value below, so
every later route joins the walk.
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.sync import store_key
from tests.conftest import PASSWORD, auth_headers
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

VILLAGE_A = "330106001001"

# Routes whose 2xx answer is not township data: checked for leaks, not for emptiness.
NOT_TOWNSHIP_DATA = {
    ("GET", "/api/v1/policy-years"),  # the district's policy is public to its staff
    ("GET", "/api/v1/policy-years/{year}"),
    ("GET", "/api/v1/reports/coverage"),  # a report of the caller's own scope
    ("GET", "/api/v1/reports/coverage/trend"),
    ("GET", "/api/v1/reports/collections"),
    ("GET", "/api/v1/divisions"),  # the caller's own division and those below it; A's are checked as leaks
    ("GET", "/api/v1/receipts/verify"),  # public: genuine or not, the amount and date, never who paid
    # An answer per number asked (echoed): checked below for what the lists hold of A's people.
    ("POST", "/api/v1/eligibility/check"),
}
CHECK = ("POST", "/api/v1/eligibility/check")
# Routes whose 2xx answer to a resident is their own household: checked for leaks only.
RESIDENT_OWN = {("GET", "/api/v1/resident/coverage")}


async def township_a_records(client: AsyncTestClient[Litestar], conn: asyncpg.Connection) -> dict[str, str]:  # type: ignore[type-arg]
    """Creates records that belong to township A and returns sample values naming them."""
    staff_a = await auth_headers(client, "staff_a")
    admin = await auth_headers(client, "admin")
    device = await client.post("/api/v1/devices", json={"model": "Tab A8", "app_version": "1.0.0"}, headers=staff_a)
    assert device.status_code == 201, device.text
    partner = await client.post("/api/v1/partners", json={"name": "县人民医院"}, headers=admin)
    assert partner.status_code == 201, partner.text
    await publish_policy(client, admin)
    household = await create_household(
        client, staff_a, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    other = await create_household(client, staff_a, [member(ID_NUMBERS[3], "张小明")], household_no="0002")
    person_id = household["members"][1]["person_id"]
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": [person_id]},
        headers=staff_a,
    )
    assert enrolled.status_code == 201, enrolled.text
    moved = await client.post(
        f"/api/v1/households/{household['id']}/members/{person_id}/move",
        json={"to_household_id": other["id"], "relation": "spouse"},
        headers={**staff_a, "If-Match": f'"{household["row_version"]}"'},
    )
    assert moved.status_code == 200, moved.text
    staff_a_id = await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'")
    civil = await auth_headers(client, "civil")
    listed = await client.post(
        "/api/v1/eligibility/lists",
        files={"file": ("deceased.csv", f"身份证号,姓名\n{ID_NUMBERS[2]},李四\n".encode())},
        data={"type": "deceased", "effective_from": "2025-09-01"},
        headers=civil,
    )
    assert listed.status_code == 201, listed.text
    claim = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": household["members"][0]["person_id"], "coverage_year": 2026, "category": "di_bao"},
        headers=staff_a,
    )
    assert claim.status_code == 201, claim.text
    reviews = await client.get("/api/v1/eligibility/exclusion-reviews", headers=staff_a)
    assert len(reviews.json()["items"]) == 1, reviews.text
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": str(staff_a_id), "prefix": "A", "first_no": 1, "last_no": 50},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    payment_id = str(uuid.uuid4())
    # Collected in 2025's window from a person registered then: recorded now by a reviewer for
    # staff_a (a payment dated this far back needs one).
    await conn.execute(
        "UPDATE enrollments SET registered_on = '2025-09-01', registered_at = '2025-09-01' WHERE person_id = $1",
        uuid.UUID(person_id),
    )
    paid = await client.post(
        "/api/v1/payments",
        json={
            "id": payment_id,
            "household_id": other["id"],  # the enrolment followed the person there
            "coverage_year": 2026,
            "person_ids": [person_id],
            "amount_fen": 50000,  # ¥100 over: the credit a refund may take
            "method": "cash",
            "receipt_no": "A00000001",
            "collected_at": "2025-10-08T09:00:00+08:00",
            "collector_id": str(staff_a_id),
        },
        headers={**await auth_headers(client, "reviewer_a"), "Idempotency-Key": "scope-walk-payment-1"},
    )
    assert paid.status_code == 201, paid.text
    void = await client.post(
        f"/api/v1/payments/{payment_id}/adjustments", json={"kind": "refund", "reason": "overpayment"}, headers=staff_a
    )
    assert void.status_code == 201, void.text
    # A tablet's payment for a household nobody knows: quarantined for township A's reviewers.
    tablet = await client.post(
        "/api/v1/auth/login",
        json={
            "username": "staff_a",
            "password": PASSWORD,
            "device_id": device.json()["device"]["id"],
            "device_secret": device.json()["device_secret"],
        },
    )
    assert tablet.status_code == 200, tablet.text
    lost_payment = {
        "type": "payment.record",
        "seq": 1,
        "mutation_id": str(uuid.uuid4()),
        "payment_id": str(uuid.uuid4()),
        "household_id": str(uuid.uuid4()),
        "coverage_year": 2026,
        "person_ids": [person_id],
        "amount_fen": 40000,
        "method": "cash",
        "receipt_no": "A00000002",
        "collected_at": "2025-10-08T09:00:00+08:00",
    }
    # The same household registered again offline: held as a conflict for township A's reviewers.
    again = {
        "type": "household.create",
        "seq": 2,
        "mutation_id": str(uuid.uuid4()),
        "household_id": str(uuid.uuid4()),
        "village_code": VILLAGE_A,
        "household_no": "0003",
        "members": [{"person_id": str(uuid.uuid4()), "name": "张三", "relation": "head", "id_number": ID_NUMBERS[1]}],
    }
    pushed = await client.post(
        "/api/v1/sync/push",
        json={"protocol_version": 1, "device_id": device.json()["device"]["id"], "mutations": [lost_payment, again]},
        headers={"Authorization": f"Bearer {tablet.json()['access_token']}"},
    )
    assert pushed.json()["answers"][0]["status"] == "quarantined", pushed.text
    assert pushed.json()["answers"][1]["code"] == "duplicate_household", pushed.text
    # A township-A job (as a staff member's bulk work would be), with a stored upload.
    job_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO jobs (id, kind, created_by, division_code, result) VALUES ($1, 'list_import', $2, $3, $4)",
        job_id,
        staff_a_id,
        VILLAGE_A,
        {"rows_loaded": 2, "file_name": "北山社区.csv"},
    )
    return {
        "job_id": str(job_id),
        "conflict_id": pushed.json()["answers"][1]["conflict_ids"][0],
        "quarantine_id": pushed.json()["answers"][0]["quarantine_id"],
        "code": VILLAGE_A,
        "user_id": str(staff_a_id),
        "device_id": device.json()["device"]["id"],
        "partner_id": partner.json()["partner"]["id"],
        "household_id": household["id"],
        "person_id": person_id,
        "enrollment_id": enrolled.json()["items"][0]["id"],
        "move_id": moved.json()["id"],
        "list_id": listed.json()["id"],
        "claim_id": claim.json()["id"],
        "review_id": reviews.json()["items"][0]["id"],
        "block_id": block.json()["id"],
        "payment_id": payment_id,
        "receipt_no": "A00000001",
        "request_id": void.json()["id"],
        "collector_id": str(staff_a_id),
        "day": "2025-10-08",
        "from": "2025-01-01",
        "to": "2026-12-31",
        "year": "2026",
        "version": "1",
    }


def body_for(method: str, path: str, samples: dict[str, str]) -> dict[str, Any] | None:
    """Bodies that aim at township A's records where a route takes them; `{}` elsewhere."""
    aimed: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/households/search"): {"id_number": ID_NUMBERS[1]},
        ("POST", "/api/v1/sync/store-key"): {"protocol_version": 1, "device_id": samples["device_id"]},
        ("POST", "/api/v1/enrollments"): {
            "household_id": samples["household_id"],
            "coverage_year": 2026,
            "person_ids": [samples["person_id"]],
        },
        ("POST", "/api/v1/enrollments/query-code.pdf"): {
            "household_id": samples["household_id"],
            "coverage_year": 2026,
            "person_ids": [samples["person_id"]],
        },
        ("POST", "/api/v1/enrollments/confirm"): {"ids": [samples["enrollment_id"]]},
        ("POST", "/api/v1/renewals"): {"coverage_year": 2026, "person_ids": [samples["person_id"]]},
        ("POST", "/api/v1/resident/login"): {"id_number": ID_NUMBERS[1], "name": "张三", "query_code": "ABCDEFGH"},
        # 张三 (a claim of di_bao raised) and 李四 (on a deceased list), members of A's household.
        CHECK: {"id_numbers": [ID_NUMBERS[1], ID_NUMBERS[2]], "coverage_year": 2026},
        ("POST", "/fhir/CoverageEligibilityRequest"): {
            "resourceType": "CoverageEligibilityRequest",
            "patient": {"identifier": {"value": ID_NUMBERS[1]}},
        },
    }
    if method == "GET":
        return None
    return aimed.get((method, path), {})


def operations(app: Litestar) -> list[tuple[str, str, list[str], list[str]]]:
    schema = app.openapi_schema.to_schema()
    found = []
    for path, item in schema["paths"].items():
        if not path.startswith(("/api/", "/fhir")):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                params = item[method].get("parameters", [])
                required_query = [p["name"] for p in params if p["in"] == "query" and p.get("required")]
                found.append((method.upper(), path, re.findall(r"{(\w+)}", path), required_query))
    # Logout ends the walker's own session: walk it last, so every other route sees a live token.
    return sorted(found, key=lambda op: op[1].endswith("/logout"))


async def resident_of_another_household(client: AsyncTestClient[Litestar]) -> dict[str, str]:
    """赵六, alone in a household of township A enrolled for 2026, logged in with its query code."""
    staff_a = await auth_headers(client, "staff_a")
    own = await create_household(client, staff_a, [member(ID_NUMBERS[8], "赵六")], household_no="0009")
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": own["id"], "coverage_year": 2026, "person_ids": [own["members"][0]["person_id"]]},
        headers=staff_a,
    )
    assert enrolled.status_code == 201, enrolled.text
    login = await client.post(
        "/api/v1/resident/login",
        json={"id_number": ID_NUMBERS[8], "name": "赵六", "query_code": enrolled.json()["query_code"]},
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.mark.parametrize("outsider", ["staff_b", "reviewer_b", "resident"])
async def test_every_route_gives_another_township_no_data(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    app: Litestar,
    outsider: str,
) -> None:
    samples = await township_a_records(client, conn)
    # Anything that names township A's records, people or places.
    secrets = {v for k, v in samples.items() if k not in ("code", "year", "version", "day", "from", "to")}
    secrets |= {
        "staff_a",
        "330106001",
        "北山",
        "张三",
        "李四",
        ID_NUMBERS[1],
        ID_NUMBERS[2],
        ID_NUMBERS[3],
        "A00000001",
        # The store key of township A's tablet, as JSON would carry it.
        base64.b64encode(store_key.store_key(uuid.UUID(samples["device_id"]))).decode(),
    }
    if outsider == "resident":
        headers = await resident_of_another_household(client)
    else:
        headers = await auth_headers(client, outsider)
    walked = 0
    for method, path, params, query in operations(app):
        missing = [p for p in params + query if p not in samples]
        assert not missing, f"{method} {path}: add a township-A sample for {missing} to the scope walk"
        url = path
        for p in params:
            url = url.replace("{" + p + "}", samples[p])
        sent = body_for(method, path, samples)
        response = await client.request(
            method,
            url,
            params={q: samples[q] for q in query},
            headers={**headers, "If-Match": '"1"'},
            json=sent,
        )
        walked += 1
        assert response.status_code != 500, f"{method} {path}: {response.text}"
        if response.status_code == 204:
            assert not response.content
        elif response.status_code < 300:
            body: Any = response.json()
            if (method, path) not in NOT_TOWNSHIP_DATA | (RESIDENT_OWN if outsider == "resident" else set()):
                assert isinstance(body, dict) and body.get("items") == [], f"{method} {path} gave data: {body}"
        else:
            assert response.status_code in (400, 401, 403, 404, 405, 409, 412, 415, 422, 428), (
                f"{method} {path}: {response.status_code}"
            )
        if outsider == "resident" and (method, path) in RESIDENT_OWN:
            assert response.status_code == 200 and "赵六" in response.text, response.text  # their own, and only it
        if (method, path) == CHECK and response.status_code == 200:
            for item in response.json()["items"]:  # A's members: nothing of what the lists say of them
                assert item["categories"] == [], item
                assert [o["source"] for o in item["obstacles"]] == [None] * len(item["obstacles"]), item
        # The check answers each number asked with that number: the caller's own words, echoed.
        asked = set(sent["id_numbers"]) if (method, path) == CHECK and sent else set()
        leaked = [s for s in secrets - asked if s in response.text]
        assert not leaked, f"{method} {path} leaked {leaked}"
    assert walked >= 40
