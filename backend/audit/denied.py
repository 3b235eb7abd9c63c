"""Refused attempts: a request answered 404 `not_found` — which is also what a record outside the
caller's scope answers — leaves an audit row saying who asked, on which route, for which record id.

The request's own transaction rolls back with the error, so the row is written after it, on the
same connection, as a transaction of its own: `provide_tx` is the app's `tx` dependency. Only the
path's ids, whole numbers and dates are kept (never a text parameter, which could be an identity
number); one row per refused request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
from litestar import Request
from litestar.datastructures import State

from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, Pool
from backend.errors import NotFound
from backend.replicas import after_commit

log = logging.getLogger("canbao.audit")


async def provide_tx(state: State, request: Request[Any, Any, Any]) -> AsyncGenerator[Connection, None]:
    """One transaction per request: commits when the handler returns, rolls back when it raises; a
    `NotFound` out of it is then recorded as a denied attempt."""
    pool: Pool = state.pool
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                yield conn
            await after_commit(request, conn)  # read-your-writes with replicas (backend.replicas)
        except NotFound:
            await record_denied(conn, request)
            raise


async def provide_autocommit(state: State, request: Request[Any, Any, Any]) -> AsyncGenerator[Connection, None]:
    """A connection with no transaction (`Autocommit`): for a read of one statement whose only write is
    its audit row, which then commits by itself, after the read, before the answer leaves. A BEGIN and a
    COMMIT are two round trips of the request's four (a search by identity number: 8–11% more searches
    a second without them, docs/scaling.md). A `NotFound` out of it is recorded as `provide_tx` does."""
    pool: Pool = state.pool
    async with pool.acquire() as conn:
        try:
            yield conn
        except NotFound:
            await record_denied(conn, request)
            raise


async def record_denied(conn: Connection, request: Request[Any, Any, Any]) -> None:
    actor = request.scope.get("user")
    if not isinstance(actor, Actor):
        return
    params = {
        name: str(value)
        for name, value in request.path_params.items()
        if isinstance(value, UUID | int | date) and not isinstance(value, bool)
    }
    ids = [name for name, value in request.path_params.items() if isinstance(value, UUID)]
    entity = ids[-1].removesuffix("_id") if ids else "request"
    template = request.scope.get("path_template") or "?"
    try:
        await record(
            conn,
            actor,
            "denied",
            entity,
            params[ids[-1]] if ids else None,
            division_code=None if actor.kind == "resident" else actor.scope.division_code,
            summary={"route": f"{request.method} {template}", "answer": NotFound.code, "params": params},
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The answer stays the 404 it was; the trail misses one refusal, which the log says.
        log.error("denied attempt not recorded", extra={"error": type(exc).__name__})
