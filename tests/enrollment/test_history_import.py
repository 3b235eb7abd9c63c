"""`canbao enrollments import`: enrolment history from before go-live, from CSV (UTF-8 or GBK) or
XLSX, checked whole before anything is written, and what it does to coverage afterwards."""

from __future__ import annotations

import codecs
import io
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import xlsxwriter

from backend.actor import Actor, Role, Scope
from backend.db import load_queries
from backend.enrollment import enrollments, history, households
from backend.enrollment.enrollments import EnrollmentCreate
from backend.enrollment.households import HouseholdCreate, MemberIn
from backend.policy import service as policy
from mobile_sync_protocol.rules.premium import CategorySubsidy, FullSubsidy
from tests.factories import ID_NUMBERS, history_rows
from tests.ops.test_cli import env_for, fetch, on_db, snapshot
from tests.processes import clean_env, data_dir, run_cli

TODAY = date(2026, 11, 25)

GOOD_ROWS = [
    (ID_NUMBERS[1], "2024", "已缴费"),
    (ID_NUMBERS[1], "2025", "已审核"),
    (ID_NUMBERS[2], "2025", "全额资助"),
    (ID_NUMBERS[0].lower(), "2025年", "已注销"),  # a lower-case x is normalised
]
STORED = [
    (ID_NUMBERS[0], 2025, "cancelled"),
    (ID_NUMBERS[1], 2024, "paid"),
    (ID_NUMBERS[1], 2025, "confirmed"),
    (ID_NUMBERS[2], 2025, "subsidised"),
]


def stored(db_dsn: str) -> list[tuple[str, int, str]]:
    """The enrolment history, numbers opened: (number, year, status), sorted."""
    return [row[:3] for row in on_db(db_dsn, history_rows)]


