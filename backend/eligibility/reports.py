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


UNENROLLED_HEADER = ("division_code", "name", "id_number", "categories", "person_id", "household_id")


def unenrolled_rows(items: list[Unenrolled]) -> list[tuple[object, ...]]:
    """A page's items as the rows of the CSV or XLSX export (UNENROLLED_HEADER)."""
    return [
        (
            i.division_code,
            i.name,
            i.id_number_masked,
            " ".join(i.categories),
            str(i.person_id or ""),
            str(i.household_id or ""),
        )
        for i in items
    ]


def unenrolled_file(year: int, on: date, items: list[Unenrolled], format: tables.Format) -> bytes:
    """The export of `items` as a file: CSV, XLSX, or JSON (the page's form, without a cursor)."""
    if format == "json":
        return msgspec.json.encode(UnenrolledPage(coverage_year=year, as_of=on, items=items, next_cursor=None))
    if format == "csv":
        return tables.to_csv(UNENROLLED_HEADER, unenrolled_rows(items))
    return tables.to_xlsx(f"unenrolled {year}", UNENROLLED_HEADER, unenrolled_rows(items))


async def subsidised_not_enrolled(
    conn: Connection, actor: Actor, year: int, on: date, after: str | None, limit: int
) -> UnenrolledPage:
    """The first people a township must visit: subsidised, and not enrolled for `year`; `after` is
    the `next_cursor` of the page before."""
    after_hash = None if after is None else cursor.decode(after)
    rows = await conn.fetch(Q["subsidised_not_enrolled"], *scope_args(actor), year, on, after_hash, limit + 1)
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
    """What the lists add to and take from the 应保尽保 denominator of registered persons."""
    low, high = scope_args(actor)
    loaded = bool(await conn.fetchval(Q["roster_loaded"], low, high, on, actor.scope.division_code))
    rows = await conn.fetch(Q["denominator_adjustments"], low, high, year, on)
    return DenominatorAdjustments(
        roster_loaded=loaded, by_division={r["division_code"]: (r["roster_only"], r["excluded"]) for r in rows}
    )


# The whole list as one file, made by a job worker: every page of the caller's scope.

UNENROLLED_EXPORT = "unenrolled_export"
EXPORT_PAGE = 1000


class UnenrolledExport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    as_of: date
    format: tables.Format


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
    body = unenrolled_file(params.coverage_year, params.as_of, items, params.format)
    await run.save_output(name, tables.MEDIA_TYPES[params.format], body)
    return Outcome({"coverage_year": params.coverage_year, "as_of": params.as_of, "rows": len(items)})
