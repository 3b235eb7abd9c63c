"""Reports and residents' coverage read on a real streaming standby, with read-your-writes (issue 21,
backend/replicas.py).

The standby is made once for the module from the suite's own server (`backend.tools.standby`:
pg_basebackup, started beside it on a socket of its own); each test's database reaches it by WAL
like everything else. Replay is paused (`pg_wal_replay_pause()`) to make the standby lag on
purpose: a read that answers without a write made meanwhile was read on the standby, and a read that
must see the write (the writer's own, a resident's after a payment at the counter) shows it although
the standby has not replayed it — the wait for its position ran out and the primary answered.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from backend import errors, replicas
from backend.app import create_app
from backend.config import Settings
from backend.enrollment import coverage_report
from backend.tools.standby import Standby, start_standby
from tests.conftest import (
    APP_ROLE,
    TODAY,
    PgServer,
    _with_database,
    auth_headers,
    ended_in_its_sleep,
    make_settings,
)
from tests.factories import ID_NUMBERS
from tests.premiums.test_payments import (
    Client,
    World,
    http_body,
    world_fixture,  # noqa: F401 - the `world` fixture
)
from tests.residents.test_residents import resident_headers
from tests.web.helpers import console_login
from tests.web.test_resident_page import page_login


@pytest.fixture(scope="module")
def standby(pg_server: PgServer) -> Iterator[Standby]:
    try:
        made = start_standby(pg_server.admin_dsn)
    except Exception as exc:
        if os.environ.get("CANBAO_TEST_DATABASE_URL"):  # a server elsewhere: no standby of it here
            pytest.skip(f"no standby of the test server on this machine: {exc}")
        raise
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def settings(db_dsn: str, standby: Standby) -> Settings:
    return make_settings(db_dsn, replica_dsns=standby.dsn(db_dsn))


@asynccontextmanager
async def lagging(admin_db_dsn: str, standby: Standby) -> AsyncIterator[None]:
    """The standby caught up with the primary, then its replay paused until the block ends. Replay is
    the cluster's, so the standby is asked in its `postgres` database: this test's database, made a
    moment ago, may not have reached it yet (connecting to it failed once on a loaded machine)."""
    primary = await asyncpg.connect(admin_db_dsn)
    replica = await asyncpg.connect(standby.dsn(_with_database(admin_db_dsn, "postgres")))
    try:
        now = await primary.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        assert await replicas.caught_up(replica, now, wait_s=10), "the standby does not replay"
        await replica.execute("SELECT pg_wal_replay_pause()")
        yield
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        now = await primary.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        assert await replicas.caught_up(replica, now, wait_s=10)
        await primary.close()
        await replica.close()


async def funded(client: Client, headers: dict[str, str], **extra: str) -> int:
    answer = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers={**headers, **extra})
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["total"]["funded"]
    return count


async def collected(client: Client, headers: dict[str, str]) -> int:
    answer = await client.get(
        "/api/v1/reports/collections",
        params={"from": TODAY.isoformat(), "to": TODAY.isoformat(), "group": "township"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    return sum(row["payments"] for row in answer.json()["rows"])


async def test_reports_read_the_standby_and_the_clerk_who_paid_reads_the_payment(
    client: Client, world: World, admin_db_dsn: str, standby: Standby
) -> None:
    staff = await auth_headers(client, "staff_a")
    reviewer = await auth_headers(client, "reviewer_a")
    assert await funded(client, staff) == 0
    async with lagging(admin_db_dsn, standby):
        paid = await client.post(
            "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": f"pay-{uuid.uuid4()}"}
        )
        assert paid.status_code == 201, paid.text
        position = paid.headers[replicas.COMMIT_HEADER.lower()]
        # The reviewer wrote nothing: the standby answers, without the payment it has not replayed
        # (had the read waited for the primary's position, it would have ended on the primary, with it).
        assert await collected(client, reviewer) == 0
        assert await funded(client, reviewer) == 0
        # The clerk who recorded it reads it: the standby cannot have it, the primary answers.
        assert await funded(client, staff) == 2
        # Another app instance knows nothing of the clerk: the position they were given says it.
        assert await funded(client, reviewer, **{replicas.READ_AFTER_HEADER: position}) == 2
    assert await collected(client, reviewer) == 1  # replayed (`lagging` waited for it): the standby has it


async def test_a_console_page_that_wrote_carries_its_position_to_the_next_pages(
    client: Client,
    world: World,
    admin_db_dsn: str,
    standby: Standby,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    staff = await auth_headers(client, "staff_a")
    paid = await client.post(
        "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": f"pay-{uuid.uuid4()}"}
    )
    assert paid.status_code == 201, paid.text
    csrf = await console_login(client, "reviewer_a")
    ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM enrollments WHERE status = 'paid'")]
    assert len(ids) == 2
    async with lagging(admin_db_dsn, standby):
        before = await client.get("/console/reports/coverage?year=2026&level=township&format=csv")
        assert before.status_code == 200 and _confirmed(before.text) == 0  # nothing written yet: the standby
        done = await client.post("/console/enrollments/confirm?year=2026&status=paid", data={"ids": ids, "_csrf": csrf})
        assert done.status_code == 200, done.text
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(replicas.READ_AFTER_COOKIE))
        assert "Max-Age=60" in cookie and "HttpOnly" in cookie
        # Another process or instance serves the next page: it knows only what the cookie says.
        client.app.state.replicas._written.clear()
        after = await client.get("/console/reports/coverage?year=2026&level=township&format=csv")
        assert after.status_code == 200 and _confirmed(after.text) == 2
        client.cookies.delete(replicas.READ_AFTER_COOKIE)
        stale = await client.get("/console/reports/coverage?year=2026&level=township&format=csv")
        assert _confirmed(stale.text) == 0  # without it, the lagging standby answers


def _confirmed(csv_text: str) -> int:
    """The `confirmed` count of the township report's total row (the last): code, name, level,
    persons, funded, registered unpaid, confirmed, …"""
    total = list(csv.reader(io.StringIO(csv_text.lstrip("\ufeff"))))[-1]
    assert total[2] == "Total", total
    return int(total[6])


async def test_a_resident_reads_a_payment_made_at_the_counter_though_the_standby_lags(
    client: Client, world: World, admin_db_dsn: str, standby: Standby
) -> None:
    code = world.enrolled["query_code"]
    resident = await resident_headers(client, ID_NUMBERS[1], "张三", code)
    assert (await page_login(client, ID_NUMBERS[1], "张三", code)).status_code == 303

    async def paid_fen() -> tuple[int, float]:
        started = time.monotonic()
        answer = await client.get("/api/v1/resident/coverage", params={"year": 2026}, headers=resident)
        assert answer.status_code == 200, answer.text
        return answer.json()["paid_fen"], time.monotonic() - started

    assert (await paid_fen())[0] == 0
    assert "A00000001" not in (await client.get("/r/")).text
    async with lagging(admin_db_dsn, standby):
        staff = await auth_headers(client, "staff_a")
        paid = await client.post(
            "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": f"pay-{uuid.uuid4()}"}
        )
        assert paid.status_code == 201, paid.text
        # The resident wrote nothing, yet sees the clerk's payment: the standby was asked to reach
        # the primary's position first, waited for, and the primary answered.
        fen, seconds = await paid_fen()
        assert fen == 80000
        assert seconds >= replicas.WAIT_S  # it was the standby that was asked first
        page = await client.get("/r/")  # the page reads the same way
        assert page.status_code == 200 and "A00000001" in page.text, page.text  # the receipt just given
    fen, seconds = await paid_fen()
    assert fen == 80000 and seconds < replicas.WAIT_S  # replayed: the standby answers at once


def _reads_again(route: str) -> float:
    return REGISTRY.get_sample_value("canbao_replica_reads_again_total", {"route": route}) or 0.0


def _pids_of(role: str) -> str:
    return "SELECT array_agg(pid ORDER BY pid) FROM pg_stat_activity WHERE usename = '" + role + "'"


async def test_a_read_whose_standby_connection_dies_is_read_again_on_the_primary_and_its_pool_kept(
    client: Client, world: World, admin_db_dsn: str, standby: Standby, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby's connection is ended under the report's read (as a standby restarting would):
    the request is run again on the primary, which answers (with the payment the paused standby has
    not replayed), and the primary's pooled connections are the same before and after — it was not
    the primary that failed, so they are not dropped as after a failover."""
    staff = await auth_headers(client, "staff_a")
    reviewer = await auth_headers(client, "reviewer_a")
    read = coverage_report.coverage_report
    on_standby: list[bool] = []

    async def dying(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
        on_standby.append(await reads.fetchval("SELECT pg_is_in_recovery()"))
        if on_standby[-1]:  # ended in the middle of a statement: 57P01, "terminating connection"
            killing = asyncio.create_task(
                ended_in_its_sleep(standby.dsn(_with_database(admin_db_dsn, "postgres")), reads.get_server_pid())
            )
            try:
                await reads.execute("SELECT pg_sleep(60)")
            finally:
                await killing
        return await read(*args, reads=reads, **kwargs)

    primary = await asyncpg.connect(admin_db_dsn)
    try:
        async with lagging(admin_db_dsn, standby):
            paid = await client.post(
                "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": f"pay-{uuid.uuid4()}"}
            )
            assert paid.status_code == 201, paid.text
            assert await funded(client, reviewer) == 0  # the standby answers, without the payment
            before = await primary.fetchval(_pids_of(APP_ROLE))
            monkeypatch.setattr(coverage_report, "coverage_report", dying)
            assert await funded(client, reviewer) == 2  # the primary's answer, the payment in it
            assert on_standby == [True, False]
            monkeypatch.setattr(coverage_report, "coverage_report", read)
            assert await funded(client, reviewer) == 0  # the standby again, on a new connection
            assert await primary.fetchval(_pids_of(APP_ROLE)) == before
    finally:
        await primary.close()


