"""Continuity and incentives (issue 17 point 3, 国办发〔2024〕38号): each person's continuous years of
basic insurance on the household, the resident's view and the enrolment list; the serious-illness
ceiling for the year with its reasons on the resident's view and FHIR; the zero-reimbursement list
of the settlement system, a list type about one year."""

from __future__ import annotations

from typing import Any

import asyncpg
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.fhir.resources import EXT_SERIOUS_ILLNESS_CEILING
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, POLICY_2026, add_history, create_household, member, publish_policy
from tests.fhir.test_fhir import ELIGIBILITY, SEARCH, partner_headers, register_partner, request_for
from tests.residents.test_residents import COVERAGE, resident_headers

Client = AsyncTestClient[Litestar]

# Fujian's parameters with an original ceiling of 400,000 yuan (an example figure).
INCENTIVE = {
    "original_ceiling_fen": 40_000_000,
    "continuity_after_years": 4,
    "continuity_raise_fen": 300_000,
    "zero_claim_raise_fen": 300_000,
    "cap_percent": 20,
}


def zero_list(*rows: tuple[str, str]) -> bytes:
    return ("身份证号,姓名\n" + "".join(f"{n},{name}\n" for n, name in rows)).encode()


async def upload_zero(client: Client, content: bytes, year: int | None, **extra: Any) -> Any:
    headers = await auth_headers(client, "civil")
    data = {"type": "zero_reimbursement", "effective_from": "2026-01-15", **extra}
    if year is not None:
        data["year"] = str(year)
    return await client.post(
        "/api/v1/eligibility/lists", files={"file": ("zero.csv", content)}, data=data, headers=headers
    )


async def setup(client: Client, conn: asyncpg.Connection) -> dict[str, Any]:  # type: ignore[type-arg]
    """张三: history paid 2021–2026 (2020 unknown), on the 2025 zero-reimbursement list. 李四:
    history cancelled 2024, subsidised 2025, confirmed 2026."""
    rules = {**POLICY_2026["rules"], "serious_illness": INCENTIVE}
    await publish_policy(client, await auth_headers(client, "admin"), rules=rules)
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    for year in range(2021, 2027):
        await add_history(conn, ID_NUMBERS[1], year, "paid")
    await add_history(conn, ID_NUMBERS[2], 2024, "cancelled")
    await add_history(conn, ID_NUMBERS[2], 2025, "subsidised")
    await add_history(conn, ID_NUMBERS[2], 2026, "confirmed")
    loaded = await upload_zero(client, zero_list((ID_NUMBERS[1], "张三")), 2025)
    assert loaded.status_code == 201, loaded.text
    return household


