"""Durable jobs: work a request hands off (a list import, a history import, a reconciliation)
stored in PostgreSQL with its upload, run by worker processes, seen through `/api/v1/jobs`.

A job row is both what people see and the queue entry workers claim, so a job's state never
disagrees with its data: a worker writes the job's result in the transaction that writes what the
job produced. A worker that dies stops renewing its lease; its transaction is rolled back by
PostgreSQL and another worker runs the job again from the start (`backend/jobs/worker.py`).

Uploads (lists full of ID numbers) and produced files are stored sealed (backend/crypto.py), piece by
piece, each piece bound to its job and place: none can be moved to another job or position unnoticed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import IO, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto
from backend.actor import LEVEL_PREFIX, Actor, Role
from backend.audit.service import record
from backend.config import Settings
from backend.db import Connection, load_queries
from backend.errors import Conflict, DomainError, NotFound
from backend.i18n import _, current_language
from backend.ids import uuid7

Q = load_queries("backend.jobs")

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FILE_CHUNK = 1 << 20  # bytes per stored piece of an upload
NOTIFY_CHANNEL = "canbao_jobs"
LANGUAGE_PARAM = "language"  # in a job's params: the language its report and errors are written in
_TOWNSHIP = LEVEL_PREFIX["township"]


class TooManyJobs(DomainError):
    """Too many uploads and jobs under way; wait for one to finish"""

    status, code = 429, "too_many_jobs"


class JobFinished(Conflict):
    """The job has already finished"""

    code = "job_finished"


class Progress(msgspec.Struct, frozen=True):
    done: int
    total: int | None
    unit: str | None  # "bytes" for an upload being read, "rows", …


class JobError(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a job failed, as a problem would say it: `extra` holds the problem's other members
    (for a file over a limit: `limit` and `maximum`)."""

    code: str
    title: str
    detail: str | None = None
    extra: dict[str, Any] | None = None


class JobOutput(msgspec.Struct, frozen=True):
    """The file an export job produced, downloaded from `href`."""

    name: str
    media_type: str
    bytes: int
    href: str


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job as its owner sees it. `result` is what the work answers when it ends (for a list
    import, the list version with its row report), also when it ends `failed` having kept a
    record (a rejected list)."""

    id: UUID
    kind: str
    state: JobState
    progress: Progress
    division_code: str
    file_name: str | None
    file_bytes: int | None
    created_by: UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    result: Any  # null until the job ends (and when it ends without one)
    error: JobError | None
    output: JobOutput | None
    href: str


class JobPage(msgspec.Struct, frozen=True):
    items: list[Job]
    next_cursor: UUID | None


def file_kind(job_id: UUID, seq: int) -> str:
    """The kind (associated data) a piece of a job's upload is sealed as."""
    return f"job_file:{job_id}:{seq}"


def output_kind(job_id: UUID, seq: int) -> str:
    """The kind a piece of a job's output file is sealed as."""
    return f"job_output:{job_id}:{seq}"


