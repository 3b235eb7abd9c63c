"""Reading uploaded tables (CSV, XLSX) within limits, checked before anything big is allocated.

Every reader of a file (civil-affairs lists, enrolment history, divisions, reconciliation
statements) reads it through here, with `Limits` of its own. A file beyond a limit raises
`LimitExceeded` (problem+json 413, or 422 for a too-wide row or a too-long cell: `CellLimitExceeded`)
whose detail names the limit in plain words and whose `limit` and `maximum` name the setting.

CSV: the csv module's field limit (process-wide, set once here) stops a long cell while it is read;
a physical line is read at most a row's worth of characters at a time, so a line of a million
commas never becomes a list of a million fields; rows and columns are counted as they go by.

XLSX is inspected before calamine sees it, because calamine builds a dense grid over the bounding
box of the real cells (A1 and XFD1048576: 17 billion cells) and reads every shared string at once.
The archive: its number of members, declared sizes and ratios, then every member really unpacked in
pieces (counting the bytes that come out, never trusting the declared size) up to a total. The XML
parts: a byte scan finds every cell's position as calamine will place it (the `r` attribute, or the
one after the previous cell for cells and rows without it; `<dimension ref>` is ignored) and counts
the shared strings. Only a workbook within every limit is opened; the first visible sheet is then
read row by row, and each cell's text length is checked as it goes by. XLS, XLSB and ODS files are
refused: they cannot be inspected before calamine loads them whole.
"""

from __future__ import annotations

import copy
import csv
import functools
import html
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

import msgspec
from python_calamine import CalamineError, CalamineWorkbook, SheetVisibleEnum

from backend.errors import DomainError
from backend.i18n import _

__all__ = [
    "CELL_CHARS_CEILING",
    "CellLimitExceeded",
    "LimitExceeded",
    "Limits",
    "SheetShape",
    "UnreadableFile",
    "csv_rows",
    "inspect_xlsx",
    "xlsx_rows",
]

Cell = object  # str from CSV; str, int, float, bool, date, datetime, time, timedelta from a sheet

# The csv module's field limit is one setting for the whole process: no reader's `max_cell_chars`
# may exceed it, and a reader with a smaller one checks its rows' cells itself.
CELL_CHARS_CEILING = 4096
csv.field_size_limit(CELL_CHARS_CEILING)  # a field may hold this many characters, not one more

