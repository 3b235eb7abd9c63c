"""Reading civil-affairs list files (民政名单): CSV (UTF-8 with or without BOM, GBK/GB18030) or XLSX.

Pure and streaming: a `ListReader` yields checked rows one at a time (the number normalised and in
clear, in memory only: `lists` seals it before COPY), and keeps the bad rows' problems (row, column
as the file names it, problem) without ever repeating an ID number: they are stored with the version.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import IO, Literal

import msgspec

from backend import tabular
from backend.i18n import N_, _, terms
from backend.tabular import UnreadableFile
from mobile_sync_protocol.rules.identity import IdentityNumberError, normalise, parse_resident_id

__all__ = [
    "CATEGORY_NAMES",
    "COLUMNS",
    "LIST_TYPES",
    "MAX_KEPT_ERRORS",
    "Entry",
    "ListKind",
    "ListReader",
    "RowError",
    "category_names",
]

# evidence: rows that show a person is exempt from the waiting period (mobile_sync_protocol/rules/exemptions.py)
ListKind = Literal["subsidy", "exclusion", "roster", "settlement", "evidence"]
Column = Literal["id_number", "name", "valid_from", "valid_to", "division", "category"]
Cell = object  # str from CSV; str, int, float, bool, date, datetime or None from a spreadsheet
# (row_no, id_number, name, valid_from, valid_to, division_code); `lists` replaces the number by its
# blind index and sealed value to make a row of the staging table or list_entries
Entry = tuple[int, str, str, date | None, date | None, str | None]

# The built-in list types; subsidy categories named in a published policy are accepted too.
LIST_TYPES: dict[str, ListKind] = {
    "te_kun": "subsidy",  # 特困供养人员
    "gu_er": "subsidy",  # 孤儿
    "di_bao": "subsidy",  # 低保对象
    "di_bao_bianyuan": "subsidy",  # 低保边缘
    "fangfan_jiance": "subsidy",  # 防返贫监测对象
    "zhongdu_canji": "subsidy",  # 重度残疾人
    "employee_insurance": "exclusion",  # 职工医保参保人员
    "deceased": "exclusion",  # 死亡人员
    "huji": "roster",  # 户籍人口
    # Continuity incentives (issue 17 point 3): from the settlement system, each about one year.
    "zero_reimbursement": "settlement",  # 零报销人员 (no reimbursement from the fund that year)
    "tuiyi_junren": "evidence",  # 退役军人 (veterans' affairs office; valid_from: the day of discharge)
    "employee_insurance_ended": "evidence",  # 职工医保停保人员 (valid_from … valid_to: the insured period)
}

# Accepted headers per column, compared without spaces and case. For the division, the first
# header present in this order wins (a village is more precise than a township).
COLUMNS: dict[Column, tuple[str, ...]] = {
    "id_number": ("身份证号", "身份证号码", "公民身份号码", "证件号码", "证件号", "id_number"),
    "name": ("姓名", "name"),
    "valid_from": (
        "有效期起",
        "有效期开始",
        "起始日期",
        "开始日期",
        "认定日期",
        "退役日期",
        "退役时间",
        "参保日期",
        "参保起始日期",
        "valid_from",
    ),
    "valid_to": ("有效期止", "有效期至", "终止日期", "结束日期", "停保日期", "终止参保日期", "valid_to"),
    # The row's list type (README, Lists: what a category column may say): checked against the
    # declared type, or used to split a mixed file (type `auto`). The first header present wins.
    "category": (
        "类别",
        "人员类别",
        "救助类别",
        "对象类别",
        "救助对象类别",
        "保障类别",
        "名单类别",
        "资助类别",
        "category",
        "list_type",
    ),
    "division": (
        "所属村",
        "所属村(居)",
        "所属村（居）",
        "所属社区",
        "村(社区)",
        "区划代码",
        "行政区划代码",
        "所属乡镇",
        "所属乡镇(街道)",
        "所属乡镇（街道）",
        "所属街道",
        "division_code",
        "division",
    ),
}
REQUIRED: tuple[Column, ...] = ("id_number", "name")
MANY: frozenset[Column] = frozenset({"division", "category"})  # columns whose first header present wins

# What a category column may say, compared without spaces and case, to the list type it names; a
# type's own code is accepted too, and so is a subsidy category of a published policy by its code.
# The README's Lists section shows this table: keep them together.
CATEGORY_NAMES: dict[str, str] = {
    **{name: "te_kun" for name in ("特困", "特困人员", "特困供养人员", "特困供养", "特困供养对象", "特困对象")},
    **{name: "gu_er" for name in ("孤儿",)},
    **{name: "di_bao" for name in ("低保", "低保对象", "低保户", "低保人员", "最低生活保障对象", "城乡低保对象")},
    **{
        name: "di_bao_bianyuan"
        for name in ("低保边缘", "低保边缘家庭", "低保边缘家庭成员", "低保边缘户", "低边", "低边对象")
    },
    **{
        name: "fangfan_jiance"
        for name in ("防返贫", "防返贫监测对象", "防止返贫监测对象", "防止返贫致贫监测对象", "监测对象")
    },
    **{name: "zhongdu_canji" for name in ("重度残疾", "重度残疾人", "重残")},
    **{name: "employee_insurance" for name in ("职工医保", "职工医保参保人员", "职工基本医疗保险")},
    **{name: "deceased" for name in ("死亡", "死亡人员", "已死亡")},
    **{name: "huji" for name in ("户籍", "户籍人口")},
    # Continuity incentives (issue 17 point 3)
    **{name: "zero_reimbursement" for name in ("零报销", "零报销人员", "年度零报销", "基金零报销", "未发生报销")},
    **{name: "tuiyi_junren" for name in ("退役军人", "退役士兵", "退出现役军人", "当年退役军人")},
    **{name: "employee_insurance_ended" for name in ("职工医保停保", "职工医保停保人员", "职工医保终止参保人员")},
}


def category_names(policy_categories: Iterable[str] = ()) -> dict[str, str]:
    """What a category cell may say (as `_category_key` makes it) → the list type it names: the
    names above, the built-in types' codes, and the codes of the policies' subsidy categories."""
    codes = [*LIST_TYPES, *policy_categories]
    return {**{_category_key(code): code for code in codes}, **CATEGORY_NAMES}


HEADER_SEARCH_ROWS = 10  # title lines often sit above the header in exports
MAX_KEPT_ERRORS = 1000  # problems kept in full; all bad rows are counted
LIMITS = tabular.Limits()  # what a list file may hold: a million rows and more (backend/tabular.py)
OPEN_ENDED = frozenset({"长期", "长期有效", "无", "-"})

_ZIP = b"PK\x03\x04"
_BOM = codecs.BOM_UTF8
_SNIFF = 1 << 16
_DATE = re.compile(r"([0-9]{4})[-/.年]([0-9]{1,2})[-/.月]([0-9]{1,2})日?")
_DATE_COMPACT = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_CODE = re.compile(r"[0-9]{12}")
_EXCEL_EPOCH = date(1899, 12, 30)
_MAX_EXACT_DIGITS = 15  # a spreadsheet number keeps 15 significant digits exactly
_NORMAL_ID = re.compile(r"[0-9]{17}[0-9X]")  # what mobile_sync_protocol.rules.identity.normalise leaves unchanged
_CHECK_CHARACTERS = "10X98765432"
_SPACES = re.compile(r"\s+")  # GB 11643, indexed by the weighted digit sum mod 11
_MAX_CACHED_DIVISIONS = 10_000


class RowError(msgspec.Struct, frozen=True):
    row: int
    column: str
    problem: str


class _Hashing(io.RawIOBase):
    """A binary stream that hashes and counts what is read through it."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None] | None) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        if self._on_read is not None:
            self._on_read(n)
        return n


