"""A household's audit trail (`GET /households/{id}/audit`): the rows about it, its enrolments and
its payments, for staff whose scope holds it; another township's staff and residents find nothing.
The console's household page shows the same rows, with each member's continuous years."""

from __future__ import annotations

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.access.test_scope_walk import township_a_records
from tests.conftest import auth_headers
from tests.web.helpers import console_login

Client = AsyncTestClient[Litestar]


async def test_the_trail_of_a_household_for_its_township_and_district(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    samples = await township_a_records(client, conn)
    # Household 0002: 张小明's, where 李四 moved with the enrolment, paid there.
    home = await conn.fetchval("SELECT id::text FROM households WHERE household_no = '0002'")
    path = f"/api/v1/households/{home}/audit"
    answer = await client.get(path, headers=await auth_headers(client, "reviewer_a"))
    assert answer.status_code == 200, answer.text
    rows = answer.json()["items"]
    seen = {(r["entity"], r["action"]) for r in rows}
    assert {("household", "create"), ("enrollment", "enrol"), ("payment", "record")} <= seen, seen
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert {r["entity_id"] for r in rows if r["entity"] == "household"} == {home}
    assert samples["payment_id"] in {r["entity_id"] for r in rows if r["entity"] == "payment"}
    # Nothing of the household 李四 left (0001): its rows are its own trail.
    assert samples["household_id"] not in {r["entity_id"] for r in rows}
    # Pages: two at a time, then the rest, no row twice.
    first = (await client.get(path, params={"limit": 2}, headers=await auth_headers(client, "staff_a"))).json()
    assert len(first["items"]) == 2 and first["next_cursor"] == first["items"][-1]["id"]
    rest = await client.get(
        path, params={"before": first["next_cursor"], "limit": 500}, headers=await auth_headers(client, "staff_a")
    )
    assert [r["id"] for r in first["items"] + rest.json()["items"]][: len(ids)] == [
        *ids[:2],
        *[r["id"] for r in rest.json()["items"]][: len(ids) - 2],
    ]
    # The district reads it too; the read is itself audited, naming the household.
    assert (await client.get(path, headers=await auth_headers(client, "admin"))).status_code == 200
    read = await conn.fetchval(
        "SELECT summary->>'household_id' FROM audit_log WHERE entity = 'audit_log' ORDER BY id DESC LIMIT 1"
    )
    assert read == home
    # Another township's reviewer finds nothing.
    refused = await client.get(path, headers=await auth_headers(client, "reviewer_b"))
    assert refused.status_code == 404 and samples["household_id"] not in refused.text
    assert (await client.get(path, params={"limit": 0}, headers=await auth_headers(client, "admin"))).status_code in (
        400,
        422,
    )


async def test_the_household_page_shows_continuity_and_the_trail(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await township_a_records(client, conn)
    home = await conn.fetchval("SELECT id::text FROM households WHERE household_no = '0002'")
    await console_login(client, "reviewer_a")
    page = await client.get(f"/console/households/{home}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Continuous years" in text and "Audit trail" in text
    trail = text.split("Audit trail")[1]
    assert "<td>created</td><td>household</td>" in trail and "<td>enrolled</td><td>enrolment</td>" in trail
    assert "<td>recorded</td><td>payment</td>" in trail
    assert "The audit log is read by the district bureau" not in text
