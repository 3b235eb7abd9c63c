"""The enrolment roster (参保人员花名册, issue 17 point 3: continuous years on the reports): every
enrolment of a year in the caller's scope, by village, household and person, with the masked ID
number, status, cover, money and continuous years; pages, files, scope and the job's whole file."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

import asyncpg
import openpyxl
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.db import Pool
from backend.enrollment import roster
from backend.jobs import worker
from tests.conftest import auth_headers
from tests.enrollment.test_continuity import INCENTIVE
from tests.factories import ID_NUMBERS, POLICY_2026, add_history, create_household, member, publish_policy
from tests.jobs.test_jobs import fast, pool
from tests.premiums.test_payments import World, backdate_registration, pay
from tests.residents.test_residents import resident_headers

__all__ = ["pool"]  # the fixture: a pool for the job worker

Client = AsyncTestClient[Litestar]
URL = "/api/v1/reports/enrolment-roster"
ZH = {"Accept-Language": "zh-CN"}


async def enrol(client: Client, headers: dict[str, str], household: dict[str, Any]) -> str:
    """Every member for 2026; the household's query code."""
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=headers,
    )
    assert enrolled.status_code == 201, enrolled.text
    code: str = enrolled.json()["query_code"]
    return code


@pytest.fixture(name="families")
async def families_fixture(client: Client, conn: asyncpg.Connection) -> dict[str, Any]:  # type: ignore[type-arg]
    """Township A, 北山社区: household 0001 — 张三 (history paid 2020–2025) and 李四 (history cancelled
    2024, subsidised 2025), both paid for 2026 in the window (¥800 on 2025-10-08), and their child
    张丽 (no history) registered, not paid; household 0002 — 王五, registered. Township B, 双浦村:
    household 0001 — 赵六, registered. The 2026 policy carries the serious-illness incentive
    (original ceiling ¥400,000, +¥3,000 per continuous year after 4)."""
    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin, rules={**POLICY_2026["rules"], "serious_illness": INCENTIVE})
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
    second = await create_household(client, staff_a, [member(ID_NUMBERS[3], "王五")], household_no="0002")
    other = await create_household(client, staff_b, [member(ID_NUMBERS[9], "赵六")], village_code="330106002201")
    for year in range(2020, 2026):
        await add_history(conn, ID_NUMBERS[1], year, "paid")
    await add_history(conn, ID_NUMBERS[2], 2024, "cancelled")
    await add_history(conn, ID_NUMBERS[2], 2025, "subsidised")
    codes = {}
    for household, headers in ((first, staff_a), (second, staff_a), (other, staff_b)):
        codes[household["id"]] = await enrol(client, headers, household)
        await backdate_registration(conn, household["id"])
    staff_a_id = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a_id, "prefix": "A", "first_no": 1, "last_no": 100},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    world = World(first, {}, block.json())
    paying = [UUID(m["person_id"]) for m in first["members"][:2]]
    await pay(conn, world, person_ids=paying, amount_fen=80000)
    return {"first": first, "second": second, "other": other, "code": codes[second["id"]]}


def brief(item: dict[str, Any]) -> tuple[Any, ...]:
    return (
        item["division_code"],
        item["household_no"],
        item["name"],
        item["id_number_masked"],
        item["relation"],
        item["status"],
        item["coverage_start"],
        item["coverage_end"],
        item["coverage_reason"],
        item["premium_fen"],
        item["subsidy_fen"],
        item["paid_fen"],
        item["continuous_years"],
        item["serious_illness_ceiling_fen"],
    )


ROWS_A = [
    # 7 years 2020–2026: 3 beyond 4, +¥9,000.
    ("330106001001", "0001", "张三", "110105********0016", "head", "paid", "2026-01-01", "2026-12-31", "in_window",
     40000, 0, 40000, 7, 40_900_000),
    ("330106001001", "0001", "李四", "110105********0026", "spouse", "paid", "2026-01-01", "2026-12-31", "in_window",
     40000, 0, 40000, 2, 40_000_000),
    # Not paid: no cover, no ceiling; 2026 not covered and 2025 unknown: no continuous year.
    ("330106001001", "0001", "张丽", "110105********0020", "child", "registered", None, None, None,
     40000, 0, 0, 0, None),
    ("330106001001", "0002", "王五", "110105********0017", "head", "registered", None, None, None,
     40000, 0, 0, 0, None),
]  # fmt: skip
ROW_B = ("330106002201", "0001", "赵六", "330106********0058", "head", "registered", None, None, None,
         40000, 0, 0, 0, None)  # fmt: skip


