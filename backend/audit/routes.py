"""`/api/v1/audit`: the trail, for district_admin, within their scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter

from backend.actor import Role, scope_args
from backend.audit.service import Q, record
from backend.db import from_row
from backend.deps import CurrentActor, Tx
from backend.guards import require_roles


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


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    guards = [require_roles(Role.DISTRICT_ADMIN)]

    @get("/", summary="Audit entries, newest first (keyset pagination by `before`)")
    async def search(
        self,
        tx: Tx,
        actor: CurrentActor,
        actor_id: FromQuery[UUID | None] = None,
        device_id: FromQuery[UUID | None] = None,
        entity: Annotated[str | None, QueryParameter(max_length=64)] = None,
        entity_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        action: Annotated[str | None, QueryParameter(max_length=64)] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        before: Annotated[int | None, QueryParameter(ge=1)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        # Entries without a division (logins of unknown users, system actions) are district-wide.
        district_wide = actor.scope.level in ("district", "city", "province")
        rows = await tx.fetch(
            Q["search"],
            *scope_args(actor),
            district_wide,
            actor_id,
            entity,
            entity_id,
            action,
            since,
            until,
            before,
            device_id,
            limit + 1,
        )
        items = [from_row(r, AuditEntry) for r in rows[:limit]]
        await record(tx, actor, "read", "audit_log", None, summary={"count": len(items)})
        return AuditPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)
