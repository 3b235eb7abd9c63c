"""The names handlers receive by dependency injection: the request's transaction and the caller."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency

from backend.actor import Actor
from backend.db import Connection

Tx: TypeAlias = NamedDependency[Connection]  # provided as `tx`: one transaction per request
# provided as `reads`: for reads that may lag, a caught-up replica's connection, else `tx` (backend.replicas)
Reads: TypeAlias = NamedDependency[Connection]
# provided as `fresh_reads`: as `reads`, the replica having replayed all the primary had committed (a resident's)
FreshReads: TypeAlias = NamedDependency[Connection]
CurrentActor: TypeAlias = NamedDependency[Actor]  # provided as `actor`: who is calling
