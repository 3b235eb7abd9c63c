"""Alembic environment: runs migrations over asyncpg, the one driver Canbao uses."""

from __future__ import annotations

import asyncio
import functools

import asyncpg
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    # asyncpg reads the DSN itself, as the service does: a host list with target_session_attrs (a
    # cluster's primary), Unix sockets in `?host=`, percent-encoded passwords. SQLAlchemy's URL
    # parser knows only one host and port in the authority.
    dsn: str = config.attributes["dsn"]
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=functools.partial(asyncpg.connect, dsn), poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `canbao migrate`")
asyncio.run(run_async())
