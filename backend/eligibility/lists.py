"""Civil-affairs lists as immutable versions: the import (a clean file streams through COPY straight
into `list_entries`, inside a savepoint that any problem rolls back; such a file is then read again
into a staging table and checked there as a whole, for the full report; either way a bad file leaves
at most a `rejected` version row with its error report, never an entry), versions, entries, diffs.

Identity numbers are stored as their blind index and sealed value (backend/crypto.py), computed as
each chunk is parsed: no table, not even the temporary staging table, receives a number."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncGenerator, Callable
from datetime import date, datetime
from typing import IO, Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto, fields
from backend.actor import Actor, Scope, scope_args
from backend.audit.service import record
from backend.clock import local_today
from backend.config import Settings
from backend.db import Connection, load_queries
from backend.eligibility import cursor
from backend.eligibility.importer import (
    LIST_TYPES,
    MAX_KEPT_ERRORS,
    Entry,
    ListKind,
    ListReader,
    RowError,
    category_names,
)
from backend.errors import DomainError, InvalidInput, NotFound
from backend.i18n import _, terms
from backend.ids import uuid7
from backend.jobs import service as jobs
from backend.jobs.service import Job, JobError
from backend.jobs.worker import JobRun, Outcome

Q = load_queries("backend.eligibility")
STAGING_Q = load_queries("backend.eligibility", "staging.sql")

Year = Annotated[int, msgspec.Meta(ge=2000, le=2100)]
ListType = Annotated[str, msgspec.Meta(pattern=fields.LIST_TYPE)]
COPY_CHUNK = 10_000
STAGING_COLUMNS = ("row_no", "id_number_hash", "id_number_enc", "name", "valid_from", "valid_to", "division_code")
ENTRY_COLUMNS = ("version_id", *STAGING_COLUMNS)
# A row for COPY: STAGING_COLUMNS, or ENTRY_COLUMNS (the version's id first); the division code last.
Record = tuple[object, ...]
AUTO = "auto"  # the type of a mixed file, split by its category column into one version per type
_SPOOL_BYTES = 8 << 20  # a mixed file that cannot be read twice is copied: in memory up to this size


class ListRejected(DomainError):
    """The list file has errors; nothing was loaded"""

    status, code = 422, "list_rejected"

    @staticmethod
    def explain(version: ListVersion) -> str:
        return _(
            "{rejected} of {read} rows have errors; nothing was loaded",
            rejected=version.rows_rejected,
            read=version.rows_read,
        )


class EarlierThanInForce(DomainError):
    """A later-dated version of the list is in force"""

    status, code = 409, "list_version_in_force"

    def __init__(self, list_type: str, in_force: asyncpg.Record, effective_from: date) -> None:
        super().__init__(
            _(
                "{list_type} version {version} is in force from {in_force_from}; a version effective from "
                "{effective_from} would replace it from that day on. To do so, upload it again saying it "
                "supersedes (supersedes=true, --supersedes); else give an effective date on or after "
                "{in_force_from}",
                list_type=terms.name("list_type", list_type),
                version=in_force["version"],
                in_force_from=in_force["effective_from"].isoformat(),
                effective_from=effective_from.isoformat(),
            ),
            in_force={
                "list_id": str(in_force["id"]),
                "list_type": list_type,
                "version": in_force["version"],
                "effective_from": in_force["effective_from"].isoformat(),
            },
        )


class ListVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded version, or a rejected upload: an attempt kept with its report, which takes no
    version number (`version` null; a mixed file's rejected attempt has the type `auto` and no kind)."""

    id: UUID
    list_type: str
    kind: ListKind | None
    division_code: str
    version: int | None
    effective_from: date
    status: Literal["loaded", "rejected"]
    partial: bool
    supersedes: bool  # the uploader said it replaces the versions dated after it
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    errors: list[RowError]
    previous_id: UUID | None
    added: int | None
    removed: int | None
    changed: int | None
    file_name: str
    file_sha256: str
    uploaded_by: UUID | None
    uploaded_at: datetime
    # The year a settlement list (zero_reimbursement) is about; None for every other kind.
    concerns_year: int | None = None


