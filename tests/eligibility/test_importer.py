"""The list import's quick paths prove nothing new: the common-row check accepts only what the full
check accepts, and a file with a problem anywhere, in any chunk, is reported and loaded exactly as
through the staging table."""

from __future__ import annotations

import io
import itertools
from datetime import date
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.eligibility import importer, lists
from mobile_sync_protocol.rules.identity import check_character
from tests.conftest import auth_headers, bearer, login

TODAY = date(2026, 11, 25)
COLUMNS: dict[importer.Column, int] = {"id_number": 0, "name": 1, "valid_from": 2, "valid_to": 3, "division": 4}
NAMES: dict[importer.Column, str] = {
    "id_number": "身份证号",
    "name": "姓名",
    "valid_from": "有效期起",
    "valid_to": "有效期止",
    "division": "所属村",
}
DIVISION_NAMES = {"双浦村": "330106002201", "新村": None}


def resident(n: int, born: str = "19800101") -> str:
    base = f"110105{born}{n:03d}"
    return base + check_character(base)


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_character_shortcut_agrees_with_gb_11643(digits: str) -> None:
    for last in "0123456789X":
        assert importer._check_character_matches(digits + last) == (check_character(digits) == last)


ID_CELLS = [
    resident(1),
    resident(2).lower(),
    " " + resident(3),
    resident(4)[:-1] + "0",
    resident(5)[:-1] + "1",
    "".join(chr(0xFF10 + int(d)) for d in resident(6)),
    "440524800101002",
    "4.40524188001E+17",
    "",
    resident(7, born="20300101"),
    resident(8, born="19990231"),
    resident(9)[:16],
    resident(10) + "1",
]
NAME_CELLS = ["张三", " 李四 ", "", "　", "王" * 100, "王" * 101]
DATE_CELLS = [
    "",
    "2025-01-01",
    "2025/3/1",
    "2025年3月1日",
    "20250101",
    "长期",
    "-",
    "2025-13-01",
    "soon",
    " 2026-01-01 ",
]
DIVISION_CELLS = [
    "",
    "330106001001",
    "３３０１０６００１００１",
    "双浦村",
    "新村",
    "无名村",
    "33010600100",
    " 330106001002 ",
]


def test_a_common_row_gives_the_entry_the_full_check_gives() -> None:
    # Every combination of the cells above: some 60,000 rows, each through both checks.
    reader = importer.ListReader(io.BytesIO(b""), today=TODAY, division_names=DIVISION_NAMES)
    common = reader._common_row(COLUMNS)
    taken = 0
    for cells in itertools.product(ID_CELLS, NAME_CELLS, DATE_CELLS, DATE_CELLS, DIVISION_CELLS):
        entry = common(7, cells)
        if entry is not None:
            errors = reader.error_count
            assert entry == reader._row(7, cells, COLUMNS, NAMES), cells
            assert reader.error_count == errors, cells
            taken += 1
    assert taken > 0


def test_short_rows_and_extra_cells() -> None:
    reader = importer.ListReader(io.BytesIO(b""), today=TODAY)
    common = reader._common_row(COLUMNS)
    assert common(2, [resident(1), "张三", "", ""]) is None  # the full check explains the missing cells
    assert common(2, [resident(1), "张三", "", "", "", "more"]) == (2, resident(1), "张三", None, None, None)


@pytest.mark.parametrize(
    "cells",
    [
        [resident(1), "张三", "2025-01-01", "长期", "330106001001"],
        [resident(1), "张三", "", "", ""],
        [resident(1), " 张三 ", "2025/3/1", "2026-12-31", "双浦村"],
    ],
)
def test_the_usual_rows_take_the_common_path(cells: list[Any]) -> None:
    reader = importer.ListReader(io.BytesIO(b""), today=TODAY, division_names=DIVISION_NAMES)
    assert reader._common_row(COLUMNS)(2, cells) is not None


def test_spreadsheet_numbers_never_take_the_common_path() -> None:
    reader = importer.ListReader(io.BytesIO(b""), today=TODAY)
    assert reader._common_row(COLUMNS)(2, [110105198001010016, "张三", "", "", ""]) is None
    assert reader._common_row(COLUMNS)(2, [resident(1), "张三", date(2025, 1, 1), "", ""]) is None


# Through the service: files that fail late, in chunks of 2 rows ---------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lists, "COPY_CHUNK", 2)


async def upload(client: AsyncTestClient[Litestar], headers: dict[str, str], text: str, **form: str) -> Any:
    data = {"type": "di_bao", "effective_from": "2025-09-01", **form}
    return await client.post(
        "/api/v1/eligibility/lists", files={"file": ("list.csv", text.encode())}, data=data, headers=headers
    )


def csv_rows(rows: list[tuple[str, str, str]]) -> str:
    return "身份证号,姓名,所属村\n" + "".join(f"{i},{n},{d}\n" for i, n, d in rows)