async def test_household_shows_each_members_continuous_years(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    household = await setup(client, conn)
    staff = await auth_headers(client, "staff_a")
    body = (await client.get(f"/api/v1/households/{household['id']}", headers=staff)).json()
    runs = {m["name"]: m["continuity"] for m in body["members"]}
    assert runs["张三"] == {
        "years": 6,
        "through": 2026,
        "since": 2021,
        "unknown_year": 2020,
        "words": "6 continuous years of basic insurance (2021–2026); nothing is known of 2020",
    }
    assert runs["李四"] == {
        "years": 2,
        "through": 2026,
        "since": 2025,
        "unknown_year": None,
        "words": "2 continuous years of basic insurance (2025–2026)",
    }
    zh = (
        await client.get(f"/api/v1/households/{household['id']}", headers={**staff, "Accept-Language": "zh-CN"})
    ).json()
    assert zh["members"][1]["continuity"]["words"] == "连续参保2年（2025–2026年）"


async def test_resident_view_gives_the_ceiling_with_its_reasons(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    household = await setup(client, conn)
    # The household logs in with the code of its 2027 slip (enrolled, not paid); 2026 is the
    # history's.
    admin = await auth_headers(client, "admin")
    await publish_policy(
        client, admin, year=2027, effective_from="2026-09-01", window_start="2026-09-01", window_end="2026-12-31"
    )
    staff = await auth_headers(client, "staff_a")
    persons = [m["person_id"] for m in household["members"]]
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2027, "person_ids": persons},
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    headers = await resident_headers(client, ID_NUMBERS[1], "张三", enrolled.json()["query_code"])
    body = (await client.get(COVERAGE, params={"year": 2026}, headers=headers)).json()
    members = {m["name"]: m for m in body["members"]}
    # 6 years: 2 steps of 3,000 yuan; no reimbursement in 2025: 3,000 yuan; under the 80,000 cap.
    assert members["张三"]["serious_illness_ceiling"] == {
        "coverage_year": 2026,
        "original_fen": 40_000_000,
        "original_yuan": "CN¥400,000.00",
        "raise_fen": 900_000,
        "ceiling_fen": 40_900_000,
        "ceiling_yuan": "CN¥409,000.00",
        "continuous_years": 6,
        "zero_claim_year": 2025,
        "reason_codes": ["continuity", "zero_claim", "cap"],
        "reasons": [
            "6 continuous years insured: raised by CN¥6,000.00",
            "no reimbursement in 2025: raised by CN¥3,000.00",
            "both raises together at most 20% of the original ceiling (CN¥80,000.00)",
        ],
        "words": "Serious-illness insurance ceiling 2026: CN¥409,000.00 (6 continuous years insured: raised by "
        "CN¥6,000.00; no reimbursement in 2025: raised by CN¥3,000.00; both raises together at most 20% of "
        "the original ceiling (CN¥80,000.00))",
    }
    assert members["张三"]["continuity"]["years"] == 6
    # 李四: 2 years, not on the zero list: the original ceiling.
    li = members["李四"]["serious_illness_ceiling"]
    assert (li["ceiling_fen"], li["reason_codes"], li["continuous_years"]) == (40_000_000, [], 2)
    assert (
        li["words"]
        == "Serious-illness insurance ceiling 2026: CN¥400,000.00, the original ceiling (2 continuous years insured)"
    )
    zh = (await client.get(COVERAGE, params={"year": 2026}, headers={**headers, "Accept-Language": "zh-CN"})).json()
    assert zh["members"][0]["serious_illness_ceiling"]["words"] == (
        "2026年大病保险最高支付限额：¥409,000.00（连续参保6年，提高¥6,000.00；2025年度未发生报销，提高¥3,000.00；"
        "两项合计不超过原限额的20%（¥80,000.00））"
    )
    # A year without cover has no ceiling.
    none = (await client.get(COVERAGE, params={"year": 2020}, headers=headers)).json()
    assert [m["serious_illness_ceiling"] for m in none["members"]] == [None, None]


async def test_fhir_coverage_carries_the_ceiling_extension(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await setup(client, conn)
    rules = {**POLICY_2026["rules"], "serious_illness": INCENTIVE}
    await publish_policy(
        client,
        await auth_headers(client, "admin"),
        year=2025,
        effective_from="2024-09-01",
        window_start="2024-09-01",
        window_end="2024-12-31",
        rules=rules,
    )
    headers = await partner_headers(client, await register_partner(client))
    answer: dict[str, Any] = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=headers)).json()
    CoverageEligibilityResponse.model_validate(answer)
    [contained] = answer["contained"]
    [ext] = [e for e in contained["extension"] if e["url"] == EXT_SERIOUS_ILLNESS_CEILING]
    parts = {(p["url"], i): p for i, p in enumerate(ext["extension"])}
    values = [
        (url, p.get("valueMoney") or p.get("valueUnsignedInt") or p.get("valueInteger"))
        for (url, _i), p in parts.items()
        if url not in {"reason", "text"}
    ]
    assert values == [
        ("ceiling", {"value": 409000, "currency": "CNY"}),
        ("original", {"value": 400000, "currency": "CNY"}),
        ("continuousYears", 6),
        ("zeroReimbursementYear", 2025),
    ]
    reasons = [p["valueCodeableConcept"] for p in ext["extension"] if p["url"] == "reason"]
    assert [r["coding"][0]["code"] for r in reasons] == ["continuity", "zero_claim", "cap"]
    assert reasons[0]["text"] == "6 continuous years insured: raised by CN¥6,000.00"

    response = await client.post(SEARCH, data={"identifier": f"{ID_NUMBERS[1]}"}, headers=headers)
    bundle = response.json()
    Bundle.model_validate(bundle)
    by_year = {e["resource"]["class"][0]["value"]: e["resource"] for e in bundle["entry"]}
    assert set(by_year) == {"2021", "2022", "2023", "2024", "2025", "2026"}

    def ceiling(resource: dict[str, Any]) -> Any:
        [ext] = [e for e in resource["extension"] if e["url"] == EXT_SERIOUS_ILLNESS_CEILING] or [None]
        return None if ext is None else ext["extension"][0]["valueMoney"]["value"]

    # 2026: 409,000 yuan; 2025 (five years 2021–2025, 2024 on no zero list): 403,000 yuan; 2024:
    # no policy of that year carries the incentives, so no ceiling is given.
    assert (ceiling(by_year["2026"]), ceiling(by_year["2025"]), ceiling(by_year["2024"])) == (409000, 403000, None)


