"""应保尽保: persons in registered households, funded (paid, subsidised, confirmed), registered but
unpaid, confirmed, not enrolled and the rate of funded persons, per village, township and district,
as JSON, CSV and XLSX."""

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
    """Township A: 北山社区 3 people (2 enrolled: 1 paid and confirmed, 1 registered and unpaid);
    玉泉村 1 person, not enrolled. Township B: 双浦村 1 person, registered and unpaid."""
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


def counts(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, int, int, int, float]]:
    """(division, persons, funded, registered but unpaid, confirmed, not enrolled, rate)."""
    return [
        (
            r["division_code"],
            r["persons"],
            r["funded"],
            r["registered_unpaid"],
            r["confirmed"],
            r["not_enrolled"],
            r["rate_percent"],
        )
        for r in rows
    ]


async def test_report_by_village_township_and_district(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    admin = await auth_headers(client, "admin")
    villages = (await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)).json()
    # An unpaid registration is counted apart and not in the rate: 北山社区 1 of 3 funded.
    assert counts(villages["rows"]) == [
        ("330106001001", 3, 1, 1, 1, 1, 33.33),
        ("330106001002", 0, 0, 0, 0, 0, 0.0),
        ("330106001201", 1, 0, 0, 0, 1, 0.0),
        ("330106002201", 1, 0, 1, 0, 0, 0.0),
        ("330106002202", 0, 0, 0, 0, 0, 0.0),
        ("330106002203", 0, 0, 0, 0, 0, 0.0),
    ]
    assert isinstance(villages["rows"][0]["rate_percent"], float)
    # `enrolled` keeps its meaning: a live enrolment of any kind (funded + registered but unpaid).
    assert [r["enrolled"] for r in villages["rows"][:4]] == [2, 0, 0, 1]
    townships = (
        await client.get("/api/v1/reports/coverage", params={"year": 2026, "level": "township"}, headers=admin)
    ).json()
    assert counts(townships["rows"]) == [
        ("330106001000", 4, 1, 1, 1, 2, 25.0),
        ("330106002000", 1, 0, 1, 0, 0, 0.0),
    ]
    assert counts([townships["total"]]) == [("330106000000", 5, 1, 2, 1, 2, 20.0)]
    district = (
        await client.get("/api/v1/reports/coverage", params={"year": 2026, "level": "district"}, headers=admin)
    ).json()
    assert counts(district["rows"]) == [("330106000000", 5, 1, 2, 1, 2, 20.0)]


async def test_township_staff_read_their_own_townships_report(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    staff_b = await auth_headers(client, "staff_b")
    response = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=staff_b)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [r["division_code"] for r in report["rows"]] == ["330106002201", "330106002202", "330106002203"]
    assert counts([report["total"]]) == [("330106002000", 1, 0, 1, 0, 0, 0.0)]


async def test_csv_and_xlsx_carry_the_same_figures(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    admin = await auth_headers(client, "admin")
    params = {"year": 2026, "level": "township", "headers": "codes"}
    as_csv = await client.get("/api/v1/reports/coverage", params={**params, "format": "csv"}, headers=admin)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert rows[0] == [
        "division_code",
        "name",
        "level",
        "persons",
        "funded",
        "registered_unpaid",
        "confirmed",
        "not_enrolled",
        "rate_percent",
    ]
    assert rows[1] == ["330106001000", "北山街道", "township", "4", "1", "1", "1", "2", "25.00"]
    as_xlsx = await client.get("/api/v1/reports/coverage", params={**params, "format": "xlsx"}, headers=admin)
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content)).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    # The rate a fraction shown as a percentage: 0.25 is 25.00%.
    assert values[1] == ["330106001000", "北山街道", "township", 4, 1, 1, 1, 2, 0.25]
    assert values[-1] == ["330106000000", "西湖区", "district", 5, 1, 2, 1, 2, 0.2]


async def test_chinese_headers_name_funded_and_unpaid_apart(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    admin = await auth_headers(client, "admin") | {"Accept-Language": "zh-CN"}
    params = {"year": 2026, "level": "township", "format": "csv"}
    as_csv = await client.get("/api/v1/reports/coverage", params=params, headers=admin)
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    header = next(r for r in rows if "应参保人数" in r)
    assert header[header.index("应参保人数") :] == [
        "应参保人数",
        "已缴费或资助参保人数",
        "已登记未缴费人数",
        "已审核确认人数",
        "未参保人数",
        "参保率（%）",
    ]


def test_rate_rounds_half_up_in_integers() -> None:
    assert [rate(2, 3), rate(1, 3), rate(1, 8), rate(0, 0), rate(5, 5)] == ["66.67", "33.33", "12.50", "0.00", "100.00"]