class ListSplit(msgspec.Struct, frozen=True, kw_only=True):
    """A mixed file (type `auto`) loaded as one new version per list type its category column names."""

    list_type: Literal["auto"] = "auto"
    versions: list[ListVersion]


class ListVersionPage(msgspec.Struct, frozen=True):
    items: list[ListVersion]
    next_cursor: UUID | None


class ListEntry(msgspec.Struct, frozen=True, kw_only=True):
    row_no: int
    id_number: str
    name: str
    valid_from: date | None
    valid_to: date | None
    division_code: str | None


class ListEntryPage(msgspec.Struct, frozen=True):
    items: list[ListEntry]
    next_cursor: int | None


class DiffItem(msgspec.Struct, frozen=True, kw_only=True):
    id_number: str
    change: Literal["added", "removed", "changed"]
    row_no: int | None
    previous_row_no: int | None
    name: str | None
    previous_name: str | None
    valid_from: date | None
    previous_valid_from: date | None
    valid_to: date | None
    previous_valid_to: date | None
    division_code: str | None
    previous_division_code: str | None


class ListDiff(msgspec.Struct, frozen=True, kw_only=True):
    list_id: UUID
    against_id: UUID | None
    items: list[DiffItem]
    next_cursor: str | None


def _version(row: asyncpg.Record) -> ListVersion:
    data = dict(row.items())
    data["file_sha256"] = bytes(data["file_sha256"]).hex()
    data.pop("scope_prefix", None)
    return msgspec.convert(data, ListVersion)


async def list_kind(conn: Connection, list_type: str) -> ListKind:
    """A built-in type, or a subsidy category some published policy names."""
    if list_type in LIST_TYPES:
        return LIST_TYPES[list_type]
    if await conn.fetchval(Q["policy_category_exists"], list_type):
        return "subsidy"
    known = ", ".join(LIST_TYPES)
    raise InvalidInput(
        "type", _("unknown list type; known: {known}, or a subsidy category of a published policy", known=known)
    )


async def upload_scope(conn: Connection, actor: Actor | None, division_code: str | None) -> Scope:
    """Whose list this is: the uploader's scope, or for the command line the given (or only) district."""
    if actor is not None:
        return actor.scope
    if division_code is not None:
        row = await conn.fetchrow(Q["division"], division_code)
        if row is None or row["level"] not in ("district", "township"):
            raise InvalidInput("division", _("must be the code of a district or township"))
        return Scope(row["code"], row["level"])
    districts = await conn.fetch(Q["district_divisions"])
    if len(districts) != 1:
        raise InvalidInput("division", _("give the district or township the list is for"))
    return Scope(districts[0]["code"], "district")


class _Divisions(msgspec.Struct, frozen=True):
    """The divisions of an upload's scope: codes, and names to codes (None where a name is ambiguous)."""

    codes: frozenset[str]
    names: dict[str, str | None]


async def _divisions(conn: Connection, scope: Scope) -> _Divisions:
    names: dict[str, str | None] = {}
    codes: set[str] = set()
    for r in await conn.fetch(Q["division_names_in_scope"], scope.low, scope.high):
        names[r["name"]] = None if r["name"] in names else r["code"]
        codes.add(r["code"])
    return _Divisions(frozenset(codes), names)


