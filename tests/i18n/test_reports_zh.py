"""Reports for offices: Chinese column headers by default (codes on request), names beside codes,
numbers as numbers, CSV as UTF-8 with BOM or GB18030 (`encoding=gbk`), XLSX with a title line, a
frozen header, fitted widths and totals."""

from __future__ import annotations

import csv
import io
from typing import Any

import asyncpg
import openpyxl
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from openpyxl.worksheet.worksheet import Worksheet

from backend import reports as tables
from backend.app import job_handlers
from backend.db import create_pool
from backend.enrollment import coverage_report
from backend.i18n import use_language
from backend.jobs import worker
from tests.conftest import auth_headers
from tests.enrollment.test_coverage_report import populate
from tests.jobs.test_jobs import fast
from tests.premiums.test_collections import populate as pay_four
from tests.premiums.test_payments import (
    World,
    world_fixture,  # noqa: F401 - registers the `world` fixture here
)

Client = AsyncTestClient[Litestar]
ZH = {"Accept-Language": "zh-CN"}
COVERAGE = "/api/v1/reports/coverage"
COLLECTIONS = "/api/v1/reports/collections"

COVERAGE_HEADER_ZH = [
    "区划代码",
    "乡镇（街道）",
    "村（社区）",
    "层级",
    "应参保人数",
    "已缴费或资助参保人数",
    "已登记未缴费人数",
    "已审核确认人数",
    "未参保人数",
    "参保率（%）",
]
COVERAGE_CODES = [
    "division_code",
    "township_name",
    "name",
    "level",
    "persons",
    "funded",
    "registered_unpaid",
    "confirmed",
    "not_enrolled",
    "rate_percent",
]


def read_csv(content: bytes, encoding: str = "utf-8-sig") -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode(encoding))))


def sheet_of(content: bytes) -> Worksheet:
    sheet = openpyxl.load_workbook(io.BytesIO(content)).active
    assert isinstance(sheet, Worksheet)
    return sheet


def values(sheet: Worksheet) -> list[list[Any]]:
    return [list(r) for r in sheet.iter_rows(values_only=True)]


