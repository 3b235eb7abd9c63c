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
import contextlib
import gc
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import bodies, fields
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.config import Settings
from backend.db import Connection, load_queries
from backend.errors import InvalidInput
from backend.i18n import _
from backend.sync import sealed
from backend.sync.conflicts import service as conflicts
from backend.sync.push import DeviceMismatch, DeviceRequired
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")

ZERO_UUID = UUID(int=0)
_MAX_BIGINT = 2**63 - 1

# Snapshot order. The district's policies and the tablet's receipt blocks, then household by
# household: each household with its members (persons, memberships), enrolments, payments, payment
# events and subsidy rows (each person's subsidy grants and exemption evidence), so that what a
# record refers to comes first and the identifiers a household's records repeat stand close together
# — gzip then finds them (the snapshot of a township shrinks by half). Conflicts last. Inside a kind
# or a household's part, keyset order on id.
PHASES: tuple[str, ...] = ("policy_version", "receipt_block", "households", "conflict")
HOUSEHOLD_PARTS: tuple[str, ...] = (
    "household",
    "person",
    "membership",
    "enrollment",
    "payment",
    "payment_event",
    "subsidy",
)
_OF_HOUSEHOLDS = {
    "person": "persons_of_households",
    "membership": "memberships_of_households",
    "enrollment": "enrollments_of_households",
    "payment": "payments_of_households",
    "payment_event": "payment_events_of_households",
    "subsidy": "subsidies_of",
}
# A page token names its phase and part by position: a token of an older layout (a snapshot under way
# while the server was upgraded) starts the snapshot again, at the same cursor.
SNAPSHOT_LAYOUT = 2
_ROW_TYPES: dict[str, type[Any]] = {t.__struct_config__.tag: t for t in m.Row.__args__}
_BY_ID = {
    "household": "households_by_id",
    "person": "persons_by_id",
    "membership": "memberships_by_id",
    "enrollment": "enrollments_by_id",
    "payment": "payments_by_id",
    "payment_event": "payment_events_by_id",
    "receipt_block": "receipt_blocks_by_id",
    "policy_version": "policies_by_id",
    "subsidy": "subsidies_of",
    "conflict": "conflicts_by_id",
}
# Subsidy grants that ended this long ago are left out of the rows: a tablet prices today's visits
# (and, offline, the last weeks'), never a year long past. A grant still on a tablet after its end
# is harmless: the tablet reads every grant with its dates. The same horizon for exemption evidence:
# list rows of versions no longer in force since, and claims for years before its year.
SUBSIDY_LOOKBACK = timedelta(days=90)


def subsidy_horizon(now: datetime) -> date:
    """The first day whose subsidy grants a pull still sends (wide enough for any time zone)."""
    return now.date() - SUBSIDY_LOOKBACK


class PageToken(msgspec.Struct, kw_only=True, array_like=True):
    """Where a page sequence stands. Snapshot: (target cursor, phase, last id; in the households
    phase: the household, the part of it and the last id in that part sent). Changes: (from, to,
    last change id). Not secret: every page is filtered by the caller's scope again."""

    # Bounded, so a forged token is a 422, never an index error or an out-of-range SQL argument.
    mode: Literal["s", "c"]  # snapshot, changes
    to_xid: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)]
    from_xid: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)] = 0
    kind: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0  # the phase (layout 1: a kind)
    after_id: UUID = ZERO_UUID
    after_change: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)] = 0
    reset: bool = False
    # New fields go last, with defaults: tokens given before them still decode.
    part: Annotated[int, msgspec.Meta(ge=0, le=len(HOUSEHOLD_PARTS))] = 0
    after_part_id: UUID = ZERO_UUID
    layout: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    # The user's scope the sequence was started for ("" in tokens from before): another scope
    # (the user moved to another township) starts a new snapshot.
    scope: Annotated[str, msgspec.Meta(pattern=fields.DIVISION_PREFIX)] = ""


