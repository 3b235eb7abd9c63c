"""The 应保尽保 report: of the people in registered households, how many are enrolled for a year,
per village, township and district.

Enrolled means funded (paid, subsidised or confirmed): a registration not yet paid gives no cover,
so it is counted apart (`registered_unpaid`) and the rate is of funded persons only. Every staff
user reads the report of their own scope: township staff and reviewers their township's villages,
district users the district's (README, "reports").
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import msgspec

from backend import reports as tables
from backend.actor import LEVEL_PREFIX, Actor, scope_args
from backend.audit.service import record
from backend.clock import local_today
from backend.config import Settings
from backend.db import Connection, load_queries
from backend.eligibility import reports as eligibility
from backend.i18n import LANGUAGES, N_, _, current_language, use_language
from backend.jobs.worker import JobRun, Outcome

Q = load_queries("backend.enrollment", "coverage_report.sql")

Level = Literal["village", "township", "district"]

# The columns of the file; `name` is titled by the level of the rows, and village rows carry their
# township's name too.
COUNTS = (
    tables.Column("level", N_("Level")),
    tables.Column("persons", N_("Persons who should be enrolled"), "int"),
    tables.Column("funded", N_("Persons enrolled and paid or subsidised"), "int"),
    tables.Column("registered_unpaid", N_("Persons registered, premium not paid"), "int"),
    tables.Column("confirmed", N_("Enrolments confirmed"), "int"),
    tables.Column("not_enrolled", N_("Persons not enrolled"), "int"),
    tables.Column("rate_percent", N_("Enrolment rate (%)"), "percent"),
)
CODE = tables.Column("division_code", N_("Division code"))
TOWNSHIP = tables.Column("township_name", N_("Township"))
SHEET = N_("Coverage {year}")
# What the persons who should be enrolled are (JSON `denominator` in English; the XLSX's note translated).
WITH_ROSTER = N_("registered persons and the household-registration roster, minus persons on exclusion lists")
WITHOUT_ROSTER = N_("registered persons minus persons on exclusion lists; no household-registration roster is loaded")
DENOMINATOR = N_("Persons who should be enrolled: {denominator}")
TITLE = N_("{place}: enrolment of everyone who should be, coverage year {year}, as of {as_of}")


class CoverageRow(msgspec.Struct, frozen=True, kw_only=True):
    division_code: str
    name: str
    level: str
    persons: int
    funded: int  # with a funded enrolment for the year: paid, subsidised or confirmed
    registered_unpaid: int  # with a registered enrolment not yet paid: no cover yet
    # funded + registered_unpaid: a live enrolment of any kind (what `enrolled` always counted)
    enrolled: int
    confirmed: int
    not_enrolled: int  # persons − enrolled: no live enrolment at all
    # funded / persons in percent, rounded half up to two decimals in integers (`rate`): 66.67
    rate_percent: float
    township_name: str = ""  # of a village row: the township it is in


class CoverageReport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    level: Level
    rows: list[CoverageRow]
    total: CoverageRow
    # persons = registered persons ∪ the household-registration roster (户籍人口), minus persons on an
    # exclusion list who are not enrolled; without a roster, registered persons only (and it says so).
    roster_loaded: bool = False
    denominator: str = ""
    as_of: date | None = None  # the date whose civil-affairs lists count
    place: str = ""  # the scope's district (and township) by name: 西湖区 北山街道


def rate(enrolled: int, persons: int) -> str:
    """Percentage with two decimals, rounded half up, computed in integers (the report gives it as
    a number: `float(rate(...))`, exact to the hundredth)."""
    if persons == 0:
        return "0.00"
    hundredths = (enrolled * 10_000 * 2 + persons) // (persons * 2)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


async def coverage_report(
    conn: Connection,
    actor: Actor,
    year: int,
    level: Level,
    on: date | None = None,
    *,
    reads: Connection | None = None,
) -> CoverageReport:
    """`on`: the date whose civil-affairs lists count (default: today in the default time zone).
    Read on `reads` when given (a replica, backend.replicas); the audit row written on `conn`."""
    on = on if on is not None else local_today("Asia/Shanghai")
    reads = reads or conn
    low, high = scope_args(actor)
    names = {r["code"]: (r["name"], r["level"]) for r in await reads.fetch(Q["division_names"], low, high)}
    width = LEVEL_PREFIX[level]
    totals: dict[str, list[int]] = {}
    # Every division of the level in scope appears, with zeros where nobody is registered yet.
    for code, (_name, division_level) in names.items():
        if division_level == level:
            totals[code] = [0, 0, 0, 0]
    # The lists' adjustments read a scope's listed persons: each run is planned for its own range (a
    # prepared statement's generic plan guesses a few hundred households for any). Until the
    # transaction ends, or reset below. The counts are summed from the summary the facts' triggers
    # keep (`coverage_tallies`): a few rows per village, whatever the persons.
    await reads.execute(Q["plan_each_run"])
    for r in await reads.fetch(Q["coverage_by_village"], low, high, year):
        key = r["village_code"][:width].ljust(12, "0")
        counts = totals.setdefault(key, [0, 0, 0, 0])
        counts[0] += r["persons"]
        counts[1] += r["funded"]
        counts[2] += r["registered_unpaid"]
        counts[3] += r["confirmed"]
    lists = await eligibility.denominator_adjustments(reads, actor, year, on)
    await reads.execute(Q["plan_cached"])
    for code, (roster_only, excluded) in lists.by_division.items():
        counts = totals.setdefault(code[:width].ljust(12, "0"), [0, 0, 0, 0])
        counts[0] += roster_only - excluded

    def row(code: str, name: str, row_level: str, counts: list[int]) -> CoverageRow:
        persons, funded, registered, confirmed = counts
        return CoverageRow(
            division_code=code,
            name=name,
            level=row_level,
            persons=persons,
            funded=funded,
            registered_unpaid=registered,
            enrolled=funded + registered,
            confirmed=confirmed,
            not_enrolled=persons - funded - registered,
            rate_percent=float(rate(funded, persons)),
            township_name=names.get(tables.township_of(code), ("", ""))[0] if row_level == "village" else "",
        )

    rows = [row(code, names.get(code, ("", level))[0], level, totals[code]) for code in sorted(totals)]
    total_counts = [
        sum(r.persons for r in rows),
        sum(r.funded for r in rows),
        sum(r.registered_unpaid for r in rows),
        sum(r.confirmed for r in rows),
    ]
    scope_name = names.get(actor.scope.division_code, ("", actor.scope.level))[0]
    total = row(actor.scope.division_code, scope_name, actor.scope.level, total_counts)
    await record(
        conn,
        actor,
        "report",
        "coverage",
        None,
        division_code=actor.scope.division_code,
        summary={"year": year, "level": level},
    )
    denominator = WITH_ROSTER if lists.roster_loaded else WITHOUT_ROSTER
    return CoverageReport(
        coverage_year=year,
        level=level,
        rows=rows,
        total=total,
        roster_loaded=lists.roster_loaded,
        denominator=denominator,
        as_of=on,
        place=await tables.place(reads, actor),
    )


class VillageCounts(msgspec.Struct, frozen=True, kw_only=True):
    village_code: str
    persons: int
    funded: int
    registered_unpaid: int
    confirmed: int


async def village_counts(
    conn: Connection, low: str, high: str, year: int, *, from_facts: bool = False
) -> list[VillageCounts]:
    """The report's counts per village of a code range, before the lists' adjustments, from the
    summary (as the report reads them) or counted from the facts (`from_facts`: what the summary
    must equal; a join of every membership and enrolment of the range, seconds at a district's
    million persons). Villages where both give only zeros may be missing from either."""
    query = Q["coverage_by_village_from_facts"] if from_facts else Q["coverage_by_village"]
    await conn.execute(Q["plan_each_run"])
    rows = await conn.fetch(query, low, high, year)
    await conn.execute(Q["plan_cached"])
    counts = [
        VillageCounts(
            village_code=r["village_code"],
            persons=r["persons"],
            funded=r["funded"],
            registered_unpaid=r["registered_unpaid"],
            confirmed=r["confirmed"],
        )
        for r in rows
    ]
    return sorted(
        (c for c in counts if (c.persons, c.funded, c.registered_unpaid, c.confirmed) != (0, 0, 0, 0)),
        key=lambda c: c.village_code,
    )


async def compact(conn: Connection, _settings: Settings, _now: datetime) -> int | None:
    """Housekeeping: the summary's deltas folded into one row per key (its sums unchanged); how
    many rows went, None when another worker was folding."""
    folded: int = await conn.fetchval(Q["compact"])
    return folded or None


def table(report: CoverageReport, headers: tables.Headers = "codes") -> tables.Table:
    """The report as a table: a row per division, the scope's total below."""
    village = report.level == "village"
    name = tables.Column("name", tables.LEVELS[report.level])
    columns = [CODE, *([TOWNSHIP] if village else []), name, *COUNTS]

    def cells(r: CoverageRow, level: str) -> tuple[object, ...]:
        places = (r.township_name, r.name) if village else (r.name,)
        return (
            r.division_code,
            *places,
            level,
            r.persons,
            r.funded,
            r.registered_unpaid,
            r.confirmed,
            r.not_enrolled,
            r.rate_percent,
        )

    t = report.total
    # For people the total is labelled 合计; for scripts it keeps the scope's level, as it always had.
    total_level = tables.total_label(headers) if headers == "names" else t.level
    as_of = report.as_of.isoformat() if report.as_of else ""
    return tables.Table(
        sheet=_(SHEET, year=report.coverage_year),
        title=_(TITLE, place=report.place, year=report.coverage_year, as_of=as_of),
        columns=columns,
        rows=[cells(r, tables.level_name(r.level, headers)) for r in report.rows],
        totals=cells(t, total_level),
        csv_totals=True,
        notes=[_(DENOMINATOR, denominator=_(report.denominator))] if headers == "names" else [],
    )


