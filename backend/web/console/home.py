"""The dashboard at /console/: what each role opens the day with.

Every panel calls the service its API route calls, and only for the roles that route's guards
admit: the coverage chart for every staff user (`GET /reports/coverage`) and, for a township's
staff, its villages' rate over time (`GET /reports/coverage/trend`); today's collections, the review
queue, open conflicts and quarantined work for township reviewers.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.response import Template

from backend import i18n
from backend.actor import Role
from backend.clock import local_today
from backend.deps import CurrentActor, Reads, Tx
from backend.enrollment import coverage_report, coverage_trend, enrollments
from backend.i18n import _
from backend.premiums import adjustments
from backend.premiums import reports as premium_reports
from backend.sync import review as quarantine
from backend.sync.conflicts import review as conflicts
from backend.web import charts
from backend.web.pages import markup, page

QUEUE_PEEK = 200  # the dashboard counts the review queue up to this many ("200+")


def coverage_chart(report: coverage_report.CoverageReport, title: str) -> str:
    rows = [(row.name or row.division_code, row.rate_percent / 100) for row in report.rows]
    return charts.bar_chart(rows, title=title, value_text=i18n.percent, max_value=1.0)


def trend_chart(trend: coverage_trend.CoverageTrend, title: str) -> str:
    """The rate over time, a line per division (`GET /reports/coverage/trend`); the page puts the
    table of the same numbers beside it (`console/trend.html`)."""
    lines = [(s.name or s.division_code, [r / 100 for r in s.rate_percent]) for s in trend.series]
    weeks = [week.isoformat() for week in trend.weeks]
    return charts.line_chart(weeks, lines, title=title, value_text=i18n.percent, max_value=1.0)


def trend_context(trend: coverage_trend.CoverageTrend) -> dict[str, Any]:
    """What `console/trend.html` shows: the chart, its title and the trend (the table)."""
    title = (
        _("Funded rate by village and week, {year}", year=trend.coverage_year)
        if trend.level == "village"
        else _("Funded rate by township and week, {year}", year=trend.coverage_year)
    )
    return {"trend": trend, "trend_title": title, "trend_chart": markup(trend_chart(trend, title))}


@get("/", include_in_schema=False)
async def dashboard(
    tx: Tx, reads: Reads, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    """The scope's reports read on a replica that has the user's own writes (backend.replicas)."""
    today = local_today(state.settings.timezone)
    year = today.year
    level = "village" if actor.scope.level == "township" else "township"
    report = await coverage_report.coverage_report(tx, actor, year, level, today, reads=reads)  # type: ignore[arg-type]
    title = (
        _("Funded rate by village, {year}", year=year)
        if level == "village"
        else _("Funded rate by township, {year}", year=year)
    )
    context: dict[str, Any] = {
        "year": year,
        "today": today,
        "coverage": report,
        "chart_title": title,
        "chart": markup(coverage_chart(report, title)),
    }
    if actor.scope.level == "township":  # a township's villages over time (the district's: /console/district)
        context.update(
            trend_context(await coverage_trend.coverage_trend(tx, actor, year, today, "village", report, reads=reads))
        )
    if actor.role == Role.TOWNSHIP_REVIEWER:
        collected = await premium_reports.collections(tx, actor, "collector", today, today, reads=reads)
        to_confirm = 0
        for status in ("paid", "subsidised"):
            found = await enrollments.queue(
                tx,
                actor,
                year=year,
                status=status,
                village_code=None,
                household_id=None,
                after=None,
                limit=QUEUE_PEEK,
            )
            to_confirm += len(found.items)
        open_conflicts = await conflicts.conflicts(tx, actor, None, None, True, None, QUEUE_PEEK)
        held = await quarantine.queue(tx, actor, "open", None, QUEUE_PEEK)
        context.update(
            collected=collected,
            collected_total=sum(r.net_fen for r in collected.rows),
            to_confirm=to_confirm,
            open_conflicts=len(open_conflicts.items),
            quarantined=len(held.items),
            pending_adjustments=len((await adjustments.pending_requests(tx, actor)).items),
            peek=QUEUE_PEEK,
        )
    return page(request, "console/dashboard.html", title=_("Dashboard"), **context)


HANDLERS = [dashboard]
