"""FHIR reads on a replica, with read-your-writes (issue 21, backend/replicas.py).

The "replica" here is a second database on the suite's server, migrated and empty: a streaming
standby cannot be made cheaply in a test, and a database that holds none of the world's rows tells
which one answered (the replica says `not_enrolled`, the primary `in_force`). The replay position
is PostgreSQL's own (`pg_last_wal_replay_lsn()`, on a server not in recovery its current position),
so a position past the end of the WAL is one no replica has reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from backend import config, replicas
from backend.config import Settings
from backend.db import create_pool
from backend.fhir import service
from tests.conftest import PgServer, auth_headers, ended_in_its_sleep, make_settings
from tests.factories import ID_NUMBERS
from tests.fhir.test_fhir import (
    ELIGIBILITY,
    FHIR_JSON,
    Client,
    World,
    _json,
    partner_headers,
    register_partner,
    request_for,
    state_of,
    world_fixture,  # noqa: F401 - the `world` fixture
)

FUTURE = "FFFFFFFF/0"  # no server has written that far


@pytest.fixture
def replica_database(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def settings(db_dsn: str, pg_server: PgServer, replica_database: str) -> Settings:
    return make_settings(db_dsn, replica_dsns=pg_server.app_dsn(replica_database))


async def audit_reads(conn: asyncpg.Connection) -> int:  # type: ignore[type-arg]
    count: int = await conn.fetchval("SELECT count(*) FROM audit_log WHERE entity = 'coverage_eligibility'")
    return count


async def test_eligibility_reads_the_replica_unless_it_has_not_replayed_what_the_caller_must_see(
    client: Client, conn: asyncpg.Connection, world: World
) -> None:  # type: ignore[type-arg]
    headers = {**await partner_headers(client, await register_partner(client)), **FHIR_JSON}
    body = _json(request_for(ID_NUMBERS[1], "2026-03-01"))  # in force on the primary

    on_replica = await client.post(ELIGIBILITY, content=body, headers=headers)
    assert on_replica.status_code == 200, on_replica.text
    assert state_of(on_replica.json())[:2] == (False, "not_enrolled")
    assert replicas.COMMIT_HEADER.lower() not in on_replica.headers  # a read: no position asked of the primary

    # A position the replica has not reached: after the bounded wait, the primary answers.
    behind = await client.post(ELIGIBILITY, content=body, headers={**headers, replicas.READ_AFTER_HEADER: FUTURE})
    assert behind.status_code == 200, behind.text
    assert state_of(behind.json())[:2] == (True, "in_force")
    # The audit row of each read is the primary's, wherever the answer was read.
    assert await audit_reads(conn) == 2


async def test_a_write_answers_its_commit_position(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    created = await client.post("/api/v1/partners", json={"name": "县人民医院"}, headers=admin)
    assert created.status_code == 201, created.text
    lsn = created.headers[replicas.COMMIT_HEADER.lower()]
    assert replicas.lsn_value(lsn) > 0
    listed = await client.get("/api/v1/partners", headers=admin)
    assert replicas.COMMIT_HEADER.lower() not in listed.headers


async def test_caught_up_waits_for_the_servers_replay_position_then_gives_up(db_dsn: str) -> None:
    pool = await create_pool(db_dsn, 1, 1)
    try:
        async with pool.acquire() as conn:
            now = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            assert await replicas.caught_up(conn, None)
            assert await replicas.caught_up(conn, now)
            assert not await replicas.caught_up(conn, FUTURE, wait_s=0.1)
    finally:
        await pool.close()


def test_replica_dsns_split_on_commas_between_dsns_only() -> None:
    multi = "postgresql://u@/db?host=/a,/b&target_session_attrs=read-only"
    assert config.parse_dsns(f"postgresql://u@h1/db, {multi}") == ["postgresql://u@h1/db", multi]
    assert config.parse_dsns("") == []
    assert replicas.lsn_value("1/0") > replicas.lsn_value("0/FFFFFFFF")


def test_remembered_writes_expire_and_are_bounded() -> None:
    import uuid

    kept = replicas.Replicas([])
    first = uuid.uuid4()
    kept.remember(first, "0/10")
    assert kept.written_by(first) == "0/10"
    for _ in range(replicas.REMEMBERED):
        kept.remember(uuid.uuid4(), "0/20")
    assert kept.written_by(first) is None


@pytest.mark.parametrize("kept", [True, False], ids=["body-kept", "body-too-large"])
async def test_a_check_whose_replica_connection_dies_is_read_again_on_the_primary_with_its_body(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
    pg_server: PgServer,
    replica_database: str,
    monkeypatch: pytest.MonkeyPatch,
    kept: bool,
) -> None:
    """The replica's connection is ended in the middle of the check's read: the request is run again
    with its body sent again, on the primary (`in_force`, the replica would say `not_enrolled`), and
    one audit row is written, the answered attempt's. A body larger than the app keeps to send again
    is answered 503 `try_again` instead, with nothing written."""
    headers = {**await partner_headers(client, await register_partner(client)), **FHIR_JSON}
    body = _json(request_for(ID_NUMBERS[1], "2026-03-01"))
    if not kept:
        monkeypatch.setattr(replicas, "RETRY_BODY_LIMIT", len(body) - 1)
    read = service._enrollments
    databases: list[str] = []

    async def dying(reads: asyncpg.Connection, *args: Any) -> Any:  # type: ignore[type-arg]
        databases.append(await reads.fetchval("SELECT current_database()"))
        if databases[-1] == replica_database:
            killing = asyncio.create_task(ended_in_its_sleep(pg_server.admin_dsn, reads.get_server_pid()))
            try:
                await reads.execute("SELECT pg_sleep(60)")
            finally:
                await killing
        return await read(reads, *args)

    monkeypatch.setattr(service, "_enrollments", dying)
    answer = await client.post(ELIGIBILITY, content=body, headers=headers)
    if kept:
        assert answer.status_code == 200, answer.text
        assert state_of(answer.json())[:2] == (True, "in_force")
        assert len(databases) == 2 and databases[0] == replica_database != databases[1]
        assert await audit_reads(conn) == 1
    else:
        assert answer.status_code == 503, answer.text
        assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "try_again"
        assert databases == [replica_database]
        assert await audit_reads(conn) == 0
