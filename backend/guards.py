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
from backend.i18n import N_, _

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _preflight(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """OPTIONS, which Litestar answers itself (the allowed methods, nothing else) and the
    authentication middleware lets through without a caller: a controller's guards run for it too,
    with no user to judge."""
    return connection.scope.get("method") == "OPTIONS"


_ONLY_FOR = {"resident": N_("this route is for residents"), "partner": N_("this route is for partners")}
_ONLY_FOR_OTHERS = N_("this route is for {kind}s")


def require_kind(kind: str) -> Guard:
    """Only residents, or only partners: a staff token never reaches their routes."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        if _preflight(connection):
            return
        actor = connection.scope.get("user")
        if not isinstance(actor, Actor) or actor.kind != kind:
            raise Forbidden(_(_ONLY_FOR.get(kind, _ONLY_FOR_OTHERS), kind=kind))

    return guard


def require_roles(*roles: Role) -> Guard:
    allowed = frozenset(roles)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
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
