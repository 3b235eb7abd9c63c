"""Tabular reports out as JSON, CSV or XLSX, for township and district offices.

A report is a `Table`: columns with a snake_case code (for scripts) and an English title (a
message, translated when written), rows of values that stay numbers, an optional totals row and a
title line. Files come in two forms (`Headers`):

- `names` (the default, for people): the column titles in the request's language (乡镇（街道）,
  应参保人数, 参保率（%）…), codes (levels, categories) named, and in XLSX a title line (district,
  township, year, as-of date) above the header;
- `codes` (for scripts): the column codes as headers, values as codes, the header on the first row.

CSV is UTF-8 with a BOM, so Excel opens Chinese text, or with `encoding=gbk` GB18030 for older
office software: GB18030 is a superset of GBK that covers all of Unicode, so a rare character in a
name (𬌗, 䶮) never makes the download fail or turn into '?'; the characters GBK has are the same
bytes, the ones it lacks are four-byte sequences (the usual practice of software that says "GBK").
XLSX has a frozen header, column widths fitted to the text, numbers as numbers (the rate as a
fraction shown with a percent format) and the totals in bold below the rows.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import xlsxwriter
from litestar.params import QueryParameter

from backend.actor import LEVEL_PREFIX, Actor
from backend.db import Connection, load_queries
from backend.i18n import N_, _

Format = Literal["json", "csv", "xlsx"]
Headers = Literal["names", "codes"]
Encoding = Literal["utf-8", "gbk"]
# text: written as text (codes stay text: a 12-digit division code must not become a float);
# int: a count; fen: an amount in fen, given to people in yuan (420.00) and to scripts (`codes`) in
# fen; percent: a percentage (66.67), a fraction with a % format in XLSX.
Kind = Literal["text", "int", "fen", "percent"]

Q = load_queries("backend", "reports.sql")

# The query parameters of a route serving a report (`headers` is Litestar's name for the request's
# headers, so the handler's parameter has another name).
HeadersQuery = Annotated[
    Headers,
    QueryParameter(
        name="headers",
        description="CSV/XLSX column headers: names in the request's language (default) or snake_case codes",
    ),
]
EncodingQuery = Annotated[
    Encoding,
    QueryParameter(description="CSV: UTF-8 with BOM (default) or gbk, written as GB18030 (GBK's superset)"),
]

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
# `encoding=gbk`: GB18030, GBK's superset (see the module's docstring).
GBK_CODEC = "gb18030"
CSV_GBK = "text/csv; charset=GB18030"

LEVELS = {
    "province": N_("Province"),
    "city": N_("City"),
    "district": N_("District"),
    "township": N_("Township"),
    "village": N_("Village"),
}
TOTAL = N_("Total")


def media_type(format: Format, encoding: Encoding = "utf-8") -> str:
    """The media type of a stored file (a job's output), charset included."""
    return CSV_GBK if format == "csv" and encoding == "gbk" else MEDIA_TYPES[format]


def response_media_type(format: Format) -> str:
    """The media type for a `Response`, which adds `; charset=` itself to text types (`charset`)."""
    return MEDIA_TYPES[format].split(";")[0]


def charset(encoding: Encoding) -> str:
    return "GB18030" if encoding == "gbk" else "utf-8"


def level_name(level: str, headers: Headers) -> str:
    """A division level as the report writes it: 乡镇（街道） for people, `township` for scripts."""
    words = LEVELS.get(level)
    return _(words) if headers == "names" and words else level


def total_label(headers: Headers) -> str:
    return _(TOTAL) if headers == "names" else "total"


@dataclass(frozen=True)
class Column:
    code: str
    title: str  # an English message (N_), translated when the file is written
    kind: Kind = "text"


@dataclass(frozen=True)
class Table:
    sheet: str  # the worksheet's name (already in the language)
    title: str  # the XLSX title line (already in the language)
    columns: Sequence[Column]
    rows: Sequence[Sequence[object]]
    totals: Sequence[object] | None = None
    # Whether the CSV ends with the totals row too (a script summing a column must not count it twice).
    csv_totals: bool = False
    notes: Sequence[str] = field(default_factory=tuple)  # XLSX lines below the table


def header(columns: Sequence[Column], headers: Headers) -> list[str]:
    return [_(c.title) if headers == "names" else c.code for c in columns]


def _cell(value: object) -> object:
    """Text that a spreadsheet would take for a formula is prefixed with an apostrophe: names in
    exported reports come from uploaded files and must not run as `=HYPERLINK(…)`."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_value(value: object, kind: Kind, headers: Headers = "names") -> object:
    if kind == "percent" and isinstance(value, int | float):
        return f"{value:.2f}"
    if kind == "fen" and headers == "names" and isinstance(value, int):
        return in_yuan(value)
    return _cell(value)


def in_yuan(fen: int) -> str:
    """An amount in fen as yuan with two decimals, exactly (no float): 42005 → "420.05"."""
    sign, (yuan, cents) = "-" if fen < 0 else "", divmod(abs(fen), 100)
    return f"{sign}{yuan}.{cents:02d}"


def to_csv(header: Sequence[str], rows: Sequence[Sequence[object]], encoding: Encoding = "utf-8") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return encode_csv(buffer.getvalue(), encoding)


def encode_csv(text: str, encoding: Encoding) -> bytes:
    if encoding == "gbk":
        return text.encode(GBK_CODEC)  # every character has a GB18030 form: nothing fails, nothing lost
    return ("\ufeff" + text).encode("utf-8")


def table_csv(table: Table, headers: Headers, encoding: Encoding = "utf-8") -> bytes:
    kinds = [c.kind for c in table.columns]
    rows = [*table.rows, *([table.totals] if table.totals is not None and table.csv_totals else [])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header(table.columns, headers))
    writer.writerows([_csv_value(v, k, headers) for v, k in zip(row, kinds, strict=True)] for row in rows)
    return encode_csv(buffer.getvalue(), encoding)


def _width(value: object) -> int:
    """Columns of a cell's text in a spreadsheet: a Chinese character takes two."""
    text = f"{value:.2f}%" if isinstance(value, float) else str(value if value is not None else "")
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def table_xlsx(table: Table, headers: Headers) -> bytes:
    """The table as a workbook: for people a title line, then the header (frozen), the rows and the
    totals; for scripts (`codes`) the header on the first row."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_numbers": False})
    worksheet = workbook.add_worksheet(_SHEET_FORBIDDEN.sub(" ", table.sheet)[:31] or "Sheet1")
    bold = workbook.add_format({"bold": True, "text_wrap": True, "valign": "vcenter", "bottom": 1})
    title = workbook.add_format({"bold": True, "font_size": 14})
    formats: dict[tuple[Kind, bool], object] = {}
    number_formats: tuple[tuple[Kind, str], ...] = (
        ("text", "@"),
        ("int", "#,##0"),
        ("fen", "#,##0.00" if headers == "names" else "0"),
        ("percent", "0.00%"),
    )
    for kind, number_format in number_formats:
        for is_total in (False, True):
            props: dict[str, object] = {"num_format": number_format}
            if is_total:
                props |= {"bold": True, "top": 1}
            formats[(kind, is_total)] = workbook.add_format(props)

    first = 0
    if headers == "names":
        worksheet.write_string(0, 0, table.title, title)
        worksheet.set_row(0, 24)
        first = 1
    columns = table.columns
    titles = header(columns, headers)
    worksheet.write_row(first, 0, titles, bold)
    widths = [_width(t) for t in titles]
    rows = [(row, False) for row in table.rows] + ([(table.totals, True)] if table.totals is not None else [])
    for i, (row, is_total) in enumerate(rows, start=first + 1):
        for j, (value, column) in enumerate(zip(row, columns, strict=True)):
            cell_format = formats[(column.kind, is_total)]
            if value is None or value == "":
                worksheet.write_blank(i, j, None, cell_format)
            elif column.kind == "percent" and isinstance(value, int | float):
                # 66.67 (%) is the fraction 0.6667 shown as 66.67%: the same figure as the CSV's.
                worksheet.write_number(i, j, round(value / 100, 6), cell_format)
            elif column.kind == "fen" and headers == "names" and isinstance(value, int):
                worksheet.write_number(i, j, value / 100, cell_format)  # yuan, shown with two decimals
            elif isinstance(value, int | float) and not isinstance(value, bool):
                worksheet.write_number(i, j, value, cell_format)
            else:
                worksheet.write_string(i, j, str(value), cell_format)
            widths[j] = max(widths[j], _width(value))
    for j, width in enumerate(widths):
        worksheet.set_column(j, j, min(max(width, 6), 48) + 2)
    for k, note in enumerate(table.notes, start=first + len(rows) + 2):
        worksheet.write_string(k, 0, note)
    worksheet.freeze_panes(first + 1, 0)
    workbook.close()
    return buffer.getvalue()


def table_file(table: Table, format: Literal["csv", "xlsx"], headers: Headers, encoding: Encoding) -> bytes:
    if format == "csv":
        return table_csv(table, headers, encoding)
    return table_xlsx(table, headers)


# Names beside codes ------------------------------------------------------------------------------


async def division_names(conn: Connection, codes: Sequence[str]) -> dict[str, str]:
    if not codes:
        return {}
    return {r["code"]: r["name"] for r in await conn.fetch(Q["division_names"], sorted(set(codes)))}


async def user_names(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {r["id"]: r["name"] for r in await conn.fetch(Q["user_names"], sorted(set(ids)))}


def township_of(code: str) -> str:
    return code[: LEVEL_PREFIX["township"]].ljust(12, "0")


async def place(conn: Connection, actor: Actor) -> str:
    """The caller's scope as a title names it: its district, and its township when it is one
    (西湖区 北山街道)."""
    code, level = actor.scope.division_code, actor.scope.level
    width = LEVEL_PREFIX.get(level, 12)
    chain = [code[:n].ljust(12, "0") for n in (6, 9, 12) if n <= width]
    names = await division_names(conn, chain)
    return " ".join(names[c] for c in chain if c in names) or code
