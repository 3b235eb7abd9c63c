"""The enrolment roster (参保人员花名册): every enrolment of a coverage year in the caller's scope, a
row per person with the masked ID number, status, cover, money and continuous years, for the
township clerk's file (JSON pages, CSV, XLSX, or the whole roster as a job's file)."""

from __future__ import annotations

import base64
import binascii
from datetime import date
from typing import Annotated
from uuid import UUID

import msgspec

from backend import crypto
from backend import reports as tables
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.clock import local_today
from backend.db import Connection, load_queries
from backend.eligibility import reports as list_reports
from backend.enrollment import continuity
from backend.enrollment.enrollments import Status
from backend.errors import InvalidInput
from backend.i18n import LANGUAGES, N_, _, current_language, terms, use_language
from backend.jobs.worker import JobRun, Outcome
from mobile_sync_protocol.rules.identity import mask

Q = load_queries("backend.enrollment", "roster.sql")

FUNDED = ("paid", "subsidised", "confirmed")


class RosterRow(msgspec.Struct, frozen=True, kw_only=True):
    """An enrolment of the roster: who, where, its state and cover, its money in fen, and the
    person's continuous years of basic insurance as of the year."""

    enrollment_id: UUID
    person_id: UUID
    household_id: UUID
    division_code: str  # the enrolment's village
    household_no: str
    name: str
    id_number_masked: str  # 110105********0016; "" for a person known by a birth certificate only
    relation: str | None  # to the head of the enrolment's household
    status: Status
    coverage_start: date | None
    coverage_end: date | None
    coverage_reason: str | None
    premium_fen: int | None  # None: not priced yet
    subsidy_fen: int
    paid_fen: int  # payments not voided, net of refunds, towards this enrolment (0 once cancelled)
    continuous_years: int  # 连续参保年数 as of the coverage year (continuity.py)
    # The serious-illness ceiling for the year of a person covered that year, when the year's
    # policy carries the incentive; else None.
    serious_illness_ceiling_fen: int | None = None


class RosterPage(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    items: list[RosterRow]
    # Opaque: the last row's place (village, household number, ids), never a person's number.
    next_cursor: str | None


# Page cursors: the sort key of the last row, as base64url JSON. A cursor travels in URLs and so in
# access logs: it names a village, a household number and ids, never a person's number.

CURSOR_MAX_LENGTH = 256
_Key = tuple[
    Annotated[str, msgspec.Meta(pattern=r"^[0-9]{12}$")],
    Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z-]{1,30}$")],
    UUID,
    UUID,
    UUID,
]


def encode_cursor(row: RosterRow) -> str:
    key = [row.division_code, row.household_no, row.household_id, row.person_id, row.enrollment_id]
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).rstrip(b"=").decode()


def decode_cursor(cursor: str, field: str = "after") -> _Key:
    """The key a cursor of `encode_cursor` holds; InvalidInput for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=_Key)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(field, _("is not a cursor of this list (use the page's next_cursor)")) from None


ROSTER_COLUMNS = (
    tables.Column("division_code", N_("Division code")),
    tables.Column("township", N_("Township")),
    tables.Column("village", N_("Village")),
    tables.Column("household_no", N_("Household number")),
    tables.Column("name", N_("Name")),
    tables.Column("id_number", N_("Citizen ID number")),
    tables.Column("relation", N_("Relation to the head of household")),
    tables.Column("status", N_("Enrolment status")),
    tables.Column("coverage_start", N_("Cover starts")),
    tables.Column("coverage_end", N_("Cover ends")),
    tables.Column("coverage_reason", N_("Reason for the cover")),
    tables.Column("premium_fen", N_("Premium (yuan)"), "fen"),
    tables.Column("subsidy_fen", N_("Subsidy (yuan)"), "fen"),
    tables.Column("paid_fen", N_("Paid (yuan)"), "fen"),
    tables.Column("continuous_years", N_("Continuous years of basic insurance"), "int"),
    tables.Column("serious_illness_ceiling_fen", N_("Serious-illness insurance ceiling (yuan)"), "fen"),
)
ROSTER_HEADER = tuple(c.code for c in ROSTER_COLUMNS)
ROSTER_SHEET = N_("Roster {year}")
ROSTER_TITLE = N_("{place}: roster of enrolled persons, coverage year {year}, as of {as_of}")


def roster_rows(
    items: list[RosterRow], names: dict[str, str] | None = None, headers: tables.Headers = "codes"
) -> list[tuple[object, ...]]:
    """A page's items as the rows of the CSV or XLSX export (ROSTER_COLUMNS); `names` of the
    divisions by code. Codes are named for people (`names`), kept for scripts (`codes`)."""
    names = names or {}

    def named(vocabulary: str, code: str | None) -> str:
        if code is None:
            return ""
        return (terms.name(vocabulary, code) or code) if headers == "names" else code

    return [
        (
            i.division_code,
            names.get(tables.township_of(i.division_code), ""),
            names.get(i.division_code, ""),
            i.household_no,
            i.name,
            i.id_number_masked,
            named("relation", i.relation),
            named("enrollment_status", i.status),
            i.coverage_start.isoformat() if i.coverage_start else "",
            i.coverage_end.isoformat() if i.coverage_end else "",
            named("coverage_reason", i.coverage_reason),
            i.premium_fen,
            i.subsidy_fen,
            i.paid_fen,
            i.continuous_years,
            i.serious_illness_ceiling_fen,
        )
        for i in items
    ]


def _totals(items: list[RosterRow], headers: tables.Headers) -> tuple[object, ...]:
    """The XLSX's last row: how many persons, and the money summed."""
    return (
        tables.total_label(headers),
        "",
        "",
        "",
        list_reports.persons(len(items), headers),
        *([""] * 6),
        sum(i.premium_fen or 0 for i in items),
        sum(i.subsidy_fen for i in items),
        sum(i.paid_fen for i in items),
        "",
        "",
    )


