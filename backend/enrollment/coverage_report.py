"""The 应保尽保 report: of the people in registered households, how many are enrolled for a year,
per village, township and district."""

from __future__ import annotations

from datetime import date
from typing import Literal

import msgspec

from backend import reports as tables
from backend.actor import LEVEL_PREFIX, Actor, scope_args
from backend.audit.service import record
from backend.clock import local_today
from backend.db import Connection, load_queries
from backend.eligibility import reports as eligibility
from backend.jobs.worker import JobRun, Outcome

Q = load_queries("backend.enrollment", "coverage_report.sql")

Level = Literal["village", "township", "district"]

HEADER = ("division_code", "name", "level", "persons", "enrolled", "confirmed", "not_enrolled", "rate_percent")


class CoverageRow(msgspec.Struct, frozen=True, kw_only=True):
    division_code: str
    name: str
    level: str
    persons: int
    enrolled: int
    confirmed: int
    not_enrolled: int
    rate_percent: str  # enrolled / persons, two decimals, as text: no float near a published figure


class CoverageReport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    level: Level
    rows: list[CoverageRow]
    total: CoverageRow
    # persons = registered persons ∪ the household-registration roster (户籍人口), minus persons on an
    # exclusion list who are not enrolled; without a roster, registered persons only (and it says so).
    roster_loaded: bool = False
    denominator: str = ""


def rate(enrolled: int, persons: int) -> str:
    """Percentage with two decimals, rounded half up, computed in integers."""
    if persons == 0:
        return "0.00"
    hundredths = (enrolled * 10_000 * 2 + persons) // (persons * 2)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


async def coverage_report(
    conn: Connection, actor: Actor, year: int, level: Level, on: date | None = None
) -> CoverageReport:
    """`on`: the date whose civil-affairs lists count (default: today in the default time zone)."""
    on = on if on is not None else local_today("Asia/Shanghai")
    low, high = scope_args(actor)
    names = {r["code"]: (r["name"], r["level"]) for r in await conn.fetch(Q["division_names"], low, high)}
    width = LEVEL_PREFIX[level]
    totals: dict[str, list[int]] = {}
    # Every division of the level in scope appears, with zeros where nobody is registered yet.
    for code, (_, division_level) in names.items():
        if division_level == level:
            totals[code] = [0, 0, 0]
    for r in await conn.fetch(Q["coverage_by_village"], low, high, year):
        key = r["village_code"][:width].ljust(12, "0")
        counts = totals.setdefault(key, [0, 0, 0])
        counts[0] += r["persons"]
        counts[1] += r["enrolled"]
        counts[2] += r["confirmed"]
    lists = await eligibility.denominator_adjustments(conn, actor, year, on)
    for code, (roster_only, excluded) in lists.by_division.items():
        counts = totals.setdefault(code[:width].ljust(12, "0"), [0, 0, 0])
        counts[0] += roster_only - excluded

    def row(code: str, name: str, row_level: str, counts: list[int]) -> CoverageRow:
        persons, enrolled, confirmed = counts
        return CoverageRow(
            division_code=code,
            name=name,
            level=row_level,
            persons=persons,
            enrolled=enrolled,
            confirmed=confirmed,
            not_enrolled=persons - enrolled,
            rate_percent=rate(enrolled, persons),
        )

    rows = [row(code, names.get(code, ("", level))[0], level, totals[code]) for code in sorted(totals)]
    total_counts = [sum(r.persons for r in rows), sum(r.enrolled for r in rows), sum(r.confirmed for r in rows)]
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
    denominator = (
        "registered persons and the household-registration roster, minus persons on exclusion lists"
        if lists.roster_loaded
        else "registered persons minus persons on exclusion lists; no household-registration roster is loaded"
    )
    return CoverageReport(
        coverage_year=year,
        level=level,
        rows=rows,
        total=total,
        roster_loaded=lists.roster_loaded,
        denominator=denominator,
    )


def table(report: CoverageReport) -> list[tuple[object, ...]]:
    return [
        (r.division_code, r.name, r.level, r.persons, r.enrolled, r.confirmed, r.not_enrolled, r.rate_percent)
        for r in [*report.rows, report.total]
    ]


def report_file(report: CoverageReport, format: tables.Format) -> bytes:
    """The report as a file: JSON, CSV or XLSX (the header of HEADER, a row per division and the total)."""
    if format == "json":
        return msgspec.json.encode(report)
    if format == "csv":
        return tables.to_csv(HEADER, table(report))
    return tables.to_xlsx(f"coverage {report.coverage_year}", HEADER, table(report))


# The report made by a job worker: at prefecture scale its query takes seconds.

COVERAGE_EXPORT = "coverage_export"


class CoverageExport(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    level: Level
    format: tables.Format


async def run_coverage_export(run: JobRun) -> Outcome:
    """A `coverage_export` job: the 应保尽保 report of the asker's scope as a file (the job's output)."""
    assert run.actor is not None, "a report is asked for by a user"
    params = msgspec.convert(run.params, CoverageExport)
    today = local_today(run.settings.timezone)
    report = await coverage_report(run.conn, run.actor, params.coverage_year, params.level, today)
    name = f"coverage-{params.coverage_year}-{params.level}.{params.format}"
    await run.save_output(name, tables.MEDIA_TYPES[params.format], report_file(report, params.format))
    return Outcome({"coverage_year": params.coverage_year, "level": params.level, "rows": len(report.rows)})
