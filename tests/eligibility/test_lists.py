"""Civil-affairs list uploads: encodings, spreadsheets, validation, versions, diffs, immutability."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
import pytest
import xlsxwriter
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers, bearer, login
from tests.eligibility.people import register
from tests.factories import ID_NUMBERS

CSV_HEADER_ZH = "身份证号,姓名,有效期起,有效期止,所属村\r\n"


async def upload(
    client: AsyncTestClient[Litestar],
    headers: dict[str, str],
    content: bytes,
    *,
    list_type: str = "di_bao",
    effective_from: str = "2025-09-01",
    partial: bool = False,
    filename: str = "list.csv",
) -> Any:
    data = {"type": list_type, "effective_from": effective_from}
    if partial:
        data["partial"] = "true"
    return await client.post(
        "/api/v1/eligibility/lists", files={"file": (filename, content)}, data=data, headers=headers
    )


def xlsx(rows: list[list[object]], *, ids_as_numbers: bool = False) -> bytes:
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = workbook.add_worksheet("名单")
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if i > 0 and j == 0 and ids_as_numbers and isinstance(value, str) and value.isdigit():
                sheet.write_number(i, j, float(value))
            elif isinstance(value, str):
                sheet.write_string(i, j, value)
            else:
                sheet.write(i, j, value)
    workbook.close()
    return buffer.getvalue()


async def entry_count(conn: asyncpg.Connection) -> int:  # type: ignore[type-arg]
    return int(await conn.fetchval("SELECT count(*) FROM list_entries"))


async def test_gbk_csv_with_chinese_headers_loads_as_version_one(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    text = (
        CSV_HEADER_ZH
        + f"{ID_NUMBERS[1]},张三,2025-01-01,2026-12-31,330106001001\r\n"
        + f"{ID_NUMBERS[2]},李四,2025/3/1,长期,双浦村\r\n"
    )
    response = await upload(client, civil, text.encode("gbk"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["version"], body["list_type"], body["kind"]) == ("loaded", 1, "di_bao", "subsidy")
    assert (body["rows_read"], body["rows_loaded"], body["rows_rejected"], body["errors"]) == (2, 2, 0, [])
    assert (body["added"], body["removed"], body["changed"], body["previous_id"]) == (2, 0, 0, None)
    entries = await client.get(f"/api/v1/eligibility/lists/{body['id']}/entries", headers=civil)
    assert entries.status_code == 200, entries.text
    assert entries.json()["items"] == [
        {
            "row_no": 2,
            "id_number": ID_NUMBERS[1],
            "name": "张三",
            "valid_from": "2025-01-01",
            "valid_to": "2026-12-31",
            "division_code": "330106001001",
        },
        {
            "row_no": 3,
            "id_number": ID_NUMBERS[2],
            "name": "李四",
            "valid_from": "2025-03-01",
            "valid_to": None,
            "division_code": "330106002201",
        },
    ]
    assert await entry_count(conn) == 2


async def test_utf8_bom_csv_normalises_lower_x_full_width_and_15_digit_numbers(
    client: AsyncTestClient[Litestar],
) -> None:
    civil = await auth_headers(client, "civil")
    full_width = "".join(chr(0xFF10 + int(d)) for d in ID_NUMBERS[7])
    text = (
        "id_number,name\n"
        "11010519491231002x,王五\n"  # lower-case check character
        f"{full_width},赵六\n"
        "440524800101002,钱七\n"  # first-generation: 1980-01-01, converted to 18 digits
    )
    response = await upload(client, civil, b"\xef\xbb\xbf" + text.encode("utf-8"), list_type="te_kun")
    assert response.status_code == 201, response.text
    entries = (await client.get(f"/api/v1/eligibility/lists/{response.json()['id']}/entries", headers=civil)).json()
    assert [(e["id_number"], e["name"]) for e in entries["items"]] == [
        ("11010519491231002X", "王五"),
        ("320102199005050036", "赵六"),
        ("440524198001010021", "钱七"),
    ]


async def test_xlsx_with_ids_as_text_loads(client: AsyncTestClient[Litestar]) -> None:
    civil = await auth_headers(client, "civil")
    content = xlsx([["2025年低保名单"], ["公民身份号码", "姓名"], [ID_NUMBERS[1], "张三"], [ID_NUMBERS[5], "孙八"]])
    response = await upload(client, civil, content, filename="dibao.xlsx")
    assert response.status_code == 201, response.text
    assert (response.json()["rows_loaded"], response.json()["file_name"]) == (2, "dibao.xlsx")


async def test_xlsx_with_ids_stored_as_numbers_is_rejected_without_guessing_digits(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    # 110105198001010016 happens to survive as a double; it is still not trusted.
    content = xlsx([["身份证号", "姓名"], [ID_NUMBERS[1], "张三"], ["440524198001010013", "孙八"]], ids_as_numbers=True)
    response = await upload(client, civil, content, filename="dibao.xlsx")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "list_rejected"
    assert [(e["row"], e["column"]) for e in body["errors"]] == [(2, "身份证号"), (3, "身份证号")]
    assert all("stored as a number" in e["problem"] for e in body["errors"])
    assert ID_NUMBERS[1] not in response.text
    assert await entry_count(conn) == 0


async def test_scientific_notation_and_lost_digits_are_rejected_per_row(client: AsyncTestClient[Litestar]) -> None:
    civil = await auth_headers(client, "civil")
    text = f"身份证号,姓名\n4.40524188001E+17,张三\n{ID_NUMBERS[1][:-2]},李四\n{ID_NUMBERS[2]},\n"
    response = await upload(client, civil, text.encode())
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["row"], e["column"]) for e in errors] == [(2, "身份证号"), (3, "身份证号"), (4, "姓名")]
    assert "scientific notation" in errors[0]["problem"]
    assert "has 16 characters" in errors[1]["problem"]
    assert errors[2]["problem"] == "is empty"


async def test_duplicate_rows_reject_the_whole_file_and_leave_no_rows_behind(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    text = f"身份证号,姓名\n{ID_NUMBERS[1]},张三\n{ID_NUMBERS[2]},李四\n{ID_NUMBERS[1].lower()},张三\n"
    response = await upload(client, civil, text.encode())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] == [
        {
            "row": 4,
            "column": "身份证号",
            "problem": "the same person as row 2",
            "message": "Row 4, 身份证号: the same person as row 2",
        }
    ]
    assert await entry_count(conn) == 0
    version = await client.get(f"/api/v1/eligibility/lists/{body['list_id']}", headers=civil)
    assert (version.json()["status"], version.json()["rows_read"], version.json()["rows_rejected"]) == (
        "rejected",
        3,
        1,
    )
    # The rejected upload took no version number: the next good one is version 1, with nothing to diff against.
    assert version.json()["version"] is None
    good = await upload(client, civil, f"身份证号,姓名\n{ID_NUMBERS[1]},张三\n".encode())
    assert (good.json()["version"], good.json()["previous_id"], good.json()["added"]) == (1, None, 1)


async def test_partial_import_loads_good_rows_and_reports_the_bad(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    text = (
        f"身份证号,姓名,有效期起,有效期止\n{ID_NUMBERS[1]},张三,2025-13-01,\n"
        f"{ID_NUMBERS[2]},李四,2025-01-01,2024-01-01\n{ID_NUMBERS[3]},王五,,\n{ID_NUMBERS[3]},王五,,\n"
    )
    response = await upload(client, civil, text.encode(), partial=True)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["partial"], body["rows_read"], body["rows_loaded"], body["rows_rejected"]) == (
        "loaded",
        True,
        4,
        1,
        3,
    )
    assert [(e["row"], e["column"], e["problem"]) for e in body["errors"]] == [
        (2, "有效期起", "is not a real date"),
        (3, "有效期止", "is before the start of validity"),
        (5, "身份证号", "the same person as row 4"),
    ]
    assert await conn.fetchval("SELECT array_agg(row_no) FROM list_entries") == [4]


async def test_new_version_diff_lists_added_removed_and_changed(client: AsyncTestClient[Litestar]) -> None:
    civil = await auth_headers(client, "civil")
    first = await upload(client, civil, f"身份证号,姓名\n{ID_NUMBERS[1]},张三\n{ID_NUMBERS[2]},李四\n".encode())
    second = await upload(
        client,
        civil,
        f"身份证号,姓名\n{ID_NUMBERS[2]},李四四\n{ID_NUMBERS[3]},王五\n".encode(),
        effective_from="2026-01-01",
    )
    assert second.status_code == 201, second.text
    body = second.json()
    assert (body["version"], body["previous_id"], body["added"], body["removed"], body["changed"]) == (
        2,
        first.json()["id"],
        1,
        1,
        1,
    )
    diff = await client.get(f"/api/v1/eligibility/lists/{body['id']}/diff", headers=civil)
    assert diff.status_code == 200, diff.text
    # In the order of the numbers' blind index: arbitrary, so compared sorted.
    assert sorted((i["id_number"], i["change"], i["name"], i["previous_name"]) for i in diff.json()["items"]) == [
        (ID_NUMBERS[1], "removed", None, "张三"),
        (ID_NUMBERS[2], "changed", "李四四", "李四"),
        (ID_NUMBERS[3], "added", "王五", None),
    ]


async def test_loaded_versions_cannot_be_changed_or_removed(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    loaded = await upload(client, civil, f"身份证号,姓名\n{ID_NUMBERS[1]},张三\n".encode())
    assert loaded.status_code == 201
    for statement in (
        "UPDATE list_entries SET name = 'x'",
        "DELETE FROM list_entries",
        "UPDATE list_versions SET status = 'rejected'",
        "DELETE FROM list_versions",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    assert await entry_count(conn) == 1


async def test_township_officer_uploads_only_for_its_township(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin = await auth_headers(client, "admin")
    created = await client.post(
        "/api/v1/users",
        json={
            "username": "civil_a",
            "password": "Civil-a-Password-1",
            "role": "civil_affairs",
            "division_code": "330106001000",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    await register(conn, [(ID_NUMBERS[1], "张三")])
    civil_a = bearer(await login(client, "civil_a", "Civil-a-Password-1"))
    text = (
        f"身份证号,姓名,所属村\n{ID_NUMBERS[1]},张三,\n{ID_NUMBERS[2]},李四,330106002201\n"
        f"{ID_NUMBERS[3]},王五,\n{ID_NUMBERS[4]},钱六,曙光社区\n"
    )
    response = await upload(client, civil_a, text.encode())
    assert response.status_code == 422, response.text
    assert [(e["row"], e["problem"]) for e in response.json()["errors"]] == [
        (3, "lies outside your scope"),
        (4, "is empty and the person is in no household of your township"),
    ]
    ok = await upload(
        client, civil_a, f"身份证号,姓名,所属村\n{ID_NUMBERS[1]},张三,\n{ID_NUMBERS[4]},钱六,曙光社区\n".encode()
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["division_code"] == "330106001000"
    # The district officer sees the township's version; township B's staff may not read lists at all.
    civil = await auth_headers(client, "civil")
    listed = await client.get("/api/v1/eligibility/lists", headers=civil)
    assert [v["id"] for v in listed.json()["items"]] == [ok.json()["id"], response.json()["list_id"]]
    staff_b = await auth_headers(client, "staff_b")
    assert (await client.get(f"/api/v1/eligibility/lists/{ok.json()['id']}", headers=staff_b)).status_code == 403


async def test_every_staging_query_prepares_against_the_staging_table(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    from backend.db import load_queries

    queries = load_queries("backend.eligibility", "staging.sql")
    async with conn.transaction():
        await conn.execute(queries["create_staging"])
        for name, sql in queries.items():
            if name != "create_staging":
                await conn.prepare(sql)
    assert len(queries) == 9
