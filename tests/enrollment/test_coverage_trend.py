"""The 应保尽保 rate over time: per division and ISO week, today's live funded enrolments counted by
the date they were funded, against today's persons; by scope, as JSON, CSV and XLSX."""

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

from backend.actor import Actor, Role, Scope
from backend.enrollment import coverage_trend, enrollments
from backend.enrollment.coverage_trend import CoverageTrend
from backend.enrollment.enrollments import CancelRequest
from tests.conftest import auth_headers
from tests.enrollment.test_enrollments import staff_actor
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
WEEKS = [date(2025, 9, 1), date(2025, 9, 8), date(2025, 9, 15), date(2025, 9, 22), date(2025, 9, 29)]


async def enrol(client: Client, headers: dict[str, str], household: dict[str, Any]) -> dict[str, UUID]:
    """Enrols every member for 2026; their enrolments' ids by name."""
    response = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    names = {m["person_id"]: m["name"] for m in household["members"]}
    return {names[e["person_id"]]: UUID(e["id"]) for e in response.json()["items"]}


async def populate(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    """Township A (4 persons): 北山社区 张三 paid Wed 2025-09-03 and confirmed, 李四 paid Sun 09-07, 张丽
    registered and unpaid; 玉泉村 王五 paid Mon 09-22. Township B (3 persons), 双浦村: 赵六 paid Mon
    09-15, 钱七 paid Sun 10-05, 孙八 paid 09-02 and cancelled since."""
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
    second = await create_household(client, staff_a, [member(ID_NUMBERS[3], "王五")], village_code="330106001201")
    third = await create_household(
        client,
        staff_b,
        [
            member(ID_NUMBERS[5], "赵六"),
            member(ID_NUMBERS[6], "钱七", "spouse"),
            member(ID_NUMBERS[7], "孙八", "child"),
        ],
        village_code="330106002201",
    )
    ids = {
        **await enrol(client, staff_a, first),
        **await enrol(client, staff_a, second),
        **await enrol(client, staff_b, third),
    }
    actor_a, actor_b = await staff_actor(conn), await staff_actor(conn, "staff_b")
    async with conn.transaction():
        for name, day, actor in (
            ("张三", date(2025, 9, 3), actor_a),
            ("李四", date(2025, 9, 7), actor_a),
            ("王五", date(2025, 9, 22), actor_a),
            ("赵六", date(2025, 9, 15), actor_b),
            ("钱七", date(2025, 10, 5), actor_b),
            ("孙八", date(2025, 9, 2), actor_b),
        ):
            await enrollments.mark_paid(conn, actor, ids[name], day)
        await enrollments.cancel(conn, actor_b, ids["孙八"], CancelRequest(reason="duplicate"))
    reviewer_a = await auth_headers(client, "reviewer_a")
    confirmed = await client.post("/api/v1/enrollments/confirm", json={"ids": [str(ids["张三"])]}, headers=reviewer_a)
    assert confirmed.status_code == 200, confirmed.text


async def district_actor(conn: asyncpg.Connection) -> Actor:  # type: ignore[type-arg]
    user_id = await conn.fetchval("SELECT id FROM users WHERE username = 'admin'")
    return Actor(kind="user", id=user_id, role=Role.DISTRICT_ADMIN, scope=Scope("330106000000", "district"))


def lines(trend: CoverageTrend) -> list[tuple[str, int, list[int], list[float]]]:
    """(division, today's persons, funded by each week's end, rate per week), the total last."""
    return [(s.division_code, s.persons, s.funded, s.rate_percent) for s in [*trend.series, trend.total]]


async def test_weekly_cumulative_counts_and_rates_by_township(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await populate(client, conn)
    async with conn.transaction():
        trend = await coverage_trend.coverage_trend(conn, await district_actor(conn), 2026, date(2025, 9, 30))
    assert trend.level == "township"
    # From the week of the first funding (Wed 09-03: the week of Mon 09-01) to today's (Tue 09-30).
    # A Sunday's funding (李四, 09-07) is in the week that began on the Monday before; 钱七's, after
    # today, in none; 孙八's in none (cancelled since); 张丽's registration is not funded.
    assert trend.weeks == WEEKS
    assert lines(trend) == [
        ("330106001000", 4, [2, 2, 2, 3, 3], [50.0, 50.0, 50.0, 75.0, 75.0]),
        ("330106002000", 3, [0, 0, 1, 1, 1], [0.0, 0.0, 33.33, 33.33, 33.33]),
        ("330106000000", 7, [2, 2, 3, 4, 4], [28.57, 28.57, 42.86, 57.14, 57.14]),
    ]
    assert trend.measure == "Funded rate by date of funding, against today's persons"
    # After the coverage year's end, the weeks stop at the week of its last day (Thu 2026-12-31).
    async with conn.transaction():
        later = await coverage_trend.coverage_trend(conn, await district_actor(conn), 2026, date(2027, 2, 1))
    assert (later.weeks[0], later.weeks[-1], len(later.weeks)) == (date(2025, 9, 1), date(2026, 12, 28), 70)
    # 钱七's Sunday 10-05 ends the week of Mon 09-29.
    assert later.total.funded[3:6] == [4, 5, 5]
    assert later.total.rate_percent[-1] == 71.43
    # A year nobody is funded for: no weeks, the divisions still listed.
    async with conn.transaction():
        empty = await coverage_trend.coverage_trend(conn, await district_actor(conn), 2027, date(2025, 9, 30))
    assert empty.weeks == [] and [s.funded for s in empty.series] == [[], []]


async def test_a_township_reads_its_own_villages_and_nothing_of_another(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    async with conn.transaction():
        own = await coverage_trend.coverage_trend(conn, await staff_actor(conn), 2026, date(2025, 9, 30))
        other = await coverage_trend.coverage_trend(conn, await staff_actor(conn, "staff_b"), 2026, date(2025, 9, 30))
    assert own.level == "village" and own.weeks == WEEKS
    assert lines(own) == [
        ("330106001001", 3, [2, 2, 2, 2, 2], [66.67, 66.67, 66.67, 66.67, 66.67]),
        ("330106001002", 0, [0, 0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0, 0.0]),
        ("330106001201", 1, [0, 0, 0, 1, 1], [0.0, 0.0, 0.0, 100.0, 100.0]),
        ("330106001000", 4, [2, 2, 2, 3, 3], [50.0, 50.0, 50.0, 75.0, 75.0]),
    ]
    # Township B's weeks begin with its own first funding: nothing of A's, not even its dates.
    assert other.weeks == WEEKS[2:]
    assert lines(other) == [
        ("330106002201", 3, [1, 1, 1], [33.33, 33.33, 33.33]),
        ("330106002202", 0, [0, 0, 0], [0.0, 0.0, 0.0]),
        ("330106002203", 0, [0, 0, 0], [0.0, 0.0, 0.0]),
        ("330106002000", 3, [1, 1, 1], [33.33, 33.33, 33.33]),
    ]


async def test_the_route_answers_json_csv_and_xlsx_in_the_callers_scope(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    admin, staff_b = await auth_headers(client, "admin"), await auth_headers(client, "staff_b")
    url = "/api/v1/reports/coverage/trend"
    body = (await client.get(url, params={"year": 2026}, headers=admin)).json()
    assert body["level"] == "township" and body["weeks"][:6] == [d.isoformat() for d in [*WEEKS, date(2025, 10, 6)]]
    assert [(s["division_code"], s["funded"][:6]) for s in body["series"]] == [
        ("330106001000", [2, 2, 2, 3, 3, 3]),
        ("330106002000", [0, 0, 1, 1, 2, 2]),
    ]
    assert body["total"]["rate_percent"][-1] == 71.43  # 5 of 7: today, whatever today is
    villages = (await client.get(url, params={"year": 2026, "level": "village"}, headers=staff_b)).json()
    assert [s["division_code"] for s in villages["series"]] == ["330106002201", "330106002202", "330106002203"]
    assert villages["weeks"][0] == "2025-09-15" and "北山" not in str(villages)
    refused = await client.get(url, params={"year": 1999}, headers=admin)
    assert refused.status_code == 422 and "year" in refused.text
    resident = await client.get(url, params={"year": 2026})
    assert resident.status_code == 401

    codes = await client.get(url, params={"year": 2026, "format": "csv", "headers": "codes"}, headers=admin)
    assert codes.status_code == 200 and codes.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(codes.content.decode("utf-8-sig"))))
    assert rows[0] == ["division_code", "name", "level", "week_start", "funded", "persons", "rate_percent"]
    assert rows[1][0] == "330106001000" and rows[1][2:] == ["township", "2025-09-01", "2", "4", "50.00"]
    assert ["330106000000", "district", "2025-09-15", "3", "7", "42.86"] in [[r[0], *r[2:]] for r in rows]
    xlsx = await client.get(url, params={"year": 2026, "format": "xlsx"}, headers=admin)
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).active
    assert sheet is not None
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    assert cells[1][3:] == [
        "Week starting",
        "Persons funded by the end of the week",
        "Persons who should be enrolled (today)",
        "Funded rate (%)",
    ]
    assert cells[2][3:] == ["2025-09-01", 2, 4, 0.5]
    assert any(row[0] and "today's persons who should be enrolled" in str(row[0]) for row in cells)
