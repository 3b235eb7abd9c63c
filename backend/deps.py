"""The names handlers receive by dependency injection: the request's transaction and the caller;
and how Litestar resolves them (`resolve_in_turn`)."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar._kwargs.cleanup import DependencyCleanupGroup
from litestar._kwargs.dependencies import resolve_dependency
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency

from backend.actor import Actor
from backend.db import Connection

Tx: TypeAlias = NamedDependency[Connection]  # provided as `tx`: one transaction per request
# provided as `reads`: for reads that may lag, a caught-up replica's connection, else `tx` (backend.replicas)
Reads: TypeAlias = NamedDependency[Connection]
# provided as `fresh_reads`: as `reads`, the replica having replayed all the primary had committed (a resident's)
FreshReads: TypeAlias = NamedDependency[Connection]
CurrentActor: TypeAlias = NamedDependency[Actor]  # provided as `actor`: who is calling


async def _resolve(self: KwargsModel, connection: ASGIConnection[Any, Any, Any, Any], kwargs: dict[str, Any]) -> Any:
    """`KwargsModel.resolve_dependencies`, each dependency in turn in the request's own task."""
    group = DependencyCleanupGroup()
    for batch in self.dependency_batches:
        for dependency in batch:  # (a batch's dependencies do not need each other)
            await resolve_dependency(dependency, connection, kwargs, group)
    return group


async def _clean_up(self: DependencyCleanupGroup) -> None:
    """`DependencyCleanupGroup._cleanup`: the generators finished one after the other, the last
    resolved first (a replica's read ends before the transaction it was opened beside commits); each
    is finished even when one before it failed, and the first failure is raised."""
    failure: BaseException | None = None
    for generator in reversed(self._generators):
        try:
            await self._wrap_next(generator)()
        except Exception as exc:  # raised below, once the others are finished
            failure = failure or exc
    if failure is not None:
        raise failure


def resolve_in_turn() -> None:
    """Litestar (2.25) resolves a route's independent dependencies (`tx` and `actor`, on nearly
    every route) concurrently in an anyio task group, and finishes two or more generator
    dependencies (`tx` and `reads`) in another: two tasks created, scheduled and awaited per group,
    for dependencies that do no I/O of their own or only one round trip each. That was a tenth of
    the server's time for a resident's coverage (py-spy; litestar-org/litestar#4563). Resolved in
    turn instead, in the order of their batches, and finished in the reverse order. Installed by
    `create_app`; tests/ops/test_dependencies.py checks it still holds for the locked Litestar."""
    setattr(KwargsModel, "resolve_dependencies", _resolve)  # noqa: B010 (a method replaced on the class)
    setattr(DependencyCleanupGroup, "_cleanup", _clean_up)  # noqa: B010
