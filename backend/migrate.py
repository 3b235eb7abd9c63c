"""`canbao migrate`: alembic over the migrations package, driven from code (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from backend.crypto import Keyring
from backend.db import Connection, dsn_for_sqlalchemy

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(dsn: str, keyring: Keyring | None = None) -> Config:
    config = Config()
    # Migrations that seal stored numbers (0015) take the keys from here, never from the database.
    config.attributes["keyring"] = keyring
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser interpolation would eat the % of percent-encoded passwords.
    config.set_main_option("sqlalchemy.url", dsn_for_sqlalchemy(dsn).replace("%", "%%"))
    return config


def upgrade(dsn: str, revision: str = "head", keyring: Keyring | None = None) -> None:
    command.upgrade(alembic_config(dsn, keyring), revision)


def downgrade(dsn: str, revision: str = "base", keyring: Keyring | None = None) -> None:
    command.downgrade(alembic_config(dsn, keyring), revision)


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
