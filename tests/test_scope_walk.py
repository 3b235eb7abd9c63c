"""Every route in the OpenAPI schema, walked as a user of another township: no data comes back.

Township A's records are created first; each route is then called with A's identifiers as a
staff member and as a reviewer of township B. A route may answer 401/403/404/405/409/422 or an
empty list — never anything that names one of A's records. A new route with a new path parameter
fails here until it gets a sample value below, so every later route joins the walk.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers

TOWNSHIP_A = "330106001000"
VILLAGE_A = "330106001001"


async def township_a_records(client: AsyncTestClient[Litestar], conn: asyncpg.Connection) -> dict[str, str]:  # type: ignore[type-arg]
    """Creates records that belong to township A and returns sample path values naming them."""
    staff_a = await auth_headers(client, "staff_a")
    device = await client.post("/api/v1/devices", json={"model": "Tab A8", "app_version": "1.0.0"}, headers=staff_a)
    assert device.status_code == 201, device.text
    admin = await auth_headers(client, "admin")
    partner = await client.post("/api/v1/partners", json={"name": "县人民医院"}, headers=admin)
    assert partner.status_code == 201, partner.text
    staff_a_id = await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'")
    return {
        "code": VILLAGE_A,
        "user_id": str(staff_a_id),
        "device_id": device.json()["device"]["id"],
        "partner_id": partner.json()["partner"]["id"],
    }


def operations(app: Litestar) -> list[tuple[str, str, list[str]]]:
    schema = app.openapi_schema.to_schema()
    found = []
    for path, item in schema["paths"].items():
        if not path.startswith(("/api/", "/fhir")):
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                found.append((method.upper(), path, re.findall(r"{(\w+)}", path)))
    # Logout ends the walker's own session: walk it last, so every other route sees a live token.
    return sorted(found, key=lambda op: op[1].endswith("/logout"))


def leaks(body: Any, secrets: set[str]) -> list[str]:
    text = str(body)
    return [s for s in secrets if s in text]


@pytest.mark.parametrize("outsider", ["staff_b", "reviewer_b"])
async def test_every_route_gives_another_township_no_data(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    app: Litestar,
    outsider: str,
) -> None:
    samples = await township_a_records(client, conn)
    # Anything that names township A's records, people or places.
    secrets = {v for k, v in samples.items() if k != "code"} | {"staff_a", "330106001", "北山"}
    headers = await auth_headers(client, outsider)
    walked = 0
    for method, path, params in operations(app):
        missing = [p for p in params if p not in samples]
        assert not missing, f"{method} {path}: add a township-A sample for {missing} to the scope walk"
        url = path
        for p in params:
            url = url.replace("{" + p + "}", samples[p])
        response = await client.request(method, url, headers=headers, json={} if method != "GET" else None)
        walked += 1
        assert response.status_code != 500, f"{method} {path}: {response.text}"
        if response.status_code == 204:
            assert not response.content
        elif response.status_code < 300:
            body = response.json()
            assert isinstance(body, dict) and body.get("items") == [], f"{method} {path} gave data: {body}"
        else:
            assert response.status_code in (401, 403, 404, 405, 409, 422), f"{method} {path}: {response.status_code}"
        assert not leaks(response.text, secrets), f"{method} {path} leaked {leaks(response.text, secrets)}"
    assert walked >= 20
