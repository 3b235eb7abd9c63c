"""Reading divisions within scope, and importing them from CSV."""

from __future__ import annotations

import io
from typing import Literal

import msgspec

from backend import tabular
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, from_row, load_queries
from backend.divisions.rules import CODE, level_of, normalise, parent_of
from backend.errors import DomainError, NotFound
from backend.i18n import _

Q = load_queries("backend.divisions")

LEVELS = ("province", "city", "district", "township", "village")
# The national statistical list has some 700,000 divisions, in three or four short columns.
LIMITS = tabular.Limits(max_rows=1_000_000, max_columns=32, max_cell_chars=256)
Level = Literal["province", "city", "district", "township", "village"]


class Division(msgspec.Struct, frozen=True):
    code: str
    parent_code: str | None
    level: Level
    name: str


class DivisionWithChildren(msgspec.Struct, frozen=True):
    code: str
    parent_code: str | None
    level: Level
    name: str
    children: list[Division]


class DivisionList(msgspec.Struct, frozen=True):
    items: list[Division]


class RowError(msgspec.Struct, frozen=True):
    row: int
    column: str
    problem: str


class ImportRejected(DomainError):
    """The division file has errors; nothing was imported"""

    status, code = 422, "import_rejected"


class ImportSummary(msgspec.Struct, frozen=True):
    rows: int
    inserted: int
    updated: int
    unchanged: int


async def list_in_scope(
    conn: Connection, actor: Actor, *, level: Level | None = None, parent_code: str | None = None
) -> DivisionList:
    """The caller's division and everything below it, by code; a filter outside the scope finds nothing.
    Not audited: division names and codes are public statistics, no one's personal data."""
    rows = await conn.fetch(Q["list_in_scope"], *scope_args(actor), level, parent_code)
    return DivisionList(items=[from_row(r, Division) for r in rows])


async def get_with_children(conn: Connection, actor: Actor, code: str) -> DivisionWithChildren:
    row = await conn.fetchrow(Q["get"], code)
    # Outside the caller's scope reads exactly like a code that does not exist.
    if row is None or not actor.in_scope(code):
        raise NotFound()
    children = [from_row(r, Division) for r in await conn.fetch(Q["children"], code)]
    return msgspec.convert({**dict(row.items()), "children": children}, DivisionWithChildren)


class ParsedFile(msgspec.Struct, frozen=True):
    """A division file, read: its good rows (with the file row of each) and its bad ones."""

    divisions: list[Division]
    row_numbers: list[int]
    errors: list[RowError]
    parent_column: str  # where a missing parent is reported: `parent_code`, or the code column


def parse_csv(text: str) -> ParsedFile:
    """Two layouts: `code,name,parent_code` or the statistical one (`统计用区划代码,名称`, an optional
    `城乡分类代码`), where the parent follows from the code itself. A file beyond LIMITS raises
    `tabular.LimitExceeded`."""
    text = text.removeprefix("\ufeff")
    reader = tabular.csv_rows(io.StringIO(text), LIMITS)
    header = [h.strip().lower() for h in next(reader, [])]
    code_col = _column(header, "code", "统计用区划代码", "区划代码", "代码")
    name_col = _column(header, "name", "名称", "区划名称")
    parent_col = _column(header, "parent_code", "上级代码", "上级区划代码")
    if code_col is None or name_col is None:
        error = RowError(1, "header", _("needs columns code and name (or 统计用区划代码 and 名称)"))
        return ParsedFile(divisions=[], row_numbers=[], errors=[error], parent_column="header")
    errors: list[RowError] = []
    divisions: list[Division] = []
    row_numbers: list[int] = []
    seen: dict[str, int] = {}
    for rowno, raw_cells in enumerate(reader, start=2):
        if not any(c.strip() for c in raw_cells):
            continue
        cells = raw_cells + [""] * (len(header) - len(raw_cells))
        code = normalise(cells[code_col])
        name = cells[name_col].strip()
        if not CODE.match(code):
            errors.append(RowError(rowno, header[code_col], _("must be a 12-digit statistical division code")))
            continue
        if not name:
            errors.append(RowError(rowno, header[name_col], _("must not be empty")))
            continue
        if code in seen:
            errors.append(RowError(rowno, header[code_col], _("duplicate of row {row}", row=seen[code])))
            continue
        seen[code] = rowno
        parent: str | None = parent_of(code)
        if parent_col is not None:
            given = normalise(cells[parent_col])
            if given and (not CODE.match(given) or given != parent):
                errors.append(
                    RowError(
                        rowno, header[parent_col], _("must be the code of the level above ({parent})", parent=parent)
                    )
                )
                continue
            parent = given or None
        divisions.append(Division(code=code, parent_code=parent, level=level_of(code), name=name))  # type: ignore[arg-type]
        row_numbers.append(rowno)
    parent_column = header[parent_col] if parent_col is not None else header[code_col]
    return ParsedFile(divisions=divisions, row_numbers=row_numbers, errors=errors, parent_column=parent_column)


async def missing_parents(
    conn: Connection,
    divisions: list[Division],
    row_numbers: list[int] | None = None,
    parent_column: str = "parent_code",
) -> list[RowError]:
    """Rows whose parent is neither among `divisions` nor in the database. `row_numbers` are the
    rows of the file the divisions came from (else their position, counting a header row)."""
    rows = row_numbers if row_numbers is not None else list(range(2, len(divisions) + 2))
    codes = {d.code for d in divisions}
    parents = {d.parent_code for d in divisions if d.parent_code and d.parent_code not in codes}
    found = {r["code"] for r in await conn.fetch(Q["existing_codes"], list(parents))}
    return [
        RowError(
            rowno, parent_column, _("parent {parent} is neither in the file nor in the database", parent=d.parent_code)
        )
        for rowno, d in zip(rows, divisions, strict=True)
        if d.parent_code and d.parent_code not in codes and d.parent_code not in found
    ]


async def import_divisions(
    conn: Connection,
    actor: Actor | None,
    divisions: list[Division],
    *,
    row_numbers: list[int] | None = None,
    parent_column: str = "parent_code",
) -> ImportSummary:
    """All or nothing: every parent must exist in the file or the database."""
    missing = await missing_parents(conn, divisions, row_numbers, parent_column)
    if missing:
        raise ImportRejected(errors=[msgspec.to_builtins(e) for e in missing[:100]], error_count=len(missing))
    # Parents first, so the foreign key holds row by row.
    ordered = sorted(divisions, key=lambda d: LEVELS.index(d.level))
    rows = await conn.fetch(
        Q["upsert_many"],
        [d.code for d in ordered],
        [d.parent_code for d in ordered],
        [d.level for d in ordered],
        [d.name for d in ordered],
    )
    inserted = sum(1 for r in rows if r["inserted"])
    summary = ImportSummary(
        rows=len(divisions),
        inserted=inserted,
        updated=len(rows) - inserted,
        unchanged=len(divisions) - len(rows),
    )
    # An import that changed nothing wrote nothing, so it leaves no audit row either: seeding or
    # importing the same file twice is a no-op.
    if rows:
        await record(conn, actor, "import", "divisions", None, summary=msgspec.to_builtins(summary))
    return summary


def _column(header: list[str], *names: str) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None