def job_from_row(row: asyncpg.Record) -> Job:
    error = row["error"]
    return Job(
        id=row["id"],
        kind=row["kind"],
        state=row["state"],
        progress=Progress(row["progress_done"], row["progress_total"], row["progress_unit"]),
        division_code=row["division_code"],
        file_name=row["file_name"],
        file_bytes=row["file_bytes"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        cancel_requested=row["cancel_requested"],
        result=row["result"],
        error=None if error is None else msgspec.convert(error, JobError),
        output=None
        if row["output_name"] is None
        else JobOutput(
            row["output_name"], row["output_media_type"], row["output_bytes"], f"/api/v1/jobs/{row['id']}/output"
        ),
        href=f"/api/v1/jobs/{row['id']}",
    )


def township_range(division_code: str) -> tuple[str, str]:
    """The township a job counts against (a district-wide job counts against the district's own
    office, whose code ends in 000 at the township level)."""
    prefix = division_code[:_TOWNSHIP]
    return prefix.ljust(12, "0"), prefix.ljust(12, "9")


async def enqueue(
    conn: Connection,
    actor: Actor | None,
    kind: str,
    params: dict[str, Any],
    *,
    division_code: str,
    settings: Settings,
    file: IO[bytes] | None = None,
    file_name: str | None = None,
    file_bytes: int | None = None,
    max_attempts: int = 3,
) -> Job:
    """Stores a job (and its upload, read in pieces off the event loop) in the caller's
    transaction; workers are told when it commits. At most `max_jobs_per_user` jobs of one person
    and `max_jobs_per_township` of one township are queued or running at once (429 beyond)."""
    low, high = township_range(division_code)
    if actor is not None:
        await conn.execute(Q["lock_owner"], str(actor.id))
    await conn.execute(Q["lock_owner"], low)
    counts = await conn.fetchrow(Q["active_counts"], actor.id if actor else None, low, high)
    assert counts is not None
    if actor is not None and counts["by_user"] >= settings.max_jobs_per_user:
        raise TooManyJobs(
            _(
                "you have {count} uploads or jobs under way (at most {limit})",
                count=counts["by_user"],
                limit=settings.max_jobs_per_user,
            ),
            retry_after_s=settings.job_retry_after_s,
            limit="max_jobs_per_user",
            maximum=settings.max_jobs_per_user,
        )
    if counts["by_township"] >= settings.max_jobs_per_township:
        raise TooManyJobs(
            _(
                "your township has {count} uploads or jobs under way (at most {limit})",
                count=counts["by_township"],
                limit=settings.max_jobs_per_township,
            ),
            retry_after_s=settings.job_retry_after_s,
            limit="max_jobs_per_township",
            maximum=settings.max_jobs_per_township,
        )
    job_id = uuid7()
    row = await conn.fetchrow(
        Q["insert_job"],
        job_id,
        kind,
        # The job speaks the language of whoever asked for it (its worker has no request).
        {**params, LANGUAGE_PARAM: current_language()},
        None if actor is None else msgspec.to_builtins(actor),
        actor.id if actor and actor.kind == "user" else None,
        division_code,
        None if file_name is None else file_name[:200],
        file_bytes,
        max_attempts,
    )
    assert row is not None
    if file is not None:
        await _store_file(conn, job_id, file)
    await conn.execute(Q["notify"], str(job_id))  # delivered at commit
    await record(
        conn,
        actor,
        "enqueue",
        "job",
        job_id,
        division_code=division_code,
        summary={"kind": kind, "file_bytes": file_bytes},
    )
    return job_from_row(row)


async def _store_file(conn: Connection, job_id: UUID, file: IO[bytes]) -> None:
    keyring = crypto.keys()

    def sealed_piece(seq: int) -> bytes | None:
        piece = file.read(FILE_CHUNK)
        return keyring.seal_bytes(file_kind(job_id, seq), piece) if piece else None

    async def pieces() -> Any:
        seq = 0
        while piece := await asyncio.to_thread(sealed_piece, seq):
            yield (job_id, seq, piece)
            seq += 1

    await conn.copy_records_to_table("job_files", records=pieces(), columns=("job_id", "seq", "data"))


def _may_see(actor: Actor, row: asyncpg.Record) -> bool:
    """Its creator while the job's division is still in their scope (a user moved to another
    township no longer reads the old one's exports), or a reviewer, civil-affairs officer or admin
    whose scope holds it."""
    if actor.kind != "user" or not actor.in_scope(row["division_code"]):
        return False
    return row["created_by"] == actor.id or actor.role != Role.TOWNSHIP_STAFF


async def get(conn: Connection, actor: Actor, job_id: UUID) -> Job:
    """A job its creator, or a reviewer, civil-affairs officer or admin whose scope holds it, may see."""
    row = await conn.fetchrow(Q["get_job"], job_id)
    if row is None or not _may_see(actor, row):
        raise NotFound(_("no such job in your scope"))
    return job_from_row(row)


async def output(conn: Connection, actor: Actor, job_id: UUID) -> tuple[JobOutput, list[bytes]]:
    """The file a job produced, for whoever may see the job; its download is audited (an export
    holds names and masked ID numbers)."""
    job = await get(conn, actor, job_id)
    if job.output is None:
        raise NotFound(_("this job has produced no file (yet)"))
    pieces: list[bytes] = []
    keyring = crypto.keys()
    while (piece := await conn.fetchval(Q["output_chunk"], job_id, len(pieces))) is not None:
        pieces.append(keyring.open_bytes(output_kind(job_id, len(pieces)), piece))
    await record(
        conn, actor, "download", "job_output", job_id, division_code=job.division_code, summary={"kind": job.kind}
    )
    return job.output, pieces


async def page(
    conn: Connection,
    actor: Actor,
    *,
    state: JobState | None,
    kind: str | None,
    before: UUID | None,
    limit: int,
) -> JobPage:
    """Jobs the caller may see (`_may_see`), newest first."""
    rows = await conn.fetch(
        Q["list_jobs"],
        actor.id,
        actor.scope.low,
        actor.scope.high,
        state,
        kind,
        before,
        limit + 1,
        actor.role == Role.TOWNSHIP_STAFF,  # staff: only their own jobs
    )
    items = [job_from_row(r) for r in rows[:limit]]
    return JobPage(items, items[-1].id if len(rows) > limit else None)


async def cancel(conn: Connection, actor: Actor, job_id: UUID) -> Job:
    """Asks a job to stop: a queued one ends now; a running one ends within seconds, all its
    work rolled back. Its creator or a district admin may."""
    job = await get(conn, actor, job_id)
    if job.created_by != actor.id and actor.role != Role.DISTRICT_ADMIN:
        raise NotFound(_("no such job of yours"))
    row = await conn.fetchrow(Q["cancel_queued"], job_id) or await conn.fetchrow(Q["cancel_running"], job_id)
    if row is None:
        raise JobFinished(_("the job ended {state}", state=job.state))
    if row["state"] == "cancelled":
        await conn.execute(Q["drop_file"], job_id)
    await record(conn, actor, "cancel", "job", job_id, division_code=job.division_code, summary={"kind": job.kind})
    return job_from_row(row)


async def expire(conn: Connection, settings: Settings, now: datetime) -> int:
    """Housekeeping: finished jobs older than the retention are deleted."""
    status = await conn.execute(Q["expire"], now - timedelta(days=settings.job_retention_days))
    return int(status.split()[-1])
