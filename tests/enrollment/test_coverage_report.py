"""应保尽保: persons in registered households, enrolled, confirmed, not enrolled and the rate,
per village, township and district, as JSON, CSV and XLSX."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import openpyxl
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import enrollments
from backend.enrollment.coverage_report import rate
from tests.conftest import auth_headers
from tests.enrollment.test_enrollments import staff_actor
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]


async def populate(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    """Township A: 北山社区 3 people (2 enrolled, 1 of them confirmed); 玉泉村 1 person, not enrolled.
    Township B: 双浦村 1 person, enrolled."""
    await publish_policy(client, await auth_headers(client, "admin"))
    staff_a, staff_b = await auth_headers(client, "staff_a"), await auth_headers(client, "staff_b")
    first = await create_household(
        client,
        staff_a,
        [
            member(ID_NUMBERS[1], "张三"),
            member(ID_NUMBERS[2], "李四", "spouse"),
            member(ID_NUMBERS[4], "张丽", "child"),
        ],
    )
    await create_household(client, staff_a, [member(ID_NUMBERS[3], "王五")], village_code="330106001201")
    second = await create_household(client, staff_b, [member(ID_NUMBERS[5], "赵六")], village_code="330106002201")
    a = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": first["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in first["members"][:2]],
        },
        headers=staff_a,
    )
    await client.post(
        "/api/v1/enrollments",
        json={"household_id": second["id"], "coverage_year": 2026, "person_ids": [second["members"][0]["person_id"]]},
        headers=staff_b,
    )
    async with conn.transaction():
        await enrollments.mark_paid(conn, await staff_actor(conn), UUID(a.json()["items"][0]["id"]), date(2025, 10, 1))
    await client.post(
        "/api/v1/enrollments/confirm",
        json={"ids": [a.json()["items"][0]["id"]]},
        headers=await auth_headers(client, "reviewer_a"),
    )


def counts(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, int, int, float]]:
    return [
        (r["division_code"], r["persons"], r["enrolled"], r["confirmed"], r["not_enrolled"], r["rate_percent"])
        for r in rows
    ]


async def test_report_by_village_township_and_district(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    admin = await auth_headers(client, "admin")
    villages = (await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)).json()
    assert counts(villages["rows"]) == [
        ("330106001001", 3, 2, 1, 1, 66.67),
        ("330106001002", 0, 0, 0, 0, 0.0),
        ("330106001201", 1, 0, 0, 1, 0.0),
        ("330106002201", 1, 1, 0, 0, 100.0),
        ("330106002202", 0, 0, 0, 0, 0.0),
        ("330106002203", 0, 0, 0, 0, 0.0),
    ]
    townships = (
        await client.get("/api/v1/reports/coverage", params={"year": 2026, "level": "township"}, headers=admin)
    ).json()
    assert counts(townships["rows"]) == [
        ("330106001000", 4, 2, 1, 2, 50.0),
        ("330106002000", 1, 1, 0, 0, 100.0),
    ]
    assert counts([townships["total"]]) == [("330106000000", 5, 3, 1, 2, 60.0)]
    district = (
        await client.get("/api/v1/reports/coverage", params={"year": 2026, "level": "district"}, headers=admin)
    ).json()
    assert counts(district["rows"]) == [("330106000000", 5, 3, 1, 2, 60.0)]


async def test_township_sees_only_its_own_villages(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    staff_b = await auth_headers(client, "staff_b")
    report = (await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=staff_b)).json()
    assert [r["division_code"] for r in report["rows"]] == ["330106002201", "330106002202", "330106002203"]
    assert counts([report["total"]]) == [("330106002000", 1, 1, 0, 0, 100.0)]


async def test_csv_and_xlsx_carry_the_same_figures(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    admin = await auth_headers(client, "admin")
    params = {"year": 2026, "level": "township", "headers": "codes"}
    as_csv = await client.get("/api/v1/reports/coverage", params={**params, "format": "csv"}, headers=admin)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["division_code", "name", "level", "persons"]
    assert rows[1] == ["330106001000", "北山街道", "township", "4", "2", "1", "2", "50.00"]
    as_xlsx = await client.get("/api/v1/reports/coverage", params={**params, "format": "xlsx"}, headers=admin)
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    # The rate a fraction shown as a percentage: 0.5 is 50.00%.
    assert values[1] == ["330106001000", "北山街道", "township", 4, 2, 1, 2, 0.5]
    assert values[-1] == ["330106000000", "西湖区", "district", 5, 3, 1, 2, 0.6]


def test_rate_rounds_half_up_in_integers() -> None:
    assert [rate(2, 3), rate(1, 3), rate(1, 8), rate(0, 0), rate(5, 5)] == ["66.67", "33.33", "12.50", "0.00", "100.00"]