def _encode_token(token: PageToken) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(token)).decode().rstrip("=")


def _decode_token(raw: str) -> PageToken:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if bodies.json_too_deep(text):  # msgspec would recurse into a forged one
            raise ValueError("nested")
        return msgspec.json.decode(text, type=PageToken)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("page_token", _("is not a token this server gave")) from exc


def _cursor(raw: str) -> tuple[int, str]:
    """A cursor is `xid.scope` (a bare xid from before scopes were named in it)."""
    xid, _dot, scope = raw.partition(".")
    if not xid.isdigit() or len(xid) > 19 or not (scope == "" or (scope.isdigit() and len(scope) == 12)):
        raise InvalidInput("cursor", _("is not a cursor this server gave"))
    return int(xid), scope


async def pull(conn: Connection, actor: Actor, request: m.PullRequest, now: datetime) -> m.PullResponse:
    """Runs in a REPEATABLE READ transaction: the xmin read first is the snapshot every page row is read in."""
    if actor.device_id is None:
        raise DeviceRequired()
    if request.device_id != actor.device_id:
        raise DeviceMismatch()
    xmin: int = await conn.fetchval(Q["current_xmin"])
    floor: int = await conn.fetchval(Q["horizon"])
    scope = actor.scope.division_code
    if request.page_token is not None:
        token = _decode_token(request.page_token)
    elif request.cursor is not None:
        from_xid, cursor_scope = _cursor(request.cursor)
        token = PageToken(mode="c", from_xid=from_xid, to_xid=xmin, scope=cursor_scope)
    else:
        token = PageToken(mode="s", to_xid=xmin, layout=SNAPSHOT_LAYOUT, scope=scope)
    if token.scope not in ("", scope):
        # The user now works in another township: what the tablet holds is not its scope any more.
        # A new snapshot, whose first page says reset (the tablet drops its synced copy, never its queue).
        token = PageToken(mode="s", to_xid=xmin, reset=True, layout=SNAPSHOT_LAYOUT, scope=scope)
    token = msgspec.structs.replace(token, scope=scope)
    if token.mode == "s" and (token.layout != SNAPSHOT_LAYOUT or token.kind >= len(PHASES)):
        token = PageToken(mode="s", to_xid=token.to_xid, reset=token.reset, layout=SNAPSHOT_LAYOUT, scope=scope)
    if (token.mode == "c" and token.from_xid < floor) or (token.mode == "s" and token.to_xid < floor):
        # Changes this cursor still needs were pruned: start again from a snapshot.
        token = PageToken(mode="s", to_xid=xmin, reset=True, layout=SNAPSHOT_LAYOUT, scope=scope)
    since = subsidy_horizon(now)
    with _collector_paused():
        if token.mode == "s":
            changes, next_token = await _snapshot_page(conn, actor, token, request.limit, since)
        else:
            changes, next_token = await _changes_page(conn, actor, token, request.limit, since)
    last_seq = await _touch(conn, actor.device_id)
    await record(
        conn,
        actor,
        "sync_snapshot" if token.mode == "s" else "sync_pull",
        "device",
        actor.device_id,
        division_code=actor.scope.division_code,
        summary={"records": len(changes), "more": next_token is not None},
    )
    return m.PullResponse(
        protocol_version=m.PROTOCOL_VERSION,
        changes=changes,
        # Only the page that starts the new snapshot tells the tablet to drop its synced copy.
        reset=token.reset and token.kind == 0 and token.after_id == ZERO_UUID,
        has_more=next_token is not None,
        page_token=None if next_token is None else _encode_token(next_token),
        cursor=f"{token.to_xid}.{scope}" if next_token is None else None,
        last_seq=last_seq,
        server_time=now,
    )


