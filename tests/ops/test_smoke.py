from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers


async def test_staff_reads_own_township(client: AsyncTestClient[Litestar]) -> None:
    headers = await auth_headers(client, "staff_a")
    response = await client.get("/api/v1/divisions/330106001000", headers=headers)
    assert response.status_code == 200
    assert {c["code"] for c in response.json()["children"]} == {
        "330106001001",
        "330106001002",
        "330106001201",
    }
