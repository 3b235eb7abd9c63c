"""`canbao backup` and `canbao restore`, end to end through the command line on an embedded server
in a temporary folder: a district with households, payments, a sync ledger and an audit trail is
backed up, its data folder destroyed, and restored with its keys put back — every table, the money
and the audit trail as they were."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import asyncpg

from backend.embedded import EmbeddedPostgres
from tests.processes import FAST_HASHING, PINNED_CLOCK, clean_env, data_dir, run_cli, wait_for_no_postgres


def test_a_backup_restores_every_row_the_money_and_the_audit_trail_into_a_destroyed_data_folder() -> None:
    with data_dir() as folder:
        data = folder / "data"
        env = clean_env(**FAST_HASHING, CANBAO_PROGRESS="1")
        # The simulator enrols for 2026 (backend/tools/simulate/tablet.py): on the suite's day, whatever the calendar.
        made = run_cli(
            "--data-dir",
            str(data),
            "simulate",
            "--tablets",
            "2",
            "--households",
            "12",
            "--seed",
            "16",
            env={**env, **PINNED_CLOCK},
        )
        assert made.returncode == 0, made.stdout + made.stderr
        before = database_state(data)
        assert before["counts"]["households"] > 0
        assert before["counts"]["payments"] > 0
        assert before["counts"]["sync_mutations"] > 0
        assert len(before["audit_log"]) > 0

        backup = folder / "canbao.backup"
        saved = run_cli("--data-dir", str(data), "backup", str(backup), env=env)
        assert saved.returncode == 0, saved.stderr
        assert "backing up [" in saved.stderr and "audit_log" in saved.stderr  # the progress line
        assert "jwt-signing.key" in saved.stdout  # named as not in the backup
        assert backup.read_bytes().startswith(b"PGDMP")

        keys = folder / "keys"
        keys.mkdir()
        key_files = [p for p in data.iterdir() if p.name != "pgdata"]
        assert sorted(p.name for p in key_files) == ["jwt-signing.key", "keys.json"]
        for path in key_files:
            shutil.copy2(path, keys / path.name)
        shutil.rmtree(data)
        assert wait_for_no_postgres(data) == []

        # The keys go back first (from wherever they were kept), then the database.
        data.mkdir()
        for path in keys.iterdir():
            shutil.copy2(path, data / path.name)
        restored = run_cli("--data-dir", str(data), "restore", str(backup), env=env)
        assert restored.returncode == 0, restored.stderr
        assert "restoring [" in restored.stderr and "warning" not in restored.stderr
        after = database_state(data)
        assert after == before
        assert (data / "jwt-signing.key").read_bytes() == (keys / "jwt-signing.key").read_bytes()
        assert (data / "keys.json").read_bytes() == (keys / "keys.json").read_bytes()
        # The restored audit trail verifies (its hash chain came back with it).
        verified = run_cli("--data-dir", str(data), "audit", "verify", env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit chain intact" in verified.stdout

        # Restoring over a database that holds data needs --force; refused, it changes nothing.
        again = run_cli("--data-dir", str(data), "restore", str(backup), env=env)
        assert again.returncode == 1
        assert "not empty" in again.stderr and "--force" in again.stderr
        forced = run_cli("--data-dir", str(data), "restore", "--force", str(backup), env=env)
        assert forced.returncode == 0, forced.stderr
        assert database_state(data) == before

        # A file that is not a backup is named as such.
        bogus = folder / "not-a-backup"
        bogus.write_text("hello")
        refused = run_cli("--data-dir", str(data), "restore", "--force", str(bogus), env=env)
        assert refused.returncode == 1
        assert "is not a backup" in refused.stderr


def database_state(data: Path) -> dict[str, Any]:
    """Every table's row count and content digest, the money, the audit trail row by row, and
    whether new transaction ids come after the restored ones (a tablet's pull cursor depends on it)."""
    pg = EmbeddedPostgres(data)
    try:
        pg.start()
        return asyncio.run(_state(pg.prepare().admin_dsn))
    finally:
        pg.release()


async def _state(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
                " ORDER BY relname"
            )
        ]
        counts, digests = {}, {}
        for table in tables:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS digest"
                f' FROM "{table}" AS t'
            )
            assert row is not None
            counts[table], digests[table] = row["n"], row["digest"]
        money = await conn.fetchrow(
            "SELECT sum(amount_fen) AS paid, sum(amount_fen) FILTER (WHERE voided) AS voided,"
            " sum(refunded_fen) AS refunded FROM payment_ledger"
        )
        allocated = await conn.fetchval("SELECT sum(amount_fen) FROM payment_allocations")
        audit = [tuple(r) for r in await conn.fetch("SELECT * FROM audit_log ORDER BY id")]
        ledger = [tuple(r) for r in await conn.fetch("SELECT * FROM sync_mutations ORDER BY device_id, seq")]
        ahead = await conn.fetchval(
            "SELECT pg_current_xact_id() > greatest((SELECT max(xid) FROM sync_changes),"
            " (SELECT floor_xid FROM sync_horizon))"
        )
        return {
            "counts": counts,
            "digests": digests,
            "money": (dict(money or {}), allocated),
            "audit_log": audit,
            "sync_ledger": ledger,
            "new_transactions_come_after_the_restored_ones": ahead,
        }
    finally:
        await conn.close()


def test_with_an_external_database_backup_and_restore_point_to_the_server_s_own_tools(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL="postgresql://canbao_app@db.internal/canbao")
    for command in (["backup", str(tmp_path / "b")], ["restore", str(tmp_path / "b")]):
        result = run_cli(*command, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith("error: canbao backup and restore are for the embedded database")
        assert "pg_basebackup" in result.stderr
    assert list(tmp_path.iterdir()) == []
