"""The reviewer's side of conflicts: list them, settle them. A settlement is audited and travels
back to the tablets (the conflict row and whatever it changed are synced records)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.clock import local_today
from backend.db import Connection
from backend.enrollment import households as household_service
from backend.enrollment import members as member_service
from backend.errors import Conflict, DomainError, InvalidInput, NotFound
from backend.i18n import _
from backend.sync.conflicts.service import Q, household_locked, opened, person_now
from backend.sync.context import Context, now_utc
from backend.sync.push import HANDLERS
from mobile_sync_protocol import messages as m


class ConflictItem(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    township_code: str
    household_id: UUID
    person_id: UUID | None
    kind: str
    outcome: Literal["applied", "held"]
    fields: list[str]
    base_version: int | None
    server_version: int | None
    base_values: dict[str, Any]
    server_values: dict[str, Any]
    tablet_values: dict[str, Any]
    other_household_id: UUID | None
    device_id: UUID | None
    seq: int | None
    raised_by: UUID
    at: datetime
    status: Literal["open", "resolved"]
    resolution: str | None
    resolution_note: str | None
    resolved_by: UUID | None
    resolved_at: datetime | None


class ConflictPage(msgspec.Struct, frozen=True):
    items: list[ConflictItem]
    next_cursor: UUID | None


Choice = Literal["kept", "restored", "applied", "discarded"]


class Resolution(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`kept`: the value that arrived last stands. `restored`: the value it replaced is put back.
    `applied`: a held edit is carried out now, on the current record. `discarded`: it is dropped."""

    resolution: Choice
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


# What each kind of conflict can be settled with. An edit after a removal is never applied: the
# person is not brought back by an old edit (re-register them instead).
CHOICES: dict[str, frozenset[str]] = {
    "field_overwritten": frozenset({"kept", "restored"}),
    "stale_identity": frozenset({"applied", "discarded"}),
    "stale_membership": frozenset({"applied", "discarded"}),
    "member_moved": frozenset({"applied", "discarded"}),
    "update_after_remove": frozenset({"discarded"}),
    "duplicate_household": frozenset({"applied", "discarded"}),
}


class NotResolvable(Conflict):
    """The conflict cannot be settled that way now"""

    code = "not_resolvable"


def _item(row: asyncpg.Record) -> ConflictItem:
    values = opened({k: row[k] for k in ConflictItem.__struct_fields__})
    return msgspec.convert(values, ConflictItem)


async def conflicts(
    conn: Connection,
    actor: Actor,
    township: str | None,
    kind: str | None,
    open_: bool | None,
    after: UUID | None,
    limit: int,
) -> ConflictPage:
    rows = await conn.fetch(Q["conflicts"], *scope_args(actor), township, kind, open_, after, limit + 1)
    items = [_item(r) for r in rows[:limit]]
    await record(
        conn,
        actor,
        "read_queue",
        "sync_conflict",
        None,
        division_code=actor.scope.division_code,
        summary={"results": len(items)},
    )
    return ConflictPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def resolve(
    conn: Connection, actor: Actor, conflict_id: UUID, data: Resolution, *, timezone: str, code_key: bytes
) -> ConflictItem:
    found = await conn.fetchrow(Q["conflict_for_update"], conflict_id)
    if found is None or not actor.in_scope(found["township_code"]):
        raise NotFound()
    row = opened(found)
    if row["status"] != "open":
        raise NotResolvable(_("the conflict is already resolved ({resolution})", resolution=row["resolution"]))
    if data.resolution not in CHOICES[row["kind"]]:
        allowed = ", ".join(sorted(CHOICES[row["kind"]]))
        raise InvalidInput(
            "resolution", _("a {kind} conflict is settled with: {allowed}", kind=row["kind"], allowed=allowed)
        )
    try:
        async with conn.transaction():
            if data.resolution == "restored":
                await _restore(conn, actor, row, local_today(timezone))
            elif data.resolution == "applied":
                ctx = Context(timezone=timezone, code_key=code_key, now=now_utc(), resolving=True)
                await _apply(conn, actor, row, ctx)
    except NotResolvable:
        raise
    except DomainError as exc:
        raise NotResolvable(
            _("it cannot be {resolution} now: {code}", resolution=data.resolution, code=exc.code), reason=exc.code
        ) from exc
    updated = await conn.fetchrow(Q["resolve_conflict"], conflict_id, data.resolution, data.note, actor.id)
    assert updated is not None
    await record(
        conn,
        actor,
        f"resolve_{data.resolution}",
        "sync_conflict",
        conflict_id,
        division_code=row["township_code"],
        summary={"kind": row["kind"], "household_id": str(row["household_id"]), "fields": list(row["fields"])},
    )
    return _item(updated)


async def _restore(conn: Connection, actor: Actor, row: dict[str, Any], today: date) -> None:
    """Puts back the values an arriving edit replaced — unless they changed again since, when a
    person edits the record directly instead."""
    household = await household_locked(conn, row["household_id"])
    if household is None:
        raise NotResolvable(_("the household is gone"))
    fields: list[str] = list(row["fields"])
    if row["person_id"] is None:
        now = {f: household[f] for f in fields}
        _unchanged_since(now, row["tablet_values"])
        restored = msgspec.convert(row["server_values"], household_service.HouseholdUpdate)
        await household_service.update_household(conn, actor, row["household_id"], household["row_version"], restored)
        return
    person = await person_now(conn, row["person_id"], row["household_id"])
    if person is None or person["left_reason"] is not None:
        raise NotResolvable(_("the person is no longer in the household"))
    _unchanged_since({f: person[f] for f in fields}, row["tablet_values"])
    # A value restored to nothing (the member had no phone) is a clear, which an edit cannot say.
    data = msgspec.convert(
        {k: v for k, v in row["server_values"].items() if v is not None}, household_service.MemberUpdate
    )
    await member_service.update_member(
        conn, actor, row["household_id"], row["person_id"], household["row_version"], data, today
    )


def _unchanged_since(now: dict[str, Any], tablet_values: dict[str, Any]) -> None:
    if any(("" if now[f] is None else str(now[f])) != ("" if v is None else str(v)) for f, v in tablet_values.items()):
        raise NotResolvable(_("the field changed again since; edit the record directly"))


async def _apply(conn: Connection, actor: Actor, row: dict[str, Any], ctx: Context) -> None:
    if row["mutation"] is None:
        raise NotResolvable(_("nothing is held to apply"))
    mutation = msgspec.convert(row["mutation"], m.AnyMutation)
    answer = await HANDLERS[str(mutation.__struct_config__.tag)](conn, actor, mutation, ctx)
    if answer.status not in ("applied", "applied_with_conflict"):
        raise NotResolvable(_("the edit still cannot be applied: {code}", code=answer.code), reason=answer.code)
