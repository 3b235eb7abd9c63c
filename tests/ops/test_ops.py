"""Operator endpoints: health, readiness against the schema head; metrics by route template, on a
listener of their own and never on the API's port."""

from __future__ import annotations

import asyncpg
import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.metrics import MetricsServer
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


async def test_metrics_listener_labels_routes_by_template_not_path(client: AsyncTestClient[Litestar]) -> None:
    listener = MetricsServer("127.0.0.1", 0)
    try:
        headers = await auth_headers(client, "staff_a")
        await client.get("/api/v1/divisions/330106001001", headers=headers)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as scraper:
            scraped = await scraper.get("/metrics")
            elsewhere = await scraper.get("/api/v1/divisions")
    finally:
        listener.close()
    assert scraped.status_code == 200
    assert 'route="/api/v1/divisions/{code}"' in scraped.text
    assert "330106001001" not in scraped.text
    assert "canbao_db_pool_connections_in_use" in scraped.text
    assert "canbao_http_request_duration_seconds_bucket" in scraped.text
    assert elsewhere.status_code == 404


async def test_the_api_port_serves_no_metrics_to_anyone(client: AsyncTestClient[Litestar]) -> None:
    await client.get("/health")
    anonymous = await client.get("/metrics")
    admin = await client.get("/metrics", headers=await auth_headers(client, "admin"))
    assert (anonymous.status_code, admin.status_code) == (404, 404)
    assert "canbao_http_requests_total" not in anonymous.text + admin.text


async def test_openapi_schema_describes_every_route(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    login = schema["paths"]["/api/v1/auth/login"]["post"]
    assert "requestBody" in login
    assert "200" in login["responses"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation.get("responses"), f"{method} {path} documents no response"
