"""`/api/v1/households`, `/api/v1/moves`, `/api/v1/enrollments`, `/api/v1/renewals`,
`/api/v1/reports/coverage`, `/api/v1/reports/coverage/trend`, `/api/v1/reports/enrolment-roster`,
`/api/v1/eligibility/exclusion-reviews`."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, get, patch, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from backend import fields, idempotency, reports
from backend.actor import STAFF_ROLES, Role
from backend.audit import service as audit_service
from backend.audit.service import AuditPage
from backend.clock import local_today
from backend.deps import Autocommit, CurrentActor, Reads, Tx
from backend.enrollment import (
    coverage_report,
    coverage_trend,
    enrollments,
    exclusions,
    households,
    members,
    moves,
    quotes,
    roster,
    slips,
)
from backend.enrollment import search as household_search
from backend.enrollment.enrollments import (
    CancelRequest,
    ConfirmRequest,
    Enrolled,
    Enrollment,
    EnrollmentCreate,
    EnrollmentPage,
    GapReviewDecision,
    RenewalPage,
    RenewalRequest,
    Renewed,
)
from backend.enrollment.exclusions import ExclusionReview, ExclusionReviewPage, ReviewDecision
from backend.enrollment.households import (
    Household,
    HouseholdCreate,
    HouseholdCreated,
    HouseholdUpdate,
    MemberIn,
    MemberUpdate,
)
from backend.enrollment.members import MemberRemove
from backend.enrollment.moves import Move, MoveDecision, MoveIn, MovePage
from backend.enrollment.quotes import PremiumQuote
from backend.enrollment.search import HouseholdPage, HouseholdSearch
from backend.errors import PreconditionFailed
from backend.guards import require_roles
from backend.i18n import _
from backend.jobs import service as jobs
from backend.jobs.service import Job
from backend.printing.responses import PDF, PDF_RESPONSE, pdf_response

HOUSEHOLDS_ROUTE = "POST /api/v1/households"
TOWNSHIP_WRITERS = require_roles(Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER)
STAFF = require_roles(*STAFF_ROLES)  # each reads within their own scope
YearQuery = Annotated[int, QueryParameter(ge=2000, le=2100, description="coverage year")]
OptionalYear = Annotated[int | None, QueryParameter(ge=2000, le=2100, description="coverage year")]
# Required (a missing one is a 428, answered by the service); the rules are the document's only.
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="the household's ETag",
        required=True,
        schema_extra={"pattern": r'^\s*(W/)?"?[0-9]+"?\s*$'},
    ),
]
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", schema_extra=idempotency.KEY_SCHEMA)]
Limit = Annotated[int, QueryParameter(ge=1, le=500)]
ReviewLimit = Annotated[int, QueryParameter(ge=1, le=1000)]
VillageQuery = Annotated[str | None, QueryParameter(pattern=fields.DIVISION_CODE)]


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    try:
        return int(tag)
    except ValueError:
        raise PreconditionFailed(_("If-Match is not an ETag of this API")) from None


def _with_etag(household: Household, status_code: int = 200) -> Response[Household]:
    return Response(household, status_code=status_code, headers={"ETag": f'"{household.row_version}"'})


class HouseholdController(Controller):
    path = "/api/v1/households"
    tags = ["households"]

    @post(
        "/",
        summary="Create a household with its members (and enrol them for `enrol_year`), in one request",
        description="With an `Idempotency-Key` header, a retry of the same request (an answer lost on a poor "
        "connection) gets the first answer again, query code included, with `Idempotent-Replayed: true`.",
        guards=[TOWNSHIP_WRITERS],
        responses={201: ResponseSpec(HouseholdCreated, description="The household; a replay gives it again")},
    )
    async def create(
        self,
        data: JSONBody[HouseholdCreate],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        key = None if idempotency_key is None else idempotency.check_key(idempotency_key)
        if key is not None:
            digest = idempotency.request_hash(HOUSEHOLDS_ROUTE, data)
            stored = await idempotency.claim(tx, actor.id, key, HOUSEHOLDS_ROUTE, digest)
            if stored is not None:
                return stored.replayed()
        today = local_today(state.settings.timezone)
        created = await households.with_continuity(
            tx, await households.register_household(tx, actor, data, today, state.key.secret), today
        )
        body = msgspec.json.encode(created)
        if key is not None:
            await idempotency.store(tx, actor.id, key, 201, body)
        return Response(
            body, status_code=201, media_type="application/json", headers={"ETag": f'"{created.row_version}"'}
        )

    @post("/search", status_code=200, summary="Search households (identity numbers go in the body)")
    async def search(
        self, data: JSONBody[HouseholdSearch], autocommit: Autocommit, actor: CurrentActor, state: State
    ) -> HouseholdPage:
        # One statement and its audit row: no transaction around them (backend.audit.denied.provide_autocommit).
        return await household_search.search(autocommit, actor, data, local_today(state.settings.timezone))

    @get(
        "/{household_id:uuid}",
        summary="A household with its members, their enrolments of this year and next (`enrollments`), "
        "and of `year` (`enrollment`), and their continuous years of basic insurance (`continuity`)",
    )
    async def get_household(
        self, household_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, year: OptionalYear = None
    ) -> Response[Household]:
        today = local_today(state.settings.timezone)
        return _with_etag(await households.get_household(tx, actor, household_id, year, today))

    @patch("/{household_id:uuid}", summary="Edit a household (If-Match required)", guards=[TOWNSHIP_WRITERS])
    async def update(
        self,
        household_id: FromPath[UUID],
        data: JSONBody[HouseholdUpdate],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Household]:
        today = local_today(state.settings.timezone)
        updated = await households.update_household(tx, actor, household_id, _if_match(if_match), data)
        return _with_etag(await households.with_continuity(tx, updated, today))

    @post("/{household_id:uuid}/members", summary="Add a member (If-Match required)", guards=[TOWNSHIP_WRITERS])
    async def add_member(
        self,
        household_id: FromPath[UUID],
        data: JSONBody[MemberIn],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Household]:
        today = local_today(state.settings.timezone)
        added = await members.add_member(tx, actor, household_id, _if_match(if_match), data, today)
        return _with_etag(await households.with_continuity(tx, added, today), 201)

    @patch(
        "/{household_id:uuid}/members/{person_id:uuid}",
        summary="Edit a member (If-Match required)",
        guards=[TOWNSHIP_WRITERS],
    )
    async def update_member(
        self,
        household_id: FromPath[UUID],
        person_id: FromPath[UUID],
        data: JSONBody[MemberUpdate],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Household]:
        today = local_today(state.settings.timezone)
        updated = await members.update_member(tx, actor, household_id, person_id, _if_match(if_match), data, today)
        return _with_etag(await households.with_continuity(tx, updated, today))

    @post(
        "/{household_id:uuid}/members/{person_id:uuid}/remove",
        status_code=200,
        summary="Remove a member, with a reason (If-Match required)",
        guards=[TOWNSHIP_WRITERS],
    )
    async def remove_member(
        self,
        household_id: FromPath[UUID],
        person_id: FromPath[UUID],
        data: JSONBody[MemberRemove],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Household]:
        today = local_today(state.settings.timezone)
        removed = await members.remove_member(tx, actor, household_id, person_id, _if_match(if_match), data, today)
        return _with_etag(await households.with_continuity(tx, removed, today))

    @post(
        "/{household_id:uuid}/members/{person_id:uuid}/move",
        status_code=200,
        summary="Move a member to another household; across townships the receiver accepts",
        guards=[TOWNSHIP_WRITERS],
    )
    async def move_member(
        self,
        household_id: FromPath[UUID],
        person_id: FromPath[UUID],
        data: JSONBody[MoveIn],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        if_match: IfMatch = None,
    ) -> Move:
        today = local_today(state.settings.timezone)
        return await moves.move_member(tx, actor, household_id, person_id, _if_match(if_match), data, today)

    @get("/{household_id:uuid}/premium", summary="Premium, subsidy, amount due and paid per member, in fen")
    async def premium(
        self, household_id: FromPath[UUID], year: YearQuery, tx: Tx, actor: CurrentActor, state: State
    ) -> PremiumQuote:
        today = local_today(state.settings.timezone)
        return await quotes.premium_quote(tx, actor, household_id, year, today)

    @get(
        "/{household_id:uuid}/audit",
        summary="The household's audit trail, newest first: rows about it, its enrolments and its payments "
        "(keyset pagination by `before`); for staff whose scope holds the household",
    )
    async def audit(
        self,
        household_id: FromPath[UUID],
        tx: Tx,
        actor: CurrentActor,
        before: Annotated[int | None, QueryParameter(ge=1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        return await audit_service.household_trail(tx, actor, household_id, before, limit)


class MoveController(Controller):
    path = "/api/v1/moves"
    tags = ["households"]

    @get("/", summary="Moves into or out of your scope")
    async def list_moves(
        self,
        tx: Tx,
        actor: CurrentActor,
        status: FromQuery[Literal["pending", "accepted", "rejected", "cancelled"] | None] = None,
        after: FromQuery[UUID | None] = None,
        limit: Limit = 100,
    ) -> MovePage:
        return await moves.list_moves(tx, actor, status, after, limit)

    @post(
        "/{move_id:uuid}/accept", status_code=200, summary="Accept a move into your township", guards=[TOWNSHIP_WRITERS]
    )
    async def accept(
        self, move_id: FromPath[UUID], data: JSONBody[MoveDecision], tx: Tx, actor: CurrentActor, state: State
    ) -> Move:
        today = local_today(state.settings.timezone)
        return await moves.decide_move(tx, actor, move_id, True, data.reason, today)

    @post(
        "/{move_id:uuid}/reject", status_code=200, summary="Reject a move into your township", guards=[TOWNSHIP_WRITERS]
    )
    async def reject(
        self, move_id: FromPath[UUID], data: JSONBody[MoveDecision], tx: Tx, actor: CurrentActor, state: State
    ) -> Move:
        today = local_today(state.settings.timezone)
        return await moves.decide_move(tx, actor, move_id, False, data.reason, today)


class EnrollmentController(Controller):
    path = "/api/v1/enrollments"
    tags = ["enrollments"]

    @post("/", summary="Enrol members of a household for a year", guards=[TOWNSHIP_WRITERS])
    async def enrol(self, data: JSONBody[EnrollmentCreate], tx: Tx, actor: CurrentActor, state: State) -> Enrolled:
        today = local_today(state.settings.timezone)
        return await enrollments.enrol(tx, actor, data, today, state.key.secret)

    @post(
        "/query-code.pdf",
        summary="Enrol members of a household for a year and print the slip with the household's query code",
        description="The same enrolment as `POST /api/v1/enrollments`, answered with the printable slip (PDF): "
        "the members enrolled and, when this enrolment issues it, the household's query code for the year. "
        "The code is shown only here (and on receipts); the database keeps only its keyed hash.",
        guards=[TOWNSHIP_WRITERS],
        media_type=PDF,
        responses={201: PDF_RESPONSE},
    )
    async def enrol_with_slip(
        self, data: JSONBody[EnrollmentCreate], tx: Tx, actor: CurrentActor, state: State
    ) -> Response[bytes]:
        today = local_today(state.settings.timezone)
        enrolled = await enrollments.enrol(tx, actor, data, today, state.key.secret)
        body = await slips.query_code_slip(tx, actor, data, enrolled, today)
        return pdf_response(body, f"query-code-{data.household_id}-{data.coverage_year}.pdf", status_code=201)

    @get("/", summary="Enrolments of a year in your scope: the review queue")
    async def queue(
        self,
        tx: Tx,
        actor: CurrentActor,
        state: State,
        year: YearQuery,
        status: FromQuery[Literal["registered", "paid", "subsidised", "confirmed", "cancelled"] | None] = None,
        village_code: VillageQuery = None,
        household_id: FromQuery[UUID | None] = None,
        after: FromQuery[UUID | None] = None,
        limit: Limit = 100,
        flag: Annotated[
            enrollments.QueueFlag | None,
            QueryParameter(
                description="only those for a reviewer: with `unknown_years` listed, or an open `gap_review`"
            ),
        ] = None,
    ) -> EnrollmentPage:
        return await enrollments.queue(
            tx,
            actor,
            year=year,
            status=status,
            village_code=village_code,
            household_id=household_id,
            after=after,
            limit=limit,
            flag=flag,
            today=local_today(state.settings.timezone),
        )

    @get("/{enrollment_id:uuid}", summary="An enrolment")
    async def get_enrollment(self, enrollment_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Enrollment:
        return await enrollments.get(tx, actor, enrollment_id)

    @post(
        "/confirm",
        status_code=200,
        summary="Confirm paid or subsidised enrolments (all or nothing)",
        guards=[require_roles(Role.TOWNSHIP_REVIEWER)],
    )
    async def confirm(self, data: JSONBody[ConfirmRequest], tx: Tx, actor: CurrentActor) -> EnrollmentPage:
        return EnrollmentPage(items=await enrollments.confirm(tx, actor, data.ids), next_cursor=None)

    @post(
        "/{enrollment_id:uuid}/gap-review",
        status_code=200,
        summary="Decide a gap review: apply the cover as known now, or keep the cover (with a note)",
        description="A history import that changes what is known of the years before a funded enrolment's "
        "coverage year never changes its cover: it opens a `gap_review` with the cover it would have now.",
        guards=[require_roles(Role.TOWNSHIP_REVIEWER)],
    )
    async def decide_gap_review(
        self, enrollment_id: FromPath[UUID], data: JSONBody[GapReviewDecision], tx: Tx, actor: CurrentActor
    ) -> Enrollment:
        return await enrollments.decide_gap_review(tx, actor, enrollment_id, data)

    @post(
        "/{enrollment_id:uuid}/cancel",
        status_code=200,
        summary="Cancel an enrolment with a reason code",
        guards=[TOWNSHIP_WRITERS],
    )
    async def cancel(
        self, enrollment_id: FromPath[UUID], data: JSONBody[CancelRequest], tx: Tx, actor: CurrentActor
    ) -> Enrollment:
        return await enrollments.cancel(tx, actor, enrollment_id, data)


class RenewalController(Controller):
    path = "/api/v1/renewals"
    tags = ["enrollments"]

    @get("/", summary="Last year's members not yet enrolled this year (续保 roster)")
    async def candidates(
        self,
        tx: Tx,
        actor: CurrentActor,
        year: YearQuery,
        village_code: VillageQuery = None,
        after: FromQuery[UUID | None] = None,
        limit: Limit = 200,
    ) -> RenewalPage:
        return await enrollments.renewal_candidates(tx, actor, year, village_code, after, limit)

    @post("/", summary="Enrol a chosen set of last year's members", guards=[TOWNSHIP_WRITERS])
    async def renew(self, data: JSONBody[RenewalRequest], tx: Tx, actor: CurrentActor, state: State) -> Renewed:
        today = local_today(state.settings.timezone)
        return await enrollments.renew(tx, actor, data, today, state.key.secret)


class ReportController(Controller):
    path = "/api/v1/reports"
    tags = ["reports"]

    @get(
        "/coverage",
        summary="应保尽保: persons, funded, registered but unpaid, confirmed and rate per division (JSON, CSV, XLSX)",
        description="Every staff user reads the report of their own scope (township staff and reviewers: "
        "their township's villages). The rate is of funded persons (paid, subsidised, confirmed) only.",
        responses={202: ResponseSpec(Job, description="With background=true: a job makes the report a file")},
        guards=[STAFF],
    )
    async def coverage(
        self,
        tx: Tx,
        reads: Reads,
        actor: CurrentActor,
        state: State,
        year: YearQuery,
        level: FromQuery[Literal["village", "township", "district"]] = "village",
        format: FromQuery[Literal["json", "csv", "xlsx"]] = "json",
        background: Annotated[
            bool, QueryParameter(description="the report as a file made by a job (202), for big scopes")
        ] = False,
        column_headers: reports.HeadersQuery = "names",
        encoding: reports.EncodingQuery = "utf-8",
    ) -> Response[Any]:
        if background:
            params = coverage_report.CoverageExport(
                coverage_year=year, level=level, format=format, headers=column_headers, encoding=encoding
            )
            job = await jobs.enqueue(
                tx,
                actor,
                coverage_report.COVERAGE_EXPORT,
                msgspec.to_builtins(params),
                division_code=actor.scope.division_code,
                settings=state.settings,
            )
            return Response(job, status_code=202, headers={"Location": job.href})
        today = local_today(state.settings.timezone)
        report = await coverage_report.coverage_report(tx, actor, year, level, today, reads=reads)
        if format == "json":
            return Response(report)
        return Response(
            coverage_report.report_file(report, format, column_headers, encoding),
            media_type=reports.response_media_type(format),
            encoding=reports.charset(encoding),
            headers={"Content-Disposition": f'attachment; filename="coverage-{year}-{level}.{format}"'},
        )

    @get(
        "/coverage/trend",
        summary="应保尽保 over time: per division and ISO week, persons funded by the week's end and the rate "
        "against today's persons (JSON, CSV, XLSX)",
        description="按缴费日期累计的参保率（分母为当前应参保人数）: no history of the report is kept, so each week "
        "counts today's live funded enrolments (paid, subsidised, confirmed) by the date they were funded, "
        "against the persons who should be enrolled today. Default level: a district's townships, a "
        "township's villages. Every staff user reads their own scope, as with `/reports/coverage`.",
        guards=[STAFF],
    )
    async def coverage_over_time(
        self,
        tx: Tx,
        reads: Reads,
        actor: CurrentActor,
        state: State,
        year: YearQuery,
        level: FromQuery[Literal["village", "township", "district"] | None] = None,
        format: FromQuery[Literal["json", "csv", "xlsx"]] = "json",
        column_headers: reports.HeadersQuery = "names",
        encoding: reports.EncodingQuery = "utf-8",
    ) -> Response[Any]:
        today = local_today(state.settings.timezone)
        trend = await coverage_trend.coverage_trend(tx, actor, year, today, level, reads=reads)
        if format == "json":
            return Response(trend)
        return Response(
            coverage_trend.report_file(trend, format, column_headers, encoding),
            media_type=reports.response_media_type(format),
            encoding=reports.charset(encoding),
            headers={"Content-Disposition": f'attachment; filename="coverage-trend-{year}-{trend.level}.{format}"'},
        )

    @get(
        "/enrolment-roster",
        summary="参保人员花名册: every enrolment of the year in your scope, a row per person (JSON, CSV, XLSX)",
        description="By village, household number and person: masked ID number, relation, status, cover, "
        "premium, subsidy and paid (yuan for people, fen with `headers=codes`), continuous years of basic "
        "insurance and, under a policy with the incentive, the serious-illness ceiling of persons covered. "
        "Township staff and reviewers read their township, district users the district.",
        responses={202: ResponseSpec(Job, description="With background=true: a job makes the whole roster one file")},
        guards=[STAFF],
    )
    async def enrolment_roster(
        self,
        tx: Tx,
        reads: Reads,
        actor: CurrentActor,
        state: State,
        year: YearQuery,
        village_code: VillageQuery = None,
        status: FromQuery[enrollments.Status | None] = None,
        after: Annotated[
            str | None,
            QueryParameter(max_length=roster.CURSOR_MAX_LENGTH, description="the next_cursor of the page before"),
        ] = None,
        limit: ReviewLimit = 1000,
        format: FromQuery[Literal["json", "csv", "xlsx"]] = "json",
        background: Annotated[
            bool, QueryParameter(description="the whole roster as one file (json, csv or xlsx), made by a job (202)")
        ] = False,
        column_headers: reports.HeadersQuery = "names",
        encoding: reports.EncodingQuery = "utf-8",
    ) -> Response[Any]:
        today = local_today(state.settings.timezone)
        if background:
            params = roster.RosterExport(
                coverage_year=year,
                village_code=village_code,
                status=status,
                format=format,
                headers=column_headers,
                encoding=encoding,
            )
            job = await jobs.enqueue(
                tx,
                actor,
                roster.ROSTER_EXPORT,
                msgspec.to_builtins(params),
                division_code=actor.scope.division_code,
                settings=state.settings,
            )
            return Response(job, status_code=202, headers={"Location": job.href})
        page = await roster.enrolment_roster(
            tx, actor, year, today, village_code=village_code, status=status, after=after, limit=limit, reads=reads
        )
        if format == "json":
            return Response(page)
        body = await roster.roster_file(reads, actor, year, today, page.items, format, column_headers, encoding)
        return Response(
            body,
            media_type=reports.response_media_type(format),
            encoding=reports.charset(encoding),
            headers={"Content-Disposition": f'attachment; filename="enrolment-roster-{year}.{format}"'},
        )


class ExclusionReviewController(Controller):
    path = "/api/v1/eligibility/exclusion-reviews"
    tags = ["eligibility"]

    @get("/", summary="Live enrolments of persons who appeared on an exclusion list later")
    async def queue(
        self,
        tx: Tx,
        actor: CurrentActor,
        status: FromQuery[Literal["open", "cancelled", "kept"] | None] = None,
        year: OptionalYear = None,
        after: FromQuery[UUID | None] = None,
        limit: ReviewLimit = 100,
    ) -> ExclusionReviewPage:
        return await exclusions.review_queue(tx, actor, status=status, year=year, after=after, limit=limit)

    @post(
        "/{review_id:uuid}/decide",
        status_code=200,
        summary="Cancel the enrolment or keep it, with a note",
        guards=[require_roles(Role.TOWNSHIP_REVIEWER)],
    )
    async def decide(
        self, review_id: FromPath[UUID], data: JSONBody[ReviewDecision], tx: Tx, actor: CurrentActor
    ) -> ExclusionReview:
        return await exclusions.decide_review(tx, actor, review_id, data)
