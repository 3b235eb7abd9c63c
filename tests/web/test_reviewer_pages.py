"""The reviewer's screens through the test client (the browser tests drive the same in chromium)."""

from __future__ import annotations

import io
import uuid

import asyncpg
import openpyxl
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.access.test_scope_walk import township_a_records
from tests.factories import ID_NUMBERS
from tests.web.helpers import console_login


async def test_confirm_approve_and_settle_through_the_pages(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    samples = await township_a_records(client, conn)
    csrf = await console_login(client, "reviewer_a")
    queue = await client.get("/console/enrollments?year=2026&status=paid")
    assert samples["enrollment_id"] in queue.text, queue.text
    # Whom the reviewer confirms: 李四, by name and masked number (never the whole), the read audited.
    assert "李四" in queue.text and ID_NUMBERS[2] not in queue.text
    assert f"{ID_NUMBERS[2][:6]}********{ID_NUMBERS[2][-4:]}" in queue.text
    read = await conn.fetchval(
        "SELECT summary->>'person_ids' FROM audit_log WHERE action = 'read' AND entity = 'enrollment_queue'"
    )
    assert read is not None and samples["person_id"] in read
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


async def test_the_enrolment_roster_downloads_for_the_township_and_the_district(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await township_a_records(client, conn)
    for username in ("reviewer_a", "admin"):
        client.cookies.clear()
        await console_login(client, username)
        board = await client.get("/console/reports")
        assert "/console/reports/enrolment-roster?year=" in board.text and "download-roster" in board.text
        csv = await client.get("/console/reports/enrolment-roster?year=2026&format=csv")
        assert csv.status_code == 200, csv.text
        assert 'filename="enrolment-roster-2026.csv"' in csv.headers["content-disposition"]
        lines = csv.content.decode("utf-8-sig").splitlines()
        assert any("李四" in line and "110105********0026" in line for line in lines), lines
        xlsx = await client.get("/console/reports/enrolment-roster?year=2026&format=xlsx")
        assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")
        book = openpyxl.load_workbook(io.BytesIO(xlsx.content), read_only=True)
        cells = [str(c) for row in book.active.iter_rows(values_only=True) for c in row if c is not None]
        assert "李四" in cells
    # Another township's reviewer: the header row and no one of township A.
    client.cookies.clear()
    await console_login(client, "reviewer_b")
    other = await client.get("/console/reports/enrolment-roster?year=2026&format=csv")
    assert other.status_code == 200 and "李四" not in other.content.decode("utf-8-sig")
