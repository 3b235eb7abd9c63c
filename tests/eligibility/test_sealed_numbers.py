"""Identity numbers at rest in eligibility: lists, the staging table and claims keep only the blind
index and the sealed value; registered persons and list rows meet on the same index; page cursors
carry no number."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import crypto
from backend.eligibility import check, cursor, lists
from tests.conftest import KEYS
from tests.eligibility.people import register
from tests.eligibility.test_check import check as check_numbers
from tests.eligibility.test_check import csv, heads
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, publish_policy


def clear_copies(numbers: list[str], values: list[Any]) -> list[str]:
    """Every number found in `values` (a row's columns, and its text form), as text or as bytes."""
    found = []
    for number in numbers:
        for value in values:
            if isinstance(value, str) and number in value.upper():
                found.append(f"{number} as text")
            elif isinstance(value, bytes) and number.encode() in value:
                found.append(f"{number} as bytes")
    return found


async def scanned(conn: asyncpg.Connection, table: str) -> list[list[Any]]:  # type: ignore[type-arg]
    """Each row of `table` as its columns' values plus the row's text form."""
    rows = await conn.fetch(f"SELECT t::text AS row_text, t.* FROM {table} t")
    return [list(r.values()) for r in rows]


@pytest.mark.parametrize(("suite", "index_key_bytes"), [("aes", 32), ("aes", 100), ("sm", 32)])
def test_the_importers_batch_hashing_and_sealing_give_what_one_value_at_a_time_gives(
    suite: crypto.Suite, index_key_bytes: int
) -> None:
    generated = crypto.Keyring.generate(suite)
    keyring = crypto.Keyring(
        suite=suite, index_key=bytes(range(index_key_bytes)), data_keys=generated.data_keys, current=1
    )
    values = [ID_NUMBERS[1], " 11010519491231002x ", ID_NUMBERS[1]]
    assert keyring.index_many(crypto.ID_NUMBER, values) == [keyring.index(crypto.ID_NUMBER, v) for v in values]
    assert keyring.index_many(crypto.PHONE, values[:1]) != keyring.index_many(crypto.ID_NUMBER, values[:1])
    sealed = keyring.seal_many(crypto.ID_NUMBER, values)
    assert [keyring.open(crypto.ID_NUMBER, s) for s in sealed] == values
    nonces = {s[3:15] for s in sealed}
    assert len(nonces) == 3  # the same number twice, two nonces
    with pytest.raises(crypto.CryptoError):
        keyring.open(crypto.PHONE, sealed[0])


async def test_an_imported_list_keeps_no_number_in_clear_and_its_row_report_repeats_none(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    (civil,) = await heads(client, "civil")
    numbers = ID_NUMBERS[1:6]
    clean = await upload(client, civil, csv(*(f"{n},张{i},," for i, n in enumerate(numbers))))
    assert clean.status_code == 201, clean.text
    # A bad row sends the file through the staging table; the good rows load (partial).
    bad = csv(
        *(f"{n},李{i},2025-13-01," if i == 0 else f"{n},李{i},," for i, n in enumerate(numbers)), f"{numbers[1]},李,,"
    )
    staged = await upload(client, civil, bad, list_type="te_kun", partial=True)
    assert staged.status_code == 201, staged.text
    assert [(e["row"], e["problem"]) for e in staged.json()["errors"]] == [
        (2, "is not a real date"),
        (7, "the same person as row 3"),
    ]

    for table in ("list_entries", "list_versions", "audit_log"):
        rows = await scanned(conn, table)
        assert rows
        assert [clear_copies(numbers, row) for row in rows if clear_copies(numbers, row)] == [], table
    sealed = await conn.fetch("SELECT id_number_hash, id_number_enc FROM list_entries")
    assert len(sealed) == 9
    opened = {KEYS.open(crypto.ID_NUMBER, r["id_number_enc"]) for r in sealed}
    assert opened == set(numbers)
    assert all(
        r["id_number_hash"] == KEYS.index(crypto.ID_NUMBER, KEYS.open(crypto.ID_NUMBER, r["id_number_enc"]))
        for r in sealed
    )


async def test_the_staging_table_holds_the_blind_index_and_the_sealed_value_only(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    seeded: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    numbers = ID_NUMBERS[1:4]
    content = csv(f"{numbers[0]},张三,2025-13-01,", f"{numbers[1]},李四,,", f"{numbers[2].lower()},王五,,")
    # Kept at the end of the import (it is dropped there), to be read in the same transaction.
    monkeypatch.setitem(lists.STAGING_Q, "drop_staging", "SELECT 1")
    async with conn.transaction():
        version = await lists.import_list(
            conn,
            None,
            io.BytesIO(content),
            list_type="di_bao",
            effective_from=date(2025, 9, 1),
            file_name="list.csv",
            today=date(2025, 9, 1),
            partial=True,
        )
        assert (version.status, version.rows_loaded, version.rows_rejected) == ("loaded", 2, 1)
        columns = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = 'pg_temp.list_staging'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert [(c["attname"], c["type"]) for c in columns[:3]] == [
            ("row_no", "integer"),
            ("id_number_hash", "bytea"),
            ("id_number_enc", "bytea"),
        ]
        rows = await scanned(conn, "list_staging")
        assert len(rows) == 2  # the reader kept the bad row out
        assert [clear_copies(numbers, row) for row in rows if clear_copies(numbers, row)] == []
        staged = await conn.fetch("SELECT id_number_hash, id_number_enc FROM list_staging ORDER BY row_no")
        assert [KEYS.open(crypto.ID_NUMBER, r["id_number_enc"]) for r in staged] == numbers[1:]
        assert [r["id_number_hash"] for r in staged] == [KEYS.index(crypto.ID_NUMBER, n) for n in numbers[1:]]


async def test_a_registered_person_on_a_list_is_found_by_the_blind_index_everywhere(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil, staff_a = await heads(client, "admin", "civil", "staff_a")
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    household_id, persons = await register(conn, [(ID_NUMBERS[0], "张三"), (ID_NUMBERS[1], "李四")])
    # Written with a lower-case check character: normalised before it is hashed, as persons' are.
    listed = await upload(
        client, civil, csv(f"{ID_NUMBERS[0].lower()},张三,,"), list_type="di_bao", effective_from="2025-01-01"
    )
    assert listed.status_code == 201, listed.text

    answer = (await check_numbers(client, staff_a, [ID_NUMBERS[0], ID_NUMBERS[1]]))["items"]
    assert [(i["id_number"], [c["category"] for c in i["categories"]]) for i in answer] == [
        (ID_NUMBERS[0], ["di_bao"]),
        (ID_NUMBERS[1], []),
    ]
    head = persons[ID_NUMBERS[0]]
    dues = await check.subsidies(conn, [head, persons[ID_NUMBERS[1]]], 2026, date(2025, 10, 1))
    assert (dues[head].subsidy_fen, dues[persons[ID_NUMBERS[1]]].subsidy_fen) == (20000, 0)
    # The clear-number entry point that enrolment uses answers by the numbers it was given.
    facts = await check.facts(conn, [ID_NUMBERS[0], ID_NUMBERS[1]], 2026, date(2025, 10, 1))
    assert list(facts) == [ID_NUMBERS[0]]

    report = await client.get(
        "/api/v1/reports/subsidised-not-enrolled", params={"year": 2026, "as_of": "2025-10-01"}, headers=staff_a
    )
    assert [(i["id_number_masked"], i["person_id"], i["household_id"]) for i in report.json()["items"]] == [
        ("110105********002X", str(head), str(household_id))
    ]
    claim = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": str(head), "coverage_year": 2026, "category": "di_bao"},
        headers=staff_a,
    )
    assert (claim.status_code, claim.json()["code"]) == (409, "already_listed")


async def test_a_claim_keeps_the_persons_number_sealed_and_shows_none(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, staff_a = await heads(client, "admin", "staff_a")
    await publish_policy(client, admin)
    _, persons = await register(conn, [(ID_NUMBERS[2], "王五")])
    raised = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": str(persons[ID_NUMBERS[2]]), "coverage_year": 2026, "category": "di_bao"},
        headers=staff_a,
    )
    assert raised.status_code == 201, raised.text
    assert ID_NUMBERS[2] not in raised.text
    rows = await scanned(conn, "eligibility_claims")
    assert len(rows) == 1
    assert clear_copies([ID_NUMBERS[2]], rows[0]) == []
    row = await conn.fetchrow("SELECT id_number_hash, id_number_enc FROM eligibility_claims")
    assert row is not None
    assert row["id_number_hash"] == KEYS.index(crypto.ID_NUMBER, ID_NUMBERS[2])
    assert KEYS.open(crypto.ID_NUMBER, row["id_number_enc"]) == ID_NUMBERS[2]


async def test_report_and_diff_pages_follow_opaque_cursors_that_hold_no_number(
    client: AsyncTestClient[Litestar],
) -> None:
    (civil,) = await heads(client, "civil")
    numbers = ID_NUMBERS[:7]
    first = csv(*(f"{n},张{i},330106001001" for i, n in enumerate(numbers)), header="身份证号,姓名,所属村")
    loaded = await upload(client, civil, first, effective_from="2025-01-01")
    assert loaded.status_code == 201, loaded.text
    second = csv(
        *(f"{n},李{i},330106001001" for i, n in enumerate(numbers[2:])),
        header="身份证号,姓名,所属村",
    )
    version = await upload(client, civil, second, effective_from="2025-06-01")
    assert version.status_code == 201, version.text

    async def pages(url: str, params: dict[str, Any], key: str) -> tuple[list[str], list[str]]:
        seen: list[str] = []
        cursors: list[str] = []
        after: str | None = None
        while True:
            response = await client.get(url, params={**params, **({"after": after} if after else {})}, headers=civil)
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [item[key] for item in body["items"]]
            if body["next_cursor"] is None:
                return seen, cursors
            after = body["next_cursor"]
            cursors.append(after)

    report, report_cursors = await pages(
        "/api/v1/reports/subsidised-not-enrolled", {"year": 2026, "as_of": "2025-03-01", "limit": 2}, "name"
    )
    assert sorted(report) == sorted(f"张{i}" for i in range(7))
    diff, diff_cursors = await pages(
        f"/api/v1/eligibility/lists/{version.json()['id']}/diff", {"limit": 2}, "id_number"
    )
    assert sorted(diff) == sorted(numbers)
    hashes = {KEYS.index(crypto.ID_NUMBER, n) for n in numbers}
    for opaque in report_cursors + diff_cursors:
        assert clear_copies(numbers, [opaque]) == []
        assert cursor.decode(opaque) in hashes  # the blind index, base64url: nothing to read back
    assert len(report_cursors) == 3 and len(diff_cursors) == 3

    # A number where a cursor belongs is refused, not used.
    forged = await client.get(
        "/api/v1/reports/subsidised-not-enrolled", params={"year": 2026, "after": ID_NUMBERS[3]}, headers=civil
    )
    assert (forged.status_code, forged.json()["errors"][0]["field"]) == (422, "after")
    assert ID_NUMBERS[3] not in forged.text


async def test_the_coverage_denominator_meets_roster_exclusion_and_registered_persons_by_the_blind_index(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil = await heads(client, "admin", "civil")
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    await register(conn, [(ID_NUMBERS[1], "张三"), (ID_NUMBERS[2], "李四")])
    deceased = csv(f"{ID_NUMBERS[2]},李四", header="身份证号,姓名")
    assert (await upload(client, civil, deceased, list_type="deceased", effective_from="2025-01-01")).status_code == 201
    roster = csv(
        f"{ID_NUMBERS[1]},张三,330106001001",  # registered: counted once
        f"{ID_NUMBERS[3]},王五,330106001001",  # on the roster only
        f"{ID_NUMBERS[5]},孙八,330106001002",
        header="身份证号,姓名,所属村",
    )
    assert (await upload(client, civil, roster, list_type="huji", effective_from="2025-01-01")).status_code == 201
    response = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)
    assert response.status_code == 200, response.text
    counts = {r["division_code"]: (r["persons"], r["enrolled"]) for r in response.json()["rows"] if r["persons"]}
    # 330106001001: 张三 and 李四 registered, 王五 from the roster, 李四 deceased.
    assert counts == {"330106001001": (2, 0), "330106001002": (1, 0)}