async def roster_file(
    conn: Connection,
    actor: Actor,
    year: int,
    on: date,
    items: list[RosterRow],
    format: tables.Format,
    headers: tables.Headers = "names",
    encoding: tables.Encoding = "utf-8",
) -> bytes:
    """The export of `items` as a file: CSV, XLSX, or JSON (the page's form, without a cursor)."""
    if format == "json":
        return msgspec.json.encode(RosterPage(coverage_year=year, items=items, next_cursor=None))
    codes = {i.division_code for i in items}
    names = await tables.division_names(conn, [*codes, *(tables.township_of(c) for c in codes)])
    table = tables.Table(
        sheet=_(ROSTER_SHEET, year=year),
        title=_(ROSTER_TITLE, place=await tables.place(conn, actor), year=year, as_of=on.isoformat()),
        columns=ROSTER_COLUMNS,
        rows=roster_rows(items, names, headers),
        totals=_totals(items, headers) if items else None,
    )
    return tables.table_file(table, format, headers, encoding)


async def enrolment_roster(
    conn: Connection,
    actor: Actor,
    year: int,
    on: date,
    *,
    village_code: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = 1000,
    reads: Connection | None = None,
) -> RosterPage:
    """A page of the roster of `year` in the caller's scope, by village, household and person;
    `after` is the `next_cursor` of the page before; `on` is today (the policy in force). Read on
    `reads` when given (a replica, backend.replicas); the audit row written on `conn`."""
    reads = reads or conn
    key: tuple[object, ...] = (None,) * 5 if after is None else decode_cursor(after)
    await reads.execute(Q["plan_each_run"])
    rows = await reads.fetch(Q["enrolment_roster"], *scope_args(actor), year, status, village_code, *key, limit + 1)
    await reads.execute(Q["plan_cached"])
    page = rows[:limit]
    covered = [r["person_id"] for r in page if r["status"] in FUNDED and r["coverage_start"] is not None]
    years = await continuity.roster_years(reads, list({r["person_id"] for r in page}), covered, year, on)
    keyring = crypto.keys()
    items = []
    for r in page:
        number = keyring.open(crypto.ID_NUMBER, r["id_number_enc"]) if r["id_number_enc"] else None
        run = years.get(r["person_id"])
        items.append(
            RosterRow(
                enrollment_id=r["id"],
                person_id=r["person_id"],
                household_id=r["household_id"],
                division_code=r["village_code"],
                household_no=r["household_no"],
                name=r["name"],
                id_number_masked=mask(number) if number else "",
                relation=r["relation"],
                status=r["status"],
                coverage_start=r["coverage_start"],
                coverage_end=r["coverage_end"],
                coverage_reason=r["coverage_reason"],
                premium_fen=r["premium_fen"],
                subsidy_fen=r["subsidy_fen"],
                paid_fen=r["paid_fen"],
                continuous_years=run.continuous_years if run else 0,
                serious_illness_ceiling_fen=run.ceiling_fen if run else None,
            )
        )
    await record(
        conn,
        actor,
        "report",
        "enrolment_roster",
        None,
        division_code=actor.scope.division_code,
        summary={"year": year, "village_code": village_code, "status": status, "results": len(items)},
    )
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return RosterPage(coverage_year=year, items=items, next_cursor=next_cursor)


# The whole roster as one file, made by a job worker: every page of the caller's scope.

ROSTER_EXPORT = "roster_export"
EXPORT_PAGE = 1000


class RosterExport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    format: tables.Format
    village_code: str | None = None
    status: str | None = None
    headers: tables.Headers = "names"
    encoding: tables.Encoding = "utf-8"
    language: str = msgspec.field(default_factory=current_language)  # the asker's


async def run_roster_export(run: JobRun) -> Outcome:
    """A `roster_export` job: every enrolment of the year in the asker's scope (and filters) in one
    file (the job's output); the result counts the rows."""
    assert run.actor is not None, "an export is asked for by a user"
    params = msgspec.convert(run.params, RosterExport)
    today = local_today(run.settings.timezone)
    items: list[RosterRow] = []
    after: str | None = None
    while True:
        page = await enrolment_roster(
            run.conn,
            run.actor,
            params.coverage_year,
            today,
            village_code=params.village_code,
            status=params.status,
            after=after,
            limit=EXPORT_PAGE,
        )
        items += page.items
        run.advance(len(page.items))
        if page.next_cursor is None:
            break
        after = page.next_cursor
    name = f"enrolment-roster-{params.coverage_year}.{params.format}"
    with use_language(params.language if params.language in LANGUAGES else None):
        body = await roster_file(
            run.conn, run.actor, params.coverage_year, today, items, params.format, params.headers, params.encoding
        )
    await run.save_output(name, tables.media_type(params.format, params.encoding), body)
    return Outcome({"coverage_year": params.coverage_year, "rows": len(items)})
