"""Civil affairs' screens: upload a list (the durable job's progress, its row report), a version with
its diff against the version before, claims to decide, exclusion reviews, and the subsidised
persons not enrolled, per village, with a download.

Each handler calls the service its API route calls, under that route's guards:
`POST /eligibility/lists` (here always as a job: `lists.enqueue_import`), `GET /jobs/{id}`,
`GET /eligibility/lists[/{id}[/diff]]`, `GET|POST /eligibility/claims…`,
`GET|POST /eligibility/exclusion-reviews…`, `GET /reports/subsidised-not-enrolled`.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template

from backend import reports as tables
from backend.actor import Actor, Role
from backend.clock import local_today
from backend.db import Connection
from backend.deps import CurrentActor, Tx
from backend.eligibility import claims, lists
from backend.eligibility import reports as list_reports
from backend.eligibility.importer import LIST_TYPES
from backend.eligibility.reports import Unenrolled
from backend.eligibility.routes import MAX_UPLOAD_BYTES, UPLOAD_TIMEOUT_S
from backend.enrollment import exclusions
from backend.enrollment.exclusions import ReviewDecision
from backend.guards import require_roles
from backend.i18n import N_, _
from backend.jobs import service as jobs
from backend.jobs.uploads import size_of, upload_slot
from backend.timeouts import TIMEOUT_OPT
from backend.web.pages import attempt, page, parse_day

CIVIL_AFFAIRS = require_roles(Role.CIVIL_AFFAIRS)  # as POST /eligibility/lists, the claim decisions
LIST_READERS = require_roles(Role.CIVIL_AFFAIRS, Role.DISTRICT_ADMIN)  # as GET /eligibility/lists
REVIEWERS = require_roles(Role.TOWNSHIP_REVIEWER)  # as POST /eligibility/exclusion-reviews/{id}/decide
RUNNING = ("queued", "running")
# Names of the codes these screens show (translated when shown: `_(words[code])`).
WORDS = {
    "added": N_("added"),
    "removed": N_("removed"),
    "changed": N_("changed"),
    "open": N_("open"),
    "cancelled": N_("enrolment cancelled"),
    "kept": N_("enrolment kept"),
}
DIFF_PAGE = 200
QUEUE_PAGE = 200
UNENROLLED_PAGE = 1000
UNENROLLED_MAX = 50_000  # a bigger scope downloads through the API's background export


def _year(request: Request[Any, Any, Any], default: int) -> int:
    raw = request.query_params.get("year", "")
    return int(raw) if raw.isdigit() and 2000 <= int(raw) <= 2100 else default


async def _lists_page(tx: Tx, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    found = await lists.versions(tx, actor, list_type=None, status=None, after=None, limit=100)
    today = local_today(request.app.state.settings.timezone)
    return page(
        request,
        "console/civil/lists.html",
        title=_("Civil-affairs lists"),
        versions=found.items,
        list_types=[*LIST_TYPES, lists.AUTO],
        today=today,
        may_upload=actor.role == Role.CIVIL_AFFAIRS,
        **context,
    )


@get("/lists", guards=[LIST_READERS], include_in_schema=False)
async def lists_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _lists_page(tx, actor, request)


@post(
    "/lists",
    guards=[CIVIL_AFFAIRS],
    include_in_schema=False,
    request_max_body_size=MAX_UPLOAD_BYTES,
    opt={TIMEOUT_OPT: UPLOAD_TIMEOUT_S},
    middleware=[upload_slot(UPLOAD_TIMEOUT_S)],
)
async def upload(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    """The upload as a durable job (`lists.enqueue_import`, what `POST /eligibility/lists` does with a
    big file or `background=true`): the page then follows the job's progress and shows its report."""
    form = await request.form()
    file = form.get("file")
    list_type = str(form.get("type") or "")
    supersedes = form.get("supersedes") == "yes"
    try:
        effective_from = date.fromisoformat(str(form.get("effective_from") or ""))
    except ValueError:
        effective_from = None
    error = None
    if not isinstance(file, UploadFile) or not file.filename:
        error = _("Choose a CSV or XLSX file.")
    elif list_type not in LIST_TYPES and list_type != lists.AUTO:
        error = _("Choose the list's type.")
    elif effective_from is None:
        error = _("Give the date the list is effective from.")
    if error is not None or not isinstance(file, UploadFile) or effective_from is None:
        return await _lists_page(tx, actor, request, error=error)
    source = file.file
    size = await asyncio.to_thread(size_of, source)
    params = lists.ListImportParams(list_type=list_type, effective_from=effective_from, supersedes=supersedes)
    job, error = await attempt(
        tx,
        lambda: lists.enqueue_import(
            tx,
            actor,
            source,
            params,
            file_name=file.filename or "upload",
            file_bytes=size,
            settings=state.settings,
        ),
    )
    if job is None:
        return await _lists_page(tx, actor, request, error=error)
    return Redirect(f"/console/jobs/{job.id}", status_code=303)


