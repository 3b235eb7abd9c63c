"""`/api/v1/auth`: login, refresh, logout."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.params import JSONBody

from backend.auth import service
from backend.auth.service import TokenPair
from backend.deps import CurrentActor, Tx


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    device_id: UUID | None = None  # a registered tablet logs in with its credential too
    device_secret: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", exclude_from_auth=True, status_code=200, summary="Log in with username and password")
    async def login(self, data: JSONBody[LoginRequest], state: State, request: Request[Any, Any, Any]) -> TokenPair:
        client = request.client.host if request.client else "unknown"
        return await service.login(state.auth, data.username, data.password, client, data.device_id, data.device_secret)

    @post("/refresh", exclude_from_auth=True, status_code=200, summary="Rotate a refresh token")
    async def refresh(self, data: JSONBody[RefreshRequest], state: State) -> TokenPair:
        return await service.refresh(state.auth, data.refresh_token)

    @post("/logout", status_code=204, summary="End this session (its refresh and access tokens)")
    async def logout(self, tx: Tx, actor: CurrentActor) -> None:
        await service.logout(tx, actor)
