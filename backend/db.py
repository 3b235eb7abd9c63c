"""The asyncpg pool and named SQL loaded from `.sql` files (the per-request unit of work, which
records refusals, is `backend.audit.denied.provide_tx`)."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from typing import TYPE_CHECKING, LiteralString, TypeAlias, TypeVar, cast

import asyncpg
import msgspec

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs; Litestar's signature models take no unions here
    Connection = asyncpg.Connection
    Pool = asyncpg.Pool

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_json_encoder = msgspec.json.Encoder()


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, LiteralString]:
    """Named SQL blocks (`-- name: foo`) of a package's .sql file, for `Q["foo"]` look-ups."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{package}/{filename}: query {name!r} defined twice")
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries


async def init_connection(conn: Connection) -> None:
    # The binary jsonb format is a version byte followed by the text.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + _json_encoder.encode(v),
        decoder=lambda b: msgspec.json.decode(b[1:]),
        format="binary",
    )


class CanbaoConnection(asyncpg.Connection):
    """A pooled connection released without a reset query.

    Canbao keeps no session state on a connection: locks are transaction-level, settings are
    `SET LOCAL`, there are no cursors outside transactions and no LISTEN. asyncpg still rolls back
    an open transaction on release; skipping `RESET ALL; pg_advisory_unlock_all(); …` saves a round
    trip per request (two with the authentication check)."""

    def get_reset_query(self) -> str:
        return ""


# Opening a connection gives up after this long (asyncpg's default is a minute): a database host
# that does not answer is a 503 `try_again` (backend.errors) while the caller still waits.
CONNECT_TIMEOUT_S = 10


async def create_pool(
    dsn: str, min_size: int = 1, max_size: int = 10, *, statement_timeout_s: float | None = None
) -> Pool:
    """With `statement_timeout_s` (a standby's pool, backend.replicas): the server cancels a statement
    running longer (57014), and the client stops waiting a second after that (TimeoutError) for a
    server that does not answer at all."""
    settings = {"application_name": "canbao", "timezone": "UTC"}
    if statement_timeout_s is not None:
        settings["statement_timeout"] = str(max(1, round(statement_timeout_s * 1000)))
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=None if statement_timeout_s is None else statement_timeout_s + 1.0,
        connection_class=CanbaoConnection,
        init=init_connection,
        server_settings=settings,
    )
    assert pool is not None
    return pool


_expiring: set[asyncio.Task[None]] = set()


def drop_connections(pool: Pool | None) -> None:
    """After the database went away or refused a write (a failover): every connection of `pool` is
    closed when next released or acquired, and opened again — to the host that is now the primary
    when the DSN lists the cluster's hosts with `target_session_attrs=read-write`. Without it, each
    pooled connection to the old primary would fail one more request before the pool replaced it
    (a connection to a demoted primary stays open and refuses every write)."""
    if pool is None or not isinstance(pool, asyncpg.Pool):
        return
    task = asyncio.get_running_loop().create_task(pool.expire_connections())
    _expiring.add(task)
    task.add_done_callback(_expiring.discard)


StructT = TypeVar("StructT", bound=msgspec.Struct)


def from_row(record: asyncpg.Record, struct: type[StructT]) -> StructT:
    """A row as a Struct, with enum and literal fields checked (a bad value in the database fails loudly)."""
    return msgspec.convert(dict(record.items()), struct, from_attributes=False)
