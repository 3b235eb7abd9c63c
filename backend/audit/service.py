"""One helper records every write and every read of personal data, inside the caller's transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from backend.auth.actor import Actor
from backend.db import Connection, load_queries
from backend.logs import request_id_var

Q = load_queries("backend.audit")


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
) -> None:
    """Appends one audit row. `summary` holds what changed (before/after) or what was read —
    record ids and field names, not ID numbers or names."""
    await conn.execute(
        Q["insert"],
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


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The before/after of the fields that changed."""
    return {
        key: {"before": before.get(key), "after": value} for key, value in after.items() if before.get(key) != value
    }
