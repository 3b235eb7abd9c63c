"""The two database roles: the owner runs migrations and owns every object; the application role,
which the service connects as, owns nothing and may only add rows to the append-only tables.

`apply_grants` runs after every upgrade (`backend.migrate`), so tables that later migrations add
are covered without a list of them; only an append-only table has to be named, in one tuple.
"""

from __future__ import annotations

import asyncpg

from backend.db import Connection

OWNER_ROLE = "canbao_owner"  # the embedded database's roles; with DATABASE_URL, the operator's
APP_ROLE = "canbao_app"

# Records the service writes once and never changes or removes: the application role gets INSERT
# and SELECT on them, nothing else (README, "Database roles", says why each one is here).
APPEND_ONLY_TABLES = (
    "audit_log",
    "payments",
    "payment_allocations",
    "payment_events",
    "remittances",
    "receipt_retirements",
    "collector_days",
    "list_versions",
    "list_entries",
    "sync_mutations",
    "record_changes",
    "audit_chain",  # the audit log's hash chain: links are appended, never rewritten
    "crypto_keys",  # fingerprints of the keys the database was sealed with
)
# Columns of an append-only table that a capture trigger fills in later, in the transaction that
# wrote the row: the application role may UPDATE these columns and no other.
STAMPED_COLUMNS = {"record_changes": ("version",)}
# Tables the service only reads: the schema's revision (`/ready`).
READ_ONLY_TABLES = ("alembic_version",)

_GRANTS_LOCK = "canbao.grants"


