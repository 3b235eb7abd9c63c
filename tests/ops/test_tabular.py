"""Reading tables within limits (backend/tabular.py): every limit refused with its name, before
calamine sees a workbook; sparse sheets read by their real cells; zip bombs and lying archives
refused. Every file is crafted here, tiny."""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

from backend import tabular
from backend.tabular import CellLimitExceeded, LimitExceeded, Limits, UnreadableFile

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
PACKAGE_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>'
    "</Relationships>"
)
WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="名单" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="worksheets/sheet1.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"/>'
    '<Relationship Id="rId2" Target="sharedStrings.xml" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
    "</Relationships>"
)
DEFAULT = Limits()
SHARED = '<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'


def sheet_xml(rows: str, *, dimension: str | None = None) -> bytes:
    head = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"{head}<sheetData>{rows}</sheetData></worksheet>"
    ).encode()


def workbook(
    rows: str,
    *,
    dimension: str | None = None,
    shared: list[str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """An XLSX workbook of one sheet whose <sheetData> is `rows`, written member by member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", PACKAGE_RELS)
        archive.writestr("xl/workbook.xml", WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", sheet_xml(rows, dimension=dimension))
        if shared is not None:
            items = "".join(f"<si><t>{text}</t></si>" for text in shared)
            archive.writestr("xl/sharedStrings.xml", f'{SHARED.removesuffix(">")} count="{len(shared)}">{items}</sst>')
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def text_cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def number_cell(ref: str, value: int = 1) -> str:
    return f'<c r="{ref}"><v>{value}</v></c>'


def lie_about_size(raw: bytes, name: str, size: int) -> bytes:
    """The archive with `name`'s uncompressed size declared as `size`, in its local header and in
    the central directory alike (its data and CRC unchanged)."""
    data = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        local = archive.getinfo(name).header_offset
    struct.pack_into("<I", data, local + 22, size)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + name_length]) == name.encode():
            struct.pack_into("<I", data, central + 24, size)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


@pytest.fixture
def calamine_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calamine must not be reached: a refusal has to come from the inspection before it."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("calamine opened a workbook the inspection should have refused")

    monkeypatch.setattr(CalamineWorkbook, "from_filelike", refuse)


@pytest.fixture
def nothing_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive's directory alone must refuse it: no member is unpacked."""

    def refuse(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        raise AssertionError("a member was unpacked although the directory alone refuses the archive")

    monkeypatch.setattr(tabular, "_unpacked", refuse)


def refused(raw: bytes, limits: Limits = DEFAULT) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        list(tabular.xlsx_rows(raw, limits))
    return caught.value


def rows_of(raw: bytes, limits: Limits = DEFAULT) -> list[list[Any]]:
    return [list(row) for row in tabular.xlsx_rows(raw, limits)]


# --- sparse sheets --------------------------------------------------------------------------------


@pytest.mark.usefixtures("calamine_untouched")
def test_one_cell_at_xfd1048576_is_refused_by_its_area_before_calamine_sees_it() -> None:
    raw = workbook(f'<row r="1048576">{number_cell("XFD1048576")}</row>')
    assert len(raw) < 2000
    error = refused(raw)
    assert (error.status, error.code, error.limit, error.maximum) == (
        413,
        "file_too_large",
        "max_sheet_cells",
        20_000_000,
    )
    assert error.extra == {"limit": "max_sheet_cells", "maximum": 20_000_000}
    assert error.detail == (
        "the sheet's cells span 1,048,576 rows by 16,384 columns (17,179,869,184 cells); at most 20,000,000 are read"
    )


@pytest.mark.usefixtures("calamine_untouched")
def test_a1_and_a_far_cell_are_refused_though_rows_and_columns_are_each_within_limits() -> None:
    """256 columns and 100,000 rows are each allowed; the grid between A1 and IV100000 is not."""
    raw = workbook(f'<row r="1">{number_cell("A1")}</row><row r="100000">{number_cell("IV100000")}</row>')
    error = refused(raw)
    assert (error.limit, error.status) == ("max_sheet_cells", 413)
    assert "25,600,000 cells" in (error.detail or "")
    shape = tabular.inspect_xlsx(raw, Limits(max_sheet_cells=25_600_000))
    assert (shape.last_row, shape.last_column, shape.cells) == (100_000, 256, 2)


def test_the_declared_dimension_is_ignored_and_a_small_sheet_under_a_huge_one_is_read() -> None:
    header = f'<row r="1">{text_cell("A1", "身份证号")}{text_cell("B1", "姓名")}</row>'
    rows = header + f'<row r="2">{text_cell("B2", "张三")}</row>'
    raw = workbook(rows, dimension="A1:XFD1048576")
    assert rows_of(raw) == [["身份证号", "姓名"], ["", "张三"]]
    assert tabular.inspect_xlsx(raw, Limits()).cells == 3


def test_leading_empty_rows_are_kept_so_rows_keep_the_numbers_excel_shows() -> None:
    raw = workbook(f'<row r="3">{text_cell("C3", "姓名")}</row><row r="4">{text_cell("C4", "张三")}</row>')
    table = rows_of(raw)
    assert len(table) == 4
    assert table[2:] == [["姓名"], ["张三"]]
    assert all(cell == "" for row in table[:2] for cell in row)


def test_the_first_visible_sheet_is_read_and_hidden_ones_are_skipped() -> None:
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    hidden = book.add_worksheet("hidden")
    hidden.write_string(0, 0, "secret")
    hidden.hide()
    shown = book.add_worksheet("名单")
    shown.write_string(0, 0, "姓名")
    shown.activate()
    book.close()
    assert rows_of(buffer.getvalue()) == [["姓名"]]


# --- rows, columns, cells --------------------------------------------------------------------------


@pytest.mark.usefixtures("calamine_untouched")
def test_a_cell_below_the_last_row_read_is_refused() -> None:
    error = refused(workbook(f'<row r="1100001">{number_cell("A1100001")}</row>'))
    assert (error.limit, error.maximum, error.status) == ("max_rows", 1_100_000, 413)
    assert error.detail == "the sheet has a cell in row 1,100,001; at most 1,100,000 rows are read"


def test_a_sheet_reaching_the_last_row_read_is_read() -> None:
    assert len(rows_of(workbook(f'<row r="5">{number_cell("A5")}</row>'), Limits(max_rows=5))) == 5


@pytest.mark.usefixtures("calamine_untouched")
def test_a_cell_right_of_the_last_column_read_is_refused_as_422() -> None:
    error = refused(workbook(f'<row r="1">{number_cell("A1")}{number_cell("IW1")}</row>'))
    assert isinstance(error, CellLimitExceeded)
    assert (error.limit, error.maximum, error.status, error.code) == ("max_columns", 256, 422, "row_too_large")
    assert error.detail == "the sheet has a cell in column 257; at most 256 columns are read"


def test_a_cell_in_the_last_column_read_is_read() -> None:
    assert rows_of(workbook(f'<row r="1">{number_cell("IV1", 7)}</row>')) == [[7.0]]


@pytest.mark.usefixtures("calamine_untouched")
def test_more_real_cells_than_allowed_are_refused_even_on_one_spot() -> None:
    """The same cell written over and over: a tiny area, yet calamine keeps every one."""
    raw = workbook('<row r="1">' + number_cell("A1") * 11 + "</row>")
    error = refused(raw, Limits(max_sheet_cells=10))
    assert (error.limit, error.status) == ("max_sheet_cells", 413)
    assert error.detail == "the sheet holds 11 cells; at most 10 are read"


@pytest.mark.parametrize("shared", [False, True], ids=["inline", "shared"])
def test_a_cell_longer_than_allowed_is_refused_as_422_and_one_at_the_limit_is_read(shared: bool) -> None:
    def book(text: str) -> bytes:
        if shared:
            return workbook('<row r="1"><c r="A1" t="s"><v>0</v></c></row>', shared=[text])
        return workbook(f'<row r="1">{text_cell("A1", text)}</row>')

    assert rows_of(book("张" * 4096)) == [["张" * 4096]]
    with pytest.raises(CellLimitExceeded) as caught:
        rows_of(book("张" * 4097))
    assert (caught.value.limit, caught.value.maximum, caught.value.status) == ("max_cell_chars", 4096, 422)
    assert caught.value.detail == "a cell of row 1 holds more than 4,096 characters; that is the most read"
    assert "张" not in (caught.value.detail or "")


@pytest.mark.usefixtures("calamine_untouched")
def test_more_shared_strings_than_allowed_are_refused() -> None:
    cell = '<row r="1"><c r="A1" t="s"><v>0</v></c></row>'
    error = refused(workbook(cell, shared=[f"t{i}" for i in range(11)]), Limits(max_shared_strings=10))
    assert (error.limit, error.maximum, error.status) == ("max_shared_strings", 10, 413)


def test_as_many_shared_strings_as_allowed_are_read() -> None:
    cell = '<row r="1"><c r="A1" t="s"><v>9</v></c></row>'
    assert rows_of(workbook(cell, shared=[f"t{i}" for i in range(10)]), Limits(max_shared_strings=10)) == [["t9"]]


# --- cells calamine places without, or despite, their reference --------------------------------


@pytest.mark.parametrize(
    ("rows", "last_row", "last_column"),
    [
        ("<row>" + "<c><v>1</v></c>" * 3 + "</row>" + "<row><c><v>1</v></c></row>", 2, 3),
        ('<row r="7"><c><v>1</v></c><c><v>2</v></c></row>', 7, 2),
        ('<row r="2"><c r="C2"><v>1</v></c><c><v>2</v></c></row><row><c><v>3</v></c></row>', 3, 4),
        ('<row r="2"/><row><c><v>1</v></c></row>', 3, 1),
        ('<row r="2"><c r="B2"/><c><v>1</v></c></row>', 2, 3),
        ('<x:row r="4"><x:c r="E4"><x:v>1</x:v></x:c></x:row>', 4, 5),
        ('<row r="1"><c r="A1" r="D9"><v>1</v></c></row>', 9, 4),
        ('<row r="1"><c r="A1" foo=">" r="F3"><v>1</v></c></row>', 3, 6),
        ('<row r = "1"><c r = "c05"><v>1</v></c></row>', 5, 3),
        ("<row r='1'><c\tr='B2'\n><v>1</v></c></row>", 2, 2),
        ('<row r="1"><c r="E1" foo="</row>"><v>1</v></c><c><v>2</v></c></row>', 1, 6),
    ],
    ids=[
        "no-r",
        "row-r-only",
        "after-r",
        "empty-row",
        "empty-cell",
        "prefix",
        "r-twice",
        "gt-in-value",
        "spaced",
        "quotes",
        "tag-in-value",
    ],
)
def test_positions_are_found_as_calamine_places_cells(rows: str, last_row: int, last_column: int) -> None:
    raw = workbook(rows)
    shape = tabular.inspect_xlsx(raw, Limits())
    assert (shape.last_row, shape.last_column) == (last_row, last_column)
    sheet = CalamineWorkbook.from_filelike(io.BytesIO(raw)).get_sheet_by_name("名单")
    assert sheet.end is not None
    assert shape.last_row >= sheet.end[0] + 1 and shape.last_column >= sheet.end[1] + 1


@pytest.mark.usefixtures("calamine_untouched")
@pytest.mark.parametrize(
    "rows",
    [
        "<row>" + "<c><v>1</v></c>" * 257 + "</row>",
        '<row r="1"><x:c r="XFD1048576"><x:v>1</x:v></x:c></row>',
        '<row r="1"><c r="A1" r="XFD1048576"><v>1</v></c></row>',
        '<row r="1"><c r="A1" foo=">" r="XFD1048576"><v>1</v></c></row>',
        '<row r="1"><c foo="<" r="XFD1048576"><v>1</v></c></row>',
        '<row r="1048576"/><row><c><v>1</v></c>' + "<c><v>1</v></c>" * 20 + "</row>",
    ],
    ids=["257-without-r", "prefix", "r-twice", "gt-in-value", "lt-in-value", "after-empty-row"],
)
def test_far_cells_hidden_from_a_naive_scan_are_refused(rows: str) -> None:
    assert refused(workbook(rows)).limit in {"max_columns", "max_sheet_cells", "max_rows"}


def scan(pieces: list[bytes], *, fast: bool) -> tabular._Counts:
    """As inspect_xlsx scans a part: fast when it can vouch for every cell, else exactly."""
    if fast:
        try:
            return tabular._scan(pieces, fast=True)
        except tabular._NotFast:
            pass
    return tabular._scan(pieces, fast=False)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11, 64])
@pytest.mark.parametrize("odd", ["", '<c r="D40" foo="a>b"/>', '<c r="D40" foo="a<b"/>'], ids=["plain", "gt", "lt"])
def test_pieces_cut_anywhere_give_the_same_counts(chunk: int, fast: bool, odd: str) -> None:
    rows = "".join(
        f'<row r="{r}" spans="1:3">{text_cell(f"A{r}", "x")}<c r="B{r}" s="1" t="s"><v>{r}</v></c><c r="AB{r}"/></row>'
        for r in range(1, 40)
    )
    data = sheet_xml(rows + f'<row r="40">{odd}</row><row r="120"><c r="C120"><v>1</v></c></row>')
    data = data.replace(b"</worksheet>", b"<sst><si><t>a</t></si><x:si><t>b</t></x:si></sst></worksheet>")
    whole = scan([data], fast=fast)
    assert scan([data[i : i + chunk] for i in range(0, len(data), chunk)], fast=fast) == whole
    cells = 118 if not odd else 119
    assert (whole.last_row, whole.last_column, whole.cells, whole.shared_strings) == (120, 28, cells, 2)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
def test_a_long_text_across_many_pieces_is_no_long_tag(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(tabular, "_MAX_TAG", 300)
    data = sheet_xml(f'<row r="1">{text_cell("A1", "x" * 1000)}</row>')
    assert tabular._scan([data[i : i + 7] for i in range(0, len(data), 7)], fast=fast).cells == 1
    with pytest.raises(UnreadableFile, match="not understood"):
        tabular._scan([b'<row r="1"><c r="A1" s="', b"1" * 400, b'">'], fast=fast)


def test_the_fast_scan_hands_odd_cells_to_the_exact_one() -> None:
    with pytest.raises(tabular._NotFast):
        tabular._scan([sheet_xml("<row><c><v>1</v></c></row>")], fast=True)
    excel = sheet_xml(f'<row r="1" spans="1:2">{number_cell("A1")}<c r="B1" s="3" t="s"><v>0</v></c></row>')
    assert tabular._scan([excel], fast=True) == tabular._scan([excel], fast=False)


def test_an_xml_tag_calamine_would_read_but_the_scan_cannot_is_unreadable() -> None:
    with pytest.raises(UnreadableFile, match="not understood"):
        tabular.inspect_xlsx(workbook('<row r="1"><c r="A0"><v>1</v></c></row>'), Limits())
    with pytest.raises(UnreadableFile, match="not understood"):
        tabular.inspect_xlsx(workbook('<row r="1"><c r="A1" s="1" t><v>1</v></c></row>'), Limits())


# --- the archive ----------------------------------------------------------------------------------


def zeros_member(raw_size: int) -> bytes:
    return b"\0" * raw_size


@pytest.mark.usefixtures("calamine_untouched", "nothing_unpacked")
def test_a_zip_bomb_is_refused_from_its_directory() -> None:
    """A picture that does not compress keeps the archive's ratio low: the member's gives it away."""
    extra = {"xl/styles.xml": zeros_member(8 << 20), "xl/media/image1.png": os.urandom(200_000)}
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra=extra)
    assert len(raw) < 250_000
    error = refused(raw)
    assert (error.limit, error.maximum, error.status) == ("max_compression_ratio", 200, 413)
    assert "zip bomb" in (error.detail or "")


@pytest.mark.usefixtures("calamine_untouched")
def test_a_zip_bomb_that_lies_about_its_size_is_refused_as_it_unpacks() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra={"xl/styles.xml": zeros_member(8 << 20)})
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        packed = archive.getinfo("xl/styles.xml").compress_size
    error = refused(lie_about_size(raw, "xl/styles.xml", packed))
    assert (error.limit, error.status) == ("max_compression_ratio", 413)


