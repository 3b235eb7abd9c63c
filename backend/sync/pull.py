"""Pull: the first sync is a paged snapshot of the tablet's scope, later ones what changed since.

Cursors are transaction ids, never clocks. `sync_changes` rows are stamped with their writer's
transaction id; a pull returns the changes of transactions below the current snapshot's xmin —
all of them finished — and that xmin becomes the next cursor. A transaction still running keeps
xmin at or below its own id, so its changes arrive in a later pull whatever order commits happen in.
Rows are sent as their current image; a record now outside the scope (moved, removed, ended)
travels as a tombstone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.audit.service import record
from backend.auth.actor import Actor, scope_args
from backend.db import Connection, load_queries
from backend.errors import InvalidInput
from backend.sync.push import DeviceMismatch, DeviceRequired
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")

ZERO_UUID = UUID(int=0)
_MAX_BIGINT = 2**63 - 1

# Snapshot order: what a record refers to comes first where it can.
KINDS: tuple[str, ...] = (
    "policy_version", "receipt_block", "household", "person", "membership", "enrollment", "payment", "payment_event",
)  # fmt: skip
_ROW_TYPES: dict[str, type[Any]] = {t.__struct_config__.tag: t for t in m.Row.__args__}
_BY_ID = {
    "household": "households_by_id", "person": "persons_by_id", "membership": "memberships_by_id",
    "enrollment": "enrollments_by_id", "payment": "payments_by_id", "payment_event": "payment_events_by_id",
    "receipt_block": "receipt_blocks_by_id", "policy_version": "policies_by_id",
}  # fmt: skip
_IN_SCOPE = {
    "household": "households_in_scope", "person": "persons_in_scope", "membership": "memberships_in_scope",
    "enrollment": "enrollments_in_scope", "payment": "payments_in_scope", "payment_event": "payment_events_in_scope",
}  # fmt: skip


class PageToken(msgspec.Struct, kw_only=True, array_like=True):
    """Where a page sequence stands. Snapshot: (target cursor, kind, last id). Changes: (from, to,
    last change id). Not secret: every page is filtered by the caller's scope again."""

    # Bounded, so a forged token is a 422, never an index error or an out-of-range SQL argument.
    mode: Literal["s", "c"]  # snapshot, changes
    to_xid: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)]
    from_xid: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)] = 0
    kind: Annotated[int, msgspec.Meta(ge=0, le=len(KINDS))] = 0
    after_id: UUID = ZERO_UUID
    after_change: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)] = 0
    reset: bool = False


def _encode_token(token: PageToken) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(token)).decode().rstrip("=")


def _decode_token(raw: str) -> PageToken:
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=PageToken)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("page_token", "is not a token this server gave") from exc


