"""A real PostgreSQL for every test that touches SQL.

One server per session — `CANBAO_TEST_DATABASE_URL` when set, else an embedded one in a temporary
folder, stopped at the end — a template database migrated once, and a fresh clone per test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import crypto, migrate
from backend.app import create_app
from backend.auth.passwords import Passwords
from backend.config import Settings
from backend.db import init_connection
from backend.tools import demo

JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = demo.DEMO_PASSWORD


def _test_keys() -> str:
    """One key file for the session: the app under test and the tests' own SQL seal alike."""
    path = os.path.join(tempfile.mkdtemp(prefix="canbao-test-keys-"), crypto.KEY_FILE)
    crypto.write_key_file(crypto.Path(path), crypto.Keyring.generate())
    return path


KEY_FILE = _test_keys()
KEYS = crypto.read_key_file(crypto.Path(KEY_FILE))
crypto.install(KEYS)


def _with_database(dsn: str, database: str) -> str:
    """The same server, another database (keeps host/socket query parameters)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


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

    def dsn(self, database: str) -> str:
        return _with_database(self.admin_dsn, database)

    def create_database(self, template: str | None = None) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        source = template or self.template
        asyncio.run(_admin_execute(self.admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
        return name

    def drop_database(self, name: str) -> None:
        asyncio.run(_admin_execute(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
    template = "canbao_tpl_" + uuid.uuid4().hex[:8]
    asyncio.run(_admin_execute(admin_dsn, f'CREATE DATABASE "{template}"'))
    server = PgServer(admin_dsn=admin_dsn, template=template)
    try:
        migrate.upgrade(server.dsn(template), keyring=KEYS)
        yield server
    finally:
        try:
            asyncio.run(_admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        finally:
            if embedded is not None:
                embedded.release()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def db_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:  # type: ignore[type-arg]
    connection = await asyncpg.connect(db_dsn, server_settings={"timezone": "UTC"})
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


@pytest.fixture
def app(settings: Settings) -> Litestar:
    return create_app(settings, configure_logs=False)


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
