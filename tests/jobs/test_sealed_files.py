"""A job's upload and the file it produces rest sealed, piece by piece, each piece bound to its job
and place; the worker and the download see them in clear (issue 16)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backend import crypto
from backend.actor import Actor, Role, Scope
from backend.config import Settings
from backend.db import Pool, create_pool
from backend.jobs import service as jobs
from backend.jobs import worker
from tests.conftest import KEYS, make_settings
from tests.jobs.test_jobs import person
from tests.sync.at_rest import clear_copies

Conn = asyncpg.Connection  # type: ignore[type-arg]
# A list of some megabytes: several pieces of the upload, and of the output.
ROWS = [f"{person(n)},居民{n},2025-01-01,330106001001" for n in range(60_000)]
LIST = ("\r\n".join(ROWS) + "\r\n").encode()
PIECES = -(-len(LIST) // jobs.FILE_CHUNK)


async def echo(run: worker.JobRun) -> worker.Outcome:
    """A job that reads its upload and makes it its output, as an export of the list would."""
    with await run.open_file() as source:
        data = source.read()
    await run.save_output("名单.csv", "text/csv", data)
    return worker.Outcome({"bytes": len(data)})


@pytest.fixture
async def admin(conn: Conn, seeded: None) -> Actor:
    """The demo district's admin, who may see every job of the district."""
    user_id = await conn.fetchval("SELECT id FROM users WHERE username = 'admin'")
    return Actor(kind="user", id=user_id, role=Role.DISTRICT_ADMIN, scope=Scope("330106000000", "district"))


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Pool]:
    created = await create_pool(db_dsn, 1, 4)
    yield created
    await created.close()


def settings(db_dsn: str) -> Settings:
    return make_settings(db_dsn, job_lease_s=5, job_heartbeat_s=0.1, job_poll_s=0.2)


async def enqueue(conn: Conn, db_dsn: str, admin: Actor) -> jobs.Job:
    async with conn.transaction():
        return await jobs.enqueue(
            conn,
            admin,
            "echo",
            {},
            division_code="330106000000",
            settings=settings(db_dsn),
            file=io.BytesIO(LIST),
            file_name="名单.csv",
            file_bytes=len(LIST),
        )


async def test_an_upload_and_the_file_a_job_makes_rest_sealed_and_open_for_the_worker_and_the_download(
    conn: Conn, pool: Pool, db_dsn: str, admin: Actor
) -> None:
    job = await enqueue(conn, db_dsn, admin)
    pieces = await conn.fetch("SELECT seq, data FROM job_files WHERE job_id = $1 ORDER BY seq", job.id)
    assert [r["seq"] for r in pieces] == list(range(PIECES))
    numbers = [person(n) for n in (0, 30_000, 59_999)]
    assert await clear_copies(conn, numbers) == []

    ended = await worker.run_one(pool, {"echo": echo}, settings(db_dsn))
    assert ended is not None and ended.state == "succeeded", ended
    assert ended.result == {"bytes": len(LIST)}
    assert await conn.fetchval("SELECT count(*) FROM job_outputs WHERE job_id = $1", job.id) == PIECES
    assert await clear_copies(conn, numbers) == []
    output, data = await jobs.output(conn, admin, job.id)
    assert (output.name, output.bytes, b"".join(data)) == ("名单.csv", len(LIST), LIST)


async def test_a_piece_moved_to_another_place_does_not_open(conn: Conn, db_dsn: str, admin: Actor) -> None:
    job = await enqueue(conn, db_dsn, admin)
    first = await conn.fetchrow("SELECT data FROM job_files WHERE job_id = $1 AND seq = 0", job.id)
    assert KEYS.open_bytes(jobs.file_kind(job.id, 0), first["data"]) == LIST[: jobs.FILE_CHUNK]
    with pytest.raises(crypto.CryptoError):
        KEYS.open_bytes(jobs.file_kind(job.id, 1), first["data"])  # the first piece in the second's place
    with pytest.raises(crypto.CryptoError):
        KEYS.open_bytes(jobs.output_kind(job.id, 0), first["data"])  # an upload passed off as an output