def _sealing(version: str | None) -> Callable[[list[Entry]], list[Record]]:
    """Entries as COPY rows, each number replaced by its blind index and its sealed value; with a
    version, rows of `list_entries`, else of the staging table. A chunk's numbers are hashed and
    sealed in one call each (the keyring's batch methods: a third of the per-value cost)."""
    keyring = crypto.keys()
    kind = crypto.ID_NUMBER

    def staging_rows(entries: list[Entry]) -> list[Record]:
        numbers = [entry[1] for entry in entries]
        return [
            (row, hashed, sealed, name, valid_from, valid_to, division)
            for (row, _number, name, valid_from, valid_to, division), hashed, sealed in zip(
                entries, keyring.index_many(kind, numbers), keyring.seal_many(kind, numbers), strict=True
            )
        ]

    def entry_rows(entries: list[Entry]) -> list[Record]:
        numbers = [entry[1] for entry in entries]
        return [
            (version, row, hashed, sealed, name, valid_from, valid_to, division)
            for (row, _number, name, valid_from, valid_to, division), hashed, sealed in zip(
                entries, keyring.index_many(kind, numbers), keyring.seal_many(kind, numbers), strict=True
            )
        ]

    return staging_rows if version is None else entry_rows


async def _chunks(reader: ListReader, version: str | None) -> AsyncGenerator[list[Record], None]:
    """The reader's entries as COPY rows (`_sealing`), COPY_CHUNK at a time, each parsed and sealed
    in a thread while the one before is sent: Python parses while PostgreSQL inserts, and the event
    loop is never stalled by a big file.

    Use it with `contextlib.aclosing`: closing waits for the parse under way, so that nothing reads
    the source after its user stopped (a fallback reads the file again from the start).
    """
    rows = reader.entries()
    sealed = _sealing(version)

    def parse() -> list[Record]:
        return sealed(list(itertools.islice(rows, COPY_CHUNK)))

    pending = asyncio.ensure_future(asyncio.to_thread(parse))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(asyncio.to_thread(parse))
            yield chunk
    finally:
        # A thread cannot be stopped: wait for the parse under way (and take its outcome).
        with contextlib.suppress(Exception):
            await asyncio.shield(pending)


async def _records(reader: ListReader) -> AsyncGenerator[Record, None]:
    async with contextlib.aclosing(_chunks(reader, None)) as chunks:
        async for chunk in chunks:
            for entry in chunk:
                yield entry


class _Unclean(Exception):
    """The file has a problem that only the staging table's checks report in full."""


async def _load_clean(
    conn: Connection, reader: ListReader, version_id: UUID, scope: Scope, divisions: _Divisions
) -> int | None:
    """The rows of a file without problems, copied straight into `list_entries` as `version_id`;
    None, with nothing left behind, as soon as the file turns out to have one.

    The problems are those the staging path reports: a bad row or header (the reader), the same
    person twice (the primary key), a division unknown or outside the scope (the codes in scope),
    and for a township, a row with no division whose person lives in none of its households.
    """
    loaded = 0
    clean = True
    version = str(version_id)  # asyncpg encodes a uuid from its text faster than from a UUID

    async def records() -> AsyncGenerator[Record, None]:
        nonlocal loaded, clean
        async with contextlib.aclosing(_chunks(reader, version)) as chunks:
            async for chunk in chunks:
                # Stopping ends the COPY normally; the savepoint below then drops what it wrote.
                if reader.bad_rows:
                    clean = False
                    return
                for record in chunk:
                    division = record[-1]
                    if division is not None and division not in divisions.codes:
                        clean = False
                        return
                    yield record
                loaded += len(chunk)

    rows = records()
    try:
        async with conn.transaction():  # a savepoint in the caller's transaction
            try:
                await conn.copy_records_to_table("list_entries", records=rows, columns=ENTRY_COLUMNS)
            finally:
                await rows.aclose()  # no parse left running, whatever ended the COPY
            if not clean or reader.bad_rows or not reader.header_found or loaded == 0:
                raise _Unclean
            if scope.level == "township" and await conn.fetchval(
                Q["entries_unplaced_exist"], version_id, scope.low, scope.high
            ):
                raise _Unclean
    except _Unclean:
        return None
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "list_entries_pkey":
            raise
        return None  # the same person twice
    return loaded


class _Checked(msgspec.Struct, frozen=True, kw_only=True):
    """What the staging path made of a file: the version's counts and errors, entries copied unless rejected."""

    rows_loaded: int
    rows_rejected: int
    errors: list[RowError]
    rejected: bool
    diff: asyncpg.Record | None


