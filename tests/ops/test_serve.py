"""`canbao serve` as a real process: the embedded PostgreSQL's life cycle, an external database,
and login rate limits that hold across two workers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from backend import migrate
from backend.app import create_app, serve_app
from backend.auth.passwords import Passwords
from backend.db import init_connection
from backend.tools import demo
from tests.conftest import JWT_SECRET, PgServer, make_settings
from tests.processes import (
    FAST_HASHING,
    clean_env,
    data_dir,
    free_port,
    postgres_processes,
    run_cli,
    serving,
    wait_for_no_postgres,
)

TERMINATED = (0, 128 + signal.SIGTERM)
INTERRUPTED = (0, 128 + signal.SIGINT)


def postmasters(folder: Path) -> list[psutil.Process]:
    return [p for p in postgres_processes(folder) if Path(p.info["cmdline"][0]).name == "postgres"]


def login(url: str, username: str, password: str) -> httpx.Response:
    return httpx.post(url + "/api/v1/auth/login", json={"username": username, "password": password}, timeout=10)


def test_embedded_server_starts_migrates_serves_and_keeps_its_data_across_restarts() -> None:
    password = "zhang-san-pass-2026"
    with data_dir() as folder:
        env = clean_env()
        cli_env = clean_env(**FAST_HASHING)
        with serving("--data-dir", str(folder), "serve", env=env) as server:
            server.wait_ready()
            ready = httpx.get(server.url + "/ready", timeout=5).json()
            assert ready["schema_revision"] == migrate.head_revision()
            [postmaster] = postmasters(folder)
            assert (folder / "pgdata" / "PG_VERSION").exists()

            # CLI commands beside the running server share its database, and leave it running.
            seeded = run_cli("--data-dir", str(folder), "demo", "seed", env=cli_env)
            assert seeded.returncode == 0, seeded.stderr
            added = run_cli(
                "--data-dir",
                str(folder),
                "user",
                "add",
                "zhang_san",
                "--role",
                "township_staff",
                "--division",
                "330106001000",
                "--password-stdin",
                env=cli_env,
                stdin=password + "\n",
            )
            assert added.returncode == 0, added.stderr
            assert "created zhang_san (township_staff, 330106001000)" in added.stdout
            assert [p.pid for p in postmasters(folder)] == [postmaster.pid]
            assert login(server.url, "zhang_san", password).status_code == 200

            # The job worker `serve` started is started again when it dies, and imports a list handed to it.
            [job_worker] = _job_workers(server.pid)
            job_worker.kill()
            deadline = time.monotonic() + 20
            while [p.pid for p in _job_workers(server.pid)] in ([], [job_worker.pid]):
                assert time.monotonic() < deadline, "the job worker was not started again"
                time.sleep(0.2)
            assert re.search(rf"\b{job_worker.pid}\b.*-9", server.output()), server.output()[-2000:]  # said
            token = login(server.url, "civil", demo.DEMO_PASSWORD).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            stored = httpx.post(
                server.url + "/api/v1/eligibility/lists?background=true",
                files={"file": ("名单.csv", "身份证号,姓名\r\n110105198001010016,张三\r\n".encode())},
                data={"type": "di_bao", "effective_from": "2025-09-01"},
                headers=headers,
                timeout=10,
            )
            assert stored.status_code == 202, stored.text
            deadline = time.monotonic() + 30
            while (job := httpx.get(server.url + stored.headers["location"], headers=headers).json())["state"] in (
                "queued",
                "running",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(0.2)
            assert (job["state"], job["result"]["rows_loaded"]) == ("succeeded", 1), job

            code = server.stop(signal.SIGTERM)
            assert code in TERMINATED, server.output()[-3000:]
            assert wait_for_no_postgres(folder) == []

        with serving("--data-dir", str(folder), "serve", env=env) as server:
            server.wait_ready()
            # The same data: the user added while the first server ran logs in after the restart.
            response = login(server.url, "zhang_san", password)
            assert response.status_code == 200, response.text
            assert response.json()["token_type"] == "bearer"
            assert login(server.url, "staff_a", demo.DEMO_PASSWORD).status_code == 200

            code = server.stop(signal.SIGINT, group=True)  # Ctrl-C: the terminal signals the group
            assert code in INTERRUPTED, server.output()[-3000:]
            assert wait_for_no_postgres(folder) == []


def test_sigterm_while_the_embedded_server_starts_leaves_no_postgres_behind() -> None:
    with data_dir() as folder, serving("--data-dir", str(folder), "serve", env=clean_env()) as server:
        # Strike in the riskiest moment: the postmaster exists but Canbao has not registered it yet.
        deadline = time.monotonic() + 30
        while not postmasters(folder):
            assert server.proc.poll() is None, server.output()[-3000:]
            assert time.monotonic() < deadline, "no postmaster started"
        code = server.stop(signal.SIGTERM)
        assert code in TERMINATED, server.output()[-3000:]
        assert wait_for_no_postgres(folder) == []


def test_serve_with_database_url_starts_no_postgres_of_its_own(pg_server: PgServer) -> None:
    name = pg_server.create_database()
    dsn = pg_server.dsn(name)
    try:
        with data_dir() as folder:
            env = clean_env(DATABASE_URL=pg_server.app_dsn(name), CANBAO_JWT_SECRET=JWT_SECRET)
            with serving("--data-dir", str(folder / "data"), "serve", env=env, cwd=folder) as server:
                server.wait_ready()
                tree = psutil.Process(server.pid).children(recursive=True)
                assert [p.name() for p in tree if p.name() in {"postgres", "pg_ctl", "initdb"}] == []
                assert postgres_processes(folder) == []
                assert sorted(p.name for p in folder.iterdir()) == []  # no data folder, here or by flag
                assert asyncio.run(_connections(dsn, name)) >= 1  # it serves from the database it was given
                # On uvicorn's C event loop and HTTP parser (pyproject.toml says why), not asyncio's and h11.
                loaded = [m.path for m in psutil.Process(server.pid).memory_maps()]
                assert [x for x in ("/uvloop/", "/httptools/") if not any(x in path for path in loaded)] == []
                code = server.stop(signal.SIGTERM)
                assert code in TERMINATED, server.output()[-3000:]
    finally:
        pg_server.drop_database(name)


def test_serve_gives_metrics_on_a_loopback_port_of_their_own_and_none_on_the_api_port(pg_server: PgServer) -> None:
    name = pg_server.create_database()
    try:
        port = free_port()
        env = clean_env(
            DATABASE_URL=pg_server.app_dsn(name), CANBAO_JWT_SECRET=JWT_SECRET, CANBAO_METRICS_PORT=str(port)
        )
        with serving("serve", env=env) as server:
            server.wait_ready()
            on_api = httpx.get(server.url + "/metrics", timeout=5)
            assert on_api.status_code == 404
            assert "canbao_http_requests_total" not in on_api.text
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert scraped.status_code == 200
            assert 'route="/ready"' in scraped.text
            assert "canbao_db_pool_connections" in scraped.text
            # Bound to loopback alone: a client on another machine (or a proxy in front of the API
            # port, whatever address it forwards from) cannot reach it.
            listening = {
                c.laddr.ip
                for c in psutil.Process(server.pid).net_connections("inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            }
            assert listening == {"127.0.0.1"}
            for address in _outside_addresses():
                with pytest.raises(httpx.ConnectError):
                    httpx.get(f"http://{address}:{port}/metrics", timeout=5)
            code = server.stop(signal.SIGTERM)
            assert code in TERMINATED, server.output()[-3000:]
    finally:
        pg_server.drop_database(name)


def _outside_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback: where other machines reach it."""
    return [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


async def _connections(dsn: str, database: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'canbao'", database
        )
        return count
    finally:
        await conn.close()


def test_login_rate_limit_holds_across_two_workers(pg_server: PgServer) -> None:
    name = pg_server.create_database()
    dsn = pg_server.dsn(name)
    try:
        asyncio.run(_seed(dsn))
        env = clean_env(
            DATABASE_URL=pg_server.app_dsn(name),
            CANBAO_JWT_SECRET=JWT_SECRET,
            CANBAO_LOGIN_MAX_FAILURES_PER_USER="5",
            CANBAO_LOGIN_MAX_FAILURES_PER_ADDRESS="1000",
            CANBAO_POOL_MAX_SIZE="8",
            **FAST_HASHING,
        )
        with serving("serve", "--workers", "2", env=env) as server:
            server.wait_ready()
            workers = _workers(server.pid)
            assert len(workers) == 2
            metrics_dir = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])

            # Twelve wrong passwords at once for one user: five are checked, seven refused.
            before = _logins_by_worker(metrics_dir, workers)
            statuses = asyncio.run(_burst(server.url, "staff_a", attempts=12))
            assert statuses == Counter({401: 5, 429: 7})
            # The limit now refuses even the right password.
            assert login(server.url, "staff_a", demo.DEMO_PASSWORD).status_code == 429
            after = _logins_by_worker(metrics_dir, workers, total=sum(before.values()) + 13)
            served = [after[pid] - before[pid] for pid in after]
            assert sum(served) == 13, served

            # The kernel hands a burst's connections to whichever worker wakes first, often all to
            # one (on a busy machine, dozens of times in a row). Bursts at further (unknown) usernames
            # repeat until one was shared by both workers: a limit kept in each worker's memory would
            # then let more than five through.
            attempt = 0
            while not all(served):
                attempt += 1
                assert attempt <= 100, "no burst was shared by the two workers"
                before = after
                statuses = asyncio.run(_burst(server.url, f"nobody_{attempt}", attempts=12))
                assert statuses == Counter({401: 5, 429: 7}), (attempt, statuses)
                after = _logins_by_worker(metrics_dir, workers, total=sum(before.values()) + 12)
                served = [after[pid] - before[pid] for pid in after]
                assert sum(served) == 12, served
            assert login(server.url, "admin", demo.DEMO_PASSWORD).status_code == 200  # others unaffected
            code = server.stop(signal.SIGTERM)
            assert code in TERMINATED, server.output()[-3000:]
            assert not metrics_dir.exists()
    finally:
        pg_server.drop_database(name)


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        await demo.seed(conn, Passwords(1, 64))
    finally:
        await conn.close()


