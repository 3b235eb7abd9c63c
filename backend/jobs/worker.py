"""The worker: claims a job, runs its handler in one transaction, and keeps its lease alive.

Workers are processes of their own (`canbao worker`, which `canbao serve` starts), so parsing a
million-row file never runs on an event loop that answers requests. A worker claims a queued job
with `FOR UPDATE SKIP LOCKED`, holds a lease it renews every `job_heartbeat_s` (and writes the
progress with it), and ends the job in the transaction that wrote the job's data. If the process
dies, PostgreSQL rolls that transaction back, the lease runs out, and another worker runs the job
again from the start; after `max_attempts` such losses the job fails. A cancellation request is
seen at the next heartbeat: the handler's task is cancelled and its transaction rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto
from backend.actor import Actor
from backend.config import Settings
from backend.db import Connection, Pool
from backend.errors import DomainError, after_failure
from backend.i18n import LANGUAGES, _, use_language
from backend.jobs.service import (
    FILE_CHUNK,
    LANGUAGE_PARAM,
    NOTIFY_CHANNEL,
    Job,
    JobError,
    Q,
    file_kind,
    job_from_row,
    output_kind,
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Listener: TypeAlias = PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger("canbao.jobs")

_SPOOL_BYTES = 8 << 20  # an upload up to this size stays in memory while its job runs


class Outcome(msgspec.Struct, frozen=True):
    """What a handler answers: its result and whether the job did what was asked (a list that is
    rejected is kept with its row report, but the job ends `failed`)."""

    result: Any
    ok: bool = True
    error: JobError | None = None


@dataclass
class JobRun:
    """One attempt at a job, as its handler sees it. Write through `conn`: its transaction
    commits with the job's end, or rolls back with everything."""

    id: UUID
    kind: str
    params: dict[str, Any]
    actor: Actor | None
    division_code: str
    file_name: str | None
    file_bytes: int | None
    attempt: int
    settings: Settings
    conn: Connection
    done: int = 0
    total: int | None = None
    on_progress: Callable[[int, int | None], None] | None = field(default=None, repr=False)

    def advance(self, amount: int) -> None:
        """Progress made (callable from a parsing thread); written at the next heartbeat."""
        self.done += amount
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    async def save_output(self, name: str, media_type: str, data: bytes) -> None:
        """The file this job produces (an export), written with the job's end, sealed (it lists people)."""
        keyring = crypto.keys()

        def seal() -> list[tuple[UUID, int, bytes]]:
            return [
                (self.id, seq, keyring.seal_bytes(output_kind(self.id, seq), data[i : i + FILE_CHUNK]))
                for seq, i in enumerate(range(0, len(data), FILE_CHUNK))
            ]

        pieces = await asyncio.to_thread(seal)
        await self.conn.copy_records_to_table("job_outputs", records=pieces, columns=("job_id", "seq", "data"))
        await self.conn.execute(Q["set_output"], self.id, name[:200], media_type, len(data))

    async def open_file(self) -> IO[bytes]:
        """The job's upload, from the start."""
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (the handler closes it)
        keyring = crypto.keys()

        def write(seq: int, piece: bytes) -> None:
            spool.write(keyring.open_bytes(file_kind(self.id, seq), piece))

        seq = 0
        while (piece := await self.conn.fetchval(Q["file_chunk"], self.id, seq)) is not None:
            await asyncio.to_thread(write, seq, piece)
            seq += 1
        spool.seek(0)
        return spool


Handler = Callable[[JobRun], Awaitable[Outcome]]


class _LeaseLost(Exception):
    """Another worker took the job over (this one's lease ran out)."""