async def _load_checked(
    conn: Connection, reader: ListReader, version_id: UUID, scope: Scope, previous_id: UUID | None, partial: bool
) -> _Checked:
    """Every row through a staging table, checked there as a whole; the good ones copied into
    `list_entries` unless the file is rejected."""
    await conn.execute(STAGING_Q["drop_staging"])
    await conn.execute(STAGING_Q["create_staging"])
    rows = _records(reader)
    try:
        await conn.copy_records_to_table("list_staging", records=rows, columns=STAGING_COLUMNS)
    finally:
        await rows.aclose()

    errors = list(reader.errors)
    bad: set[int] = set()
    id_column = reader.column_names.get("id_number", "id_number")
    for r in await conn.fetch(STAGING_Q["staging_duplicates"]):
        bad.add(r["row_no"])
        errors.append(RowError(r["row_no"], id_column, _("the same person as row {row}", row=r["first_row"])))
    column = reader.column_names.get("division", "division")
    for r in await conn.fetch(STAGING_Q["staging_bad_divisions"], scope.low, scope.high):
        bad.add(r["row_no"])
        problem = _("is not a known division code") if r["unknown"] else _("lies outside your scope")
        errors.append(RowError(r["row_no"], column, problem))
    if scope.level == "township":
        for r in await conn.fetch(STAGING_Q["staging_unplaced"], scope.low, scope.high):
            bad.add(r["row_no"])
            problem = _("is empty and the person is in no household of your township")
            errors.append(RowError(r["row_no"], column, problem))
    rows_rejected = reader.bad_rows + len(bad)
    errors.sort(key=lambda e: e.row)
    header_failed = not reader.header_found or reader.rows_read == 0
    if bad and partial and not header_failed:
        await conn.execute(STAGING_Q["delete_staging_rows"], sorted(bad))
    rows_loaded = 0 if header_failed else int(await conn.fetchval(STAGING_Q["count_staging"]))
    rejected = header_failed or rows_loaded == 0 or (rows_rejected > 0 and not partial)
    diff = None
    if not rejected:
        diff = await conn.fetchrow(STAGING_Q["staging_diff_counts"], previous_id)
        await conn.execute(STAGING_Q["insert_entries"], version_id)
    await conn.execute(STAGING_Q["drop_staging"])
    return _Checked(
        rows_loaded=0 if rejected else rows_loaded,
        rows_rejected=rows_rejected,
        errors=errors,
        rejected=rejected,
        diff=diff,
    )


async def import_list(
    conn: Connection,
    actor: Actor | None,
    source: IO[bytes],
    *,
    list_type: str,
    effective_from: date,
    file_name: str,
    today: date,
    partial: bool = False,
    supersedes: bool = False,
    division_code: str | None = None,
    on_read: Callable[[int], None] | None = None,
    year: int | None = None,
) -> ListVersion:
    """Loads one file as a new version of `list_type` for the uploader's scope, all or nothing.

    The caller owns the transaction. A file with bad rows gives a `rejected` attempt (errors kept,
    no entries, no version number) unless `partial`, in which case the good rows load and the bad
    ones are reported. When the file has a category column, a row naming another type is a bad row.
    A version dated before the newest loaded one is refused (`EarlierThanInForce`) unless it
    `supersedes` it.
    """
    if list_type == AUTO:
        raise InvalidInput("type", _("auto is for a mixed file, split by its category column"))
    kind = await list_kind(conn, list_type)
    concerns_year = concerned_year(kind, year)
    scope = await upload_scope(conn, actor, division_code)
    return await _import_one(
        conn,
        actor,
        source,
        list_type=list_type,
        kind=kind,
        scope=scope,
        categories=await _category_names(conn),
        effective_from=effective_from,
        file_name=file_name,
        today=today,
        partial=partial,
        supersedes=supersedes,
        split=False,
        on_read=on_read,
        concerns_year=concerns_year,
    )


