"""Administration by district_admin: users, devices (tablets) and partners (hospital systems).

Every write is checked in audit_log through a separate connection to the same database.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import create_app
from tests.conftest import PASSWORD, auth_headers, bearer, login, make_settings

Client = AsyncTestClient[Litestar]
Connection = asyncpg.Connection  # type: ignore[type-arg]

DISTRICT = "330106000000"
TOWNSHIP_A = "330106001000"
TOWNSHIP_B = "330106002000"
VILLAGE_A = "330106001001"
PROBE = "/api/v1/devices"  # any signed-in staff member may call it: 200 means the token was accepted
NEW_PASSWORD = "a-new-password-2026"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    return body


def assert_names_field(response: httpx.Response, field: str) -> None:
    body = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in body["errors"]] == [field]


async def user_id(conn: Connection, username: str) -> uuid.UUID:
    value = await conn.fetchval("SELECT id FROM users WHERE username = $1", username)
    assert isinstance(value, uuid.UUID)
    return value


async def audit_trail(conn: Connection, entity: str, entity_id: object) -> list[tuple[uuid.UUID | None, str]]:
    """(actor_id, action) of every audit row about one record, oldest first."""
    rows = await conn.fetch(
        "SELECT actor_id, action FROM audit_log WHERE entity = $1 AND entity_id = $2 ORDER BY id",
        entity,
        str(entity_id),
    )
    return [(row["actor_id"], row["action"]) for row in rows]


async def audit_count(conn: Connection) -> int:
    count = await conn.fetchval("SELECT count(*) FROM audit_log")
    assert isinstance(count, int)
    return count


@asynccontextmanager
async def concurrent_client(db_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that drives the app in the test's own event loop, so `asyncio.gather` really interleaves
    requests (the AsyncTestClient runs each request to completion before it returns)."""
    app = create_app(make_settings(db_dsn, pool_max_size=8), configure_logs=False)
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://canbao.test") as client:
        yield client


