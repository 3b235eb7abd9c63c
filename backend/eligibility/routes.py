"""`/api/v1/eligibility`: list uploads and versions, the eligibility check, claims, exclusion reviews."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, FromQuery, JSONBody, QueryParameter

from backend import fields, reports
from backend.actor import Role
from backend.api_docs.openapi import RAISES
from backend.clock import local_today
from backend.config import Settings
from backend.deps import CurrentActor, Reads, Tx
from backend.eligibility import check, claims, cursor, lists
from backend.eligibility import reports as list_reports
from backend.eligibility.check import CheckRequest, EligibilityAnswer
from backend.eligibility.claims import Claim, ClaimDecision, ClaimIn, ClaimPage
from backend.eligibility.lists import ListDiff, ListEntryPage, ListRejected, ListSplit, ListVersion, ListVersionPage
from backend.errors import problem
from backend.guards import require_roles
from backend.i18n import _
from backend.jobs import service as jobs
from backend.jobs.service import Job
from backend.jobs.uploads import size_of, upload_slot
from backend.tabular import CellLimitExceeded, LimitExceeded
from backend.timeouts import TIMEOUT_OPT

FILE_LIMITS = (LimitExceeded, CellLimitExceeded)  # raised while the file is read (backend/tabular.py)
CIVIL_AFFAIRS = require_roles(Role.CIVIL_AFFAIRS)
LIST_READERS = require_roles(Role.CIVIL_AFFAIRS, Role.DISTRICT_ADMIN)
TOWNSHIP_WRITERS = require_roles(Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER)
Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
OptionalYear = Annotated[int | None, QueryParameter(ge=2000, le=2100, description="coverage year")]
YearQuery = Annotated[int, QueryParameter(ge=2000, le=2100, description="coverage year")]
VillageQuery = Annotated[str | None, QueryParameter(pattern=fields.DIVISION_CODE)]
ListTypeQuery = Annotated[str | None, QueryParameter(pattern=fields.LIST_TYPE)]
CursorQuery = Annotated[
    str | None, QueryParameter(max_length=cursor.MAX_LENGTH, description="the next_cursor of the page before")
]
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # a million-row list is about 60 MB as CSV
UPLOAD_TIMEOUT_S = 1_800  # 512 MB over a slow township line; loading a big file is a job's work


@dataclass
class ListUpload:
    file: UploadFile
    type: str  # a list type, or `auto`: a mixed file split by its category column
    effective_from: date
    partial: bool = False
    supersedes: bool = False  # replaces the versions dated after effective_from (else 409)
    year: int | None = None  # the year a settlement-system list (zero_reimbursement) is about


class ListController(Controller):
    path = "/api/v1/eligibility/lists"
    tags = ["eligibility"]

    @post(
        "/",
        summary="Upload a civil-affairs list (CSV or XLSX) as a new version (civil_affairs)",
        description=(
            "A file up to CANBAO_SYNC_UPLOAD_MAX_BYTES (1 MiB) loads in the request: 201 with the version, "
            "or 422 `list_rejected` with the row report. A bigger file, or any file with `background=true`, "
            "is stored and imported by a worker: 202 with the job (`Location: /api/v1/jobs/{id}`), whose "
            "result is the same version and report. A category column (类别, 人员类别, …) must name the "
            "type on every row; `type=auto` splits a mixed file by it into one version per type (201 with "
            "`versions`), all or nothing. An effective date before the version in force's is refused "
            "(409 `list_version_in_force`, naming it) unless `supersedes=true`."
        ),
        guards=[CIVIL_AFFAIRS],
        request_max_body_size=MAX_UPLOAD_BYTES,
        opt={TIMEOUT_OPT: UPLOAD_TIMEOUT_S, RAISES: FILE_LIMITS},
        middleware=[upload_slot(UPLOAD_TIMEOUT_S)],
        responses={
            201: ResponseSpec(
                ListVersion | ListSplit,
                description="The version, or a mixed file's versions (type auto)",
                generate_examples=False,
            ),
            202: ResponseSpec(Job, description="Stored; a worker imports it (follow the job)"),
        },
    )
    async def upload(
        self,
        data: Annotated[ListUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        request: Request[Any, Any, Any],
        background: FromQuery[bool | None] = None,
    ) -> Response[Any]:
        settings: Settings = state.settings
        source = data.file.file
        size = await asyncio.to_thread(size_of, source)
        if background or (background is None and size > settings.sync_upload_max_bytes):
            params = lists.ListImportParams(
                list_type=data.type,
                effective_from=data.effective_from,
                partial=data.partial,
                supersedes=data.supersedes,
                year=data.year,
            )
            job = await lists.enqueue_import(
                tx,
                actor,
                source,
                params,
                file_name=data.file.filename or "upload",
                file_bytes=size,
                settings=settings,
            )
            return Response(job, status_code=202, headers={"Location": job.href})
        loaded = await lists.import_file(
            tx,
            actor,
            source,
            list_type=data.type,
            effective_from=data.effective_from,
            file_name=data.file.filename or "upload",
            today=local_today(settings.timezone),
            partial=data.partial,
            supersedes=data.supersedes,
            year=data.year,
        )
        if isinstance(loaded, ListVersion) and loaded.status == "rejected":
            # Answered, not raised: the rejected version and its report are kept (committed).
            return problem(
                ListRejected.status,
                ListRejected.code,
                _(ListRejected.title()),
                ListRejected.explain(loaded),
                request,
                list_id=str(loaded.id),
                errors=[
                    # `message` is the row as people read it ("第 42 行 公民身份号码：…"); the
                    # column stays as the file names it, so a client can place the problem.
                    {
                        "row": e.row,
                        "column": e.column,
                        "problem": e.problem,
                        "message": _("Row {row}, {column}: {problem}", row=e.row, column=e.column, problem=e.problem),
                    }
                    for e in loaded.errors
                ],
            )
        return Response(loaded, status_code=201)

    @get("/", summary="List versions in your scope, newest first", guards=[LIST_READERS])
    async def list_versions(
        self,
        tx: Tx,
        actor: CurrentActor,
        type: ListTypeQuery = None,
        status: FromQuery[Literal["loaded", "rejected"] | None] = None,
        after: FromQuery[UUID | None] = None,
        limit: Limit = 100,
    ) -> ListVersionPage:
        return await lists.versions(tx, actor, list_type=type, status=status, after=after, limit=limit)

    @get("/{list_id:uuid}", summary="A list version: status, counts, errors, diff counts", guards=[LIST_READERS])
    async def get_version(self, list_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> ListVersion:
        return await lists.get_version(tx, actor, list_id)

    @get("/{list_id:uuid}/entries", summary="A version's rows in your scope", guards=[LIST_READERS])
    async def entries(
        self,
        list_id: FromPath[UUID],
        tx: Tx,
        actor: CurrentActor,
        after_row: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Limit = 500,
    ) -> ListEntryPage:
        return await lists.entries(tx, actor, list_id, after_row, limit)

    @get(
        "/{list_id:uuid}/diff",
        summary="Persons added, removed and changed against another version (default: the one before)",
        guards=[LIST_READERS],
    )
    async def diff(
        self,
        list_id: FromPath[UUID],
        tx: Tx,
        actor: CurrentActor,
        against: FromQuery[UUID | None] = None,
        after: CursorQuery = None,
        limit: Limit = 500,
    ) -> ListDiff:
        return await lists.diff(tx, actor, list_id, against, after, limit)


class EligibilityController(Controller):
    path = "/api/v1/eligibility"
    tags = ["eligibility"]

    @post("/check", status_code=200, summary="Eligibility of up to 10,000 persons (ID numbers in the body)")
    async def check(self, data: JSONBody[CheckRequest], tx: Tx, actor: CurrentActor, state: State) -> EligibilityAnswer:
        return await check.check(tx, actor, data, local_today(state.settings.timezone))


class ClaimController(Controller):
    path = "/api/v1/eligibility/claims"
    tags = ["eligibility"]

    @post("/", summary="Claim a subsidy category for a person missing from the lists", guards=[TOWNSHIP_WRITERS])
    async def raise_claim(self, data: JSONBody[ClaimIn], tx: Tx, actor: CurrentActor, state: State) -> Claim:
        return await claims.raise_claim(tx, actor, data, local_today(state.settings.timezone))

    @get("/", summary="Claims in your scope: the decision queue")
    async def queue(
        self,
        tx: Tx,
        actor: CurrentActor,
        status: FromQuery[Literal["pending", "accepted", "rejected"] | None] = None,
        category: ListTypeQuery = None,
        year: OptionalYear = None,
        village_code: VillageQuery = None,
        after: FromQuery[UUID | None] = None,
        limit: Limit = 100,
    ) -> ClaimPage:
        return await claims.claim_queue(
            tx,
            actor,
            status=status,
            category=category,
            year=year,
            village_code=village_code,
            after=after,
            limit=limit,
        )

    @get("/{claim_id:uuid}", summary="A claim")
    async def get_claim(self, claim_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Claim:
        return await claims.get_claim(tx, actor, claim_id)

    @post("/{claim_id:uuid}/accept", status_code=200, summary="Accept a claim (civil_affairs)", guards=[CIVIL_AFFAIRS])
    async def accept(
        self, claim_id: FromPath[UUID], data: JSONBody[ClaimDecision], tx: Tx, actor: CurrentActor
    ) -> Claim:
        return await claims.decide_claim(tx, actor, claim_id, True, data.reason)

    @post(
        "/{claim_id:uuid}/reject",
        status_code=200,
        summary="Reject a claim with a reason (civil_affairs)",
        guards=[CIVIL_AFFAIRS],
    )
    async def reject(
        self, claim_id: FromPath[UUID], data: JSONBody[ClaimDecision], tx: Tx, actor: CurrentActor
    ) -> Claim:
        return await claims.decide_claim(tx, actor, claim_id, False, data.reason)


class EligibilityReportController(Controller):
    path = "/api/v1/reports"
    tags = ["reports"]

    @get(
        "/subsidised-not-enrolled",
        summary="Persons on subsidy lists not enrolled for the year (JSON, CSV, XLSX)",
        responses={202: ResponseSpec(Job, description="With background=true: a job makes the whole list one file")},
    )
    async def subsidised_not_enrolled(
        self,
        tx: Tx,
        reads: Reads,
        actor: CurrentActor,
        state: State,
        year: YearQuery,
        as_of: FromQuery[date | None] = None,
        after: CursorQuery = None,
        limit: Limit = 1000,
        format: FromQuery[Literal["json", "csv", "xlsx"]] = "json",
        background: Annotated[
            bool, QueryParameter(description="the whole list as one file (json, csv or xlsx), made by a job (202)")
        ] = False,
        column_headers: reports.HeadersQuery = "names",
        encoding: reports.EncodingQuery = "utf-8",
    ) -> Response[Any]:
        on = as_of or local_today(state.settings.timezone)
        if background:
            params = list_reports.UnenrolledExport(
                coverage_year=year, as_of=on, format=format, headers=column_headers, encoding=encoding
            )
            job = await jobs.enqueue(
                tx,
                actor,
                list_reports.UNENROLLED_EXPORT,
                msgspec.to_builtins(params),
                division_code=actor.scope.division_code,
                settings=state.settings,
            )
            return Response(job, status_code=202, headers={"Location": job.href})
        page = await list_reports.subsidised_not_enrolled(tx, actor, year, on, after, limit, reads=reads)
        if format == "json":
            return Response(page)
        body = await list_reports.unenrolled_file(reads, actor, year, on, page.items, format, column_headers, encoding)
        return Response(
            body,
            media_type=reports.response_media_type(format),
            encoding=reports.charset(encoding),
            headers={"Content-Disposition": f'attachment; filename="subsidised-not-enrolled-{year}.{format}"'},
        )
