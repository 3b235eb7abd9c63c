"""Numbers at rest: both cipher suites, the key file, the database's fingerprints, rotation, and the
migration that seals what was stored in clear (and its downgrade, on a copy)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from backend import crypto, migrate
from backend.app import create_app
from backend.config import Settings, SettingsError
from backend.crypto import ID_NUMBER, PHONE, CryptoError, Keyring
from backend.db import init_connection
from backend.tools import demo, keys
from tests.conftest import KEYS, PgServer, auth_headers, make_settings
from tests.factories import ID_NUMBERS, create_household, member

NUMBER = ID_NUMBERS[1]


@pytest.mark.parametrize("suite", ["aes", "sm"])
def test_a_sealed_number_opens_only_as_what_it_was_sealed_as(suite: crypto.Suite) -> None:
    keyring = Keyring.generate(suite)
    sealed = keyring.seal(ID_NUMBER, NUMBER)
    assert sealed is not None
    assert NUMBER.encode() not in sealed
    assert keyring.open(ID_NUMBER, sealed) == NUMBER
    assert keyring.seal(ID_NUMBER, NUMBER) != sealed  # a fresh nonce every time
    with pytest.raises(CryptoError):  # the kind is authenticated: no moving a value between columns
        keyring.open(PHONE, sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CryptoError):
        keyring.open(ID_NUMBER, tampered)
    other = Keyring.generate(suite)
    with pytest.raises(CryptoError):
        other.open(ID_NUMBER, sealed)


def test_the_blind_index_is_keyed_normalised_and_per_kind() -> None:
    aes, sm = Keyring.generate("aes"), Keyring.generate("sm")
    assert aes.index(ID_NUMBER, NUMBER) == aes.index(ID_NUMBER, f" {NUMBER.lower()} ")
    assert aes.index(ID_NUMBER, NUMBER) != aes.index(PHONE, NUMBER)
    assert aes.index(ID_NUMBER, NUMBER) != Keyring.generate("aes").index(ID_NUMBER, NUMBER)
    # SM3 and SHA-256 under the same key differ: the setting really selects the algorithm.
    same_key = Keyring(suite="sm", index_key=aes.index_key, data_keys={1: bytes(16)}, current=1)
    assert same_key.index(ID_NUMBER, NUMBER) != aes.index(ID_NUMBER, NUMBER)
    assert len(sm.index(ID_NUMBER, NUMBER) or b"") == 32


def test_a_rotated_keyring_still_opens_what_the_old_key_sealed() -> None:
    old = Keyring.generate()
    sealed = old.seal(ID_NUMBER, NUMBER)
    assert sealed is not None
    new = Keyring.from_json(old.with_new_data_key().to_json())
    assert new.current == 2
    assert new.open(ID_NUMBER, sealed) == NUMBER
    assert Keyring.key_id_of(new.seal(ID_NUMBER, NUMBER) or b"") == 2
    assert new.index(ID_NUMBER, NUMBER) == old.index(ID_NUMBER, NUMBER)  # rows stay findable


def test_embedded_mode_makes_a_private_key_file_and_external_mode_requires_one(tmp_path: Path) -> None:
    embedded = Settings(data_dir=str(tmp_path))
    keyring = crypto.load_keyring(embedded)
    path = tmp_path / crypto.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert crypto.load_keyring(embedded).index_key == keyring.index_key  # made once, then read
    with pytest.raises(SettingsError) as missing:
        crypto.load_keyring(Settings(database_url="postgresql://x/y"))
    assert missing.value.variable == "CANBAO_KEY_FILE"
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        crypto.load_keyring(embedded)
    path.chmod(0o600)
    with pytest.raises(SettingsError) as suite:
        crypto.load_keyring(Settings(data_dir=str(tmp_path), crypto_suite="sm"))
    assert suite.value.variable == "CANBAO_CRYPTO_SUITE"


async def test_a_database_sealed_under_other_keys_is_refused(conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    mine = Keyring.generate()
    await crypto.check_database(conn, mine)  # the first start registers the fingerprints
    assert await conn.fetchval("SELECT count(*) FROM crypto_keys") == 2
    stored = await conn.fetchval("SELECT string_agg(fingerprint::text, '') FROM crypto_keys")
    assert mine.index_key.hex() not in stored and mine.data_keys[1].hex() not in stored
    await crypto.check_database(conn, mine)  # the same keys start again
    with pytest.raises(CryptoError, match="index key"):
        await crypto.check_database(conn, Keyring.generate())
    rotated = mine.with_new_data_key()
    await crypto.check_database(conn, rotated)  # a new data key is registered
    with pytest.raises(CryptoError, match=r"data keys \[2\]"):
        await crypto.check_database(conn, mine)  # … and a process without it is refused


async def test_the_service_does_not_start_on_a_database_sealed_under_other_keys(db_dsn: str, tmp_path: Path) -> None:
    async with AsyncTestClient(create_app(make_settings(db_dsn), configure_logs=False)):
        pass  # registers the test keys
    other = tmp_path / "other.json"
    crypto.write_key_file(other, Keyring.generate())
    try:
        app = create_app(make_settings(db_dsn, key_file=str(other)), configure_logs=False)
        with pytest.raises(BaseException) as refused:
            async with AsyncTestClient(app):
                pass
        assert "index key" in _messages(refused.value)
    finally:
        crypto.install(KEYS)


def _messages(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return " ".join(_messages(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def test_the_national_suite_serves_end_to_end(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "sm.json"
    sm = Keyring.generate("sm")
    crypto.write_key_file(path, sm)
    try:
        app = create_app(make_settings(db_dsn, key_file=str(path), crypto_suite="sm"), configure_logs=False)
        async with AsyncTestClient(app) as client:
            conn = await asyncpg.connect(db_dsn)
            await init_connection(conn)
            try:
                await demo.seed(conn, app.state.passwords)
                staff = await auth_headers(client, "staff_a")
                created = await create_household(client, staff, [member(NUMBER, "张三")])
                found = await client.post("/api/v1/households/search", json={"id_number": NUMBER}, headers=staff)
                assert [h["id"] for h in found.json()["items"]] == [created["id"]]
                row = await conn.fetchrow("SELECT id_number_hash, id_number_enc FROM persons")
                assert row["id_number_hash"] == sm.index(ID_NUMBER, NUMBER)
                assert sm.open(ID_NUMBER, row["id_number_enc"]) == NUMBER
                assert await conn.fetchval("SELECT suite FROM crypto_keys WHERE role = 'index'") == "sm"
            finally:
                await conn.close()
    finally:
        crypto.install(KEYS)


async def test_rotation_reseals_every_number_and_keeps_them_readable(
    client: AsyncTestClient[Any],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    staff = await auth_headers(client, "staff_a")
    created = await create_household(
        client, staff, [member(NUMBER, "张三", phone="13800000000"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    changed = await client.patch(
        f"/api/v1/households/{created['id']}/members/{created['members'][1]['person_id']}",
        json={"phone": "13900000000"},
        headers={**staff, "If-Match": str(created["row_version"])},
    )
    assert changed.status_code == 200, changed.text
    rotated = KEYS.with_new_data_key()
    try:
        crypto.install(rotated)
        result = await keys.rotate(conn, rotated)
        assert result.resealed >= 4  # two numbers, two phones (record_changes keeps one more)
        headers = await conn.fetch("SELECT substring(id_number_enc FROM 1 FOR 3) AS h FROM persons")
        assert {r["h"] for r in headers} == {crypto.HEADER.pack(1, 2)}
        assert await keys.reseal(conn, rotated) == 0  # nothing left: resuming is a no-op
        got = await client.get(f"/api/v1/households/{created['id']}", headers=staff)
        assert sorted(m["id_number"] for m in got.json()["members"]) == sorted([NUMBER, ID_NUMBERS[2]])
        assert {m["phone"] for m in got.json()["members"]} == {"13800000000", "13900000000"}
        audit = await conn.fetchrow("SELECT entity, entity_id, summary FROM audit_log WHERE action = 'rotate'")
        assert (audit["entity"], audit["entity_id"]) == ("data_key", "2")
    finally:
        crypto.install(KEYS)


CLEAR_ROWS = f"""
INSERT INTO divisions (code, level, name) VALUES ('330106001001', 'village', '村');
INSERT INTO persons (id, id_number, name, sex, birth_date, phone)
    VALUES ('00000000-0000-7000-8000-000000000001', '{NUMBER}', '张三', 'male', '1980-01-01', '13800000000');
