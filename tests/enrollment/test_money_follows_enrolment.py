"""The money follows the enrolment: what is paid for an enrolment is what payments allocated to it,
whichever household's payment it was; a household's money is premium − subsidy − paid over the
enrolments live in it now. A person paid for in one household and moved to another is paid for in
the new one (nothing owed there, no credit left behind); a part paid before the move leaves only the
rest to pay; the receipt keeps naming the household that paid."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor
from backend.enrollment.quotes import PremiumQuote, premium_quote
from backend.errors import InvalidInput
from backend.premiums import adjustments, payments
from backend.premiums.adjustments import AdjustmentRequest, Decision
from backend.residents import service as residents
from tests.enrollment.test_enrolment_follows_person import OPEN, enrolment_of, move, target_household
from tests.premiums.test_payments import World, actor_of, pay, world_fixture

__all__ = ["world_fixture"]  # the fixture `world`: a household of two enrolled for 2026, receipt numbers

Client = AsyncTestClient[Litestar]
PREMIUM = 40000  # ¥400.00, the 2026 policy's premium


async def money(conn: asyncpg.Connection, household_id: str | UUID) -> tuple[int, int, int]:  # type: ignore[type-arg]
    m = await payments.household_money(conn, UUID(str(household_id)), 2026)
    return m.due_fen, m.paid_fen, m.balance_fen


async def quote(conn: asyncpg.Connection, household_id: str | UUID) -> PremiumQuote:  # type: ignore[type-arg]
    return await premium_quote(conn, await actor_of(conn, "staff_a"), UUID(str(household_id)), 2026, OPEN)


async def resident_view(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household_id: str | UUID,
) -> residents.HouseholdCoverage:
    person = await conn.fetchval(
        "SELECT person_id FROM memberships WHERE household_id = $1 AND left_at IS NULL LIMIT 1", UUID(str(household_id))
    )
    return await residents.coverage(conn, Actor.resident(person, UUID(str(household_id))), 2026, OPEN)


def adds_up(view: residents.HouseholdCoverage) -> None:
    """The resident's money picture: premium − subsidy − paid = balance, the same as the totals
    beside it, and the members' lines sum to it."""
    m = view.money
    assert m.premium_fen - m.subsidy_fen - m.paid_fen == m.balance_fen
    assert m.balance_fen == view.balance_fen - view.refund_due_fen
    assert m.premium_fen - m.subsidy_fen == view.due_fen
    assert sum(x.premium_fen for x in view.members) == m.premium_fen
    assert sum(x.subsidy_fen for x in view.members) == m.subsidy_fen


