"""FHIR reads on a replica, with read-your-writes (issue 21, backend/replicas.py).

The "replica" here is a second database on the suite's server, migrated and empty: a streaming
standby cannot be made cheaply in a test, and a database that holds none of the world's rows tells
which one answered (the replica says `not_enrolled`, the primary `in_force`). The replay position
is PostgreSQL's own (`pg_last_wal_replay_lsn()`, on a server not in recovery its current position),
so a position past the end of the WAL is one no replica has reached.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from backend import config, replicas
from backend.config import Settings
from backend.db import create_pool
from tests.conftest import PgServer, auth_headers, make_settings
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
