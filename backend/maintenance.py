"""Housekeeping every worker runs on a timer; an advisory lock lets one of them do each round.

It prunes captured sync changes older than the retention (older cursors then get a reset, as
PROTOCOL.md says), and expires idempotency keys and login-limit windows that can no longer matter.
`record_changes` is kept: a tablet may push edits made from a base of any age, and their
conflicts are judged against it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import msgspec

from backend.config import Settings
from backend.db import Pool, load_queries
from backend.sync import pull

Q = load_queries("backend", "maintenance.sql")
log = logging.getLogger("canbao.maintenance")


class Round(msgspec.Struct, frozen=True, kw_only=True):
    sync_floor: int | None
    idempotency_keys: int
    login_windows: int


async def run_once(pool: Pool, settings: Settings, now: datetime) -> Round | None:
    """One round; None when another worker holds the round."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(Q["try_lock"]):
            return None
        floor = await pull.prune(conn, now - timedelta(days=settings.sync_retention_days))
        keys: int = await conn.fetchval(
            Q["expire_idempotency_keys"], now - timedelta(days=settings.idempotency_retention_days)
        )
        windows_before = now - timedelta(
            seconds=max(settings.login_failure_window_s, settings.resident_failure_window_s)
        )
        logins: int = await conn.fetchval(Q["expire_login_failures"], windows_before)
        logins += await conn.fetchval(Q["expire_resident_limits"], windows_before)
    return Round(sync_floor=floor, idempotency_keys=keys, login_windows=logins)


async def loop(pool: Pool, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.maintenance_interval_s)
        try:
            done = await run_once(pool, settings, datetime.now().astimezone())
        except Exception as exc:  # the timer goes on; the next round tries again
            log.error("maintenance round failed", extra={"error_type": type(exc).__name__})
            continue
        if done is not None:
            log.info("maintenance round", extra={"round": msgspec.to_builtins(done)})
