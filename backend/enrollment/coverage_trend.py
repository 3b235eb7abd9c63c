"""The 应保尽保 rate over time: per division and ISO week, how many persons of today's live funded
enrolments were funded by the end of that week, and that count against today's denominator.

No history of the report is kept. What is known of every past day is the date each enrolment was
funded (`enrollments.business_date`: the local date it was paid or subsidised), so the trend is the
cumulative count of funded enrolments by that date — of the enrolments live and funded today (one
cancelled since counts in no week) — against the persons who should be enrolled *today* (the
coverage report's denominator, roster and exclusion lists included). It is labelled so
(`MEASURE`): it is not the rate the report would have shown that week, when the persons were
others. It leaves out, like the enrolments it reads, the years covered only by imported history
(no date of funding), so its last point can be below the report's rate; and an enrolment counts
in the village it belongs to now (it follows its household's move).

Weeks start on Monday (ISO); a week's point counts what was funded up to its Sunday (up to today in
the current week). The weeks run from the week of the first funding to the week of today or of the
coverage year's last day, whichever is earlier.
"""

from __future__ import annotations

from datetime import date, timedelta

import msgspec

from backend import reports as tables
from backend.actor import LEVEL_PREFIX, Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.enrollment.coverage_report import CoverageReport, Level, coverage_report, rate
from backend.i18n import N_, _

Q = load_queries("backend.enrollment", "coverage_trend.sql")

# What the figures are (JSON `measure` in English; titles and files translated).
MEASURE = N_("Funded rate by date of funding, against today's persons")
SHEET = N_("Coverage trend {year}")
TITLE = N_("{place}: funded rate by date of funding, coverage year {year}, as of {as_of}")
NOTE = N_(
    "Persons of today's live funded enrolments (paid, subsidised, confirmed) funded by the end of each week, "
    "against today's persons who should be enrolled; years covered only by imported history are not counted."
)
COLUMNS = (
    tables.Column("division_code", N_("Division code")),
    tables.Column("name", N_("Division")),
    tables.Column("level", N_("Level")),
    tables.Column("week_start", N_("Week starting")),
    tables.Column("funded", N_("Persons funded by the end of the week"), "int"),
    tables.Column("persons", N_("Persons who should be enrolled (today)"), "int"),
    tables.Column("rate_percent", N_("Funded rate (%)"), "percent"),
)
# Below the scope's level: a district's townships, a township's villages.
DEFAULT_LEVEL: dict[str, Level] = {"township": "village", "village": "village"}


class TrendSeries(msgspec.Struct, frozen=True, kw_only=True):
    division_code: str
    name: str
    level: str
    persons: int  # today's denominator (the coverage report's `persons`)
    funded: list[int]  # per week of `CoverageTrend.weeks`: funded by the week's end, cumulative
    rate_percent: list[float]  # funded / persons per week, two decimals rounded half up (`rate`)


class CoverageTrend(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    level: Level
    measure: str  # MEASURE, in English
    weeks: list[date]  # each week's Monday, oldest first; empty when nothing is funded yet
    series: list[TrendSeries]  # a division of the level per series, by code
    total: TrendSeries  # the caller's scope
    as_of: date
    place: str = ""


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


async def coverage_trend(
    conn: Connection,
    actor: Actor,
    year: int,
    today: date,
    level: Level | None = None,
    report: CoverageReport | None = None,
    *,
    reads: Connection | None = None,
) -> CoverageTrend:
    """The trend of the caller's scope, per division of `level` (default: a district's townships, a
    township's villages). `report`: the coverage report of the same year and level when the caller
    has it already (the dashboard), else it is made here (today's denominator). Read on `reads` when
    given (a replica, backend.replicas); the audit rows written on `conn`."""
    reads = reads or conn
    level = level or DEFAULT_LEVEL.get(actor.scope.level, "township")
    if report is None:
        report = await coverage_report(conn, actor, year, level, today, reads=reads)
    assert report.level == level and report.coverage_year == year, "the report of the same year and level"
    last_day = min(today, date(year, 12, 31))
    low, high = scope_args(actor)
    rows = await reads.fetch(Q["funded_by_week"], low, high, year, LEVEL_PREFIX[level], last_day)
    weeks: list[date] = []
    if rows:
        first, last = min(r["week"] for r in rows), week_start(last_day)
        weeks = [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]
    index = {week: n for n, week in enumerate(weeks)}
    # Each division's cumulative count from the weeks it changed, carried over the weeks between.
    steps: dict[str, list[int]] = {}
    for r in rows:
        steps.setdefault(r["division_code"], [0] * len(weeks))[index[r["week"]]] = r["funded"]
    cumulative: dict[str, list[int]] = {}
    for code, marks in steps.items():
        held, counts = 0, []
        for mark in marks:
            held = mark or held
            counts.append(held)
        cumulative[code] = counts

    def series(code: str, name: str, row_level: str, persons: int, funded: list[int]) -> TrendSeries:
        return TrendSeries(
            division_code=code,
            name=name,
            level=row_level,
            persons=persons,
            funded=funded,
            rate_percent=[float(rate(n, persons)) for n in funded],
        )

    zeros = [0] * len(weeks)
    found = [
        series(r.division_code, r.name, r.level, r.persons, cumulative.pop(r.division_code, zeros)) for r in report.rows
    ]
    # A division the report did not list (none should be): its counts still reach the total.
    found += [series(code, "", level, 0, counts) for code, counts in sorted(cumulative.items())]
    total_funded = [sum(s.funded[n] for s in found) for n in range(len(weeks))]
    t = report.total
    await record(
        conn,
        actor,
        "report",
        "coverage_trend",
        None,
        division_code=actor.scope.division_code,
        summary={"year": year, "level": level},
    )
    return CoverageTrend(
        coverage_year=year,
        level=level,
        measure=MEASURE,
        weeks=weeks,
        series=sorted(found, key=lambda s: s.division_code),
        total=series(t.division_code, t.name, t.level, t.persons, total_funded),
        as_of=today,
        place=report.place,
    )


def table(trend: CoverageTrend, headers: tables.Headers = "names") -> tables.Table:
    """A row per division and week (the scope's total last, per week): long, so a script filters it."""
    rows = [
        (
            s.division_code,
            s.name,
            tables.level_name(s.level, headers),
            week.isoformat(),
            s.funded[n],
            s.persons,
            s.rate_percent[n],
        )
        for s in [*trend.series, trend.total]
        for n, week in enumerate(trend.weeks)
    ]
    return tables.Table(
        sheet=_(SHEET, year=trend.coverage_year),
        title=_(TITLE, place=trend.place, year=trend.coverage_year, as_of=trend.as_of.isoformat()),
        columns=COLUMNS,
        rows=rows,
        notes=[_(NOTE)] if headers == "names" else [],
    )


def report_file(
    trend: CoverageTrend, format: tables.Format, headers: tables.Headers = "names", encoding: tables.Encoding = "utf-8"
) -> bytes:
    if format == "json":
        return msgspec.json.encode(trend)
    return tables.table_file(table(trend, headers), format, headers, encoding)
