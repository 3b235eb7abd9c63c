"""`/api/v1/divisions`."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import PathParameter

from backend.deps import CurrentActor, Tx
from backend.divisions import service
from backend.divisions.service import DivisionWithChildren


class DivisionController(Controller):
    path = "/api/v1/divisions"
    tags = ["divisions"]

    @get("/{code:str}", summary="A division with its children (404 outside your scope)")
    async def get_division(
        self, code: Annotated[str, PathParameter(pattern=r"^[0-9]{12}$")], tx: Tx, actor: CurrentActor
    ) -> DivisionWithChildren:
        return await service.get_with_children(tx, actor, code)
