"""`canbao migrate`: alembic over the migrations package, driven from code (no alembic.ini), as the
owner role; then the application role's grants (`backend.roles`), so new tables are covered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from backend import roles
from backend.crypto import Keyring
from backend.db import Connection

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(dsn: str, keyring: Keyring | None = None) -> Config:
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
    command.upgrade(alembic_config(dsn, keyring), revision)
    if app_role is not None:
        asyncio.run(grant(dsn, app_role))


def downgrade(dsn: str, revision: str = "base", *, app_role: str | None = None, keyring: Keyring | None = None) -> None:
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
