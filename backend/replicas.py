"""Reads that may lag go to standbys (issue 21): FHIR eligibility checks and Coverage searches read a
replica listed in `CANBAO_REPLICA_DSNS`; their audit row is still written on the primary, in the
request's own transaction (`tx`).

Read-your-writes. A standby replays the primary's WAL a moment behind it. After a request that
wrote, the primary's WAL position after the commit (`pg_current_wal_insert_lsn()`) is kept for the
caller's actor for `REMEMBER_S` in this process and sent back in the `Canbao-Commit-LSN` header; a
read that names a position (`Canbao-Read-After`, for clients that go through several app instances)
or whose actor wrote lately goes to a replica only once its `pg_last_wal_replay_lsn()` has reached
that position — waiting up to `WAIT_S`, else it reads on the primary. Without replicas nothing of
this runs: no extra query after writes.

Which reads: FHIR eligibility and Coverage search (`reads`); the staff's reports — the 应保尽保
report, its trend, the roster, collections, subsidised persons not enrolled — through the API and
the console (`reads`); a resident's coverage through the API and the /r/ page (`fresh_reads`).

The console's pages run the services in-process, in the same requests: a page that wrote remembers
its position for the user like the API does, and also answers it in a short-lived cookie
(`READ_AFTER_COOKIE`, `REMEMBER_S`), read like the header, so the next page sees the write whichever
app process or instance serves it. A resident writes nothing that their page shows (a payment or an
enrolment is a clerk's or a tablet's): `fresh_reads` asks the primary for its position when the
read begins, so a replica answers only once it has replayed everything committed before — the
payment made at the counter a minute ago included — at the price of one trivial query on the
primary; the resident's audit row is written there anyway.

A standby that fails under a read (its connection lost, or replay cancelling the statement: a
recovery conflict) fails the request's attempt, not the request: it is run again on the primary
(`read_again_on_primary`), whose pool is left alone (backend.errors). So does a standby too slow to
answer: a statement on it is limited to `CANBAO_REPLICA_STATEMENT_TIMEOUT_S` (cancelled by the
standby, or given up by the client a second later when the standby says nothing at all).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
from litestar import Request
from litestar.datastructures import Cookie, State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from litestar.utils.scope.state import CONNECTION_STATE_KEY

from backend import errors, metrics
from backend.db import Connection, Pool
from backend.deps import Autocommit, Tx

COMMIT_HEADER = "Canbao-Commit-LSN"
READ_AFTER_HEADER = "Canbao-Read-After"
READ_AFTER_COOKIE = "canbao_read_after"  # the console's: the last write's position, for REMEMBER_S
WAIT_S = 0.5  # how long a read waits for a replica to replay the caller's last write
POLL_S = 0.02
REMEMBER_S = 60.0  # an actor's last write sends its reads to caught-up replicas for this long
REMEMBERED = 10_000  # actors kept, the least recent dropped first
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_SCOPE_KEY = "canbao.commit_lsn"
_READ_KEY = "canbao.lagging_read"
_PRIMARY_KEY = "canbao.primary_reads"  # a request run again after its standby failed: it reads on the primary
# The most of a request's body kept to send it again (`read_again_on_primary`): the routes that read
# standbys take a query string or a FHIR resource; a bigger body is not kept, nor its request run again.
RETRY_BODY_LIMIT = 1 << 20
# A standby's replayed position; on a server that is not in recovery (a primary listed as a
# replica, or a standby just promoted), everything it has written.
_REPLAYED = "SELECT COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) >= $1::text::pg_lsn"

log = logging.getLogger("canbao.replicas")


def lsn_value(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class Replicas:
    """The replica pools, taken in turn, and the actors' last write positions."""

    def __init__(self, pools: list[Pool]) -> None:
        self.pools = pools
        self._turn = itertools.cycle(range(len(pools))) if pools else None
        self._written: OrderedDict[UUID, tuple[str, float]] = OrderedDict()

    def remember(self, actor_id: UUID, lsn: str) -> None:
        self._written[actor_id] = (lsn, time.monotonic())
        self._written.move_to_end(actor_id)
        while len(self._written) > REMEMBERED:
            self._written.popitem(last=False)

    def written_by(self, actor_id: UUID) -> str | None:
        found = self._written.get(actor_id)
        if found is None or time.monotonic() - found[1] > REMEMBER_S:
            return None
        return found[0]

    def next_pool(self) -> Pool | None:
        return None if self._turn is None else self.pools[next(self._turn)]

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


async def caught_up(conn: Connection, lsn: str | None, wait_s: float = WAIT_S) -> bool:
    """Whether the server behind `conn` has replayed `lsn`, polled for up to `wait_s`."""
    if lsn is None:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        if await conn.fetchval(_REPLAYED, lsn):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


def read_after_cookie_name(secure: bool) -> str:
    """Behind TLS `__Host-` prefixed, as the console's session cookie (backend.web.session)."""
    return f"__Host-{READ_AFTER_COOKIE}" if secure else READ_AFTER_COOKIE


