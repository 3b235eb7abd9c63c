"""What the benchmarks share: an embedded PostgreSQL with the demo district, servers run as child
processes that are always stopped (error, Ctrl-C, SIGTERM), identity numbers, the key file that
seals them, and the load loop.

Not a benchmark itself; `household_create.py`, `search_by_id.py` and `payments.py` import it from this folder.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import httpx
import psutil
from _http import Client, Reply

from backend import clock as backend_clock

if TYPE_CHECKING:
    from backend.crypto import Keyring

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent
CANBAO = shutil.which("canbao", path=str(BIN)) or "canbao"

WORKERS = 1  # uvicorn workers, ours and the baseline alike
POOL_SIZE = 10  # asyncpg connections per worker, ours and the baseline alike (Canbao's default maximum)
JWT_SECRET = "bench-" + "x" * 40  # a throwaway database; any ≥ 32-byte key will do
DEMO_PASSWORD = "canbao-demo-2026"  # noqa: S105 (the demo district's published password)
TOWNSHIP_A_VILLAGES = ("330106001001", "330106001002", "330106001201")
# The business day the benchmarks run on, as the test suite's (tests/processes.py): coverage year 2026
# is open, whatever the real date. The benchmark's own business clock (`business_now()`, and backend
# code it runs in-process, such as the simulator's tablets) is pinned there when this module is
# imported and runs on; every canbao process started here gets the instant of its start
# (CANBAO_BUSINESS_CLOCK), so its business clock and the benchmark's agree to within its start-up.
BUSINESS_CLOCK = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
backend_clock.pin(BUSINESS_CLOCK)

# ISO 7064 MOD 11-2, as in GB 11643: weights of the 17 digits, and the check character by sum % 11.
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
# Person n is born on BIRTH_EPOCH + n % BIRTH_DAYS with sequence number n // BIRTH_DAYS: unique for
# n < 1000 * BIRTH_DAYS, birth dates 1940-01-01 … 2008-06-11. `search_by_id.py` does the same in SQL.
BIRTH_EPOCH = date(1940, 1, 1)
BIRTH_DAYS = 25_000
# Birth areas (the number's first 6 digits) for the benchmark's people; the first one that no
# seeded person has is used, so that none of them can clash with the demo population.
AREAS = ("330110", "330111", "330112", "330113", "330114", "330122", "330183", "330185")


def resident_id(n: int, area: str) -> str:
    """The n-th benchmark identity number: valid checksum, real birth date; odd sequence = male."""
    born = BIRTH_EPOCH + timedelta(days=n % BIRTH_DAYS)
    base = f"{area}{born:%Y%m%d}{n // BIRTH_DAYS:03d}"
    assert len(base) == 17, n
    return base + ID_CHECK[sum(int(d) * w for d, w in zip(base, ID_WEIGHTS, strict=True)) % 11]


@functools.cache
def key_file() -> Path:
    """The run's key file (new keys, a throwaway folder): every server, CLI command and worker of the
    run seals and finds identity numbers with it (CANBAO_KEY_FILE), and so does the benchmark."""
    from backend import crypto

    folder = Path(tempfile.mkdtemp(prefix="canbao-bench-keys-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / crypto.KEY_FILE
    crypto.write_key_file(path, crypto.Keyring.generate())
    return path


@functools.cache
def keys() -> Keyring:
    """The keys of `key_file()`, for a benchmark that writes or reads sealed numbers itself."""
    from backend import crypto

    return crypto.read_key_file(key_file())


def unused_area(dsn: str) -> str:
    """A birth area none of the persons already in the database was born in (their numbers are
    sealed: opened here with the run's keys)."""
    from backend import crypto

    async def used() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT id_number_enc FROM persons WHERE id_number_enc IS NOT NULL")
        finally:
            await conn.close()
        keyring = keys()
        return {keyring.open_bytes(crypto.ID_NUMBER, r["id_number_enc"]).decode()[:6] for r in rows}

    taken = asyncio.run(used())
    for area in AREAS:
        if area not in taken:
            return area
    raise RuntimeError(f"every benchmark birth area is taken by seeded persons: {AREAS}")


def parse_args(doc: str | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds: keeps the script working (CI)")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (in a new temporary folder)")
    return p.parse_args()


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`, which stop the servers and the database.
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark like Ctrl-C does: through the clean-up."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def business_now() -> datetime:
    """This instant on the benchmarks' business clock (UTC): BUSINESS_CLOCK at import, running on. The
    benchmarks' collection times, tablets' clocks and 'today' come from here, never the real clock."""
    return backend_clock.now()


def server_env(dsn: str) -> dict[str, str]:
    """This environment without Canbao's or libpq's variables, plus the benchmark's settings: a canbao
    process started with it runs on the benchmarks' business clock (baseline apps ignore it)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL"
        and not k.startswith(("CANBAO_", "PG"))
        and k not in ("PROMETHEUS_MULTIPROC_DIR", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
    }
    env |= {
        "DATABASE_URL": dsn,
        "CANBAO_JWT_SECRET": JWT_SECRET,
        "CANBAO_ARGON2_TIME_COST": "1",
        "CANBAO_ARGON2_MEMORY_KIB": "1024",
        "CANBAO_POOL_MIN_SIZE": str(POOL_SIZE),
        "CANBAO_POOL_MAX_SIZE": str(POOL_SIZE),
        "CANBAO_ACCESS_TOKEN_TTL_S": "3600",  # a full run with its loading outlasts the default 15 minutes
        "CANBAO_METRICS_PORT": "0",  # not scraped here; another canbao may hold the default port
        "CANBAO_KEY_FILE": str(key_file()),
        "CANBAO_LANGUAGE": "en",  # the benchmarks read the commands' summaries: in the source language
        "CANBAO_BUSINESS_CLOCK": business_now().isoformat(),
    }
    return env


@contextlib.contextmanager
def workdir(keep_logs: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="canbao-bench-"))
    try:
        yield path
    finally:
        if keep_logs:
            target = Path(tempfile.mkdtemp(prefix="canbao-bench-logs-"))
            for logfile in path.glob("*.log"):
                shutil.copy(logfile, target / logfile.name)
            log(f"servers' logs kept in {target}")
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    dsn: str
    pgdata: Path

    def postgres_processes(self) -> list[psutil.Process]:
        """The postmaster and its children (backends, walwriter, …): PostgreSQL's share of the CPU."""
        try:
            postmaster = psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []


@contextlib.contextmanager
def database(work: Path) -> Iterator[Database]:
    """An embedded PostgreSQL in `work`, migrated, with the demo district; stopped on the way out."""
    from backend import migrate
    from backend.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(work / "pg")
    try:
        dsn = pg.start()
        log(f"embedded postgres in {pg.pgdata}")
        migrate.upgrade(dsn, keyring=keys())
        seeded = subprocess.run(
            [CANBAO, "demo", "seed"], env=server_env(dsn), capture_output=True, text=True, timeout=300, check=False
        )
        if seeded.returncode != 0:
            raise RuntimeError(f"canbao demo seed failed ({seeded.returncode}): {seeded.stderr[-2000:]}")
        yield Database(dsn, pg.pgdata)
    finally:
        with _uninterrupted():
            pg.release()


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    logfile: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Clean-up runs to its end: a second Ctrl-C must not leave a server or PostgreSQL behind.
    (Every step of it is bounded: the waits below, and pg_ctl's own timeout.)"""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (made for it at start), SIGKILL if it lingers; then
    any process it started (uvicorn workers) that is still alive."""
    family: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        family = psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:  # not reaped yet, so the group id is still ours
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()  # psutil checks the process is the same one (pid and start time)


@contextlib.contextmanager
def server(name: str, argv: list[str], env: dict[str, str], port: int, work: Path) -> Iterator[Server]:
    """Runs `argv` (which listens on `port`) until the block ends; waits until it answers HTTP."""
    logfile = work / f"{name}.log"
    with logfile.open("wb") as out:
        # A session of its own: Ctrl-C reaches only the benchmark, which then stops servers in order.
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    srv = Server(name, f"http://127.0.0.1:{port}", proc, logfile)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} at start:\n{srv.tail()}")
            try:
                httpx.get(srv.url + "/health", timeout=1)  # any answer will do: it is listening
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer within 60 s:\n{srv.tail()}") from None
                time.sleep(0.1)
        log(f"{name} listening on {srv.url} (pid {proc.pid})")
        yield srv
    finally:
        with _uninterrupted():
            _stop(proc)


def canbao_server(dsn: str, work: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [CANBAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]
    return server("canbao", argv, server_env(dsn), port, work)


def baseline_server(module: str, dsn: str, work: Path) -> contextlib.AbstractContextManager[Server]:
    """A bare app of this folder under uvicorn, with the same workers and pool size as ours."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--no-access-log",
        "--no-proxy-headers",
        "--log-level",
        "warning",
    ]
    return server(module, argv, server_env(dsn), port, work)


def login(base_url: str, username: str) -> dict[str, str]:
    """Authorization headers of a demo user."""
    r = httpx.post(base_url + "/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}, timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def ensure_policy(base_url: str, year: int = 2026) -> None:
    """Publishes a policy for `year` unless one exists (the demo seed may publish one)."""
    admin = login(base_url, "admin")
    if httpx.get(f"{base_url}/api/v1/policy-years/{year}", headers=admin, timeout=30).status_code == 200:
        return
    r = httpx.post(
        f"{base_url}/api/v1/policy-years/{year}/versions",
        json={
            "effective_from": f"{year - 1}-09-01",
            "premium_fen": 40000,
            "window_start": f"{year - 1}-09-01",
            "window_end": f"{year - 1}-12-31",
        },
        headers=admin,
        timeout=30,
    )
    if r.status_code not in (200, 201):
        raise RuntimeError(f"publishing the {year} policy answered {r.status_code}: {r.text[:500]}")


Answer = TypeVar("Answer", httpx.Response, Reply)


def expect(response: Answer, status: int) -> Answer:
    """A benchmark of error answers would measure the wrong thing: any other status stops the run."""
    if response.status_code != status:
        method, path = (
            (response.method, response.path)
            if isinstance(response, Reply)
            else (response.request.method, response.request.url.path)
        )
        raise RuntimeError(f"{method} {path} answered {response.status_code}, expected {status}: {response.text[:500]}")
    return response


# CPU seconds used so far by each process of a party, by (pid, start time) (a pid may be reused); the
# key (pid, start time, "exited") of a party's first process holds what its exited children used.
CpuSample = dict[str, dict[tuple[int, float] | tuple[int, float, str], float]]


class CpuMeter:
    """CPU seconds used by the load generator (this process), a server and PostgreSQL: on a
    2-core machine they share the cores, so a figure is only read rightly next to these.

    Counted per process: one that started meanwhile counts from zero; one that exited meanwhile (a
    PostgreSQL backend of a closed connection) is found in its parent's count of exited children,
    less what it had used before the phase."""

    def __init__(self, server: Server, db: Database) -> None:
        self.server = server
        self.db = db

    @staticmethod
    def _seconds(processes: list[psutil.Process]) -> dict[tuple[int, float] | tuple[int, float, str], float]:
        used: dict[tuple[int, float] | tuple[int, float, str], float] = {}
        for i, proc in enumerate(processes):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used[(proc.pid, proc.create_time())] = times.user + times.system
                if i == 0:
                    used[(proc.pid, proc.create_time(), "exited")] = times.children_user + times.children_system
        return used

    def sample(self) -> CpuSample:
        try:
            server = psutil.Process(self.server.process.pid)
            server_procs = [server, *server.children(recursive=True)]
        except psutil.Error:
            server_procs = []
        return {
            "client": self._seconds([psutil.Process()]),
            "server": self._seconds(server_procs),
            "postgres": self._seconds(self.db.postgres_processes()),
        }

    def since(self, before: CpuSample) -> dict[str, float]:
        """CPU seconds each party used since `before` (a `sample()`)."""
        now = self.sample()
        used = {}
        for party, procs in now.items():
            grown = sum(seconds - before[party].get(key, 0.0) for key, seconds in procs.items())
            gone = sum(seconds for key, seconds in before[party].items() if key not in procs)
            used[party] = grown - gone
        return used


@dataclass
class Load:
    """What timed phases did: units completed, wall time, each unit's latency (seconds), and the
    CPU seconds each party used meanwhile."""

    units: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, other: Load) -> None:
        self.units += other.units
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)
        for party, used in other.cpu.items():
            self.cpu[party] = self.cpu.get(party, 0.0) + used

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        ordered = sorted(self.latencies)
        rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
        return ordered[int(rank) - 1] * 1000

    def cpu_per_unit(self) -> str:
        """CPU milliseconds per unit by party, e.g. `client 2.1 server 5.3 postgres 1.9`."""
        if not self.units:
            return "-"
        return " ".join(f"{party} {used * 1000 / self.units:.1f}" for party, used in self.cpu.items())


Unit = Callable[[Client, int], Awaitable[None]]
# The load generator: "lean" (`_http.Client`) or "httpx" (the earlier figures' client, for comparing).
LOAD_CLIENT = os.environ.get("CANBAO_BENCH_CLIENT", "lean")
if LOAD_CLIENT not in ("lean", "httpx"):
    raise SystemExit(f"CANBAO_BENCH_CLIENT is lean or httpx, not {LOAD_CLIENT!r}")


async def run_load(
    base_url: str,
    connections: int,
    unit: Unit,
    *,
    seconds: float | None = None,
    units: int | None = None,
    meter: CpuMeter | None = None,
) -> Load:
    """`connections` clients, each with its own keep-alive connection (`_http.Client`: a load
    generator lighter than the servers it measures; httpx with CANBAO_BENCH_CLIENT=httpx, as the
    figures before 2026-12-07 were measured), run `unit` back to back until `seconds` have passed or
    `units` were done in all."""
    assert (seconds is None) != (units is None)
    result = Load()
    issued = 0

    async def worker(index: int, client: Client) -> None:
        nonlocal issued
        while True:
            if units is not None:
                if issued >= units:
                    return
                issued += 1
            elif time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            await unit(client, index)
            result.latencies.append(time.perf_counter() - t0)
            result.units += 1

    clients: list[Any] = [
        httpx.AsyncClient(base_url=base_url, timeout=60) if LOAD_CLIENT == "httpx" else Client(base_url)
        for _ in range(connections)
    ]
    try:
        cpu_before = meter.sample() if meter else None
        started = time.perf_counter()
        deadline = started + (seconds or 0)
        async with asyncio.TaskGroup() as tg:
            for i, client in enumerate(clients):
                tg.create_task(worker(i, client))
        result.seconds = time.perf_counter() - started
        if meter and cpu_before is not None:
            result.cpu = meter.since(cpu_before)
    finally:
        for client in clients:
            await (client.aclose() if LOAD_CLIENT == "httpx" else client.close())
    return result


def load_average() -> str:
    """The machine's 1-minute load average: other work on the 2 cores skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


@dataclass(frozen=True)
class Side:
    """One of the two things compared: where it listens, one unit of work, and its CPU meter."""

    name: str
    url: str
    unit: Unit
    meter: CpuMeter


@dataclass(frozen=True)
class Amount:
    """How long a phase runs: for `seconds`, or until `units` are done."""

    seconds: float | None = None
    units: int | None = None

    def __str__(self) -> str:
        return f"{self.seconds} s" if self.seconds is not None else f"{self.units} units"


async def compare(
    sides: list[Side], connections: int, *, rounds: int, warmup: Amount, phase: Amount, what: str
) -> dict[str, Load]:
    """Warms each side up, then measures them in turn, `rounds` times, so that drift (other work
    on the machine, tables growing) falls on both alike."""
    for side in sides:
        log(f"warming up {side.name}: {warmup}")
        await run_load(side.url, connections, side.unit, seconds=warmup.seconds, units=warmup.units)
    totals = {side.name: Load() for side in sides}
    for r in range(rounds):
        for side in sides:
            load = await run_load(
                side.url, connections, side.unit, seconds=phase.seconds, units=phase.units, meter=side.meter
            )
            log(
                f"round {r + 1} {side.name}: {load.units} {what} in {load.seconds:.1f} s = {load.rate:.1f}/s, "
                f"p50={load.percentile(50):.2f}ms p99={load.percentile(99):.2f}ms; "
                f"cpu ms per unit: {load.cpu_per_unit()}; load average {load_average()}"
            )
            totals[side.name].add(load)
    return totals