class ListReader:
    """Rows of one list file, checked; `errors`, `bad_rows`, `rows_read` and `sha256` fill in as
    `entries()` is consumed.

    `division_names` maps a division's name to its 12-digit code (None where the name is ambiguous),
    for files whose division column holds names instead of codes.

    `list_type` is the type the file is loaded as: when the file has a category column, a row whose
    category names another type (by `categories`: what a cell may say → the type it names) is
    reported. With `split`, the rows of other types are skipped instead, unread: one type's pass
    over a mixed file (`categories_found` reads the whole file once and reports the rows of no type).
    """

    def __init__(
        self,
        source: IO[bytes],
        *,
        today: date,
        division_names: Mapping[str, str | None] | None = None,
        on_read: Callable[[int], None] | None = None,
        list_type: str | None = None,
        categories: Mapping[str, str] | None = None,
        split: bool = False,
    ) -> None:
        self._stream = _Hashing(source, on_read)
        self._today = today
        self._division_names = division_names or {}
        self._list_type = list_type
        self._categories = _BUILT_IN_CATEGORIES if categories is None else categories
        self._split = split
        self.errors: list[RowError] = []
        self.error_count = 0
        self.bad_rows = 0
        self.rows_read = 0
        self.converted_from_15 = 0
        self.header_found = False
        self.column_names: dict[Column, str] = {}  # as the file's header writes them

    @property
    def sha256(self) -> bytes:
        return self._stream.sha256.digest()

    def _error(self, row: int, column: str, problem: str) -> None:
        """A bad row's problem, already in the language of whoever imports (`_Problem.words`)."""
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(RowError(row, column, problem))

    def entries(self) -> Iterator[Entry]:
        """The checked rows. A file beyond LIMITS raises `tabular.LimitExceeded` (the request's 413
        or 422): it is no list with bad rows, and nothing read from it is kept."""
        try:
            table = self._table()
            yield from self._check(table)
        except UnreadableFile as exc:
            self._error(max(self.rows_read, 1), "file", str(exc))
            self.bad_rows += 1

    # Reading ------------------------------------------------------------------------------------

    def _table(self) -> Iterator[Sequence[Cell]]:
        buffered = io.BufferedReader(self._stream, buffer_size=_SNIFF)
        head = buffered.peek(_SNIFF)[:_SNIFF]
        if head.startswith(_ZIP):
            return _spreadsheet_rows(buffered.read())
        if head.startswith(_BOM):
            encoding = "utf-8-sig"
        else:
            try:
                codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
                encoding = "utf-8"
            except UnicodeDecodeError:
                encoding = "gb18030"  # a superset of GBK and GB2312
        text = io.TextIOWrapper(buffered, encoding=encoding, newline="")
        return _csv_rows(text, encoding)

    def categories_found(self) -> dict[str, int]:
        """The list types the category column names, with their numbers of rows, reading the whole
        file; rows whose category is empty or names no type are bad rows (`errors`), and so is a
        file without a header or a category column."""
        found: dict[str, int] = {}
        try:
            table = self._table()
            columns: dict[Column, int] | None = None
            index = 0
            for index, cells in enumerate(table, start=1):
                if columns is None:
                    header = _header(cells)
                    if isinstance(header, str):
                        self._error(index, "header", header)
                        self.bad_rows += 1
                        return found
                    if header is None:
                        if index >= HEADER_SEARCH_ROWS:
                            break
                        continue
                    if "category" not in header:
                        self._error(index, "header", _("no column for {columns}", columns=_columns_help(["category"])))
                        self.bad_rows += 1
                        return found
                    columns = header
                    self.header_found = True
                    self.column_names = {c: _text(cells[p]) for c, p in columns.items()}
                    continue
                if all(_text(c) == "" for c in cells):
                    continue
                self.rows_read += 1
                at = columns["category"]
                value = _text(cells[at]) if at < len(cells) else ""
                problem = self._category_problem(value)
                if problem is not None:
                    self._error(index, self.column_names["category"], problem)
                    self.bad_rows += 1
                    continue
                list_type = self._categories[_category_key(value)]
                found[list_type] = found.get(list_type, 0) + 1
            if columns is None:
                self._error(1, "header", _("no header row with columns for {columns}", columns=_columns_help(REQUIRED)))
                self.bad_rows += 1
            elif self.rows_read == 0:
                self._error(index, "header", _("no rows follow the header"))
                self.bad_rows += 1
        except UnreadableFile as exc:
            self._error(max(self.rows_read, 1), "file", str(exc))
            self.bad_rows += 1
        return found

    def _category_problem(self, value: str) -> str | None:
        """What is wrong with a category cell for this file (None: it names the file's type, or
        any type when none is declared)."""
        if not value:
            return _("is empty")
        named = self._categories.get(_category_key(value))
        if named is None:
            return _("names no list type Canbao knows (the README's Lists section has the names)")
        if self._list_type is not None and named != self._list_type:
            return _(
                "says {value} ({named}), but the file is loaded as {list_type}; load a mixed file with the type auto",
                value=value,
                named=terms.name("list_type", named),
                list_type=terms.name("list_type", self._list_type),
            )
        return None

    # Checking -----------------------------------------------------------------------------------

    def _check(self, table: Iterator[Sequence[Cell]]) -> Iterator[Entry]:
        columns: dict[Column, int] | None = None
        names: dict[Column, str] = {}
        index = 0
        common: Callable[[int, Sequence[Cell]], Entry | None] = _never
        other_type: Callable[[Sequence[Cell]], bool] = _any_row
        skipping = False  # a pass over a mixed file: rows of other types are skipped
        for index, cells in enumerate(table, start=1):
            if columns is None:
                found = _header(cells)
                if isinstance(found, str):
                    self._error(index, "header", found)
                    self.bad_rows += 1
                    return
                if found is None:
                    if index >= HEADER_SEARCH_ROWS:
                        break
                    continue
                columns = found
                names = {c: _text(cells[p]) for c, p in columns.items()}
                self.header_found = True
                self.column_names = dict(names)
                common = self._common_row(columns)
                if self._split:
                    other_type, skipping = self._other_type(columns), True
                continue
            if skipping and other_type(cells):
                continue
            if (entry := common(index, cells)) is not None:
                self.rows_read += 1
                yield entry
                continue
            if all(_text(c) == "" for c in cells):
                continue
            self.rows_read += 1
            entry = self._row(index, cells, columns, names)
            if entry is None:
                self.bad_rows += 1
            else:
                yield entry
        if columns is None:
            self._error(1, "header", _("no header row with columns for {columns}", columns=_columns_help(REQUIRED)))
            self.bad_rows += 1
        elif self.rows_read == 0:
            self._error(index, "header", _("no rows follow the header"))
            self.bad_rows += 1

    def _other_type(self, columns: Mapping[Column, int]) -> Callable[[Sequence[Cell]], bool]:
        """Whether a row of a mixed file belongs to another pass: its category names another type,
        or none (`categories_found` reports those); every row does when the file has no category
        column."""
        at = columns.get("category")
        if at is None:
            return _any_row
        mine = self._list_type
        categories = self._categories
        seen: dict[str, bool] = {}  # a category cell's text → whether it is another type's

        def other(cells: Sequence[Cell]) -> bool:
            raw = cells[at] if at < len(cells) else None
            text = raw if isinstance(raw, str) else _text(raw)
            verdict = seen.get(text)
            if verdict is None:
                verdict = categories.get(_category_key(text)) != mine
                if len(seen) < _MAX_CACHED_DIVISIONS:
                    seen[text] = verdict
            return verdict

        return other

    def _common_row(self, columns: Mapping[Column, int]) -> Callable[[int, Sequence[Cell]], Entry | None]:
        """The entry of a row in the form nearly every row of a list has, checked at a fraction of
        `_row`'s cost; None for any other row, which `_row` then checks and explains in full.

        The common form: text cells; the ID number already normalised (18 ASCII characters), with a
        right check character and a birth date that is real and not in the future; a name of 1 to
        100 characters; dates and divisions that `_row` would accept. Whatever this accepts, `_row`
        accepts as the same entry (tests/eligibility/test_importer.py holds it to that).
        """
        id_at, name_at = columns["id_number"], columns["name"]
        from_at, to_at, division_at = columns.get("valid_from"), columns.get("valid_to"), columns.get("division")
        category_at = columns.get("category") if self._list_type is not None else None
        agreeing: dict[str, bool] = {}  # a category cell's text → whether it names the file's type
        categories, list_type = self._categories, self._list_type
        width = max(columns.values()) + 1
        today = self._today
        normal_form = _NORMAL_ID.fullmatch
        resolve = self._division
        divisions: dict[str, str | None] = {}  # a division cell's text → its code, once resolved

        def common(row: int, cells: Sequence[Cell]) -> Entry | None:
            if len(cells) < width:
                return None
            number = cells[id_at]
            if type(number) is not str or normal_form(number) is None or not _check_character_matches(number):
                return None
            born = _encoded_birth_date(number[6:14])
            if born is None or born > today:
                return None
            name = cells[name_at]
            if type(name) is not str:
                return None
            name = name.strip()
            if not name or len(name) > 100:
                return None
            valid_from = valid_to = None
            if from_at is not None:
                raw = cells[from_at]
                if type(raw) is not str:
                    return None
                parsed = _date_text(raw.strip())
                if isinstance(parsed, _Problem):
                    return None
                valid_from = parsed
            if to_at is not None:
                raw = cells[to_at]
                if type(raw) is not str:
                    return None
                parsed = _date_text(raw.strip())
                if isinstance(parsed, _Problem):
                    return None
                valid_to = parsed
            if valid_from is not None and valid_to is not None and valid_to < valid_from:
                return None
            if category_at is not None:
                raw = cells[category_at]
                if type(raw) is not str:
                    return None
                agrees = agreeing.get(raw)
                if agrees is None:
                    agrees = bool(raw.strip()) and categories.get(_category_key(raw)) == list_type
                    if len(agreeing) < _MAX_CACHED_DIVISIONS:
                        agreeing[raw] = agrees
                if not agrees:
                    return None
            division = None
            if division_at is not None:
                raw = cells[division_at]
                if type(raw) is not str:
                    return None
                if raw in divisions:
                    division = divisions[raw]
                else:
                    resolved = resolve(raw)
                    if isinstance(resolved, _Problem):
                        return None
                    if len(divisions) < _MAX_CACHED_DIVISIONS:
                        divisions[raw] = resolved
                    division = resolved
            return (row, number, name, valid_from, valid_to, division)

        return common

    def _row(
        self, row: int, cells: Sequence[Cell], columns: Mapping[Column, int], names: Mapping[Column, str]
    ) -> Entry | None:
        def cell(column: Column) -> Cell:
            position = columns.get(column)
            return cells[position] if position is not None and position < len(cells) else None

        ok = True
        id_number = _id_number(cell("id_number"), self._today)
        if isinstance(id_number, str):
            number = id_number
        else:
            self._error(row, names["id_number"], id_number.words())
            number, ok = "", False
        if number and len(_text(cell("id_number"))) == 15:
            self.converted_from_15 += 1
        name = _text(cell("name"))
        if not name:
            self._error(row, names["name"], _("is empty"))
            ok = False
        elif len(name) > 100:
            self._error(row, names["name"], _("is longer than 100 characters"))
            ok = False
        dates: list[date | None] = []
        for column in ("valid_from", "valid_to"):
            value = _date(cell(column)) if column in columns else None
            if isinstance(value, _Problem):
                self._error(row, names[column], value.words())
                ok = False
                value = None
            dates.append(value)
        valid_from, valid_to = dates
        if valid_from is not None and valid_to is not None and valid_to < valid_from:
            self._error(row, names["valid_to"], _("is before the start of validity"))
            ok = False
        if "category" in columns and self._list_type is not None:
            problem = self._category_problem(_text(cell("category")))
            if problem is not None:
                self._error(row, names["category"], problem)
                ok = False
        division: str | None = None
        if "division" in columns:
            resolved = self._division(cell("division"))
            if isinstance(resolved, _Problem):
                self._error(row, names["division"], resolved.words())
                ok = False
            else:
                division = resolved
        return (row, number, name, valid_from, valid_to, division) if ok else None

    def _division(self, cell: Cell) -> str | _Problem | None:
        if isinstance(cell, int | float) and not isinstance(cell, bool) and float(cell).is_integer():
            cell = str(int(cell))  # a 12-digit code fits a spreadsheet number exactly
        text = _text(cell)
        if not text:
            return None
        if _CODE.fullmatch(text):
            return text
        if _CODE.fullmatch(normalise(text)):
            return normalise(text)
        if text not in self._division_names:
            return _Problem(N_("names no division in your scope (give the 12-digit division code or its exact name)"))
        code = self._division_names[text]
        if code is None:
            return _Problem(N_("names more than one division; give the 12-digit division code"))
        return code