_RATIO_FLOOR = 1 << 20  # a member that unpacks to less is never taken for a zip bomb
_CHUNK = 4 << 20  # bytes unpacked at a time
_MAX_TAG = 1 << 20  # an XML start tag longer than this is not a spreadsheet's
_MAX_RELS = 4 << 20  # the workbook's relationships part, read whole to find the sheets' parts
_SHEET_DIRS = ("xl/worksheets/", "xl/chartsheets/", "xl/dialogsheets/")
_BINARY_DIRS = ("xl/media/", "xl/embeddings/", "docprops/thumbnail")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What a reader reads at most. The defaults fit a civil-affairs list of a million rows."""

    max_rows: int = 1_100_000  # rows of a CSV; the last row of a sheet (as Excel numbers them)
    max_columns: int = 256  # fields of a CSV row; the last column of a sheet (256 = IV)
    max_cell_chars: int = CELL_CHARS_CEILING  # characters of one cell
    max_sheet_cells: int = 20_000_000  # last row × last column of a sheet, and its real cells
    max_uncompressed_bytes: int = 1 << 30  # all members of an XLSX archive, really unpacked
    max_compression_ratio: int = 200  # unpacked ÷ packed size of a member, or the archive, beyond 1 MiB
    max_shared_strings: int = 2_000_000  # distinct texts of a workbook (sharedStrings.xml)
    max_zip_members: int = 1000  # files inside an XLSX archive

    def __post_init__(self) -> None:
        if not 0 < self.max_cell_chars <= CELL_CHARS_CEILING:
            raise ValueError(f"max_cell_chars must be between 1 and {CELL_CHARS_CEILING}")


class UnreadableFile(ValueError):
    """Neither an XLSX workbook nor CSV text that can be read."""


class LimitExceeded(DomainError):
    """The file is larger than Canbao reads"""

    status, code = 413, "file_too_large"

    def __init__(self, limit: str, maximum: int, detail: str) -> None:
        super().__init__(detail, limit=limit, maximum=maximum)
        self.limit = limit
        self.maximum = maximum


class CellLimitExceeded(LimitExceeded):
    """A row or cell of the file is larger than Canbao reads"""

    status, code = 422, "row_too_large"


_PER_ROW = frozenset({"max_columns", "max_cell_chars"})


def _exceeded(limits: Limits, limit: str, detail: str) -> LimitExceeded:
    """The error for `limit` (a field of Limits): 422 for a row's width or a cell's length, else 413."""
    kind = CellLimitExceeded if limit in _PER_ROW else LimitExceeded
    return kind(limit, getattr(limits, limit), detail)


# CSV ---------------------------------------------------------------------------------------------


def csv_rows(text: TextIO, limits: Limits) -> Iterator[list[str]]:
    """The rows of CSV text, each checked against `limits` before it is handed on.

    A physical line is read at most `longest` characters at a time: longer than any row within the
    limits can be written (every cell quoted, every character a doubled quote), so a line cut there
    holds a cell or a row beyond them, which the field limit or the column count then reports."""
    longest = limits.max_columns * (2 * limits.max_cell_chars + 3) + 2
    reader = csv.reader(iter(functools.partial(text.readline, longest), ""))
    max_rows, max_columns = limits.max_rows, limits.max_columns
    cell_chars = limits.max_cell_chars if limits.max_cell_chars < CELL_CHARS_CEILING else None
    number = 0
    try:
        for number, row in enumerate(reader, start=1):
            if number > max_rows or len(row) > max_columns:
                raise _row_beyond(limits, number, row)
            if cell_chars is not None and row and max(map(len, row)) > cell_chars:
                raise _long_cell(limits, number)
            yield row
    except csv.Error as exc:
        if str(exc).startswith("field larger than field limit"):
            raise _long_cell(limits, number + 1) from None
        raise


def _row_beyond(limits: Limits, number: int, row: list[str]) -> LimitExceeded:
    if number > limits.max_rows:
        return _exceeded(
            limits,
            "max_rows",
            _("the file has more than {max_rows:,} rows; that is the most read", max_rows=limits.max_rows),
        )
    return _exceeded(
        limits,
        "max_columns",
        _(
            "row {row:,} has {columns:,} columns; at most {max_columns:,} are read",
            row=number,
            columns=len(row),
            max_columns=limits.max_columns,
        ),
    )


def _long_cell(limits: Limits, row: int) -> LimitExceeded:
    return _exceeded(
        limits,
        "max_cell_chars",
        _(
            "a cell of row {row:,} holds more than {max_cell_chars:,} characters; that is the most read",
            row=row,
            max_cell_chars=limits.max_cell_chars,
        ),
    )


# XLSX --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SheetShape:
    """What the inspection found: the largest of the workbook's XML parts."""

    last_row: int  # 1-based, as Excel numbers rows; 0 without cells
    last_column: int  # 1-based (A = 1)
    cells: int  # cell elements, real ones (never the declared dimension)
    shared_strings: int  # an upper bound of the shared strings
    unpacked_bytes: int  # all members, as really unpacked


def xlsx_rows(raw: bytes, limits: Limits) -> Iterator[Sequence[Cell]]:
    """The rows of an XLSX workbook's first visible sheet, from row 1 (leading empty rows kept, so
    that a row's position is the number Excel shows); inspected first (`inspect_xlsx`), so this
    raises LimitExceeded or UnreadableFile before calamine reads anything."""
    inspect_xlsx(raw, limits)
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(raw))
        visible = [m.name for m in workbook.sheets_metadata if m.visible == SheetVisibleEnum.Visible]
        if not visible:
            raise UnreadableFile(_("the workbook has no visible sheet"))
        sheet = workbook.get_sheet_by_name(visible[0])
    except CalamineError as exc:
        raise UnreadableFile(_("the spreadsheet cannot be read ({error})", error=type(exc).__name__)) from None
    return _checked_cells(sheet.iter_rows(), limits)


def _checked_cells(rows: Iterator[Sequence[Cell]], limits: Limits) -> Iterator[Sequence[Cell]]:
    most = limits.max_cell_chars
    try:
        for number, row in enumerate(rows, start=1):
            for cell in row:
                if type(cell) is str and len(cell) > most:
                    raise _long_cell(limits, number)
            yield row
    except CalamineError as exc:
        raise UnreadableFile(_("the spreadsheet cannot be read ({error})", error=type(exc).__name__)) from None


