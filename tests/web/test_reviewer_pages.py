"""The reviewer's screens through the test client (the browser tests drive the same in chromium)."""

from __future__ import annotations

import uuid

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.access.test_scope_walk import township_a_records
from tests.web.helpers import console_login


async def test_confirm_approve_and_settle_through_the_pages(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    samples = await township_a_records(client, conn)
    csrf = await console_login(client, "reviewer_a")
    queue = await client.get("/console/enrollments?year=2026&status=paid")
    assert samples["enrollment_id"] in queue.text, queue.text
    confirmed = await client.post(
        "/console/enrollments/confirm?year=2026&status=paid", data={"ids": samples["enrollment_id"], "_csrf": csrf}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert "1 enrolment confirmed." in confirmed.text
    assert (
        await conn.fetchval("SELECT status FROM enrollments WHERE id = $1", uuid.UUID(samples["enrollment_id"]))
        == "confirmed"
    )
    approved = await client.post(
        f"/console/adjustments/{samples['request_id']}/decide", data={"approve": "yes", "_csrf": csrf}
    )
    assert approved.status_code == 200 and "Approved." in approved.text, approved.text
    for path in (
        "/console/",
        "/console/sync",
        f"/console/households/{samples['household_id']}",
        "/console/collector-days?collector_id=" + samples["collector_id"] + "&day=2025-10-08",
        "/console/reports",
    ):
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.text)