def _job_workers(parent: int) -> list[psutil.Process]:
    """`canbao serve`'s job workers (`python -m backend.cli worker`) that are running."""
    found = []
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline()[-2:] == ["backend.cli", "worker"] and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def _workers(parent: int, timeout: float = 20) -> list[psutil.Process]:
    """The uvicorn workers: children of `canbao serve` started by multiprocessing's spawn."""
    deadline = time.monotonic() + timeout
    while True:
        workers = [p for p in psutil.Process(parent).children() if any("spawn_main" in part for part in p.cmdline())]
        if len(workers) >= 2 or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


def _logins_by_worker(metrics_dir: Path, workers: list[psutil.Process], total: int = 0) -> dict[int, int]:
    """Login requests answered by each worker, from its own Prometheus file (`counter_<pid>.db`).
    A request is counted just after its response is sent: waits (briefly) for `total` of them."""
    deadline = time.monotonic() + 5
    while True:
        counts = {worker.pid: _logins_counted(metrics_dir / f"counter_{worker.pid}.db") for worker in workers}
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def _logins_counted(source: Path) -> int:
    if not source.exists():
        return 0
    total = 0
    with tempfile.TemporaryDirectory() as alone:
        shutil.copy(source, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == "canbao_http_requests_total" and sample.labels["route"] == "/api/v1/auth/login":
                    total += int(sample.value)
    return total


async def _burst(url: str, username: str, attempts: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=attempts, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/auth/login", json={"username": username, "password": f"wrong-password-{i}"})
                for i in range(attempts)
            )
        )
    return Counter(r.status_code for r in responses)


def test_embedded_server_with_two_workers_stops_them_all_on_sigterm() -> None:
    with data_dir() as folder:
        env = clean_env(**FAST_HASHING)
        with serving("--data-dir", str(folder), "serve", "--workers", "2", env=env) as server:
            server.wait_ready()
            children = _workers(server.pid)
            assert len(children) == 2
            code = server.stop(signal.SIGTERM)
            assert code in TERMINATED, server.output()[-3000:]
        assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
        assert wait_for_no_postgres(folder) == []


async def test_only_the_served_app_freezes_what_its_start_up_made_out_of_the_collector(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen: list[bool] = []
    thresholds: list[tuple[int, ...]] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: thresholds.append(t))
    async with AsyncTestClient(create_app(make_settings(db_dsn), configure_logs=False)):
        assert frozen == []  # a test's app: what the test process holds stays collectable
        assert thresholds == []
    async with AsyncTestClient(serve_app(make_settings(db_dsn), configure_logs=False)):
        assert frozen == [True]
        # The young collected after 10,000 new containers, not CPython's 700 (see GC_THRESHOLDS).
        assert thresholds == [(10_000, 10, 10)]
