"""Operator endpoints: health, readiness against the schema head, metrics by route template."""

from __future__ import annotations

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers


async def test_health_and_ready(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == ready.json()["expected_revision"]


async def test_not_ready_when_schema_is_behind(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await conn.execute("UPDATE alembic_version SET version_num = 'older'")
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["schema_revision"] == "older"


async def test_metrics_label_routes_by_template_not_path(client: AsyncTestClient[Litestar]) -> None:
    headers = await auth_headers(client, "staff_a")
    await client.get("/api/v1/divisions/330106001001", headers=headers)
    text = (await client.get("/metrics")).text
    assert 'route="/api/v1/divisions/{code}"' in text
    assert "330106001001" not in text
    assert "canbao_db_pool_connections_in_use" in text
    assert "canbao_http_request_duration_seconds_bucket" in text


async def test_openapi_schema_describes_every_route(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    login = schema["paths"]["/api/v1/auth/login"]["post"]
    assert "requestBody" in login
    assert "200" in login["responses"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation.get("responses"), f"{method} {path} documents no response"
