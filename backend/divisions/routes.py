"""`/api/v1/divisions`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import PathParameter, QueryParameter

from backend import fields
from backend.deps import CurrentActor, Tx
from backend.divisions import service
from backend.divisions.service import DivisionList, DivisionWithChildren, Level


class DivisionController(Controller):
    path = "/api/v1/divisions"
    tags = ["divisions"]

    @get("/", summary="Divisions in your scope: your own and everything below it, by code")
    async def list_divisions(
        self,
        tx: Tx,
        actor: CurrentActor,
        level: Annotated[Level | None, QueryParameter(description="only this level")] = None,
        parent_code: Annotated[
            str | None, QueryParameter(pattern=fields.DIVISION_CODE, description="only the children of this division")
        ] = None,
    ) -> DivisionList:
        return await service.list_in_scope(tx, actor, level=level, parent_code=parent_code)

    @get("/{code:str}", summary="A division with its children (404 outside your scope)")
    async def get_division(
        self, code: Annotated[str, PathParameter(pattern=fields.DIVISION_CODE)], tx: Tx, actor: CurrentActor
    ) -> DivisionWithChildren:
        return await service.get_with_children(tx, actor, code)