class _Problem(msgspec.Struct, frozen=True):
    """What is wrong with a cell, in English with its {fields} (cached problems are shared by
    imports in every language): `words()` says it in the current language."""

    message: str
    params: dict[str, object] | None = None

    def words(self) -> str:
        return _(self.message, **(self.params or {}))


def _csv_rows(text: io.TextIOWrapper, encoding: str) -> Iterator[Sequence[Cell]]:
    try:
        yield from tabular.csv_rows(text, LIMITS)
    except UnicodeDecodeError:
        raise UnreadableFile(
            _("the file is not valid {encoding} text", encoding=encoding.removesuffix("-sig").upper())
        ) from None
    except csv.Error as exc:
        raise UnreadableFile(_("the CSV cannot be read ({error})", error=exc)) from None


def _spreadsheet_rows(raw: bytes) -> Iterator[Sequence[Cell]]:
    # Leading empty rows are kept so that row numbers are the ones Excel shows.
    return tabular.xlsx_rows(raw, LIMITS)


def _key(header: str) -> str:
    return re.sub(r"\s+", "", header.removeprefix("\ufeff")).lower()


_WANTED = {column: [_key(h) for h in headers] for column, headers in COLUMNS.items()}


def _header(cells: Sequence[Cell]) -> dict[Column, int] | str | None:
    """Column positions when `cells` is the header row; a problem when it is one but incomplete."""
    keys = [_key(_text(c)) for c in cells]
    found: dict[Column, int] = {}
    for column, wanted in _WANTED.items():
        hits = [(wanted.index(k), p) for p, k in enumerate(keys) if k in wanted]
        if not hits:
            continue
        if column not in MANY and len(hits) > 1:
            return _("more than one column for {columns}", columns=_columns_help([column]))
        found[column] = min(hits)[1]
    if not found:
        return None
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        return _("no column for {columns}", columns=_columns_help(missing))
    return found