async def test_a_read_cancelled_by_a_recovery_conflict_is_read_again_on_the_primary(
    client: Client, admin_db_dsn: str, standby: Standby, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby must replay a lock of a table the report's read holds (`LOCK TABLE` on the
    primary) and waits for no read (`max_standby_streaming_delay` 0): it cancels the read's statement
    (40001, "conflict with recovery"). The request is run again on the primary and answers 200."""
    reviewer = await auth_headers(client, "reviewer_a")
    read = coverage_report.coverage_report
    on_standby: list[bool] = []
    cancelled: list[str] = []

    async def conflicting(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
        on_standby.append(await reads.fetchval("SELECT pg_is_in_recovery()"))
        answer = await read(*args, reads=reads, **kwargs)
        if not on_standby[-1]:
            return answer
        await reads.fetchval("SELECT count(*) FROM conflict_probe")  # its lock held to the read's end
        locker = await asyncpg.connect(admin_db_dsn)  # (in the app's own loop)

        async def lock_on_primary() -> None:
            async with locker.transaction():
                await locker.execute("LOCK TABLE conflict_probe IN ACCESS EXCLUSIVE MODE")

        locking = asyncio.create_task(lock_on_primary())
        try:
            await reads.execute("SELECT pg_sleep(60)")
        except asyncpg.PostgresError as exc:
            cancelled.append(str(exc.sqlstate))
            raise
        finally:
            await locking
            await locker.close()
        return answer

    primary = await asyncpg.connect(admin_db_dsn)
    replica = await asyncpg.connect(standby.dsn(_with_database(admin_db_dsn, "postgres")))
    try:
        await primary.execute("CREATE TABLE conflict_probe (x int); GRANT SELECT ON conflict_probe TO PUBLIC")
        made = await primary.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        assert await replicas.caught_up(replica, made, wait_s=10)
        await replica.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        await replica.execute("SELECT pg_reload_conf()")
        monkeypatch.setattr(coverage_report, "coverage_report", conflicting)
        before = _reads_again("/api/v1/reports/coverage")
        answer = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
        assert answer.status_code == 200, answer.text
        assert cancelled == ["40001"] and on_standby == [True, False]
        assert _reads_again("/api/v1/reports/coverage") == before + 1  # counted for the operator
    finally:
        await replica.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
        await replica.execute("SELECT pg_reload_conf()")
        await primary.close()
        await replica.close()


@pytest.fixture
async def impatient(db_dsn: str, standby: Standby, seeded: None) -> AsyncIterator[Client]:
    """A client of an app whose statements on the standby may take half a second (its requests 20 s)."""
    settings = make_settings(
        db_dsn, replica_dsns=standby.dsn(db_dsn), replica_statement_timeout_s=0.5, request_timeout_s=20
    )
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as made:
        yield made


async def _on_standby(reads: asyncpg.Connection, seen: list[bool]) -> bool:  # type: ignore[type-arg]
    seen.append(await reads.fetchval("SELECT pg_is_in_recovery()"))
    return seen[-1]


async def test_a_standby_too_slow_is_cancelled_and_the_read_made_on_the_primary(
    impatient: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement on the standby outruns `CANBAO_REPLICA_STATEMENT_TIMEOUT_S` (a standby overloaded):
    the standby cancels it (57014) and the primary answers, well inside the request's own limit."""
    reviewer = await auth_headers(impatient, "reviewer_a")
    read = coverage_report.coverage_report
    on_standby: list[bool] = []

    async def slow(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
        if await _on_standby(reads, on_standby):
            await reads.execute("SELECT pg_sleep(60)")
        return await read(*args, reads=reads, **kwargs)

    monkeypatch.setattr(coverage_report, "coverage_report", slow)
    before = _reads_again("/api/v1/reports/coverage")
    started = time.monotonic()
    answer = await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
    assert answer.status_code == 200, answer.text
    assert on_standby == [True, False]
    assert time.monotonic() - started < 10
    assert _reads_again("/api/v1/reports/coverage") == before + 1


async def test_a_standby_that_says_nothing_is_given_up_and_the_read_made_on_the_primary(
    impatient: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby's process serving the read is stopped (SIGSTOP: a standby hung, or the network to
    it down): it cannot even cancel the statement itself. The client gives up a second after the
    statement's limit, drops that connection, and the primary answers; the standby serves the next
    read on a new connection."""
    reviewer = await auth_headers(impatient, "reviewer_a")
    read = coverage_report.coverage_report
    on_standby: list[bool] = []
    stopped: list[int] = []

    async def silent(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
        if await _on_standby(reads, on_standby) and not stopped:
            stopped.append(reads.get_server_pid())
            os.kill(stopped[0], signal.SIGSTOP)
            await reads.execute("SELECT 1")
        return await read(*args, reads=reads, **kwargs)

    monkeypatch.setattr(coverage_report, "coverage_report", silent)
    try:
        started = time.monotonic()
        answer = await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
        assert answer.status_code == 200, answer.text
        assert on_standby == [True, False]
        assert time.monotonic() - started < 10  # not the request's own limit (20 s)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    again = await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
    assert again.status_code == 200, again.text
    assert on_standby == [True, False, True]


@pytest.mark.parametrize("where", ["begin", "commit"])
async def test_a_standby_silent_at_the_reads_begin_or_end_costs_the_primary_nothing(
    impatient: Client, admin_db_dsn: str, standby: Standby, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The standby's process stops before the read's transaction begins (its BEGIN the first statement
    sent: no position to wait for) or after its reads, before its COMMIT. The client gives up on that
    statement; its connection is closed, not handed back to the pool to wait there, and the request
    is answered 200 — by the primary, or by the standby's reads already made — without the primary's
    connections being dropped as after a failover (before: 503, and the primary's pool dropped)."""
    reviewer = await auth_headers(impatient, "reviewer_a")
    assert (await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)).status_code == 200
    stopped: list[int] = []
    dropped: list[Any] = []
    monkeypatch.setattr(errors, "drop_connections", dropped.append)

    def stop(reads: asyncpg.Connection) -> None:  # type: ignore[type-arg]
        if not stopped:
            stopped.append(reads.get_server_pid())
            os.kill(stopped[0], signal.SIGSTOP)

    if where == "begin":
        caught_up = replicas.caught_up

        async def then_stopped(conn: asyncpg.Connection, lsn: str | None, wait_s: float = replicas.WAIT_S) -> bool:  # type: ignore[type-arg]
            ready = await caught_up(conn, lsn, wait_s)
            stop(conn)
            return ready

        monkeypatch.setattr(replicas, "caught_up", then_stopped)
    else:
        read = coverage_report.coverage_report

        async def read_then_stopped(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
            answer = await read(*args, reads=reads, **kwargs)
            if await reads.fetchval("SELECT pg_is_in_recovery()"):
                stop(reads)
            return answer

        monkeypatch.setattr(coverage_report, "coverage_report", read_then_stopped)
    try:
        answer = await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
        assert answer.status_code == 200, answer.text
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert len(stopped) == 1 and dropped == []
    replica = await asyncpg.connect(standby.dsn(_with_database(admin_db_dsn, "postgres")))
    try:  # its connection was closed: continued, the standby's process finds it so and ends
        for _ in range(500):
            if not await replica.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", stopped[0]):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the silent connection was kept")
    finally:
        await replica.close()


