"""`GET /api/v1/divisions`: the divisions in the caller's scope — their own division and everything
below it — so that a newcomer finds the codes without being told them."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.tools import demo
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
URL = "/api/v1/divisions"

DISTRICT = "330106000000"
TOWNSHIP_A = "330106001000"
TOWNSHIP_B = "330106002000"
VILLAGES_A = ["330106001001", "330106001002", "330106001201"]
VILLAGES_B = ["330106002201", "330106002202", "330106002203"]


async def codes(client: Client, username: str, **params: str) -> list[str]:
    response = await client.get(URL, params=params, headers=await auth_headers(client, username))
    assert response.status_code == 200, response.text
    return [d["code"] for d in response.json()["items"]]


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("admin", [DISTRICT, TOWNSHIP_A, *VILLAGES_A, TOWNSHIP_B, *VILLAGES_B]),
        ("civil", [DISTRICT, TOWNSHIP_A, *VILLAGES_A, TOWNSHIP_B, *VILLAGES_B]),
        ("staff_a", [TOWNSHIP_A, *VILLAGES_A]),
        ("reviewer_a", [TOWNSHIP_A, *VILLAGES_A]),
        ("staff_b", [TOWNSHIP_B, *VILLAGES_B]),
        ("reviewer_b", [TOWNSHIP_B, *VILLAGES_B]),
    ],
)
async def test_each_role_lists_its_own_division_and_everything_below_it_sorted_by_code(
    client: Client, username: str, expected: list[str]
) -> None:
    assert await codes(client, username) == expected


async def test_a_township_user_sees_its_township_and_villages_with_their_names_and_parents(client: Client) -> None:
    response = await client.get(URL, headers=await auth_headers(client, "staff_a"))
    names = {c: (p, lvl, n) for c, p, lvl, n in demo.DIVISIONS}
    assert response.json() == {
        "items": [
            {"code": c, "parent_code": names[c][0], "level": names[c][1], "name": names[c][2]}
            for c in [TOWNSHIP_A, *VILLAGES_A]
        ]
    }


async def test_a_user_of_township_b_does_not_see_township_a_or_its_villages(client: Client) -> None:
    seen = await codes(client, "staff_b")
    assert not {TOWNSHIP_A, *VILLAGES_A} & set(seen)
    assert DISTRICT not in seen  # the district is above B's scope
    # Asking for A's villages by name of their parent finds nothing, as every list outside the scope.
    assert await codes(client, "staff_b", parent_code=TOWNSHIP_A) == []
    assert await codes(client, "staff_b", level="village") == VILLAGES_B


@pytest.mark.parametrize(
    ("username", "params", "expected"),
    [
        ("admin", {"level": "township"}, [TOWNSHIP_A, TOWNSHIP_B]),
        ("admin", {"level": "village"}, [*VILLAGES_A, *VILLAGES_B]),
        ("admin", {"parent_code": DISTRICT}, [TOWNSHIP_A, TOWNSHIP_B]),
        ("admin", {"parent_code": TOWNSHIP_B}, VILLAGES_B),
        ("admin", {"level": "village", "parent_code": TOWNSHIP_A}, VILLAGES_A),
        ("admin", {"level": "township", "parent_code": TOWNSHIP_A}, []),
        ("admin", {"level": "city"}, []),  # the city is above the district: outside every scope here
        ("staff_a", {"level": "township"}, [TOWNSHIP_A]),
        ("staff_a", {"parent_code": DISTRICT}, [TOWNSHIP_A]),  # of the district's townships, only its own
    ],
)
async def test_level_and_parent_code_narrow_the_list_within_the_scope(
    client: Client, username: str, params: dict[str, str], expected: list[str]
) -> None:
    assert await codes(client, username, **params) == expected


@pytest.mark.parametrize("params", [{"level": "county"}, {"parent_code": "3301"}, {"parent_code": "33010600100x"}])
async def test_a_bad_filter_is_refused_as_a_validation_error(client: Client, params: dict[str, str]) -> None:
    response = await client.get(URL, params=params, headers=await auth_headers(client, "admin"))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_listing_divisions_writes_no_audit_row(client: Client, conn: asyncpg.Connection[Any]) -> None:
    # As the single-division read: codes and names of divisions are public statistics, not personal data.
    headers = await auth_headers(client, "staff_a")  # signing in is audited; reading divisions is not
    before = await conn.fetchval("SELECT count(*) FROM audit_log")
    assert (await client.get(URL, headers=headers)).json()["items"]
    assert (await client.get(f"{URL}/{TOWNSHIP_A}", headers=headers)).status_code == 200
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == before


async def test_residents_and_partners_get_no_division_list(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    staff_a = await auth_headers(client, "staff_a")
    await publish_policy(client, admin)
    household = await create_household(client, staff_a, [member(ID_NUMBERS[8], "赵六")])
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [household["members"][0]["person_id"]],
        },
        headers=staff_a,
    )
    assert enrolled.status_code == 201, enrolled.text
    resident = await client.post(
        "/api/v1/resident/login",
        json={"id_number": ID_NUMBERS[8], "name": "赵六", "query_code": enrolled.json()["query_code"]},
    )
    assert resident.status_code == 200, resident.text
    partner = await client.post("/api/v1/partners", json={"name": "县人民医院"}, headers=admin)
    assert partner.status_code == 201, partner.text
    partner_token = await client.post(
        "/fhir/token",
        data={
            "grant_type": "client_credentials",
            "client_id": partner.json()["partner"]["client_id"],
            "client_secret": partner.json()["client_secret"],
        },
    )
    assert partner_token.status_code == 200, partner_token.text

    for token in (resident.json()["access_token"], partner_token.json()["access_token"]):
        response = await client.get(URL, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, response.text
        assert "北山" not in response.text
    assert (await client.get(URL)).status_code == 401
