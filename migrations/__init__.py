"""Alembic migrations of Canbao's schema, written as raw SQL."""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_only


def run_sql(sql: str) -> None:
    """Runs a script of several statements through asyncpg's simple-query protocol.

    SQLAlchemy's asyncpg dialect prepares each statement, and a prepared statement holds one
    command; migrations are whole scripts (functions with `$$` bodies included).
    """
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    await_only(driver_connection.execute(sql))
