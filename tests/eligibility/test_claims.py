"""Claims: a township officer claims a category for a person missing from the lists; civil affairs
accepts or rejects it; an accepted claim counts like a list row and says so."""

from __future__ import annotations

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.eligibility.people import register
from tests.eligibility.test_check import check, csv, heads
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, publish_policy


async def test_claim_lifecycle_from_township_to_civil_affairs_and_into_the_eligibility_answer(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil, staff_a, staff_b = await heads(client, "admin", "civil", "staff_a", "staff_b")
    await publish_policy(client, admin)
    _, persons = await register(conn, [(ID_NUMBERS[1], "张三")])
    claim_in = {
        "person_id": str(persons[ID_NUMBERS[1]]),
        "coverage_year": 2026,
        "category": "di_bao",
        "note": "新认定低保",
        "evidence_ref": "民政审批 2025-118",
    }
    raised = await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff_a)
    assert raised.status_code == 201, raised.text
    claim = raised.json()
    assert (claim["status"], claim["category"], claim["village_code"], claim["decided_by"]) == (
        "pending",
        "di_bao",
        "330106001001",
        None,
    )
    again = await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff_a)
    assert (again.status_code, again.json()["code"]) == (409, "claim_exists")

    # Township B neither sees nor raises claims for township A's people.
    assert (await client.get(f"/api/v1/eligibility/claims/{claim['id']}", headers=staff_b)).status_code == 404
    assert (await client.get("/api/v1/eligibility/claims", headers=staff_b)).json()["items"] == []
    assert (await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff_b)).status_code == 404
    # Nobody but civil affairs decides.
    assert (
        await client.post(f"/api/v1/eligibility/claims/{claim['id']}/accept", json={}, headers=staff_a)
    ).status_code == 403

    pending = await client.get("/api/v1/eligibility/claims", params={"status": "pending"}, headers=civil)
    assert [c["id"] for c in pending.json()["items"]] == [claim["id"]]
    accepted = await client.post(
        f"/api/v1/eligibility/claims/{claim['id']}/accept", json={"reason": "审批件核实"}, headers=civil
    )
    assert accepted.status_code == 200, accepted.text
    civil_id = await conn.fetchval("SELECT id FROM users WHERE username = 'civil'")
    assert (accepted.json()["status"], accepted.json()["decided_by"]) == ("accepted", str(civil_id))
    twice = await client.post(f"/api/v1/eligibility/claims/{claim['id']}/reject", json={"reason": "x"}, headers=civil)
    assert (twice.status_code, twice.json()["code"]) == (409, "claim_decided")

    answer = (await check(client, staff_a, [ID_NUMBERS[1]]))["items"][0]
    assert (answer["subsidy_fen"], answer["due_fen"]) == (20000, 20000)
    assert [
        (c["category"], c["source"]["kind"], c["source"]["claim_id"], c["source"]["decided_by"])
        for c in answer["categories"]
    ] == [("di_bao", "claim", claim["id"], str(civil_id))]
    assert answer["explanation"][0] == f"di_bao: accepted claim {claim['id']}"

    assert [
        c["id"]
        for c in (await client.get("/api/v1/eligibility/claims", params={"status": "pending"}, headers=civil)).json()[
            "items"
        ]
    ] == []
    actions = await conn.fetch(
        "SELECT action FROM audit_log WHERE entity = 'eligibility_claim' AND entity_id = $1 ORDER BY id", claim["id"]
    )
    assert [a["action"] for a in actions] == ["create", "accept"]


async def test_rejection_needs_a_reason_and_a_rejected_claim_gives_no_subsidy(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil, staff_a = await heads(client, "admin", "civil", "staff_a")
    await publish_policy(client, admin)
    _, persons = await register(conn, [(ID_NUMBERS[1], "张三")])
    claim_in = {"person_id": str(persons[ID_NUMBERS[1]]), "coverage_year": 2026, "category": "te_kun"}
    claim = (await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff_a)).json()
    bare = await client.post(f"/api/v1/eligibility/claims/{claim['id']}/reject", json={}, headers=civil)
    assert (bare.status_code, bare.json()["errors"][0]["field"]) == (422, "reason")
    rejected = await client.post(
        f"/api/v1/eligibility/claims/{claim['id']}/reject", json={"reason": "不符合特困条件"}, headers=civil
    )
    assert (rejected.json()["status"], rejected.json()["reason"]) == ("rejected", "不符合特困条件")
    assert (await check(client, staff_a, [ID_NUMBERS[1]]))["items"][0]["subsidy_fen"] == 0
    # A rejected claim does not block a new one.
    renewed = await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff_a)
    assert renewed.status_code == 201, renewed.text


async def test_a_person_on_the_list_needs_no_claim_and_exclusions_are_not_claimable(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil, staff_a = await heads(client, "admin", "civil", "staff_a")
    await publish_policy(client, admin)
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="di_bao")
    _, persons = await register(conn, [(ID_NUMBERS[1], "张三")])
    person_id = str(persons[ID_NUMBERS[1]])
    listed = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": person_id, "coverage_year": 2026, "category": "di_bao"},
        headers=staff_a,
    )
    assert (listed.status_code, listed.json()["code"]) == (409, "already_listed")
    excluded = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": person_id, "coverage_year": 2026, "category": "deceased"},
        headers=staff_a,
    )
    assert (excluded.status_code, excluded.json()["errors"][0]["field"]) == (422, "category")
