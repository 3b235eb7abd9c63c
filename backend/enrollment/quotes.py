"""A household's premium quote for a year: per member the premium, the subsidy eligibility gives
today, what is due and what was paid, in fen; and the household's total as the ledger has it."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec

from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.eligibility import check as eligibility
from backend.enrollment.households import household_row
from backend.errors import NotFound
from backend.policy import service as policies

Q = load_queries("backend.enrollment", "quotes.sql")


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


async def subsidies_for(conn: Connection, person_ids: list[UUID], year: int, on: date) -> dict[UUID, int]:
    """Subsidy per person for the year as eligibility sees it on `on` (lists in force, accepted
    claims; persons without one are left out)."""
    dues = await eligibility.subsidies(conn, person_ids, year, on)
    return {person_id: due.subsidy_fen for person_id, due in dues.items() if due.subsidy_fen}


async def paid_for(conn: Connection, household_id: UUID, year: int) -> dict[UUID, int]:
    """Amount paid per person for the year: what payments that were not voided put towards them."""
    rows = await conn.fetch(Q["allocated_to_persons"], household_id, year)
    return {r["person_id"]: r["amount_fen"] for r in rows}


async def premium_quote(conn: Connection, actor: Actor, household_id: UUID, year: int, today: date) -> PremiumQuote:
    household = await household_row(conn, household_id)
    if household is None or not actor.in_scope(household["village_code"]):
        raise NotFound()
    policy = await policies.require_in_force(conn, year, today)
    rows = await conn.fetch(Q["quote_members"], household_id, year)
    subsidies = await subsidies_for(conn, [r["person_id"] for r in rows], year, today)
    paid = await paid_for(conn, household_id, year)
    money = await conn.fetchrow(Q["household_money"], household_id, year)
    assert money is not None
    members = []
    for r in rows:
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
            )
        )
    await record(conn, actor, "read", "premium_quote", household_id, division_code=household["village_code"])
    enrolled = [m for m in members if m.enrollment_id is not None]
    return PremiumQuote(
        household_id=household_id,
        coverage_year=year,
        policy_version=policy.version,
        members=members,
        # The household owes for its enrolled members only (SPEC §2); the others are quoted for
        # information. Paid comes from the ledger (payments − voids − refunds), so money not yet
        # allocated to anyone (an over-payment) shows as a refund due.
        premium_fen=sum(m.premium_fen for m in enrolled),
        subsidy_fen=sum(m.subsidy_fen for m in enrolled),
        due_fen=(due_total := sum(m.due_fen for m in enrolled)),
        paid_fen=(paid_total := money["payments_fen"] - money["voided_fen"] - money["refunded_fen"]),
        balance_fen=due_total - paid_total,
    )