def concerned_year(kind: ListKind, year: int | None) -> int | None:
    """The year a list is about: a settlement list's (required), none for other kinds (refused)."""
    if kind == "settlement" and year is None:
        raise InvalidInput("year", _("give the year the list is about (a settlement-system list concerns one year)"))
    if kind != "settlement" and year is not None:
        raise InvalidInput("year", _("only a settlement-system list (zero_reimbursement) concerns a year"))
    if year is not None and not 2000 <= year <= 2100:
        raise InvalidInput("year", _("must be a year from 2000 to 2100"))
    return year


async def _category_names(conn: Connection) -> dict[str, str]:
    return category_names([r["category"] for r in await conn.fetch(Q["policy_categories"])])


async def check_effective_date(
    conn: Connection,
    list_type: str,
    division_code: str,
    effective_from: date,
    supersedes: bool,
    concerns_year: int | None = None,
) -> None:
    """Refuses a version dated before the newest loaded one of its list, unless it supersedes it:
    the newest is in force from its date on (README, Lists: which version is in force). A
    settlement list is compared with the versions of the year it concerns only."""
    latest = await conn.fetchrow(Q["previous_version"], list_type, division_code, concerns_year)
    if latest is not None and effective_from < latest["effective_from"] and not supersedes:
        raise EarlierThanInForce(list_type, latest, effective_from)


async def _import_one(
    conn: Connection,
    actor: Actor | None,
    source: IO[bytes],
    *,
    list_type: str,
    kind: ListKind,
    scope: Scope,
    categories: dict[str, str],
    effective_from: date,
    file_name: str,
    today: date,
    partial: bool,
    supersedes: bool,
    split: bool,
    on_read: Callable[[int], None] | None,
    concerns_year: int | None = None,
) -> ListVersion:
    """`import_list` of a known type and scope; with `split`, one type's rows of a mixed file."""
    await conn.execute(Q["lock_list"], list_type, scope.division_code)
    await check_effective_date(conn, list_type, scope.division_code, effective_from, supersedes, concerns_year)
    divisions = await _divisions(conn, scope)
    version_id = uuid7()
    previous = await conn.fetchrow(Q["previous_version"], list_type, scope.division_code, concerns_year)
    previous_id: UUID | None = previous["id"] if previous else None

    def read() -> ListReader:
        return ListReader(
            source,
            today=today,
            division_names=divisions.names,
            on_read=on_read,
            list_type=list_type,
            categories=categories,
            split=split,
        )

    # A file that is not seekable cannot be read twice: it goes through the staging table at once.
    start = source.tell() if source.seekable() else None
    reader = read()
    loaded = None if start is None else await _load_clean(conn, reader, version_id, scope, divisions)
    if loaded is not None:
        checked = _Checked(
            rows_loaded=loaded,
            rows_rejected=0,
            errors=[],
            rejected=False,
            diff=await conn.fetchrow(Q["diff_counts"], version_id, previous_id),
        )
    else:
        if start is not None:
            source.seek(start)
            reader = read()
        checked = await _load_checked(conn, reader, version_id, scope, previous_id, partial)
    rejected, diff = checked.rejected, checked.diff
    # A rejected upload is an attempt, kept with its report: it takes no version number.
    number = None if rejected else await conn.fetchval(Q["next_version"], list_type, scope.division_code)
    row = await conn.fetchrow(
        Q["insert_version"],
        version_id,
        list_type,
        kind,
        scope.division_code,
        scope.prefix,
        number,
        effective_from,
        "rejected" if rejected else "loaded",
        partial,
        reader.rows_read,
        checked.rows_loaded,
        checked.rows_rejected,
        [msgspec.to_builtins(e) for e in checked.errors[:MAX_KEPT_ERRORS]],
        None if rejected else previous_id,
        diff and diff["added"],
        diff and diff["removed"],
        diff and diff["changed"],
        file_name[:200],
        reader.sha256,
        actor.id if actor else None,
        supersedes,
        concerns_year,
    )
    assert row is not None
    reviews = 0
    if not rejected and kind == "exclusion":
        reviews = len(await conn.fetch(Q["open_exclusion_reviews"], version_id, list_type, effective_from.year))
    loaded_version = _version(row)
    await _record_import(conn, actor, loaded_version, exclusion_reviews=reviews)
    return loaded_version


