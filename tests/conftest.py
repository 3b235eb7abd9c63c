"""A real PostgreSQL for every test that touches SQL.

One server per session — `CANBAO_TEST_DATABASE_URL` when set, else an embedded one in a temporary
folder, stopped at the end — a template database migrated once, and a fresh clone per test.
As in production, the template is migrated by an owner role (as `canbao migrate` does) and the
service under test connects as the application role (`db_dsn`, `make_settings`); the `conn`
fixture, for setting up and checking, connects as the administrator.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import clock, crypto, migrate, roles
from backend.app import configure_process, create_app
from backend.auth.passwords import Passwords
from backend.config import Settings
from backend.db import init_connection
from backend.i18n import set_default_language
from backend.tools import demo

JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = demo.DEMO_PASSWORD
# Roles are cluster-wide: the tests' own, created once per session (also on CANBAO_TEST_DATABASE_URL).
OWNER_ROLE = "canbao_test_owner"
APP_ROLE = "canbao_test_app"
ROLE_PASSWORD = "canbao-test-role"


# The day the suite runs on, whatever the calendar says (`pinned_clock`): coverage year 2026 is open
# and the 2026 policy's window (2025-09-01 … 2025-12-31) has closed, so enrolling now is late.
NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
TODAY = date(2026, 12, 2)


def _test_keys() -> str:
    """One key file for the session: the app under test and the tests' own SQL seal alike; its
    folder removed when the session's interpreter exits (keys are never left behind in /tmp)."""
    folder = tempfile.mkdtemp(prefix="canbao-test-keys-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, crypto.KEY_FILE)
    crypto.write_key_file(crypto.Path(path), crypto.Keyring.generate())
    return path


KEY_FILE = _test_keys()

# Planner costs for tests that check which plan PostgreSQL chose: its defaults, and the embedded
# server's cache for a 24 GiB machine, so the plans are the same whatever server the suite runs on.
PLANNER_COSTS = {
    "effective_cache_size": "18GB",
    "random_page_cost": "4",
    "seq_page_cost": "1",
    "cpu_tuple_cost": "0.01",
    "cpu_index_tuple_cost": "0.005",
    "cpu_operator_cost": "0.0025",
    "enable_seqscan": "on",
    "enable_hashjoin": "on",
}


async def fix_planner_costs(conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    """`PLANNER_COSTS` for the rest of the transaction open on `conn`."""
    for name, value in PLANNER_COSTS.items():
        await conn.execute("SELECT set_config($1, $2, true)", name, value)


KEYS = crypto.read_key_file(crypto.Path(KEY_FILE))
crypto.install(KEYS)


def _with_database(dsn: str, database: str, user: str | None = None) -> str:
    """The same server, another database (keeps host/socket query parameters), or another role."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if user is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{quote(user)}:{quote(ROLE_PASSWORD)}@{host}")
    return urlunsplit(parts._replace(path="/" + database))


async def ended_in_its_sleep(admin_dsn: str, pid: int) -> None:
    """Ends the server process `pid` (`pg_terminate_backend`, as a server restarting would) once it
    runs a `pg_sleep`: its client is then in the middle of a statement, and gets 57P01. Call it in
    the loop of the client whose connection it ends (an app under test runs in a loop of its own)."""
    killer = await asyncpg.connect(admin_dsn)
    try:
        for _ in range(1000):
            if await killer.fetchval("SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.01)
        assert await killer.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    finally:
        await killer.close()


async def _admin_execute(admin_dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@dataclass(frozen=True)
class PgServer:
    admin_dsn: str
    template: str
    # Every test's database has the same name, so one app built for these settings serves every
    # test (`app`). Copies are not made ahead in the background: a copy's transaction holds back
    # the cluster's oldest running transaction id, which the audit sealer and the sync cursors wait on.
    current: str = field(default_factory=lambda: "t_current_" + uuid.uuid4().hex[:8])

    def dsn(self, database: str) -> str:
        """The administrator's: setting up and checking."""
        return _with_database(self.admin_dsn, database)

    def owner_dsn(self, database: str) -> str:
        return _with_database(self.admin_dsn, database, OWNER_ROLE)

    def app_dsn(self, database: str) -> str:
        """The application role's: what the service connects as."""
        return _with_database(self.admin_dsn, database, APP_ROLE)

    def create_database(self, template: str | None = None, name: str | None = None) -> str:
        name = name or "t_" + uuid.uuid4().hex[:16]
        source = template or self.template
        asyncio.run(
            _admin_execute(self.admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{source}" OWNER "{OWNER_ROLE}"')
        )
        return name

    def drop_database(self, name: str) -> None:
        asyncio.run(_admin_execute(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def take_fresh(self) -> str:
        """A fresh copy of the template under `current`'s name, until `drop_database(current)`."""
        return self.create_database(name=self.current)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject.toml): a worker a core, each with its own embedded server and template.
    The workers would share a server of `CANBAO_TEST_DATABASE_URL`, where one's CREATE DATABASE holds
    back the cluster's oldest running transaction, which the other's audit sealer and sync cursors
    wait on: there the suite runs in one process."""
    if os.environ.get("CANBAO_TEST_DATABASE_URL"):
        return 0
    return None  # xdist's own count


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests last: Playwright's sync API keeps an event loop running in this thread
    until the session ends, and every async test or fixture after it would find it there. Under
    xdist each worker runs its files in this order (`--no-loadscope-reorder` in pyproject.toml)."""
    items.sort(key=lambda item: "browser" in item.path.parent.parts[-1:])


@pytest.fixture(autouse=True)
def source_language(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts in the source language, as the apps it makes do (`make_settings`): a pure
    function called before any app was made, or after one made in another language, says English;
    so does a command run in-process (`cli.main`), whatever the machine's locale."""
    set_default_language("en")
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CANBAO_LANGUAGE", "en")


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    """Every test's business clock (`backend.clock.now`) starts at NOW and runs from there: which year is
    open, the day money counts for, a tablet's clock checked against the server's. A test of another
    day pins its own. Timestamps that only record when (and PostgreSQL's `now()`) keep the real time."""
    clock.pin(NOW)
    try:
        yield
    finally:
        clock.pin(None)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("CANBAO_TEST_DATABASE_URL")
    embedded = None
    folder = None
    if external:
        admin_dsn = external
    else:
        from backend.embedded import EmbeddedPostgres

        folder = tempfile.mkdtemp(prefix="canbao-test-pg-")
        embedded = EmbeddedPostgres(folder, database="postgres")
        admin_dsn = embedded.start()
        # Durability buys nothing in a throwaway test cluster; speed does.
        asyncio.run(
            _admin_execute(
                admin_dsn,
                "ALTER SYSTEM SET fsync = off",
                "ALTER SYSTEM SET synchronous_commit = off",
                "ALTER SYSTEM SET full_page_writes = off",
                "SELECT pg_reload_conf()",
            )
        )
    asyncio.run(_create_roles(admin_dsn))
    template = "canbao_tpl_" + uuid.uuid4().hex[:8]
    asyncio.run(_admin_execute(admin_dsn, f'CREATE DATABASE "{template}" OWNER "{OWNER_ROLE}"'))
    server = PgServer(admin_dsn=admin_dsn, template=template)
    try:
        migrate.upgrade(server.owner_dsn(template), app_role=APP_ROLE, keyring=KEYS)
        yield server
    finally:
        try:
            asyncio.run(_admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        finally:
            if embedded is not None:
                embedded.release()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


async def _create_roles(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await roles.create_roles(admin, OWNER_ROLE, APP_ROLE, password=ROLE_PASSWORD)
    finally:
        await admin.close()


@pytest.fixture
def database_name(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated, empty database for this test (under the same name as every other test's)."""
    name = pg_server.take_fresh()
    try:
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def db_dsn(pg_server: PgServer, database_name: str) -> str:
    """This test's database as the application role: what the service under test connects as."""
    return pg_server.app_dsn(database_name)


@pytest.fixture
def admin_db_dsn(pg_server: PgServer, database_name: str) -> str:
    """This test's database as the administrator: for setting up and checking."""
    return pg_server.dsn(database_name)


@pytest.fixture
async def conn(admin_db_dsn: str) -> AsyncIterator[asyncpg.Connection]:  # type: ignore[type-arg]
    connection = await asyncpg.connect(admin_db_dsn, server_settings={"timezone": "UTC"})
    await init_connection(connection)
    try:
        yield connection
    finally:
        await connection.close()


def make_settings(db_dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_dsn,
        "jwt_secret": JWT_SECRET,
        "key_file": KEY_FILE,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "pool_min_size": 1,
        "pool_max_size": 4,
        # The suite reads the source language; tests of the Chinese ask for it (tests/i18n/).
        "language": "en",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_dsn: str) -> Settings:
    return make_settings(db_dsn)


@pytest.fixture
def passwords(settings: Settings) -> Passwords:
    return Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)


@pytest.fixture
async def seeded(conn: asyncpg.Connection, passwords: Passwords) -> None:  # type: ignore[type-arg]
    """The demo district: two townships, villages, one user per role (password PASSWORD)."""
    await demo.seed(conn, passwords)


_APPS: dict[Settings, Litestar] = {}


@pytest.fixture
def app(settings: Settings) -> Litestar:
    """The app for these settings: built once per session (every test's database has the same
    name), its process-wide settings applied again for each test as `create_app` applies them.
    A test that changes an app, or needs one of its own, calls `create_app`."""
    built = _APPS.get(settings)
    if built is None:
        if len(_APPS) >= 8:  # settings of one test's own (a random replica) are not kept for the session
            del _APPS[next(iter(_APPS))]
        built = _APPS[settings] = create_app(settings, configure_logs=False)
    else:
        configure_process(settings)
    return built


@pytest.fixture
async def client(app: Litestar, seeded: None) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def login(
    client: AsyncTestClient[Litestar], username: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"username": username, "password": password, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token_pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_pair['access_token']}"}


async def auth_headers(client: AsyncTestClient[Litestar], username: str) -> dict[str, str]:
    return bearer(await login(client, username))
