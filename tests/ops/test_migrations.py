"""Migrations: upgrade, downgrade to base and upgrade again give the same schema."""

from __future__ import annotations

import asyncio
import os
import tempfile
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from backend import migrate
from tests.conftest import APP_ROLE, PgServer

SNAPSHOT = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '') AS item
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function', proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


async def snapshot(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [(r["kind"], r["item"]) for r in await conn.fetch(SNAPSHOT)]
    finally:
        await conn.close()


def test_upgrade_downgrade_upgrade_round_trip(pg_server: PgServer) -> None:
    name = pg_server.create_database(template="template0")
    dsn = pg_server.dsn(name)
    try:
        assert asyncio.run(snapshot(dsn)) == []
        migrate.upgrade(dsn)
        first = asyncio.run(snapshot(dsn))
        assert ("column", "users.password_hash text NO ") in first
        migrate.downgrade(dsn, "base")
        # Only alembic's own bookkeeping table survives a downgrade to base.
        assert {item.split(".")[0] for kind, item in asyncio.run(snapshot(dsn)) if kind == "column"} == {
            "alembic_version"
        }
        migrate.upgrade(dsn)
        assert asyncio.run(snapshot(dsn)) == first
    finally:
        pg_server.drop_database(name)


async def test_migrated_template_is_at_head(conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    assert await migrate.current_revision(conn) == migrate.head_revision()


def test_migrate_through_a_multi_host_dsn(pg_server: PgServer) -> None:
    """`canbao migrate` against a cluster (README, "High availability"): the DSN lists every node with
    target_session_attrs=read-write; a host that does not answer is passed over, as the service does."""
    name = pg_server.create_database()
    owner = urlsplit(pg_server.owner_dsn(name))
    socket_dir = parse_qs(owner.query)["host"][0]
    dead = tempfile.mkdtemp(prefix="canbao-test-no-server-")  # a socket folder with no server in it
    cluster = urlunsplit(owner._replace(query=f"host={dead},{socket_dir}&target_session_attrs=read-write"))
    try:
        migrate.downgrade(cluster, "-1")
        migrate.upgrade(cluster, app_role=APP_ROLE)

        async def revision() -> str | None:
            conn = await asyncpg.connect(cluster)
            try:
                return await migrate.current_revision(conn)
            finally:
                await conn.close()

        assert asyncio.run(revision()) == migrate.head_revision()
    finally:
        os.rmdir(dead)
        pg_server.drop_database(name)


def test_the_summary_at_commit_is_usable_by_the_service_before_the_grants(pg_server: PgServer) -> None:
    """Migration 0032's triggers make every write of the facts use two new tables at its commit: the
    service's role may use them as soon as 0032 commits, not only after `canbao migrate` has applied
    the grants at the end (a service still running meanwhile could otherwise commit no write)."""
    name = pg_server.create_database()
    owner = pg_server.owner_dsn(name)
    try:
        migrate.downgrade(owner, "0031", app_role=APP_ROLE)
        migrate.upgrade(owner, "0032")  # no grants applied after it

        async def privileges() -> list[bool]:
            conn = await asyncpg.connect(owner)
            try:
                return [
                    await conn.fetchval("SELECT has_table_privilege($1, $2, 'DELETE')", APP_ROLE, table)
                    for table in ("coverage_dirty", "coverage_dirty_xacts")
                ]
            finally:
                await conn.close()

        assert asyncio.run(privileges()) == [True, True]
        migrate.upgrade(owner, app_role=APP_ROLE)
    finally:
        pg_server.drop_database(name)
