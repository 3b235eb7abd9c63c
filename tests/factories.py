"""Test data that goes through the real API: policies, households, enrolments."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import crypto

# Valid identity numbers, check characters worked out once by hand (GB 11643, ISO 7064 MOD 11-2).
ID_NUMBERS = [
    "11010519491231002X",  # female, born 1949-12-31
    "110105198001010016",  # male, 1980-01-01
    "110105198202020026",  # female, 1982-02-02
    "110105200503030017",  # male, 2005-03-03
    "110105201004040020",  # female, 2010-04-04
    "440524198001010013",  # male
    "440524198001010021",  # female
    "320102199005050036",  # male
    "330106197007070047",  # female
    "330106197212120058",  # male
    "330106199503150061",  # male
]

POLICY_2026: dict[str, Any] = {
    "effective_from": "2025-09-01",
    "premium_fen": 40000,
    "window_start": "2025-09-01",
    "window_end": "2025-12-31",
    "rules": {
        "categories": [
            {"category": "te_kun", "rule": {"type": "full"}},
            {"category": "di_bao", "rule": {"type": "percent", "basis_points": 5000}},
        ],
        "categories_stack": False,
        "top_ups": [],
    },
    "note": "2026 policy",
}


async def publish_policy(
    client: AsyncTestClient[Litestar], headers: dict[str, str], year: int = 2026, **overrides: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/policy-years/{year}/versions", json={**POLICY_2026, **overrides}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def member(id_number: str, name: str, relation: str = "head", **extra: Any) -> dict[str, Any]:
    return {"name": name, "relation": relation, "id_number": id_number, **extra}


async def create_household(
    client: AsyncTestClient[Litestar],
    headers: dict[str, str],
    members: list[dict[str, Any]],
    village_code: str = "330106001001",
    household_no: str = "0001",
    **extra: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/households",
        json={"village_code": village_code, "household_no": household_no, "members": members, **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def sealed(kind: str, value: str | None) -> tuple[bytes | None, bytes | None]:
    """A number as stored: its blind index and its sealed value (backend/crypto.py)."""
    keyring = crypto.keys()
    return keyring.index(kind, value), keyring.seal(kind, value)


async def add_history(conn: Any, id_number: str, year: int, status: str = "paid", source_file: str = "t") -> None:
    """A row of the old system's enrolment history, written directly (as `canbao enrollments import`)."""
    await conn.execute(
        "INSERT INTO enrollment_history (id_number_hash, id_number_enc, coverage_year, status, source_file)"
        " VALUES ($1, $2, $3, $4, $5)",
        *sealed(crypto.ID_NUMBER, id_number),
        year,
        status,
        source_file,
    )


async def insert_person(conn: Any, id_number: str, name: str, sex: str = "male", birth_date: str = "1980-01-01") -> Any:
    """A person in no household, written directly; returns the id."""
    return await conn.fetchval(
        "INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date)"
        " VALUES (gen_random_uuid(), $1, $2, $3, $4, $5::text::date) RETURNING id",
        *sealed(crypto.ID_NUMBER, id_number),
        name,
        sex,
        birth_date,
    )


async def history_rows(conn: Any) -> list[tuple[str, int, str, str]]:
    """The enrolment history with the numbers opened: (number, year, status, source file), sorted."""
    keyring = crypto.keys()
    rows = await conn.fetch("SELECT id_number_enc, coverage_year, status, source_file FROM enrollment_history")
    return sorted(
        (keyring.open(crypto.ID_NUMBER, r["id_number_enc"]) or "", r["coverage_year"], r["status"], r["source_file"])
        for r in rows
    )