async def test_zero_reimbursement_list_is_about_a_year(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    content = zero_list((ID_NUMBERS[1], "张三"), (ID_NUMBERS[2], "李四"))
    missing = await upload_zero(client, content, None)
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["field"] == "year"
    headers = await auth_headers(client, "civil")
    not_settlement = await client.post(
        "/api/v1/eligibility/lists",
        files={"file": ("dibao.csv", content)},
        data={"type": "di_bao", "effective_from": "2026-01-15", "year": "2025"},
        headers=headers,
    )
    assert not_settlement.status_code == 422, not_settlement.text
    assert not_settlement.json()["errors"][0]["field"] == "year"
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 0

    first = await upload_zero(client, content, 2025)
    assert first.status_code == 201, first.text
    assert (first.json()["kind"], first.json()["concerns_year"], first.json()["version"]) == ("settlement", 2025, 1)
    # A list of 2024 uploaded later with an earlier date: another year, nothing in force to refuse it.
    older = await upload_zero(client, zero_list((ID_NUMBERS[2], "李四")), 2024, effective_from="2025-01-15")
    assert older.status_code == 201, older.text
    assert (older.json()["concerns_year"], older.json()["version"], older.json()["previous_id"]) == (2024, 2, None)
    # A corrected list of 2025 replaces the first: it is diffed against it.
    corrected = await upload_zero(client, zero_list((ID_NUMBERS[2], "李四")), 2025)
    assert corrected.status_code == 201, corrected.text
    assert (corrected.json()["previous_id"], corrected.json()["removed"]) == (first.json()["id"], 1)
    # A category column naming another list is a bad row.
    mixed = await upload_zero(client, f"身份证号,姓名,人员类别\n{ID_NUMBERS[1]},张三,低保\n".encode(), 2025)
    assert mixed.status_code == 422, mixed.text
    named = await upload_zero(client, f"身份证号,姓名,人员类别\n{ID_NUMBERS[1]},张三,零报销人员\n".encode(), 2023)
    assert named.status_code == 201, named.text


async def test_the_newest_version_of_a_year_decides_the_zero_claim(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    await setup(client, conn)
    headers = await partner_headers(client, await register_partner(client))

    async def ceiling_2026() -> Any:
        answer = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[1]), headers=headers)).json()
        [ext] = [e for e in answer["contained"][0]["extension"] if e["url"] == EXT_SERIOUS_ILLNESS_CEILING]
        return ext["extension"][0]["valueMoney"]["value"]

    assert await ceiling_2026() == 409000
    # The settlement system corrects 2025: 张三 had a reimbursement after all.
    corrected = await upload_zero(client, zero_list((ID_NUMBERS[2], "李四")), 2025)
    assert corrected.status_code == 201, corrected.text
    assert await ceiling_2026() == 406000


async def test_enrolment_list_gives_continuous_years(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    household = await setup(client, conn)
    staff = await auth_headers(client, "staff_a")
    persons = [m["person_id"] for m in household["members"]]
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": persons},
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    page = (await client.get("/api/v1/enrollments", params={"year": 2026}, headers=staff)).json()
    by_person = {e["person_id"]: e["continuous_years"] for e in page["items"]}
    assert by_person == {persons[0]: 6, persons[1]: 2}
