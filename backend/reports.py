"""Tabular reports out as JSON, CSV (UTF-8 with BOM, so Excel opens Chinese text) or XLSX."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Literal

import xlsxwriter

Format = Literal["json", "csv", "xlsx"]

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _cell(value: object) -> object:
    """Text that a spreadsheet would take for a formula is prefixed with an apostrophe: names in
    exported reports come from uploaded files and must not run as `=HYPERLINK(…)`."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def to_xlsx(sheet: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_numbers": False})
    worksheet = workbook.add_worksheet(sheet[:31])
    bold = workbook.add_format({"bold": True})
    worksheet.write_row(0, 0, header, bold)
    for i, row in enumerate(rows, start=1):
        # Codes stay text: a 12-digit division code must not become a float in Excel.
        for j, value in enumerate(row):
            if isinstance(value, str):
                worksheet.write_string(i, j, value)
            else:
                worksheet.write(i, j, value)
    worksheet.freeze_panes(1, 0)
    workbook.close()
    return buffer.getvalue()
