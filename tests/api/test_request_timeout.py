"""Every request has a time limit: a request stuck (here: behind a table lock) is stopped and
answered 503 `request_timeout` with Retry-After, its connection goes back to the pool, and the
service keeps answering."""

from __future__ import annotations

import asyncio

import asyncpg
from litestar.testing import AsyncTestClient

from backend.app import create_app
from tests.conftest import auth_headers, make_settings
from tests.factories import ID_NUMBERS, create_household, member


async def test_a_stuck_request_is_stopped_and_answered_503_and_the_pool_recovers(
    db_dsn: str,
    seeded: None,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    app = create_app(make_settings(db_dsn, request_timeout_s=0.5, pool_max_size=2), configure_logs=False)
    async with AsyncTestClient(app) as client:
        staff = await auth_headers(client, "staff_a")
        household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
        path = f"/api/v1/households/{household['id']}"
        async with conn.transaction():
            await conn.execute("LOCK TABLE households IN ACCESS EXCLUSIVE MODE")
            for _ in range(4):  # more stuck requests than the pool has connections
                stuck = await asyncio.wait_for(client.get(path, headers=staff), 10)
                assert stuck.status_code == 503, stuck.text
                assert stuck.headers["content-type"].startswith("application/problem+json")
                assert stuck.json()["code"] == "request_timeout"
                assert stuck.headers["retry-after"] == "5"
        answered = await client.get(path, headers=staff)
        assert answered.status_code == 200, answered.text
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == 0
