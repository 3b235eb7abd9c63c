"""A household's premium quote for a year: per member the premium, the subsidy eligibility gives
today, what is due and what was paid, in fen; the cover a payment today would buy, in words (and
plainly when it buys none this year); and the household's total as the ledger has it."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec

from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.eligibility import check as eligibility
from backend.enrollment import enrollments as enrolment_service
from backend.enrollment.explain import day
from backend.enrollment.households import household_row
from backend.errors import NotFound
from backend.i18n import _, ngettext
from backend.policy import service as policies
from mobile_sync_protocol.rules.coverage import CoverageDecision

Q = load_queries("backend.enrollment", "quotes.sql")


class HouseholdTotals(msgspec.Struct, frozen=True, kw_only=True):
    """A household's year over the enrolments live in it now: premium − subsidy − paid."""

    premium_fen: int
    subsidy_fen: int
    paid_fen: int


async def household_totals(conn: Connection, household_id: UUID, year: int) -> HouseholdTotals:
    """The money follows the enrolment (an enrolment is the person's, PROTOCOL.md §3): what is paid
    for an enrolment is what payments not voided allocated to it, whichever household's payment it
    was; a household's paid is that over the enrolments live in it now, and what its own payments
    left over (a credit, money for an enrolment since cancelled), net of refunds (`premium_money`)."""
    row = await conn.fetchrow(Q["household_money"], household_id, year)
    assert row is not None
    return HouseholdTotals(premium_fen=row["premium_fen"], subsidy_fen=row["subsidy_fen"], paid_fen=row["paid_fen"])


class MemberQuote(msgspec.Struct, frozen=True, kw_only=True):
    person_id: UUID
    name: str
    relation: str
    enrollment_id: UUID | None
    status: str | None
    premium_fen: int
    subsidy_fen: int
    due_fen: int
    paid_fen: int
    balance_fen: int  # > 0 still owed, < 0 to be refunded
    # For a member not yet funded (unpaid or not enrolled): the cover a payment today would buy.
    # Reason as the rules give it (`no_cover_this_year`: none before the year ends); the start, and
    # the same in the reader's words. None for a member already paid, subsidised or confirmed.
    cover_reason_if_paid_today: str | None = None
    cover_start_if_paid_today: date | None = None
    cover_if_paid_today: str | None = None


class PremiumQuote(msgspec.Struct, frozen=True, kw_only=True):
    household_id: UUID
    coverage_year: int
    policy_version: int
    members: list[MemberQuote]
    premium_fen: int
    subsidy_fen: int
    due_fen: int
    paid_fen: int
    balance_fen: int
    # Members a payment today would buy no cover this year, and that in words naming the next year.
    no_cover_this_year: list[UUID] = []
    notice: str | None = None


async def subsidies_for(conn: Connection, person_ids: list[UUID], year: int, on: date) -> dict[UUID, int]:
    """Subsidy per person for the year as eligibility sees it on `on` (lists in force, accepted
    claims; persons without one are left out)."""
    dues = await eligibility.subsidies(conn, person_ids, year, on)
    return {person_id: due.subsidy_fen for person_id, due in dues.items() if due.subsidy_fen}


async def paid_for(conn: Connection, household_id: UUID, year: int) -> dict[UUID, int]:
    """Amount paid per current member of the household for the year (members paid nothing are left
    out): what payments not voided put towards the member's live enrolment, whichever household paid
    (the money follows the enrolment); for a member without one, what this household's payments put
    towards them."""
    rows = await conn.fetch(Q["allocated_to_members"], household_id, year)
    return {r["person_id"]: r["amount_fen"] for r in rows}