class RoleError(Exception):
    """The roles are not separated as they must be (a message for the operator, naming the fix)."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_roles(admin: Connection, owner: str, app: str, password: str | None = None) -> None:
    """Creates both login roles if missing (a superuser's connection), neither of them a superuser;
    `password` (tests against an external server) is set only on a role this call creates."""
    async with admin.transaction():
        # Roles are cluster-wide: two processes starting at once must not both create them.
        await admin.execute("SELECT pg_advisory_xact_lock(hashtext('canbao.roles'))")
        for role in (owner, app):
            row = await admin.fetchrow(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls AS powerful,"
                " rolcanlogin FROM pg_roles WHERE rolname = $1",
                role,
            )
            options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            if row is None:
                secret = "" if password is None else " PASSWORD " + _literal(password)
                await admin.execute(f"CREATE ROLE {quote_ident(role)} {options}{secret}")
            elif row["powerful"] or not row["rolcanlogin"]:
                await admin.execute(f"ALTER ROLE {quote_ident(role)} {options}")


async def give_database(admin: Connection, owner: str) -> int:
    """Makes `owner` the owner of the connected database and of everything in its public schema
    (a superuser's connection): a database made before the roles existed has the superuser's
    tables. Returns how many objects changed hands."""
    moved = 0
    async with admin.transaction():
        await admin.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(_GRANTS_LOCK)}))")
        database_owner = await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        )
        if database_owner != owner:
            database = await admin.fetchval("SELECT current_database()")
            await admin.execute(f"ALTER DATABASE {quote_ident(database)} OWNER TO {quote_ident(owner)}")
        statements = await admin.fetch(
            """
            SELECT format('ALTER %s %s OWNER TO %I',
                          CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                         WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                          c.oid::regclass, $1::text) AS sql
            FROM pg_class c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND pg_get_userbyid(c.relowner) <> $1
              -- a sequence of an identity or serial column goes with its table
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass)
            UNION ALL
            SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1::text)
            FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND pg_get_userbyid(p.proowner) <> $1
            UNION ALL
            SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, $1::text)
            FROM pg_type t
            WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'c', 'r')
              AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
              AND pg_get_userbyid(t.typowner) <> $1
            UNION ALL
            SELECT format('ALTER SCHEMA public OWNER TO %I', $1::text)
            FROM pg_namespace
            WHERE nspname = 'public' AND pg_get_userbyid(nspowner) NOT IN ($1, 'pg_database_owner')
            """,
            owner,
        )
        for row in statements:
            await admin.execute(row["sql"])
            moved += 1
    return moved


async def apply_grants(conn: Connection, app: str) -> None:
    """The application role's privileges on everything in the public schema, as the owner (whose
    objects they are): SELECT, INSERT, UPDATE and DELETE; only INSERT and SELECT on the append-only
    tables; only SELECT on views and read-only tables; never TRUNCATE, REFERENCES, TRIGGER or DDL.
    Idempotent, in one transaction; then the separation is checked (`RoleError`)."""
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(_GRANTS_LOCK)}))")
        owner: str = await conn.fetchval("SELECT current_user")
        if owner == app:
            raise RoleError(f"the application role {app} cannot be the owner that runs the migrations")
        database: str = await conn.fetchval("SELECT current_database()")
        foreign = await conn.fetchval(
            "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ', ') FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND pg_get_userbyid(relowner) <> $1",
            owner,
        )
        if foreign:
            raise RoleError(
                f"tables of the schema belong to {foreign}, not to the owner role {owner}; an administrator "
                f"moves them first: REASSIGN OWNED BY {foreign.split(', ')[0]} TO {owner}"
            )
        role = quote_ident(app)
        statements = [
            f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(database)} TO {role}",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            # New objects of the owner's are at most insert-only until the grants below run again.
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, USAGE ON SEQUENCES TO {role}",
        ]
        relations = await conn.fetch(
            "SELECT c.oid::regclass::text AS name, c.relname::text, c.relkind::text FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
            " ORDER BY c.relname"
        )
        for r in relations:
            statements.append(f"REVOKE ALL ON {r['name']} FROM {role}")
            if r["relkind"] == "S":
                privileges = "SELECT, USAGE"
            elif r["relkind"] not in ("r", "p") or r["relname"] in READ_ONLY_TABLES:
                # A view runs with its owner's privileges: writing through it would bypass the list.
                privileges = "SELECT"
            elif r["relname"] in APPEND_ONLY_TABLES:
                privileges = "SELECT, INSERT"
            else:
                privileges = "SELECT, INSERT, UPDATE, DELETE"
            statements.append(f"GRANT {privileges} ON {r['name']} TO {role}")
            if r["relname"] in STAMPED_COLUMNS and r["relkind"] in ("r", "p"):
                columns = ", ".join(quote_ident(c) for c in STAMPED_COLUMNS[r["relname"]])
                statements.append(f"GRANT UPDATE ({columns}) ON {r['name']} TO {role}")
        await conn.execute(";\n".join(statements))
        problems = await separation_problems(conn, app)
        if problems:
            raise RoleError(f"the application role {app} " + "; ".join(problems))


async def separation_problems(conn: Connection, app: str) -> list[str]:
    """What lets `app` do more than the service needs, as phrases; empty when all is well."""
    row = await conn.fetchrow(
        """
        SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
               (SELECT datdba = r.oid FROM pg_database WHERE datname = current_database()) AS owns_database,
               has_schema_privilege(r.oid, 'public', 'CREATE') AS creates_in_schema,
               has_database_privilege(r.oid, current_database(), 'CREATE') AS creates_schemas,
               (SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class
                WHERE relnamespace = 'public'::regnamespace AND relowner = r.oid) AS owned,
               (SELECT string_agg(rolname, ', ') FROM pg_roles o
                WHERE o.oid <> r.oid AND pg_has_role(r.oid, o.oid, 'USAGE')
                  AND EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = 'public'::regnamespace
                              AND relowner = o.oid)) AS acts_as_owner
        FROM pg_roles r WHERE r.rolname = $1
        """,
        app,
    )
    if row is None:
        return ["does not exist"]
    problems = []
    if row["rolsuper"]:
        problems.append("is a superuser (ALTER ROLE … NOSUPERUSER)")
    if row["rolbypassrls"] or row["rolcreaterole"] or row["rolcreatedb"]:
        problems.append("may bypass row security, create roles or create databases (ALTER ROLE … NOBYPASSRLS …)")
    if row["owns_database"]:
        problems.append("owns the database (ALTER DATABASE … OWNER TO the owner role)")
    if row["owned"]:
        problems.append(f"owns tables ({row['owned']}); an administrator moves them: REASSIGN OWNED BY {app} TO …")
    if row["acts_as_owner"]:
        problems.append(f"is a member of {row['acts_as_owner']}, which owns tables")
    if row["creates_in_schema"] or row["creates_schemas"]:
        problems.append("may create objects (REVOKE CREATE ON SCHEMA public FROM PUBLIC, and on the database)")
    return problems


async def current_role_problems(dsn: str) -> list[str]:
    """`separation_problems` of the role a DSN connects as (a warning at `canbao serve`)."""
    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        role: str = await conn.fetchval("SELECT current_user")
        return [f"{role} {p}" for p in await separation_problems(conn, role)]
    finally:
        await conn.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