def csv_text(header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> str:
    return "".join(",".join(r) + "\r\n" for r in [header, *rows])


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    """A workbook as Excel writes it: numbers stay numbers, text stays text, row by row from A1."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_numbers": False})
    sheet = workbook.add_worksheet("参保名单")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                sheet.write_string(r, c, value)
            elif value is not None:
                sheet.write_number(r, c, value)
    workbook.close()
    return buffer.getvalue()


def import_file(db_dsn: str, path: Path, *extra: str) -> Any:
    return run_cli("enrollments", "import", str(path), *extra, env=env_for(db_dsn))


# --- good files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gbk"])
@pytest.mark.parametrize(
    "header", [("身份证号", "参保年度", "状态"), ("公民身份号码", "年度", "参保状态")], ids=["short", "long"]
)
def test_csv_with_chinese_headers_is_imported_in_utf8_with_or_without_bom_and_in_gbk(
    db_dsn: str, tmp_path: Path, encoding: str, header: tuple[str, str, str]
) -> None:
    data = csv_text(header, GOOD_ROWS).encode(encoding)
    if encoding == "gbk":
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
    assert data.startswith(codecs.BOM_UTF8) == (encoding == "utf-8-sig")
    path = tmp_path / "history-2025.csv"
    path.write_bytes(data)

    result = import_file(db_dsn, path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 rows: 4 new, 0 updated, 0 unchanged"
    assert stored(db_dsn) == STORED
    assert fetch(db_dsn, "SELECT DISTINCT source_file FROM enrollment_history") == [("history-2025.csv",)]
    assert fetch(db_dsn, "SELECT actor_kind, action, entity, summary FROM audit_log ORDER BY id") == [
        ("system", "enqueue", "job", {"kind": "history_import", "file_bytes": len(data)}),
        (
            "system",
            "import",
            "enrollment_history",
            {"file": "history-2025.csv", "rows": 4, "inserted": 4, "updated": 0, "unchanged": 0},
        ),
    ]


def test_xlsx_with_english_headers_below_a_title_row_and_numeric_years_is_imported(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "history.xlsx"
    path.write_bytes(
        xlsx_bytes(
            [
                ["2024–2025 enrolment export"],
                [],
                ["Status", "ID_Number", "Coverage_Year", "note"],
                ["paid", ID_NUMBERS[1], 2024, "x"],
                ["confirmed", ID_NUMBERS[1], 2025.0],
                ["Subsidised", ID_NUMBERS[2], 2025],
                [],
                ["CANCELLED", ID_NUMBERS[0], 2025],
            ]
        )
    )
    result = import_file(db_dsn, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 rows: 4 new, 0 updated, 0 unchanged"
    assert stored(db_dsn) == STORED


def test_reimport_is_unchanged_and_a_later_file_updates_only_what_differs(db_dsn: str, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text(csv_text(("身份证号", "参保年度", "状态"), GOOD_ROWS), encoding="utf-8")
    assert import_file(db_dsn, first).returncode == 0
    before = snapshot(db_dsn)

    again = import_file(db_dsn, first)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "4 rows: 0 new, 0 updated, 4 unchanged"
    after = snapshot(db_dsn)
    assert after["enrollment_history"] == before["enrollment_history"]  # imported_at and source_file kept
    assert len(after["audit_log"]) == 4  # each import: its job stored, and the import

    second = tmp_path / "second.csv"
    second.write_text(
        csv_text(
            ("id_number", "coverage_year", "status"),
            [
                (ID_NUMBERS[1], "2025", "confirmed"),
                (ID_NUMBERS[2], "2025", "cancelled"),
                (ID_NUMBERS[3], "2025", "paid"),
            ],
        ),
        encoding="utf-8",
    )
    changed = import_file(db_dsn, second)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "3 rows: 1 new, 1 updated, 1 unchanged"
    assert on_db(db_dsn, history_rows) == [
        (ID_NUMBERS[0], 2025, "cancelled", "first.csv"),
        (ID_NUMBERS[1], 2024, "paid", "first.csv"),
        (ID_NUMBERS[1], 2025, "confirmed", "first.csv"),
        (ID_NUMBERS[2], 2025, "cancelled", "second.csv"),
        (ID_NUMBERS[3], 2025, "paid", "second.csv"),
    ]


def test_dry_run_counts_against_the_database_and_writes_nothing(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(csv_text(("身份证号", "参保年度", "状态"), GOOD_ROWS[:2]), encoding="utf-8")
    assert import_file(db_dsn, path).returncode == 0
    path.write_text(csv_text(("身份证号", "参保年度", "状态"), GOOD_ROWS), encoding="utf-8")
    before = snapshot(db_dsn)

    result = import_file(db_dsn, path, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dry run, nothing written: 4 rows: 2 new, 0 updated, 2 unchanged"
    assert snapshot(db_dsn) == before


# --- bad files -----------------------------------------------------------------------------------

SCIENTIFIC = "is in scientific notation: a spreadsheet stored it as a number and lost its last digits"
LOST_DIGITS = "has 17 characters; a resident identity number has 18"
ZEROED = "the check character does not match; a digit is wrong. It ends in 000"
STORED_AS_NUMBER = "is stored as a number, so the spreadsheet has lost its last digits"


@pytest.mark.parametrize(
    ("id_number", "year", "status", "column", "problem"),
    [
        ("4.40524E+17", "2025", "paid", "身份证号", SCIENTIFIC),
        (ID_NUMBERS[1][:-1], "2025", "paid", "身份证号", LOST_DIGITS),
        ("440524198001010000", "2025", "paid", "身份证号", ZEROED),
        ("110105198013010013", "2025", "paid", "身份证号", "the birth date it encodes is not a real date"),
        ("110105202701010016", "2025", "paid", "身份证号", "the birth date it encodes is in the future"),
        ("", "2025", "paid", "身份证号", "no identity number was entered"),
        (ID_NUMBERS[1], "1999", "paid", "参保年度", "must lie between 2000 and 2026"),
        (ID_NUMBERS[1], "2027", "paid", "参保年度", "must lie between 2000 and 2026"),
        (ID_NUMBERS[1], "25", "paid", "参保年度", "must be a year such as 2025"),
        (ID_NUMBERS[1], "", "paid", "参保年度", "is empty"),
        (
            ID_NUMBERS[1],
            "2025",
            "欠费",
            "状态",
            "unknown status '欠费'; known: paid, subsidised, confirmed, cancelled, "
            "已缴费, 参保缴费, 资助参保, 全额资助, 已审核, 正常参保, 已注销, 终止",
        ),
        (ID_NUMBERS[1], "2025", "", "状态", "is empty"),
    ],
    ids=[
        "scientific-notation",
        "lost-digit",
        "zeroed-digits",
        "unreal-birth-date",
        "future-birth-date",
        "empty-id",
        "year-too-early",
        "year-in-the-future",
        "two-digit-year",
        "empty-year",
        "unknown-status",
        "empty-status",
    ],
)
def test_each_kind_of_bad_cell_is_named_by_row_and_column(
    id_number: str, year: str, status: str, column: str, problem: str
) -> None:
    text = csv_text(("身份证号", "参保年度", "状态"), [GOOD_ROWS[0], (id_number, year, status)])
    parsed = history.parse_history(text.encode("gbk"), today=TODAY)
    [error] = parsed.errors
    assert (error.row, error.column) == (3, column)
    assert error.problem.startswith(problem)
    if id_number:
        assert id_number not in error.problem


def test_a_person_twice_for_the_same_year_is_named_with_the_first_row() -> None:
    rows = [GOOD_ROWS[1], GOOD_ROWS[0], (ID_NUMBERS[1], "2025年", "已缴费")]
    parsed = history.parse_history(csv_text(("身份证号", "参保年度", "状态"), rows).encode(), today=TODAY)
    assert parsed.errors == [history.RowError(4, "身份证号", "the same person and year as row 2")]


def test_an_18_digit_id_number_stored_as_a_number_in_xlsx_is_rejected_as_lost_digits() -> None:
    raw = xlsx_bytes(
        [
            ["身份证号", "参保年度", "状态"],
            [440524198001010013, 2025, "已缴费"],
            [ID_NUMBERS[1], 2025, "已缴费"],
            [110105491231002, 2025, "已缴费"],  # 15 digits survive as a number, and become 18
        ]
    )
    parsed = history.parse_history(raw, today=TODAY)
    [error] = parsed.errors
    assert (error.row, error.column) == (2, "身份证号")
    assert error.problem.startswith(STORED_AS_NUMBER)
    assert [r.id_number for r in parsed.rows] == [ID_NUMBERS[1], ID_NUMBERS[0]]


ID_HEADERS = "身份证号 or 身份证号码 or 公民身份号码 or id_number"
YEAR_HEADERS = "参保年度 or 年度 or coverage_year"
STATUS_HEADERS = "状态 or 参保状态 or status"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("身份证号,状态\r\n110105198001010016,已缴费\r\n", f"row 1, header: no column for {YEAR_HEADERS}"),
        ("身份证号,身份证号码,年度,状态\r\n", f"row 1, header: more than one column for {ID_HEADERS}"),
        (
            "姓名,金额\r\n张三,400\r\n",
            f"row 1, header: no header row with columns for {ID_HEADERS}; {YEAR_HEADERS}; {STATUS_HEADERS}",
        ),
        ("身份证号,年度,状态\r\n,,\r\n", "row 1, header: no rows follow the header"),
    ],
    ids=["missing-column", "two-id-columns", "no-header", "no-rows"],
)
def test_a_file_without_the_right_header_is_rejected(db_dsn: str, tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    result = import_file(db_dsn, path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [problem, "error: 1 bad rows; nothing imported"]


def test_a_file_with_bad_rows_is_rejected_whole_with_a_report_and_writes_nothing(db_dsn: str, tmp_path: Path) -> None:
    rows = [
        GOOD_ROWS[0],
        ("4.40524E+17", "2025", "已缴费"),
        GOOD_ROWS[1],
        (ID_NUMBERS[2][:-1], "1999", "欠费"),
        (ID_NUMBERS[1], "2025", "已缴费"),
        GOOD_ROWS[2],
    ]
    path = tmp_path / "bad.csv"
    path.write_bytes(("2025年参保名单\r\n" + csv_text(("公民身份号码", "年度", "参保状态"), rows)).encode("gbk"))
    before = snapshot(db_dsn)

    result = import_file(db_dsn, path)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "row 4, 公民身份号码",
        "row 6, 公民身份号码",
        "row 6, 年度",
        "row 6, 参保状态",
        "row 7, 公民身份号码",
        "error",
    ]
    assert lines[4] == "row 7, 公民身份号码: the same person and year as row 5"
    assert lines[-1] == "error: 5 bad rows; nothing imported"
    assert ID_NUMBERS[2][:-1] not in result.stderr
    assert snapshot(db_dsn) == before


def test_an_unreadable_file_is_rejected(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_bytes(b"\xff\xfe\x00\x81")
    result = import_file(db_dsn, path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "row 1, file: the file is neither a spreadsheet nor UTF-8 or GBK/GB18030 text",
        "error: 1 bad rows; nothing imported",
    ]
    missing = import_file(db_dsn, tmp_path / "nowhere.csv")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: cannot read {tmp_path / 'nowhere.csv'}: No such file or directory"


async def test_history_queries_prepare(conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    for name, sql in load_queries("backend.enrollment", "history.sql").items():
        assert await conn.prepare(sql), name


# --- what history changes ------------------------------------------------------------------------


async def _actors(conn: asyncpg.Connection) -> tuple[Actor, Actor]:  # type: ignore[type-arg]
    def actor(row: asyncpg.Record) -> Actor:
        level = "district" if row["role"] == Role.DISTRICT_ADMIN else "township"
        return Actor(kind="user", id=row["id"], role=Role(row["role"]), scope=Scope(row["division_code"], level))

    rows = {r["username"]: r for r in await conn.fetch("SELECT id, username, role, division_code FROM users")}
    return actor(rows["admin"]), actor(rows["staff_a"])


@pytest.mark.parametrize(
    ("history_rows", "start", "reason", "waiting_months"),
    [
        ([("110105198001010016", "2025", "已审核")], date(2026, 1, 1), "in_window", 0),
        # 2025 unknown: unknown is not a gap (the policy's default), so no wait.
        ([("110105198001010016", "2024", "已审核")], date(2026, 1, 1), "in_window", 0),
        # 2025 cancelled in the old system: known uncovered, a gap of one year.
        ([("110105198001010016", "2025", "已注销")], date(2026, 5, 1), "waiting_period", 4),
        ([], date(2026, 1, 1), "in_window", 0),
    ],
    ids=["covered-2025", "covered-2024-only", "cancelled-2025", "no-history"],
)
async def test_imported_2025_history_gives_a_2026_in_window_payment_the_whole_year(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    seeded: None,
    tmp_path: Path,
    history_rows: list[tuple[str, str, str]],
    start: date,
    reason: str,
    waiting_months: int,
) -> None:
    if history_rows:
        path = tmp_path / "history.csv"
        path.write_text(csv_text(("身份证号", "参保年度", "状态"), history_rows), encoding="utf-8")
        result = import_file(db_dsn, path)
        assert result.returncode == 0, result.stderr
    admin, staff = await _actors(conn)
    in_window = date(2025, 11, 3)
    async with conn.transaction():
        await policy.create_version(
            conn,
            admin,
            2026,
            policy.PolicyIn(
                effective_from=date(2025, 9, 1),
                premium_fen=40000,
                window_start=date(2025, 9, 1),
                window_end=date(2025, 12, 31),
                rules=policy.PolicyRules(categories=(CategorySubsidy(category="te_kun", rule=FullSubsidy()),)),
            ),
        )
        home = await households.create_household(
            conn,
            staff,
            HouseholdCreate(
                village_code="330106001001",
                household_no="0001",
                members=[MemberIn(name="张三", relation="head", id_number=ID_NUMBERS[1])],
            ),
            in_window,
        )
        head = await conn.fetchval("SELECT person_id FROM memberships WHERE household_id = $1", home["id"])
        enrolled = await enrollments.enrol(
            conn,
            staff,
            EnrollmentCreate(household_id=home["id"], coverage_year=2026, person_ids=[head]),
            in_window,
            b"k" * 32,
        )
        paid = await enrollments.mark_paid(conn, staff, enrolled.items[0].id, in_window)
    assert (paid.coverage_start, paid.coverage_end, paid.coverage_reason, paid.waiting_months) == (
        start,
        date(2026, 12, 31),
        reason,
        waiting_months,
    )


def test_a_bad_setting_stops_the_import_before_any_database_is_started(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(csv_text(("身份证号", "参保年度", "状态"), GOOD_ROWS), encoding="utf-8")
    with data_dir() as folder:
        result = run_cli(
            "--data-dir",
            str(folder),
            "enrollments",
            "import",
            str(path),
            env=clean_env(CANBAO_TIMEZONE="Mars/Olympus_Mons"),
        )
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "CANBAO_TIMEZONE" in result.stderr
        assert list(folder.iterdir()) == []
