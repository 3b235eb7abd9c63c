"""`canbao`: serve, migrate, users, divisions, civil-affairs lists, enrolment history, the audit
chain, the demo district, the sync simulator.

Every command works on DATABASE_URL when it is set, else on the embedded PostgreSQL in the data
folder, shared with a `canbao serve` that may be running beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import os
import re
import shutil
import signal
import sys
import tempfile
import unicodedata
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import msgspec

from backend import clock, crypto, i18n, migrate
from backend.auth.passwords import Passwords
from backend.config import Settings, SettingsError
from backend.db import Connection
from backend.errors import DomainError
from backend.i18n import N_, _, terms

T = TypeVar("T")

if TYPE_CHECKING:
    from backend.divisions.service import RowError
    from backend.metrics import MetricsServer


class CommandError(Exception):
    """A mistake of the caller's, or a failure outside Canbao (a file, the database): `main` prints
    it as one line on standard error, never a traceback, and exits with `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    """The command line itself is wrong: exit 2, as argparse does."""

    exit_code = 2


def _settings(args: argparse.Namespace) -> Settings:
    """The settings every command starts by reading; CANBAO_BUSINESS_CLOCK pins the business clock
    here, before anything reads a date (and in `canbao worker` and `serve`'s workers alike)."""
    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["CANBAO_DATA_DIR"] = args.data_dir
    settings = Settings.from_env(env)
    clock.pin_from_settings(settings.business_clock)
    return settings


@contextlib.contextmanager
def database(settings: Settings, *, upgrade: bool = True) -> Iterator[str]:
    """The DSN to work on, as the application role: DATABASE_URL, or the embedded server (started
    or joined, and migrated by its owner role).

    The keys that seal identity numbers are loaded and installed first, and checked against the
    database (a database sealed under other keys stops the command)."""
    if settings.embedded:
        _check_data_folder(settings.data_dir)
    keyring = crypto.load_keyring(settings)
    crypto.install(keyring)
    if settings.database_url is not None:
        _check_reachable(settings.database_url)
        _check_keys(settings.database_url, keyring)
        yield settings.database_url
        return
    from backend.embedded import embedded_database
    from backend.roles import APP_ROLE

    with embedded_database(settings.data_dir, settings.pg_settings, settings.pg_cpu_policy) as db:
        if upgrade:
            migrate.upgrade(db.owner_dsn, app_role=APP_ROLE, keyring=keyring)
        _check_keys(db.app_dsn, keyring)
        yield db.app_dsn


def _check_keys(dsn: str, keyring: crypto.Keyring) -> None:
    try:
        _run(dsn, lambda conn: crypto.check_database(conn, keyring))
    except crypto.CryptoError as exc:
        raise CommandError(f"密钥与数据库不符 / keys do not match the database: {exc}") from None


@contextlib.contextmanager
def owner_database(settings: Settings) -> Iterator[tuple[str, str]]:
    """The owner role's DSN and the application role's name, for `canbao migrate`: the embedded
    server's roles, or CANBAO_OWNER_DATABASE_URL and the role DATABASE_URL connects as. The keys
    are installed first: a migration may seal what is stored in clear."""
    if settings.embedded:
        _check_data_folder(settings.data_dir)
    crypto.install(crypto.load_keyring(settings))
    if settings.database_url is None:
        from backend.embedded import embedded_database
        from backend.roles import APP_ROLE

        with embedded_database(settings.data_dir, settings.pg_settings, settings.pg_cpu_policy) as db:
            yield db.owner_dsn, APP_ROLE
        return
    _check_reachable(settings.database_url)
    if settings.owner_database_url is None:
        raise CommandError(
            "canbao migrate needs CANBAO_OWNER_DATABASE_URL, the role that owns the tables; "
            "DATABASE_URL is the application's role, which may not change the schema"
        )
    _check_reachable(settings.owner_database_url, "CANBAO_OWNER_DATABASE_URL")
    app_role: str = _run(settings.database_url, lambda conn: conn.fetchval("SELECT current_user"))
    yield settings.owner_database_url, app_role


def _check_reachable(dsn: str, variable: str = "DATABASE_URL") -> None:
    """Fails in one line when DATABASE_URL names no server, database or role that answers."""

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=15)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # asyncpg's messages name the host and the role, never the password.
        raise CommandError(f"cannot connect to {variable}: {exc}") from exc


def _check_data_folder(data_dir: str) -> None:
    folder = Path(data_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"cannot use {data_dir} as the data folder: it is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot use {data_dir} as the data folder: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(f"cannot use {data_dir} as the data folder: not writable")


def _read_bytes(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise CommandError(_("cannot read {file}: {error}", file=file, error=exc.strerror)) from exc


def _run(dsn: str, work: Callable[[Connection], Awaitable[T]]) -> T:
    from backend.db import init_connection

    async def main() -> T:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": "canbao-cli", "timezone": "UTC"})
        try:
            await init_connection(conn)
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _passwords(settings: Settings) -> Passwords:
    return Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through `finally`, where the embedded server is stopped.
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    import uvicorn

    from backend.auth.tokens import load_signing_key
    from backend.jobs.supervisor import Supervisor
    from backend.logs import configure_logging

    configure_logging(settings.log_level)
    with database(settings) as dsn:
        key = load_signing_key(settings)
        if settings.database_url is not None:
            _warn_about_role(dsn)
        if args.demo:
            _seed_and_print(settings, dsn)
        # Workers read their settings from the environment: hand them the database (the application
        # role) and the key; the owner's address is for `canbao migrate` alone.
        os.environ["DATABASE_URL"] = dsn
        os.environ["CANBAO_JWT_SECRET"] = key.secret.decode()
        os.environ["CANBAO_KEY_FILE"] = str(crypto.key_path(settings))
        os.environ.pop("CANBAO_OWNER_DATABASE_URL", None)
        metrics_server = _serve_metrics(settings)
        metrics_dir = None
        if args.workers > 1:
            metrics_dir = tempfile.mkdtemp(prefix="canbao-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        print(f"Canbao on http://{args.host}:{args.port}  (OpenAPI: /schema)", file=sys.stderr, flush=True)
        # The job workers: processes of their own, so imports never run on the API's loop; each
        # started again if it dies (backend/jobs/supervisor.py).
        job_workers = Supervisor([sys.executable, "-m", "backend.cli", "worker"], settings.job_workers).start()
        try:
            uvicorn.run(
                "backend.app:serve_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_config=None,
                access_log=False,
                # Behind a load balancer, the client address (for per-address login limits) comes from
                # X-Forwarded-For, trusted only from the proxies listed in CANBAO_FORWARDED_ALLOW_IPS.
                proxy_headers=settings.forwarded_allow_ips is not None,
                forwarded_allow_ips=settings.forwarded_allow_ips,
            )
        finally:
            job_workers.stop()
            if metrics_server is not None:
                metrics_server.close()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _serve_metrics(settings: Settings) -> MetricsServer | None:
    """Prometheus's `/metrics` on CANBAO_METRICS_HOST:CANBAO_METRICS_PORT, apart from the API."""
    if settings.metrics_port == 0:
        return None
    from backend.metrics import MetricsServer

    try:
        server = MetricsServer(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc.strerror or exc} "
            "(CANBAO_METRICS_HOST, CANBAO_METRICS_PORT; 0 turns the listener off)"
        ) from exc
    print(f"Metrics on http://{settings.metrics_host}:{server.port}/metrics", file=sys.stderr, flush=True)
    return server


def _warn_about_role(dsn: str) -> None:
    """The service should run as the application role (README): say so when DATABASE_URL's can do more."""
    from backend.roles import current_role_problems

    for problem in asyncio.run(current_role_problems(dsn)):
        print(f"warning: DATABASE_URL's role {problem}", file=sys.stderr, flush=True)


def cmd_worker(args: argparse.Namespace) -> int:
    """Runs background jobs until stopped (SIGTERM or Ctrl-C); a job under way goes back to the queue."""
    from backend.app import job_handlers
    from backend.audit import chain
    from backend.db import create_pool
    from backend.jobs import worker
    from backend.logs import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level)
    os.nice(settings.job_worker_nice)  # parsing a big file must not slow the API's answers
    with database(settings) as dsn:

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            pool = await create_pool(dsn, 1, 5)
            # The audit chain is sealed here, beside the jobs: off the API's event loop (one worker
            # seals at a time).
            interval = settings.audit_seal_interval_s
            sealer = asyncio.create_task(chain.seal_loop(pool, interval, stop)) if interval > 0 else None
            try:
                await worker.work(pool, job_handlers(), settings, stop)
            finally:
                stop.set()
                if sealer is not None:
                    await sealer
                await pool.close()

        asyncio.run(main())
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recomputes the audit chain; exit 1 naming the first link that does not hold."""
    from backend.audit import chain

    settings = _settings(args)
    with database(settings) as dsn:
        outcome = _run(dsn, lambda conn: chain.verify(conn, dict(args.seal or [])))
    if isinstance(outcome, chain.Broken):
        raise CommandError(str(outcome))
    print(
        f"audit chain intact: {outcome.sealed} rows sealed, head hash {outcome.head_hash.hex()}; "
        f"{outcome.awaiting} newer rows await the sealer"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import alembic.util

    from backend.roles import RoleError

    settings = _settings(args)
    with owner_database(settings) as (dsn, app_role):
        try:
            if args.downgrade:
                migrate.downgrade(dsn, args.downgrade, app_role=app_role, keyring=crypto.keys())
            else:
                migrate.upgrade(dsn, args.revision or "head", app_role=app_role, keyring=crypto.keys())
        except alembic.util.CommandError as exc:  # an unknown revision, found before any step runs
            raise UsageError(f"{exc} (head is {migrate.head_revision()})") from exc
        except RoleError as exc:
            raise CommandError(f"{exc}; the schema is migrated, the grants are not") from exc
        current = _run(dsn, migrate.current_revision)
    print(f"schema at revision {current or 'base'} (head {migrate.head_revision()})")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """The embedded database to FILE (PostgreSQL's custom format); the keys are not in it."""
    from backend import backups

    settings = _settings(args)
    if settings.database_url is not None:
        raise CommandError(_EXTERNAL_BACKUPS)
    _check_data_folder(settings.data_dir)
    target = Path(args.file)
    if target.is_dir():
        raise CommandError(f"cannot write the backup to {args.file}: it is a folder")
    progress = _TableProgress("backing up")
    try:
        summary = backups.backup(Path(settings.data_dir), target, progress.show)
    except backups.BackupError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        progress.done()
    size = f"{summary.bytes / 1_048_576:.1f} MB"
    print(f"backed up {summary.tables} tables (schema at {summary.revision or 'base'}, {size}) to {args.file}")
    if summary.keys:
        print(
            f"not in the backup, keep a copy of them apart: {', '.join(summary.keys)} in {settings.data_dir} "
            "(without them a restored database cannot be read: sessions, query codes, encrypted fields)"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """A backup into the embedded database, which must be empty unless --force."""
    from backend import backups
    from backend.auth.tokens import KEY_FILE

    settings = _settings(args)
    if settings.database_url is not None:
        raise CommandError(_EXTERNAL_BACKUPS)
    _check_data_folder(settings.data_dir)
    if not crypto.key_path(settings).exists():
        # Without them the restored identity numbers could never be read, nor anyone found by number.
        raise CommandError(
            f"{crypto.key_path(settings)} is missing: put back the key file kept apart from the backup "
            "first (the numbers in the backup are sealed under its keys)"
        )
    progress = _TableProgress("restoring")
    try:
        summary = backups.restore(Path(settings.data_dir), Path(args.file), progress.show, force=args.force)
    except backups.BackupError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        progress.done()
    print(f"restored {summary.tables} tables from {args.file} into {settings.data_dir} (schema at {summary.revision})")
    if KEY_FILE not in summary.keys:
        print(
            f"warning: {settings.data_dir} holds no {KEY_FILE}: put back the copy kept with the backup before "
            "`canbao serve`, or a new key is made (everyone logs in again; every household's query code changes)",
            file=sys.stderr,
        )
    return 0


_EXTERNAL_BACKUPS = (
    "canbao backup and restore are for the embedded database; with DATABASE_URL, back up the server "
    "itself (pg_basebackup and WAL archiving: README, Backups)"
)


class _TableProgress:
    """`backing up [#####     ] 12/40 payments` on standard error, when it is a terminal (or CANBAO_PROGRESS=1)."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.shown = False
        self.enabled = sys.stderr.isatty() or os.environ.get("CANBAO_PROGRESS") == "1"

    def show(self, done: int, total: int, table: str) -> None:
        if self.enabled:
            self.shown = True
            bar = "#" * (25 * done // max(total, 1))
            print(f"\r{self.doing} [{bar:<25}] {done}/{total} {table:<30.30}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def cmd_user_add(args: argparse.Namespace) -> int:
    from backend.admin import service as admin
    from backend.auth.passwords import check_password_strength

    settings = _settings(args)
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else _ask_password()
    if not password:
        where = "the first line of standard input" if args.password_stdin else "the password"
        raise CommandError(f"{where} is empty; nothing written")
    # Checked before any database is touched; the message names the field, never its value.
    fields = {
        "username": args.username,
        "password": password,
        "role": args.role,
        "division_code": args.division,
        "full_name": args.full_name,
    }
    try:
        data = msgspec.convert(fields, admin.UserCreate)
    except msgspec.ValidationError as exc:
        raise CommandError(f"{_field_problem(exc)}; nothing written") from exc
    if (why := check_password_strength(password)) is not None:
        raise CommandError(f"password {why}; nothing written")
    with database(settings) as dsn:

        async def work(conn: Connection) -> admin.User:
            async with conn.transaction():
                return await admin.create_user(conn, None, _passwords(settings), data)

        user = _run(dsn, work)
    print(
        _(
            "created {username} ({role}, {division}) id={id}",
            username=user.username,
            role=user.role.value,
            division=user.division_code,
            id=user.id,
        )
    )
    return 0


def _ask_password() -> str:
    """Asks twice on the terminal. Without one, getpass would warn and read standard input (where
    the EOFError came from): say how to pass the password instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            password = getpass.getpass("Password: ")
            repeated = getpass.getpass("Repeat: ")
        except getpass.GetPassWarning as exc:
            raise UsageError(
                "no terminal to ask for the password: give it on standard input with --password-stdin, e.g. "
                "printf '%s\\n' \"$PASSWORD\" | canbao user add NAME --role ROLE --division CODE --password-stdin"
            ) from exc
        except EOFError as exc:  # Ctrl-D at the prompt
            raise UsageError("no password given; nothing written") from exc
    if repeated != password:
        raise UsageError("the passwords differ; nothing written")
    return password


def cmd_user_disable(args: argparse.Namespace) -> int:
    from backend.admin import service as admin

    settings = _settings(args)
    with database(settings) as dsn:

        async def work(conn: Connection) -> admin.User | None:
            async with conn.transaction():
                return await admin.disable_user(conn, args.username)

        found = _run(dsn, work)
    if found is None:
        raise CommandError(_("no user {username!r}", username=args.username))
    print(_("disabled {username}; their sessions are revoked", username=args.username))
    return 0


def cmd_divisions_import(args: argparse.Namespace) -> int:
    from backend.divisions import service as divisions

    settings = _settings(args)
    parsed = divisions.parse_csv(_decode(_read_bytes(args.file)))
    if parsed.errors and parsed.errors[0].column == "header":
        return _rejected(parsed.errors)
    with database(settings) as dsn:

        async def work(conn: Connection) -> divisions.ImportSummary | list[divisions.RowError]:
            # Bad rows and rows whose parent is missing are reported together, in file order.
            missing = await divisions.missing_parents(conn, parsed.divisions, parsed.row_numbers, parsed.parent_column)
            if parsed.errors or missing:
                return sorted([*parsed.errors, *missing], key=lambda e: e.row)
            async with conn.transaction():
                return await divisions.import_divisions(
                    conn, None, parsed.divisions, row_numbers=parsed.row_numbers, parent_column=parsed.parent_column
                )

        outcome = _run(dsn, work)
    if isinstance(outcome, list):
        return _rejected(outcome)
    print(_counts(outcome))
    return 0


def _counts(outcome: Any) -> str:
    return _(
        "{rows} rows: {inserted} new, {updated} updated, {unchanged} unchanged",
        rows=outcome.rows,
        inserted=outcome.inserted,
        updated=outcome.updated,
        unchanged=outcome.unchanged,
    )


def cmd_enrollments_import(args: argparse.Namespace) -> int:
    """Checked whole first (one bad row rejects the file, nothing touched); then stored as a
    `history_import` job and run here, so that an import cut short is finished by a worker."""
    from backend.actor import NO_DIVISION
    from backend.app import job_handlers
    from backend.clock import local_today
    from backend.db import create_pool
    from backend.eligibility import lists
    from backend.enrollment import history
    from backend.jobs import service as jobs
    from backend.jobs import worker

    settings = _settings(args)
    path = Path(args.file)
    raw = _read_bytes(args.file)
    parsed = history.parse_history(raw, today=local_today(settings.timezone))
    if parsed.errors:
        return _rejected(parsed.errors)
    if args.dry_run:
        with database(settings) as dsn:

            async def count(conn: Connection) -> history.ImportSummary:
                tx = conn.transaction()
                await tx.start()
                try:
                    return await history.import_history(conn, parsed.rows, path.name)
                finally:
                    await tx.rollback()

            outcome = _run(dsn, count)
    else:
        with database(settings) as dsn:

            async def main() -> history.ImportSummary:
                pool = await create_pool(dsn, 1, 3)
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        try:  # the district's job (history is keyed by person, not division)
                            division = (await lists.upload_scope(conn, None, None)).division_code
                        except DomainError:  # no single district yet: a job only the command line sees
                            division = NO_DIVISION.division_code
                        job = await jobs.enqueue(
                            conn,
                            None,
                            history.HISTORY_IMPORT,
                            {},
                            division_code=division,
                            settings=settings,
                            file=io.BytesIO(raw),
                            file_name=path.name,
                            file_bytes=len(raw),
                        )
                    ended = await worker.run_one(pool, job_handlers(), settings, job_id=job.id)
                finally:
                    await pool.close()
                if ended is None or ended.state != "succeeded":
                    state = _("taken by a worker") if ended is None else ended.state
                    raise CommandError(_("the import job {job} is {state}", job=job.id, state=state))
                return msgspec.convert(ended.result, history.ImportSummary)

            outcome = asyncio.run(main())
    counts = _counts(outcome)
    print(_("dry run, nothing written: {counts}", counts=counts) if args.dry_run else counts)
    return 0


def cmd_policy_load(args: argparse.Namespace) -> int:
    """Checks a policy file whole (a mistake names its field; nothing written), then publishes it as
    a new version of its coverage year."""
    from backend.policy import service as policy

    document = policy.parse_document(_read_bytes(args.file))
    if args.check:
        print(_("{year} policy file is valid; nothing written", year=document.coverage_year))
        return 0
    with database(_settings(args)) as dsn:

        async def work(conn: Connection) -> policy.PolicyVersion:
            async with conn.transaction():
                return await policy.load_document(conn, document)

        created = _run(dsn, work)
    print(
        _(
            "published the {year} policy as version {version}, in force from {effective}",
            year=created.coverage_year,
            version=created.version,
            effective=created.effective_from.isoformat(),
        )
    )
    return 0


def cmd_lists_import(args: argparse.Namespace) -> int:
    """Stores the file as a `list_import` job and runs it here, showing its progress; killed half
    way, the job stays queued and a worker (`canbao worker`, or `canbao serve`) finishes it."""
    from backend.app import job_handlers
    from backend.db import create_pool
    from backend.eligibility import lists as eligibility
    from backend.jobs import worker

    settings = _settings(args)
    path = Path(args.file)
    try:
        source = path.open("rb")
    except OSError as exc:
        raise CommandError(_("cannot read {file}: {error}", file=args.file, error=exc.strerror)) from exc
    size = path.stat().st_size
    progress = _Progress(size)
    params = eligibility.ListImportParams(
        list_type=args.type,
        effective_from=args.effective,
        partial=args.partial,
        supersedes=args.supersedes,
        division_code=args.division,
        year=args.year,
    )
    with source, database(settings) as dsn:

        async def main() -> eligibility.ListVersion | eligibility.ListSplit:
            pool = await create_pool(dsn, 1, 3)
            try:
                async with pool.acquire() as conn, conn.transaction():
                    job = await eligibility.enqueue_import(
                        conn, None, source, params, file_name=path.name, file_bytes=size, settings=settings
                    )
                ended = await worker.run_one(
                    pool, job_handlers(), settings, job_id=job.id, on_progress=lambda done, _total: progress.show(done)
                )
            finally:
                await pool.close()
            if ended is None or ended.result is None:
                state = _("taken by a worker") if ended is None else ended.state
                message = _("the import job {job} is {state}", job=job.id, state=state)
                if ended is not None and ended.error is not None:
                    message += _(": ") + (ended.error.detail or ended.error.title)
                raise CommandError(message)
            if args.type == eligibility.AUTO and ended.state == "succeeded":
                return msgspec.convert(ended.result, eligibility.ListSplit)
            return msgspec.convert(ended.result, eligibility.ListVersion)

        outcome = asyncio.run(main())
    progress.done()
    versions = outcome.versions if isinstance(outcome, eligibility.ListSplit) else [outcome]
    for version in versions:
        if not _print_list_version(version):
            return 1
    return 0


def _print_list_version(version: Any) -> bool:
    """A loaded version's line on standard output, or a rejected upload's report on standard error (False)."""
    _print_rows(version.errors, version.rows_rejected)
    if version.status == "rejected":
        print(
            _(
                "error: {n} bad rows; nothing loaded (upload {upload})",
                n=version.rows_rejected,
                upload=version.id,
            ),
            file=sys.stderr,
        )
        return False
    print(
        _(
            "{list_type} version {version} ({id}): {loaded} rows loaded, {rejected} rejected; "
            "{added} added, {removed} removed, {changed} changed since the version before",
            list_type=terms.name("list_type", version.list_type),
            version=version.version,
            id=version.id,
            loaded=version.rows_loaded,
            rejected=version.rows_rejected,
            added=version.added,
            removed=version.removed,
            changed=version.changed,
        )
    )
    return True


def _print_rows(errors: Sequence[Any], total: int) -> None:
    """The first 50 bad rows of a file, one a line, and how many more."""
    for e in errors[:50]:
        print(_("row {row}, {column}: {problem}", row=e.row, column=e.column, problem=e.problem), file=sys.stderr)
    if total > 50:
        print(_("... and {n} more bad rows", n=total - 50), file=sys.stderr)


class _Progress:
    """A progress bar on standard error, by bytes read, when it is a terminal (or CANBAO_PROGRESS=1)."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.read = 0
        self.shown = -1
        self.enabled = sys.stderr.isatty() or os.environ.get("CANBAO_PROGRESS") == "1"

    def advance(self, n: int) -> None:
        self.show(self.read + n)

    def show(self, read: int) -> None:
        self.read = read
        percent = min(100, self.read * 100 // self.total)
        if self.enabled and percent != self.shown:
            self.shown = percent
            bar = "#" * (percent // 4)
            label = _("reading")
            print(f"\r{label} [{bar:<25}] {percent:3d}%", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.shown >= 0:
            print(file=sys.stderr)


def _rejected(errors: list[RowError]) -> int:
    _print_rows(errors, len(errors))
    print(_("error: {n} bad rows; nothing imported", n=len(errors)), file=sys.stderr)
    return 1


def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CommandError(_("the file is neither UTF-8 nor GB18030/GBK text; nothing imported"))


def _field_problem(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `str` matching regex ... - at `$.username`" as "username: ..."."""
    problem, _sep, where = str(exc).partition(" - at ")
    field = where.strip("`").removeprefix("$.")
    if problem.startswith("Expected `str` matching regex") and field in _PATTERN_MEANS:
        problem = _PATTERN_MEANS[field]
    return f"{field}: {problem}" if field else problem


# What the patterns of `UserCreate` ask for, in words; a regex is no message for a person.
_PATTERN_MEANS = {
    "username": "must be 3 to 64 letters, digits or _ . @ -",
    "division_code": "must be a 12-digit statistical division code",
}


def _seed_and_print(settings: Settings, dsn: str) -> None:
    from backend.auth.tokens import load_signing_key
    from backend.clock import local_today
    from backend.tools import demo

    seeded = _run(dsn, lambda conn: demo.seed(conn, _passwords(settings)))
    print(f"Demo district 西湖区 (330106000000). Users (password for all: {demo.DEMO_PASSWORD}):")
    for user in seeded:
        state = "created" if user.created else "exists"
        print(f"  {user.username:<12} {user.role:<18} {user.division_code}  [{state}]")
    population = _run(dsn, demo.seed_population)
    done = "seeded" if population.created else "already there, left as it was"
    print(f"Population ({done}): {population.households} households, {population.persons} persons")
    for year, statuses in sorted(population.enrollments.items()):
        counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
        print(f"  {year} enrolments: {counts}")
    print(f"  enrolment history from the old system: {population.history_rows} rows")
    try:  # query codes are derived with the signing key; without one (DATABASE_URL alone) none is shown
        key = load_signing_key(settings)
    except SettingsError:
        return
    this_year = local_today(settings.timezone).year
    # This year's, or the demo's newest year once the calendar has passed its data (2025, 2026).
    year = min(this_year, max(population.enrollments, default=this_year))
    resident = _run(dsn, lambda conn: demo.demo_resident(conn, key.secret, year))
    if resident is not None:
        print(
            f"Residents' page /r/ (demo household, {resident.year}): ID number {resident.id_number}, "
            f"name {resident.name}, query code {resident.query_code}"
        )


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """A new data key in the key file, then every sealed value re-sealed under it (`--resume`:
    re-seal only, under the current key). Resumable; the service may keep running."""
    from backend.tools import keys

    settings = _settings(args)
    # As the owner: list entries and record changes are append-only for the application's role.
    with owner_database(settings) as (dsn, _app_role):
        keyring = crypto.keys()
        if not args.resume:
            keyring = keyring.with_new_data_key()
            crypto.write_key_file(crypto.key_path(settings), keyring, replace=True)
            crypto.install(keyring)
            _check_keys(dsn, keyring)  # registers the new key's fingerprint
            print(f"data key {keyring.current} added to {crypto.key_path(settings)}", file=sys.stderr)
        counts: dict[str, int] = {}

        def progress(column: str, n: int) -> None:
            counts[column] = counts.get(column, 0) + n
            print(f"\rre-sealing {column}: {counts[column]}", end="", file=sys.stderr, flush=True)

        rotated = _run(dsn, lambda conn: keys.rotate(conn, keyring, progress))
        if counts:
            print(file=sys.stderr)
    print(
        f"{rotated.resealed} values re-sealed under data key {rotated.key_id}; restart the servers so that "
        "they seal under it too, then run `canbao keys rotate --resume` once more"
    )
    return 0


def cmd_demo_seed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with database(settings) as dsn:
        _seed_and_print(settings, dsn)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import httpx

    from backend.tools import simulate

    settings = _settings(args)
    if args.url is not None:
        # Before the demo villages and users are written for a server that is not there.
        try:
            httpx.get(f"{args.url.rstrip('/')}/health", timeout=10).raise_for_status()
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {args.url}: {exc}") from exc
    options = simulate.Options(
        tablets=args.tablets,
        households=args.households,
        offline_days=args.offline_days,
        faults=args.faults,
        seed=args.seed,
        url=args.url,
        check_pending=args.check_pending,
    )
    with database(settings) as dsn:
        from backend.auth.tokens import load_signing_key

        # As `canbao serve` runs it: the embedded database's signing key, handed to the app.
        secret = load_signing_key(settings).secret.decode()
        app_settings = msgspec.structs.replace(
            settings, database_url=dsn, jwt_secret=secret, key_file=str(crypto.key_path(settings))
        )
        try:
            summary = asyncio.run(
                simulate.run(
                    options,
                    dsn,
                    app_settings=app_settings,
                    passwords=_passwords(settings),
                    progress=simulate.Progress(1),
                )
            )
        except simulate.SimulationError as exc:
            raise UsageError(str(exc)) from exc
    print(summary.text())
    return 0 if summary.ok else 1


# Option types: argparse turns their ArgumentTypeError into "argument --x: ..." and exit 2.


def _at_least(low: int | None) -> Callable[[str], int]:
    """A whole number, `low` or more (None: any)."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(_("must be a whole number, not {text!r}", text=text)) from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(_("must be at least {low}, not {value}", low=low, value=value))
        return value

    return whole_number


def _port(text: str) -> int:
    port = _at_least(1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(_("must be a port from 1 to 65535, not {port}", port=port))
    return port


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("must be a date such as 2025-09-01, not {text!r}", text=text)) from None


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(_("must be an http:// or https:// address, not {text!r}", text=text))
    return text


def _seal(text: str) -> tuple[int, bytes]:
    seq, _sep, digest = text.partition(":")
    try:
        value = (int(seq), bytes.fromhex(digest))
    except ValueError:
        value = (0, b"")
    if value[0] < 1 or len(value[1]) != 32:
        raise argparse.ArgumentTypeError(
            _("must be SEQ:HASH as GET /api/v1/audit/seals shows it, not {text!r}", text=text)
        )
    return value


# A character of Chinese text is two columns wide on a terminal, and a line may break after any of
# them; opening and closing marks stay with the character or word after and before them.
_WIDE = (
    "\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6"
)
_OPENING = "（《「『【〈“"
_CLOSING = "，。、；：？！）》」』】〉”"
_MARKS = _OPENING + _CLOSING
# A piece: a wide character or a word of others, with the opening marks before it and the closing
# marks after it, then its spaces (marks on their own, or spaces, where nothing else is left).
_PIECE = re.compile(
    rf"[{_OPENING}]*(?:[^\s{_WIDE}{_MARKS}]+|(?![{_MARKS}])[{_WIDE}])[{_CLOSING}]*\s*|[{_MARKS}]+\s*|\s+"
)


def columns(text: str) -> int:
    """How many terminal columns `text` takes."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` columns (a word longer than that stands alone)."""
    lines: list[str] = []
    line = ""
    for piece in _PIECE.findall(" ".join(text.split())):
        if line and columns(line + piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = piece.lstrip()
        else:
            line += piece
    if line.strip():
        lines.append(line.rstrip())
    return lines


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, its help wrapped by columns, not characters: a line of Chinese help is as wide as
    the terminal, not twice as wide; a Chinese section heading ends with a full-width colon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headings: list[str] = []

    def start_section(self, heading: str | None) -> None:
        if heading and columns(heading) > len(heading):  # wide characters: Chinese
            self._headings.append(heading)
        super().start_section(heading)

    def format_help(self) -> str:
        text = super().format_help()
        for heading in self._headings:
            text = text.replace(f"\n{heading}:\n", f"\n{heading}：\n")
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        return wrap(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in wrap(text, width - len(indent)))


class _Parser(argparse.ArgumentParser):
    """Every command's parser (subcommands take their parent's class) formats help by columns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="canbao",
        description=_(
            "`canbao`: serve, migrate, users, divisions, civil-affairs lists, enrolment history, the audit chain, "
            "the demo district, the sync simulator. Every command works on DATABASE_URL when it is set, else on "
            "the embedded PostgreSQL in the data folder, shared with a `canbao serve` that may be running beside it."
        ),
    )
    p.add_argument("--data-dir", help=_("data folder of the embedded database (default ./.canbao, CANBAO_DATA_DIR)"))
    sub = p.add_subparsers(required=True, metavar=_("command"))

    s = sub.add_parser("serve", help=_("run the API server"))
    s.add_argument("--host", default="127.0.0.1", help=_("address to listen on (default 127.0.0.1)"))
    s.add_argument("--port", type=_port, default=8000, help=_("port to listen on (default 8000)"))
    s.add_argument("--workers", type=_at_least(1), default=1, help=_("worker processes (default 1)"))
    s.add_argument("--demo", action="store_true", help=_("seed the demo district first (idempotent)"))
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help=_("run background jobs (list imports) until stopped; serve starts its own"))
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("migrate", help=_("upgrade the schema to head (or --revision, or --downgrade)"))
    to = m.add_mutually_exclusive_group()
    to.add_argument("--revision", help=_("upgrade to REVISION (default head)"))
    to.add_argument("--downgrade", metavar="REVISION", help=_("downgrade to REVISION (e.g. base)"))
    m.set_defaults(func=cmd_migrate)

    b = sub.add_parser("backup", help=_("back up the embedded database to FILE (not the keys: keep them apart)"))
    b.add_argument("file")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help=_("restore a backup into the embedded database (an empty one unless --force)"))
    r.add_argument("file")
    r.add_argument("--force", action="store_true", help=_("replace a database that already holds data"))
    r.set_defaults(func=cmd_restore)

    u = sub.add_parser("user", help=_("manage users")).add_subparsers(required=True, metavar=_("command"))
    ua = u.add_parser("add", help=_("create a user"))
    ua.add_argument("username")
    ua.add_argument(
        "--role",
        required=True,
        choices=["township_staff", "township_reviewer", "civil_affairs", "district_admin"],
        help=_("the user's role"),
    )
    ua.add_argument("--division", required=True, help=_("12-digit division code of the user's scope"))
    ua.add_argument("--full-name", default="", help=_("the name shown on pages and in the audit log"))
    ua.add_argument("--password-stdin", action="store_true", help=_("read the password from standard input"))
    ua.set_defaults(func=cmd_user_add)
    ud = u.add_parser("disable", help=_("disable a user and end their sessions"))
    ud.add_argument("username")
    ud.set_defaults(func=cmd_user_disable)

    d = sub.add_parser("divisions", help=_("manage divisions")).add_subparsers(required=True, metavar=_("command"))
    di = d.add_parser("import", help=_("import divisions from CSV (code,name,parent_code or 统计用区划代码,名称)"))
    di.add_argument("file")
    di.set_defaults(func=cmd_divisions_import)

    e = sub.add_parser("enrollments", help=_("enrolment data")).add_subparsers(required=True, metavar=_("command"))
    ei = e.add_parser(
        "import", help=_("import enrolment history from before go-live (CSV or XLSX: ID number, year, status)")
    )
    ei.add_argument("file")
    ei.add_argument(
        "--dry-run", action="store_true", help=_("check the file and count what would change; write nothing")
    )
    ei.set_defaults(func=cmd_enrollments_import)

    li = (
        sub.add_parser("lists", help=_("civil-affairs lists"))
        .add_subparsers(required=True, metavar=_("command"))
        .add_parser("import", help=_("load a list file (CSV or XLSX) as a new version"))
    )
    li.add_argument("file")
    li.add_argument(
        "--type",
        required=True,
        help=_(
            "te_kun, gu_er, di_bao, di_bao_bianyuan, fangfan_jiance, "
            "zhongdu_canji, employee_insurance, deceased, huji, zero_reimbursement (with --year), "
            "tuiyi_junren, employee_insurance_ended, "
            "or a policy's subsidy category; "
            "auto: a mixed file, one version per type its category column (类别) names"
        ),
    )
    li.add_argument("--effective", required=True, type=_date, help=_("date the version applies from (YYYY-MM-DD)"))
    li.add_argument("--partial", action="store_true", help=_("load the good rows even if some rows are bad"))
    li.add_argument(
        "--supersedes",
        action="store_true",
        help=_(
            "the version replaces those dated after --effective "
            "(else a date earlier than the version in force's is refused)"
        ),
    )
    li.add_argument("--division", help=_("district or township the list is for (default: the only district)"))
    li.add_argument(
        "--year",
        type=_at_least(2000),
        help=_("the year a settlement-system list (zero_reimbursement) is about (required for it)"),
    )
    li.set_defaults(func=cmd_lists_import)

    pl = (
        sub.add_parser("policy", help=_("the coverage years' policies"))
        .add_subparsers(required=True, metavar=_("command"))
        .add_parser(
            "load", help=_("publish a policy file (JSON, e.g. docs/policies/fujian-2025.json) as a new version")
        )
    )
    pl.add_argument("file")
    pl.add_argument("--check", action="store_true", help=_("check the file only; write nothing"))
    pl.set_defaults(func=cmd_policy_load)

    si = sub.add_parser(
        "simulate",
        help=_("tablets working offline, then syncing; checks the sync invariants"),
        description=_(
            "Simulated tablets (the reference client) register households, enrol, collect "
            "and edit offline for some days, then sync; the server runs in this process on the "
            "embedded database or DATABASE_URL (or is reached at --url). Writes made-up people: "
            "a demo or test database only. Exits 1 when an invariant fails."
        ),
    )
    si.add_argument("--tablets", type=_at_least(1), required=True, help=_("how many tablets (township staff each)"))
    si.add_argument(
        "--households", type=_at_least(0), required=True, help=_("households registered, over all tablets and days")
    )
    si.add_argument("--offline-days", type=_at_least(1), default=1, help=_("days the tablets work offline (default 1)"))
    si.add_argument(
        "--faults",
        action="store_true",
        help=_(
            "a faulty network (dropped, duplicated, reordered, cut requests), a suspended tablet, "
            "a reinstalled app, families registered twice"
        ),
    )
    si.add_argument("--seed", type=_at_least(None), help=_("repeat a run (the summary prints its seed)"))
    si.add_argument(
        "--url",
        type=_http_url,
        help=_("a Canbao server already running (e.g. http://127.0.0.1:8000) on the same database"),
    )
    si.add_argument("--check-pending", action="store_true", help=_("also run the checks that wait for server fixes"))
    si.set_defaults(func=cmd_simulate)

    k = sub.add_parser("keys", help=_("the keys that seal identity numbers")).add_subparsers(
        required=True, metavar=_("command")
    )
    kr = k.add_parser("rotate", help=_("add a data key and re-seal every stored number under it (resumable)"))
    kr.add_argument("--resume", action="store_true", help=_("re-seal under the current key without adding one"))
    kr.set_defaults(func=cmd_keys_rotate)

    av = (
        sub.add_parser("audit", help=_("the audit log"))
        .add_subparsers(required=True, metavar=_("command"))
        .add_parser("verify", help=_("recompute the audit log's hash chain; exit 1 naming the first broken row"))
    )
    av.add_argument(
        "--seal",
        action="append",
        type=_seal,
        metavar="SEQ:HASH",
        help=_("a day's head copied from GET /api/v1/audit/seals: the chain must still pass through it (repeatable)"),
    )
    av.set_defaults(func=cmd_audit_verify)

    demo = sub.add_parser("demo", help=_("demo data")).add_subparsers(required=True, metavar=_("command"))
    ds = demo.add_parser("seed", help=_("seed the demo district (running it twice changes nothing)"))
    ds.set_defaults(func=cmd_demo_seed)
    return p


def command_language(env: Mapping[str, str]) -> str:
    """What a command speaks: the terminal's locale (LC_ALL, LC_MESSAGES, LANG) when it names a
    language Canbao has, else CANBAO_LANGUAGE, else Chinese."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(variable, "").split(".")[0].split("@")[0]
        if value and value not in ("C", "POSIX"):
            with contextlib.suppress(ValueError):
                return i18n.parse_language(value)
            break
    with contextlib.suppress(ValueError):
        return i18n.parse_language(env.get("CANBAO_LANGUAGE") or "zh-CN")
    return i18n.parse_language("zh-CN")  # a bad CANBAO_LANGUAGE is refused by the settings, in Chinese


# argparse's own words (usage, section titles, its errors) in the command's language: argparse looks
# them up through its module's `_` as it builds a parser and as it speaks (`argparse_speaks`).
ARGPARSE_WORDS = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("show this help message and exit"),
    N_("%(prog)s: error: %(message)s\n"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("the following arguments are required: %s"),
    N_("one of the arguments %s is required"),
    N_("unrecognized arguments: %s"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("invalid %(type)s value: %(value)r"),
    N_("not allowed with argument %s"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("ignored explicit argument %r"),
    N_("expected one argument"),
    N_("expected at most one argument"),
    N_("expected at least one argument"),
)


@contextlib.contextmanager
def argparse_speaks(language: str) -> Iterator[None]:
    """argparse's words in `language` for the block (a command's parser is built and used in it)."""
    catalog = i18n.translations(language)
    saved = {name: getattr(argparse, name) for name in ("_", "ngettext")}
    setattr(argparse, "_", catalog.gettext)  # noqa: B010 - a module global of argparse, not an attribute it declares
    setattr(argparse, "ngettext", catalog.ngettext)  # noqa: B010
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(argparse, name, value)


def main(argv: list[str] | None = None) -> int:
    language = command_language(os.environ)
    i18n.set_default_language(language)
    with argparse_speaks(language):
        args = parser().parse_args(argv)
    # Every command may start the embedded server; a signal must unwind to its release.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(_("configuration error: {error}", error=exc), file=sys.stderr)
        return 2
    except DomainError as exc:
        print(_("error: {error}; nothing written", error=exc.detail or _(exc.title())), file=sys.stderr)
        return 1
    except CommandError as exc:
        print(_("error: {error}", error=exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
