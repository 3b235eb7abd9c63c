"""`/api/v1/jobs`: the work handed off by uploads — its state, progress and result; cancelling it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from backend import fields
from backend.actor import STAFF_ROLES
from backend.deps import CurrentActor, Tx
from backend.guards import require_roles
from backend.jobs import service
from backend.jobs.service import Job, JobPage, JobState

STAFF = require_roles(*STAFF_ROLES)


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ["jobs"]
    guards = [STAFF]

    @get("/", summary="Your jobs (and, for reviewers and officers, those of your scope), newest first")
    async def list_jobs(
        self,
        tx: Tx,
        actor: CurrentActor,
        job_state: Annotated[JobState | None, QueryParameter(name="state")] = None,
        kind: Annotated[str | None, QueryParameter(pattern=fields.JOB_KIND)] = None,
        before: FromQuery[UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> JobPage:
        return await service.page(tx, actor, state=job_state, kind=kind, before=before, limit=limit)

    @get("/{job_id:uuid}", summary="A job: state, progress (counts), and its result or row report when done")
    async def get_job(self, job_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Job:
        return await service.get(tx, actor, job_id)

    @get(
        "/{job_id:uuid}/output",
        summary="The file an export job produced (CSV or XLSX); every download is audited",
        responses={200: ResponseSpec(bytes, description="The file", media_type="application/octet-stream")},
    )
    async def output(self, job_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Response[bytes]:
        made, pieces = await service.output(tx, actor, job_id)
        return Response(
            b"".join(pieces),
            media_type=made.media_type,
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(made.name)}"},
        )

    @post("/{job_id:uuid}/cancel", status_code=200, summary="Cancel a job: all its work is rolled back")
    async def cancel(self, job_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Job:
        return await service.cancel(tx, actor, job_id)
