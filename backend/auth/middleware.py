"""Bearer-token authentication for every route that does not opt out, and role guards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from backend.auth.actor import Actor, Role, Scope
from backend.auth.tokens import decode_access
from backend.db import load_queries
from backend.errors import Forbidden, InvalidToken, NotAuthenticated

Q = load_queries("backend.auth")

PUBLIC_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/schema"]
SUSPENDED_DEVICE_PATH = "/api/v1/sync/push"  # the one route a suspended tablet may call


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated()
        state = connection.app.state
        claims = decode_access(state.key, token.strip())
        if claims.act != "user":
            raise InvalidToken()
        row = await state.pool.fetchrow(Q["actor_for_token"], claims.sub, claims.sid, claims.dev)
        if row is None or not row["active"]:
            raise InvalidToken()
        # A suspended tablet may still push its queued work, which lands in quarantine (SPEC §3).
        handing_in = (
            connection.scope["path"] == SUSPENDED_DEVICE_PATH
            and row["device_status"] == "suspended"
            and row["device_owner"] == claims.sub
            and (row["session_live"] or row["session_suspended"])
        )
        if not (row["session_live"] or handing_in):
            raise InvalidToken()
        if (
            claims.dev is not None
            and not handing_in
            and (row["device_status"] != "active" or row["device_owner"] != claims.sub)
        ):
            raise InvalidToken("this device is suspended or revoked")
        actor = Actor(
            kind="user",
            id=claims.sub,
            role=Role(row["role"]),
            scope=Scope(row["division_code"], row["level"]),
            device_id=claims.dev,
            session_id=claims.sid,
        )
        return AuthenticationResult(user=actor, auth=claims)


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def require_roles(*roles: Role) -> Guard:
    allowed = frozenset(roles)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        actor = connection.user
        if not isinstance(actor, Actor) or actor.role not in allowed:
            raise Forbidden()

    return guard


def provide_actor(request: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    actor = request.user
    assert isinstance(actor, Actor)
    return actor