GOOD = [(resident(n), f"张{n}", "330106001001") for n in range(1, 10)]


async def entry_count(conn: asyncpg.Connection) -> int:  # type: ignore[type-arg]
    return int(await conn.fetchval("SELECT count(*) FROM list_entries"))


@pytest.mark.usefixtures("small_chunks")
async def test_a_clean_file_in_many_chunks_loads_every_row_without_the_staging_table(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def staging_not_expected(*args: object, **kwargs: object) -> None:
        raise AssertionError("a clean file went through the staging table")

    monkeypatch.setattr(lists, "_load_checked", staging_not_expected)
    civil = await auth_headers(client, "civil")
    first = await upload(client, civil, csv_rows(GOOD))
    assert first.status_code == 201, first.text
    assert (first.json()["rows_read"], first.json()["rows_loaded"], first.json()["added"]) == (9, 9, 9)
    renamed = [(GOOD[1][0], "改名", GOOD[1][2]), *GOOD[2:], (resident(20), "新人", "330106002201")]
    second = await upload(client, civil, csv_rows(renamed), effective_from="2026-01-01")
    assert second.status_code == 201, second.text
    body = second.json()
    assert (body["previous_id"], body["added"], body["removed"], body["changed"]) == (first.json()["id"], 1, 1, 1)
    assert await entry_count(conn) == 18
    rows = await conn.fetch("SELECT row_no FROM list_entries WHERE version_id = $1 ORDER BY row_no", body["id"])
    assert [r["row_no"] for r in rows] == list(range(2, 11))


@pytest.mark.parametrize(
    ("late_row", "error"),
    [
        ((resident(30)[:-2], "赵", "330106001001"), ("身份证号", "has 16 characters")),
        ((resident(3), "张3", "330106001001"), ("身份证号", "the same person as row 4")),
        ((resident(31), "钱", "330106009999"), ("所属村", "is not a known division code")),
        ((resident(33), "", "330106001001"), ("姓名", "is empty")),
    ],
)
@pytest.mark.usefixtures("small_chunks")
async def test_a_problem_in_a_late_chunk_rejects_the_whole_file_with_its_report(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    late_row: tuple[str, str, str],
    error: tuple[str, str],
) -> None:
    civil = await auth_headers(client, "civil")
    response = await upload(client, civil, csv_rows([*GOOD, late_row]))
    assert response.status_code == 422, response.text
    [reported] = response.json()["errors"]
    assert (reported["row"], reported["column"]) == (11, error[0])
    assert error[1] in reported["problem"]
    assert await entry_count(conn) == 0
    version = await conn.fetchrow("SELECT status, rows_read, rows_loaded, rows_rejected FROM list_versions")
    assert tuple(version) == ("rejected", 10, 0, 1)
    # The next good upload loads all of its rows, as version 1: the rejected one took no number.
    good = await upload(client, civil, csv_rows(GOOD))
    assert (good.status_code, good.json()["version"], good.json()["rows_loaded"]) == (201, 1, 9)


@pytest.mark.usefixtures("small_chunks")
async def test_partial_import_with_a_late_bad_row_loads_the_rest(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    rows = [*GOOD, (resident(1), "张1", "330106001001"), (resident(40), "李", "")]
    response = await upload(client, civil, csv_rows(rows), partial="true")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["rows_read"], body["rows_loaded"], body["rows_rejected"]) == (11, 10, 1)
    assert body["errors"] == [{"row": 11, "column": "身份证号", "problem": "the same person as row 2"}]
    assert await entry_count(conn) == 10


@pytest.mark.usefixtures("small_chunks")
async def test_a_township_file_with_a_late_unplaced_row_is_rejected(
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
    civil_a = bearer(await login(client, "civil_a", "Civil-a-Password-1"))
    rows = [*GOOD[:5], (resident(50), "无家", "")]
    response = await upload(client, civil_a, csv_rows(rows))
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "row": 7,
            "column": "所属村",
            "problem": "is empty and the person is in no household of your township",
            "message": "Row 7, 所属村: is empty and the person is in no household of your township",
        }
    ]
    assert await entry_count(conn) == 0
    ok = await upload(client, civil_a, csv_rows(GOOD[:5]))
    assert (ok.status_code, ok.json()["rows_loaded"]) == (201, 5)


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.usefixtures("seeded", "small_chunks")
async def test_a_stream_that_cannot_be_read_twice_goes_through_the_staging_table(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    for rows, status in (([*GOOD, GOOD[0]], "rejected"), (GOOD, "loaded")):
        async with conn.transaction():
            version = await lists.import_list(
                conn,
                None,
                io.BufferedReader(_Unseekable(csv_rows(rows).encode())),
                list_type="di_bao",
                effective_from=date(2025, 9, 1),
                file_name="list.csv",
                today=TODAY,
            )
        assert (version.status, version.rows_loaded) == (status, 9 if status == "loaded" else 0)
    assert await entry_count(conn) == 9
