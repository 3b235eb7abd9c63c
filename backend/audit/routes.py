"""`/api/v1/audit`: the trail, for district_admin, within their scope; and the chain's daily seals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from backend.actor import Role
from backend.audit import chain, service
from backend.audit.service import AuditFilter, AuditPage
from backend.clock import local_date
from backend.config import Settings
from backend.deps import CurrentActor, Tx
from backend.errors import InvalidInput
from backend.guards import require_roles
from backend.i18n import _

SEAL_DAYS_MAX = 366


class SealPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[chain.DaySeal]  # days on which rows were sealed, newest first
    format: str = chain.FORMAT  # the hashed encoding (README.md, "Audit")


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
        where = AuditFilter(
            actor_id=actor_id,
            device_id=device_id,
            entity=entity,
            entity_id=entity_id,
            action=action,
            since=since,
            until=until,
        )
        return await service.search(tx, actor, where, before, limit)

    @get(
        "/seals",
        summary="The audit chain's head at the end of each local day (`from`…`to`, default the last 31 days): "
        "copy `last_seq` and `head_hash` elsewhere; `canbao audit verify --seal SEQ:HASH` checks them later",
    )
    async def seals(
        self,
        tx: Tx,
        state: State,
        date_from: Annotated[date | None, QueryParameter(name="from")] = None,
        date_to: Annotated[date | None, QueryParameter(name="to")] = None,
    ) -> SealPage:
        settings: Settings = state.settings
        # Seals are dated by the database's clock (when rows were written), not the business clock.
        last = date_to or local_date(datetime.now(UTC), settings.timezone)
        first = date_from or max(last, date.min + timedelta(days=30)) - timedelta(days=30)
        if last < first:
            raise InvalidInput("to", _("must not be before from"))
        if (last - first).days >= SEAL_DAYS_MAX:
            raise InvalidInput("from", _("at most {days} days at a time", days=SEAL_DAYS_MAX))
        return SealPage(items=await chain.day_seals(tx, first, last, settings.timezone))