async def test_a_statement_cancelled_elsewhere_while_the_standby_reads_is_not_its_failure(
    impatient: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """57014 is the standby's failure only when its own transaction failed with it: a statement
    cancelled elsewhere (an operator's pg_cancel_backend on the primary) while the standby's read
    stands open is the request's failure, not run again on the primary nor counted."""
    reviewer = await auth_headers(impatient, "reviewer_a")
    on_standby: list[bool] = []

    async def cancelled_elsewhere(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
        await _on_standby(reads, on_standby)
        raise asyncpg.QueryCanceledError("canceling statement due to user request")

    monkeypatch.setattr(coverage_report, "coverage_report", cancelled_elsewhere)
    before = _reads_again("/api/v1/reports/coverage")
    answer = await impatient.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
    assert answer.status_code == 500, answer.text
    assert on_standby == [True]
    assert _reads_again("/api/v1/reports/coverage") == before


def _passed_by(reason: str) -> float:
    return REGISTRY.get_sample_value("canbao_replica_reads_on_primary_total", {"reason": reason}) or 0.0


async def test_with_its_standby_unreachable_a_read_goes_to_the_primary_and_its_own_failure_stays_its_own(
    db_dsn: str, seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby refuses connections: the read is made on the primary and counted for the operator
    (`canbao_replica_reads_on_primary_total{reason="unreachable"}`). A failure of that read is the
    request's own (500): not taken for the database gone (503, the primary's pool dropped) because the
    standby's refusal happened on the way (it once was the failure's context, which the error handler
    follows)."""
    settings = make_settings(db_dsn, replica_dsns="postgresql://canbao_app@127.0.0.1:9/nowhere")
    dropped: list[Any] = []
    monkeypatch.setattr(errors, "drop_connections", dropped.append)
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as client:
        reviewer = await auth_headers(client, "reviewer_a")
        before = _passed_by("unreachable")
        answer = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
        assert answer.status_code == 200, answer.text
        assert _passed_by("unreachable") == before + 1

        async def failing(*args: Any, reads: asyncpg.Connection, **kwargs: Any) -> Any:  # type: ignore[type-arg]
            raise RuntimeError("a bug in the report")

        monkeypatch.setattr(coverage_report, "coverage_report", failing)
        answer = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=reviewer)
        assert answer.status_code == 500, answer.text
        assert dropped == []


async def test_a_standby_behind_is_counted_when_the_primary_reads_for_it(
    client: Client, world: World, admin_db_dsn: str, standby: Standby
) -> None:
    staff = await auth_headers(client, "staff_a")
    async with lagging(admin_db_dsn, standby):
        paid = await client.post(
            "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": f"pay-{uuid.uuid4()}"}
        )
        assert paid.status_code == 201, paid.text
        before = _passed_by("behind")
        assert await funded(client, staff) == 2  # the clerk's own write: the standby lags, the primary reads
        assert _passed_by("behind") == before + 1
