"""Files beyond a reader's limits, through the routes and commands that read them: a 413 or 422
problem+json (or the command's error) names the limit, nothing of the file is kept, and the server
answers the next request. The readers: civil-affairs lists, reconciliation statements (routes),
enrolment history and divisions (commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.eligibility import lists
from tests.conftest import auth_headers
from tests.eligibility.test_importer import GOOD, csv_rows, resident
from tests.eligibility.test_importer import upload as upload_csv
from tests.eligibility.test_lists import upload
from tests.ops.test_cli import env_for, snapshot
from tests.ops.test_tabular import number_cell, text_cell, workbook
from tests.processes import run_cli

Client = AsyncTestClient[Litestar]

SPARSE = workbook(
    f'<row r="1">{text_cell("A1", "身份证号")}{text_cell("B1", "姓名")}</row>'
    f'<row r="1048576">{number_cell("XFD1048576")}</row>'
)
SPARSE_DETAIL = (
    "the sheet's cells span 1,048,576 rows by 16,384 columns (17,179,869,184 cells); at most 20,000,000 are read"
)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def kept(conn: asyncpg.Connection) -> tuple[int, int]:  # type: ignore[type-arg]
    versions = await conn.fetchval("SELECT count(*) FROM list_versions")
    entries = await conn.fetchval("SELECT count(*) FROM list_entries")
    return int(versions), int(entries)


async def test_a_sparse_xlsx_list_is_refused_with_413_and_the_next_upload_loads(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    assert len(SPARSE) < 2000
    body = problem(await upload(client, civil, SPARSE, filename="dibao.xlsx"), 413)
    assert (body["code"], body["limit"], body["maximum"], body["detail"]) == (
        "file_too_large",
        "max_sheet_cells",
        20_000_000,
        SPARSE_DETAIL,
    )
    assert await kept(conn) == (0, 0)
    good = await upload_csv(client, civil, csv_rows(GOOD))
    assert good.status_code == 201, good.text
    assert (good.json()["version"], good.json()["rows_loaded"]) == (1, 9)


@pytest.mark.usefixtures("small_chunks")
async def test_a_list_row_beyond_the_limits_after_rows_were_copied_keeps_nothing(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks of two rows: four chunks are copied before the fifth reaches the wide row."""
    civil = await auth_headers(client, "civil")
    text = csv_rows(GOOD) + resident(30) + ",宽" + ",x" * 300 + "\n"
    body = problem(await upload_csv(client, civil, text), 422)
    assert (body["code"], body["limit"], body["maximum"]) == ("row_too_large", "max_columns", 256)
    assert body["detail"] == "row 11 has 302 columns; at most 256 are read"
    assert await kept(conn) == (0, 0)
    for partial in ("true", "false"):
        again = await upload_csv(client, civil, text, partial=partial)
        assert again.status_code == 422 and again.json()["limit"] == "max_columns"
    long_name = csv_rows([*GOOD, (resident(31), "名" * 4097, "330106001001")])
    body = problem(await upload_csv(client, civil, long_name), 422)
    assert (body["limit"], body["maximum"]) == ("max_cell_chars", 4096)
    assert resident(31) not in body["detail"] and "名" not in body["detail"]
    assert await kept(conn) == (0, 0)
    assert (await client.get("/health")).status_code == 200


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lists, "COPY_CHUNK", 2)


async def reconcile(client: Client, statement: bytes) -> Any:
    return await client.post(
        "/api/v1/reconciliations",
        files={"file": ("statement.csv", statement, "text/csv")},
        headers=await auth_headers(client, "reviewer_a"),
    )


async def test_a_statement_beyond_its_limits_is_refused_with_422_and_the_next_one_is_read(client: Client) -> None:
    wide = "交易流水号,交易时间,交易金额" + ",备注" * 62 + "\n"
    body = problem(await reconcile(client, wide.encode()), 422)
    assert (body["code"], body["limit"], body["maximum"]) == ("row_too_large", "max_columns", 64)
    assert body["detail"] == "row 1 has 65 columns; at most 64 are read"
    long_note = "交易流水号,交易时间,交易金额,备注\nWX-1,2025-10-08 09:01:00,300.00," + "注" * 1025 + "\n"
    body = problem(await reconcile(client, long_note.encode("gb18030")), 422)
    assert (body["limit"], body["maximum"]) == ("max_cell_chars", 1024)
    assert body["detail"] == "a cell of row 2 holds more than 1,024 characters; that is the most read"
    good = await reconcile(client, "交易流水号,交易时间,交易金额\nWX-1,2025-10-08 09:01:00,300.00\n".encode())
    assert good.status_code == 200, good.text
    assert [u["channel_ref"] for u in good.json()["unexpected"]] == ["WX-1"]


def test_a_history_file_beyond_its_limits_is_refused_by_the_command(db_dsn: str, tmp_path: Path) -> None:
    before = snapshot(db_dsn)
    sparse = tmp_path / "history.xlsx"
    sparse.write_bytes(SPARSE)
    result = run_cli("enrollments", "import", str(sparse), env=env_for(db_dsn))
    assert (result.returncode, result.stderr.strip()) == (1, f"error: {SPARSE_DETAIL}; nothing written")
    wide = tmp_path / "history.csv"
    wide.write_text("身份证号,参保年度,状态" + ",备注" * 126 + "\n", encoding="utf-8")
    result = run_cli("enrollments", "import", str(wide), env=env_for(db_dsn))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: row 1 has 129 columns; at most 128 are read; nothing written",
    )
    old = tmp_path / "history.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504)
    result = run_cli("enrollments", "import", str(old), env=env_for(db_dsn))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "row 1, file: XLS (Excel 97-2003) workbooks are not read; save the file as XLSX or CSV"
    )
    assert snapshot(db_dsn) == before


def test_a_division_file_beyond_its_limits_is_refused_by_the_command(db_dsn: str, tmp_path: Path) -> None:
    before = snapshot(db_dsn)
    path = tmp_path / "divisions.csv"
    path.write_text("code,name,parent_code" + ",note" * 30 + "\n330000000000,浙江省,\n", encoding="utf-8")
    result = run_cli("divisions", "import", str(path), env=env_for(db_dsn))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: row 1 has 33 columns; at most 32 are read; nothing written",
    )
    path.write_text("code,name,parent_code\n330000000000," + "浙" * 257 + ",\n", encoding="utf-8")
    result = run_cli("divisions", "import", str(path), env=env_for(db_dsn))
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "error: a cell of row 2 holds more than 256 characters; that is the most read; nothing written",
    )
    assert snapshot(db_dsn) == before
