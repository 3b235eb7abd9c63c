"""Identity and phone numbers rest sealed in everything sync keeps — conflicts, held edits, the
quarantine, the ledger's hashes, stored idempotent answers — while tablets still receive the numbers
of their township and reviewers see them in clear (issue 16)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import asyncpg
import msgspec

from backend import crypto, idempotency, migrate
from backend.db import init_connection
from backend.jobs import service as jobs
from backend.sync import sealed
from mobile_sync_protocol import messages as m
from tests.conftest import KEYS, PgServer, auth_headers
from tests.factories import ID_NUMBERS, member
from tests.sync.at_rest import clear_copies
from tests.sync_world import (
    Client,
    Tablet,
    clear,
    household_create,
    pull_all,
    push,
    register_tablet,
    upserts,
    world,
)

Conn = asyncpg.Connection  # type: ignore[type-arg]
PHONES = ["13800000001", "13900000002", "13700000003", "13600000004", "13500000005", "13400000006"]


def family(tablet: Tablet, numbers: tuple[int, ...], household_no: str, phones: tuple[str, ...]) -> m.HouseholdCreate:
    """A household whose members have ID numbers and phones, the household a phone of its own."""
    created = household_create(tablet, numbers=numbers, household_no=household_no)
    members = [msgspec.structs.replace(x, phone=p) for x, p in zip(created.members, phones[1:], strict=False)]
    return msgspec.structs.replace(created, phone=phones[0], members=members)


def edit_member(tablet: Tablet, created: m.HouseholdCreate, who: int, base: int, **fields: Any) -> m.MemberUpdate:
    return m.MemberUpdate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=created.members[who].person_id,
        base_version=base,
        **fields,
    )


async def test_nothing_a_tablet_pushes_rests_in_clear_yet_tablets_and_reviewers_see_the_numbers(
    client: Client, conn: Conn
) -> None:
    a = await world(client)
    b = await register_tablet(client, "staff_a")
    created = family(a, (1, 2), "0101", tuple(PHONES[:3]))
    assert (await push(client, a, [created])).answers[0].status == "applied"

    # Tablets still receive their township's numbers: the wire is unchanged.
    whole, cursor, _ = await pull_all(client, b)
    people = upserts(whole, "person")
    assert {(p.id_number, p.phone) for p in people.values()} == {(ID_NUMBERS[1], PHONES[1]), (ID_NUMBERS[2], PHONES[2])}
    assert upserts(whole, "household")[created.household_id].phone == PHONES[0]

    # A phone overwritten (its replaced value kept), an identity number held from a stale base, the
    # same family registered again (held whole), work from a suspended tablet (quarantined whole).
    assert (await push(client, a, [edit_member(a, created, 0, 1, phone=PHONES[3], name="张三丰")])).answers[
        0
    ].status == "applied"
    late = (
        await push(
            client,
            b,
            [edit_member(b, created, 0, 1, phone=PHONES[4]), edit_member(b, created, 0, 1, id_number=ID_NUMBERS[7])],
        )
    ).answers
    assert [(x.status, x.code) for x in late] == [
        ("applied_with_conflict", "field_conflict"),
        ("quarantined", "stale_identity"),
    ]
    twice = family(b, (1, 3), "0199", (PHONES[5], PHONES[5], PHONES[5]))
    assert (await push(client, b, [twice])).answers[0].code == "duplicate_household"
    suspended = await register_tablet(client, "staff_a")
    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{suspended.device_id}/suspend", headers=admin)).status_code == 200
    handed_in = family(suspended, (9, 10), "0177", (PHONES[5], PHONES[5], PHONES[5]))
    assert (await push(client, suspended, [handed_in])).answers[0].code == "device_suspended"

    numbers = [ID_NUMBERS[i] for i in (1, 2, 3, 7, 9, 10)]
    assert await clear_copies(conn, numbers + PHONES) == []

    # The tablets get the conflicts with their values in clear ...
    changes, _, _ = await pull_all(client, b, cursor)
    by_kind = {row.kind: row for row in upserts(changes, "conflict").values()}
    overwritten = by_kind["field_overwritten"]
    assert (overwritten.base_values, overwritten.server_values, overwritten.tablet_values) == (
        {"phone": PHONES[1]},
        {"phone": PHONES[3]},
        {"phone": PHONES[4]},
    )
    assert by_kind["stale_identity"].tablet_values == {"id_number": ID_NUMBERS[7]}
    assert by_kind["stale_identity"].base_values == {"id_number": ID_NUMBERS[1]}
    # ... and so do reviewers, with the quarantined body as the tablet sent it.
    reviewer = await auth_headers(client, "reviewer_a")
    listed = (await client.get("/api/v1/sync/conflicts", headers=reviewer)).json()["items"]
    assert {x["kind"]: x["tablet_values"] for x in listed}["field_overwritten"] == {"phone": PHONES[4]}
    queue = (await client.get("/api/v1/sync/quarantine", headers=reviewer)).json()["items"]
    assert [x["body"]["members"][0]["id_number"] for x in queue] == [ID_NUMBERS[9]]

    # A held edit opens from its seal and applies when a reviewer says so.
    held = by_kind["stale_identity"].id
    applied = await client.post(
        f"/api/v1/sync/conflicts/{held}/resolve", json={"resolution": "applied", "note": "核实"}, headers=reviewer
    )
    assert applied.status_code == 200, applied.text
    person = await conn.fetchrow(
        "SELECT id_number_hash, id_number_enc FROM persons WHERE id = $1", created.members[0].person_id
    )
    assert person["id_number_hash"] == KEYS.index(crypto.ID_NUMBER, ID_NUMBERS[7])
    restored = await client.post(
        f"/api/v1/sync/conflicts/{overwritten.id}/resolve",
        json={"resolution": "restored", "note": "以原号码为准"},
        headers=reviewer,
    )
    assert restored.status_code == 200, restored.text
    phone = await conn.fetchval("SELECT phone_enc FROM persons WHERE id = $1", created.members[0].person_id)
    assert KEYS.open(crypto.PHONE, phone) == PHONES[3]
    assert await clear_copies(conn, numbers + PHONES) == []


async def test_conflicts_keep_field_names_readable_and_numbers_sealed_in_place(client: Client, conn: Conn) -> None:
    a = await world(client)
    b = await register_tablet(client, "staff_a")
    created = family(a, (1,), "0101", (PHONES[0], PHONES[1]))
    await push(client, a, [created])
    await push(client, a, [edit_member(a, created, 0, 1, phone=PHONES[2], name="张三丰")])
    await push(client, b, [edit_member(b, created, 0, 1, phone=PHONES[3], name="张山")])
    rows = await conn.fetch(
        "SELECT kind, fields, base_values, server_values, tablet_values, mutation_enc FROM sync_conflicts ORDER BY kind"
    )
    assert [r["kind"] for r in rows] == ["field_overwritten", "stale_identity"]
    # A reviewer's SQL still sees which fields clashed and the names (names stay in clear).
    assert set(rows[0]["tablet_values"]) == {"phone"} and set(rows[0]["tablet_values"]["phone"]) == {"sealed"}
    assert rows[1]["tablet_values"] == {"name": "张山"}
    assert rows[0]["mutation_enc"] is None
    held = sealed.open_document(sealed.HELD_MUTATION, rows[1]["mutation_enc"])
    assert (held["type"], held["name"], held["phone"]) == ("member.update", "张山", None)
    assert clear(rows[0])["tablet_values"] == {"phone": PHONES[3]}


async def test_the_ledger_keeps_keyed_hashes_and_a_replay_is_still_a_duplicate(client: Client, conn: Conn) -> None:
    tablet = await world(client)
    created = family(tablet, (1, 2), "0101", tuple(PHONES[:3]))
    first = await push(client, tablet, [created])
    again = await push(client, tablet, [created])
    assert (again.answers[0].status, again.answers[0].first) == ("duplicate", first.answers[0])
    other = msgspec.structs.replace(created, household_no="0102")  # the same seq, another body
    assert (await push(client, tablet, [other])).answers[0].code == "seq_reused"
    stored = await conn.fetchval("SELECT body_hash FROM sync_mutations WHERE seq = 1")
    canonical = msgspec.msgpack.encode(created)
    assert stored != hashlib.sha256(canonical).digest(), "a plain hash of a body is guessable"
    assert stored == sealed.mutation_digest(canonical)


async def test_a_stored_idempotent_answer_is_sealed_and_replayed_in_clear(client: Client, conn: Conn) -> None:
    staff = await auth_headers(client, "staff_a")
    body = {
        "village_code": "330106001001",
        "household_no": "0001",
        "phone": PHONES[0],
        "members": [member(ID_NUMBERS[1], "张三", phone=PHONES[1]), member(ID_NUMBERS[2], "李四", "spouse")],
    }
    headers = {**staff, "Idempotency-Key": "household-0001-key"}
    first = await client.post("/api/v1/households", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert ID_NUMBERS[1] in first.text
    replayed = await client.post("/api/v1/households", json=body, headers=headers)
    assert (replayed.status_code, replayed.headers.get("idempotent-replayed")) == (201, "true")
    assert replayed.content == first.content
    row = await conn.fetchrow("SELECT actor_id, key, request_hash, response FROM idempotency_keys")
    assert KEYS.open_bytes(idempotency.answer_kind(row["actor_id"], row["key"]), row["response"]) == first.content
    assert await clear_copies(conn, [ID_NUMBERS[1], ID_NUMBERS[2], PHONES[0], PHONES[1]]) == []
    # Another key's answer cannot be passed off as this one's.
    other = idempotency.answer_kind(row["actor_id"], "another-key-1")
    try:
        KEYS.open_bytes(other, row["response"])
    except crypto.CryptoError:
        pass
    else:
        raise AssertionError("an answer opened under another key")


# Migration 0017: rows kept before it are sealed, and opened again by its downgrade -----------------


ANSWER = f'{{"id_number": "{ID_NUMBERS[3]}"}}'.encode()
LIST_PIECE = f"{ID_NUMBERS[4]},居民".encode()
PLAIN_HASH = hashlib.sha256(b"a body pushed before 0017").digest()


async def _old_rows(dsn: str, first: uuid.UUID, second: uuid.UUID) -> None:
    """Rows as the code before 0017 wrote them, numbers in clear (no foreign keys: they stand alone)."""
    mutation = {"type": "member.update", "seq": 1, "id_number": ID_NUMBERS[7], "phone": None}
    json = msgspec.json.encode
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                """INSERT INTO sync_conflicts (id, township_code, household_id, kind, outcome, fields, base_values,
                                               server_values, tablet_values, mutation, raised_by)
                   VALUES ($1, '330106001000', $2, 'stale_identity', 'held', '{id_number}', $3, $4, $5, $6, $2)""",
                first,
                second,
                json({"id_number": ID_NUMBERS[1]}).decode(),
                json({"id_number": ID_NUMBERS[2], "name": "张三"}).decode(),
                json({"id_number": ID_NUMBERS[7], "phone": None}).decode(),
                json(mutation).decode(),
            )
            await conn.execute(
                """INSERT INTO sync_quarantine (id, device_id, seq, user_id, township_code, kind, reason, body)
                   VALUES ($1, $2, 1, $2, '330106001000', 'household.create', 'device_suspended', $3)""",
                first,
                second,
                ANSWER.decode(),
            )
            await conn.execute(
                """INSERT INTO sync_mutations (device_id, seq, kind, user_id, body_hash, status, answer)
                   VALUES ($1, 1, 'member.update', $1, $2, 'applied', '{"seq": 1, "status": "applied"}')""",
                second,
                PLAIN_HASH,
            )
            await conn.execute(
                """INSERT INTO idempotency_keys (actor_id, key, route, request_hash, status, response)
                   VALUES ($1, 'old-key-0001', 'POST /api/v1/households', $2, 201, $3)""",
                second,
                PLAIN_HASH,
                ANSWER,
            )
            await conn.execute(
                "INSERT INTO jobs (id, kind, division_code) VALUES ($1, 'list_import', '330106000000')", first
            )
            await conn.execute(
                "INSERT INTO job_files (job_id, seq, data) VALUES ($1, 0, $2), ($1, 1, $3)", first, ANSWER, LIST_PIECE
            )
            await conn.execute("INSERT INTO job_outputs (job_id, seq, data) VALUES ($1, 0, $2)", first, LIST_PIECE)
    finally:
        await conn.close()


async def _read(dsn: str, query: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r.items()) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def _check_sealed(dsn: str, numbers: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        assert await clear_copies(conn, numbers) == []
        conflict = clear(await conn.fetchrow("SELECT * FROM sync_conflicts"))
        assert (conflict["base_values"], conflict["server_values"], conflict["tablet_values"]) == (
            {"id_number": ID_NUMBERS[1]},
            {"id_number": ID_NUMBERS[2], "name": "张三"},
            {"id_number": ID_NUMBERS[7], "phone": None},
        )
        assert conflict["mutation"]["id_number"] == ID_NUMBERS[7]
        assert clear(await conn.fetchrow("SELECT body_enc FROM sync_quarantine"))["body"] == {
            "id_number": ID_NUMBERS[3]
        }
        assert await conn.fetchval("SELECT body_hash FROM sync_mutations") == sealed.keyed_digest(PLAIN_HASH)
        key = await conn.fetchrow("SELECT actor_id, key, request_hash, response FROM idempotency_keys")
        assert key["request_hash"] == idempotency.keyed_request_hash(PLAIN_HASH)
        assert KEYS.open_bytes(idempotency.answer_kind(key["actor_id"], key["key"]), key["response"]) == ANSWER
        pieces = await conn.fetch("SELECT job_id, seq, data FROM job_files ORDER BY seq")
        opened = [KEYS.open_bytes(jobs.file_kind(r["job_id"], r["seq"]), r["data"]) for r in pieces]
        assert opened == [ANSWER, LIST_PIECE]
        output = await conn.fetchrow("SELECT job_id, seq, data FROM job_outputs")
        assert KEYS.open_bytes(jobs.output_kind(output["job_id"], 0), output["data"]) == LIST_PIECE
    finally:
        await conn.close()


def test_migration_0017_seals_the_rows_kept_before_it_and_its_downgrade_opens_them(pg_server: PgServer) -> None:
    name = pg_server.create_database(template="template0")
    dsn = pg_server.dsn(name)
    try:
        migrate.upgrade(dsn, "0016", keyring=KEYS)
        asyncio.run(_old_rows(dsn, uuid.uuid4(), uuid.uuid4()))
        migrate.upgrade(dsn, "head", keyring=KEYS)
        asyncio.run(_check_sealed(dsn, [ID_NUMBERS[i] for i in (1, 2, 3, 4, 7)]))

        migrate.downgrade(dsn, "0016", keyring=KEYS)
        [conflict] = asyncio.run(_read(dsn, "SELECT base_values, tablet_values, mutation FROM sync_conflicts"))
        assert json.loads(conflict["base_values"]) == {"id_number": ID_NUMBERS[1]}
        assert json.loads(conflict["mutation"])["id_number"] == ID_NUMBERS[7]
        [quarantined] = asyncio.run(_read(dsn, "SELECT body FROM sync_quarantine"))
        assert json.loads(quarantined["body"]) == {"id_number": ID_NUMBERS[3]}
        [piece] = asyncio.run(_read(dsn, "SELECT data FROM job_outputs"))
        assert piece["data"] == LIST_PIECE
        # The digests stay keyed: a downgrade cannot unkey them (see 0017's docstring).
        [ledger] = asyncio.run(_read(dsn, "SELECT body_hash FROM sync_mutations"))
        assert ledger["body_hash"] == sealed.keyed_digest(PLAIN_HASH)
    finally:
        pg_server.drop_database(name)