async def _record_import(
    conn: Connection, actor: Actor | None, version: ListVersion, *, exclusion_reviews: int
) -> None:
    await record(
        conn,
        actor,
        "import",
        "list_version",
        version.id,
        division_code=version.division_code,
        summary={
            "list_type": version.list_type,
            "version": version.version,
            "status": version.status,
            "rows_read": version.rows_read,
            "rows_loaded": version.rows_loaded,
            "rows_rejected": version.rows_rejected,
            "exclusion_reviews": exclusion_reviews,
            "supersedes": version.supersedes,
            "file_sha256": version.file_sha256,
        },
    )


class _SplitRejected(Exception):
    """A type's part of a mixed file is rejected: the savepoint drops every part."""


async def import_split(
    conn: Connection,
    actor: Actor | None,
    source: IO[bytes],
    *,
    effective_from: date,
    file_name: str,
    today: date,
    supersedes: bool = False,
    division_code: str | None = None,
    on_read: Callable[[int], None] | None = None,
    year: int | None = None,
) -> ListSplit | ListVersion:
    """Loads a mixed file (type `auto`) as one new version per list type its category column
    names, each as if that type's rows had been uploaded alone, all or nothing: one bad row (a
    category naming no type included) rejects the whole file, which is then kept as one rejected
    attempt of type `auto` with every part's report (returned instead of the split)."""
    scope = await upload_scope(conn, actor, division_code)
    categories = await _category_names(conn)
    with contextlib.ExitStack() as stack:
        if not source.seekable():  # every type's pass reads the file again
            spool: IO[bytes] = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES))
            await asyncio.to_thread(shutil.copyfileobj, source, spool)
            spool.seek(0)
            source = spool
        start = source.tell()
        survey = ListReader(source, today=today, categories=categories)
        found = await asyncio.to_thread(survey.categories_found)
        kinds = {list_type: await list_kind(conn, list_type) for list_type in sorted(found)}
        progress = _Shared(on_read, len(kinds))
        parts: list[ListVersion] = []
        if survey.header_found and kinds:
            try:
                async with conn.transaction():  # a savepoint: a rejected part takes the others back
                    for list_type, kind in kinds.items():
                        source.seek(start)
                        part = await _import_one(
                            conn,
                            actor,
                            source,
                            list_type=list_type,
                            kind=kind,
                            scope=scope,
                            categories=categories,
                            effective_from=effective_from,
                            file_name=file_name,
                            today=today,
                            partial=False,
                            supersedes=supersedes,
                            split=True,
                            on_read=progress.advance,
                            # The year goes to a settlement part only (required there).
                            concerns_year=concerned_year(kind, year if kind == "settlement" else None),
                        )
                        parts.append(part)
                        if part.status == "rejected":
                            raise _SplitRejected
                    if survey.bad_rows:
                        raise _SplitRejected
            except _SplitRejected:
                pass
            else:
                return ListSplit(versions=parts)
    errors = sorted([*survey.errors, *(e for p in parts for e in p.errors)], key=lambda e: e.row)
    row = await conn.fetchrow(
        Q["insert_version"],
        uuid7(),
        AUTO,
        None,
        scope.division_code,
        scope.prefix,
        None,
        effective_from,
        "rejected",
        False,
        survey.rows_read,
        0,
        survey.bad_rows + sum(p.rows_rejected for p in parts),
        [msgspec.to_builtins(e) for e in errors[:MAX_KEPT_ERRORS]],
        None,
        None,
        None,
        None,
        file_name[:200],
        survey.sha256,
        actor.id if actor else None,
        supersedes,
        None,
    )
    assert row is not None
    attempt = _version(row)
    await _record_import(conn, actor, attempt, exclusion_reviews=0)
    return attempt


