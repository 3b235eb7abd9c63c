"""Housekeeping every worker runs on a timer; an advisory lock lets one of them do each round.

Each package offers its own chores (sync prunes captured changes past the retention, auth and
residents expire login-limit windows, idempotency expires old keys); the app wires them in
(`backend.app.housekeeping_chores`), so the base imports no domain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from backend.config import Settings
from backend.db import Connection, Pool, load_queries
from backend.errors import after_failure

Q = load_queries("backend", "maintenance.sql")
log = logging.getLogger("canbao.maintenance")


# One chore: what it did (a count, a new floor), or None when there was nothing to say.
Chore = Callable[[Connection, Settings, datetime], Awaitable[int | None]]


async def run_once(
    pool: Pool, settings: Settings, now: datetime, chores: Mapping[str, Chore]
) -> dict[str, int | None] | None:
    """One round, every chore in one transaction; None when another worker holds the round."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(Q["try_lock"]):
            return None
        return {name: await chore(conn, settings, now) for name, chore in chores.items()}


async def loop(pool: Pool, settings: Settings, chores: Mapping[str, Chore]) -> None:
    while True:
        await asyncio.sleep(settings.maintenance_interval_s)
        try:
            done = await run_once(pool, settings, datetime.now().astimezone(), chores)
        except Exception as exc:  # the timer goes on; the next round tries again
            log.error("maintenance round failed", extra={"error_type": type(exc).__name__})
            after_failure(pool, exc)
            continue
        if done is not None:
            log.info("maintenance round", extra={"round": done})