INSERT INTO persons (id, birth_cert_no, name, sex, birth_date)
    VALUES ('00000000-0000-7000-8000-000000000002', 'A123456789', '小宝', 'female', '2026-01-01');
INSERT INTO households (id, village_code, household_no, phone)
    VALUES ('00000000-0000-7000-8000-000000000003', '330106001001', '0001', '13700000000');
INSERT INTO enrollment_history (id_number, coverage_year, status, source_file) VALUES ('{NUMBER}', 2025, 'paid', 'x');
INSERT INTO list_entries (version_id, row_no, id_number, name)
    VALUES ('00000000-0000-7000-8000-000000000004', 1, '{NUMBER}', '张三');
INSERT INTO record_changes (household_id, person_id, field, old_value, new_value)
    VALUES ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000001', 'id_number',
            '{ID_NUMBERS[3]}', '{NUMBER}');
"""
TABLES = ("persons", "households", "enrollment_history", "list_entries", "record_changes")


async def _dump(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        # As JSON objects: a downgrade adds the clear columns back at the end of each row.
        tables = {}
        for table in TABLES:
            rows = await conn.fetch(f"SELECT to_jsonb(t)::text AS row FROM {table} AS t")
            tables[table] = sorted(
                (json.loads(r["row"]) for r in rows), key=lambda row: json.dumps(row, sort_keys=True)
            )
        return json.dumps(tables, sort_keys=True, ensure_ascii=False)
    finally:
        await conn.close()


def test_migration_seals_what_was_stored_in_clear_and_its_downgrade_gives_it_back(pg_server: PgServer) -> None:
    name = pg_server.create_database(template="template0")
    dsn = pg_server.dsn(name)
    try:
        migrate.upgrade(dsn, "0014")
        asyncio.run(_execute(dsn, CLEAR_ROWS))
        before = asyncio.run(_dump(dsn))
        with pytest.raises(SystemExit, match="needs the keys"):
            migrate.upgrade(dsn, "0015")  # rows in clear and no keys: nothing is half-done
        migrate.upgrade(dsn, "0015", keyring=KEYS)
        sealed = asyncio.run(_dump(dsn))
        for clear in (NUMBER, ID_NUMBERS[3], "A123456789", "13800000000", "13700000000"):
            assert clear in before
            assert clear not in sealed
        opened = asyncio.run(_opened(dsn))
        assert opened == {
            "person": NUMBER,
            "birth_cert": "A123456789",
            "phone": "13800000000",
            "household_phone": "13700000000",
            "history": NUMBER,
            "list": NUMBER,
            "change": ID_NUMBERS[3],
        }
        migrate.downgrade(dsn, "0014", keyring=KEYS)
        assert asyncio.run(_dump(dsn)) == before
    finally:
        pg_server.drop_database(name)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _opened(dsn: str) -> dict[str, str | None]:
    import base64

    conn = await asyncpg.connect(dsn)
    try:
        person = await conn.fetchrow(
            "SELECT id_number_enc, phone_enc, id_number_hash FROM persons WHERE id_number_enc IS NOT NULL"
        )
        assert person["id_number_hash"] == KEYS.index(ID_NUMBER, NUMBER)
        return {
            "person": KEYS.open(ID_NUMBER, person["id_number_enc"]),
            "birth_cert": KEYS.open(
                crypto.BIRTH_CERT,
                await conn.fetchval("SELECT birth_cert_enc FROM persons WHERE birth_cert_enc IS NOT NULL"),
            ),
            "phone": KEYS.open(PHONE, person["phone_enc"]),
            "household_phone": KEYS.open(PHONE, await conn.fetchval("SELECT phone_enc FROM households")),
            "history": KEYS.open(ID_NUMBER, await conn.fetchval("SELECT id_number_enc FROM enrollment_history")),
            "list": KEYS.open(ID_NUMBER, await conn.fetchval("SELECT id_number_enc FROM list_entries")),
            "change": KEYS.open(
                ID_NUMBER, base64.b64decode(await conn.fetchval("SELECT old_value FROM record_changes"))
            ),
        }
    finally:
        await conn.close()


def test_key_file_round_trip_keeps_every_key(tmp_path: Path) -> None:
    keyring = Keyring.generate("sm").with_new_data_key()
    path = tmp_path / "k.json"
    crypto.write_key_file(path, keyring)
    with pytest.raises(FileExistsError):  # never overwritten by accident
        crypto.write_key_file(path, Keyring.generate("sm"))
    again = crypto.read_key_file(path)
    assert (again.suite, again.index_key, again.data_keys, again.current) == (
        keyring.suite,
        keyring.index_key,
        keyring.data_keys,
        keyring.current,
    )
    assert os.stat(path).st_mode & 0o777 == 0o600
