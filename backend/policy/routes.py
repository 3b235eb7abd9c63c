"""`/api/v1/policy-years`."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody, PathParameter

from backend.actor import Role
from backend.clock import local_today
from backend.deps import CurrentActor, Tx
from backend.guards import require_roles
from backend.policy import service as policy
from backend.policy.service import PolicyIn, PolicyVersion, PolicyYear

YearPath = Annotated[int, PathParameter(ge=2000, le=2100)]


class PolicyYears(msgspec.Struct, frozen=True):
    items: list[int]


class PolicyController(Controller):
    path = "/api/v1/policy-years"
    tags = ["policy"]

    @get("/", summary="Coverage years that have a policy")
    async def list_years(self, tx: Tx) -> PolicyYears:
        return PolicyYears(items=await policy.years(tx))

    @get("/{year:int}", summary="A year's policy: the version in force today and every version")
    async def get_year(self, year: YearPath, tx: Tx, state: State) -> PolicyYear:
        return await policy.policy_year(tx, year, local_today(state.settings.timezone))

    @post(
        "/{year:int}/versions",
        summary="Publish a new version (district_admin)",
        guards=[require_roles(Role.DISTRICT_ADMIN)],
    )
    async def create_version(
        self, year: YearPath, data: JSONBody[PolicyIn], tx: Tx, actor: CurrentActor
    ) -> PolicyVersion:
        return await policy.create_version(tx, actor, year, data)

    @patch(
        "/{year:int}/versions/{version:int}",
        summary="Edit a version before any money was collected",
        guards=[require_roles(Role.DISTRICT_ADMIN)],
    )
    async def update_version(
        self,
        year: YearPath,
        version: Annotated[int, PathParameter(ge=1, le=2_147_483_647)],  # a version number is a PostgreSQL integer
        data: JSONBody[PolicyIn],
        tx: Tx,
        actor: CurrentActor,
    ) -> PolicyVersion:
        return await policy.update_version(tx, actor, year, version, data)