@pytest.mark.usefixtures("calamine_untouched", "nothing_unpacked")
def test_a_zip_bomb_spread_over_many_small_members_is_refused_from_its_directory() -> None:
    small = {f"xl/media/{i}.png": zeros_member(64 << 10) for i in range(300)}
    error = refused(workbook(f'<row r="1">{number_cell("A1")}</row>', extra=small))
    assert (error.limit, error.status) == ("max_compression_ratio", 413)


@pytest.mark.usefixtures("calamine_untouched", "nothing_unpacked")
def test_declared_sizes_beyond_the_total_are_refused_from_the_directory() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra={"xl/media/image1.png": os.urandom(50_000)})
    error = refused(lie_about_size(raw, "xl/media/image1.png", 2 << 20), Limits(max_uncompressed_bytes=1 << 20))
    assert (error.limit, error.maximum, error.status) == ("max_uncompressed_bytes", 1 << 20, 413)


@pytest.mark.usefixtures("calamine_untouched")
def test_real_bytes_beyond_the_total_are_refused_whatever_the_sizes_declared() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra={"xl/media/image1.png": os.urandom(300_000)})
    lying = lie_about_size(raw, "xl/media/image1.png", 1000)
    error = refused(lying, Limits(max_uncompressed_bytes=200_000))
    assert (error.limit, error.maximum) == ("max_uncompressed_bytes", 200_000)
    assert error.detail == "the workbook unpacks to more than 200,000 bytes (0 MiB); that is the most read"