async def _touch(conn: Connection, device_id: UUID) -> int:
    """Notes the pull's time on the tablet's row and reads its last seq. A push of the same tablet
    may hold the row (it is then not waited for) or have changed it since this pull's snapshot (a
    REPEATABLE READ update then fails: only a savepoint is lost); the time is noted next pull, and
    the snapshot's last seq, older at worst, is still true."""
    try:
        async with conn.transaction():
            last_seq: int | None = await conn.fetchval(Q["touch_pull"], device_id)
    except asyncpg.SerializationError:
        last_seq = None
    if last_seq is None:
        last_seq = await conn.fetchval(Q["device_last_seq"], device_id)
    return last_seq or 0


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a page is built. A page holds thousands of rows, records
    and structs at once, none of them in a cycle; the collector, set off again and again by so many
    allocations that live on, walked the whole heap each time and took half the time of a first sync
    (bench/sync_first_pull.py). Refcounting frees the page as usual. The page that paused the
    collector turns it on again when it is done, so it is never off for longer than one page (another
    page built meanwhile may then finish with it on: slower, no harm); if something else had turned
    it off, it stays off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _snapshot_page(
    conn: Connection, actor: Actor, token: PageToken, limit: int, since: date
) -> tuple[list[m.Change], PageToken | None]:
    changes: list[m.Change] = []
    while token.kind < len(PHASES) and len(changes) < limit:
        want = limit - len(changes)
        name, after = PHASES[token.kind], token.after_id
        if name == "households":
            position = await _households_page(conn, actor, token, want, since, changes)
            if position is not None:
                return changes, position
        else:
            if name == "policy_version":
                rows = await conn.fetch(Q["policies_all"], after, want + 1)
            elif name == "receipt_block":
                rows = await conn.fetch(Q["receipt_blocks_of_device"], actor.id, actor.device_id, after, want + 1)
            else:
                rows = await conn.fetch(Q["conflicts_in_scope"], *scope_args(actor), after, want + 1)
            changes.extend(m.Upsert(row=_row(name, r)) for r in rows[:want])
            if len(rows) > want:
                return changes, msgspec.structs.replace(token, after_id=rows[want - 1]["id"])
        token = msgspec.structs.replace(token, kind=token.kind + 1, after_id=ZERO_UUID, part=0, after_part_id=ZERO_UUID)
    return changes, token if token.kind < len(PHASES) else None


_GROUP_GUESS = 16  # records a household brings, about: how many households a page asks for at first


