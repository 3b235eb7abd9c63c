"""Enrolment history from before go-live (参保历史): an export of the old system, read and checked
row by row (pure), then written into `enrollment_history` in one transaction, so that gaps and
waiting periods are right from day one.

A file is CSV (UTF-8 with or without BOM, or GBK/GB18030) or an XLSX workbook, read within LIMITS
(backend/tabular.py; XLS and ODS are refused: they cannot be checked before they are loaded whole);
columns are found by their Chinese or English header. One bad row rejects the whole file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Literal

import msgspec

from backend import crypto, tabular
from backend.audit.service import record
from backend.clock import local_today
from backend.crypto import ID_NUMBER
from backend.db import Connection, load_queries
from backend.divisions.service import RowError
from backend.enrollment import enrollments
from backend.i18n import _, ngettext
from backend.jobs.service import JobError
from backend.jobs.worker import JobRun, Outcome
from backend.tabular import UnreadableFile
from mobile_sync_protocol.rules.identity import IdentityNumberError, normalise, parse_resident_id

__all__ = [
    "COLUMNS",
    "STATUSES",
    "HistoryRow",
    "HistoryStatus",
    "ImportSummary",
    "ParsedHistory",
    "Problem",
    "RowError",
    "UnreadableFile",
    "check_table",
    "import_history",
    "parse_history",
    "read_table",
]

Q = load_queries("backend.enrollment", "history.sql")

HistoryStatus = Literal["paid", "subsidised", "confirmed", "cancelled"]
Cell = object  # what a CSV (str) or a spreadsheet (str, int, float, bool, dates) holds
Column = Literal["id_number", "coverage_year", "status"]

FIRST_YEAR = 2000
# A title line or two (e.g. "2025年城乡居民医保参保名单") often sits above the header in exports.
HEADER_SEARCH_ROWS = 10
BATCH = 20_000
# An old system's export: every person and year of a district, a few columns of short text.
LIMITS = tabular.Limits(max_rows=2_000_000, max_columns=128, max_cell_chars=1024)

# Accepted headers per column, compared after removing spaces and lower-casing.
COLUMNS: dict[Column, tuple[str, ...]] = {
    "id_number": ("身份证号", "身份证号码", "公民身份号码", "id_number"),
    "coverage_year": ("参保年度", "年度", "coverage_year"),
    "status": ("状态", "参保状态", "status"),
}

# The old systems' wording of a year's outcome, and ours.
STATUSES: dict[str, HistoryStatus] = {
    "paid": "paid",
    "subsidised": "subsidised",
    "subsidized": "subsidised",
    "confirmed": "confirmed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "已缴费": "paid",
    "参保缴费": "paid",
    "资助参保": "subsidised",
    "全额资助": "subsidised",
    "已审核": "confirmed",
    "正常参保": "confirmed",
    "已注销": "cancelled",
    "终止": "cancelled",
}

_KNOWN_STATUSES = ", ".join(s for s in STATUSES if s not in {"subsidized", "canceled"})
_YEAR = re.compile(r"([0-9]{4})(?:年|\.0+)?")
_ZIP = b"PK\x03\x04"  # XLSX and ODS
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # XLS (BIFF in an OLE2 container)


class HistoryRow(msgspec.Struct, frozen=True, kw_only=True):
    row: int  # in the file, counting the header and any lines above it from 1
    id_number: str
    coverage_year: int
    status: HistoryStatus


class ParsedHistory(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[HistoryRow]
    errors: list[RowError]


class ImportSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    rows: int
    inserted: int
    updated: int
    unchanged: int
    # What the new or changed years did to live enrolments of a later year (`enrollments.
    # reopen_after_history`): registered ones reopened (their cover at payment follows the new
    # history), funded ones whose cover would change put to a reviewer (a gap review each).
    reopened: int = 0
    to_review: int = 0


class Problem(msgspec.Struct, frozen=True):
    """What is wrong with one cell."""

    message: str


# Reading -----------------------------------------------------------------------------------------


def read_table(raw: bytes) -> list[Sequence[Cell]]:
    """The cells of a file, row by row: the first visible sheet of an XLSX workbook, or CSV text.

    The format is told by the file's first bytes, not its name. A file beyond LIMITS raises
    `tabular.LimitExceeded`."""
    if raw.startswith(_OLE):
        raise UnreadableFile(_("XLS (Excel 97-2003) workbooks are not read; save the file as XLSX or CSV"))
    table: list[Sequence[Cell]]
    if raw.startswith(_ZIP):
        # Leading empty rows are kept, so that row numbers are the ones Excel shows.
        table = list(tabular.xlsx_rows(raw, LIMITS))
        return table
    try:
        table = list(tabular.csv_rows(io.StringIO(_decode(raw)), LIMITS))
    except csv.Error as exc:
        raise UnreadableFile(_("the CSV cannot be read ({error})", error=exc)) from None
    return table


def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):  # GB18030 is a superset of GBK and GB2312
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnreadableFile(_("the file is neither a spreadsheet nor UTF-8 or GBK/GB18030 text"))


# Checking ----------------------------------------------------------------------------------------


def parse_history(raw: bytes, *, today: date) -> ParsedHistory:
    """Every row of the file checked: identity number (GB 11643, birth date not after `today`),
    coverage year (2000 to `today`'s year), status, and (identity number, year) once per file.

    Errors name the file row and the column as its header is written; they never repeat an
    identity number. A file beyond LIMITS raises `tabular.LimitExceeded`."""
    try:
        table = read_table(raw)
    except UnreadableFile as exc:
        return ParsedHistory(rows=[], errors=[RowError(1, "file", str(exc))])
    return check_table(table, today=today)


def check_table(table: Sequence[Sequence[Cell]], *, today: date) -> ParsedHistory:
    found = _find_header(table)
    if isinstance(found, RowError):
        return ParsedHistory(rows=[], errors=[found])
    header_index, columns, names = found
    id_at, year_at, status_at = columns["id_number"], columns["coverage_year"], columns["status"]
    width = max(columns.values()) + 1
    rows: list[HistoryRow] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, int], int] = {}
    # A file holds a handful of distinct years and statuses: each is checked once.
    years: dict[tuple[type, Cell], int | Problem] = {}
    statuses: dict[tuple[type, Cell], HistoryStatus | Problem] = {}
    for index in range(header_index + 1, len(table)):
        cells = table[index]
        if all(_text(c) == "" for c in cells):
            continue
        rowno = index + 1
        if len(cells) < width:
            cells = [*cells, *[""] * (width - len(cells))]
        id_number = _id_number(cells[id_at], today)
        year_cell, status_cell = cells[year_at], cells[status_at]
        if (year := years.get((type(year_cell), year_cell))) is None:
            year = years[type(year_cell), year_cell] = _year(year_cell, today)
        if (status := statuses.get((type(status_cell), status_cell))) is None:
            status = statuses[type(status_cell), status_cell] = _status(status_cell)
        problems = [
            RowError(rowno, names["id_number"], id_number.message) if isinstance(id_number, Problem) else None,
            RowError(rowno, names["coverage_year"], year.message) if isinstance(year, Problem) else None,
            RowError(rowno, names["status"], status.message) if isinstance(status, Problem) else None,
        ]
        if isinstance(id_number, Problem) or isinstance(year, Problem) or isinstance(status, Problem):
            errors.extend(p for p in problems if p is not None)
            continue
        if (first := seen.get((id_number, year))) is not None:
            errors.append(RowError(rowno, names["id_number"], _("the same person and year as row {row}", row=first)))
            continue
        seen[id_number, year] = rowno
        rows.append(HistoryRow(row=rowno, id_number=id_number, coverage_year=year, status=status))
    if not rows and not errors:
        errors.append(RowError(header_index + 1, "header", _("no rows follow the header")))
    return ParsedHistory(rows=rows, errors=errors)


def _find_header(table: Sequence[Sequence[Cell]]) -> tuple[int, dict[Column, int], dict[Column, str]] | RowError:
    wanted = {column: {_key(h) for h in headers} for column, headers in COLUMNS.items()}
    for index, cells in enumerate(table[:HEADER_SEARCH_ROWS]):
        positions: dict[Column, list[int]] = {column: [] for column in COLUMNS}
        for position, cell in enumerate(cells):
            for column, keys in wanted.items():
                if _key(_text(cell)) in keys:
                    positions[column].append(position)
        if not any(positions.values()):
            continue
        missing = [column for column, found in positions.items() if not found]
        if missing:
            return RowError(index + 1, "header", _("no column for {columns}", columns=_columns_help(missing)))
        doubled = [column for column, found in positions.items() if len(found) > 1]
        if doubled:
            return RowError(
                index + 1, "header", _("more than one column for {columns}", columns=_columns_help(doubled))
            )
        columns = {column: found[0] for column, found in positions.items()}
        names = {column: _text(table[index][p]) for column, p in columns.items()}
        return index, columns, names
    return RowError(1, "header", _("no header row with columns for {columns}", columns=_columns_help(list(COLUMNS))))


def _columns_help(columns: list[Column]) -> str:
    return _("; ").join(_(" or ").join(COLUMNS[c]) for c in columns)


def _key(header: str) -> str:
    return re.sub(r"\s+", "", header.removeprefix("\ufeff")).lower()


def _text(cell: Cell) -> str:
    return cell.strip() if isinstance(cell, str) else ("" if cell is None else str(cell))


def _id_number(cell: Cell, today: date) -> str | Problem:
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        # A spreadsheet keeps 15 significant digits of a number: a first-generation 15-digit
        # number survives whole, an 18-digit one has lost its last digits for good.
        if cell != int(cell) or not 10**14 <= cell < 10**15:
            return Problem(
                _(
                    "is stored as a number, so the spreadsheet has lost its last digits; "
                    "format the column as text and re-enter the numbers from the cards"
                )
            )
        cell = str(int(cell))
    try:
        return parse_resident_id(_text(cell), today=today).number
    except IdentityNumberError as exc:
        return Problem(_(exc.template, **exc.params))


def _year(cell: Cell, today: date) -> int | Problem:
    if isinstance(cell, bool):
        return Problem(_("must be a year such as 2025"))
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    if isinstance(cell, int):
        year = cell
    elif match := _YEAR.fullmatch(normalise(_text(cell))):
        year = int(match.group(1))
    else:
        return Problem(_("must be a year such as 2025") if _text(cell) else _("is empty"))
    if not FIRST_YEAR <= year <= today.year:
        return Problem(_("must lie between {first} and {last}", first=FIRST_YEAR, last=today.year))
    return year


def _status(cell: Cell) -> HistoryStatus | Problem:
    text = _text(cell)
    status = STATUSES.get(_key(text))
    if status is None:
        if not text:
            return Problem(_("is empty"))
        return Problem(_("unknown status {status}; known: {known}", status=repr(text[:20]), known=_KNOWN_STATUSES))
    return status


# Writing ----------------------------------------------------------------------------------------


async def import_history(conn: Connection, rows: Sequence[HistoryRow], source_file: str) -> ImportSummary:
    """Upserts checked rows, audited once; then reopens or puts to review the live enrolments of
    later years whose cover the changed years bear on (`enrollments.reopen_after_history`). The
    caller owns the transaction.

    Imports are serialised on the table so that the counts are exact; a row whose status is the
    one already stored is left alone (its source file and import time too)."""
    await conn.execute(Q["lock_history"])
    keyring = crypto.keys()
    existing = 0
    changed = 0
    changed_years: list[tuple[bytes, int]] = []
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        id_numbers = [keyring.index(ID_NUMBER, r.id_number) for r in batch]
        years = [r.coverage_year for r in batch]
        existing += await conn.fetchval(Q["count_existing_history"], id_numbers, years)
        written = await conn.fetch(
            Q["upsert_history"],
            id_numbers,
            years,
            [r.status for r in batch],
            [source_file] * len(batch),
            [keyring.seal(ID_NUMBER, r.id_number) for r in batch],
        )
        changed += len(written)  # rows inserted or updated
        changed_years += [(bytes(w["id_number_hash"]), w["coverage_year"]) for w in written]
    inserted = len(rows) - existing
    # Years now known covered or uncovered: enrolments of later years whose cover depends on them.
    after = await enrollments.reopen_after_history(conn, changed_years, source_file, datetime.now(UTC))
    summary = ImportSummary(
        rows=len(rows),
        inserted=inserted,
        updated=changed - inserted,
        unchanged=existing - (changed - inserted),
        reopened=after.reopened,
        to_review=after.to_review,
    )
    await record(
        conn, None, "import", "enrollment_history", None, summary={"file": source_file, **msgspec.to_builtins(summary)}
    )
    return summary


# The background path: `canbao enrollments import` stores the file as a job and runs it.

HISTORY_IMPORT = "history_import"


class HistoryRejected(msgspec.Struct, frozen=True, kw_only=True):
    """A history file with bad rows: nothing was imported."""

    errors: list[RowError]


async def run_import_job(run: JobRun) -> Outcome:
    """A `history_import` job: the file checked whole (one bad row rejects it), then upserted in
    the job's transaction. A rejected file's result is its row report."""
    with await run.open_file() as source:
        raw = source.read()
    run.advance(len(raw))
    parsed = parse_history(raw, today=local_today(run.settings.timezone))
    if parsed.errors:
        error = JobError(
            "history_rejected",
            _("The history file has errors; nothing was imported"),
            ngettext("{n} bad row", "{n} bad rows", len(parsed.errors)),
        )
        return Outcome(HistoryRejected(errors=parsed.errors[:1000]), ok=False, error=error)
    return Outcome(await import_history(run.conn, parsed.rows, run.file_name or "history"))