def _columns_help(columns: Sequence[Column]) -> str:
    """The headers accepted for `columns`, as a problem lists them ("身份证号 or …; 姓名 or name")."""
    return _("; ").join(_(" or ").join(COLUMNS[c]) for c in columns)


def _text(cell: Cell) -> str:
    if isinstance(cell, str):
        return cell.strip()
    return "" if cell is None else str(cell)


def _id_number(cell: Cell, today: date) -> str | _Problem:
    if isinstance(cell, bool):
        return _Problem(N_("is not an identity number"))
    if isinstance(cell, int | float):
        # A spreadsheet stores numbers as doubles: 15 digits survive exactly, 18 do not, and the
        # lost digits are never guessed back.
        exact = isinstance(cell, int) or cell.is_integer()
        digits = str(int(cell)) if exact else ""
        if not exact or len(digits) != _MAX_EXACT_DIGITS:
            return _Problem(
                N_(
                    "is stored as a number, so the spreadsheet has lost its last digits; "
                    "format the column as text and re-enter the numbers from the cards"
                )
            )
        cell = digits
    try:
        return parse_resident_id(_text(cell), today=today).number
    except IdentityNumberError as exc:
        return _Problem(exc.template, exc.params or None)


def _date(cell: Cell) -> date | _Problem | None:
    if cell is None or isinstance(cell, bool):
        return None if cell is None else _Problem(N_("is not a date"))
    if isinstance(cell, datetime):
        return cell.date()
    if isinstance(cell, date):
        return cell
    if isinstance(cell, int | float):
        number = int(cell)
        if 19000101 <= number <= 21001231:  # 20250101 typed as a number
            return _date(str(number))
        if 1 <= number <= 73050:  # an Excel serial day number without a date format
            return _EXCEL_EPOCH + timedelta(days=number)
        return _Problem(N_("is not a date"))
    return _date_text(_text(cell))


