"""Two database roles: the service's role owns nothing, may not change the schema or its triggers,
and may only add rows to the append-only tables; the owner migrates, and its grants cover tables
no one has named yet. (The whole suite runs the service as the application role: that it can do
all it needs is proved there.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import pytest

from backend import migrate, roles
from tests.conftest import APP_ROLE, OWNER_ROLE, PgServer
from tests.processes import FAST_HASHING, clean_env, data_dir, run_cli

if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection[Any]


@pytest.fixture
async def app_conn(db_dsn: str, conn: Conn) -> AsyncIterator[Conn]:
    """The application role's connection, on a database with one audit row."""
    await conn.execute(
        "INSERT INTO audit_log (actor_kind, action, entity, summary) VALUES ('system', 'seed', 'test', '{}')"
    )
    app = await asyncpg.connect(db_dsn)
    try:
        assert await app.fetchval("SELECT current_user") == APP_ROLE
        yield app
    finally:
        await app.close()


async def refused(conn: Conn, statement: str) -> str:
    """The message of the privilege error `statement` ends in (never the append-only trigger's)."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as caught:
        await conn.execute(statement)
    message = str(caught.value)
    assert "is append-only" not in message, f"{statement}: stopped by the trigger, not by a privilege"
    return message


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE payments SET amount_fen = 1",
        "DELETE FROM payment_events",
        "TRUNCATE payment_allocations",
        "DELETE FROM sync_mutations",
        "DELETE FROM record_changes",
        "UPDATE record_changes SET new_value = 'forged'",
        "UPDATE payment_ledger SET amount_fen = 1",  # a view writes with its owner's privileges
        "UPDATE alembic_version SET version_num = 'forged'",
        "TRUNCATE login_failures",  # no table may be truncated
    ],
)
async def test_the_application_role_cannot_change_or_remove_append_only_rows(app_conn: Conn, statement: str) -> None:
    assert "permission denied" in await refused(app_conn, statement)
    assert await app_conn.fetchval("SELECT count(*) FROM audit_log") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "SET LOCAL session_replication_role = replica",
        "CREATE TABLE public.shadow (id int)",
        "CREATE TABLE shadow (id int)",
        "CREATE SCHEMA shadow",
        "CREATE FUNCTION public.shadow() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW public.shadow AS SELECT 1",
        "CREATE INDEX shadow ON audit_log (action)",
        "CREATE TRIGGER shadow BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION forbid_change()",
        "ALTER TABLE audit_log ADD COLUMN shadow text",
        "ALTER TABLE payments DROP CONSTRAINT payments_receipt_no_key",
        "ALTER FUNCTION forbid_change() OWNER TO CURRENT_USER",
        "CREATE OR REPLACE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "DROP TRIGGER audit_log_append_only ON audit_log",
        "DROP TABLE audit_log",
        "COMMENT ON TABLE audit_log IS 'shadow'",
        "LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE",
        "ALTER ROLE CURRENT_USER SUPERUSER",
    ],
)
async def test_the_application_role_can_neither_disable_triggers_nor_change_the_schema(
    app_conn: Conn, statement: str
) -> None:
    transaction = app_conn.transaction()
    await transaction.start()  # LOCK and SET LOCAL take effect only inside one
    try:
        await refused(app_conn, statement)
    finally:
        await transaction.rollback()
    assert await app_conn.fetchval("SHOW session_replication_role") == "origin"
    assert await app_conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_views_and_read_only_tables_are_only_read(conn: Conn) -> None:
    """An updatable view writes with its owner's privileges (`payment_ledger` is one): the application
    role may only read views and the read-only tables."""
    rows = await conn.fetch(
        """
        SELECT c.relname AS name,
               has_table_privilege($1, c.oid, 'SELECT') AS reads,
               has_table_privilege($1, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES')
               OR has_any_column_privilege($1, c.oid, 'INSERT, UPDATE, REFERENCES') AS more
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND (c.relkind IN ('v', 'm') OR c.relname = ANY ($2::text[]))
        ORDER BY c.relname
        """,
        APP_ROLE,
        list(roles.READ_ONLY_TABLES),
    )
    assert {"payment_ledger", "premium_money", *roles.READ_ONLY_TABLES} <= {r["name"] for r in rows}
    assert [(r["name"], r["reads"], r["more"]) for r in rows] == [(r["name"], True, False) for r in rows]


async def test_every_append_only_table_takes_inserts_and_reads_and_nothing_else(conn: Conn) -> None:
    rows = await conn.fetch(
        """
        SELECT t AS name,
               has_table_privilege($1, t, 'SELECT') AS reads, has_table_privilege($1, t, 'INSERT') AS inserts,
               has_table_privilege($1, t, 'UPDATE') OR has_any_column_privilege($1, t, 'UPDATE') AS updates,
               has_table_privilege($1, t, 'DELETE') AS deletes, has_table_privilege($1, t, 'TRUNCATE') AS truncates,
               has_table_privilege($1, t, 'TRIGGER') AS triggers, has_table_privilege($1, t, 'REFERENCES') AS refs
        FROM unnest($2::text[]) AS t ORDER BY t
        """,
        APP_ROLE,
        list(roles.APPEND_ONLY_TABLES),
    )
    assert len(rows) == len(roles.APPEND_ONLY_TABLES)
    for r in rows:
        stamped = r["name"] in roles.STAMPED_COLUMNS
        assert (r["reads"], r["inserts"], r["updates"], r["deletes"], r["truncates"], r["triggers"], r["refs"]) == (
            True,
            True,
            stamped,
            False,
            False,
            False,
            False,
        ), r["name"]
    # record_changes: the capture trigger stamps `version` later; no other column may change.
    updatable = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'record_changes'::regclass AND attnum > 0"
        " AND NOT attisdropped AND has_column_privilege($1, attrelid, attnum, 'UPDATE') ORDER BY attname",
        APP_ROLE,
    )
    assert [r["attname"] for r in updatable] == ["version"]


async def test_the_application_role_owns_nothing_and_can_create_nothing(conn: Conn) -> None:
    assert await roles.separation_problems(conn, APP_ROLE) == []
    owners = await conn.fetch(
        "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    )
    assert [r["owner"] for r in owners] == [OWNER_ROLE]
    attributes = await conn.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = $1",
        APP_ROLE,
    )
    assert attributes is not None
    assert not any(attributes.values())


async def test_grants_cover_a_table_a_later_migration_adds_and_an_append_only_one_by_its_name(
    pg_server: PgServer, database_name: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await asyncpg.connect(pg_server.owner_dsn(database_name))
    try:
        # As a migration would: new tables of the owner's, which no grant names.
        await owner.execute("CREATE TABLE later_notes (id int PRIMARY KEY, note text)")
        await owner.execute("CREATE TABLE later_chain (id int PRIMARY KEY, digest bytea)")
        before = await _privileges(conn, "later_notes")
        assert before == {"SELECT", "INSERT"}, "until the grants run, a new table is at most insert-only"
        monkeypatch.setattr(roles, "APPEND_ONLY_TABLES", (*roles.APPEND_ONLY_TABLES, "later_chain"))
        await roles.apply_grants(owner, APP_ROLE)
        await roles.apply_grants(owner, APP_ROLE)  # idempotent
    finally:
        await owner.close()
    assert await _privileges(conn, "later_notes") == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert await _privileges(conn, "later_chain") == {"SELECT", "INSERT"}


async def test_grants_refuse_an_application_role_that_could_do_more(
    pg_server: PgServer, database_name: str, conn: Conn
) -> None:
    owner = await asyncpg.connect(pg_server.owner_dsn(database_name))
    try:
        with pytest.raises(roles.RoleError, match="cannot be the owner"):
            await roles.apply_grants(owner, OWNER_ROLE)
        # A superuser (e.g. DATABASE_URL left as the administrator's) is named, with the fix.
        admin: str = await conn.fetchval("SELECT current_user")
        with pytest.raises(roles.RoleError, match="is a superuser"):
            await roles.apply_grants(owner, admin)
    finally:
        await owner.close()


async def _privileges(conn: Conn, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES']) p"
        " WHERE has_table_privilege($1, $2, p)",
        APP_ROLE,
        table,
    )
    return {r["p"] for r in rows}


def test_migrate_with_database_url_needs_the_owner_and_grants_the_application_role(pg_server: PgServer) -> None:
    name = pg_server.create_database(template="template0")
    try:
        app_dsn, owner_dsn = pg_server.app_dsn(name), pg_server.owner_dsn(name)
        alone = run_cli("migrate", env=clean_env(DATABASE_URL=app_dsn, **FAST_HASHING))
        assert alone.returncode == 1
        assert "CANBAO_OWNER_DATABASE_URL" in alone.stderr
        assert asyncio.run(_tables(pg_server.dsn(name))) == 0, "nothing was created as the application role"

        env = clean_env(DATABASE_URL=app_dsn, CANBAO_OWNER_DATABASE_URL=owner_dsn, **FAST_HASHING)
        migrated = run_cli("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert f"schema at revision {migrate.head_revision()}" in migrated.stdout
        problems, owners, audit = asyncio.run(_state(pg_server.dsn(name)))
        assert problems == []
        assert owners == [OWNER_ROLE]
        assert audit == {"SELECT", "INSERT"}

        # The administrator as DATABASE_URL: migrated, but the grants refuse it, naming why.
        wrong = run_cli("migrate", env=clean_env(DATABASE_URL=pg_server.dsn(name), CANBAO_OWNER_DATABASE_URL=owner_dsn))
        assert wrong.returncode == 1
        assert "is a superuser" in wrong.stderr
    finally:
        pg_server.drop_database(name)


async def _tables(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        return count
    finally:
        await conn.close()


async def _state(dsn: str) -> tuple[list[str], list[str], set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        problems = await roles.separation_problems(conn, APP_ROLE)
        owners = [
            r["o"]
            for r in await conn.fetch(
                "SELECT DISTINCT pg_get_userbyid(relowner) AS o FROM pg_class"
                " WHERE relnamespace = 'public'::regnamespace"
            )
        ]
        return problems, owners, await _privileges(conn, "audit_log")
    finally:
        await conn.close()


def test_an_embedded_database_made_before_the_roles_is_given_to_the_owner_by_migrate() -> None:
    """A data folder from before the roles: its tables are the superuser's. `canbao migrate` gives
    them to the owner role and grants the application role; commands then run as that role."""
    from backend.embedded import EmbeddedPostgres

    with data_dir() as folder:
        pg = EmbeddedPostgres(folder)
        try:
            superuser_dsn = pg.start()
            migrate.upgrade(superuser_dsn)  # as every version before this one did
            assert asyncio.run(_owners(superuser_dsn)) == ["postgres"]
        finally:
            pg.release()

        migrated = run_cli("--data-dir", str(folder), "migrate", env=clean_env(**FAST_HASHING))
        assert migrated.returncode == 0, migrated.stderr

        pg = EmbeddedPostgres(folder)
        try:
            superuser_dsn = pg.start()
            assert asyncio.run(_owners(superuser_dsn)) == [roles.OWNER_ROLE]
            assert asyncio.run(_app_problems(superuser_dsn)) == []
        finally:
            pg.release()


async def _owners(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relnamespace = 'public'::regnamespace
            UNION SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
            UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()
            """
        )
        return sorted(r["o"] for r in rows)
    finally:
        await conn.close()


async def _app_problems(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await roles.separation_problems(conn, roles.APP_ROLE)
    finally:
        await conn.close()
