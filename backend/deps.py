"""The names handlers receive by dependency injection: the request's transaction and the caller;
and how Litestar resolves them (`resolve_in_turn`)."""

from __future__ import annotations

import contextlib
from typing import Any, TypeAlias

from litestar._kwargs.cleanup import DependencyCleanupGroup
from litestar._kwargs.dependencies import resolve_dependency
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency

from backend.actor import Actor
from backend.db import Connection

Tx: TypeAlias = NamedDependency[Connection]  # provided as `tx`: one transaction per request
# provided as `autocommit`: a connection outside any transaction, for reads whose only write is their
# audit row (each statement commits alone; the answer goes only once the audit row has)
Autocommit: TypeAlias = NamedDependency[Connection]
# provided as `reads`: for reads that may lag, a caught-up replica's connection, else `tx` (backend.replicas)
Reads: TypeAlias = NamedDependency[Connection]
# provided as `autocommit_reads`: as `reads`, else `autocommit`
AutocommitReads: TypeAlias = NamedDependency[Connection]
# provided as `fresh_reads`: as `reads`, the replica having replayed all the primary had committed (a resident's)
FreshReads: TypeAlias = NamedDependency[Connection]
CurrentActor: TypeAlias = NamedDependency[Actor]  # provided as `actor`: who is calling


async def _resolve(self: KwargsModel, connection: ASGIConnection[Any, Any, Any, Any], kwargs: dict[str, Any]) -> Any:
    """`KwargsModel.resolve_dependencies`, each dependency in turn in the request's own task (a batch's
    dependencies do not need each other: taken in the order of their names, the same in every
    worker). When one fails, those already begun are ended with its exception (the transaction
    rolls back and its connection goes back to the pool) before it is raised."""
    group = DependencyCleanupGroup()
    try:
        for batch in self.dependency_batches:
            for dependency in sorted(batch, key=lambda d: d.key):
                await resolve_dependency(dependency, connection, kwargs, group)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # (what ending them raised is not the failure)
            await group.close(exc)
        raise
    return group


async def _clean_up(self: DependencyCleanupGroup) -> None:
    """`DependencyCleanupGroup._cleanup`: the generators finished one after the other, the last
    resolved first (a replica's read ends before the transaction it was opened beside commits); each
    is finished even when one before it failed, and the first failure is raised. A cancellation is
    thrown into those not finished yet (a transaction rolls back) and raised."""
    failure: Exception | None = None
    generators = list(reversed(self._generators))
    for at, generator in enumerate(generators):
        try:
            await self._wrap_next(generator)()
        except Exception as exc:  # raised below, once the others are finished
            failure = failure or exc
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await DependencyCleanupGroup(generators[at + 1 :])._throw(exc)
            raise
    if failure is not None:
        raise failure


def resolve_in_turn() -> None:
    """Litestar (2.25) resolves a route's independent dependencies (`tx` and `actor`, on nearly
    every route) concurrently in an anyio task group, and finishes two or more generator
    dependencies (`tx` and `reads`) in another: tasks created, scheduled and awaited per group, for
    dependencies that do no I/O of their own or one round trip each (litestar-org/litestar#4563).
    Resolved in turn instead, in the order of their batches, and finished in the reverse order on
    success (a handler's exception is thrown into them in Litestar's own order, first resolved
    first): a resident's coverage one request at a time, 3.13 → 2.93 ms (3,000 at a 1/100
    prefecture). Installed by `create_app` (`configure_process`); tests/ops/test_dependencies.py
    checks that it holds for the locked Litestar (an upgrade must keep them green: these are private
    methods)."""
    setattr(KwargsModel, "resolve_dependencies", _resolve)  # noqa: B010 (a method replaced on the class)
    setattr(DependencyCleanupGroup, "_cleanup", _clean_up)  # noqa: B010
