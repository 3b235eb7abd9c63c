"""At most a few uploads per person and per township arrive at once.

A route that receives files takes `upload_slot(limit_s)` as middleware: before the body is read, a
row in `upload_slots` is taken (under an advisory lock per person and per township, so two
workers cannot both take the last place) or the request is refused 429 `too_many_uploads` with
`Retry-After`; the row is freed when the request ends, however it ends. A process that dies leaves
its row until it expires after the upload's time limit.
"""

from __future__ import annotations

import io
from typing import IO, Any

from litestar.types import ASGIApp, Receive, Scope, Send

from backend.actor import Actor
from backend.config import Settings
from backend.db import Pool
from backend.errors import DomainError
from backend.i18n import N_, _
from backend.ids import uuid7
from backend.jobs.service import Q, township_range


class TooManyUploads(DomainError):
    """Too many uploads are arriving at once; wait for one to finish"""

    status, code = 429, "too_many_uploads"


def upload_slot(limit_s: float) -> Any:
    """Litestar route middleware: one slot per upload while it is received and handled."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def slotted(scope: Scope, receive: Receive, send: Send) -> None:
            actor = scope.get("user")
            if not isinstance(actor, Actor) or actor.kind != "user":
                await app(scope, receive, send)  # the route's guards refuse it
                return
            state = scope["litestar_app"].state
            slot = await _take(state.pool, state.settings, actor, limit_s)
            try:
                await app(scope, receive, send)
            finally:
                await state.pool.execute(Q["free_slot"], slot)

        return slotted

    return middleware


async def _take(pool: Pool, settings: Settings, actor: Actor, limit_s: float) -> object:
    low, high = township_range(actor.scope.division_code)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["lock_owner"], str(actor.id))
        await conn.execute(Q["lock_owner"], low)
        await conn.execute(Q["drop_expired_slots"])
        counts = await conn.fetchrow(Q["slot_counts"], actor.id, low, high)
        assert counts is not None
        for count, limit, name, words in (
            (
                counts["by_user"],
                settings.max_uploads_per_user,
                "max_uploads_per_user",
                N_("you have {count} uploads arriving (at most {limit})"),
            ),
            (
                counts["by_township"],
                settings.max_uploads_per_township,
                "max_uploads_per_township",
                N_("your township has {count} uploads arriving (at most {limit})"),
            ),
        ):
            if count >= limit:
                raise TooManyUploads(
                    _(words, count=count, limit=limit),
                    retry_after_s=settings.job_retry_after_s,
                    limit=name,
                    maximum=limit,
                )
        slot = uuid7()
        await conn.execute(Q["take_slot"], slot, actor.id, actor.scope.division_code, limit_s)
    return slot


def size_of(file: IO[bytes]) -> int:
    """An uploaded file's size, its position left at the start (call it in a thread: it may seek
    a file on disk)."""
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    return size