class _Shared:
    """Bytes read by several passes over one file, shown as one pass's progress."""

    def __init__(self, on_read: Callable[[int], None] | None, passes: int) -> None:
        self._on_read = on_read
        self._passes = max(passes, 1)
        self._left = 0

    def advance(self, n: int) -> None:
        if self._on_read is None:
            return
        self._left += n
        step, self._left = divmod(self._left, self._passes)
        if step:
            self._on_read(step)


async def import_file(
    conn: Connection,
    actor: Actor | None,
    source: IO[bytes],
    *,
    list_type: str,
    effective_from: date,
    file_name: str,
    today: date,
    partial: bool = False,
    supersedes: bool = False,
    division_code: str | None = None,
    on_read: Callable[[int], None] | None = None,
    year: int | None = None,
) -> ListVersion | ListSplit:
    """`import_list`, or `import_split` for the type `auto` (which takes no `partial`)."""
    if list_type != AUTO:
        return await import_list(
            conn,
            actor,
            source,
            list_type=list_type,
            effective_from=effective_from,
            file_name=file_name,
            today=today,
            partial=partial,
            supersedes=supersedes,
            division_code=division_code,
            on_read=on_read,
            year=year,
        )
    if partial:
        raise InvalidInput("partial", _("cannot be used with the type auto: a mixed file loads whole or not at all"))
    return await import_split(
        conn,
        actor,
        source,
        effective_from=effective_from,
        file_name=file_name,
        today=today,
        supersedes=supersedes,
        division_code=division_code,
        on_read=on_read,
        year=year,
    )


def _overlaps(actor: Actor, version: asyncpg.Record) -> bool:
    prefix: str = version["scope_prefix"]
    return actor.in_scope(version["division_code"]) or actor.scope.division_code.startswith(prefix)


async def get_version(conn: Connection, actor: Actor, list_id: UUID) -> ListVersion:
    row = await conn.fetchrow(Q["list_version"], list_id)
    if row is None or not _overlaps(actor, row):
        raise NotFound()
    return _version(row)


async def versions(
    conn: Connection,
    actor: Actor,
    *,
    list_type: str | None,
    status: str | None,
    after: UUID | None,
    limit: int,
) -> ListVersionPage:
    low, high = scope_args(actor)
    rows = await conn.fetch(
        Q["list_versions"], low, high, actor.scope.division_code, list_type, status, after, limit + 1
    )
    items = [_version(r) for r in rows[:limit]]
    return ListVersionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def entries(conn: Connection, actor: Actor, list_id: UUID, after_row: int, limit: int) -> ListEntryPage:
    version = await get_version(conn, actor, list_id)
    whole = actor.in_scope(version.division_code)
    rows = await conn.fetch(Q["list_entries_page"], version.id, *scope_args(actor), after_row, limit + 1, whole)
    keyring = crypto.keys()
    items = [
        ListEntry(
            row_no=r["row_no"],
            id_number=keyring.open_bytes(crypto.ID_NUMBER, r["id_number_enc"]).decode(),
            name=r["name"],
            valid_from=r["valid_from"],
            valid_to=r["valid_to"],
            division_code=r["division_code"],
        )
        for r in rows[:limit]
    ]
    await record(
        conn,
        actor,
        "read",
        "list_entries",
        list_id,
        division_code=actor.scope.division_code,
        summary={"after_row": after_row, "results": len(items)},
    )
    return ListEntryPage(items=items, next_cursor=items[-1].row_no if len(rows) > limit else None)


