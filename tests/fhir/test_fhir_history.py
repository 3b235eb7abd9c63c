"""A year the imported enrolment history marks paid covers in FHIR too (issue 17, point 2): a
partner asking about a person of its district with no enrolment here for 2026 but a 2026 history
row marked paid hears "in force", and the Coverage search lists that year's Coverage."""

from __future__ import annotations

from typing import Any

import asyncpg
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.fhir.resources import RESIDENT_ID_SYSTEM
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy
from tests.fhir.test_fhir import ELIGIBILITY, SEARCH, partner_headers, register_partner, request_for, state_of

Client = AsyncTestClient[Litestar]


async def test_a_history_year_marked_paid_is_in_force_and_a_coverage(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    await create_household(client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")])
    await add_history(conn, ID_NUMBERS[1], 2026, "paid")
    await add_history(conn, ID_NUMBERS[2], 2026, "cancelled")
    headers = await partner_headers(client, await register_partner(client))

    answer: dict[str, Any] = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=headers)).json()
    CoverageEligibilityResponse.model_validate(answer)
    assert state_of(answer) == (True, "in_force", None)
    assert answer["insurance"][0]["benefitPeriod"] == {"start": "2026-01-01", "end": "2026-12-31"}
    assert "awaits review" not in answer["disposition"]
    [contained] = answer["contained"]
    assert (contained["status"], contained["period"]["start"]) == ("active", "2026-01-01")

    # A history year marked cancelled is no cover: not enrolled, as before.
    other = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[2]), headers=headers)).json()
    assert state_of(other) == (False, "not_enrolled", None)

    found = await client.post(SEARCH, data={"identifier": f"{RESIDENT_ID_SYSTEM}|{ID_NUMBERS[1]}"}, headers=headers)
    assert found.status_code == 200, found.text
    Bundle.model_validate(found.json())
    [entry] = found.json()["entry"]
    coverage = entry["resource"]
    assert (coverage["status"], coverage["period"], coverage["class"][0]["value"]) == (
        "active",
        {"start": "2026-01-01", "end": "2026-12-31"},
        "2026",
    )
    assert any("enrolment history" in x.get("valueString", "") for x in coverage["extension"])