def _needed(request: Request[Any, Any, Any], replicas: Replicas) -> str | None:
    """The position a read must see: the request's header or cookie, the actor's last write, the latest."""
    wanted: list[str] = []
    secure = bool(getattr(getattr(request.app.state, "settings", None), "cookie_secure", False))
    for given in (
        request.headers.get(READ_AFTER_HEADER.lower()),
        request.cookies.get(read_after_cookie_name(secure), "").replace("-", "/") or None,
    ):
        if given is not None and _LSN.match(given.strip()):
            wanted.append(given.strip())
    actor = request.scope.get("user")
    actor_id = getattr(actor, "id", None)
    if isinstance(actor_id, UUID) and (written := replicas.written_by(actor_id)) is not None:
        wanted.append(written)
    return max(wanted, key=lsn_value) if wanted else None


@asynccontextmanager
async def _reads(
    state: State, request: Request[Any, Any, Any], tx: Connection, *, fresh: bool
) -> AsyncIterator[Connection]:
    # A read route's own writes (its audit row) need no read-your-writes: no position is asked for.
    request.scope[_READ_KEY] = True  # type: ignore[literal-required]
    replicas: Replicas | None = getattr(state, "replicas", None)
    pool = replicas.next_pool() if replicas is not None else None
    if replicas is None or pool is None or request.scope.get(_PRIMARY_KEY):
        yield tx
        return
    needed = _needed(request, replicas)
    if fresh:  # everything committed on the primary before this read began
        now: str = await tx.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        needed = now if needed is None else max(needed, now, key=lsn_value)
    conn: Connection | None
    try:
        conn = await pool.acquire(timeout=1)
    except (OSError, TimeoutError, Exception):  # a replica down is not the request's failure
        conn = None
    if conn is None:  # (yielded outside the handler: a failure of the primary's read would carry this one)
        metrics.REPLICA_PASSED_BY.labels("unreachable").inc()
        yield tx
        return
    try:
        answered = True
        try:
            ready = await caught_up(conn, needed)
        except (OSError, Exception) as exc:
            _drop_if_silent(conn, exc)
            answered = ready = False
        if not ready:
            metrics.REPLICA_PASSED_BY.labels("behind" if answered else "unreachable").inc()
            yield tx
            return
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        try:
            await transaction.start()
        except Exception as exc:  # gone since it answered
            _drop_if_silent(conn, exc)
            ready = False
        if not ready:
            metrics.REPLICA_PASSED_BY.labels("unreachable").inc()
            yield tx
            return
        try:
            yield conn
        except BaseException as exc:
            _drop_if_silent(conn, exc)
            if _gone(conn) or (errors.cause(exc, _standby_failed) is not None and await _failed_on(conn)):
                # The standby's failure, not the request's: read again on the primary (`read_again_on_primary`).
                request.scope[errors.REPLICA_FAILED] = True  # type: ignore[literal-required]
            try:
                await transaction.rollback()
            except Exception as ending:  # (whatever the standby says to it, the request's failure stands)
                _drop_if_silent(conn, ending)
            raise
        try:
            await transaction.commit()
        except Exception as exc:  # its reads are done and answered: how the standby ends them is its own
            _drop_if_silent(conn, exc)
            log.warning("a standby's read ended with an error", extra={"error": type(exc).__name__})
    finally:
        try:
            await pool.release(conn)
        except Exception as exc:  # the standby's connection, not the request's: never the primary's failure
            log.warning("a standby's connection was not handed back", extra={"error": type(exc).__name__})


def _drop_if_silent(conn: Connection, exc: BaseException) -> None:
    """A statement the standby did not answer in time (`_silent`): its connection waits on a cancel the
    standby may never acknowledge, so it is closed, not handed back to the pool (whose reset would wait)."""
    if errors.cause(exc, _silent) is not None:
        conn.terminate()


async def _failed_on(conn: Connection) -> bool:
    """Whether the failure was the standby's own: its transaction failed (a probe answers 25P02), rather
    than a statement on the primary cancelled or in conflict while the standby's read stood open."""
    try:
        await conn.fetchval("SELECT 1")
    except asyncpg.InFailedSQLTransactionError:
        return True
    except Exception as exc:  # it cannot answer at all: the standby's failure all the same
        _drop_if_silent(conn, exc)
        return True
    return False


def _gone(conn: Connection) -> bool:
    """Whether the connection has closed (a pooled one is handed back to its pool when it does)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


def _standby_failed(exc: BaseException) -> bool:
    """A standby cancelled the statement to replay a change under it (a row vacuumed away, a table
    locked or dropped on the primary): a serialization failure or a deadlock, the only ways a
    read-only transaction on a standby fails so. Or the statement outran the replica pool's
    `statement_timeout` (57014, the standby overloaded), or the standby did not answer at all."""
    return getattr(exc, "sqlstate", None) in ("40001", "40P01", "57014") or _silent(exc)


def _silent(exc: BaseException) -> bool:
    """The replica pool's client-side limit ran out (`backend.db.create_pool`): the standby did not
    answer a statement a second after its own limit (stopped, or the network to it down). A request's
    own time limit cancels its task instead (backend.timeouts): no TimeoutError reaches a handler."""
    return isinstance(exc, TimeoutError)


async def provide_reads(state: State, request: Request[Any, Any, Any], tx: Tx) -> AsyncGenerator[Connection, None]:
    """The connection a lagging read may use: a caught-up replica's, in a read-only transaction, or
    the request's own (`tx`, the primary) when there is no replica, none answers or none caught up."""
    async with _reads(state, request, tx, fresh=False) as conn:
        yield conn


