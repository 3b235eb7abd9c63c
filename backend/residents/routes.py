"""`/api/v1/resident`: a resident's login, their household's coverage, logout."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from backend.api_docs.openapi import RESIDENT_ID_SCHEMA
from backend.clock import local_today
from backend.deps import CurrentActor, Tx
from backend.guards import require_kind
from backend.residents import service
from backend.residents.service import HouseholdCoverage, ResidentToken

RESIDENTS = require_kind("resident")
OptionalYear = Annotated[int | None, QueryParameter(ge=2000, le=2100, description="coverage year (default: this year)")]


class ResidentLogin(msgspec.Struct, forbid_unknown_fields=True):
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40, extra_json_schema=RESIDENT_ID_SCHEMA)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    query_code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]  # printed on the slip and receipts


class ResidentController(Controller):
    path = "/api/v1/resident"
    tags = ["resident"]

    @post(
        "/login",
        exclude_from_auth=True,
        status_code=200,
        summary="Log in as a resident with ID number, name and the household's query code",
    )
    async def login(
        self, data: JSONBody[ResidentLogin], state: State, request: Request[Any, Any, Any]
    ) -> ResidentToken:
        client = request.client.host if request.client else "unknown"
        today = local_today(state.settings.timezone)
        return await service.login(state.auth, data.id_number, data.name, data.query_code, client, today)

    @get(
        "/coverage",
        guards=[RESIDENTS],
        summary="Your household's enrolment, cover, subsidy and payments for a year, member by member",
    )
    async def coverage(self, tx: Tx, actor: CurrentActor, state: State, year: OptionalYear = None) -> HouseholdCoverage:
        today = local_today(state.settings.timezone)
        return await service.coverage(tx, actor, year or today.year, today)

    @post("/logout", status_code=204, guards=[RESIDENTS], summary="End this resident session")
    async def logout(self, tx: Tx, actor: CurrentActor) -> None:
        await service.logout(tx, actor)
