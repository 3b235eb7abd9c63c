"""Route guards and the `actor` dependency: who may call a route, decided from the Actor the
authentication middleware put on the connection. In the base, so every package can guard its routes
without importing auth."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from backend.actor import Actor, Role
from backend.errors import Forbidden

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _preflight(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """OPTIONS, which Litestar answers itself (the allowed methods, nothing else) and the
    authentication middleware lets through without a caller: a controller's guards run for it too,
    with no user to judge."""
    return connection.scope.get("method") == "OPTIONS"


def require_kind(kind: str) -> Guard:
    """Only residents, or only partners: a staff token never reaches their routes."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if _preflight(connection):
            return
        actor = connection.scope.get("user")
        if not isinstance(actor, Actor) or actor.kind != kind:
            raise Forbidden(f"this route is for {kind}s")

    return guard


def require_roles(*roles: Role) -> Guard:
    allowed = frozenset(roles)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if _preflight(connection):
            return
        actor = connection.scope.get("user")
        if not isinstance(actor, Actor) or actor.role not in allowed:
            raise Forbidden()

    return guard


def provide_actor(request: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    actor = request.user
    assert isinstance(actor, Actor)
    return actor
