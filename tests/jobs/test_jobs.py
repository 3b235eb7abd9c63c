"""Durable jobs: an upload handed to a worker, its progress and result, scope, limits, cancelling,
and a worker killed half way whose job another worker finishes exactly once."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.config import Settings
from backend.db import Pool, create_pool
from backend.jobs import worker
from tests.conftest import KEY_FILE, auth_headers, make_settings
from tests.processes import clean_env

WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"


def person(n: int) -> str:
    """The n-th valid identity number born in area 330106 (GB 11643 check character)."""
    base = f"330106{date(1950, 1, 1) + timedelta(days=n % 20000):%Y%m%d}{n // 20000:03d}"
    return base + CHECK[sum(int(d) * w for d, w in zip(base, WEIGHTS, strict=True)) % 11]


def list_file(rows: int, *, bad_row: bool = False) -> bytes:
    lines = ["身份证号,姓名,有效期起,所属村"]
    lines += [f"{person(n)},居民{n},2025-01-01,330106001001" for n in range(rows)]
    if bad_row:
        lines.append("not-a-number,坏行,2025-01-01,330106001001")
    return ("\r\n".join(lines) + "\r\n").encode()


async def upload(
    client: AsyncTestClient[Litestar], headers: dict[str, str], content: bytes, *, background: bool | None = True
) -> Any:
    query = "" if background is None else f"?background={'true' if background else 'false'}"
    return await client.post(
        f"/api/v1/eligibility/lists{query}",
        files={"file": ("名单.csv", content)},
        data={"type": "di_bao", "effective_from": "2025-09-01"},
        headers=headers,
    )


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Pool]:
    created = await create_pool(db_dsn, 1, 4)
    yield created
    await created.close()


def fast(db_dsn: str, **overrides: Any) -> Settings:
    return make_settings(db_dsn, **{"job_lease_s": 2, "job_heartbeat_s": 0.1, "job_poll_s": 0.2, **overrides})


async def test_a_big_upload_becomes_a_job_that_a_worker_loads(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    answer = await upload(client, civil, list_file(50), background=None)
    assert answer.status_code == 201, "a small file still loads in the request"
    answer = await upload(client, civil, list_file(60))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/api/v1/jobs/{job['id']}" == job["href"]
    assert (job["kind"], job["state"], job["result"]) == ("list_import", "queued", None)
    assert job["progress"] == {"done": 0, "total": job["file_bytes"], "unit": "bytes"}
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 1, "nothing loads before a worker runs it"

    ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    assert ended is not None and str(ended.id) == job["id"]
    seen = (await client.get(job["href"], headers=civil)).json()
    assert (seen["state"], seen["error"], seen["attempts"]) == ("succeeded", None, 1)
    assert seen["progress"]["done"] == seen["progress"]["total"] == job["file_bytes"]
    version = seen["result"]
    assert (version["status"], version["version"], version["rows_loaded"]) == ("loaded", 2, 60)
    assert (version["added"], version["removed"]) == (10, 0)
    assert await conn.fetchval("SELECT count(*) FROM job_files") == 0, "the upload is dropped with the job's end"
    audit = await conn.fetch("SELECT action FROM audit_log WHERE entity IN ('job', 'list_version') ORDER BY id")
    assert [r["action"] for r in audit] == ["import", "enqueue", "import"]
    assert await worker.run_one(pool, job_handlers(), fast(db_dsn)) is None, "nothing left to claim"


async def test_a_rejected_file_keeps_its_row_report_and_fails_the_job(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(5, bad_row=True))).json()
    await worker.run_one(pool, job_handlers(), fast(db_dsn))
    seen = (await client.get(job["href"], headers=civil)).json()
    assert seen["state"] == "failed"
    assert seen["error"] == {
        "code": "list_rejected",
        "title": "The list file has errors; nothing was loaded",
        "detail": "1 of 6 rows have errors; nothing was loaded",
    }
    assert seen["result"]["status"] == "rejected"
    assert [(e["row"], e["column"]) for e in seen["result"]["errors"]] == [(7, "身份证号")]
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 0


async def test_an_unknown_list_type_is_refused_before_anything_is_stored(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    answer = await client.post(
        "/api/v1/eligibility/lists?background=true",
        files={"file": ("x.csv", list_file(3))},
        data={"type": "no_such_list", "effective_from": "2025-09-01"},
        headers=civil,
    )
    assert answer.status_code == 422, answer.text
    assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


async def test_jobs_are_seen_by_their_owner_and_their_scope_only(client: AsyncTestClient[Litestar]) -> None:
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(3))).json()
    assert (await client.get(job["href"], headers=await auth_headers(client, "admin"))).status_code == 200
    for outsider in ("staff_a", "reviewer_b"):
        headers = await auth_headers(client, outsider)
        assert (await client.get(job["href"], headers=headers)).status_code == 404, outsider
        assert (await client.get("/api/v1/jobs", headers=headers)).json()["items"] == [], outsider
        assert (await client.post(f"{job['href']}/cancel", headers=headers)).status_code == 404, outsider
    listed = (await client.get("/api/v1/jobs", headers=civil)).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]


async def test_a_creator_moved_to_another_division_no_longer_sees_their_old_jobs(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """A job's files hold what its division's people are (names, masked numbers): its creator reads
    them while that division is theirs. Moved to one township, the district's job is gone for them."""
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(3))).json()
    township = await conn.fetchval("SELECT division_code FROM users WHERE username = 'staff_a'")
    await conn.execute("UPDATE users SET division_code = $1 WHERE username = 'civil'", township)
    moved = await auth_headers(client, "civil")
    assert (await client.get(job["href"], headers=moved)).status_code == 404
    assert (await client.get("/api/v1/jobs", headers=moved)).json()["items"] == []
    assert (await client.get(job["href"], headers=await auth_headers(client, "admin"))).status_code == 200


