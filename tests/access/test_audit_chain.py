"""The audit log's hash chain: committed rows are sealed in transaction order by a background sealer,
`canbao audit verify` catches a row edited or removed behind the triggers' back, and each day's
head is shown to be copied elsewhere."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.audit import chain
from backend.audit.service import record
from backend.db import Pool, create_pool, init_connection
from tests.conftest import auth_headers
from tests.processes import clean_env, run_cli

Connection = asyncpg.Connection  # type: ignore[type-arg]
T = TypeVar("T")


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Pool]:
    pool = await create_pool(db_dsn, 1, 3)
    try:
        yield pool
    finally:
        await pool.close()


async def write_rows(conn: Connection, count: int) -> list[int]:
    for i in range(count):
        await record(conn, None, "create", "thing", f"t{i}", division_code="330106001000", summary={"n": i})
    return [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]


async def chained(conn: Connection) -> list[int]:
    return [r["audit_id"] for r in await conn.fetch("SELECT audit_id FROM audit_chain ORDER BY seq")]


def verify_cli(db_dsn: str, *seals: str) -> tuple[int, str]:
    args = [arg for seal in seals for arg in ("--seal", seal)]
    result = run_cli("audit", "verify", *args, env=clean_env(DATABASE_URL=db_dsn))
    return result.returncode, (result.stdout + result.stderr).strip()


async def test_committed_rows_are_sealed_and_an_intact_chain_verifies(
    conn: Connection, pool: Pool, db_dsn: str
) -> None:
    ids = await write_rows(conn, 5)
    assert await chain.seal(pool, batch=2) == 5  # three transactions of at most two rows
    assert await chained(conn) == ids
    assert [r["seq"] for r in await conn.fetch("SELECT seq FROM audit_chain ORDER BY seq")] == [1, 2, 3, 4, 5]
    assert await chain.seal(pool) == 0  # nothing new

    verified = await chain.verify(conn)
    assert isinstance(verified, chain.Intact)
    assert (verified.sealed, verified.awaiting) == (5, 0)
    head = await conn.fetchval("SELECT hash FROM audit_chain WHERE seq = 5")
    assert verified.head_hash == head

    code, output = verify_cli(db_dsn)
    assert code == 0, output
    assert output == f"audit chain intact: 5 rows sealed, head hash {head.hex()}; 0 newer rows await the sealer"


async def test_the_chain_follows_transactions_not_ids_and_waits_for_those_still_running(
    conn: Connection, pool: Pool, db_dsn: str
) -> None:
    """Ids are taken at insert, not at commit: a transaction that began first but wrote its row last
    comes first in the chain, and no row after it is sealed while it runs."""
    early = await asyncpg.connect(db_dsn)
    try:
        tx = early.transaction()
        await tx.start()
        await early.fetchval("SELECT pg_current_xact_id()")  # begins its transaction's id now
        [later] = await write_rows(conn, 1)  # another transaction: committed, a higher xact
        await early.execute("INSERT INTO audit_log (actor_kind, action, entity) VALUES ('system', 'late', 'thing')")
        assert await chain.seal(pool) == 0, "nothing after a running transaction is sealed"
        await tx.commit()
    finally:
        await early.close()
    late = await conn.fetchval("SELECT id FROM audit_log WHERE action = 'late'")
    assert late > later
    assert await chain.seal(pool) == 2
    assert await chained(conn) == [late, later]
    assert isinstance(await chain.verify(conn), chain.Intact)


async def test_one_sealer_at_a_time(conn: Connection, pool: Pool, db_dsn: str) -> None:
    await write_rows(conn, 3)
    other = await asyncpg.connect(db_dsn)
    try:
        async with other.transaction():
            assert await chain.seal_batch(other) == 3
            assert await chain.seal(pool) == 0  # the lock is held: this round is skipped
    finally:
        await other.close()
    assert len(await chained(conn)) == 3


async def test_the_sealer_runs_every_few_seconds_until_stopped(conn: Connection, pool: Pool) -> None:
    stop = asyncio.Event()
    sealer = asyncio.create_task(chain.seal_loop(pool, 0.05, stop))
    try:
        ids = await write_rows(conn, 3)
        for _ in range(200):
            if await chained(conn) == ids:
                break
            await asyncio.sleep(0.02)
        assert await chained(conn) == ids
    finally:
        stop.set()
        await asyncio.wait_for(sealer, 5)


def test_the_job_worker_seals_what_is_committed(db_dsn: str) -> None:
    """`canbao worker` (which `canbao serve` starts) runs the sealer beside the jobs."""

    async def on_db(work: Callable[[Connection], Awaitable[T]]) -> T:
        conn = await asyncpg.connect(db_dsn)
        try:
            await init_connection(conn)
            return await work(conn)
        finally:
            await conn.close()

    ids = asyncio.run(on_db(lambda conn: write_rows(conn, 2)))
    env = clean_env(DATABASE_URL=db_dsn, CANBAO_AUDIT_SEAL_INTERVAL_S="0.2")
    worker = subprocess.Popen([sys.executable, "-m", "backend.cli", "worker"], env=env)
    try:
        deadline = time.monotonic() + 30
        while asyncio.run(on_db(chained)) != ids:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker never sealed"
            time.sleep(0.1)
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


async def test_verify_names_a_row_edited_behind_the_trigger(conn: Connection, pool: Pool, db_dsn: str) -> None:
    ids = await write_rows(conn, 4)
    await chain.seal(pool)
    # The owner of the tables can switch the append-only triggers off; the chain still tells.
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    await conn.execute("""UPDATE audit_log SET summary = '{"n": 99}' WHERE id = $1""", ids[2])
    await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")

    code, output = verify_cli(db_dsn)
    assert code == 1
    assert output.startswith(f"error: audit chain broken at seq 3 (audit row {ids[2]}): the row differs from what")
    broken = await chain.verify(conn)
    assert isinstance(broken, chain.Broken) and (broken.seq, broken.audit_id) == (3, ids[2])


async def test_verify_names_a_row_deleted_behind_the_trigger(conn: Connection, pool: Pool, db_dsn: str) -> None:
    ids = await write_rows(conn, 4)
    await chain.seal(pool)
    await conn.execute("SET session_replication_role = replica")  # no triggers at all
    await conn.execute("DELETE FROM audit_log WHERE id = $1", ids[1])
    await conn.execute("RESET session_replication_role")

    code, output = verify_cli(db_dsn)
    assert code == 1
    assert output == f"error: audit chain broken at seq 2 (audit row {ids[1]}): the row is missing from audit_log"


async def test_verify_names_a_link_removed_from_the_chain(conn: Connection, pool: Pool) -> None:
    await write_rows(conn, 4)
    await chain.seal(pool)
    await conn.execute("SET session_replication_role = replica")
    await conn.execute("DELETE FROM audit_chain WHERE seq = 2")
    await conn.execute("RESET session_replication_role")
    broken = await chain.verify(conn)
    assert isinstance(broken, chain.Broken)
    assert (broken.seq, broken.audit_id, broken.problem) == (2, None, "the link is missing (the next one is seq 3)")


async def test_a_back_dated_row_is_named_as_left_out_of_the_chain(conn: Connection, pool: Pool) -> None:
    await write_rows(conn, 3)
    await chain.seal(pool)
    await conn.execute("INSERT INTO audit_log (actor_kind, action, entity, xact) VALUES ('system', 'x', 'y', '1')")
    forged = await conn.fetchval("SELECT id FROM audit_log WHERE action = 'x'")
    broken = await chain.verify(conn)
    assert isinstance(broken, chain.Broken)
    assert (broken.audit_id, broken.problem) == (forged, "the row is older than the chain's head but not in it")


async def test_a_chain_rewritten_from_an_edited_row_on_fails_against_a_copied_seal(
    conn: Connection, pool: Pool, db_dsn: str
) -> None:
    """Whoever can rewrite both tables can reseal them; a head copied elsewhere cannot be rewritten."""
    ids = await write_rows(conn, 4)
    await chain.seal(pool)
    copied = f"4:{(await conn.fetchval('SELECT hash FROM audit_chain WHERE seq = 4')).hex()}"
    assert verify_cli(db_dsn, copied)[0] == 0

    await conn.execute("SET session_replication_role = replica")
    await conn.execute("""UPDATE audit_log SET summary = '{"n": 99}' WHERE id = $1""", ids[2])
    await conn.execute("DELETE FROM audit_chain WHERE seq >= 3")
    await conn.execute("RESET session_replication_role")
    await chain.seal(pool)
    assert isinstance(await chain.verify(conn), chain.Intact)  # consistent in itself

    code, output = verify_cli(db_dsn, copied)
    assert code == 1
    assert output.startswith(f"error: audit chain broken at seq 4 (audit row {ids[3]}): the chain no longer passes")

    await conn.execute("SET session_replication_role = replica")
    await conn.execute("DELETE FROM audit_chain WHERE seq = 4")
    await conn.execute("RESET session_replication_role")
    code, output = verify_cli(db_dsn, copied)
    assert (code, output) == (
        1,
        "error: audit chain broken at seq 4 (no audit row): the chain ends at seq 3, before this copied seal",
    )


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_chain SET hash = hash", "DELETE FROM audit_chain", "TRUNCATE audit_chain"]
)
async def test_the_chain_is_append_only(conn: Connection, pool: Pool, statement: str) -> None:
    await write_rows(conn, 1)
    await chain.seal(pool)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(statement)


async def test_every_audit_column_is_hashed(conn: Connection) -> None:
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_log' ORDER BY ordinal_position"
    )
    assert sorted(r["column_name"] for r in columns) == sorted(chain.COLUMNS)


def test_the_link_hash_is_the_documented_encoding() -> None:
    """SHA-256 of the format name, the previous hash, then each field as a 4-byte big-endian length
    and its UTF-8 text (FF FF FF FF for NULL), seq first."""
    previous = bytes(range(32))
    row = {
        "id": 42,
        "xact": 777,
        "at": datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC),
        "actor_kind": "user",
        "actor_id": uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        "device_id": None,
        "action": "read",
        "entity": "household",
        "entity_id": "",
        "division_code": "330106001000",
        "summary": '{"n": 1, "名": "x"}',
        "request_id": None,
    }
    texts = ["7", "42", "777", "1796518923456789", "user", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", None, "read"]
    texts += ["household", "", "330106001000", '{"n": 1, "名": "x"}', None]
    expected = hashlib.sha256(b"canbao-audit-chain-v1" + previous)
    for text in texts:
        data = b"" if text is None else text.encode()
        expected.update(b"\xff\xff\xff\xff" if text is None else len(data).to_bytes(4, "big") + data)
    assert chain.link_hash(previous, 7, row) == expected.digest()


async def test_jsonb_is_hashed_as_postgresql_prints_it(conn: Connection, pool: Pool) -> None:
    """Key order and spacing as stored, not as a client library would write them."""
    await conn.execute(
        """INSERT INTO audit_log (actor_kind, action, entity, summary)
           VALUES ('system', 'x', 'y', '{"zz":1,"a":{"c":[1.50,"名"],"b":null}}')"""
    )
    await chain.seal(pool)
    link = await conn.fetchrow("SELECT hash FROM audit_chain WHERE seq = 1")
    row = dict(await conn.fetchrow("SELECT *, xact::text::bigint AS xact, summary::text AS summary FROM audit_log"))
    assert row["summary"] == '{"a": {"b": null, "c": [1.50, "名"]}, "zz": 1}'
    assert chain.link_hash(chain.GENESIS, 1, row) == link["hash"]


# The daily seals ---------------------------------------------------------------------------------


async def test_seals_show_each_local_days_last_link_and_head_hash(
    client: AsyncTestClient[Litestar], conn: Connection
) -> None:
    # Shanghai is UTC+8: 15:59 UTC is still 5 December there, 16:00 UTC is 6 December.
    links = [
        (1, "2026-12-05T01:00:00+00:00"),
        (2, "2026-12-05T15:59:59+00:00"),
        (3, "2026-12-05T16:00:00+00:00"),
        (4, "2026-12-08T02:00:00+00:00"),
    ]
    for seq, at in links:
        await conn.execute(
            "INSERT INTO audit_chain (seq, audit_id, xact, hash, sealed_at) VALUES ($1, $1, '1', $2, $3)",
            seq,
            bytes([seq]) * 32,
            datetime.fromisoformat(at),
        )
    admin = await auth_headers(client, "admin")
    response = await client.get("/api/v1/audit/seals", params={"from": "2026-12-01", "to": "2026-12-31"}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {"day": "2026-12-08", "first_seq": 4, "last_seq": 4, "head_hash": "04" * 32},
            {"day": "2026-12-06", "first_seq": 3, "last_seq": 3, "head_hash": "03" * 32},
            {"day": "2026-12-05", "first_seq": 1, "last_seq": 2, "head_hash": "02" * 32},
        ],
        "format": "canbao-audit-chain-v1",
    }
    narrow = await client.get("/api/v1/audit/seals", params={"from": "2026-12-06", "to": "2026-12-07"}, headers=admin)
    assert [d["day"] for d in narrow.json()["items"]] == ["2026-12-06"]
    too_wide = await client.get("/api/v1/audit/seals", params={"from": "2025-01-01", "to": "2026-12-31"}, headers=admin)
    assert too_wide.status_code == 422 and too_wide.json()["errors"][0]["field"] == "from"
    backwards = await client.get(
        "/api/v1/audit/seals", params={"from": "2026-12-07", "to": "2026-12-06"}, headers=admin
    )
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "to"


async def test_seals_by_default_cover_the_last_month_and_only_the_district_admin_reads_them(
    client: AsyncTestClient[Litestar], conn: Connection, db_dsn: str
) -> None:
    admin = await auth_headers(client, "admin")
    pool = await create_pool(db_dsn, 1, 2)
    try:
        sealed = await chain.seal(pool)  # the demo district's rows, and the logins
    finally:
        await pool.close()
    head = await conn.fetchval("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
    response = await client.get("/api/v1/audit/seals", headers=admin)
    assert response.status_code == 200, response.text
    [today] = response.json()["items"]
    assert sealed > 0 and (today["first_seq"], today["last_seq"], today["head_hash"]) == (1, sealed, head.hex())
    for username in ("staff_a", "reviewer_a", "civil"):
        refused = await client.get("/api/v1/audit/seals", headers=await auth_headers(client, username))
        assert refused.status_code == 403