async def test_the_roster_lists_each_enrolment_with_its_money_and_continuous_years(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    families: dict[str, Any],
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    whole = await client.get(URL, params={"year": 2026}, headers=staff_a)
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert (body["coverage_year"], body["next_cursor"]) == (2026, None)
    assert [brief(i) for i in body["items"]] == ROWS_A
    # Pages of two: the cursor names places and ids, never a number, and the pages make the whole.
    first = (await client.get(URL, params={"year": 2026, "limit": 2}, headers=staff_a)).json()
    cursor = first["next_cursor"]
    assert cursor is not None and not any(n[-4:] in cursor for n in ID_NUMBERS)
    rest = (await client.get(URL, params={"year": 2026, "limit": 2, "after": cursor}, headers=staff_a)).json()
    assert [brief(i) for i in first["items"] + rest["items"]] == ROWS_A and rest["next_cursor"] is None
    # Filters: by status, by village.
    unpaid = await client.get(URL, params={"year": 2026, "status": "registered"}, headers=staff_a)
    assert [i["name"] for i in unpaid.json()["items"]] == ["张丽", "王五"]
    other_village = await client.get(URL, params={"year": 2026, "village_code": "330106001002"}, headers=staff_a)
    assert other_village.json()["items"] == []
    # A cursor of another list, or made up, is refused naming the parameter.
    for bad in ("Zm9v", "x" * 300, "WyIxIiwiMiJd"):
        refused = await client.get(URL, params={"year": 2026, "after": bad}, headers=staff_a)
        assert refused.status_code in (400, 422), refused.text
        assert "after" in refused.text
    # Every read of the roster is audited, without the persons' numbers.
    audited = await conn.fetch(
        "SELECT summary FROM audit_log WHERE action = 'report' AND entity = 'enrolment_roster' ORDER BY id"
    )
    assert [a["summary"]["results"] for a in audited] == [4, 2, 2, 2, 0]
    assert not any(ID_NUMBERS[1] in str(a["summary"]) for a in audited)


async def test_each_township_sees_its_own_roster_and_the_district_sees_both(
    client: Client, families: dict[str, Any]
) -> None:
    staff_b = await auth_headers(client, "staff_b")
    theirs = await client.get(URL, params={"year": 2026}, headers=staff_b)
    assert [brief(i) for i in theirs.json()["items"]] == [ROW_B]
    assert "张三" not in theirs.text and "330106001001" not in theirs.text
    reviewer_b = await auth_headers(client, "reviewer_b")
    asked_for_a = await client.get(URL, params={"year": 2026, "village_code": "330106001001"}, headers=reviewer_b)
    assert asked_for_a.json()["items"] == []
    as_csv = await client.get(URL, params={"year": 2026, "format": "csv"}, headers=reviewer_b)
    assert "张三" not in as_csv.content.decode("utf-8-sig")
    civil = await auth_headers(client, "civil")
    district = await client.get(URL, params={"year": 2026}, headers=civil)
    assert [brief(i) for i in district.json()["items"]] == [*ROWS_A, ROW_B]


async def test_the_csv_for_scripts_has_codes_and_fen_and_for_people_names_and_yuan(
    client: Client, families: dict[str, Any]
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    codes = await client.get(URL, params={"year": 2026, "format": "csv", "headers": "codes"}, headers=staff_a)
    assert codes.status_code == 200, codes.text
    assert codes.headers["content-type"].startswith("text/csv")
    assert 'filename="enrolment-roster-2026.csv"' in codes.headers["content-disposition"]
    header, *rows = list(csv.reader(io.StringIO(codes.content.decode("utf-8-sig"))))
    assert header == [
        "division_code",
        "township",
        "village",
        "household_no",
        "name",
        "id_number",
        "relation",
        "status",
        "coverage_start",
        "coverage_end",
        "coverage_reason",
        "premium_fen",
        "subsidy_fen",
        "paid_fen",
        "continuous_years",
        "serious_illness_ceiling_fen",
    ]
    assert rows[0] == [
        "330106001001", "北山街道", "北山社区", "0001", "张三", "110105********0016", "head", "paid",
        "2026-01-01", "2026-12-31", "in_window", "40000", "0", "40000", "7", "40900000",
    ]  # fmt: skip
    assert rows[2][6:] == ["child", "registered", "", "", "", "40000", "0", "0", "0", ""]
    assert len(rows) == 4  # no totals row in a CSV
    names = await client.get(URL, params={"year": 2026, "format": "csv"}, headers={**staff_a, **ZH})
    header, *rows = list(csv.reader(io.StringIO(names.content.decode("utf-8-sig"))))
    assert header[4:] == [
        "姓名", "公民身份号码", "与户主关系", "参保状态", "待遇享受期起", "待遇享受期止", "待遇享受情形",
        "个人缴费（元）", "财政补助（元）", "已缴金额（元）", "连续参保年数", "大病保险最高支付限额（元）",
    ]  # fmt: skip
    assert rows[0][6:] == ["户主", "已缴费", "2026-01-01", "2026-12-31", "集中参保期内参保", "400.00", "0.00",
                           "400.00", "7", "409000.00"]  # fmt: skip
    assert rows[2][6:8] == ["子女", "已登记，未缴费"]
    gbk = await client.get(URL, params={"year": 2026, "format": "csv", "encoding": "gbk"}, headers={**staff_a, **ZH})
    assert gbk.content.decode("gb18030").startswith("区划代码")


async def test_the_xlsx_opens_with_a_title_chinese_headers_numbers_and_totals(
    client: Client, families: dict[str, Any]
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    answer = await client.get(URL, params={"year": 2026, "format": "xlsx"}, headers={**staff_a, **ZH})
    assert answer.status_code == 200, answer.text
    sheet = openpyxl.load_workbook(io.BytesIO(answer.content)).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0][0] == f"西湖区 北山街道 2026年度参保人员花名册（截至{values[0][0][-11:-1]}）"
    assert values[1][:7] == ["区划代码", "乡镇（街道）", "村（社区）", "户号", "姓名", "公民身份号码", "与户主关系"]
    assert values[2][3:7] == ["0001", "张三", "110105********0016", "户主"]
    assert values[2][11:] == [400, 0, 400, 7, 409000]  # yuan as numbers
    assert values[-1][0] == "合计" and values[-1][4] == "4人" and values[-1][11:14] == [1600, 0, 800]
    assert sheet.freeze_panes == "A3"
    assert not any(ID_NUMBERS[1] in str(v) for row in values for v in row)


async def test_the_whole_roster_is_made_by_a_job_walking_every_page(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    pool: Pool,
    db_dsn: str,
    families: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(roster, "EXPORT_PAGE", 3)  # four rows: two pages
    civil = await auth_headers(client, "civil")
    params = {"year": 2026, "format": "csv", "headers": "codes"}
    direct = await client.get(URL, params=params, headers=civil)
    asked = await client.get(URL, params={**params, "background": "true"}, headers=civil)
    assert asked.status_code == 202, asked.text
    ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    assert ended is not None and (ended.kind, ended.state) == ("roster_export", "succeeded")
    job = (await client.get(asked.headers["location"], headers=civil)).json()
    assert job["result"]["rows"] == 5
    assert (job["output"]["name"], job["output"]["media_type"]) == (
        "enrolment-roster-2026.csv",
        "text/csv; charset=utf-8",
    )
    made = await client.get(job["output"]["href"], headers=civil)
    assert made.content == direct.content
    assert ID_NUMBERS[1] not in made.content.decode("utf-8-sig")
    assert (await client.get(job["output"]["href"], headers=await auth_headers(client, "staff_b"))).status_code == 404
    # As JSON, filtered: the job's file is one page holding every row.
    unpaid = await client.get(URL, params={"year": 2026, "status": "registered", "background": "true"}, headers=civil)
    await worker.run_one(pool, job_handlers(), fast(db_dsn))
    href = (await client.get(unpaid.headers["location"], headers=civil)).json()["output"]["href"]
    whole = (await client.get(href, headers=civil)).json()
    assert [i["name"] for i in whole["items"]] == ["张丽", "王五", "赵六"] and whole["next_cursor"] is None


async def test_a_resident_gets_no_roster(client: Client, families: dict[str, Any]) -> None:
    resident = await resident_headers(client, ID_NUMBERS[3], "王五", families["code"])
    refused = await client.get(URL, params={"year": 2026}, headers=resident)
    assert refused.status_code in (403, 404), refused.text
    assert "王五" not in refused.text
    assert (await client.get(URL, params={"year": 2026})).status_code == 401
