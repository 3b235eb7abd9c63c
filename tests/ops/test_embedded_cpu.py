"""The embedded server's processes run under Linux's SCHED_BATCH policy (CANBAO_PG_CPU_POLICY=batch,
the default), the backends it forks after its start included, so that a backend woken by a
statement does not preempt the Canbao process that sent it; `normal` puts them back under
SCHED_OTHER; any other value is refused by name. Why: docs/scaling.md."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from backend.config import Settings, SettingsError
from backend.embedded import EmbeddedPostgres, schedule_server
from tests.processes import data_dir


async def _policy_of_a_new_backend(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:  # asked while the connection lives: its backend ends with it
        return os.sched_getscheduler(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def test_the_embedded_server_and_its_new_backends_run_as_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANBAO_PG_CPU_POLICY", raising=False)
    with data_dir() as folder:
        pg = EmbeddedPostgres(folder)
        try:
            dsn = pg.start()
            postmaster = pg.postmaster_pid
            assert postmaster is not None
            assert pg.cpu_policy == "batch"
            assert os.sched_getscheduler(postmaster) == os.SCHED_BATCH
            assert asyncio.run(_policy_of_a_new_backend(dsn)) == os.SCHED_BATCH
            # `normal`: the server and what it forks from then on are under SCHED_OTHER again.
            assert schedule_server(postmaster, "normal") >= 1
            assert os.sched_getscheduler(postmaster) == os.SCHED_OTHER
            assert asyncio.run(_policy_of_a_new_backend(dsn)) == os.SCHED_OTHER
        finally:
            pg.release()


def test_a_policy_other_than_batch_or_normal_is_refused_by_name() -> None:
    assert Settings.from_env({}).pg_cpu_policy == "batch"
    assert Settings.from_env({"CANBAO_PG_CPU_POLICY": "normal"}).pg_cpu_policy == "normal"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CANBAO_PG_CPU_POLICY": "fifo"})
    assert caught.value.variable == "CANBAO_PG_CPU_POLICY"
    with pytest.raises(ValueError, match="CANBAO_PG_CPU_POLICY"):
        EmbeddedPostgres("/nonexistent", cpu_policy="idle")
    with pytest.raises(ValueError, match="CANBAO_PG_CPU_POLICY"):
        schedule_server(os.getpid(), "realtime")
