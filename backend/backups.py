"""`canbao backup` and `canbao restore`: the embedded database in PostgreSQL's custom dump format,
made and read by the embedded server's own pg_dump and pg_restore.

A backup holds the database alone: the keys in the data folder (the signing key, and any other
file beside `pgdata/`) are never in it and are kept apart by the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg

from backend import migrate, roles
from backend.embedded import EmbeddedDatabase, EmbeddedPostgres

MAGIC = b"PGDMP"  # the first bytes of a custom-format dump
_DUMPED = re.compile(r'dumping contents of table "(?:[^"]*\.)?([^"]+)"')
_RESTORED = re.compile(r'processing data for table "(?:[^"]*\.)?([^"]+)"')

# (tables done, tables in all, the table at hand)
Progress = Callable[[int, int, str], None]


class BackupError(Exception):
    """A backup or a restore that cannot be done, in one line for the operator."""


@dataclass(frozen=True)
class BackupSummary:
    tables: int
    bytes: int
    revision: str | None
    keys: list[str]  # files of the data folder the backup does not hold


@dataclass(frozen=True)
class RestoreSummary:
    tables: int
    revision: str | None
    keys: list[str]  # files of the data folder beside pgdata/ (the keys put back)


def key_files(data_dir: Path) -> list[str]:
    """Everything in the data folder but the database: what has to be kept beside a backup."""
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.name != "pgdata")


@contextlib.contextmanager
def _embedded(data_dir: Path) -> Iterator[tuple[EmbeddedPostgres, EmbeddedDatabase]]:
    pg = EmbeddedPostgres(data_dir)
    try:
        pg.start()
        yield pg, pg.prepare()
    finally:
        pg.release()


def backup(data_dir: Path, target: Path, progress: Progress) -> BackupSummary:
    """Dumps the embedded database to `target` (custom format, only readable by its owner). The
    file appears only when complete: a dump cut short leaves the previous `target` as it was."""
    partial = target.with_name(target.name + ".partial")
    with _embedded(data_dir) as (_, db):
        tables, revision = asyncio.run(_describe(db.admin_dsn))
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise BackupError(f"cannot write {partial}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                _run_tool(
                    [str(db.bin_dir / "pg_dump"), "--format=custom", "--verbose", f"--dbname={db.admin_dsn}"],
                    _DUMPED,
                    tables,
                    progress,
                    stdout=out,
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return BackupSummary(tables=tables, bytes=target.stat().st_size, revision=revision, keys=key_files(data_dir))


def restore(data_dir: Path, source: Path, progress: Progress, *, force: bool = False) -> RestoreSummary:
    """Loads a backup into the embedded database, which must be empty (a fresh data folder) unless
    `force`; then migrates it to head and applies the grants. Nothing is half-restored: the load
    is one transaction. No other canbao process may use the data folder meanwhile."""
    try:
        with source.open("rb") as f:
            magic = f.read(len(MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror}") from exc
    if magic != MAGIC:
        raise BackupError(f"{source} is not a backup made by canbao backup (a PostgreSQL custom-format dump)")
    with _embedded(data_dir) as (pg, db):
        tables = _tables_in(db.bin_dir, source)
        if others := pg.other_processes():
            raise BackupError(
                f"canbao processes use {data_dir} (pid {', '.join(map(str, others))}): stop them before restoring"
            )
        has_tables, revision = asyncio.run(_existing_schema(db))
        if has_tables:
            if not force:
                raise BackupError(
                    f"the database in {data_dir} is not empty (schema at {revision or 'no revision'}); restoring "
                    "would replace everything in it: restore into an empty data folder, or add --force"
                )
            asyncio.run(_recreate(db))
        _run_tool(
            [
                str(db.bin_dir / "pg_restore"),
                "--verbose",
                "--no-owner",  # everything belongs to the owner role, whoever owned it where the backup was made
                "--no-acl",  # the grants are applied below, for this installation's application role
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={db.owner_dsn}",
                str(source),
            ],
            _RESTORED,
            tables,
            progress,
        )
        migrate.upgrade(db.owner_dsn, app_role=roles.APP_ROLE)
        revision_now, epoch = asyncio.run(_after_restore(db.admin_dsn))
        if epoch is not None:
            try:
                pg.stop_and_set_xid_epoch(epoch)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                detail = (
                    exc.stderr.decode(errors="replace").strip()
                    if isinstance(exc, subprocess.CalledProcessError)
                    else exc
                )
                raise BackupError(
                    f"restored, but the transaction ids could not be moved past the restored ones ({detail}); "
                    f"stop every canbao process using {data_dir} and restore again with --force"
                ) from exc
    return RestoreSummary(tables=tables, revision=revision_now, keys=key_files(data_dir))


def _run_tool(
    argv: list[str], marker: re.Pattern[str], total: int, progress: Progress, stdout: IO[bytes] | None = None
) -> None:
    """Runs pg_dump or pg_restore, turning its --verbose lines about tables into progress."""
    name = Path(argv[0]).name
    tail: deque[str] = deque(maxlen=8)
    done = 0
    process = subprocess.Popen(  # noqa: S603 - the embedded server's own program, with our arguments
        argv,
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if match := marker.search(line):
                done += 1
                progress(min(done, total), total, match.group(1))
            elif "error" in line.lower() or "warning" in line.lower():
                tail.append(line.strip())
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0:
        detail = " / ".join(tail) or f"exit code {code}"
        raise BackupError(f"{name} failed: {detail}")


def _tables_in(bin_dir: Path, source: Path) -> int:
    """Tables with data in a dump (its table of contents), for the progress line."""
    listed = subprocess.run(  # noqa: S603 - the embedded server's own program, with our arguments
        [str(bin_dir / "pg_restore"), "--list", str(source)], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        raise BackupError(f"{source} cannot be read as a backup: {listed.stderr.strip()[:300]}")
    return sum(1 for line in listed.stdout.splitlines() if not line.startswith(";") and " TABLE DATA " in line)


async def _describe(admin_dsn: str) -> tuple[int, str | None]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        tables: int = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
        return tables, await migrate.current_revision(conn)
    finally:
        await conn.close()


async def _existing_schema(db: EmbeddedDatabase) -> tuple[bool, str | None]:
    """Whether Canbao's database holds any table, and its schema revision."""
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        has_tables: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r')"
        )
        return has_tables, await migrate.current_revision(conn)
    finally:
        await conn.close()


async def _recreate(db: EmbeddedDatabase) -> None:
    conn = await asyncpg.connect(db.cluster_dsn)
    try:
        name, owner = roles.quote_ident(db.name), roles.quote_ident(roles.OWNER_ROLE)
        await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name} OWNER {owner}")
    finally:
        await conn.close()


async def _after_restore(admin_dsn: str) -> tuple[str | None, int | None]:
    """The schema revision, and the transaction-id epoch to move to when the restored rows hold
    transaction ids (the sync changes' xid8, the pull floor) at or above this server's: a pull
    cursor from before the restore would otherwise be ahead of every change made after it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        revision = await migrate.current_revision(conn)
        highest: int | None = await conn.fetchval(
            """
            SELECT greatest((SELECT max(xid)::text::bigint FROM sync_changes),
                            (SELECT max(floor_xid)::text::bigint FROM sync_horizon))
            """
        )
        current: int = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
        if highest is None or highest < current:
            return revision, None
        return revision, (highest >> 32) + 1
    finally:
        await conn.close()
