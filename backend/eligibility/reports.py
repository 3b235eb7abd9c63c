"""Reports from the lists: subsidised persons not enrolled, and the adjustments of the 应保尽保
denominator (deaths, employee insurance)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec

from backend import crypto
from backend import reports as tables
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.eligibility import cursor
from backend.i18n import LANGUAGES, N_, _, current_language, ngettext, terms, use_language
from backend.jobs.worker import JobRun, Outcome
from mobile_sync_protocol.rules.identity import mask

Q = load_queries("backend.eligibility")


class Unenrolled(msgspec.Struct, frozen=True, kw_only=True):
    """A person on a subsidy list (or with an accepted claim) not enrolled for the year."""

    id_number_masked: str
    name: str
    categories: list[str]
    division_code: str
    person_id: UUID | None  # None: on the list, but not registered in any household yet
    household_id: UUID | None


class UnenrolledPage(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    as_of: date
    items: list[Unenrolled]
    next_cursor: str | None  # opaque (the last person's blind index): it travels in URLs, a number must not


UNENROLLED_COLUMNS = (
    tables.Column("division_code", N_("Division code")),
    tables.Column("township", N_("Township")),
    tables.Column("village", N_("Village")),
    tables.Column("name", N_("Name")),
    tables.Column("id_number", N_("Citizen ID number")),
    tables.Column("categories", N_("Subsidy categories")),
    tables.Column("person_id", N_("Person id")),
    tables.Column("household_id", N_("Household id")),
)
UNENROLLED_HEADER = tuple(c.code for c in UNENROLLED_COLUMNS)
UNENROLLED_SHEET = N_("Not enrolled {year}")
UNENROLLED_TITLE = N_("{place}: subsidised persons not enrolled for coverage year {year}, as of {as_of}")


def persons(n: int, headers: tables.Headers) -> str:
    return ngettext("{n} person", "{n} persons", n) if headers == "names" else str(n)


def unenrolled_rows(
    items: list[Unenrolled], names: dict[str, str] | None = None, headers: tables.Headers = "codes"
) -> list[tuple[object, ...]]:
    """A page's items as the rows of the CSV or XLSX export (UNENROLLED_COLUMNS); `names` of the
    divisions by code."""
    names = names or {}

    def categories(codes: list[str]) -> str:
        if headers == "codes":
            return " ".join(codes)
        return "、".join(terms.name("list_type", c) or c for c in codes)

    return [
        (
            i.division_code,
            names.get(tables.township_of(i.division_code), ""),
            names.get(i.division_code, "") if not i.division_code.endswith("000") else "",
            i.name,
            i.id_number_masked,
            categories(i.categories),
            str(i.person_id or ""),
            str(i.household_id or ""),
        )
        for i in items
    ]


async def unenrolled_file(
    conn: Connection,
    actor: Actor,
    year: int,
    on: date,
    items: list[Unenrolled],
    format: tables.Format,
    headers: tables.Headers = "names",
    encoding: tables.Encoding = "utf-8",
) -> bytes:
    """The export of `items` as a file: CSV, XLSX, or JSON (the page's form, without a cursor)."""
    if format == "json":
        return msgspec.json.encode(UnenrolledPage(coverage_year=year, as_of=on, items=items, next_cursor=None))
    codes = {i.division_code for i in items}
    names = await tables.division_names(conn, [*codes, *(tables.township_of(c) for c in codes)])
    table = tables.Table(
        sheet=_(UNENROLLED_SHEET, year=year),
        title=_(UNENROLLED_TITLE, place=await tables.place(conn, actor), year=year, as_of=on.isoformat()),
        columns=UNENROLLED_COLUMNS,
        rows=unenrolled_rows(items, names, headers),
        # The number of persons, under their names (XLSX).
        totals=(tables.total_label(headers), "", "", persons(len(items), headers), "", "", "", "") if items else None,
    )
    return tables.table_file(table, format, headers, encoding)


async def subsidised_not_enrolled(
    conn: Connection,
    actor: Actor,
    year: int,
    on: date,
    after: str | None,
    limit: int,
    *,
    reads: Connection | None = None,
) -> UnenrolledPage:
    """The first people a township must visit: subsidised, and not enrolled for `year`; `after` is
    the `next_cursor` of the page before. Read on `reads` when given (a replica, backend.replicas);
    the audit row written on `conn`."""
    after_hash = None if after is None else cursor.decode(after)
    rows = await (reads or conn).fetch(
        Q["subsidised_not_enrolled"], *scope_args(actor), year, on, after_hash, limit + 1
    )
    keyring = crypto.keys()
    items = [
        Unenrolled(
            id_number_masked=mask(keyring.open_bytes(crypto.ID_NUMBER, r["id_number_enc"]).decode()),
            name=r["name"],
            categories=list(r["categories"]),
            division_code=r["division_code"],
            person_id=r["person_id"],
            household_id=r["household_id"],
        )
        for r in rows[:limit]
    ]
    await record(
        conn,
        actor,
        "report",
        "subsidised_not_enrolled",
        None,
        division_code=actor.scope.division_code,
        summary={"year": year, "as_of": on.isoformat(), "results": len(items)},
    )
    next_cursor = cursor.encode(rows[limit - 1]["id_number_hash"]) if len(rows) > limit else None
    return UnenrolledPage(coverage_year=year, as_of=on, items=items, next_cursor=next_cursor)


class DenominatorAdjustments(msgspec.Struct, frozen=True, kw_only=True):
    roster_loaded: bool
    by_division: dict[str, tuple[int, int]]  # division code → (roster persons not registered, excluded)


async def denominator_adjustments(conn: Connection, actor: Actor, year: int, on: date) -> DenominatorAdjustments:
    """What the lists add to and take from the 应保尽保 denominator of registered persons. Fast when
    the caller has plan_cache_mode set to force_custom_plan (`coverage_report` does)."""
    low, high = scope_args(actor)
    lists = await conn.fetchrow(Q["lists_in_force"], low, high, on, actor.scope.division_code)
    assert lists is not None  # an aggregate: one row
    rows = await conn.fetch(Q["denominator_adjustments"], low, high, year, on, lists["rosters"], lists["exclusions"])
    return DenominatorAdjustments(
        roster_loaded=lists["roster_loaded"],
        by_division={r["division_code"]: (r["roster_only"], r["excluded"]) for r in rows},
    )


# The whole list as one file, made by a job worker: every page of the caller's scope.

UNENROLLED_EXPORT = "unenrolled_export"
EXPORT_PAGE = 1000


class UnenrolledExport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    as_of: date
    format: tables.Format
    headers: tables.Headers = "names"
    encoding: tables.Encoding = "utf-8"
    language: str = msgspec.field(default_factory=current_language)  # the asker's


async def run_unenrolled_export(run: JobRun) -> Outcome:
    """An `unenrolled_export` job: every person of the scope, subsidised and not enrolled, in one
    CSV or XLSX file (the job's output); the result counts them."""
    assert run.actor is not None, "an export is asked for by a user"
    params = msgspec.convert(run.params, UnenrolledExport)
    items: list[Unenrolled] = []
    after: str | None = None
    while True:
        page = await subsidised_not_enrolled(
            run.conn, run.actor, params.coverage_year, params.as_of, after, EXPORT_PAGE
        )
        items += page.items
        run.advance(len(page.items))
        if page.next_cursor is None:
            break
        after = page.next_cursor
    name = f"subsidised-not-enrolled-{params.coverage_year}.{params.format}"
    with use_language(params.language if params.language in LANGUAGES else None):
        body = await unenrolled_file(
            run.conn,
            run.actor,
            params.coverage_year,
            params.as_of,
            items,
            params.format,
            params.headers,
            params.encoding,
        )
    await run.save_output(name, tables.media_type(params.format, params.encoding), body)
    return Outcome({"coverage_year": params.coverage_year, "as_of": params.as_of, "rows": len(items)})