def report_file(
    report: CoverageReport,
    format: tables.Format,
    headers: tables.Headers = "names",
    encoding: tables.Encoding = "utf-8",
) -> bytes:
    """The report as a file: JSON, or CSV or XLSX (a row per division and the total)."""
    if format == "json":
        return msgspec.json.encode(report)
    return tables.table_file(table(report, headers), format, headers, encoding)


# The report made by a job worker: at prefecture scale its query takes seconds.

COVERAGE_EXPORT = "coverage_export"


class CoverageExport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    level: Level
    format: tables.Format
    headers: tables.Headers = "names"
    encoding: tables.Encoding = "utf-8"
    language: str = msgspec.field(default_factory=current_language)  # the asker's


async def run_coverage_export(run: JobRun) -> Outcome:
    """A `coverage_export` job: the 应保尽保 report of the asker's scope as a file (the job's output)."""
    assert run.actor is not None, "a report is asked for by a user"
    params = msgspec.convert(run.params, CoverageExport)
    today = local_today(run.settings.timezone)
    report = await coverage_report(run.conn, run.actor, params.coverage_year, params.level, today)
    name = f"coverage-{params.coverage_year}-{params.level}.{params.format}"
    with use_language(params.language if params.language in LANGUAGES else None):
        body = report_file(report, params.format, params.headers, params.encoding)
    await run.save_output(name, tables.media_type(params.format, params.encoding), body)
    return Outcome({"coverage_year": params.coverage_year, "level": params.level, "rows": len(report.rows)})