@dataclass
class _Flags:
    cancelled: bool = False
    lost: bool = False


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_one(
    pool: Pool,
    handlers: Mapping[str, Handler],
    settings: Settings,
    *,
    worker_id: str | None = None,
    job_id: UUID | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Job | None:
    """Claims one job (the oldest ready, or `job_id`) and runs it to its end; the job as it ended,
    or None when there was nothing to claim."""
    worker_id = worker_id or worker_name()
    row = await pool.fetchrow(Q["claim"], worker_id, settings.job_lease_s, list(handlers), job_id)
    if row is None:
        return None
    params = dict(row["params"])
    language = params.pop(LANGUAGE_PARAM, None)
    # The job's report and errors in the language of whoever asked for it (the default when unknown).
    with use_language(language if language in LANGUAGES else None):
        return await _run(pool, row, handlers[row["kind"]], params, settings, worker_id, on_progress)


async def _run(
    pool: Pool,
    row: asyncpg.Record,
    handler: Handler,
    params: dict[str, Any],
    settings: Settings,
    worker_id: str,
    on_progress: Callable[[int, int | None], None] | None,
) -> Job:
    log.info("job started", extra={"job_id": str(row["id"]), "kind": row["kind"], "attempt": row["attempts"]})
    flags = _Flags()
    async with pool.acquire() as conn:
        await _lower_backend_priority(conn, settings.job_worker_nice)
        run = JobRun(
            id=row["id"],
            kind=row["kind"],
            params=params,
            actor=None if row["actor"] is None else msgspec.convert(row["actor"], Actor),
            division_code=row["division_code"],
            file_name=row["file_name"],
            file_bytes=row["file_bytes"],
            attempt=row["attempts"],
            settings=settings,
            conn=conn,
            total=row["progress_total"],
            on_progress=on_progress,
        )
        work = asyncio.create_task(_attempt(run, handler, worker_id))
        beat = asyncio.create_task(_heartbeat(pool, run, worker_id, settings, work, flags))
        try:
            await work
        except asyncio.CancelledError:
            if flags.lost:
                log.warning("job taken over by another worker", extra={"job_id": str(run.id)})
            elif flags.cancelled:
                await _end(pool, run.id, worker_id, "cancelled", JobError("cancelled", _("Job was cancelled")))
            else:  # this worker is stopping: the job goes back to the queue
                await _release(pool, run.id, worker_id)
                raise
        except _LeaseLost:
            log.warning("job taken over by another worker", extra={"job_id": str(run.id)})
        except DomainError as exc:  # the input is wrong: trying again would not help
            extra = {key: value for key, value in exc.extra.items() if key != "retry_after_s"}
            error = JobError(exc.code, _(exc.title()), exc.detail, extra or None)
            await _end(pool, run.id, worker_id, "failed", error)
        except Exception as exc:  # the database went away, a bug: another attempt, up to max_attempts
            log.error("job attempt failed", extra={"job_id": str(run.id), "error": type(exc).__name__})
            await _release(pool, run.id, worker_id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
    ended = await pool.fetchrow(Q["get_job"], row["id"])
    assert ended is not None
    log.info("job ended", extra={"job_id": str(ended["id"]), "state": ended["state"]})
    return job_from_row(ended)


async def _lower_backend_priority(conn: Connection, nice: int) -> None:
    """The job's PostgreSQL backend runs at the workers' nice value too, when it is a process of
    this machine we may renice (a Unix-socket connection: the embedded database, or a local
    server under the same user); otherwise nothing changes. The API's reads come first."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    row = await conn.fetchrow(Q["backend_process"])
    if row is not None and row["local"]:
        _renice(row["pid"], nice)


def _renice(pid: int, nice: int) -> None:
    try:
        if not Path(f"/proc/{pid}/comm").read_text(encoding="ascii").startswith("postgres"):
            return
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:  # another user's process, or no /proc: leave it
        return


async def _attempt(run: JobRun, handler: Handler, worker_id: str) -> Outcome:
    async with run.conn.transaction():
        outcome = await handler(run)
        ended = await run.conn.fetchval(
            Q["finish"],
            run.id,
            worker_id,
            "succeeded" if outcome.ok else "failed",
            msgspec.to_builtins(outcome.result),
            None if outcome.error is None else msgspec.to_builtins(outcome.error),
        )
        if ended is None:
            raise _LeaseLost
        await run.conn.execute(Q["drop_file"], run.id)
    return outcome


async def _heartbeat(
    pool: Pool, run: JobRun, worker_id: str, settings: Settings, work: asyncio.Task[Outcome], flags: _Flags
) -> None:
    while not work.done():
        await asyncio.sleep(settings.job_heartbeat_s)
        try:
            cancel = await pool.fetchval(Q["heartbeat"], run.id, worker_id, settings.job_lease_s, run.done, run.total)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("job heartbeat failed", extra={"job_id": str(run.id), "error": type(exc).__name__})
            continue
        if cancel is None or cancel:
            flags.lost, flags.cancelled = cancel is None, bool(cancel)
            work.cancel()
            return


async def _end(pool: Pool, job_id: UUID, worker_id: str, state: str, error: JobError) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(Q["end_unfinished"], job_id, worker_id, state, msgspec.to_builtins(error)):
            await conn.execute(Q["drop_file"], job_id)


async def _release(pool: Pool, job_id: UUID, worker_id: str) -> None:
    error = msgspec.to_builtins(JobError("internal_error", _("The job failed each time it was tried")))
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(Q["release"], job_id, worker_id, error) == "failed":
                await conn.execute(Q["drop_file"], job_id)


async def _listen(pool: Pool, notified: Callable[..., None], lost: Callable[..., None]) -> Listener:
    """A connection of the pool kept for LISTEN; its loss (the primary died) calls `lost`. The pool
    takes a lost connection back by itself: its proxy then answers nothing."""
    listener = await pool.acquire()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, notified)
        listener.add_termination_listener(lost)
    except BaseException:
        await pool.release(listener)
        raise
    return listener


async def _unlisten(pool: Pool, listener: Listener, notified: Callable[..., None]) -> None:
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await listener.remove_listener(NOTIFY_CHANNEL, notified)
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await pool.release(listener)  # nothing to do when the pool took it back


async def work(
    pool: Pool,
    handlers: Mapping[str, Handler],
    settings: Settings,
    stop: asyncio.Event,
    *,
    worker_id: str | None = None,
) -> None:
    """Runs jobs until `stop` is set: woken by a notification when a job is stored, and every
    `job_poll_s` to take over the jobs of workers that died. The listening session is opened again
    when it is lost (a failover takes it with the old primary)."""
    worker_id = worker_id or worker_name()
    wake = asyncio.Event()
    listener: Listener | None = None

    def notified(*_: object) -> None:
        wake.set()

    def lost(*_: object) -> None:
        nonlocal listener
        listener = None
        wake.set()

    log.info("job worker started", extra={"worker": worker_id, "kinds": sorted(handlers)})
    try:
        while not stop.is_set():
            wake.clear()
            try:
                if listener is None:
                    listener = await _listen(pool, notified, lost)
                await pool.execute(Q["fail_exhausted"])
                if await run_one(pool, handlers, settings, worker_id=worker_id) is not None:
                    continue
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                # InternalClientError: no host of the DSN is writable yet (TargetServerAttributeNotMatched,
                # while a standby is being promoted), or a connection the server ended mid-protocol.
                log.warning("job worker cannot reach the database", extra={"error": type(exc).__name__})
                after_failure(pool, exc)
            # Not listening (the database is away): look again within a second rather than a poll.
            timeout = settings.job_poll_s if listener is not None else min(settings.job_poll_s, 1.0)
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
    finally:
        if listener is not None:
            await _unlisten(pool, listener, notified)
        log.info("job worker stopped", extra={"worker": worker_id})
