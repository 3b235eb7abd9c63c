"""`canbao migrate`: alembic over the migrations package, driven from code (no alembic.ini), as the
owner role; then the application role's grants (`backend.roles`), so new tables are covered."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from backend import roles
from backend.crypto import Keyring
from backend.db import Connection

if TYPE_CHECKING:
    from alembic.config import Config


def _package_folder(name: str) -> str:
    spec = importlib.util.find_spec(name)  # found, not imported: the package imports alembic
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {name} package is not installed beside backend")
    return str(Path(spec.origin).parent)


SCRIPT_LOCATION = _package_folder("migrations")

# alembic (and SQLAlchemy under it) is imported when a migration runs, not with this module: it is
# half of `canbao`'s start-up (0.24 of 0.5 s), and most commands never migrate.


def alembic_config(dsn: str, keyring: Keyring | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    # Migrations that seal stored numbers (0015) take the keys from here, never from the database.
    config.attributes["keyring"] = keyring
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # migrations/env.py hands it to asyncpg as it is (a multi-host DSN included).
    config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str, revision: str = "head", *, app_role: str | None = None, keyring: Keyring | None = None) -> None:
    """Migrates as the role of `dsn` (the owner); then grants `app_role` what the service needs.
    `keyring`: the keys a migration that seals stored numbers needs (0015)."""
    from alembic import command

    command.upgrade(alembic_config(dsn, keyring), revision)
    if app_role is not None:
        asyncio.run(grant(dsn, app_role))


def downgrade(dsn: str, revision: str = "base", *, app_role: str | None = None, keyring: Keyring | None = None) -> None:
    from alembic import command

    command.downgrade(alembic_config(dsn, keyring), revision)
    if app_role is not None:
        asyncio.run(grant(dsn, app_role))


async def grant(owner_dsn: str, app_role: str) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        await roles.apply_grants(conn, app_role)
    finally:
        await conn.close()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(SCRIPT_LOCATION)
    head = script.get_current_head()
    assert head is not None
    return head


async def current_revision(conn: Connection) -> str | None:
    exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    value: str | None = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    return value
