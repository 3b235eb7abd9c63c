"""The app through a failover (issue 21): a primary that is demoted (refuses writes) or dies while
the app runs. The DSN lists two real PostgreSQL servers with `target_session_attrs=read-write`, as
a Patroni cluster's does (deploy/cluster/): the old primary — a second embedded server made here —
first, the suite's server second. A request caught in the switch answers 503 `try_again` and keeps
nothing; the next one reaches the other server without the app being restarted.

The two servers do not replicate (that is the cluster recipe's business): each database is seeded
alike, and a token issued by the old primary is not known to the new one, so the test logs in again
after the switch — in a cluster the session row is on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import errors, migrate
from backend.app import create_app, job_handlers
from backend.auth.passwords import Passwords
from backend.db import create_pool, init_connection
from backend.embedded import EmbeddedPostgres
from backend.jobs import worker
from backend.tools import demo
from tests.api.test_hostile_input import assert_try_again
from tests.conftest import KEYS, PgServer, _admin_execute, _create_roles, _with_database, auth_headers, make_settings
from tests.factories import ID_NUMBERS, member

Client = AsyncTestClient[Litestar]


@dataclass
class OtherServer:
    embedded: EmbeddedPostgres
    admin_dsn: str  # the superuser, database `postgres`
    template: str

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.admin_dsn).query)["host"][0]


@pytest.fixture(scope="module")
def old_primary() -> Iterator[OtherServer]:
    """A second PostgreSQL, with the suite's roles and a migrated template: the primary that fails."""
    folder = tempfile.mkdtemp(prefix="canbao-test-failover-")
    embedded = EmbeddedPostgres(folder, database="postgres")
    try:
        admin_dsn = embedded.start()
        asyncio.run(_admin_execute(admin_dsn, "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"))
        asyncio.run(_create_roles(admin_dsn))
        template = "canbao_tpl_" + uuid.uuid4().hex[:8]
        asyncio.run(_admin_execute(admin_dsn, f'CREATE DATABASE "{template}" OWNER "canbao_test_owner"'))
        server = OtherServer(embedded, admin_dsn, template)
        migrate.upgrade(
            _with_database(admin_dsn, template, "canbao_test_owner"), app_role="canbao_test_app", keyring=KEYS
        )
        yield server
    finally:
        if embedded.postmaster_pid is not None and os.path.exists(embedded.pgdata / "postmaster.pid"):
            embedded.release()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def cluster_dsn(
    old_primary: OtherServer, pg_server: PgServer, database_name: str, passwords: Passwords
) -> AsyncIterator[str]:
    """The app role's DSN over both servers, the old primary first; the same database on each, seeded."""
    await _admin_execute(
        old_primary.admin_dsn,
        f'CREATE DATABASE "{database_name}" TEMPLATE "{old_primary.template}" OWNER "canbao_test_owner"',
    )
    for admin in (_with_database(old_primary.admin_dsn, database_name), pg_server.dsn(database_name)):
        conn = await asyncpg.connect(admin, server_settings={"timezone": "UTC"})
        await init_connection(conn)
        try:
            await demo.seed(conn, passwords)
        finally:
            await conn.close()
    new_socket = parse_qs(urlsplit(pg_server.admin_dsn).query)["host"][0]
    app_dsn = pg_server.app_dsn(database_name)
    base = app_dsn.split("?", 1)[0]
    yield f"{base}?host={old_primary.socket_dir},{new_socket}&target_session_attrs=read-write"
    if old_primary.embedded.postmaster_pid is not None:  # not after the test that kills it
        await _admin_execute(old_primary.admin_dsn, f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')


async def households(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM households")
        return count
    finally:
        await conn.close()


def household(number: int) -> dict[str, Any]:
    return {
        "village_code": "330106001001",
        "household_no": f"{number:04d}",
        "members": [member(ID_NUMBERS[number], "张三")],
    }


async def _reloaded(admin_dsn: str, setting: str, value: str) -> None:
    """Waits until the postmaster has read the configuration again: a new session then sees `value`.
    `pg_reload_conf()` only signals it; it re-reads the files and signals every backend in one step,
    before it starts another, so an open backend applies the setting before its next command (a
    request sent at once could otherwise run on the old one: CI found a write let through)."""
    for _ in range(200):
        conn = await asyncpg.connect(admin_dsn)
        try:
            if await conn.fetchval(f"SHOW {setting}") == value:
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.025)
    raise AssertionError(f"{setting} never became {value}")


async def test_a_demoted_primary_is_a_503_then_the_app_writes_to_the_new_one(
    old_primary: OtherServer, pg_server: PgServer, database_name: str, cluster_dsn: str
) -> None:
    old_db = _with_database(old_primary.admin_dsn, database_name)
    new_db = pg_server.dsn(database_name)
    settings = make_settings(cluster_dsn, pool_min_size=2, pool_max_size=2, maintenance_interval_s=0)
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as client:
        staff = await auth_headers(client, "staff_a")
        first = await client.post("/api/v1/households", json=household(1), headers=staff)
        assert first.status_code == 201, first.text
        assert (await households(old_db), await households(new_db)) == (1, 0)

        # Patroni demotes by restarting; a proxy left pointing at a standby, or an operator's
        # read-only switch, leaves the connections open and refusing writes: the harder case.
        await _admin_execute(
            old_primary.admin_dsn, "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"
        )
        try:
            await _reloaded(old_primary.admin_dsn, "default_transaction_read_only", "on")
            caught = await client.post("/api/v1/households", json=household(2), headers=staff)
            assert_try_again(caught)
            # The pool's connections were dropped: the next ones skip the read-only server. The
            # token was issued by the old primary's database, which the new one does not share here.
            staff = await auth_headers(client, "staff_a")
            again = await client.post("/api/v1/households", json=household(2), headers=staff)
            assert again.status_code == 201, again.text
            assert (await households(old_db), await households(new_db)) == (1, 1)
        finally:
            await _admin_execute(
                old_primary.admin_dsn, "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"
            )


async def test_the_job_worker_outlives_a_moment_without_a_writable_server(
    old_primary: OtherServer, database_name: str, cluster_dsn: str
) -> None:
    """While Patroni promotes a standby no host of the DSN is writable and asyncpg raises
    TargetServerAttributeNotMatched (not an OSError nor a PostgresError): the worker waits and
    listens again once a server takes writes (bench/failover.py found it dead after a cut)."""
    admin = _with_database(old_primary.admin_dsn, database_name)
    only_old = admin + "&target_session_attrs=read-write"
    pool = await create_pool(only_old, min_size=1, max_size=2)
    stop = asyncio.Event()
    settings = make_settings(only_old, job_poll_s=30, job_lease_s=2, job_heartbeat_s=0.1)
    loop = asyncio.create_task(worker.work(pool, job_handlers(), settings, stop))
    listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
    conn = await asyncpg.connect(admin)
    try:

        async def session(other_than: int | None) -> int | None:
            for _ in range(100):
                found = await conn.fetchval(listening)
                if found is not None and found != other_than:
                    return int(found)
                await asyncio.sleep(0.05)
            return None

        first = await session(None)
        assert first is not None
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await conn.execute("SELECT pg_reload_conf()")
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", first)
            await asyncio.sleep(1.5)  # the worker tries again, and no host is writable
            assert not loop.done(), loop.exception()
        finally:
            await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await conn.execute("SELECT pg_reload_conf()")
        assert await session(first) is not None, "no new listening session"
        assert not loop.done()
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await conn.close()
        await pool.close()


async def test_a_primary_killed_mid_request_is_a_503_with_nothing_kept_then_the_app_goes_on(
    old_primary: OtherServer, pg_server: PgServer, database_name: str, cluster_dsn: str
) -> None:
    """`kill -9` of the old primary's postmaster while a write waits on a lock there (last in this
    module: the server stays down)."""
    old_db = _with_database(old_primary.admin_dsn, database_name)
    new_db = pg_server.dsn(database_name)
    settings = make_settings(cluster_dsn, pool_min_size=2, pool_max_size=2, maintenance_interval_s=0)
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as client:
        staff = await auth_headers(client, "staff_a")
        acknowledged = await client.post("/api/v1/households", json=household(4), headers=staff)
        assert acknowledged.status_code == 201, acknowledged.text
        locked, done = threading.Event(), threading.Event()
        pid = old_primary.embedded.postmaster_pid
        assert pid is not None

        async def holder() -> None:
            other = await asyncpg.connect(old_db)
            try:
                async with other.transaction():
                    await other.execute("LOCK TABLE households IN ACCESS EXCLUSIVE MODE")
                    locked.set()
                    for _ in range(1000):
                        waiting = await other.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'canbao' "
                            "AND wait_event_type = 'Lock'"
                        )
                        if waiting:
                            os.kill(pid, signal.SIGKILL)
                            break
                        await asyncio.sleep(0.01)
                    else:
                        raise AssertionError("the request never waited for the lock")
                    for _ in range(200):  # the session ends with the server
                        if other.is_closed():
                            break
                        await asyncio.sleep(0.05)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                done.set()
                other.terminate()

        side = asyncio.create_task(asyncio.to_thread(asyncio.run, holder()))
        assert await asyncio.to_thread(locked.wait, 30)
        caught = await client.post("/api/v1/households", json=household(3), headers=staff)
        await side
        assert done.is_set()
        assert_try_again(caught)

        staff = await auth_headers(client, "staff_a")  # the old primary is gone: the new one answers
        again = await client.post("/api/v1/households", json=household(3), headers=staff)
        assert again.status_code == 201, again.text
        assert await households(new_db) == 1
    # Nothing of the caught request on the old primary once it is back: crash recovery replays the
    # WAL, and the transaction never committed.
    embedded = old_primary.embedded
    bin_dir, pgdata = embedded.bin_dir, embedded.pgdata
    with contextlib.suppress(psutil.NoSuchProcess):
        embedded.release()  # its postmaster is dead: pgserver's own stop fails, then finds nothing to kill
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-w"]
    user = pgdata.owner()
    start = [*pg_ctl, "-o", f'-h "" -k {pgdata}', "-l", str(pgdata / "restart.log"), "start"]
    await asyncio.to_thread(subprocess.run, start, check=True, capture_output=True, user=user)
    try:
        assert await households(old_db) == 1  # the acknowledged household, not the caught one
    finally:
        stop = [*pg_ctl, "-m", "fast", "stop"]
        await asyncio.to_thread(subprocess.run, stop, check=True, capture_output=True, user=user)


