"""The audit trail is append-only, and district_admin reads it within scope."""

from __future__ import annotations

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.audit.service import deferred, gathered, record
from tests.conftest import auth_headers


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'nothing'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
async def test_application_role_cannot_change_audit_rows(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    statement: str,
) -> None:
    await record(conn, None, "create", "user", "x", summary={"k": 1})
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(statement)
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'create'") == 1


async def test_admin_filters_audit_and_the_read_is_audited(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin = await auth_headers(client, "admin")
    staff_a = await auth_headers(client, "staff_a")
    device = await client.post("/api/v1/devices", json={"model": "M", "app_version": "1"}, headers=staff_a)
    device_id = device.json()["device"]["id"]
    response = await client.get("/api/v1/audit", params={"entity": "device", "entity_id": device_id}, headers=admin)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["action"], i["entity_id"], i["division_code"]) for i in items] == [
        ("register", device_id, "330106001000")
    ]
    staff_a_id = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    assert items[0]["actor_id"] == staff_a_id
    reads = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'read' AND entity = 'audit_log'")
    assert reads == 1


async def test_audit_is_paged_newest_first(client: AsyncTestClient[Litestar]) -> None:
    admin = await auth_headers(client, "admin")
    for _ in range(3):
        await auth_headers(client, "staff_a")
    first = await client.get("/api/v1/audit", params={"action": "login", "limit": 2}, headers=admin)
    page = first.json()
    assert len(page["items"]) == 2
    assert page["items"][0]["id"] > page["items"][1]["id"]
    rest = await client.get(
        "/api/v1/audit", params={"action": "login", "limit": 2, "before": page["next_cursor"]}, headers=admin
    )
    # 4 logins in all: admin's and staff_a's three.
    assert len(rest.json()["items"]) == 2
    assert rest.json()["next_cursor"] is None


async def test_township_roles_cannot_read_audit(client: AsyncTestClient[Litestar]) -> None:
    for username in ("staff_a", "reviewer_a", "civil"):
        response = await client.get("/api/v1/audit", headers=await auth_headers(client, username))
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"


async def test_rows_gathered_for_a_statement_go_to_a_holder_further_out_once_it_succeeded(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """A service writing its audit rows within its own statement gets them as columns; under a caller
    that holds rows back (a sync push), the rows are the caller's to write, and only if it succeeded."""
    with gathered(conn) as alone:
        await record(conn, None, "create", "user", "a", division_code="330106", summary={"k": 1})
    assert alone.columns()[3:7] == [["create"], ["user"], ["a"], ["330106"]]
    with deferred(conn) as push:
        with gathered(conn) as inner:
            await record(conn, None, "create", "user", "b")
        assert all(column == [] for column in inner.columns())
        with gathered(conn):
            await record(conn, None, "create", "user", "c")  # its statement failed: never written()
        assert push.rows == []
        inner.written()
        await push.write()
    assert [r["entity_id"] for r in await conn.fetch("SELECT entity_id FROM audit_log ORDER BY id")] == ["b"]