async def diff(
    conn: Connection, actor: Actor, list_id: UUID, against: UUID | None, after: str | None, limit: int
) -> ListDiff:
    """Persons added, removed and changed since `against` (by default the version before), in the
    order of their numbers' blind index; `after` is the `next_cursor` of the page before."""
    after_hash = b"" if not after else cursor.decode(after)
    version = await get_version(conn, actor, list_id)
    base = against if against is not None else version.previous_id
    if base is not None:
        other = await get_version(conn, actor, base)
        if other.list_type != version.list_type:
            raise InvalidInput("against", _("is a version of another list type"))
    whole = actor.in_scope(version.division_code)
    rows = await conn.fetch(Q["list_diff"], version.id, base, after_hash, *scope_args(actor), limit + 1, whole)
    keyring = crypto.keys()
    items = []
    for r in rows[:limit]:
        data = dict(r.items())
        del data["id_number_hash"]
        data["id_number"] = keyring.open_bytes(crypto.ID_NUMBER, data.pop("id_number_enc")).decode()
        items.append(msgspec.convert(data, DiffItem))
    await record(
        conn,
        actor,
        "read",
        "list_diff",
        list_id,
        division_code=actor.scope.division_code,
        summary={"against": str(base) if base else None, "results": len(items)},
    )
    next_cursor = cursor.encode(rows[limit - 1]["id_number_hash"]) if len(rows) > limit else None
    return ListDiff(list_id=version.id, against_id=base, items=items, next_cursor=next_cursor)


# The background path: an upload stored with its job, imported by a worker process.

LIST_IMPORT = "list_import"


class ListImportParams(msgspec.Struct, frozen=True, kw_only=True):
    list_type: str  # or `auto`: a mixed file, split by its category column
    effective_from: date
    partial: bool = False
    supersedes: bool = False
    division_code: str | None = None  # the CLI's --division; a user's upload takes their scope
    year: Year | None = None  # the year a settlement list (zero_reimbursement) is about


async def enqueue_import(
    conn: Connection,
    actor: Actor | None,
    source: IO[bytes],
    params: ListImportParams,
    *,
    file_name: str,
    file_bytes: int,
    settings: Settings,
) -> Job:
    """Stores the upload as a `list_import` job after the checks that cost nothing: the list type
    is known, the uploader may load it for their scope, and its effective date is not before the
    version in force (the types of a mixed file are known once it is read: the job checks them)."""
    if params.list_type == AUTO:
        if params.partial:
            raise InvalidInput(
                "partial", _("cannot be used with the type auto: a mixed file loads whole or not at all")
            )
        scope = await upload_scope(conn, actor, params.division_code)
    else:
        concerns_year = concerned_year(await list_kind(conn, params.list_type), params.year)
        scope = await upload_scope(conn, actor, params.division_code)
        await check_effective_date(
            conn, params.list_type, scope.division_code, params.effective_from, params.supersedes, concerns_year
        )
    return await jobs.enqueue(
        conn,
        actor,
        LIST_IMPORT,
        msgspec.to_builtins(params),
        division_code=scope.division_code,
        settings=settings,
        file=source,
        file_name=file_name,
        file_bytes=file_bytes,
    )


async def run_import_job(run: JobRun) -> Outcome:
    """A `list_import` job: the same import as the request's, in the job's transaction. A rejected
    file keeps its attempt and row report (the job's result) and ends the job `failed`; a mixed
    file's result is the split (`ListSplit`)."""
    params = msgspec.convert(run.params, ListImportParams)
    with await run.open_file() as source:
        version = await import_file(
            run.conn,
            run.actor,
            source,
            list_type=params.list_type,
            effective_from=params.effective_from,
            file_name=run.file_name or "upload",
            today=local_today(run.settings.timezone),
            partial=params.partial,
            supersedes=params.supersedes,
            division_code=params.division_code,
            on_read=run.advance,
            year=params.year,
        )
    if isinstance(version, ListVersion) and version.status == "rejected":
        error = JobError(ListRejected.code, _(ListRejected.title()), ListRejected.explain(version))
        return Outcome(version, ok=False, error=error)
    return Outcome(version)
