"""Lists say what they are: a category column agrees with the declared type or the row is
reported; a mixed file (type `auto`) is split by it, all or nothing; a rejected upload takes no
version number; a version dated before the one in force is refused unless it supersedes it."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.db import Pool, create_pool
from backend.eligibility.importer import Column, ListReader
from backend.i18n import use_language
from backend.jobs import worker
from tests.conftest import auth_headers, make_settings
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, publish_policy
from tests.ops.test_cli import env_for, fetch, seed_divisions
from tests.processes import run_cli

TODAY = date(2026, 12, 7)


def csv(*rows: str, header: str = "身份证号,姓名,人员类别") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


MIXED = csv(
    f"{ID_NUMBERS[1]},张三,特困",
    f"{ID_NUMBERS[2]},李四,低保对象",
    f"{ID_NUMBERS[3]},王五,特困供养人员",
    f"{ID_NUMBERS[4]},赵六,di_bao",
    f"{ID_NUMBERS[5]},钱七, 特困人员 ",
)


def read(content: bytes, list_type: str) -> tuple[list[int], list[tuple[int, str, str]]]:
    reader = ListReader(io.BytesIO(content), today=TODAY, list_type=list_type)
    rows = [entry[0] for entry in reader.entries()]
    return rows, [(e.row, e.column, e.problem) for e in reader.errors]


# --- the category column, read -------------------------------------------------------------------


def test_rows_whose_category_names_the_declared_type_load_in_any_of_its_names() -> None:
    content = csv(
        f"{ID_NUMBERS[1]},张三,特困",
        f"{ID_NUMBERS[2]},李四,特困人员",
        f"{ID_NUMBERS[3]},王五,特困供养人员",
        f"{ID_NUMBERS[4]},赵六,TE_KUN",
        header="身份证号,姓名,类别",
    )
    assert read(content, "te_kun") == ([2, 3, 4, 5], [])


def test_a_row_whose_category_disagrees_is_reported_with_its_row_and_column() -> None:
    content = csv(
        f"{ID_NUMBERS[1]},张三,特困",
        f"{ID_NUMBERS[2]},李四,低保",
        f"{ID_NUMBERS[3]},王五,",
        f"{ID_NUMBERS[4]},赵六,五保户",
        header="身份证号,姓名,救助类别",
    )
    rows, errors = read(content, "te_kun")
    assert rows == [2]
    assert errors == [
        (
            3,
            "救助类别",
            "says 低保 (Minimum living allowance recipient (di bao)), but the file is loaded as "
            "Person in extreme poverty (te kun); load a mixed file with the type auto",
        ),
        (4, "救助类别", "is empty"),
        (5, "救助类别", "names no list type Canbao knows (the README's Lists section has the names)"),
    ]
    with use_language("zh_CN"):
        _rows, chinese = read(content, "te_kun")
    assert chinese[0][:2] == (3, "救助类别")
    assert chinese[0][2] == "为“低保”（低保对象），但本名单按特困人员导入；混合名单请按类型 auto 导入"
    assert chinese[1][2] == "为空"


CATEGORY_CELLS = ["特困", " 特困人员 ", "ＴＥ＿ＫＵＮ", "te_kun", "低保", "", "五保户", "di_bao"]


def test_the_common_path_takes_only_rows_whose_category_the_full_check_accepts() -> None:
    columns: dict[Column, int] = {"id_number": 0, "name": 1, "category": 2}
    names: dict[Column, str] = {"id_number": "身份证号", "name": "姓名", "category": "类别"}
    reader = ListReader(io.BytesIO(b""), today=TODAY, list_type="te_kun")
    common = reader._common_row(columns)
    taken = []
    for category in CATEGORY_CELLS:
        cells = [ID_NUMBERS[1], "张三", category]
        entry = common(2, cells)
        full = reader._row(2, cells, columns, names)
        if entry is not None:
            assert entry == full, category
            taken.append(category)
        elif full is not None:
            taken.append(f"only full: {category}")
    assert taken == ["特困", " 特困人员 ", "ＴＥ＿ＫＵＮ", "te_kun"]
    assert [e.row for e in reader.errors] == [2, 2, 2, 2]  # 低保, empty, 五保户, di_bao


def test_without_a_category_column_the_declared_type_is_taken_as_it_is() -> None:
    assert read(csv(f"{ID_NUMBERS[1]},张三", header="身份证号,姓名"), "di_bao") == ([2], [])


def test_a_mixed_file_reads_its_types_and_reports_rows_of_none() -> None:
    content = csv(f"{ID_NUMBERS[1]},张三,特困", f"{ID_NUMBERS[2]},李四,低保", f"{ID_NUMBERS[3]},王五,五保户")
    reader = ListReader(io.BytesIO(content), today=TODAY)
    assert reader.categories_found() == {"te_kun": 1, "di_bao": 1}
    assert [(e.row, e.column) for e in reader.errors] == [(4, "人员类别")]
    one_type = ListReader(io.BytesIO(content), today=TODAY, list_type="di_bao", split=True)
    assert [entry[:3] for entry in one_type.entries()] == [(3, ID_NUMBERS[2], "李四")]
    assert (one_type.rows_read, one_type.errors) == (1, [])


# --- uploads ---------------------------------------------------------------------------------------


async def test_a_file_whose_category_column_says_another_type_loads_nothing(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    content = csv(*(f"{ID_NUMBERS[n]},居民{n},特困" for n in range(1, 4)), header="身份证号,姓名,类别")
    response = await upload(client, civil, content, list_type="di_bao")
    assert response.status_code == 422, response.text
    body = response.json()
    assert [(e["row"], e["column"]) for e in body["errors"]] == [(2, "类别"), (3, "类别"), (4, "类别")]
    assert all(e["problem"].startswith("says 特困 (") for e in body["errors"])
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 0
    loaded = await upload(client, civil, content, list_type="te_kun")
    assert (loaded.status_code, loaded.json()["rows_loaded"], loaded.json()["version"]) == (201, 3, 1)


async def test_auto_splits_a_mixed_file_into_one_version_per_type(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    response = await upload(client, civil, MIXED, list_type="auto")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["list_type"] == "auto"
    summary = [
        (v["list_type"], v["kind"], v["version"], v["status"], v["rows_read"], v["rows_loaded"], v["added"])
        for v in body["versions"]
    ]
    assert summary == [("di_bao", "subsidy", 1, "loaded", 2, 2, 2), ("te_kun", "subsidy", 1, "loaded", 3, 3, 3)]
    rows = await conn.fetch(
        "SELECT v.list_type, array_agg(e.row_no ORDER BY e.row_no) AS rows FROM list_entries e"
        " JOIN list_versions v ON v.id = e.version_id GROUP BY v.list_type ORDER BY v.list_type"
    )
    assert [(r["list_type"], r["rows"]) for r in rows] == [("di_bao", [3, 5]), ("te_kun", [2, 4, 6])]
    # Each version as if uploaded alone: the next di_bao upload is its version 2.
    again = await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四,低保"), list_type="di_bao")
    assert (again.json()["version"], again.json()["previous_id"]) == (2, body["versions"][0]["id"])


async def test_one_bad_row_rejects_a_mixed_file_whole_as_one_attempt(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    content = csv(
        f"{ID_NUMBERS[1]},张三,特困",
        f"{ID_NUMBERS[2]},李四,低保",
        f"{ID_NUMBERS[3]},,低保",  # no name: the di_bao part is rejected
        f"{ID_NUMBERS[4]},赵六,五保户",  # names no type
    )
    response = await upload(client, civil, content, list_type="auto")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "list_rejected"
    assert [(e["row"], e["column"], e["problem"]) for e in body["errors"]] == [
        (4, "姓名", "is empty"),
        (5, "人员类别", "names no list type Canbao knows (the README's Lists section has the names)"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 0
    kept = await conn.fetch("SELECT list_type, kind, version, status, rows_read, rows_rejected FROM list_versions")
    assert [tuple(r) for r in kept] == [("auto", None, None, "rejected", 4, 2)]
    assert (await client.get(f"/api/v1/eligibility/lists/{body['list_id']}", headers=civil)).json()["version"] is None
    partial = await upload(client, civil, MIXED, list_type="auto", partial=True)
    assert partial.status_code == 422, partial.text
    assert partial.json()["errors"][0]["field"] == "partial"


async def test_a_rejected_upload_takes_no_version_number(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    good = csv(f"{ID_NUMBERS[1]},张三", header="身份证号,姓名")
    assert (await upload(client, civil, good)).json()["version"] == 1
    for _attempt in range(2):
        bad = await upload(client, civil, csv(f"{ID_NUMBERS[1]},", header="身份证号,姓名"))
        assert bad.status_code == 422, bad.text
    second = await upload(client, civil, good, effective_from="2026-01-01")
    assert (second.status_code, second.json()["version"]) == (201, 2)
    versions = await conn.fetch("SELECT status, version FROM list_versions ORDER BY id")
    assert [tuple(r) for r in versions] == [("loaded", 1), ("rejected", None), ("rejected", None), ("loaded", 2)]


async def test_an_earlier_effective_date_is_refused_unless_it_supersedes(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    one = csv(f"{ID_NUMBERS[1]},张三", header="身份证号,姓名")
    first = await upload(client, civil, one, effective_from="2026-01-01")
    assert first.status_code == 201, first.text
    later = csv(f"{ID_NUMBERS[2]},李四", header="身份证号,姓名")
    refused = await upload(client, civil, later, effective_from="2025-12-01")
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "list_version_in_force"
    assert problem["in_force"] == {
        "list_id": first.json()["id"],
        "list_type": "di_bao",
        "version": 1,
        "effective_from": "2026-01-01",
    }
    assert "version 1 is in force from 2026-01-01" in problem["detail"]
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 1, "a refused upload is no attempt"
    zh = await upload(client, {**civil, "Accept-Language": "zh-CN"}, later, effective_from="2025-12-01")
    assert zh.json()["detail"].startswith("低保对象第 1 版自 2026-01-01 起生效")
    # The same day as the version in force, or later, needs no word.
    assert (await upload(client, civil, later, effective_from="2026-01-01")).json()["version"] == 2

    superseding = await client.post(
        "/api/v1/eligibility/lists",
        files={"file": ("list.csv", later)},
        data={"type": "di_bao", "effective_from": "2025-12-01", "supersedes": "true"},
        headers=civil,
    )
    assert superseding.status_code == 201, superseding.text
    assert (superseding.json()["version"], superseding.json()["supersedes"]) == (3, True)
    # In force: version 3 from 2025-12-01 on; versions 1 and 2 (dated after it) never are.
    windows = await conn.fetch(
        "SELECT version, effective_from, superseded_on FROM subsidy_list_windows ORDER BY version"
    )
    assert [tuple(w) for w in windows] == [(3, date(2025, 12, 1), None)]
    await publish_policy(client, await auth_headers(client, "admin"))
    for as_of in ("2025-12-15", "2026-03-01"):
        check = await client.post(
            "/api/v1/eligibility/check",
            json={"id_numbers": [ID_NUMBERS[1], ID_NUMBERS[2]], "coverage_year": 2026, "as_of": as_of},
            headers=await auth_headers(client, "staff_a"),
        )
        assert check.status_code == 200, check.text
        zhang, li = check.json()["items"]
        assert zhang["categories"] == [], as_of
        assert [(c["category"], c["source"]["version"]) for c in li["categories"]] == [("di_bao", 3)], as_of


async def test_without_supersedes_a_later_dated_version_takes_over_on_its_date(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    client: AsyncTestClient[Litestar],
) -> None:
    civil = await auth_headers(client, "civil")
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三", header="身份证号,姓名"), effective_from="2025-09-01")
    await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四", header="身份证号,姓名"), effective_from="2026-01-01")
    windows = await conn.fetch(
        "SELECT version, effective_from, superseded_on FROM subsidy_list_windows ORDER BY version"
    )
    assert [tuple(w) for w in windows] == [
        (1, date(2025, 9, 1), date(2026, 1, 1)),
        (2, date(2026, 1, 1), None),
    ]


# --- the background path and the command line --------------------------------------------------------


@pytest.fixture
async def pool(db_dsn: str) -> Any:
    created: Pool = await create_pool(db_dsn, 1, 4)
    yield created
    await created.close()


async def test_a_mixed_upload_as_a_job_gives_the_split_and_speaks_the_uploaders_language(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    pool: Pool,
    db_dsn: str,
) -> None:
    civil = await auth_headers(client, "civil")
    answer = await client.post(
        "/api/v1/eligibility/lists?background=true",
        files={"file": ("mixed.csv", MIXED)},
        data={"type": "auto", "effective_from": "2025-09-01"},
        headers=civil,
    )
    assert answer.status_code == 202, answer.text
    await worker.run_one(pool, job_handlers(), make_settings(db_dsn))
    seen = (await client.get(answer.json()["href"], headers=civil)).json()
    assert seen["state"] == "succeeded", seen
    assert [(v["list_type"], v["rows_loaded"]) for v in seen["result"]["versions"]] == [("di_bao", 2), ("te_kun", 3)]

    # A single type dated before the one in force is refused when the job is asked for.
    refused = await client.post(
        "/api/v1/eligibility/lists?background=true",
        files={"file": ("list.csv", csv(f"{ID_NUMBERS[1]},张三,特困"))},
        data={"type": "te_kun", "effective_from": "2025-01-01"},
        headers={**civil, "Accept-Language": "zh-CN"},
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "list_version_in_force")
    # A mixed one once its types are known: the job fails, in the uploader's language.
    answer = await client.post(
        "/api/v1/eligibility/lists?background=true",
        files={"file": ("mixed.csv", MIXED)},
        data={"type": "auto", "effective_from": "2025-01-01"},
        headers={**civil, "Accept-Language": "zh-CN"},
    )
    await worker.run_one(pool, job_handlers(), make_settings(db_dsn))
    failed = (await client.get(answer.json()["href"], headers=civil)).json()
    assert (failed["state"], failed["error"]["code"]) == ("failed", "list_version_in_force")
    assert failed["error"]["detail"].startswith("低保对象第 1 版自 2025-09-01 起生效")
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 2


def test_the_command_line_imports_a_mixed_file_with_type_auto(db_dsn: str, tmp_path: Path) -> None:
    seed_divisions(db_dsn)
    path = tmp_path / "mixed.csv"
    path.write_bytes(MIXED)
    result = run_cli("lists", "import", str(path), "--type", "auto", "--effective", "2025-09-01", env=env_for(db_dsn))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Minimum living allowance recipient (di bao) version 1 (")
    assert "2 rows loaded, 0 rejected" in lines[0]
    assert lines[1].startswith("Person in extreme poverty (te kun) version 1 (")
    assert "3 rows loaded, 0 rejected" in lines[1]
    assert fetch(db_dsn, "SELECT list_type, version, rows_loaded FROM list_versions ORDER BY list_type") == [
        ("di_bao", 1, 2),
        ("te_kun", 1, 3),
    ]
    earlier = run_cli("lists", "import", str(path), "--type", "auto", "--effective", "2025-01-01", env=env_for(db_dsn))
    assert earlier.returncode == 1
    assert "version 1 is in force from 2025-09-01" in earlier.stderr
    superseding = run_cli(
        "lists",
        "import",
        str(path),
        "--type",
        "auto",
        "--effective",
        "2025-01-01",
        "--supersedes",
        env=env_for(db_dsn),
    )
    assert superseding.returncode == 0, superseding.stderr
    assert fetch(db_dsn, "SELECT count(*) FROM list_versions WHERE supersedes") == [(2,)]