def _cursor(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 20:
        raise InvalidInput("cursor", "is not a cursor this server gave")
    return int(raw)


async def pull(conn: Connection, actor: Actor, request: m.PullRequest, now: datetime) -> m.PullResponse:
    """Runs in a REPEATABLE READ transaction: the xmin read first is the snapshot every page row is read in."""
    if actor.device_id is None:
        raise DeviceRequired()
    if request.device_id != actor.device_id:
        raise DeviceMismatch()
    xmin: int = await conn.fetchval(Q["current_xmin"])
    floor: int = await conn.fetchval(Q["horizon"])
    if request.page_token is not None:
        token = _decode_token(request.page_token)
    elif request.cursor is not None:
        token = PageToken(mode="c", from_xid=_cursor(request.cursor), to_xid=xmin)
    else:
        token = PageToken(mode="s", to_xid=xmin)
    if (token.mode == "c" and token.from_xid < floor) or (token.mode == "s" and token.to_xid < floor):
        # Changes this cursor still needs were pruned: start again from a snapshot.
        token = PageToken(mode="s", to_xid=xmin, reset=True)
    if token.mode == "s":
        changes, next_token = await _snapshot_page(conn, actor, token, request.limit)
    else:
        changes, next_token = await _changes_page(conn, actor, token, request.limit)
    last_seq = await conn.fetchval(Q["touch_pull"], actor.device_id)
    await record(
        conn, actor, "sync_snapshot" if token.mode == "s" else "sync_pull", "device", actor.device_id,
        division_code=actor.scope.division_code, summary={"records": len(changes), "more": next_token is not None},
    )  # fmt: skip
    return m.PullResponse(
        protocol_version=m.PROTOCOL_VERSION,
        changes=changes,
        # Only the page that starts the new snapshot tells the tablet to drop its synced copy.
        reset=token.reset and token.kind == 0 and token.after_id == ZERO_UUID,
        has_more=next_token is not None,
        page_token=None if next_token is None else _encode_token(next_token),
        cursor=str(token.to_xid) if next_token is None else None,
        last_seq=last_seq or 0,
        server_time=now,
    )


async def _snapshot_page(
    conn: Connection, actor: Actor, token: PageToken, limit: int
) -> tuple[list[m.Change], PageToken | None]:
    changes: list[m.Change] = []
    kind, after = token.kind, token.after_id
    while kind < len(KINDS) and len(changes) < limit:
        want = limit - len(changes)
        name = KINDS[kind]
        if name == "policy_version":
            rows = await conn.fetch(Q["policies_all"], after, want + 1)
        elif name == "receipt_block":
            rows = await conn.fetch(Q["receipt_blocks_of_device"], actor.id, actor.device_id, after, want + 1)
        else:
            rows = await conn.fetch(Q[_IN_SCOPE[name]], *scope_args(actor), after, want + 1)
        changes.extend(m.Upsert(row=_row(name, r)) for r in rows[:want])
        if len(rows) > want:
            return changes, msgspec.structs.replace(token, kind=kind, after_id=rows[want - 1]["id"])
        kind, after = kind + 1, ZERO_UUID
    if kind < len(KINDS):
        return changes, msgspec.structs.replace(token, kind=kind, after_id=ZERO_UUID)
    return changes, None


async def _changes_page(
    conn: Connection, actor: Actor, token: PageToken, limit: int
) -> tuple[list[m.Change], PageToken | None]:
    rows = await conn.fetch(
        Q["changes_page"], str(token.from_xid), str(token.to_xid), token.after_change, *scope_args(actor), limit + 1
    )
    page = rows[:limit]
    wanted: dict[tuple[str, UUID], None] = {}
    for r in page:
        wanted[(r["entity"], r["entity_id"])] = None
    changes = await render(conn, actor, list(wanted))
    if len(rows) > limit:
        return changes, msgspec.structs.replace(token, after_change=page[-1]["id"])
    return changes, None


async def render(conn: Connection, actor: Actor, keys: Sequence[tuple[str, UUID]]) -> list[m.Change]:
    """The current image of each record, or a tombstone when it is gone from the caller's scope."""
    by_kind: dict[str, list[UUID]] = {}
    for entity, entity_id in keys:
        by_kind.setdefault(entity, []).append(entity_id)
    found: dict[tuple[str, UUID], m.Change] = {}
    for entity, ids in by_kind.items():
        if entity not in _BY_ID:
            continue
        for r in await conn.fetch(Q[_BY_ID[entity]], ids):
            if _visible(actor, entity, r):
                found[(entity, r["id"])] = m.Upsert(row=_row(entity, r))
    return [found.get(key) or m.Tombstone(entity=key[0], id=key[1]) for key in keys if key[0] in _BY_ID]


def _visible(actor: Actor, entity: str, r: asyncpg.Record) -> bool:
    if entity == "policy_version":
        return True
    if entity == "receipt_block":
        return r["collector_id"] == actor.id and r["device_id"] in (None, actor.device_id)
    if entity == "membership" and r["left_at"] is not None:
        return False
    return actor.in_scope(r["village_code"])


def _row(entity: str, r: asyncpg.Record) -> Any:
    # Columns a row type does not name (scope helpers such as village_code) are left out.
    return msgspec.convert(dict(r.items()), _ROW_TYPES[entity])


async def prune(conn: Connection, before: datetime) -> int | None:
    """Drops captured changes older than `before` and raises the horizon: older cursors get a reset."""
    floor: int | None = await conn.fetchval(Q["prune_changes"], before)
    return floor