async def premium_quote(conn: Connection, actor: Actor, household_id: UUID, year: int, today: date) -> PremiumQuote:
    household = await household_row(conn, household_id)
    if household is None or not actor.in_scope(household["village_code"]):
        raise NotFound()
    policy = await policies.require_in_force(conn, year, today)
    rows = await conn.fetch(Q["quote_members"], household_id, year)
    subsidies = await subsidies_for(conn, [r["person_id"] for r in rows], year, today)
    paid = await paid_for(conn, household_id, year)
    money = await household_totals(conn, household_id, year)
    unfunded = [r["person_id"] for r in rows if r["status"] in (None, "registered")]
    inputs = await enrolment_service.coverage_inputs(conn, [(p, year) for p in unfunded], today)
    members = []
    uncovered: list[UUID] = []
    for r in rows:
        cover = None
        if r["person_id"] in unfunded:
            cover = enrolment_service.cover_if_funded(r["person_id"], year, today, inputs)
            if cover.coverage.start is None:
                uncovered.append(r["person_id"])
        premium = r["premium_fen"] if r["premium_fen"] is not None else policy.premium_fen
        # Today's eligibility, also for enrolments already paid: a list version that changed the subsidy
        # after payment shows as a balance or a refund due, never as a silent change of the enrolment.
        subsidy = min(subsidies.get(r["person_id"], 0), premium)
        due = premium - subsidy
        paid_fen = paid.get(r["person_id"], 0)
        members.append(
            MemberQuote(
                person_id=r["person_id"],
                name=r["name"],
                relation=r["relation"],
                enrollment_id=r["enrollment_id"],
                status=r["status"],
                premium_fen=premium,
                subsidy_fen=subsidy,
                due_fen=due,
                paid_fen=paid_fen,
                balance_fen=due - paid_fen,
                cover_reason_if_paid_today=None if cover is None else cover.coverage.reason_code,
                cover_start_if_paid_today=None if cover is None else cover.coverage.start,
                cover_if_paid_today=None if cover is None else _cover_words(cover, today),
            )
        )
    await record(conn, actor, "read", "premium_quote", household_id, division_code=household["village_code"])
    # The household owes for its members' enrolments that live in it (an enrolment of a past year
    # stays in the household it was made in when its person moves on).
    here = {r["person_id"] for r in rows if r["household_id"] == household_id}
    enrolled = [m for m in members if m.enrollment_id is not None and m.person_id in here]
    return PremiumQuote(
        household_id=household_id,
        coverage_year=year,
        policy_version=policy.version,
        members=members,
        # The household owes for its enrolled members only (SPEC §2); the others are quoted for
        # information. Paid is what is paid for its live enrolments, whichever household paid (the
        # money follows the enrolment), and what its own payments left over (net of voids and
        # refunds), so money not allocated to anyone (an over-payment) shows as a refund due.
        premium_fen=sum(m.premium_fen for m in enrolled),
        subsidy_fen=sum(m.subsidy_fen for m in enrolled),
        due_fen=(due_total := sum(m.due_fen for m in enrolled)),
        paid_fen=(paid_total := money.paid_fen),
        balance_fen=due_total - paid_total,
        no_cover_this_year=uncovered,
        notice=None if not uncovered else _notice(len(uncovered), year, today),
    )


def _cover_words(cover: CoverageDecision, today: date) -> str:
    """What a payment today would buy, in the reader's words."""
    c, facts = cover.coverage, cover.facts
    if c.start is None or c.end is None:
        return _(
            "Paid today ({date}), the cover would start on {start}, after {year} ends: no cover in {year}. "
            "For cover in {next_year}, enrol for {next_year}.",
            date=day(today),
            start=day(facts.would_start) if facts.would_start else "?",
            year=c.coverage_year,
            next_year=c.coverage_year + 1,
        )
    return _("Paid today ({date}), covered from {start} to {end}.", date=day(today), start=day(c.start), end=day(c.end))


def _notice(n: int, year: int, today: date) -> str:
    return ngettext(
        "Paid today ({date}), the premium for {year} buys {n} member no cover this year: the cover would start "
        "only after {year} ends. Paying still counts as a year insured (no gap before {next_year}); for cover in "
        "{next_year}, enrol for {next_year}. A payment for them needs acknowledge_no_cover.",
        "Paid today ({date}), the premium for {year} buys {n} members no cover this year: the cover would start "
        "only after {year} ends. Paying still counts as a year insured (no gap before {next_year}); for cover in "
        "{next_year}, enrol for {next_year}. A payment for them needs acknowledge_no_cover.",
        n,
        date=day(today),
        year=year,
        next_year=year + 1,
    )