def _never(row: int, cells: Sequence[Cell]) -> Entry | None:
    return None


def _any_row(cells: Sequence[Cell]) -> bool:
    return True


def _category_key(text: str) -> str:
    """A category cell as CATEGORY_NAMES is keyed: NFKC (full-width letters and signs made ASCII),
    no spaces, lower case."""
    return _SPACES.sub("", unicodedata.normalize("NFKC", text)).lower()


_BUILT_IN_CATEGORIES = category_names()


def _check_character_matches(number: str) -> bool:
    """The check character of an 18-character number in normal form, computed in one C call.

    GB 11643's weight of the i-th of 17 digits (from 0) is 2^(17-i) mod 11. In base 13, the same
    digits are worth 13^(16-i), and 13 ≡ 2 (mod 11), so Σ digit × weight ≡ 2 × int(digits, 13).
    """
    return _CHECK_CHARACTERS[2 * int(number[:17], 13) % 11] == number[17]


@functools.lru_cache(maxsize=1 << 16)  # people are born on some 40,000 days of a century
def _encoded_birth_date(yyyymmdd: str) -> date | None:
    try:
        return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # a list repeats a handful of dates a million times
def _date_text(raw: str) -> date | _Problem | None:
    text = normalise(raw)
    if not text or text in OPEN_ENDED:
        return None
    match = _DATE.fullmatch(text) or _DATE_COMPACT.fullmatch(text)
    if match is None:
        return _Problem(N_("is not a date such as 2025-01-01"))
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return _Problem(N_("is not a real date"))