def test_a_member_that_unpacks_to_other_than_its_declared_size_is_unreadable() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra={"xl/styles.xml": b"<styleSheet/>" * 400})
    with pytest.raises(UnreadableFile, match="declares wrong sizes"):
        tabular.inspect_xlsx(lie_about_size(raw, "xl/styles.xml", 100), Limits())


@pytest.mark.usefixtures("calamine_untouched", "nothing_unpacked")
def test_an_archive_of_too_many_members_is_refused() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>', extra={f"xl/media/{i}.png": b"" for i in range(1000)})
    error = refused(raw)
    assert (error.limit, error.maximum, error.status) == ("max_zip_members", 1000, 413)
    assert error.detail == "the workbook's archive holds 1,005 files; at most 1,000 are read"


@pytest.mark.usefixtures("calamine_untouched")
@pytest.mark.parametrize("marker", ["xl/workbook.bin", "content.xml"])
def test_xlsb_and_ods_are_refused_since_calamine_would_load_them_whole(marker: str) -> None:
    with pytest.raises(UnreadableFile, match="only XLSX"):
        tabular.inspect_xlsx(workbook("", extra={marker: b"x"}), Limits())


@pytest.mark.usefixtures("calamine_untouched")
def test_a_sheet_named_as_a_picture_is_scanned_like_any_sheet() -> None:
    raw = workbook(f'<row r="1">{number_cell("A1")}</row>')
    rels = WORKBOOK_RELS.replace("worksheets/sheet1.xml", "media/sheet.png")
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as source, zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            data = rels.encode() if info.filename == "xl/_rels/workbook.xml.rels" else source.read(info)
            archive.writestr(info.filename, data)
        archive.writestr("xl/media/sheet.png", sheet_xml(f'<row r="1">{number_cell("XFD1048576")}</row>'))
    assert refused(buffer.getvalue()).limit == "max_sheet_cells"


