"""`/api/v1/sync/conflicts`: what a push could not merge on its own, for reviewers to settle."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from backend import fields
from backend.actor import Role
from backend.deps import CurrentActor, Tx
from backend.guards import require_roles
from backend.sync.conflicts import review

READERS = require_roles(Role.TOWNSHIP_REVIEWER, Role.DISTRICT_ADMIN)
SETTLERS = require_roles(Role.TOWNSHIP_REVIEWER)


class ConflictController(Controller):
    path = "/api/v1/sync/conflicts"
    tags = ["sync"]

    @get("/", guards=[READERS], summary="Sync conflicts in your scope")
    async def list_conflicts(
        self,
        tx: Tx,
        actor: CurrentActor,
        township: Annotated[str | None, QueryParameter(pattern=fields.DIVISION_CODE)] = None,
        kind: Annotated[str | None, QueryParameter(pattern=fields.one_of(*review.CHOICES))] = None,
        open: FromQuery[bool | None] = True,
        after: FromQuery[UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> review.ConflictPage:
        return await review.conflicts(tx, actor, township, kind, open, after, limit)

    @post(
        "/{conflict_id:uuid}/resolve",
        status_code=200,
        guards=[SETTLERS],
        summary="Settle a conflict: keep, restore, apply or discard",
    )
    async def resolve(
        self, conflict_id: FromPath[UUID], data: JSONBody[review.Resolution], tx: Tx, actor: CurrentActor, state: State
    ) -> review.ConflictItem:
        return await review.resolve(
            tx, actor, conflict_id, data, timezone=state.settings.timezone, code_key=state.key.secret
        )
