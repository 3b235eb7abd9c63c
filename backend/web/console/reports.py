"""Report downloads: the 应保尽保 report and its trend (every staff user, their own scope) and
collections (reviewers and the district), as CSV or XLSX — the files the API's report routes answer,
made by the same functions (`coverage_report.report_file`, `coverage_trend.report_file`,
`premiums.reports.collections_file`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.response import Template

from backend import reports as tables
from backend.actor import Role
from backend.clock import local_today
from backend.deps import CurrentActor, Reads, Tx
from backend.enrollment import coverage_report, coverage_trend, roster
from backend.errors import InvalidInput
from backend.guards import require_roles
from backend.i18n import _
from backend.premiums import reports as premium_reports
from backend.web.pages import page, parse_day

COLLECTION_READERS = require_roles(Role.TOWNSHIP_REVIEWER, Role.DISTRICT_ADMIN)  # as GET /reports/collections
LEVELS = ("village", "township", "district")
GROUPS = ("collector", "township", "day")


def _format(request: Request[Any, Any, Any]) -> tables.Format:
    return "csv" if request.query_params.get("format") == "csv" else "xlsx"


def _file(body: bytes, format: tables.Format, name: str) -> Response[bytes]:
    return Response(
        body,
        media_type=tables.response_media_type(format),
        encoding=tables.charset("utf-8"),
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@get("/reports", include_in_schema=False)
async def reports_page(actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    today = local_today(state.settings.timezone)
    return page(
        request,
        "console/reports.html",
        title=_("Reports"),
        year=today.year,
        today=today,
        month_start=today.replace(day=1),
        levels=LEVELS,
        groups=GROUPS,
        collections=actor.role in (Role.TOWNSHIP_REVIEWER, Role.DISTRICT_ADMIN),
    )


@get("/reports/coverage", include_in_schema=False)
async def coverage_file(
    tx: Tx, reads: Reads, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Response[bytes]:
    today = local_today(state.settings.timezone)
    raw_year = request.query_params.get("year", "")
    year = int(raw_year) if raw_year.isdigit() and len(raw_year) == 4 else today.year
    level = request.query_params.get("level")
    level = level if level in LEVELS else "village"
    format = _format(request)
    report = await coverage_report.coverage_report(tx, actor, year, level, today, reads=reads)  # type: ignore[arg-type]
    body = coverage_report.report_file(report, format, "names", "utf-8")
    return _file(body, format, f"coverage-{year}-{level}.{format}")


@get("/reports/coverage-trend", include_in_schema=False)
async def coverage_trend_file(
    tx: Tx, reads: Reads, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Response[bytes]:
    """The rate over time of the caller's scope, as `GET /reports/coverage/trend?format=` answers it."""
    today = local_today(state.settings.timezone)
    raw_year = request.query_params.get("year", "")
    year = int(raw_year) if raw_year.isdigit() and len(raw_year) == 4 else today.year
    format = _format(request)
    trend = await coverage_trend.coverage_trend(tx, actor, year, today, reads=reads)
    body = coverage_trend.report_file(trend, format, "names", "utf-8")
    return _file(body, format, f"coverage-trend-{year}-{trend.level}.{format}")


@get("/reports/collections", guards=[COLLECTION_READERS], include_in_schema=False)
async def collections_file(
    tx: Tx, reads: Reads, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Response[bytes]:
    today = local_today(state.settings.timezone)
    date_to = parse_day(request.query_params.get("to"), today)
    date_from = parse_day(request.query_params.get("from"), date_to - timedelta(days=30))
    group = request.query_params.get("group")
    group = group if group in GROUPS else "collector"
    format = _format(request)
    report = await premium_reports.collections(tx, actor, group, date_from, date_to, reads=reads)  # type: ignore[arg-type]
    body = premium_reports.collections_file(report, format, "names", "utf-8")
    return _file(body, format, f"collections-{group}-{date_from}-{date_to}.{format}")


ROSTER_PAGE = 1000  # the API's largest page
ROSTER_MAX_ROWS = 50_000  # more in one request: the API's background job (`background=true`) makes the file


class RosterTooLarge(InvalidInput):
    """The roster is too large for one download here"""

    code = "validation_error"


@get("/reports/enrolment-roster", include_in_schema=False)
async def roster_file(
    tx: Tx, reads: Reads, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Response[bytes]:
    """参保人员花名册 of the caller's scope (a reviewer's township, the district), as
    `GET /reports/enrolment-roster?format=` answers it, page after page into one file."""
    today = local_today(state.settings.timezone)
    raw_year = request.query_params.get("year", "")
    year = int(raw_year) if raw_year.isdigit() and len(raw_year) == 4 else today.year
    format = _format(request)
    items: list[roster.RosterRow] = []
    after: str | None = None
    while True:
        found = await roster.enrolment_roster(tx, actor, year, today, after=after, limit=ROSTER_PAGE, reads=reads)
        items.extend(found.items)
        if found.next_cursor is None:
            break
        if len(items) >= ROSTER_MAX_ROWS:
            raise RosterTooLarge(
                "year",
                _(
                    "more than {rows} rows: ask for the file with GET /api/v1/reports/enrolment-roster?background=true",
                    rows=ROSTER_MAX_ROWS,
                ),
            )
        after = found.next_cursor
    body = await roster.roster_file(reads, actor, year, today, items, format, "names", "utf-8")
    return _file(body, format, f"enrolment-roster-{year}.{format}")


HANDLERS = [reports_page, coverage_file, coverage_trend_file, collections_file, roster_file]