def test_a_file_that_is_no_zip_archive_is_unreadable() -> None:
    with pytest.raises(UnreadableFile):
        tabular.inspect_xlsx(b"PK\x03\x04 not really", Limits())


def test_limits_keep_cells_within_the_csv_module_field_limit() -> None:
    assert csv.field_size_limit() == tabular.CELL_CHARS_CEILING
    with pytest.raises(ValueError, match="max_cell_chars"):
        Limits(max_cell_chars=tabular.CELL_CHARS_CEILING + 1)


# --- CSV ------------------------------------------------------------------------------------------


def csv_of(text: str, limits: Limits = DEFAULT) -> list[list[str]]:
    return list(tabular.csv_rows(io.StringIO(text, newline=""), limits))


def test_csv_rows_beyond_the_limit_are_refused_and_up_to_it_read() -> None:
    assert len(csv_of("a\nb\nc\n", Limits(max_rows=3))) == 3
    with pytest.raises(LimitExceeded) as caught:
        csv_of("a\nb\nc\nd\n", Limits(max_rows=3))
    assert (caught.value.limit, caught.value.maximum, caught.value.status) == ("max_rows", 3, 413)
    assert caught.value.detail == "the file has more than 3 rows; that is the most read"


def test_a_csv_row_wider_than_allowed_is_refused_as_422() -> None:
    assert len(csv_of(",".join(["x"] * 256) + "\n")[0]) == 256
    with pytest.raises(CellLimitExceeded) as caught:
        csv_of("a,b\n" + ",".join(["x"] * 257) + "\n")
    assert (caught.value.limit, caught.value.maximum, caught.value.status) == ("max_columns", 256, 422)
    assert caught.value.detail == "row 2 has 257 columns; at most 256 are read"


