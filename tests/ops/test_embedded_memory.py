"""The embedded server's memory is sized to the machine (an eighth of the RAM for shared buffers up
to 4 GB, work_mem RAM/256 within 4–128 MB, …) and CANBAO_PG_SETTINGS overrides any of it; a new
shared_buffers takes effect at once (the server restarts while this process is its only user)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from backend.config import Settings, SettingsError
from backend.embedded import EmbeddedPostgres, memory_settings
from tests.processes import data_dir

GIB = 1 << 30


def test_memory_is_sized_to_the_machine() -> None:
    assert memory_settings(2 * GIB) == {
        "shared_buffers": "256MB",
        "effective_cache_size": "1536MB",
        "work_mem": "8MB",
        "maintenance_work_mem": "64MB",
    }
    assert memory_settings(24 * GIB) == {
        "shared_buffers": "3072MB",
        "effective_cache_size": "18432MB",
        "work_mem": "96MB",
        "maintenance_work_mem": "768MB",
    }
    # A big machine: the caps. A tiny one: PostgreSQL's own floors.
    assert memory_settings(256 * GIB)["shared_buffers"] == "4096MB"
    assert memory_settings(256 * GIB)["work_mem"] == "128MB"
    assert memory_settings(GIB // 2)["work_mem"] == "4MB"
    assert memory_settings(GIB // 2)["shared_buffers"] == "128MB"


def test_settings_override_the_sizes_and_bad_ones_are_refused() -> None:
    sized = memory_settings(24 * GIB, " work_mem = 256MB , shared_buffers=1GB")
    assert sized["work_mem"] == "256MB"
    assert sized["shared_buffers"] == "1GB"
    assert sized["maintenance_work_mem"] == "768MB"
    for bad in ("fsync=off", "work_mem", "work_mem=lots", "work_mem=1PB"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"CANBAO_PG_SETTINGS": bad})
        assert caught.value.variable == "CANBAO_PG_SETTINGS"
    assert Settings.from_env({"CANBAO_PG_SETTINGS": "work_mem=64MB"}).pg_settings == "work_mem=64MB"


def test_the_embedded_server_runs_with_them() -> None:
    with data_dir() as folder:
        pg = EmbeddedPostgres(folder, pg_settings="shared_buffers=160MB,work_mem=24MB")
        try:
            dsn = pg.start()
            shown = asyncio.run(_show(dsn))
        finally:
            pg.release()
    assert shown["shared_buffers"] == "160MB"
    assert shown["work_mem"] == "24MB"
    assert shown["maintenance_work_mem"] == pg.memory["maintenance_work_mem"]


async def _show(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            name: await conn.fetchval(f"SHOW {name}") for name in ("shared_buffers", "work_mem", "maintenance_work_mem")
        }
    finally:
        await conn.close()