def test_a_dead_connection_inside_an_exception_group_is_the_database_unavailable() -> None:
    """Litestar raises what a dependency's clean-up raised (the transaction's rollback on a connection
    the killed primary closed) as an ExceptionGroup from the handler's own error: that is a 503
    `try_again` too, not a 500 (seen by bench/failover.py when the leader node was killed mid-push)."""
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    with pytest.raises(ExceptionGroup) as caught:
        try:
            raise ValueError("the handler's own error")
        except ValueError as handler_error:
            raise ExceptionGroup("Exceptions occurred during cleanup of dependencies", [lost]) from handler_error
    assert errors._unavailable_cause(caught.value) is lost
    assert errors._unavailable_cause(ValueError("a bug")) is None


CLUSTER_TOOLS = ("patroni", "etcd", "ip", "/usr/lib/postgresql/15/bin/postgres")


@pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(tool) is None for tool in CLUSTER_TOOLS),
    reason="a real Patroni cluster needs root and Debian's patroni etcd-server postgresql-15 (.ci/run installs them)",
)
def test_a_real_cluster_survives_a_killed_leader_and_a_leader_cut_off_etcd() -> None:
    """bench/failover.py, short (about 3 minutes): a three-node Patroni cluster in network namespaces,
    the leader killed, then (a new cluster) the leader cut off etcd; after each, every acknowledged
    write once on the new primary, nothing half-applied, no row only on the old primary, the
    simulator's invariants, the audit chain, a job run through a new LISTEN session, the synchronous
    standby promoted. It needs root and Patroni: .ci/run installs them, so CI runs it; elsewhere it is skipped."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "failover.py"
    short = ["--before", "8", "--after", "5", "--counter-households", "3000", "--tablets", "4", "--sim-tablets", "2"]
    offset = os.environ.get("CANBAO_CLUSTER_PORT_OFFSET", "200")  # clear of cluster.sh's own ports
    done = subprocess.run(
        [sys.executable, str(bench), "--port-offset", offset, *short],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    assert "kill: failover_s=" in last and "cut: failover_s=" in last
    assert last.count("lost=0 duplicated=0 half_applied=0") == 2
