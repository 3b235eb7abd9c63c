"""One helper records every write and every read of personal data, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from backend.actor import Actor, scope_args
from backend.db import Connection, from_row, load_queries
from backend.errors import NotFound
from backend.logs import request_id_var

Q = load_queries("backend.audit")

Row = tuple[str, UUID | None, UUID | None, str, str, str | None, str | None, dict[str, Any], str | None]


class Deferred:
    """Audit rows of one connection held back and written in one statement by `write()`, which the
    holder calls inside the same transaction before it commits (a sync push of thousands of
    mutations). `mark`/`undo` drop the rows of work rolled back to a savepoint."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rows: list[Row] = []

    def mark(self) -> int:
        return len(self.rows)

    def undo(self, mark: int) -> None:
        del self.rows[mark:]

    async def write(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            await self.conn.execute(Q["insert_rows"], *columns(rows))


def columns(rows: list[Row]) -> list[list[Any]]:
    """Held rows as the nine columns `insert_rows` takes (empty ones for no rows): a service that
    writes its audit rows within a statement of its own takes them so."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(9)]


_deferred: ContextVar[Deferred | None] = ContextVar("audit_deferred", default=None)


@contextmanager
def deferred(conn: Connection) -> Iterator[Deferred]:
    """Within the block, `record` and `record_many` on `conn` add to the returned holder."""
    holder = Deferred(conn)
    token = _deferred.set(holder)
    try:
        yield holder
    finally:
        _deferred.reset(token)


class Gathered:
    """Audit rows a service writes within a statement of its own (`gathered`)."""

    def __init__(self, rows: Deferred, outer: Deferred | None) -> None:
        self._rows = rows
        self._outer = outer

    def columns(self) -> list[list[Any]]:
        """The rows as `insert_rows` takes them; none when a caller holds rows back (`deferred`)."""
        return columns([] if self._outer is not None else self._rows.rows)

    def written(self) -> None:
        """The statement succeeded: rows held back for a caller join its rows now."""
        if self._outer is not None:
            self._outer.rows += self._rows.rows


@contextmanager
def gathered(conn: Connection) -> Iterator[Gathered]:
    """Within the block, `record` and `record_many` on `conn` gather rows for one statement of the
    caller's, which writes `columns()` (as `insert_rows` does) with its own data, then says
    `written()`. If that statement fails, nothing was written, and the rows are dropped."""
    outer = held(conn)
    with deferred(conn) as rows:
        yield Gathered(rows, outer)


def held(conn: Connection) -> Deferred | None:
    """The holder of `conn`'s audit rows in this context, if they are being held back."""
    holder = _deferred.get()
    return holder if holder is not None and holder.conn is conn else None


async def record(
    conn: Connection,
    actor: Actor | None,
    action: str,
    entity: str,
    entity_id: object | None = None,
    *,
    division_code: str | None = None,
    summary: dict[str, Any] | None = None,
    device_id: UUID | None = None,
    flushed: bool = True,
) -> None:
    """Appends one audit row. `summary` holds what changed (before/after) or what was read —
    record ids and field names, not ID numbers or names.

    `flushed=False`, only for a transaction that writes nothing else and a row whose loss in a crash
    is acceptable (a resident's read of their own household: the SPEC's audit of reads is staff's and
    partners'): its commit does not wait for the disk (`insert_unflushed`)."""
    holder = held(conn)
    if holder is not None:
        holder.rows.append(
            (
                actor.kind if actor else "system",
                actor.id if actor else None,
                device_id or (actor.device_id if actor else None),
                action,
                entity,
                None if entity_id is None else str(entity_id),
                division_code,
                summary or {},
                request_id_var.get(),
            )
        )
        return
    await conn.execute(
        Q["insert" if flushed else "insert_unflushed"],
        actor.kind if actor else "system",
        actor.id if actor else None,
        device_id or (actor.device_id if actor else None),
        action,
        entity,
        None if entity_id is None else str(entity_id),
        division_code,
        summary or {},
        request_id_var.get(),
    )


async def record_many(
    conn: Connection,
    actor: Actor | None,
    action: str,
    entity: str,
    entries: list[tuple[object, str | None, dict[str, Any]]],
) -> None:
    """Appends one audit row per (entity id, division code, summary), in one round trip."""
    if not entries:
        return
    holder = held(conn)
    if holder is not None:
        kind, actor_id, device_id = (actor.kind, actor.id, actor.device_id) if actor else ("system", None, None)
        holder.rows += [
            (kind, actor_id, device_id, action, entity, str(entity_id), division, summary, request_id_var.get())
            for entity_id, division, summary in entries
        ]
        return
    await conn.execute(
        Q["insert_many"],
        actor.kind if actor else "system",
        actor.id if actor else None,
        actor.device_id if actor else None,
        action,
        entity,
        [str(entity_id) for entity_id, _, _ in entries],
        [division for _, division, _ in entries],
        [summary for _, _, summary in entries],
        request_id_var.get(),
    )


def persons(person_ids: Iterable[UUID | None]) -> dict[str, list[str]]:
    """The `person_ids` entry of a read's summary: whom it touched (a search by number, an
    eligibility check, a FHIR look-up, a resident's login), as record ids — never their numbers.
    A bulk read gives one row with all of them."""
    return {"person_ids": sorted({str(p) for p in person_ids if p is not None})}


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The before/after of the fields that changed."""
    return {
        key: {"before": before.get(key), "after": value} for key, value in after.items() if before.get(key) != value
    }


# Reading the trail ---------------------------------------------------------------------------------


class AuditEntry(msgspec.Struct, frozen=True):
    id: int
    at: datetime
    actor_kind: str
    actor_id: UUID | None
    device_id: UUID | None
    action: str
    entity: str
    entity_id: str | None
    division_code: str | None
    summary: dict[str, Any]
    request_id: str | None


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditEntry]
    next_cursor: int | None


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: UUID | None = None
    device_id: UUID | None = None
    entity: str | None = None
    entity_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def search(conn: Connection, actor: Actor, where: AuditFilter, before: int | None, limit: int) -> AuditPage:
    """Audit entries within the actor's scope, newest first (keyset pagination by `before`); entries
    without a division (logins of unknown users, system actions) for district-wide actors only.
    Who may call it is the route's guard (district administrators)."""
    district_wide = actor.scope.level in ("district", "city", "province")
    rows = await conn.fetch(
        Q["search"],
        *scope_args(actor),
        district_wide,
        where.actor_id,
        where.entity,
        where.entity_id,
        where.action,
        where.since,
        where.until,
        before,
        where.device_id,
        limit + 1,
    )
    items = [from_row(r, AuditEntry) for r in rows[:limit]]
    await record(conn, actor, "read", "audit_log", None, summary={"count": len(items)})
    return AuditPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def household_trail(
    conn: Connection, actor: Actor, household_id: UUID, before: int | None, limit: int
) -> AuditPage:
    """The audit trail of one household, newest first: the rows about the household itself (reads,
    edits, members, quotes, the resident's reads) and about its enrolments and its payments —
    what the audit rows hold, nothing more. For staff whose scope contains the household, as
    reading the household (`GET /households/{id}`); anyone else finds nothing (404)."""
    village = await conn.fetchval(Q["household_village"], household_id)
    if village is None or actor.kind != "user" or not actor.in_scope(village):
        raise NotFound()
    rows = await conn.fetch(Q["household_trail"], household_id, before, limit + 1)
    items = [from_row(r, AuditEntry) for r in rows[:limit]]
    await record(
        conn,
        actor,
        "read",
        "audit_log",
        None,
        division_code=village,
        summary={"household_id": str(household_id), "count": len(items)},
    )
    return AuditPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)