async def test_a_premium_paid_in_a_follows_the_person_to_b_with_no_credit_left_in_a(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    a = world.household["id"]
    receipt = await pay(conn, world, amount_fen=2 * PREMIUM)  # ¥800 in A: both members paid
    assert await money(conn, a) == (80000, 80000, 0)
    target = await target_household(client)
    b = target["id"]
    spouse = await move(conn, world, target)
    # A owes for the head alone, paid; no credit, no refund due for the spouse who left.
    assert await money(conn, a) == (40000, 40000, 0)
    # B owes for the spouse, whose premium was paid in A: nothing owed.
    assert await money(conn, b) == (40000, 40000, 0)
    in_b = await quote(conn, b)
    line = next(m for m in in_b.members if m.person_id == spouse)
    assert (line.due_fen, line.paid_fen, line.balance_fen) == (40000, 40000, 0)
    assert (in_b.due_fen, in_b.paid_fen, in_b.balance_fen) == (40000, 40000, 0)
    in_a = await quote(conn, a)
    assert (in_a.due_fen, in_a.paid_fen, in_a.balance_fen) == (40000, 40000, 0)
    # The resident views: nothing owed, nothing to refund, on either side; the receipt that paid
    # the spouse is A's, as issued.
    view_b = await resident_view(conn, b)
    adds_up(view_b)
    assert (view_b.money.premium_fen, view_b.money.paid_fen, view_b.money.balance_fen) == (40000, 40000, 0)
    assert (view_b.balance_fen, view_b.refund_due_fen) == (0, 0)
    spouse_line = next(m for m in view_b.members if m.person_id == spouse)
    assert (spouse_line.paid_fen, spouse_line.balance_fen, spouse_line.last_receipt_no) == (40000, 0, "A00000001")
    view_a = await resident_view(conn, a)
    adds_up(view_a)
    assert (view_a.money.paid_fen, view_a.balance_fen, view_a.refund_due_fen) == (40000, 0, 0)
    assert str(receipt.payment.household_id) == a


async def test_half_paid_in_a_then_moved_b_owes_the_rest_and_a_payment_of_exactly_it_pays(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    a = world.household["id"]
    head, spouse = (UUID(p) for p in world.person_ids)
    await pay(conn, world, person_ids=[spouse], amount_fen=20000)  # ¥200 of the spouse's ¥400, in A
    target = await target_household(client)
    b = target["id"]
    await move(conn, world, target)
    assert await money(conn, b) == (40000, 20000, 20000)
    assert await money(conn, a) == (40000, 0, 40000)  # the head, unpaid; nothing of the spouse's stays
    view_b = await resident_view(conn, b)
    adds_up(view_b)
    assert (view_b.money.paid_fen, view_b.money.balance_fen) == (20000, 20000)
    # In B the rest is asked for, and paying exactly it pays the enrolment.
    receipt = await pay(
        conn, world, receipt_no="A00000002", household_id=UUID(b), person_ids=[spouse], amount_fen=20000
    )
    assert [(x.person_id, x.amount_fen) for x in receipt.allocations] == [(spouse, 20000)]
    assert receipt.enrollments_paid == [(await enrolment_of(conn, spouse))["id"]]
    assert (receipt.household.due_fen, receipt.household.paid_fen, receipt.household.balance_fen) == (40000, 40000, 0)
    assert (await enrolment_of(conn, spouse))["status"] == "paid"
    assert await money(conn, b) == (40000, 40000, 0)
    assert await money(conn, a) == (40000, 0, 40000)
    in_b = await quote(conn, b)
    assert (in_b.paid_fen, in_b.balance_fen) == (40000, 0)
    adds_up(await resident_view(conn, b))
    assert (await enrolment_of(conn, head))["status"] == "registered"


async def test_paying_more_than_the_rest_in_b_leaves_a_credit_in_b(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    await pay(conn, world, person_ids=[spouse], amount_fen=20000)
    target = await target_household(client)
    b = target["id"]
    await move(conn, world, target)
    receipt = await pay(
        conn, world, receipt_no="A00000002", household_id=UUID(b), person_ids=[spouse], amount_fen=30000
    )
    assert [(x.person_id, x.amount_fen) for x in receipt.allocations] == [(spouse, 20000)]
    assert (receipt.household.paid_fen, receipt.household.balance_fen) == (50000, -10000)
    assert await money(conn, b) == (40000, 50000, -10000)  # ¥100 over: a credit of B's, to be refunded
    assert await money(conn, a) == (40000, 0, 40000)
    view_b = await resident_view(conn, b)
    adds_up(view_b)
    assert (view_b.balance_fen, view_b.refund_due_fen) == (0, 10000)


async def test_a_credit_left_over_in_a_stays_with_a(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Money over what was owed is the paying household's, on its receipt: it does not follow anyone."""
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    await pay(conn, world, person_ids=[spouse], amount_fen=50000)  # ¥100 over the spouse's premium
    target = await target_household(client)
    b = target["id"]
    await move(conn, world, target)
    assert await money(conn, b) == (40000, 40000, 0)
    assert await money(conn, a) == (40000, 10000, 30000)


async def test_a_refund_of_a_moved_persons_payment_takes_only_what_pays_no_live_enrolment(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """A refund takes what the payment left over (the paying household's credit), never what pays an
    enrolment in force, wherever it lives now: ¥150 of a ¥500 payment whose ¥400 pays the spouse's
    enrolment, now in B, is refused; the ¥100 left over is refunded and B's premium stays paid."""
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    receipt = await pay(conn, world, person_ids=[spouse], amount_fen=50000)
    target = await target_household(client)
    b = target["id"]
    await move(conn, world, target)
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    day = date(2025, 10, 9)
    reason = (await conn.fetchval("SELECT rules->'refundable_reasons'->>0 FROM policy_versions LIMIT 1")) or "other"

    async def refund(fen: int) -> None:
        async with conn.transaction():
            asked = AdjustmentRequest(kind="refund", reason=reason, amount_fen=fen)
            request = await adjustments.request_adjustment(conn, staff, receipt.payment.id, asked, day)
            await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), day)

    with pytest.raises(InvalidInput) as refused:
        await refund(15000)
    assert refused.value.extra["errors"][0]["field"] == "amount_fen"
    await refund(10000)
    assert await money(conn, a) == (40000, 0, 40000)
    assert await money(conn, b) == (40000, 40000, 0)
    assert (await enrolment_of(conn, spouse))["status"] == "paid"


async def test_a_void_of_a_payment_in_a_unpays_the_enrolment_it_paid_now_in_b(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    receipt = await pay(conn, world, person_ids=[spouse], amount_fen=40000)
    target = await target_household(client)
    b = target["id"]
    await move(conn, world, target)
    assert (await enrolment_of(conn, spouse))["status"] == "paid"
    staff, reviewer = await actor_of(conn, "staff_a"), await actor_of(conn, "reviewer_a")
    day = date(2025, 10, 8)
    async with conn.transaction():
        request = await adjustments.request_adjustment(
            conn, staff, receipt.payment.id, AdjustmentRequest(kind="void", reason="wrong amount"), day
        )
        await adjustments.decide_adjustment(conn, reviewer, request.id, Decision(approve=True), day)
    assert (await enrolment_of(conn, spouse))["status"] == "registered"
    assert await money(conn, b) == (40000, 0, 40000)
    assert await money(conn, a) == (40000, 0, 40000)


async def cancel_as_duplicate(conn: asyncpg.Connection, enrolment_id: UUID) -> None:  # type: ignore[type-arg]
    await conn.execute(
        "UPDATE enrollments SET status = 'cancelled', cancel_reason = 'duplicate', cancelled_at = now() WHERE id = $1",
        enrolment_id,
    )


async def enrol_again(conn: asyncpg.Connection, person: UUID, household: UUID, village: str) -> None:  # type: ignore[type-arg]
    """A new enrolment of the person for 2026, registered, at the full premium."""
    await conn.execute(
        "INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, registered_on,"
        " premium_fen) VALUES (gen_random_uuid(), $1, $2, $3, 2026, 'registered', $4, $5)",
        person,
        household,
        village,
        OPEN,
        PREMIUM,
    )


async def test_a_new_enrolment_after_a_cancelled_one_does_not_inherit_its_money(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Allocations name the enrolment they paid: money for an enrolment since cancelled stays with the
    household that paid (a refund due there), never paying a later enrolment of the same person."""
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    await pay(conn, world, person_ids=[spouse], amount_fen=40000)
    old = await enrolment_of(conn, spouse)
    await cancel_as_duplicate(conn, old["id"])
    await enrol_again(conn, spouse, UUID(a), old["village_code"])
    # The head and the new enrolment owe ¥800; the ¥400 paid for the cancelled one is A's, to refund.
    assert await money(conn, a) == (80000, 40000, 40000)
    line = next(m for m in (await quote(conn, a)).members if m.person_id == spouse)
    assert (line.paid_fen, line.balance_fen) == (0, 40000)


async def test_a_member_whose_enrolment_was_cancelled_is_shown_what_the_household_paid_for_them(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    """Without a live enrolment, what a member was paid for is what the household's own payments put
    towards them, on the resident's page as in the quote (the page reads it with the members, issue
    20); a new enrolment of theirs starts from nothing."""
    a = world.household["id"]
    spouse = UUID(world.person_ids[1])
    await pay(conn, world, person_ids=[spouse], amount_fen=40000)
    old = await enrolment_of(conn, spouse)
    await cancel_as_duplicate(conn, old["id"])

    async def paid() -> tuple[int, int]:
        shown = next(m for m in (await resident_view(conn, a)).members if m.person_id == spouse)
        quoted = next(m for m in (await quote(conn, a)).members if m.person_id == spouse)
        return shown.paid_fen, quoted.paid_fen

    assert await paid() == (40000, 40000)
    await enrol_again(conn, spouse, UUID(a), old["village_code"])
    assert await paid() == (0, 0)
