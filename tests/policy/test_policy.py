"""The coverage year's policy: published by district_admin, versioned with effective dates,
editable only until money has been collected."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import enrollments
from backend.policy import service as policy
from tests.conftest import auth_headers
from tests.enrollment.test_enrollments import staff_actor
from tests.factories import ID_NUMBERS, POLICY_2026, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]


async def test_only_district_admin_publishes(client: Client) -> None:
    for username in ("staff_a", "reviewer_a", "civil"):
        response = await client.post(
            "/api/v1/policy-years/2026/versions", json=POLICY_2026, headers=await auth_headers(client, username)
        )
        assert response.status_code == 403


async def test_published_version_is_read_by_staff(client: Client) -> None:
    created = await publish_policy(client, await auth_headers(client, "admin"))
    assert (created["coverage_year"], created["version"], created["premium_fen"]) == (2026, 1, 40000)
    staff = await auth_headers(client, "staff_a")
    year = (await client.get("/api/v1/policy-years/2026", headers=staff)).json()
    assert [v["version"] for v in year["versions"]] == [1]
    assert year["money_collected"] is False
    assert year["current"]["rules"]["categories"][1] == {
        "category": "di_bao",
        "rule": {"type": "percent", "basis_points": 5000},
    }
    assert (await client.get("/api/v1/policy-years", headers=staff)).json() == {"items": [2026]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"window_end": "2025-08-01"}, "window_end"),
        ({"window_start": "2023-09-01"}, "window_start"),
        ({"premium_fen": 0}, "premium_fen"),
        ({"premium_fen": 400.5}, "premium_fen"),
        ({"rules": {"categories": [{"category": "x", "rule": {"type": "percent", "basis_points": 12000}}]}}, "rules"),
        (
            {
                "rules": {
                    "categories": [
                        {"category": "x", "rule": {"type": "full"}},
                        {"category": "x", "rule": {"type": "full"}},
                    ]
                }
            },
            "rules",
        ),
        # The serious-illness incentives (issue 17 point 3): each bad parameter named.
        ({"rules": {"serious_illness": {"continuity_raise_fen": 300000}}}, "rules.serious_illness"),
        ({"rules": {"serious_illness": {"original_ceiling_fen": 0}}}, "rules.serious_illness.original_ceiling_fen"),
        (
            {"rules": {"serious_illness": {"original_ceiling_fen": 40000000, "cap_percent": 120}}},
            "rules.serious_illness.cap_percent",
        ),
        (
            {"rules": {"serious_illness": {"original_ceiling_fen": 40000000, "zero_claim_raise_fen": -1}}},
            "rules.serious_illness.zero_claim_raise_fen",
        ),
        (
            {"rules": {"serious_illness": {"original_ceiling_fen": 40000000, "raise_per_year": 300000}}},
            "rules.serious_illness",
        ),
        # The benefit facts for residents (issue 19): each bad value named.
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [{"level": "village", "deductible_fen": 0, "reimbursement_basis_points": 9000}],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels[0].level",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [{"level": "county", "deductible_fen": 50000, "reimbursement_basis_points": 10001}],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels[0].reimbursement_basis_points",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [{"level": "county", "deductible_fen": -1, "reimbursement_basis_points": 7000}],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels[0].deductible_fen",
        ),
        (
            {"rules": {"benefits": {"levels": [], "annual_ceiling_fen": 1}}},
            "rules.benefits.levels",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [{"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000}],
                        "annual_ceiling_fen": 0,
                    }
                }
            },
            "rules.benefits.annual_ceiling_fen",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [{"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000}]
                    }
                }
            },
            "rules.benefits",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [
                            {"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000},
                            {"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000},
                        ],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels[1].level",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [
                            {"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000},
                            {"level": "township", "deductible_fen": 0, "reimbursement_basis_points": 9000},
                        ],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels",
        ),
        (
            {
                "rules": {
                    "benefits": {
                        "levels": [
                            {"level": "county", "deductible_fen": 0, "reimbursement_basis_points": 7000, "rate": 1}
                        ],
                        "annual_ceiling_fen": 1,
                    }
                }
            },
            "rules.benefits.levels[0]",
        ),
    ],
)
async def test_bad_policy_is_refused_naming_the_field(client: Client, change: dict[str, Any], field: str) -> None:
    response = await client.post(
        "/api/v1/policy-years/2026/versions",
        json={**POLICY_2026, **change},
        headers=await auth_headers(client, "admin"),
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["errors"][0]["field"].startswith(field)


async def test_version_in_force_follows_the_business_date(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin)
    await publish_policy(client, admin, effective_from="2025-12-01", window_end="2026-01-31", premium_fen=42000)
    early = await policy.in_force(conn, 2026, date(2025, 11, 30))
    late = await policy.in_force(conn, 2026, date(2025, 12, 1))
    before_any = await policy.in_force(conn, 2026, date(2025, 1, 1))
    assert (early and early.version, late and late.version, before_any and before_any.version) == (1, 2, 1)
    assert late is not None and late.window_end == date(2026, 1, 31)


async def test_edit_allowed_until_money_is_collected_then_only_new_versions(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin)
    edited = await client.patch(
        "/api/v1/policy-years/2026/versions/1", json={**POLICY_2026, "note": "typo fixed"}, headers=admin
    )
    assert edited.status_code == 200
    assert edited.json()["note"] == "typo fixed"
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [household["members"][0]["person_id"]],
        },
        headers=staff,
    )
    async with conn.transaction():
        await enrollments.mark_paid(
            conn, await staff_actor(conn), UUID(enrolled.json()["items"][0]["id"]), date(2025, 10, 1)
        )
    locked = await client.patch(
        "/api/v1/policy-years/2026/versions/1", json={**POLICY_2026, "premium_fen": 1}, headers=admin
    )
    assert locked.status_code == 409
    assert locked.json()["code"] == "policy_locked"
    assert await conn.fetchval("SELECT premium_fen FROM policy_versions WHERE version = 1") == 40000
    extended = await client.post(
        "/api/v1/policy-years/2026/versions",
        json={**POLICY_2026, "effective_from": "2025-12-20", "window_end": "2026-02-28", "note": "window extended"},
        headers=admin,
    )
    assert extended.status_code == 201
    assert extended.json()["version"] == 2
    # What was already paid keeps the version it was priced under.
    assert (
        await conn.fetchval("SELECT v.version FROM enrollments e JOIN policy_versions v ON v.id = e.policy_version_id")
        == 1
    )


async def test_a_version_that_priced_enrolments_is_not_edited_in_place(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin)
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [household["members"][0]["person_id"]],
        },
        headers=staff,
    )
    edited = await client.patch(
        "/api/v1/policy-years/2026/versions/1", json={**POLICY_2026, "premium_fen": 45000}, headers=admin
    )
    assert edited.status_code == 409
    assert edited.json()["code"] == "policy_locked"


async def test_serious_illness_incentives_are_stored_with_the_version(client: Client) -> None:
    incentive = {
        "original_ceiling_fen": 40_000_000,
        "continuity_after_years": 4,
        "continuity_raise_fen": 300_000,
        "zero_claim_raise_fen": 300_000,
        "cap_percent": 20,
        "count_from_year": 2025,
    }
    rules = {**POLICY_2026["rules"], "serious_illness": incentive}
    created = await publish_policy(client, await auth_headers(client, "admin"), rules=rules)
    assert created["rules"]["serious_illness"] == incentive
    year = (await client.get("/api/v1/policy-years/2026", headers=await auth_headers(client, "staff_a"))).json()
    assert year["current"]["rules"]["serious_illness"] == incentive