async def _households_page(
    conn: Connection, actor: Actor, token: PageToken, want: int, since: date, out: list[m.Change]
) -> PageToken | None:
    """Appends up to `want` records of the households phase to `out`, from where `token` stands: the
    token of the next page when the page fills up first, None when the phase is done."""
    household, part, after_part = token.after_id, token.part, token.after_part_id
    # Read again from the household the last page ended in; its rows sent already are skipped.
    start, last = household, (household, part, after_part)
    taken = 0
    while True:
        count = max(1, min(1000, (want - taken) // _GROUP_GUESS + 1))
        households = await conn.fetch(Q["households_from"], *scope_args(actor), start, count)
        for group_id, rows in await _groups(conn, households, *scope_args(actor), since):
            for index, row_id, row in rows:
                if group_id == household and (index, row_id) <= (part, after_part):
                    continue
                if taken == want:
                    return msgspec.structs.replace(token, after_id=last[0], part=last[1], after_part_id=last[2])
                out.append(m.Upsert(row=row.convert()))
                taken += 1
                last = (group_id, index, row_id)
        if len(households) < count:
            return None
        start = UUID(int=households[-1]["id"].int + 1)  # the next household after this batch


class _Pending:
    """A row read for a page, made into its wire type only if the page takes it."""

    __slots__ = ("columns", "record", "type")

    def __init__(self, type_: type[Any], columns: tuple[str, ...], record: asyncpg.Record) -> None:
        self.type, self.columns, self.record = type_, columns, record

    def convert(self) -> Any:
        # Columns a row type does not name (scope and grouping helpers) are left out by msgspec;
        # sealed numbers are opened under their wire names (the tablet holds its township's numbers).
        return msgspec.convert(sealed.opened(self.columns, self.record), self.type)


async def _groups(
    conn: Connection, households: list[asyncpg.Record], low: str, high: str, since: date
) -> list[tuple[UUID, list[tuple[int, UUID, _Pending]]]]:
    """Each household with its records, in snapshot order: (household id, [(part, id, row)])."""
    if not households:
        return []
    ids = [h["id"] for h in households]
    columns = tuple(households[0].keys())
    groups = {h["id"]: [(0, h["id"], _Pending(m.HouseholdRow, columns, h))] for h in households}
    for index, part in enumerate(HOUSEHOLD_PARTS[1:], start=1):
        if part == "subsidy":
            rows = await conn.fetch(Q[_OF_HOUSEHOLDS[part]], [], ids, since)
        elif part in ("person", "membership"):
            rows = await conn.fetch(Q[_OF_HOUSEHOLDS[part]], ids)
        else:
            rows = await conn.fetch(Q[_OF_HOUSEHOLDS[part]], ids, low, high)
        if rows:
            type_, columns = _ROW_TYPES[part], tuple(rows[0].keys())
            for r in rows:  # ordered by household, then id
                groups[r["household_id"]].append((index, r["id"], _Pending(type_, columns, r)))
    return [(household_id, groups[household_id]) for household_id in ids]


async def _changes_page(
    conn: Connection, actor: Actor, token: PageToken, limit: int, since: date
) -> tuple[list[m.Change], PageToken | None]:
    rows = await conn.fetch(
        Q["changes_page"], str(token.from_xid), str(token.to_xid), token.after_change, *scope_args(actor), limit + 1
    )
    page = rows[:limit]
    wanted: dict[tuple[str, UUID], None] = {}
    for r in page:
        wanted[(r["entity"], r["entity_id"])] = None
    changes = await render(conn, actor, list(wanted), since)
    if len(rows) > limit:
        return changes, msgspec.structs.replace(token, after_change=page[-1]["id"])
    return changes, None


async def render(conn: Connection, actor: Actor, keys: Sequence[tuple[str, UUID]], since: date) -> list[m.Change]:
    """The current image of each record, or a tombstone when it is gone from the caller's scope
    (for a subsidy row: also when the person holds no category and no exemption evidence any more)."""
    by_kind: dict[str, list[UUID]] = {}
    for entity, entity_id in keys:
        by_kind.setdefault(entity, []).append(entity_id)
    found: dict[tuple[str, UUID], m.Change] = {}
    for entity, ids in by_kind.items():
        if entity not in _BY_ID:
            continue
        extra: tuple[object, ...] = ([], since) if entity == "subsidy" else ()
        for r in await conn.fetch(Q[_BY_ID[entity]], ids, *extra):
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
    if entity == "conflict":
        return actor.in_scope(r["township_code"])
    return actor.in_scope(r["village_code"])


def _row(entity: str, r: asyncpg.Record) -> Any:
    # Columns a row type does not name (scope helpers such as village_code) are left out; sealed
    # numbers are opened under their wire names, and a conflict's values with them.
    values = sealed.opened_record(r)
    if entity == "conflict":
        values = conflicts.opened(values)
    return msgspec.convert(values, _ROW_TYPES[entity])


async def prune(conn: Connection, before: datetime) -> int | None:
    """Drops captured changes older than `before` and raises the horizon: older cursors get a reset."""
    floor: int | None = await conn.fetchval(Q["prune_changes"], before)
    return floor


async def housekeeping(conn: Connection, settings: Settings, now: datetime) -> int | None:
    """Housekeeping: prunes changes past the retention; returns the new floor."""
    return await prune(conn, now - timedelta(days=settings.sync_retention_days))