def test_a_csv_cell_longer_than_the_field_limit_is_refused_as_422() -> None:
    assert csv_of("张" * 4096 + ",x\n") == [["张" * 4096, "x"]]
    with pytest.raises(CellLimitExceeded) as caught:
        csv_of("header\n" + "张" * 4097 + ",x\n")
    assert (caught.value.limit, caught.value.maximum) == ("max_cell_chars", 4096)
    assert caught.value.detail == "a cell of row 2 holds more than 4,096 characters; that is the most read"


def test_a_reader_with_shorter_cells_checks_them_itself() -> None:
    limits = Limits(max_cell_chars=10)
    assert csv_of("0123456789,x\n", limits) == [["0123456789", "x"]]
    with pytest.raises(CellLimitExceeded) as caught:
        csv_of("0123456789A,x\n", limits)
    assert (caught.value.limit, caught.value.maximum) == ("max_cell_chars", 10)


class Lines(io.StringIO):
    """Text that remembers the longest read it was asked for."""

    longest_read = 0

    def readline(self, size: int | None = -1, /) -> str:  # type: ignore[override]
        assert size is not None and size > 0, "a line must never be read whole"
        self.longest_read = max(self.longest_read, size)
        return super().readline(size)


def test_a_line_of_a_million_commas_is_never_read_whole() -> None:
    text = Lines("a,b\n" + "," * 1_000_000 + "\n", newline="")
    with pytest.raises(CellLimitExceeded) as caught:
        list(tabular.csv_rows(text, Limits(max_columns=4, max_cell_chars=5)))
    assert caught.value.limit == "max_columns"
    assert text.longest_read == 4 * (2 * 5 + 3) + 2


def test_rows_up_to_the_limits_read_as_the_csv_module_reads_them() -> None:
    limits = Limits(max_columns=3, max_cell_chars=10)
    quotes = '"' + '""' * 10 + '"'
    text = f'{quotes},{quotes},{quotes}\r\n"multi\nline",b\r\n"a,b",,"x\r\ny"\n'
    assert csv_of(text, limits) == list(csv.reader(io.StringIO(text, newline="")))
    assert csv_of(text, limits)[0] == ['"' * 10] * 3