def inspect_xlsx(raw: bytes, limits: Limits) -> SheetShape:
    """The workbook's shape, measured without trusting anything it declares; LimitExceeded when
    beyond `limits`, UnreadableFile when it is no XLSX workbook this can vouch for."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise UnreadableFile(_("the spreadsheet cannot be read (not a ZIP archive)")) from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_zip_members:
            raise _exceeded(
                limits,
                "max_zip_members",
                _(
                    "the workbook's archive holds {files:,} files; at most {max_zip_members:,} are read",
                    files=len(members),
                    max_zip_members=limits.max_zip_members,
                ),
            )
        names = {m.filename.lower() for m in members}
        if "xl/workbook.bin" in names or "content.xml" in names:
            raise UnreadableFile(_("only XLSX workbooks are read (not XLSB or ODS); save the file as XLSX or CSV"))
        if "xl/workbook.xml" not in names:
            raise UnreadableFile(_("the spreadsheet cannot be read (no XLSX workbook in the archive)"))
        declared = sum(m.file_size for m in members)
        if declared > limits.max_uncompressed_bytes:
            raise _too_big(limits)
        budget = _Budget(limits)
        # A bomb in one member, or spread over many small ones (a member unpacking to more than it
        # declares is stopped as it unpacks, and refused when it ends).
        if any(budget.bomb(m.file_size, m.compress_size) for m in members) or budget.bomb(declared, len(raw)):
            raise _bomb(limits)
        # The workbook's relationships first: they name the parts calamine reads as sheets.
        rels = [m for m in members if m.filename.lower() == "xl/_rels/workbook.xml.rels"]
        targets: set[str] = set()
        for member in rels:
            text = b""
            for piece in _unpacked(archive, member, budget):
                text += piece
                if len(text) > _MAX_RELS:
                    raise UnreadableFile(_("the spreadsheet cannot be read (its list of parts is too long)"))
            targets |= _sheet_targets(text)
        last_row = last_column = cells = shared_strings = 0
        for member in members:
            if member in rels:
                continue
            if _binary(member.filename.lower(), targets):
                for _piece in _unpacked(archive, member, budget):
                    pass
                continue
            counts = _scan_member(archive, member, budget)
            last_row, last_column = max(last_row, counts.last_row), max(last_column, counts.last_column)
            cells, shared_strings = max(cells, counts.cells), max(shared_strings, counts.shared_strings)
            _check_shape(limits, counts)
        return SheetShape(last_row, last_column, cells, shared_strings, budget.used)


def _too_big(limits: Limits) -> LimitExceeded:
    most = limits.max_uncompressed_bytes
    return _exceeded(
        limits,
        "max_uncompressed_bytes",
        _(
            "the workbook unpacks to more than {most:,} bytes ({mib:,.0f} MiB); that is the most read",
            most=most,
            mib=most / (1 << 20),
        ),
    )


def _bomb(limits: Limits) -> LimitExceeded:
    return _exceeded(
        limits,
        "max_compression_ratio",
        _(
            "the workbook, or a part of it, unpacks to more than {ratio:,} times its packed size (a zip bomb); "
            "it is not read",
            ratio=limits.max_compression_ratio,
        ),
    )


def _check_shape(limits: Limits, counts: _Counts) -> None:
    if counts.shared_strings > limits.max_shared_strings:
        raise _exceeded(
            limits,
            "max_shared_strings",
            _(
                "the workbook holds more than {max_shared_strings:,} distinct texts; that is the most read",
                max_shared_strings=limits.max_shared_strings,
            ),
        )
    if counts.cells > limits.max_sheet_cells:
        raise _exceeded(
            limits,
            "max_sheet_cells",
            _(
                "the sheet holds {cells:,} cells; at most {max_sheet_cells:,} are read",
                cells=counts.cells,
                max_sheet_cells=limits.max_sheet_cells,
            ),
        )
    if counts.last_row > limits.max_rows:
        raise _exceeded(
            limits,
            "max_rows",
            _(
                "the sheet has a cell in row {row:,}; at most {max_rows:,} rows are read",
                row=counts.last_row,
                max_rows=limits.max_rows,
            ),
        )
    area = counts.last_row * counts.last_column
    if area > limits.max_sheet_cells:
        raise _exceeded(
            limits,
            "max_sheet_cells",
            _(
                "the sheet's cells span {rows:,} rows by {columns:,} columns ({area:,} cells); "
                "at most {max_sheet_cells:,} are read",
                rows=counts.last_row,
                columns=counts.last_column,
                area=area,
                max_sheet_cells=limits.max_sheet_cells,
            ),
        )
    if counts.last_column > limits.max_columns:
        raise _exceeded(
            limits,
            "max_columns",
            _(
                "the sheet has a cell in column {column:,}; at most {max_columns:,} columns are read",
                column=counts.last_column,
                max_columns=limits.max_columns,
            ),
        )


class _Budget:
    """The bytes unpacked so far, across the archive."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = 0

    def bomb(self, unpacked: int, packed: int) -> bool:
        return unpacked > _RATIO_FLOOR and unpacked > self.limits.max_compression_ratio * max(packed, 1)


