"""What a push hands a mutation handler, and what a handler may raise besides a DomainError.

The handlers (handlers_households.py, handlers_money.py) each translate one kind of mutation into
the REST services' calls, whose business rules apply unchanged. They run in the push's transaction
and savepoint (push.py), and a reviewer applying a held edit runs the same handlers with
`Context.resolving` (conflicts/review.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgspec

from backend import clock
from backend.actor import Actor
from backend.clock import local_date
from backend.db import Connection
from backend.errors import plain_validation_message
from backend.i18n import _
from mobile_sync_protocol import messages as m


class Quarantine(Exception):
    """Raised by a handler: acknowledge the mutation, keep it aside for a reviewer."""

    def __init__(self, reason: str, detail: str | None = None, content_hash: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.content_hash = content_hash


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a handler works with besides the mutation: the request's time and settings."""

    timezone: str
    code_key: bytes
    now: datetime
    device_status: str = "active"
    resolving: bool = False  # a reviewer applies a held edit: no staleness check (backend.sync.conflicts.review)
    dedup: bool = True  # False only in the test that proves the fault suite catches its absence
    # The push's fast path (push.py): on any failure the chunk is undone and the failing mutation is
    # applied again alone under a savepoint, so a handler needs no savepoint of its own and lets
    # every failure through.
    fast: bool = False
    # The households the push locked as it began, and those its handlers have written since, as
    # `conflicts.household_locked` would read them now (handlers_households.py): the push holds their
    # locks, and only its own handlers change them (a handler whose write it does not know forgets
    # the household first). None: read every time (a reviewer's resolution).
    households: dict[UUID, dict[str, Any]] | None = None
    # The changes by others of the households the push locked, after the lowest base version its
    # mutations give each (`conflicts.changes_since_many`), read as it began: nobody else can add
    # any while it holds the locks, and its own are not counted. None: read every time.
    changes: dict[UUID, Any] | None = None
    # What the server held of the payment ids the chunk reports, read as it began (handlers_money.py
    # `reported_before`), taken by the one payment.record of each. None: read at its turn.
    payments: dict[UUID, Any] | None = None

    @property
    def today(self) -> date:
        return local_date(self.now, self.timezone)


Handler = Callable[[Connection, Actor, Any, Context], Awaitable[m.Answer]]


def savepoint(conn: Connection, ctx: Context) -> contextlib.AbstractAsyncContextManager[Any]:
    """A handler's own savepoint around a step whose failure it answers; none on the fast path."""
    return contextlib.nullcontext() if ctx.fast else conn.transaction()


def now_utc() -> datetime:
    return clock.now()


def failure_text(exc: Exception) -> str:
    """A decoding failure in words, naming the field (as the REST API's validation errors do)."""
    if isinstance(exc, msgspec.ValidationError):
        field, words = plain_validation_message(str(exc), m.AnyMutation)
        return f"{field}: {words}" if field else words
    return _("the mutation cannot be read: {error}", error=str(exc)[:200])