async def provide_autocommit_reads(
    state: State, request: Request[Any, Any, Any], autocommit: Autocommit
) -> AsyncGenerator[Connection, None]:
    """As `provide_reads`, for a route outside a transaction: the primary's reads are `autocommit`'s."""
    async with _reads(state, request, autocommit, fresh=False) as conn:
        yield conn


async def provide_fresh_reads(
    state: State, request: Request[Any, Any, Any], autocommit: Autocommit
) -> AsyncGenerator[Connection, None]:
    """As `provide_autocommit_reads`, the replica having replayed all the primary had written when the
    read began. A resident's reads: their only write is its audit row (`autocommit`'s)."""
    async with _reads(state, request, autocommit, fresh=True) as conn:
        yield conn


async def after_commit(request: Request[Any, Any, Any], conn: Connection) -> None:
    """After a request's transaction committed (with replicas configured, for a writing method):
    its position is remembered for the actor and answered in `Canbao-Commit-LSN`."""
    replicas: Replicas | None = getattr(request.app.state, "replicas", None)
    if replicas is None or not replicas.pools or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if request.scope.get(_READ_KEY):
        return
    lsn: str = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
    request.scope[_SCOPE_KEY] = lsn  # type: ignore[literal-required]
    actor_id = getattr(request.scope.get("user"), "id", None)
    if isinstance(actor_id, UUID):
        replicas.remember(actor_id, lsn)


def read_after_cookie(scope: Scope, secure: bool) -> tuple[bytes, bytes] | None:
    """For a console page whose request wrote: the cookie that carries its position to the next
    pages (`READ_AFTER_COOKIE`; `0-16B3F28`, a cookie's value keeps no slash unquoted)."""
    lsn = scope.get(_SCOPE_KEY)
    if not isinstance(lsn, str):
        return None
    cookie = Cookie(
        key=read_after_cookie_name(secure),
        value=lsn.replace("/", "-"),
        path="/",
        max_age=int(REMEMBER_S),
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return cookie.to_encoded_header()


def commit_header(app: ASGIApp) -> ASGIApp:
    """Adds `Canbao-Commit-LSN` to the answer of a request whose transaction wrote (see above)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            lsn = scope.get(_SCOPE_KEY)
            if message["type"] == "http.response.start" and isinstance(lsn, str):
                headers = list(message.get("headers", []))
                headers.append((COMMIT_HEADER.lower().encode(), lsn.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, sending)

    return middleware


def read_again_on_primary(app: ASGIApp) -> ASGIApp:
    """Litestar middleware, the innermost (after routing and authentication): a request whose read
    failed on a standby (its connection lost: the standby restarting, the network; its statement
    cancelled by a recovery conflict, the standby having to replay a change under the read; or the
    standby too slow, past `CANBAO_REPLICA_STATEMENT_TIMEOUT_S`) is run
    again, once, with every read on the primary, and that answer is sent. Its own transaction on the
    primary (the audit row) rolled back with the failure, and the failed attempt's answer had not
    begun to leave: nothing of it is seen. Without replicas it passes requests through."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        replicas: Replicas | None = getattr(scope["app"].state, "replicas", None)
        if scope["type"] != ScopeType.HTTP or replicas is None or not replicas.pools:
            await app(scope, receive, send)
            return
        entered = dict(scope)
        received: list[ReceiveMessage] = []
        kept = 0  # bytes of body kept; -1: too many, not kept

        async def recording() -> ReceiveMessage:
            nonlocal kept
            message = await receive()
            if kept >= 0 and message["type"] == "http.request":
                kept += len(message.get("body", b""))
                if kept > RETRY_BODY_LIMIT:
                    kept = -1
                    received.clear()
                else:
                    received.append(message)
            return message

        failed = False

        async def sending(message: Message) -> None:
            nonlocal failed
            if message["type"] == "http.response.start" and scope.get(errors.REPLICA_FAILED) and kept >= 0:
                failed = True
            if not failed:
                await send(message)

        await app(scope, recording, sending)
        if not failed:
            return
        route = scope.get("path_template") or "unmatched"
        log.warning("read failed on a standby, read again on the primary", extra={"route": route})
        metrics.REPLICA_READS_AGAIN.labels(route).inc()
        replay = iter(received)

        async def replaying() -> ReceiveMessage:
            return next(replay, None) or await receive()

        # Litestar's state of the connection (the body read, that an answer started) begins anew.
        state: dict[str, Any] = {k: v for k, v in scope.get("state", {}).items() if k != CONNECTION_STATE_KEY}
        again: Any = {**entered, "state": state, _PRIMARY_KEY: True}
        await app(again, replaying, send)

    return middleware