def _unpacked(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """A member's bytes as really unpacked, in pieces; its declared size is not believed (zipfile
    would stop there, calamine might not): a member that unpacks to more or less than it declares
    is unreadable, and every byte counts against the budget and the ratio as it comes out."""
    limits = budget.limits
    unbounded = copy.copy(member)
    unbounded.file_size = 1 << 62  # zipfile stops at the declared size, then fails the CRC check
    size = 0
    try:
        with archive.open(unbounded) as stream:
            while piece := stream.read(_CHUNK):
                size += len(piece)
                if budget.used + size > limits.max_uncompressed_bytes:
                    raise _too_big(limits)
                if budget.bomb(size, member.compress_size):
                    raise _bomb(limits)
                yield piece
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, EOFError):
        raise UnreadableFile(_("the spreadsheet cannot be read (a damaged or encrypted archive)")) from None
    except ValueError as exc:  # zlib and lzma report damaged data so
        raise UnreadableFile(_("the spreadsheet cannot be read (a damaged archive)")) from exc
    if size != member.file_size:
        raise UnreadableFile(_("the spreadsheet cannot be read (its archive declares wrong sizes)"))
    budget.used += size


_TARGET = re.compile(rb"""[ \t\r\n]Target[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")


def _sheet_targets(rels: bytes) -> set[str]:
    """The member names a Target of the workbook's relationships may stand for (lower case), in
    every way a version of calamine may resolve it."""
    names: set[str] = set()
    for double, single in _TARGET.findall(rels):
        written = (double or single).decode("utf-8", "replace")
        for text in (written, html.unescape(written)):
            bare = text.lower().lstrip("/")
            names |= {text.lower(), bare, f"xl/{bare}", f"xl/{text.lower()}"}
    return names


def _binary(name: str, targets: set[str]) -> bool:
    """A picture or other binary part that calamine never parses as XML: unpacked and counted only."""
    if name in targets or name.startswith(_SHEET_DIRS):
        return False
    return name.startswith(_BINARY_DIRS) or name.endswith(".bin")


# The XML scan ------------------------------------------------------------------------------------
#
# Calamine (quick-xml) places a cell (`<c>`, any namespace prefix) at its `r` attribute, the last
# one when written twice; without `r`, in the current row at one past the previous cell. A row
# (`<row>`) with `r` sets the current row; its end moves to the next row and back to column A; a
# self-closing row does both. A tag's name ends at a space, tab, CR or LF; the local name follows
# the first colon.
#
# The fast scan covers what Excel, WPS, xlsxwriter and openpyxl write: every cell opens with
# `<c r="A1"` and its other attributes are simple; then positions come from the references alone.
# Any cell tag it cannot vouch for (no `r`, `r` not first or written twice, a prefix, odd spacing)
# sends the part to the exact scan, which follows calamine event by event.

_FAST_CELL = re.compile(rb'<c r="[A-Za-z]{1,3}+([1-9][0-9]{0,6}+)"(?> [A-Za-qs-z_][\w.:-]*+="[^"<]*+")*+/?+>')
_FAST_COLUMN = re.compile(rb'<c r="([A-Za-z]{1,3})[1-9]')
_CELL_TAG = re.compile(rb"<c[ \t\r\n/>]")
_PREFIXED_CELL = re.compile(rb"<(?!/)[^ \t\r\n<>:]*:c[ \t\r\n/>]")
_PREFIXED_SHARED_STRING = re.compile(rb"<(?!/)[^ \t\r\n<>:]*:si[ \t\r\n/>]")
_TAG = re.compile(rb"<(/?)(?:[^ \t\r\n<>:]*:)?(c|row)(?=[ \t\r\n/>])")
_ATTRIBUTE = re.compile(rb"""[ \t\r\n]+([^ \t\r\n=<>/"']+)[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")
_TAG_END = re.compile(rb"[ \t\r\n]*(/?)>")
_REFERENCE = re.compile(rb"([A-Za-z]{0,3})([0-9]{1,7})")


@dataclass(slots=True)
class _Counts:
    last_row: int = 0
    last_column: int = 0
    cells: int = 0
    shared_strings: int = 0


class _NotFast(Exception):
    """The fast scan cannot vouch for this part."""


def _scan_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: _Budget) -> _Counts:
    # Calamine reads the shared strings from xl/sharedStrings.xml: never from a sheet's part.
    texts = not member.filename.lower().startswith(_SHEET_DIRS)
    used = budget.used
    try:
        return _scan(_unpacked(archive, member, budget), fast=True, shared_strings=texts)
    except _NotFast:
        budget.used = used  # the same bytes again, counted once
        return _scan(_unpacked(archive, member, budget), fast=False, shared_strings=texts)


def _scan(pieces: Iterable[bytes], *, fast: bool, shared_strings: bool = True) -> _Counts:
    counts = _Counts()
    state = _State()
    carry = b""
    for piece in _with_end(pieces):
        final = piece is None
        buffer = carry + (piece or b"")
        # Up to a tag the piece ends in, carried over to the next (with a ">" or "<" in a value, a
        # tag may be cut elsewhere: the fast scan then cannot vouch for it, the exact one carries it).
        last = buffer.rfind(b"<")
        end = len(buffer) if final or last == -1 or buffer.find(b">", last) != -1 else last
        if shared_strings:
            counts.shared_strings += buffer.count(b"<si", 0, end)
            if buffer.find(b":si", 0, end) != -1:
                counts.shared_strings += len(_PREFIXED_SHARED_STRING.findall(buffer, 0, end))
        if fast:
            _fast(buffer, end, counts)
            carry = buffer[end:]
        else:
            carry = buffer[state.exact(buffer, end, final, counts) :]
        if len(carry) > _MAX_TAG:
            raise _not_understood()
    return counts


def _with_end(pieces: Iterable[bytes]) -> Iterator[bytes | None]:
    yield from pieces
    yield None


def _fast(buffer: bytes, end: int, counts: _Counts) -> None:
    rows = _FAST_CELL.findall(buffer, 0, end)
    # Every cell tag must be one the pattern read whole, with its only `r` first.
    if len(rows) != buffer.count(b"<c", 0, end) and len(rows) != len(_CELL_TAG.findall(buffer, 0, end)):
        raise _NotFast
    if buffer.find(b":c", 0, end) != -1 and _PREFIXED_CELL.search(buffer, 0, end):
        raise _NotFast
    if rows:
        counts.cells += len(rows)
        last_row = max(map(int, set(rows)))
        last_column = max(map(_column_number, set(_FAST_COLUMN.findall(buffer, 0, end))))
        counts.last_row = max(counts.last_row, last_row)
        counts.last_column = max(counts.last_column, last_column)


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def _not_understood() -> UnreadableFile:
    return UnreadableFile(_("the spreadsheet cannot be read (its XML is not understood)"))


@dataclass(slots=True)
class _State:
    """Calamine's cursor, 0-based; where calamine's versions differ, the larger of their answers."""

    row: int = 0
    column: int = 0

    def exact(self, buffer: bytes, end: int, final: bool, counts: _Counts) -> int:
        """Follows the cell and row tags starting before `end`; the position to carry on from."""
        done = 0
        for match in _TAG.finditer(buffer, 0, end):
            start = match.start()
            if start < done:
                continue  # inside a tag already read (a raw "<" in a value)
            closing, name = match.group(1), match.group(2)
            if closing:
                if name == b"row":
                    self.row += 1
                    self.column = 0
                done = match.end()
                continue
            position = match.end()
            references: list[bytes] = []
            while attribute := _ATTRIBUTE.match(buffer, position):
                if attribute.group(1) == b"r":
                    value = attribute.group(2)
                    references.append(value if value is not None else attribute.group(3))
                position = attribute.end()
            tag_end = _TAG_END.match(buffer, position)
            if tag_end is None:
                if final or len(buffer) - start > _MAX_TAG:
                    raise _not_understood()
                return start  # the tag goes on in the next piece
            done = tag_end.end()
            empty = bool(tag_end.group(1))
            reference = _reference(references[-1]) if references else None
            if name == b"row":
                # A self-closing row: one version of calamine ignores it, another opens and ends it.
                if empty:
                    self.row = max(self.row, reference[0] + 1) if reference is not None else self.row + 1
                elif reference is not None:
                    self.row = reference[0]
                continue
            if reference is not None:
                row, column = reference
                if column is None:
                    raise _not_understood()
            else:
                row, column = self.row, self.column
            counts.cells += 1
            counts.last_row = max(counts.last_row, row + 1)
            counts.last_column = max(counts.last_column, column + 1)
            self.column = max(self.column, column + 1) if empty else column + 1
        return max(done, end)


def _reference(value: bytes) -> tuple[int, int | None]:
    """A cell or row reference ("C5", "5"), 0-based; a column of None when it names none."""
    match = _REFERENCE.fullmatch(value)
    if match is None or int(match.group(2)) == 0:
        raise _not_understood()
    letters = match.group(1)
    return int(match.group(2)) - 1, _column_number(letters) - 1 if letters else None