async def headers_for(test_client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await test_client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def new_user(
    username: str = "staff_c", role: str = "township_staff", division_code: str = TOWNSHIP_A
) -> dict[str, Any]:
    return {
        "username": username,
        "password": NEW_PASSWORD,
        "role": role,
        "division_code": division_code,
        "full_name": "新经办员",
    }


# Users: create ----------------------------------------------------------------------------------


async def test_admin_creates_a_user_who_can_then_log_in(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post("/api/v1/users", json=new_user(), headers=admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert {k: created[k] for k in ("username", "role", "division_code", "full_name", "active")} == {
        "username": "staff_c",
        "role": "township_staff",
        "division_code": TOWNSHIP_A,
        "full_name": "新经办员",
        "active": True,
    }
    assert created["disabled_at"] is None
    assert "password" not in created
    assert "password_hash" not in created
    stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(created["id"]))
    assert stored.startswith("$argon2id$")
    assert NEW_PASSWORD not in stored
    assert (await client.post("/api/v1/auth/login", json={"username": "staff_c", "password": NEW_PASSWORD})).is_success
    assert await audit_trail(conn, "user", created["id"]) == [
        (await user_id(conn, "admin"), "create"),
        (uuid.UUID(created["id"]), "login"),
    ]


@pytest.mark.parametrize(
    ("role", "division_code"),
    [
        ("township_staff", TOWNSHIP_B),
        ("township_reviewer", TOWNSHIP_A),
        ("civil_affairs", DISTRICT),
        ("civil_affairs", TOWNSHIP_B),
        ("district_admin", DISTRICT),
    ],
)
async def test_role_may_work_at_its_division_level(client: Client, role: str, division_code: str) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post("/api/v1/users", json=new_user("new_user", role, division_code), headers=admin)
    assert response.status_code == 201, response.text
    assert (response.json()["role"], response.json()["division_code"]) == (role, division_code)


@pytest.mark.parametrize(
    ("role", "division_code"),
    [
        ("township_staff", DISTRICT),
        ("township_staff", VILLAGE_A),
        ("township_reviewer", DISTRICT),
        ("civil_affairs", VILLAGE_A),
        ("district_admin", TOWNSHIP_A),
        ("district_admin", "330100000000"),  # the city: above the admin's own district
        ("township_staff", "330106009000"),  # no such division
        ("township_staff", "330108001000"),  # a township of another district
    ],
)
async def test_role_at_a_wrong_level_or_outside_scope_is_422_naming_division_code(
    client: Client, conn: Connection, role: str, division_code: str
) -> None:
    await conn.execute(
        "INSERT INTO divisions (code, parent_code, level, name) VALUES"
        " ('330108000000', '330100000000', 'district', '滨江区'),"
        " ('330108001000', '330108000000', 'township', '西兴街道')"
    )
    admin = await auth_headers(client, "admin")
    before = await audit_count(conn)
    response = await client.post("/api/v1/users", json=new_user("new_user", role, division_code), headers=admin)
    assert_names_field(response, "division_code")
    assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'new_user'") == 0
    assert await audit_count(conn) == before


@pytest.mark.parametrize("password", ["short-pw1", " leading-space-pw", "trailing-space-pw ", "x" * 257])
async def test_weak_password_is_422_naming_password(client: Client, conn: Connection, password: str) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post("/api/v1/users", json=dict(new_user(), password=password), headers=admin)
    assert_names_field(response, "password")
    assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'staff_c'") == 0


@pytest.mark.parametrize("username", ["ab", "has space", "名字", "x" * 65])
async def test_bad_username_is_422_naming_username(client: Client, username: str) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post("/api/v1/users", json=dict(new_user(), username=username), headers=admin)
    assert_names_field(response, "username")


@pytest.mark.parametrize("username", ["staff_a", "STAFF_A", "Staff_A"])
async def test_duplicate_username_in_any_case_is_409_username_taken(
    client: Client, conn: Connection, username: str
) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post("/api/v1/users", json=dict(new_user(), username=username), headers=admin)
    assert_problem(response, 409, "username_taken")
    assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(username) = 'staff_a'") == 1


async def test_concurrent_creates_of_one_username_give_one_user_and_one_409(
    seeded: None, db_dsn: str, conn: Connection
) -> None:
    async with concurrent_client(db_dsn) as client:
        admin = await headers_for(client, "admin")
        responses = await asyncio.gather(
            *(client.post("/api/v1/users", json=new_user(name), headers=admin) for name in ("staff_c", "STAFF_C"))
        )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert [r.json()["code"] for r in responses if r.status_code == 409] == ["username_taken"]
    assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(username) = 'staff_c'") == 1


# Users: list, get ---------------------------------------------------------------------------------


async def test_admin_lists_users_with_filters(client: Client) -> None:
    admin = await auth_headers(client, "admin")

    async def usernames(**params: Any) -> list[str]:
        response = await client.get("/api/v1/users", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return sorted(user["username"] for user in response.json()["items"])

    assert await usernames() == ["admin", "civil", "reviewer_a", "reviewer_b", "staff_a", "staff_b"]
    assert await usernames(role="township_staff") == ["staff_a", "staff_b"]
    assert await usernames(division_code=TOWNSHIP_A) == ["reviewer_a", "staff_a"]
    assert await usernames(role="township_reviewer", division_code=TOWNSHIP_B) == ["reviewer_b"]
    assert await usernames(active="false") == []
    staff_b = await client.get(
        "/api/v1/users", params={"role": "township_staff", "division_code": TOWNSHIP_B}, headers=admin
    )
    disabled = await client.post(f"/api/v1/users/{staff_b.json()['items'][0]['id']}/disable", headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert await usernames(active="false") == ["staff_b"]
    assert await usernames(active="true", role="township_staff") == ["staff_a"]


async def test_user_list_pages_by_keyset_cursor(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    seen: list[str] = []
    page_sizes: list[int] = []
    params: dict[str, Any] = {"limit": 4}
    while True:
        response = await client.get("/api/v1/users", params=params, headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        page_sizes.append(len(page["items"]))
        seen.extend(user["id"] for user in page["items"])
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == page["items"][-1]["id"]
        params = {"limit": 4, "after": page["next_cursor"]}
    assert page_sizes == [4, 2]
    assert len(set(seen)) == 6
    assert seen == sorted(seen, key=uuid.UUID)
    everything = (await client.get("/api/v1/users", headers=admin)).json()
    assert [user["id"] for user in everything["items"]] == seen
    assert everything["next_cursor"] is None


async def test_full_last_page_has_no_cursor(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    first = (await client.get("/api/v1/users", params={"limit": 3}, headers=admin)).json()
    second = (
        await client.get("/api/v1/users", params={"limit": 3, "after": first["next_cursor"]}, headers=admin)
    ).json()
    assert (len(first["items"]), len(second["items"])) == (3, 3)
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"after": "not-a-uuid"}, "after"),
        ({"division_code": "3301"}, "division_code"),
    ],
)
async def test_bad_list_parameters_are_422(client: Client, params: dict[str, Any], field: str) -> None:
    admin = await auth_headers(client, "admin")
    body = assert_problem(await client.get("/api/v1/users", params=params, headers=admin), 422, "validation_error")
    assert field in body["detail"]


async def test_admin_gets_a_user_and_unknown_id_is_404(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_a = await user_id(conn, "staff_a")
    response = await client.get(f"/api/v1/users/{staff_a}", headers=admin)
    assert response.status_code == 200, response.text
    assert (response.json()["username"], response.json()["role"]) == ("staff_a", "township_staff")
    assert_problem(await client.get(f"/api/v1/users/{uuid.uuid4()}", headers=admin), 404, "not_found")


@pytest.mark.parametrize("username", ["civil", "staff_a", "reviewer_a", "staff_b", "reviewer_b"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", new_user()),
        ("GET", "/api/v1/partners", None),
        ("POST", "/api/v1/partners", {"name": "县人民医院"}),
    ],
)
async def test_other_roles_get_403_on_users_and_partners(
    client: Client, conn: Connection, username: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    headers = await auth_headers(client, username)
    before = await audit_count(conn)
    response = await client.request(method, path, json=body, headers=headers)
    assert_problem(response, 403, "forbidden")
    assert await audit_count(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM partners") == 0


async def test_other_roles_get_403_on_a_single_user(client: Client, conn: Connection) -> None:
    reviewer = await auth_headers(client, "reviewer_a")
    staff_a = await user_id(conn, "staff_a")
    assert_problem(await client.get(f"/api/v1/users/{staff_a}", headers=reviewer), 403, "forbidden")
    patched = await client.patch(f"/api/v1/users/{staff_a}", json={"role": "township_reviewer"}, headers=reviewer)
    assert_problem(patched, 403, "forbidden")
    assert_problem(await client.post(f"/api/v1/users/{staff_a}/disable", headers=reviewer), 403, "forbidden")
    assert await conn.fetchval("SELECT (role, active)::text FROM users WHERE id = $1", staff_a) == (
        "(township_staff,t)"
    )


# Users: change, disable, password ---------------------------------------------------------------


async def test_patch_changes_role_and_the_new_role_applies_at_once(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_a_token = await auth_headers(client, "staff_a")
    staff_a = await user_id(conn, "staff_a")
    # A township_staff may not read the user list; promoted to district_admin they may, with the same token.
    assert (await client.get("/api/v1/users", headers=staff_a_token)).status_code == 403
    response = await client.patch(
        f"/api/v1/users/{staff_a}", json={"role": "civil_affairs", "division_code": DISTRICT}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert (response.json()["role"], response.json()["division_code"]) == ("civil_affairs", DISTRICT)
    assert (await client.get(f"/api/v1/divisions/{DISTRICT}", headers=staff_a_token)).status_code == 200
    row = await conn.fetchrow(
        "SELECT actor_id, summary FROM audit_log WHERE entity = 'user' AND entity_id = $1 AND action = 'update'",
        str(staff_a),
    )
    assert row is not None
    assert row["actor_id"] == await user_id(conn, "admin")
    assert row["summary"] == {
        "role": {"before": "township_staff", "after": "civil_affairs"},
        "division_code": {"before": TOWNSHIP_A, "after": DISTRICT},
    }


async def test_patch_moves_scope_and_the_old_township_is_out_of_reach_at_once(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_a_token = await auth_headers(client, "staff_a")
    staff_a = await user_id(conn, "staff_a")
    assert (await client.get(f"/api/v1/divisions/{TOWNSHIP_A}", headers=staff_a_token)).status_code == 200
    response = await client.patch(f"/api/v1/users/{staff_a}", json={"division_code": TOWNSHIP_B}, headers=admin)
    assert response.status_code == 200, response.text
    assert_problem(await client.get(f"/api/v1/divisions/{TOWNSHIP_A}", headers=staff_a_token), 404, "not_found")
    assert (await client.get(f"/api/v1/divisions/{TOWNSHIP_B}", headers=staff_a_token)).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"division_code": DISTRICT},  # staff stays staff: a district is the wrong level
        {"role": "district_admin"},  # an admin at a township: wrong level
        {"division_code": "330100000000"},  # outside the admin's scope
    ],
)
async def test_patch_to_an_impossible_role_or_scope_is_422(
    client: Client, conn: Connection, change: dict[str, str]
) -> None:
    admin = await auth_headers(client, "admin")
    staff_a = await user_id(conn, "staff_a")
    assert_names_field(await client.patch(f"/api/v1/users/{staff_a}", json=change, headers=admin), "division_code")
    row = await conn.fetchrow("SELECT role, division_code FROM users WHERE id = $1", staff_a)
    assert row is not None
    assert (row["role"], row["division_code"]) == ("township_staff", TOWNSHIP_A)
    assert await audit_trail(conn, "user", staff_a) == [(None, "create")]  # only the demo seed's


async def test_patch_unknown_user_is_404(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.patch(f"/api/v1/users/{uuid.uuid4()}", json={"full_name": "x"}, headers=admin)
    assert_problem(response, 404, "not_found")


async def test_disabled_users_tokens_stop_working_at_once(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_pair = await login(client, "staff_a")
    assert (await client.get(PROBE, headers=bearer(staff_pair))).status_code == 200
    staff_a = await user_id(conn, "staff_a")
    response = await client.post(f"/api/v1/users/{staff_a}/disable", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert response.json()["disabled_at"] is not None
    assert_problem(await client.get(PROBE, headers=bearer(staff_pair)), 401, "invalid_token")
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": staff_pair["refresh_token"]})
    assert_problem(refreshed, 401, "invalid_token")
    denied = await client.post("/api/v1/auth/login", json={"username": "staff_a", "password": PASSWORD})
    assert_problem(denied, 401, "invalid_credentials")
    assert (await user_id(conn, "admin"), "update") in await audit_trail(conn, "user", staff_a)
    assert (
        await conn.fetchval("SELECT count(*) FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL", staff_a)
        == 0
    )


async def test_concurrent_disable_and_rename_never_re_enable_the_user(
    seeded: None, db_dsn: str, conn: Connection
) -> None:
    staff_a = await user_id(conn, "staff_a")
    async with concurrent_client(db_dsn) as client:
        admin = await headers_for(client, "admin")
        for attempt in range(8):
            disable, rename = await asyncio.gather(
                client.post(f"/api/v1/users/{staff_a}/disable", headers=admin),
                client.patch(f"/api/v1/users/{staff_a}", json={"full_name": f"改名{attempt}"}, headers=admin),
            )
            assert (disable.status_code, rename.status_code) == (200, 200), rename.text
            row = await conn.fetchrow("SELECT active, full_name FROM users WHERE id = $1", staff_a)
            assert row is not None
            # Neither write is lost: the rename must not carry a stale `active = true` over the disable.
            assert (row["active"], row["full_name"]) == (False, f"改名{attempt}")
            await conn.execute("UPDATE users SET active = true, disabled_at = NULL WHERE id = $1", staff_a)


async def test_re_enabled_user_logs_in_again(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_a = await user_id(conn, "staff_a")
    assert (await client.post(f"/api/v1/users/{staff_a}/disable", headers=admin)).status_code == 200
    enabled = await client.patch(f"/api/v1/users/{staff_a}", json={"active": True}, headers=admin)
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["active"], enabled.json()["disabled_at"]) == (True, None)
    assert (await client.post("/api/v1/auth/login", json={"username": "staff_a", "password": PASSWORD})).is_success


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/users/{id}/disable", None),
        ("PATCH", "/api/v1/users/{id}", {"active": False}),
        ("PATCH", "/api/v1/users/{id}", {"role": "civil_affairs"}),
    ],
)
async def test_admin_cannot_disable_or_demote_self(
    client: Client, conn: Connection, method: str, path: str, body: dict[str, Any] | None
) -> None:
    admin_pair = await login(client, "admin")
    admin = await user_id(conn, "admin")
    response = await client.request(method, path.format(id=admin), json=body, headers=bearer(admin_pair))
    assert_problem(response, 403, "forbidden")
    assert await conn.fetchval("SELECT (role, active)::text FROM users WHERE id = $1", admin) == ("(district_admin,t)")
    assert (await client.get("/api/v1/users", headers=bearer(admin_pair))).status_code == 200


async def test_set_password_ends_old_sessions_and_the_new_one_works(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_pair = await login(client, "staff_a")
    staff_a = await user_id(conn, "staff_a")
    response = await client.post(f"/api/v1/users/{staff_a}/password", json={"password": NEW_PASSWORD}, headers=admin)
    assert response.status_code == 204, response.text
    assert_problem(await client.get(PROBE, headers=bearer(staff_pair)), 401, "invalid_token")
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": staff_pair["refresh_token"]})
    assert_problem(refreshed, 401, "invalid_token")
    old = await client.post("/api/v1/auth/login", json={"username": "staff_a", "password": PASSWORD})
    assert_problem(old, 401, "invalid_credentials")
    assert (await client.post("/api/v1/auth/login", json={"username": "staff_a", "password": NEW_PASSWORD})).is_success
    assert (await user_id(conn, "admin"), "set_password") in await audit_trail(conn, "user", staff_a)
    summaries = await conn.fetch("SELECT summary::text AS s FROM audit_log WHERE action = 'set_password'")
    assert [NEW_PASSWORD in row["s"] for row in summaries] == [False]


async def test_weak_new_password_is_422_and_the_old_one_still_works(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    staff_pair = await login(client, "staff_a")
    staff_a = await user_id(conn, "staff_a")
    response = await client.post(f"/api/v1/users/{staff_a}/password", json={"password": "short"}, headers=admin)
    assert_names_field(response, "password")
    assert (await client.get(PROBE, headers=bearer(staff_pair))).status_code == 200
    assert (await client.post("/api/v1/auth/login", json={"username": "staff_a", "password": PASSWORD})).is_success


async def test_set_password_of_unknown_user_is_404(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.post(
        f"/api/v1/users/{uuid.uuid4()}/password", json={"password": NEW_PASSWORD}, headers=admin
    )
    assert_problem(response, 404, "not_found")


# Devices ----------------------------------------------------------------------------------------


async def register(test_client: Client, headers: dict[str, str], model: str = "Galaxy Tab A8") -> dict[str, Any]:
    response = await test_client.post(
        "/api/v1/devices", json={"model": model, "app_version": "1.4.0", "label": "村里用"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_staff_registers_a_tablet_and_gets_its_secret_once(client: Client, conn: Connection) -> None:
    staff_a_token = await auth_headers(client, "staff_a")
    staff_a = await user_id(conn, "staff_a")
    registered = await register(client, staff_a_token)
    device = registered["device"]
    assert set(registered) == {"device", "device_secret"}
    assert len(registered["device_secret"]) >= 32
    assert {k: device[k] for k in ("owner_id", "model", "app_version", "label", "status")} == {
        "owner_id": str(staff_a),
        "model": "Galaxy Tab A8",
        "app_version": "1.4.0",
        "label": "村里用",
        "status": "active",
    }
    stored = await conn.fetchval("SELECT secret_hash FROM devices WHERE id = $1", uuid.UUID(device["id"]))
    assert stored == hashlib.sha256(registered["device_secret"].encode()).digest()
    fetched = await client.get(f"/api/v1/devices/{device['id']}", headers=staff_a_token)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == device
    listed = (await client.get("/api/v1/devices", headers=staff_a_token)).json()
    assert registered["device_secret"] not in str(listed) + fetched.text
    assert await audit_trail(conn, "device", device["id"]) == [(staff_a, "register")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"app_version": "1.4.0"}, "model"),
        ({"model": "", "app_version": "1.4.0"}, "model"),
        ({"model": "Tab", "app_version": "x" * 41}, "app_version"),
        ({"model": "Tab", "app_version": "1", "owner_id": str(uuid.UUID(int=1))}, "owner_id"),
    ],
)
async def test_bad_device_registration_is_422_naming_the_field(
    client: Client, conn: Connection, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/devices", json=body, headers=await auth_headers(client, "staff_a"))
    assert_names_field(response, field)
    assert await conn.fetchval("SELECT count(*) FROM devices") == 0


async def test_staff_list_only_their_own_devices_and_admin_lists_all(client: Client, conn: Connection) -> None:
    staff_a_token = await auth_headers(client, "staff_a")
    staff_b_token = await auth_headers(client, "staff_b")
    admin = await auth_headers(client, "admin")
    a1 = (await register(client, staff_a_token, "A-1"))["device"]["id"]
    a2 = (await register(client, staff_a_token, "A-2"))["device"]["id"]
    b1 = (await register(client, staff_b_token, "B-1"))["device"]["id"]

    async def ids(headers: dict[str, str], **params: Any) -> list[str]:
        response = await client.get("/api/v1/devices", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [device["id"] for device in response.json()["items"]]

    assert await ids(staff_a_token) == [a1, a2]
    assert await ids(staff_b_token) == [b1]
    # Asking for someone else's tablets does not widen a staff member's view.
    assert await ids(staff_b_token, owner_id=str(await user_id(conn, "staff_a"))) == [b1]
    assert await ids(admin) == [a1, a2, b1]
    assert await ids(admin, owner_id=str(await user_id(conn, "staff_b"))) == [b1]
    assert (await client.post(f"/api/v1/devices/{a2}/suspend", headers=admin)).status_code == 200
    assert await ids(admin, status="suspended") == [a2]
    assert await ids(admin, status="active") == [a1, b1]
    first = (await client.get("/api/v1/devices", params={"limit": 2}, headers=admin)).json()
    assert ([d["id"] for d in first["items"]], first["next_cursor"]) == ([a1, a2], a2)
    assert await ids(admin, after=first["next_cursor"]) == [b1]


async def test_staff_of_another_township_gets_404_for_a_device_not_theirs(client: Client, conn: Connection) -> None:
    device_id = (await register(client, await auth_headers(client, "staff_a")))["device"]["id"]
    for username in ("staff_b", "reviewer_b", "reviewer_a"):
        other = await auth_headers(client, username)
        assert_problem(await client.get(f"/api/v1/devices/{device_id}", headers=other), 404, "not_found")
        assert_problem(await client.post(f"/api/v1/devices/{device_id}/suspend", headers=other), 404, "not_found")
        assert_problem(await client.delete(f"/api/v1/devices/{device_id}", headers=other), 404, "not_found")
    assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", uuid.UUID(device_id)) == "active"


async def test_staff_may_revoke_but_not_suspend_their_own_tablet(client: Client, conn: Connection) -> None:
    staff_a_token = await auth_headers(client, "staff_a")
    device_id = (await register(client, staff_a_token))["device"]["id"]
    assert_problem(await client.post(f"/api/v1/devices/{device_id}/suspend", headers=staff_a_token), 403, "forbidden")
    assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", uuid.UUID(device_id)) == "active"
    revoked = await client.delete(f"/api/v1/devices/{device_id}", headers=staff_a_token)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert (await user_id(conn, "staff_a"), "revoke") in await audit_trail(conn, "device", device_id)


async def test_device_lifecycle_and_revoked_is_final(client: Client, conn: Connection) -> None:
    staff_a = await user_id(conn, "staff_a")
    admin_id = await user_id(conn, "admin")
    device_id = (await register(client, await auth_headers(client, "staff_a")))["device"]["id"]
    admin = await auth_headers(client, "admin")

    suspended = await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["suspended_at"] is not None
    assert_problem(await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin), 409, "conflict")

    reactivated = await client.post(f"/api/v1/devices/{device_id}/reactivate", headers=admin)
    assert reactivated.status_code == 200, reactivated.text
    assert (reactivated.json()["status"], reactivated.json()["suspended_at"]) == ("active", None)
    assert_problem(await client.post(f"/api/v1/devices/{device_id}/reactivate", headers=admin), 409, "conflict")

    revoked = await client.delete(f"/api/v1/devices/{device_id}", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    for again in (
        client.post(f"/api/v1/devices/{device_id}/reactivate", headers=admin),
        client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin),
        client.delete(f"/api/v1/devices/{device_id}", headers=admin),
    ):
        body = assert_problem(await again, 409, "conflict")
        assert body["current_status"] == "revoked"
    assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", uuid.UUID(device_id)) == "revoked"
    assert await audit_trail(conn, "device", device_id) == [
        (staff_a, "register"),
        (admin_id, "suspend"),
        (admin_id, "reactivate"),
        (admin_id, "revoke"),
    ]


async def test_concurrent_reactivate_and_revoke_leave_the_device_revoked(
    seeded: None, db_dsn: str, conn: Connection
) -> None:
    async with concurrent_client(db_dsn) as client:
        staff_a_token = await headers_for(client, "staff_a")
        admin = await headers_for(client, "admin")
        for _ in range(8):
            response = await client.post(
                "/api/v1/devices", json={"model": "Tab", "app_version": "1"}, headers=staff_a_token
            )
            device_id = response.json()["device"]["id"]
            assert (await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin)).status_code == 200
            reactivate, revoke = await asyncio.gather(
                client.post(f"/api/v1/devices/{device_id}/reactivate", headers=admin),
                client.delete(f"/api/v1/devices/{device_id}", headers=admin),
            )
            assert revoke.status_code == 200, revoke.text
            assert reactivate.status_code in (200, 409), reactivate.text
            assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", uuid.UUID(device_id)) == "revoked"


async def test_unknown_device_is_404(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    assert_problem(await client.post(f"/api/v1/devices/{uuid.uuid4()}/suspend", headers=admin), 404, "not_found")


# Partners ---------------------------------------------------------------------------------------


async def create_partner(test_client: Client, headers: dict[str, str], name: str = "县人民医院") -> dict[str, Any]:
    response = await test_client.post("/api/v1/partners", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_partner_secret(conn: Connection, partner_id: str) -> bytes:
    value = await conn.fetchval("SELECT secret_hash FROM partners WHERE id = $1", uuid.UUID(partner_id))
    assert isinstance(value, bytes)
    return value


async def test_admin_creates_a_partner_and_sees_the_secret_once(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    created = await create_partner(client, admin)
    partner = created["partner"]
    assert set(created) == {"partner", "client_secret"}
    assert (partner["name"], partner["division_code"], partner["active"]) == ("县人民医院", DISTRICT, True)
    assert partner["client_id"].startswith("partner-")
    assert (
        await stored_partner_secret(conn, partner["id"]) == hashlib.sha256(created["client_secret"].encode()).digest()
    )
    fetched = await client.get(f"/api/v1/partners/{partner['id']}", headers=admin)
    assert fetched.json() == partner
    listed = await client.get("/api/v1/partners", headers=admin)
    assert listed.json() == {"items": [partner], "next_cursor": None}
    assert created["client_secret"] not in fetched.text + listed.text
    assert await audit_trail(conn, "partner", partner["id"]) == [(await user_id(conn, "admin"), "create")]


@pytest.mark.parametrize("name", ["县人民医院", " 县人民医院 "])
async def test_duplicate_partner_name_is_409(client: Client, conn: Connection, name: str) -> None:
    admin = await auth_headers(client, "admin")
    await create_partner(client, admin, "县人民医院")
    assert_problem(await client.post("/api/v1/partners", json={"name": name}, headers=admin), 409, "partner_name_taken")
    assert await conn.fetchval("SELECT count(*) FROM partners") == 1


async def test_duplicate_partner_name_ignores_letter_case(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    await create_partner(client, admin, "City Hospital")
    response = await client.post("/api/v1/partners", json={"name": "CITY HOSPITAL"}, headers=admin)
    assert_problem(response, 409, "partner_name_taken")


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_blank_or_long_partner_name_is_422_naming_name(client: Client, name: str) -> None:
    admin = await auth_headers(client, "admin")
    assert_names_field(await client.post("/api/v1/partners", json={"name": name}, headers=admin), "name")


async def test_partner_list_pages_by_keyset_cursor(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    ids = [(await create_partner(client, admin, f"医院{n}"))["partner"]["id"] for n in range(3)]
    first = (await client.get("/api/v1/partners", params={"limit": 2}, headers=admin)).json()
    assert ([p["id"] for p in first["items"]], first["next_cursor"]) == (ids[:2], ids[1])
    second = (await client.get("/api/v1/partners", params={"limit": 2, "after": ids[1]}, headers=admin)).json()
    assert ([p["id"] for p in second["items"]], second["next_cursor"]) == (ids[2:], None)


async def test_rotating_a_partner_credential_issues_a_new_secret(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    created = await create_partner(client, admin)
    partner_id = created["partner"]["id"]
    rotated = await client.post(f"/api/v1/partners/{partner_id}/rotate-credential", headers=admin)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["client_secret"] != created["client_secret"]
    assert body["partner"]["client_id"] == created["partner"]["client_id"]
    assert body["partner"]["rotated_at"] is not None
    assert await stored_partner_secret(conn, partner_id) == hashlib.sha256(body["client_secret"].encode()).digest()
    assert await audit_trail(conn, "partner", partner_id) == [
        (await user_id(conn, "admin"), "create"),
        (await user_id(conn, "admin"), "rotate_credential"),
    ]


async def test_disabling_a_partner(client: Client, conn: Connection) -> None:
    admin = await auth_headers(client, "admin")
    partner_id = (await create_partner(client, admin))["partner"]["id"]
    disabled = await client.post(f"/api/v1/partners/{partner_id}/disable", headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["active"], disabled.json()["disabled_at"] is not None) == (False, True)
    assert (await client.get(f"/api/v1/partners/{partner_id}", headers=admin)).json()["active"] is False
    assert await conn.fetchval("SELECT active FROM partners WHERE id = $1", uuid.UUID(partner_id)) is False
    assert await audit_trail(conn, "partner", partner_id) == [
        (await user_id(conn, "admin"), "create"),
        (await user_id(conn, "admin"), "disable"),
    ]


@pytest.mark.parametrize(
    "path", ["/api/v1/partners/{id}", "/api/v1/partners/{id}/rotate-credential", "/api/v1/partners/{id}/disable"]
)
async def test_unknown_partner_is_404(client: Client, path: str) -> None:
    admin = await auth_headers(client, "admin")
    method = "GET" if path.endswith("{id}") else "POST"
    response = await client.request(method, path.format(id=uuid.uuid4()), headers=admin)
    assert_problem(response, 404, "not_found")