async def test_too_many_jobs_at_once_is_a_429_with_retry_after(
    db_dsn: str,
    seeded: None,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    from backend.app import create_app

    app = create_app(make_settings(db_dsn, max_jobs_per_user=2, job_retry_after_s=7), configure_logs=False)
    async with AsyncTestClient(app) as client:
        civil = await auth_headers(client, "civil")
        for _ in range(2):
            assert (await upload(client, civil, list_file(3))).status_code == 202
        refused = await upload(client, civil, list_file(3))
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "7"
        assert (refused.json()["code"], refused.json()["limit"]) == ("too_many_jobs", "max_jobs_per_user")
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 2
        first = (await client.get("/api/v1/jobs", headers=civil)).json()["items"][-1]
        assert (await client.post(f"{first['href']}/cancel", headers=civil)).status_code == 200
        assert (await upload(client, civil, list_file(3))).status_code == 202, "a cancelled job frees its place"


async def test_cancelling_a_queued_job_ends_it_and_drops_its_upload(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(3))).json()
    cancelled = await client.post(f"{job['href']}/cancel", headers=civil)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["state"], cancelled.json()["error"]["code"]) == ("cancelled", "cancelled")
    assert await conn.fetchval("SELECT count(*) FROM job_files") == 0
    assert await worker.run_one(pool, job_handlers(), fast(db_dsn)) is None, "a cancelled job is never run"
    again = await client.post(f"{job['href']}/cancel", headers=civil)
    assert (again.status_code, again.json()["code"]) == (409, "job_finished")


async def test_cancelling_a_running_job_rolls_its_work_back(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(150_000))).json()
    running = asyncio.create_task(worker.run_one(pool, job_handlers(), fast(db_dsn)))
    for _ in range(200):
        if await conn.fetchval("SELECT progress_done FROM jobs WHERE id = $1", job["id"]):
            break
        await asyncio.sleep(0.05)
    assert (await client.post(f"{job['href']}/cancel", headers=civil)).status_code == 200
    ended = await asyncio.wait_for(running, 60)
    assert ended is not None and ended.state == "cancelled"
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 0
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 0
    assert await conn.fetchval("SELECT count(*) FROM job_files") == 0


