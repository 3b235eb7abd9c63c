"""The resident's coverage reads in few round trips (issue 20): what it shows is what the shared
look-ups it replaced (continuity, ceilings, subsidies, paid, the household's money, next year's
early cover) answer, for a household with history, a zero-reimbursement year, a subsidy, a payment
with a refund and next year's enrolment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from uuid import UUID

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor
from backend.eligibility import check as eligibility
from backend.enrollment import explain
from backend.enrollment.continuity import ceilings, continuity_of
from backend.enrollment.quotes import household_totals, paid_for
from backend.premiums.payments import PaymentIn
from backend.residents import service as residents
from tests.conftest import auth_headers
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.enrollment.test_continuity import INCENTIVE, upload_zero, zero_list
from tests.factories import ID_NUMBERS, POLICY_2026, add_history, create_household, member, publish_policy
from tests.premiums.test_payments import actor_of
from tests.residents.test_residents import enrol, issue_r_block, paid_then_refunded

Client = AsyncTestClient[Litestar]

NEXT_YEAR_SQL = """
SELECT person_id, coverage_year FROM enrollments
WHERE person_id = ANY($1::uuid[]) AND coverage_year = $2 + 1 AND status IN ('paid', 'subsidised', 'confirmed')
  AND coverage_start <= $3 AND coverage_end >= $3"""
# What was paid per person, as `paid_for` read it by a list of persons before it read the household's
# members (issue 20): its answer must not have changed.
PAID_SQL = """
SELECT m.person_id, sum(m.amount_fen)::bigint AS amount_fen
FROM premium_money m
WHERE m.person_id = ANY($1::uuid[]) AND m.coverage_year = $3 AND m.enrollment_id IS NOT NULL
GROUP BY m.person_id
UNION ALL
SELECT a.person_id, sum(a.amount_fen)::bigint AS amount_fen
FROM payment_ledger p
JOIN payment_allocations a ON a.payment_id = p.id
WHERE p.household_id = $2 AND p.coverage_year = $3 AND p.kind = 'premium' AND NOT p.voided
  AND a.person_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT 1 FROM enrollments e
                  WHERE e.person_id = a.person_id AND e.coverage_year = $3 AND e.status <> 'cancelled')
GROUP BY a.person_id"""


async def test_the_view_answers_as_the_shared_look_ups_do(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    admin = await auth_headers(client, "admin")
    await publish_policy(client, admin, rules={**POLICY_2026["rules"], "serious_illness": INCENTIVE})
    await publish_policy(
        client, admin, year=2027, effective_from="2026-09-01", window_start="2026-09-01", window_end="2026-12-31"
    )
    civil = await auth_headers(client, "civil")
    listed = await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四,,"), list_type="te_kun")
    assert listed.status_code == 201, listed.text
    for year in range(2021, 2026):
        await add_history(conn, ID_NUMBERS[1], year, "paid")
    await add_history(conn, ID_NUMBERS[2], 2024, "cancelled")
    await add_history(conn, ID_NUMBERS[2], 2025, "subsidised")
    assert (await upload_zero(client, zero_list((ID_NUMBERS[1], "张三")), 2025)).status_code == 201
    staff_headers = await auth_headers(client, "staff_a")
    household = await create_household(
        client,
        staff_headers,
        [
            member(ID_NUMBERS[1], "张三"),
            member(ID_NUMBERS[2], "李四", "spouse"),
            member(ID_NUMBERS[3], "张小明", "child"),
        ],
    )
    household_id = UUID(household["id"])
    persons = [UUID(m["person_id"]) for m in household["members"]]
    await enrol(client, staff_headers, household, [str(p) for p in persons[:2]])
    # ¥500 for 张三's ¥400, the ¥100 over refunded.
    await issue_r_block(client, conn)
    at = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
    day = date(2025, 10, 8)
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    data = PaymentIn(
        id=uuid.uuid4(),
        household_id=household_id,
        coverage_year=2026,
        person_ids=persons[:1],
        amount_fen=50000,
        method="cash",
        receipt_no="R00000001",
        collected_at=at,
    )
    await paid_then_refunded(conn, staff, reviewer, data, persons, 10000, day)
    # Next year's enrolment of all three (registered, so no early cover).
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2027, "person_ids": [str(p) for p in persons]},
        headers=staff_headers,
    )
    assert enrolled.status_code == 201, enrolled.text

    today = date(2026, 3, 1)
    resident = Actor.resident(persons[0], household_id, uuid.uuid4())
    view = await residents.coverage(conn, resident, 2026, today)

    # In its transaction, in few statements: the household with its money and the members' last
    # receipts, the members, their years with the policy, the subsidised member's list rows and
    # claims (one statement), the audit row; after the first, on generic plans, and the connection as
    # it was after.
    statements: list[str] = []
    conn.add_query_logger(lambda q: statements.append(q.query))
    async with conn.transaction():
        await residents.coverage(conn, resident, 2026, today)
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    await asyncio.sleep(0)  # (asyncpg calls query loggers soon after, not at once)
    read = statements[1 : statements.index("SHOW plan_cache_mode")]  # between BEGIN and the SHOW
    assert len(read) == 5 and read[0].startswith("-- The household and its money"), read
    assert await conn.fetchval("SHOW plan_cache_mode") == "auto"

    # What the view shows, in literals: the rules at work.
    members = {m.name: m for m in view.members}
    assert [m.name for m in view.members] == ["张三", "李四", "张小明"]
    assert [(m.continuity.years if m.continuity else None) for m in view.members] == [6, 2, 0]
    assert members["张三"].serious_illness_ceiling is not None
    assert members["张三"].serious_illness_ceiling.reason_codes == ["continuity", "zero_claim", "cap"]
    assert members["张小明"].serious_illness_ceiling is None
    assert (members["李四"].subsidy_categories, members["张三"].subsidy_categories) == (["te_kun"], [])
    assert [(m.premium_fen, m.subsidy_fen, m.paid_fen) for m in view.members] == [
        (40000, 0, 40000),
        (40000, 40000, 0),
        (0, 0, 0),
    ]
    assert (view.paid_fen, view.balance_fen, view.last_receipt_no) == (40000, 0, "R00000001")

    # And the same as the look-ups it replaced answer.
    runs = await continuity_of(conn, persons, 2026, today)
    rows = {m.person_id: m for m in view.members}
    covered = [p for p in persons if rows[p].enrollment_status in explain.HISTORY_FUNDED]
    ceiling_of = await ceilings(conn, covered, 2026, today)
    dues = await eligibility.subsidies(conn, persons, 2026, today)
    paid = await paid_for(conn, household_id, 2026)
    assert paid == {r["person_id"]: r["amount_fen"] for r in await conn.fetch(PAID_SQL, persons, household_id, 2026)}
    totals = await household_totals(conn, household_id, 2026)
    early = {r["person_id"]: r["coverage_year"] for r in await conn.fetch(NEXT_YEAR_SQL, persons, 2026, today)}
    for p in persons:
        m = rows[p]
        assert m.continuity == runs.get(p)
        assert m.serious_illness_ceiling == ceiling_of.get(p)
        assert m.subsidy_categories == (list(dues[p].chosen_categories) if m.subsidy_fen else [])
        assert m.paid_fen == paid.get(p, 0)
        assert m.in_force_by_year == early.get(p)
    assert (view.money.premium_fen, view.money.subsidy_fen, view.money.paid_fen) == (
        totals.premium_fen,
        totals.subsidy_fen,
        totals.paid_fen,
    )
