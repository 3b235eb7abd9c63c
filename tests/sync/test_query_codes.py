"""Query codes made offline: the tablet hashes its code with its own key (never the server's), the
server re-keys and keeps the hash, resident log-in can check the code, and receipts still print the
codes the server derived itself."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path

import asyncpg

from backend.enrollment import enrollments
from backend.sync import query_codes
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import SyncClient, TabletStore
from mobile_sync_protocol.query_codes import derive_query_code, query_code_hash
from tests.conftest import JWT_SECRET
from tests.sync_world import Client, enrol, household_create, push, world

KEY = JWT_SECRET.encode()


async def test_a_code_made_on_the_tablet_is_the_households_and_only_its_rekeyed_hash_is_kept(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    tablet = await world(client)
    token = tablet.headers["Authorization"].removeprefix("Bearer ")
    sync = SyncClient(client, TabletStore(tmp_path / "tablet.db"), tablet.device_id, token)  # type: ignore[arg-type]
    await sync.pull()
    device_key = sync.query_code_key()
    assert device_key == query_codes.device_key(KEY, tablet.device_id) != KEY
    created = household_create(tablet)
    code, code_hash = sync.new_query_code(created.household_id, 2026)
    assert len(code) == 8 and set(code) <= set(m.QUERY_CODE_ALPHABET)
    enrolled = m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        coverage_year=2026,
        person_ids=[created.members[0].person_id],
        query_code_hash=code_hash,
    )
    sync.enqueue(created)
    sync.enqueue(enrolled)
    answer = await sync.push()
    assert answer is not None
    assert [(a.status, a.query_code_stored) for a in answer.answers] == [("applied", None), ("applied", True)]

    row = await conn.fetchrow("SELECT code_hash, device_id FROM household_query_codes")
    assert row["device_id"] == tablet.device_id
    assert bytes(row["code_hash"]) not in (
        code_hash,
        query_code_hash(KEY, created.household_id, 2026, code),
    )
    assert await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, code)
    assert await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, code.lower())
    assert not await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, "ZZZZZZZZ")
    assert not await query_codes.query_code_matches(conn, KEY, created.household_id, 2025, code)
    # The server cannot print a tablet's code: receipts print none (the tablet printed it).
    assert await enrollments.household_query_code(conn, KEY, created.household_id, 2026) is None

    # Another tablet's code for the same household and year is not taken.
    other = m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        coverage_year=2026,
        person_ids=[created.members[1].person_id],
        query_code_hash=m.query_code_hash(device_key, created.household_id, 2026, "ABCDEFGH"),
    )
    again = await push(client, tablet, [other])
    assert [(a.status, a.query_code_stored) for a in again.answers] == [("applied", False)]
    assert await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, code)
    assert not await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, "ABCDEFGH")


async def test_without_a_tablet_hash_the_server_derives_the_code_and_receipts_print_it(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    answer = await push(client, tablet, [created, enrol(tablet, created)])
    assert [(a.status, a.query_code_stored) for a in answer.answers] == [("applied", None), ("applied", None)]
    printed = await enrollments.household_query_code(conn, KEY, created.household_id, 2026)
    assert printed == derive_query_code(KEY, created.household_id, 2026)
    assert await query_codes.query_code_matches(conn, KEY, created.household_id, 2026, printed)
    assert await conn.fetchval("SELECT device_id FROM household_query_codes") is None


def test_the_tablet_and_server_hash_a_code_the_same_way() -> None:
    household_id, key = uuid.uuid4(), b"k" * 32
    assert m.query_code_hash(key, household_id, 2026, "abcd2345") == query_code_hash(
        key, household_id, 2026, "ABCD2345"
    )
    expected = hmac.new(key, f"{household_id}:2026:ABCD2345".encode(), hashlib.sha256).digest()
    assert m.query_code_hash(key, household_id, 2026, "ABCD2345") == expected
    # Keys of two tablets differ, and neither is the server's.
    a, b = uuid.uuid4(), uuid.uuid4()
    assert len({query_codes.device_key(KEY, a), query_codes.device_key(KEY, b), KEY}) == 3