async def test_two_workers_never_claim_the_same_job(client: AsyncTestClient[Litestar], db_dsn: str) -> None:
    """Two claims at once, each in an open transaction: the second skips the row the first holds
    (FOR UPDATE SKIP LOCKED). Without the lock, the second waits and then claims it too."""
    from backend.jobs.service import Q

    civil = await auth_headers(client, "civil")
    await upload(client, civil, list_file(3))
    first, second = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        await first.execute("BEGIN")
        await second.execute("BEGIN")
        claimed = await first.fetchrow(Q["claim"], "worker-1", 30, ["list_import"], None)
        assert claimed is not None
        racing = asyncio.create_task(second.fetchrow(Q["claim"], "worker-2", 30, ["list_import"], None))
        await asyncio.sleep(0.3)
        await first.execute("COMMIT")
        assert await asyncio.wait_for(racing, 10) is None
        await second.execute("COMMIT")
    finally:
        await first.close()
        await second.close()


async def test_a_worker_killed_half_way_leaves_the_job_to_another_which_loads_it_once(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(200_000))).json()
    env = clean_env(
        DATABASE_URL=db_dsn,
        CANBAO_KEY_FILE=KEY_FILE,  # the worker opens the sealed upload with the test keys
        CANBAO_JOB_LEASE_S="2",
        CANBAO_JOB_HEARTBEAT_S="0.1",
        CANBAO_JOB_POLL_S="0.2",
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "backend.cli", "worker", env=env)
    try:
        deadline = time.monotonic() + 60
        while not await conn.fetchval("SELECT progress_done > 0 FROM jobs WHERE id = $1", job["id"]):
            assert time.monotonic() < deadline and process.returncode is None, "the worker never started the job"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    row = await conn.fetchrow("SELECT state, attempts FROM jobs WHERE id = $1", job["id"])
    assert (row["state"], row["attempts"]) == ("running", 1)
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 0, "the killed attempt left nothing"
    assert await worker.run_one(pool, job_handlers(), fast(db_dsn)) is None, "its lease still holds"
    await asyncio.sleep(2.2)
    ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    assert ended is not None and (ended.state, ended.attempts) == ("succeeded", 2)
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 1
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 200_000


async def test_a_job_whose_workers_keep_dying_fails(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    from backend.jobs.service import Q

    civil = await auth_headers(client, "civil")
    job = (await upload(client, civil, list_file(3))).json()
    await conn.execute(
        "UPDATE jobs SET state = 'running', attempts = max_attempts, locked_by = 'gone',"
        " locked_until = now() - interval '1 second' WHERE id = $1",
        job["id"],
    )
    assert await worker.run_one(pool, job_handlers(), fast(db_dsn)) is None, "spent attempts are not retried"
    await conn.execute(Q["fail_exhausted"])
    seen = (await client.get(job["href"], headers=civil)).json()
    assert (seen["state"], seen["error"]["code"]) == ("failed", "worker_lost")
    assert await conn.fetchval("SELECT count(*) FROM job_files") == 0


async def test_the_worker_loop_runs_what_is_stored_while_it_waits(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.work(pool, job_handlers(), fast(db_dsn, job_poll_s=30), stop))
    try:
        await asyncio.sleep(0.3)  # the worker is idle, listening
        civil = await auth_headers(client, "civil")
        job = (await upload(client, civil, list_file(3))).json()
        for _ in range(100):  # woken by the notification, not by the 30 s poll
            if await conn.fetchval("SELECT state FROM jobs WHERE id = $1", job["id"]) == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT state FROM jobs WHERE id = $1", job["id"]) == "succeeded"
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)


async def test_the_worker_listens_again_when_its_listening_session_is_lost(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    """A failover takes the LISTEN session with the old primary: the worker opens another one, so a
    job stored afterwards runs at once, not at the next 30 s poll (bench/failover.py sees it on a
    Patroni cluster)."""
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.work(pool, job_handlers(), fast(db_dsn, job_poll_s=30), stop))
    listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    try:
        for _ in range(100):
            if (first := await conn.fetchval(listening)) is not None:
                break
            await asyncio.sleep(0.05)
        assert first is not None
        await conn.execute("SELECT pg_terminate_backend($1)", first)
        for _ in range(100):
            if (again := await conn.fetchval(listening)) not in (None, first):
                break
            await asyncio.sleep(0.05)
        assert again not in (None, first), "no new listening session"
        civil = await auth_headers(client, "civil")
        job = (await upload(client, civil, list_file(3))).json()
        for _ in range(100):
            if await conn.fetchval("SELECT state FROM jobs WHERE id = $1", job["id"]) == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT state FROM jobs WHERE id = $1", job["id"]) == "succeeded"
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)


