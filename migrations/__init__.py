"""Alembic migrations of Canbao's schema, written as raw SQL."""

from __future__ import annotations

from typing import Any

from alembic import context, op
from sqlalchemy.util import await_only


def run_sql(sql: str) -> None:
    """Runs a script of several statements through asyncpg's simple-query protocol.

    SQLAlchemy's asyncpg dialect prepares each statement, and a prepared statement holds one
    command; migrations are whole scripts (functions with `$$` bodies included).
    """
    await_only(_driver().execute(sql))


def _driver() -> Any:
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    return driver_connection


def fetch(sql: str, *args: Any) -> list[Any]:
    """Rows of one statement with parameters, on the migration's asyncpg connection."""
    rows: list[Any] = await_only(_driver().fetch(sql, *args))
    return rows


def execute(sql: str, *args: Any) -> None:
    """One statement with parameters (a batch of a data migration)."""
    await_only(_driver().execute(sql, *args))


def keyring(revision: str, what: str) -> Any:
    """The keys `canbao migrate` was given, for a migration that seals rows stored in clear."""
    keys = context.config.attributes.get("keyring")
    if keys is None:
        raise SystemExit(
            f"migration {revision} seals {what} and needs the keys: "
            "run it with `canbao migrate` (which reads CANBAO_KEY_FILE or the data folder's keys.json)"
        )
    return keys
