"""Collections reports and the reconciliation of QR and bank payments against a channel statement."""

from __future__ import annotations

import csv
import io
from uuid import UUID

import asyncpg
import openpyxl
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.db import create_pool
from backend.jobs import worker
from tests.conftest import auth_headers, make_settings
from tests.premiums.test_payments import (
    World,
    pay,
    world_fixture,  # noqa: F401 - registers the `world` fixture here
)

Client = AsyncTestClient[Litestar]


async def populate(conn: asyncpg.Connection, world: World) -> None:  # type: ignore[type-arg]
    first, second = UUID(world.person_ids[0]), UUID(world.person_ids[1])
    await pay(conn, world, receipt_no="A00000001", amount_fen=40000, person_ids=[first])
    await pay(
        conn, world, receipt_no="A00000002", amount_fen=30000, method="qr", channel_ref="WX-1", person_ids=[second]
    )
    await pay(
        conn, world, receipt_no="A00000003", amount_fen=10000, method="qr", channel_ref="WX-2", person_ids=[second]
    )
    await pay(
        conn, world, receipt_no="A00000004", amount_fen=500, method="bank", channel_ref="BK-9", person_ids=[second]
    )


async def test_collections_by_collector_and_township_in_three_formats(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await populate(conn, world)
    reviewer = await auth_headers(client, "reviewer_a")
    params = {"from": "2025-10-01", "to": "2025-10-31"}
    by_township = await client.get(
        "/api/v1/reports/collections", params={**params, "group": "township"}, headers=reviewer
    )
    assert by_township.status_code == 200, by_township.text
    assert [
        (r["key"], r["payments"], r["cash_fen"], r["qr_fen"], r["bank_fen"], r["net_fen"])
        for r in by_township.json()["rows"]
    ] == [("330106001000", 4, 40000, 40000, 500, 80500)]
    by_day = await client.get(
        "/api/v1/reports/collections",
        params={**params, "group": "day", "format": "csv", "headers": "codes"},
        headers=reviewer,
    )
    rows = list(csv.reader(io.StringIO(by_day.content.decode("utf-8-sig"))))
    assert rows == [
        ["key", "payments", "cash_fen", "qr_fen", "bank_fen", "voided_fen", "refunded_fen", "net_fen"],
        ["2025-10-08", "4", "40000", "40000", "500", "0", "0", "80500"],
    ]
    as_xlsx = await client.get(
        "/api/v1/reports/collections",
        params={**params, "group": "collector", "format": "xlsx", "headers": "codes"},
        headers=reviewer,
    )
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).active
    assert sheet is not None
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    # The collector named beside the id; the totals below.
    assert list(sheet.iter_rows(values_only=True))[1:] == [
        (staff_a, "北山街道经办员", 4, 40000, 40000, 500, 0, 0, 80500),
        ("total", None, 4, 40000, 40000, 500, 0, 0, 80500),
    ]
    other = await client.get(
        "/api/v1/reports/collections", params=params, headers=await auth_headers(client, "reviewer_b")
    )
    assert other.json()["rows"] == []


async def test_statement_reconciliation_finds_matched_mismatched_missing_and_unexpected(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await populate(conn, world)
    statement = (
        "交易流水号,交易时间,交易金额\n"
        "WX-1,2025-10-08 09:01:00,300.00\n"
        "WX-2,2025-10-08 09:05:00,99.00\n"
        "WX-7,2025-10-08 10:00:00,1.50\n"
    ).encode("gb18030")
    response = await client.post(
        "/api/v1/reconciliations",
        files={"file": ("statement.csv", statement, "text/csv")},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(m["channel_ref"], m["amount_fen"]) for m in body["matched"]] == [("WX-1", 30000)]
    assert [(m["channel_ref"], m["recorded_fen"], m["statement_fen"]) for m in body["amount_mismatches"]] == [
        ("WX-2", 10000, 9900)
    ]
    assert [(m["receipt_no"], m["amount_fen"]) for m in body["missing"]] == [("A00000004", 500)]
    assert [(u["row"], u["channel_ref"], u["amount_fen"]) for u in body["unexpected"]] == [(4, "WX-7", 150)]


async def test_a_statement_reconciled_by_a_job_gives_the_same_report(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    db_dsn: str,
) -> None:
    await populate(conn, world)
    statement = b"channel_ref,paid_at,amount\nWX-1,2025-10-08 09:01:00,300.00\nWX-7,2025-10-08 10:00:00,1.50\n"
    reviewer = await auth_headers(client, "reviewer_a")
    stored = await client.post(
        "/api/v1/reconciliations?background=true",
        files={"file": ("statement.csv", statement, "text/csv")},
        headers=reviewer,
    )
    assert stored.status_code == 202, stored.text
    pool = await create_pool(db_dsn, 1, 2)
    try:
        ended = await worker.run_one(pool, job_handlers(), make_settings(db_dsn))
    finally:
        await pool.close()
    assert ended is not None and (ended.kind, ended.state) == ("reconciliation", "succeeded")
    report = (await client.get(stored.headers["location"], headers=reviewer)).json()["result"]
    assert [(m["channel_ref"], m["amount_fen"]) for m in report["matched"]] == [("WX-1", 30000)]
    assert [(u["row"], u["channel_ref"]) for u in report["unexpected"]] == [(3, "WX-7")]
    assert {m["receipt_no"] for m in report["missing"]} == {"A00000003", "A00000004"}
    other = await client.get(stored.headers["location"], headers=await auth_headers(client, "reviewer_b"))
    assert other.status_code == 404


async def test_statement_with_a_bad_row_names_it(client: Client, world: World) -> None:
    statement = b"channel_ref,paid_at,amount\nWX-1,2025-10-08,300.001\n"
    response = await client.post(
        "/api/v1/reconciliations",
        files={"file": ("s.csv", statement, "text/csv")},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "row 2"