async def test_uploads_arriving_at_once_are_limited_per_person_and_freed_when_they_end(
    db_dsn: str,
    seeded: None,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    from backend.app import create_app

    app = create_app(make_settings(db_dsn, max_uploads_per_user=2, job_retry_after_s=9), configure_logs=False)
    async with AsyncTestClient(app) as client:
        civil = await auth_headers(client, "civil")
        civil_id = await conn.fetchval("SELECT id FROM users WHERE username = 'civil'")
        assert (await upload(client, civil, list_file(3), background=False)).status_code == 201
        assert await conn.fetchval("SELECT count(*) FROM upload_slots") == 0, "a finished upload frees its slot"
        refused_list = await client.post(
            "/api/v1/eligibility/lists",
            files={"file": ("x.csv", list_file(3))},
            data={"type": "no_such_list", "effective_from": "2025-09-01"},
            headers=civil,
        )
        assert refused_list.status_code == 422
        assert await conn.fetchval("SELECT count(*) FROM upload_slots") == 0, "so does a refused one"

        # Two of civil's uploads still arriving (as other workers would record them), one long dead.
        await conn.executemany(
            "INSERT INTO upload_slots (id, user_id, division_code, expires_at) VALUES (gen_random_uuid(), $1, $2,"
            " now() + make_interval(secs => $3))",
            [(civil_id, "330106000000", 600), (civil_id, "330106000000", 600), (civil_id, "330106000000", -1)],
        )
        refused = await upload(client, civil, list_file(3))
        assert refused.status_code == 429, refused.text
        assert (refused.json()["code"], refused.json()["limit"], refused.headers["retry-after"]) == (
            "too_many_uploads",
            "max_uploads_per_user",
            "9",
        )
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
        await conn.execute("DELETE FROM upload_slots WHERE id IN (SELECT id FROM upload_slots LIMIT 1)")
        assert (await upload(client, civil, list_file(3))).status_code == 202, "the expired slot does not count"


async def test_two_uploads_racing_for_the_last_place_get_one(
    db_dsn: str,
    seeded: None,
    pool: Pool,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Each take counts and inserts in its own transaction; the advisory lock per person makes the
    second count the first's row. Without it both count 0 and both get in."""
    from backend.actor import Actor, Role, Scope
    from backend.jobs.uploads import TooManyUploads, _take

    settings = make_settings(db_dsn, max_uploads_per_user=1)
    civil_id = await conn.fetchval("SELECT id FROM users WHERE username = 'civil'")
    actor = Actor(kind="user", id=civil_id, role=Role.CIVIL_AFFAIRS, scope=Scope("330106000000", "district"))
    for _ in range(5):
        await conn.execute("DELETE FROM upload_slots")
        outcomes = await asyncio.gather(
            _take(pool, settings, actor, 60), _take(pool, settings, actor, 60), return_exceptions=True
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["TooManyUploads", "UUID"], outcomes
        assert isinstance(next(o for o in outcomes if isinstance(o, Exception)), TooManyUploads)
        assert await conn.fetchval("SELECT count(*) FROM upload_slots") == 1


async def test_a_file_over_a_limit_fails_its_job_naming_the_limit(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    civil = await auth_headers(client, "civil")
    too_wide = ("身份证号,姓名" + ",x" * 300 + "\r\n").encode() + list_file(3).split(b"\r\n", 1)[1]
    job = (await upload(client, civil, too_wide)).json()
    await worker.run_one(pool, job_handlers(), fast(db_dsn))
    seen = (await client.get(job["href"], headers=civil)).json()
    assert (seen["state"], seen["result"]) == ("failed", None)
    assert seen["error"]["code"] == "row_too_large", seen["error"]
    assert seen["error"]["extra"] == {"limit": "max_columns", "maximum": 256}
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 0
    assert await conn.fetchval("SELECT count(*) FROM job_files") == 0


async def test_the_whole_unenrolled_list_is_exported_by_a_job_as_one_file(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,
    pool: Pool,
    db_dsn: str,  # type: ignore[type-arg]
) -> None:
    """More people than one page (1,000): the job walks every page into one file, its download is
    audited and seen by the scope only."""
    civil = await auth_headers(client, "civil")
    assert (await upload(client, civil, list_file(1_205), background=False)).status_code == 201
    asked = await client.get(
        "/api/v1/reports/subsidised-not-enrolled",
        params={"year": 2026, "format": "csv", "background": "true", "headers": "codes"},
        headers=civil,
    )
    assert asked.status_code == 202, asked.text
    ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    assert ended is not None and (ended.kind, ended.state) == ("unenrolled_export", "succeeded")
    job = (await client.get(asked.headers["location"], headers=civil)).json()
    assert job["result"]["rows"] == 1_205
    output = job["output"]
    assert (output["name"], output["media_type"]) == ("subsidised-not-enrolled-2026.csv", "text/csv; charset=utf-8")
    download = await client.get(output["href"], headers=civil)
    assert download.status_code == 200, download.text
    lines = download.content.decode("utf-8-sig").splitlines()
    assert len(lines) == 1 + 1_205 and lines[0].startswith("division_code,township,village,name")
    assert len(download.content) == output["bytes"]
    assert (
        await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'download' AND entity = 'job_output'") == 1
    )
    outsider = await auth_headers(client, "reviewer_b")
    assert (await client.get(output["href"], headers=outsider)).status_code == 404
    as_json = await client.get(
        "/api/v1/reports/subsidised-not-enrolled", params={"year": 2026, "background": "true"}, headers=civil
    )
    assert as_json.status_code == 202, as_json.text
    await worker.run_one(pool, job_handlers(), fast(db_dsn))
    href = (await client.get(as_json.headers["location"], headers=civil)).json()["output"]["href"]
    whole = (await client.get(href, headers=civil)).json()
    assert (len(whole["items"]), whole["next_cursor"]) == (1_205, None)


async def test_the_jobs_database_process_runs_at_the_workers_lower_priority(
    pool: Pool,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """On the embedded database (a Unix socket), the backend that does a job's COPY is reniced, so
    the API's reads come first on a small machine; a process that is not PostgreSQL is left alone."""
    import os

    from backend.jobs.worker import _lower_backend_priority, _renice

    async with pool.acquire() as job_conn:
        pid = await job_conn.fetchval("SELECT pg_backend_pid()")
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0
        await _lower_backend_priority(job_conn, 10)
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10
    own = os.getpriority(os.PRIO_PROCESS, os.getpid())
    _renice(os.getpid(), 19)
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own


async def test_the_coverage_report_is_made_by_a_job_as_a_file_equal_to_the_requests(
    client: AsyncTestClient[Litestar], pool: Pool, db_dsn: str
) -> None:
    reviewer = await auth_headers(client, "reviewer_a")
    params = {"year": 2026, "level": "village", "format": "csv"}
    direct = await client.get("/api/v1/reports/coverage", params=params, headers=reviewer)
    assert direct.status_code == 200, direct.text
    asked = await client.get("/api/v1/reports/coverage", params={**params, "background": "true"}, headers=reviewer)
    assert asked.status_code == 202, asked.text
    ended = await worker.run_one(pool, job_handlers(), fast(db_dsn))
    assert ended is not None and (ended.kind, ended.state) == ("coverage_export", "succeeded")
    job = (await client.get(asked.headers["location"], headers=reviewer)).json()
    assert job["output"]["name"] == "coverage-2026-village.csv"
    made = await client.get(job["output"]["href"], headers=reviewer)
    assert made.content == direct.content
    assert (
        await client.get(job["output"]["href"], headers=await auth_headers(client, "reviewer_b"))
    ).status_code == 404