async def test_coverage_csv_has_chinese_headers_named_divisions_and_numbers(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    admin = {**await auth_headers(client, "admin"), **ZH}
    response = await client.get(COVERAGE, params={"year": 2026, "format": "csv"}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel opens it as UTF-8
    rows = read_csv(response.content)
    assert rows[0] == COVERAGE_HEADER_ZH
    assert rows[1] == ["330106001001", "北山街道", "北山社区", "村（社区）", "3", "1", "1", "1", "1", "33.33"]
    assert rows[4] == ["330106002201", "双浦镇", "双浦村", "村（社区）", "1", "0", "1", "0", "0", "0.00"]
    assert rows[-1] == ["330106000000", "", "西湖区", "合计", "5", "1", "2", "1", "2", "20.00"]

    codes = await client.get(COVERAGE, params={"year": 2026, "format": "csv", "headers": "codes"}, headers=admin)
    rows = read_csv(codes.content)
    assert rows[0] == COVERAGE_CODES
    assert rows[1] == ["330106001001", "北山街道", "北山社区", "village", "3", "1", "1", "1", "1", "33.33"]
    assert rows[-1] == ["330106000000", "", "西湖区", "district", "5", "1", "2", "1", "2", "20.00"]


async def test_coverage_csv_in_gbk_for_older_office_software(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    admin = {**await auth_headers(client, "admin"), **ZH}
    params = {"year": 2026, "level": "township", "format": "csv", "encoding": "gbk"}
    response = await client.get(COVERAGE, params=params, headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=GB18030"
    assert not response.content.startswith(b"\xef\xbb\xbf")
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    rows = read_csv(response.content, "gbk")
    assert rows[0] == ["区划代码", "乡镇（街道）", *COVERAGE_HEADER_ZH[3:]]
    assert rows[1] == ["330106001000", "北山街道", "乡镇（街道）", "4", "1", "1", "1", "2", "25.00"]
    bad = await client.get(COVERAGE, params={**params, "encoding": "latin-1"}, headers=admin)
    assert bad.status_code == 422 and "encoding" in bad.text


def test_a_name_beyond_gbk_is_written_in_gb18030_not_lost() -> None:
    """𬌗 and 䶮 are not in GBK: GB18030 (what `gbk` writes) has them, so the name survives."""
    table = tables.Table(
        sheet="s",
        title="t",
        columns=[tables.Column("name", "Name")],
        rows=[["王𬌗"], ["刘䶮"]],
    )
    with pytest.raises(UnicodeEncodeError):
        "王𬌗".encode("gbk")
    body = tables.table_csv(table, "codes", "gbk")
    assert read_csv(body, "gb18030") == [["name"], ["王𬌗"], ["刘䶮"]]
    assert b"?" not in body
    # Characters GBK has are the same bytes in GB18030.
    assert tables.table_csv(table, "codes", "gbk").startswith("name\r\n".encode("gbk"))


async def test_coverage_xlsx_has_title_frozen_header_percent_rate_and_totals(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    admin = {**await auth_headers(client, "admin"), **ZH}
    as_of = (await client.get(COVERAGE, params={"year": 2026}, headers=admin)).json()["as_of"]
    response = await client.get(COVERAGE, params={"year": 2026, "format": "xlsx"}, headers=admin)
    assert response.status_code == 200, response.text
    sheet = sheet_of(response.content)
    assert sheet.title == "2026年度应保尽保"
    title = sheet["A1"].value
    assert title == f"西湖区 2026年度应保尽保（参保率）统计表（截至{as_of}）"
    assert sheet.freeze_panes == "A3"  # the title and the header stay in view
    rows = values(sheet)
    assert rows[1] == COVERAGE_HEADER_ZH
    assert rows[2] == ["330106001001", "北山街道", "北山社区", "村（社区）", 3, 1, 1, 1, 1, 0.3333]
    rate = sheet.cell(row=3, column=10)
    assert isinstance(rate.value, float) and rate.number_format == "0.00%"
    assert isinstance(sheet.cell(row=3, column=5).value, int)
    assert sheet.cell(row=3, column=1).data_type == "s"  # the code stays text
    # The totals row: the scope's figures (not a sum of rates), in bold.
    total_row = next(i for i, r in enumerate(rows) if r[3] == "合计")
    assert rows[total_row] == ["330106000000", None, "西湖区", "合计", 5, 1, 2, 1, 2, 0.2]
    assert total_row == 2 + 6  # title, header, six villages
    assert sheet.cell(row=total_row + 1, column=5).font.b
    assert sheet.cell(row=total_row + 1, column=10).number_format == "0.00%"
    assert any("应参保人数口径" in str(r[0]) for r in rows[total_row + 1 :] if r[0])
    # Widths fitted to the text: the names' column wider than the default, a Chinese character counting two.
    assert (sheet.column_dimensions["C"].width or 0) >= len("村（社区）") * 2
    assert (sheet.column_dimensions["A"].width or 0) >= 12


async def test_coverage_xlsx_with_codes_keeps_the_header_on_the_first_row(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await populate(client, conn)
    admin = {**await auth_headers(client, "admin"), **ZH}
    params = {"year": 2026, "level": "township", "format": "xlsx", "headers": "codes"}
    sheet = sheet_of((await client.get(COVERAGE, params=params, headers=admin)).content)
    rows = values(sheet)
    assert rows[0] == ["division_code", "name", *COVERAGE_CODES[3:]]
    assert rows[1] == ["330106001000", "北山街道", "township", 4, 1, 1, 1, 2, 0.25]
    assert rows[-1] == ["330106000000", "西湖区", "district", 5, 1, 2, 1, 2, 0.2]
    assert sheet.freeze_panes == "A2"


async def test_collections_in_chinese_as_csv_and_xlsx_with_township_names_and_totals(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await pay_four(conn, world)
    reviewer = {**await auth_headers(client, "reviewer_a"), **ZH}
    params = {"from": "2025-10-01", "to": "2025-10-31", "group": "township"}
    header = ["区划代码", "乡镇（街道）", "缴费笔数", "现金（元）", "扫码支付（元）", "银行转账（元）"]
    header += ["作废（元）", "退费（元）", "实收净额（元）"]
    as_json = (await client.get(COLLECTIONS, params=params, headers=reviewer)).json()
    assert [(r["key"], r["name"]) for r in as_json["rows"]] == [("330106001000", "北山街道")]

    as_csv = await client.get(COLLECTIONS, params={**params, "format": "csv"}, headers=reviewer)
    assert as_csv.content.startswith(b"\xef\xbb\xbf")
    assert read_csv(as_csv.content) == [
        header,
        ["330106001000", "北山街道", "4", "400.00", "400.00", "5.00", "0.00", "0.00", "805.00"],
    ]
    as_gbk = await client.get(COLLECTIONS, params={**params, "format": "csv", "encoding": "gbk"}, headers=reviewer)
    assert read_csv(as_gbk.content, "gbk")[1][:2] == ["330106001000", "北山街道"]
    codes = await client.get(COLLECTIONS, params={**params, "format": "csv", "headers": "codes"}, headers=reviewer)
    assert read_csv(codes.content) == [
        [*("key", "name", "payments", "cash_fen", "qr_fen", "bank_fen"), *("voided_fen", "refunded_fen", "net_fen")],
        ["330106001000", "北山街道", "4", "40000", "40000", "500", "0", "0", "80500"],  # scripts get fen
    ]

    as_xlsx = await client.get(COLLECTIONS, params={**params, "format": "xlsx"}, headers=reviewer)
    sheet = sheet_of(as_xlsx.content)
    assert sheet["A1"].value == "西湖区 北山街道 个人缴费收缴统计（按乡镇）（2025-10-01至2025-10-31）"
    assert sheet.freeze_panes == "A3"
    assert values(sheet)[1:] == [
        header,
        ["330106001000", "北山街道", 4, 400, 400, 5, 0, 0, 805],
        ["合计", None, 4, 400, 400, 5, 0, 0, 805],
    ]
    assert sheet.cell(row=4, column=9).font.b
    assert sheet.cell(row=3, column=4).number_format == "#,##0.00"  # yuan with two decimals


async def test_a_background_export_speaks_the_askers_language(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    db_dsn: str,
) -> None:
    await populate(client, conn)
    admin = {**await auth_headers(client, "admin"), **ZH}
    params = {"year": 2026, "format": "csv", "encoding": "gbk", "background": "true"}
    asked = await client.get(COVERAGE, params=params, headers=admin)
    assert asked.status_code == 202, asked.text
    pool = await create_pool(db_dsn, 1, 2)
    try:  # the worker's default language is the settings' (en in tests)
        ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    finally:
        await pool.close()
    assert ended is not None and ended.state == "succeeded"
    output = (await client.get(asked.headers["location"], headers=admin)).json()["output"]
    assert output["media_type"] == "text/csv; charset=GB18030"
    made = await client.get(output["href"], headers=admin)
    assert read_csv(made.content, "gbk")[0] == COVERAGE_HEADER_ZH


def test_export_parameters_remember_the_language_they_were_asked_in() -> None:
    with use_language("zh_CN"):
        params = coverage_report.CoverageExport(coverage_year=2026, level="village", format="csv")
    assert params.language == "zh_CN"
    with use_language("en"):
        assert tables.header(coverage_report.COUNTS[1:2], "names") == ["Persons who should be enrolled"]
    with use_language("zh_CN"):
        assert tables.header(coverage_report.COUNTS[1:2], "names") == ["应参保人数"]
        assert tables.header(coverage_report.COUNTS[1:2], "codes") == ["persons"]
