"""Housekeeping: old sync changes pruned (older cursors then reset), stale idempotency keys and
login windows expired, one worker per round."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from backend import maintenance
from backend.app import housekeeping_chores
from backend.db import create_pool
from tests.conftest import make_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def test_a_round_prunes_and_expires_only_what_is_past_its_retention(
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    settings = make_settings(db_dsn)
    old, recent = NOW - timedelta(days=91), NOW - timedelta(days=89)
    await conn.execute(
        "INSERT INTO sync_changes (entity, entity_id, township_code, op, at) VALUES "
        "('household', $1, '330106001000', 'upsert', $2), ('household', $3, '330106001000', 'upsert', $4)",
        uuid.uuid4(),
        old,
        uuid.uuid4(),
        recent,
    )
    actor = uuid.uuid4()
    await conn.execute(
        "INSERT INTO idempotency_keys (actor_id, key, route, request_hash, created_at) VALUES "
        "($1, 'old-key-1', 'r', '\\x00', $2), ($1, 'new-key-1', 'r', '\\x00', $3)",
        actor,
        NOW - timedelta(days=31),
        NOW - timedelta(days=29),
    )
    await conn.execute(
        "INSERT INTO login_failures (key, window_start, failures) VALUES ('\\x01', $1, 3), ('\\x02', $2, 3)",
        NOW - timedelta(hours=2),
        NOW - timedelta(minutes=5),
    )
    pool = await create_pool(db_dsn, 1, 2)
    try:
        done = await maintenance.run_once(pool, settings, NOW, housekeeping_chores())
    finally:
        await pool.close()
    assert done is not None and (done["idempotency_keys"], done["login_failures"]) == (1, 1)
    assert await conn.fetchval("SELECT count(*) FROM sync_changes") == 1
    assert await conn.fetchval("SELECT floor_xid::text::bigint FROM sync_horizon") == done["sync_floor"]
    assert done["sync_floor"] is not None and done["sync_floor"] > 0
    assert await conn.fetchval("SELECT key FROM idempotency_keys") == "new-key-1"
    assert await conn.fetchval("SELECT count(*) FROM login_failures") == 1


async def test_a_round_is_skipped_while_another_worker_holds_it(db_dsn: str, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    pool = await create_pool(db_dsn, 1, 2)
    try:
        async with conn.transaction():
            assert await conn.fetchval(maintenance.Q["try_lock"]) is True
            assert await maintenance.run_once(pool, make_settings(db_dsn), NOW, housekeeping_chores()) is None
        assert await maintenance.run_once(pool, make_settings(db_dsn), NOW, housekeeping_chores()) is not None
    finally:
        await pool.close()
