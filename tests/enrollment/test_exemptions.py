"""Exemptions from the waiting period recognised from the evidence the system holds (issue 17,
point 1), end to end: the lists and accepted claims show the group, the year's policy names which
groups exempt, and the enrolment's coverage note names the exemption and its evidence.

The household of two was covered in 2025 and is enrolled for 2026, whose window closed on
2025-12-31: without an exemption a payment in 2026 waits 3 months.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import enrollments, quotes
from backend.i18n import use_language
from backend.premiums import payments
from backend.premiums.payments import PaymentIn
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, POLICY_2026, publish_policy
from tests.premiums.test_payments import KEY, TZ, World, actor_of, world_fixture  # noqa: F401 (fixture)

Client = AsyncTestClient[Litestar]


async def upload(client: Client, list_type: str, effective_from: str, body: str) -> dict[str, Any]:
    civil = await auth_headers(client, "civil")
    answer = await client.post(
        "/api/v1/eligibility/lists",
        data={"type": list_type, "effective_from": effective_from},
        files={"file": (f"{list_type}.csv", body)},
        headers=civil,
    )
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def version_2026(client: Client, effective_from: str, waiting: dict[str, Any]) -> None:
    """A new 2026 policy version with these waiting rules, in force from `effective_from`."""
    rules = {**POLICY_2026["rules"], "waiting": waiting}
    await publish_policy(client, await auth_headers(client, "admin"), effective_from=effective_from, rules=rules)


async def mark_paid(conn: asyncpg.Connection, world: World, index: int, on: date) -> enrollments.Enrollment:  # type: ignore[type-arg]
    async with conn.transaction():
        actor = await actor_of(conn, "staff_a")
        return await enrollments.mark_paid(conn, actor, UUID(world.enrolled["items"][index]["id"]), on)


def cover(e: enrollments.Enrollment) -> tuple[Any, ...]:
    return (e.coverage_start, e.coverage_reason, e.waiting_months)


async def facts_of(conn: asyncpg.Connection, enrollment_id: UUID) -> Any:  # type: ignore[type-arg]
    return await conn.fetchval("SELECT coverage_facts FROM enrollments WHERE id = $1", enrollment_id)


async def test_newly_recognised_te_kun_paying_on_2_december_is_covered_at_once_and_the_note_names_the_row(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    listed = await upload(
        client, "te_kun", "2026-11-15", f"身份证号,姓名,认定日期\r\n{ID_NUMBERS[1]},张三,2026-11-15\r\n"
    )
    # The quote says what a payment today buys: the newly recognised member at once, the other none.
    quote = await quotes.premium_quote(
        conn, await actor_of(conn, "staff_a"), UUID(world.household["id"]), 2026, date(2026, 12, 2)
    )
    assert [(m.cover_reason_if_paid_today, m.cover_start_if_paid_today) for m in quote.members] == [
        ("exempt", date(2026, 12, 2)),
        ("no_cover_this_year", None),
    ]
    paid = await mark_paid(conn, world, 0, date(2026, 12, 2))
    assert cover(paid) == (date(2026, 12, 2), "exempt", 0)
    note = (
        "Enrolled on 2026-12-02, after the enrolment window closed on 2025-12-31; exempt from the waiting period "
        "as newly recognised as a person in extreme poverty, a minimum living allowance recipient or a person "
        "monitored against falling back into poverty (shown by the list Person in extreme poverty (te kun) "
        "(te_kun) version 1 row 2, from 2026-11-15); covered from 2026-12-02 to 2026-12-31."
    )
    answer = await client.get(f"/api/v1/enrollments/{paid.id}", headers=await auth_headers(client, "reviewer_a"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["coverage_note"] == note
    stored = await facts_of(conn, paid.id)
    assert (stored["exemption"], stored["evidence"]) == (
        "newly_recognised_assistance",
        {
            "source": "list",
            "list_type": "te_kun",
            "valid_from": "2026-11-15",
            "list_id": listed["id"],
            "version": 1,
            "row": 2,
        },
    )
    with use_language("zh_CN"):
        fetched = await enrollments.get(conn, await actor_of(conn, "staff_a"), paid.id)
    assert fetched.coverage_note == (
        "2026年12月2日参保，未在集中参保期内参保（集中参保期2025年12月31日截止）；因属新认定的特困人员、低保对象或"
        "防止返贫致贫监测对象，不设待遇等待期（依据特困人员名单（te_kun）第1版第2行，自2026年11月15日起）；"
        "待遇享受期2026年12月2日至2026年12月31日。"
    )


async def test_a_policy_without_the_group_does_not_exempt(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await version_2026(client, "2026-11-01", {"exempt_groups": ["newborn"]})
    await upload(client, "te_kun", "2026-11-15", f"身份证号,姓名,认定日期\r\n{ID_NUMBERS[1]},张三,2026-11-15\r\n")
    paid = await mark_paid(conn, world, 0, date(2026, 12, 2))
    assert cover(paid) == (None, "no_cover_this_year", 3)


async def test_a_soldier_discharged_in_june_is_covered_from_the_day_he_pays_where_the_policy_names_soldiers(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await version_2026(client, "2026-06-01", {"exempt_groups": ["newborn", "medical_assistance", "discharged_soldier"]})
    await upload(client, "tuiyi_junren", "2026-06-25", f"身份证号,姓名,退役日期\r\n{ID_NUMBERS[2]},李四,2026-06-20\r\n")
    paid = await mark_paid(conn, world, 1, date(2026, 7, 10))
    assert cover(paid) == (date(2026, 7, 10), "exempt", 0)
    assert paid.coverage_note == (
        "Enrolled on 2026-07-10, after the enrolment window closed on 2025-12-31; exempt from the waiting period "
        "as a soldier discharged from active service this year (shown by the list Soldier discharged from active "
        "service (tuiyi_junren) version 1 row 2, from 2026-06-20); covered from 2026-07-10 to 2026-12-31."
    )
    # The national policy (version 1, before June) names no soldiers: paid on 2026-05-20 he would wait.
    other = await mark_paid(conn, world, 0, date(2026, 7, 10))  # not on the list: waits 3 months
    assert cover(other) == (date(2026, 10, 10), "waiting_period", 3)


def paid_on(world: World, index: int, collected_at: datetime) -> PaymentIn:
    return PaymentIn(
        id=uuid.uuid4(),
        household_id=UUID(world.household["id"]),
        coverage_year=2026,
        person_ids=[UUID(world.person_ids[index])],
        amount_fen=40000,
        method="cash",
        receipt_no="A00000001",
        collected_at=collected_at,
    )


async def record(conn: asyncpg.Connection, payment: PaymentIn) -> enrollments.Enrollment:  # type: ignore[type-arg]
    async with conn.transaction():
        await payments.record_payment(
            conn,
            await actor_of(conn, "staff_a"),
            payment,
            timezone=TZ,
            code_key=KEY,
            now=payment.collected_at.replace(minute=10),
        )
    person = payment.person_ids[0]
    enrollment_id = await conn.fetchval(
        "SELECT id FROM enrollments WHERE person_id = $1 AND coverage_year = 2026 AND status <> 'cancelled'", person
    )
    return await enrollments.get(conn, await actor_of(conn, "reviewer_a"), enrollment_id)


EMPLOYEE_INSURANCE = "身份证号,姓名,参保起始日期,停保日期\r\n{number},李四,2024-03-01,2026-04-30\r\n"


async def test_an_employee_insurance_leaver_after_two_years_with_a_two_month_break_pays_and_is_covered_at_once(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await upload(client, "employee_insurance_ended", "2026-05-10", EMPLOYEE_INSURANCE.format(number=ID_NUMBERS[2]))
    paid = await record(conn, paid_on(world, 1, datetime(2026, 6, 30, 2, 0, tzinfo=UTC)))
    assert cover(paid) == (date(2026, 6, 30), "exempt", 0)
    assert paid.coverage_note is not None and paid.coverage_note.endswith(
        "exempt from the waiting period as a person who switched from employee medical insurance without a long "
        "break (shown by the list Person whose employee medical insurance ended (employee_insurance_ended) "
        "version 1 row 2, from 2024-03-01 to 2026-04-30); covered from 2026-06-30 to 2026-12-31."
    )


async def test_an_employee_insurance_leaver_with_a_four_month_break_waits(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    await upload(client, "employee_insurance_ended", "2026-05-10", EMPLOYEE_INSURANCE.format(number=ID_NUMBERS[2]))
    paid = await record(conn, paid_on(world, 1, datetime(2026, 8, 31, 2, 0, tzinfo=UTC)))
    assert cover(paid) == (date(2026, 11, 30), "waiting_period", 3)


async def test_a_paper_proof_of_employee_insurance_accepted_as_a_claim_exempts_and_the_note_names_the_claim(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    staff, civil = await auth_headers(client, "staff_a"), await auth_headers(client, "civil")
    claim_in: dict[str, Any] = {
        "person_id": world.person_ids[0],
        "coverage_year": 2026,
        "category": "employee_insurance_ended",
        "evidence_ref": "职工医保参保缴费凭证 2026-041",
        "valid_from": "2023-01-01",
    }
    missing = await client.post("/api/v1/eligibility/claims", json=claim_in, headers=staff)
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["field"] == "valid_to"
    raised = await client.post("/api/v1/eligibility/claims", json={**claim_in, "valid_to": "2026-05-15"}, headers=staff)
    assert raised.status_code == 201, raised.text
    claim = raised.json()
    assert (claim["purpose"], claim["valid_from"], claim["valid_to"]) == ("exemption", "2023-01-01", "2026-05-15")
    # Pending: nothing yet.
    before = await quotes.premium_quote(
        conn, await actor_of(conn, "staff_a"), UUID(world.household["id"]), 2026, date(2026, 6, 1)
    )
    assert before.members[0].cover_reason_if_paid_today == "waiting_period"
    accepted = await client.post(f"/api/v1/eligibility/claims/{claim['id']}/accept", json={}, headers=civil)
    assert accepted.status_code == 200, accepted.text
    # An exemption's claim gives no subsidy category.
    check = await client.post(
        "/api/v1/eligibility/check", json={"id_numbers": [ID_NUMBERS[1]], "coverage_year": 2026}, headers=staff
    )
    assert check.json()["items"][0]["categories"] == []
    paid = await mark_paid(conn, world, 0, date(2026, 6, 1))
    assert cover(paid) == (date(2026, 6, 1), "exempt", 0)
    assert (
        paid.coverage_note is not None
        and (
            f"(shown by accepted claim {claim['id']} (Person whose employee medical insurance ended), "
            "from 2023-01-01 to 2026-05-15)"
        )
        in paid.coverage_note
    )
    stored = await facts_of(conn, paid.id)
    assert stored["evidence"]["claim_id"] == claim["id"]


async def test_the_policy_document_refuses_unknown_groups_and_parameters_of_groups_it_does_not_name(
    client: Client,
) -> None:
    admin = await auth_headers(client, "admin")

    async def publish(waiting: dict[str, Any]) -> Any:
        rules = {**POLICY_2026["rules"], "waiting": waiting}
        return await client.post(
            "/api/v1/policy-years/2026/versions", json={**POLICY_2026, "rules": rules}, headers=admin
        )

    unknown = await publish({"exempt_groups": ["newborn", "veterans"]})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["errors"][0]["field"] == "rules.waiting.exempt_groups"
    unnamed = await publish({"exempt_groups": ["newborn"], "exemptions": [{"group": "discharged_soldier"}]})
    assert (unnamed.status_code, unnamed.json()["errors"][0]["field"]) == (422, "rules.waiting.exemptions[0].group")
    bad_list = await publish(
        {
            "exempt_groups": ["medical_assistance"],
            "exemptions": [{"group": "medical_assistance", "list_types": ["特困"]}],
        }
    )
    assert (bad_list.status_code, bad_list.json()["errors"][0]["field"]) == (
        422,
        "rules.waiting.exemptions[0].list_types[0]",
    )
    fine = await publish(
        {
            "exempt_groups": ["newborn", "medical_assistance", "discharged_soldier"],
            "exemptions": [{"group": "medical_assistance", "list_types": ["te_kun", "di_bao", "gu_er"]}],
        }
    )
    assert fine.status_code == 201, fine.text
    assert fine.json()["rules"]["waiting"]["exemptions"] == [
        {"group": "medical_assistance", "list_types": ["te_kun", "di_bao", "gu_er"]}
    ]