async def _job_context(tx: Connection, actor: Actor, job_id: UUID) -> dict[str, Any]:
    job = await jobs.get(tx, actor, job_id)
    result = job.result if isinstance(job.result, dict) else None
    versions = result.get("versions", []) if result and result.get("list_type") == lists.AUTO else [result]
    return {"job": job, "running": job.state in RUNNING, "versions": [v for v in versions if v]}


@get("/jobs/{job_id:uuid}", guards=[LIST_READERS], include_in_schema=False)
async def job_page(job_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    """A list import's progress (polled with htmx while it runs), then its row report or its version."""
    context = await _job_context(tx, actor, job_id)
    return page(request, "console/civil/job.html", title=_("List upload"), **context)


@get("/jobs/{job_id:uuid}/status", guards=[LIST_READERS], include_in_schema=False)
async def job_status(job_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    context = await _job_context(tx, actor, job_id)
    return page(request, "console/civil/job_status.html", title=_("List upload"), **context)


@get("/lists/{list_id:uuid}", guards=[LIST_READERS], include_in_schema=False)
async def version_page(
    list_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    """A version: its counts, its row report, and who was added, removed or changed against the
    version before it (`GET /eligibility/lists/{id}/diff`), a page at a time."""
    version = await lists.get_version(tx, actor, list_id)
    after = request.query_params.get("after") or None
    diff, error = await attempt(tx, lambda: lists.diff(tx, actor, list_id, None, after, DIFF_PAGE))
    return page(
        request,
        "console/civil/version.html",
        title=_("List version"),
        words=WORDS,
        version=version,
        diff=diff,
        error=error,
    )


# Claims ------------------------------------------------------------------------------------------


async def _claims_page(tx: Tx, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    status = request.query_params.get("status", "pending")
    status = status if status in ("pending", "accepted", "rejected") else "pending"
    found = await claims.claim_queue(
        tx, actor, status=status, category=None, year=None, village_code=None, after=None, limit=QUEUE_PAGE
    )
    names = await tables.division_names(tx, sorted({c.village_code for c in found.items}))
    return page(
        request,
        "console/civil/claims.html",
        title=_("Subsidy claims"),
        claims=found.items,
        status=status,
        names=names,
        may_decide=actor.role == Role.CIVIL_AFFAIRS,
        **context,
    )


@get("/claims", include_in_schema=False)
async def claims_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    """The decision queue (`GET /eligibility/claims`: every staff user, their own scope)."""
    return await _claims_page(tx, actor, request)


@post("/claims/{claim_id:uuid}/decide", guards=[CIVIL_AFFAIRS], include_in_schema=False)
async def decide_claim(
    claim_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    form = await request.form()
    accept = form.get("decision") == "accept"
    reason = str(form.get("reason") or "")[:500]
    if not accept and not reason.strip():
        return await _claims_page(tx, actor, request, error=_("Give the reason for rejecting the claim."))
    done, error = await attempt(tx, lambda: claims.decide_claim(tx, actor, claim_id, accept, reason))
    flash = None if done is None else (_("Claim accepted.") if accept else _("Claim rejected."))
    return await _claims_page(tx, actor, request, flash=flash, error=error)


# Exclusion reviews -------------------------------------------------------------------------------


async def _reviews_page(tx: Tx, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    status = request.query_params.get("status", "open")
    status = status if status in ("open", "cancelled", "kept") else "open"
    found = await exclusions.review_queue(tx, actor, status=status, year=None, after=None, limit=QUEUE_PAGE)
    names = await tables.division_names(tx, sorted({r.village_code for r in found.items}))
    return page(
        request,
        "console/civil/reviews.html",
        title=_("Exclusion reviews"),
        words=WORDS,
        reviews=found.items,
        status=status,
        names=names,
        may_decide=actor.role == Role.TOWNSHIP_REVIEWER,
        **context,
    )


@get("/exclusion-reviews", include_in_schema=False)
async def reviews_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    """Live enrolments of persons later listed as excluded (`GET /eligibility/exclusion-reviews`)."""
    return await _reviews_page(tx, actor, request)


@post("/exclusion-reviews/{review_id:uuid}/decide", guards=[REVIEWERS], include_in_schema=False)
async def decide_review(
    review_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    form = await request.form()
    note = str(form.get("note") or "")[:500]
    cancel = form.get("decision") == "cancel"
    data = ReviewDecision(decision="cancel" if cancel else "keep", note=note)
    done, error = await attempt(tx, lambda: exclusions.decide_review(tx, actor, review_id, data))
    flash = None if done is None else (_("Enrolment cancelled.") if cancel else _("Enrolment kept."))
    return await _reviews_page(tx, actor, request, flash=flash, error=error)


# Subsidised, not enrolled ------------------------------------------------------------------------


async def _unenrolled(tx: Connection, actor: Actor, year: int, on: date, village: str | None) -> list[Unenrolled]:
    """The whole list in the actor's scope (`GET /reports/subsidised-not-enrolled`, page by page), or
    one village's part of it."""
    items: list[Unenrolled] = []
    after = None
    while len(items) < UNENROLLED_MAX:
        found = await list_reports.subsidised_not_enrolled(tx, actor, year, on, after, UNENROLLED_PAGE)
        items += found.items
        after = found.next_cursor
        if after is None:
            break
    return [i for i in items if village is None or i.division_code == village]


def _village(request: Request[Any, Any, Any]) -> str | None:
    raw = request.query_params.get("village", "")
    return raw if len(raw) == 12 and raw.isdigit() else None


@get("/unenrolled", include_in_schema=False)
async def unenrolled_page(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    today = local_today(state.settings.timezone)
    year = _year(request, today.year)
    on = parse_day(request.query_params.get("as_of"), today)
    village = _village(request)
    items = await _unenrolled(tx, actor, year, on, None)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.division_code] = counts.get(item.division_code, 0) + 1
    codes = sorted(counts)
    names = await tables.division_names(tx, [*codes, *(tables.township_of(c) for c in codes)])
    shown = [i for i in items if i.division_code == village] if village else []
    return page(
        request,
        "console/civil/unenrolled.html",
        title=_("Subsidised persons not enrolled"),
        year=year,
        as_of=on,
        counts=[(code, names.get(tables.township_of(code), ""), names.get(code, ""), counts[code]) for code in codes],
        total=len(items),
        village=village,
        village_name=names.get(village or "", ""),
        shown=shown,
        truncated=len(items) >= UNENROLLED_MAX,
    )


@get("/unenrolled/file", include_in_schema=False)
async def unenrolled_download(
    tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Response[bytes]:
    """The list (or one village's part) as the API's CSV or XLSX (`format=csv|xlsx`)."""
    today = local_today(state.settings.timezone)
    year = _year(request, today.year)
    on = parse_day(request.query_params.get("as_of"), today)
    village = _village(request)
    format: tables.Format = "csv" if request.query_params.get("format") == "csv" else "xlsx"
    items = await _unenrolled(tx, actor, year, on, village)
    body = await list_reports.unenrolled_file(tx, actor, year, on, items, format, "names", "utf-8")
    name = f"subsidised-not-enrolled-{year}{'-' + village if village else ''}.{format}"
    return Response(
        body,
        media_type=tables.response_media_type(format),
        encoding=tables.charset("utf-8"),
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


HANDLERS = [
    lists_page,
    upload,
    job_page,
    job_status,
    version_page,
    claims_page,
    decide_claim,
    reviews_page,
    decide_review,
    unenrolled_page,
    unenrolled_download,
]
