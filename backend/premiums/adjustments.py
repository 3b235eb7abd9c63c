"""Voids and refunds of payments: asked for by a collector, approved or rejected by another reviewer,
kept as append-only events."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.eligibility import check as eligibility
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7
from backend.policy import service as policies
from backend.premiums.amounts import Fen
from backend.premiums.payments import get_payment

Q = load_queries("backend.premiums")


class AdjustmentRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["void", "refund"]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    amount_fen: Fen | None = None  # refunds: part or all; voids: always the whole payment
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Decision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    approve: bool
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class PaymentEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    payment_id: UUID
    kind: str
    request_id: UUID | None
    amount_fen: int | None
    reason: str
    actor_id: UUID
    at: datetime
    business_date: date


class PaymentEvents(msgspec.Struct, frozen=True):
    items: list[PaymentEvent]


class NotAdjustable(Conflict):
    """This payment cannot be adjusted that way"""

    code = "not_adjustable"


def _event(row: asyncpg.Record) -> PaymentEvent:
    return msgspec.convert({k: row[k] for k in PaymentEvent.__struct_fields__}, PaymentEvent)


async def _state(conn: Connection, payment_id: UUID) -> tuple[bool, int, bool]:
    """(voided, refunded_fen, has a request awaiting a decision), read from the ledger."""
    row = await conn.fetchrow(Q["payment_state"], payment_id)
    assert row is not None
    return row["voided"], row["refunded_fen"], row["pending"]


async def _in_hand(conn: Connection, collector_id: UUID, day: date, method: str, amount_fen: int) -> bool:
    """Whether a void finds its payment's money still with the collector: any payment but cash; cash
    while the day's cash not voided, less what was remitted for the day, covers it."""
    return method != "cash" or await conn.fetchval(Q["cash_in_hand"], collector_id, day) >= amount_fen


async def _refundable(conn: Connection, year: int, unrefunded_fen: int, payment_id: UUID, today: date) -> int:
    """What of a payment a refund may take: what it left over and the shares of enrolments since
    cancelled, and of a live enrolment's share only what its person's subsidy today leaves unowed
    (a subsidy recognised after payment: the quote shows it as a refund due). Never the money that
    keeps an enrolment in force: to refund that, cancel the enrolment first. Under the payment's
    lock, one request pending at a time; a cancelled enrolment never becomes live again."""
    live = await conn.fetch(Q["refund_live_shares"], payment_id)
    subsidies = await eligibility.subsidies(conn, {r["person_id"] for r in live}, year, today) if live else {}
    kept = 0
    for r in live:
        premium = r["premium_fen"] or 0
        due = subsidies.get(r["person_id"])
        kept += min(r["amount_fen"], premium - min(due.subsidy_fen if due is not None else 0, premium))
    return max(0, unrefunded_fen - kept)


async def request_adjustment(
    conn: Connection, actor: Actor, payment_id: UUID, data: AdjustmentRequest, today: date
) -> PaymentEvent:
    payment = await get_payment(conn, actor, payment_id)
    await conn.execute(Q["lock_payment"], payment_id)
    voided, refunded, pending = await _state(conn, payment_id)
    if voided:
        raise NotAdjustable(_("the payment is voided"))
    if pending:
        raise NotAdjustable(_("a void or refund of this payment awaits a decision"))
    closed = await conn.fetchval(Q["day_closed"], payment.collector_id, payment.remittance_date)
    if data.kind == "void":
        if data.amount_fen is not None:
            raise InvalidInput("amount_fen", _("a void is always of the whole payment"))
        if (
            payment.business_date != today
            or closed
            or refunded
            or not await _in_hand(
                conn, payment.collector_id, payment.remittance_date, payment.method, payment.amount_fen
            )
        ):
            raise NotAdjustable(_("a void is for the same day, before remittance; ask for a refund instead"))
        if await conn.fetchval(Q["payment_confirmed_enrollments"], payment.id):
            raise NotAdjustable(_("an enrolment this payment covers is confirmed; ask for a refund instead"))
        amount = payment.amount_fen
    else:
        policy = await policies.in_force(conn, payment.coverage_year, today)
        refundable = policy.rules.refundable_reasons if policy else ()
        if data.reason not in refundable:
            raise InvalidInput(
                "reason", _("is not a refundable case under the policy ({cases})", cases=", ".join(refundable))
            )
        most = await _refundable(conn, payment.coverage_year, payment.amount_fen - refunded, payment_id, today)
        amount = most if data.amount_fen is None else data.amount_fen
        if not 0 < amount <= most:
            raise InvalidInput(
                "amount_fen",
                _(
                    "at most {most} fen of this payment can be refunded: the rest pays enrolments in force; "
                    "cancel an enrolment first to refund its share",
                    most=most,
                ),
            )
    reason = data.reason if not data.note else f"{data.reason}: {data.note}"
    row = await conn.fetchrow(
        Q["insert_event"], uuid7(), payment_id, f"{data.kind}_requested", None, amount, reason, actor.id, today
    )
    assert row is not None
    await record(
        conn,
        actor,
        f"request_{data.kind}",
        "payment",
        payment_id,
        division_code=payment.village_code,
        summary={"amount_fen": amount, "reason": data.reason},
    )
    return _event(row)


async def decide_adjustment(
    conn: Connection, actor: Actor, request_id: UUID, data: Decision, today: date
) -> PaymentEvent:
    request = await conn.fetchrow(Q["event"], request_id)
    if (
        request is None
        or not actor.in_scope(request["village_code"])
        or request["kind"] not in ("void_requested", "refund_requested")
    ):
        raise NotFound()
    if request["actor_id"] == actor.id or request["collector_id"] == actor.id:
        raise Forbidden(_("nobody approves their own void or refund"))
    voiding = data.approve and request["kind"] == "void_requested"
    payment = await conn.fetchrow(Q["payment"], request["payment_id"])
    assert payment is not None
    locked: list[asyncpg.Record] = []
    if voiding:
        # The enrolments it paid, wherever they live now (they follow their persons), locked before
        # the collector's lock as a payment locks them. That lock shared (`share_collector`): a day
        # being closed or remitted waits for the decision, but a push of the collector, which holds
        # it shared from its first payment on, does not (nor the decision for the push).
        locked = await conn.fetch(Q["live_enrollments_for_payment"], payment["id"])
    await conn.execute(Q["share_collector"], request["collector_id"])
    await conn.execute(Q["lock_payment"], request["payment_id"])
    if voiding and await conn.fetchval(Q["day_closed"], payment["collector_id"], payment["remittance_date"]):
        raise NotAdjustable(_("the day was closed since the void was asked for; ask for a refund instead"))
    # A remittance holds the collector's lock exclusively: one recorded since the request is seen.
    if voiding and payment["method"] == "cash":
        await conn.execute(Q["lock_cash_day"], payment["collector_id"], payment["remittance_date"])
    if voiding and not await _in_hand(
        conn, payment["collector_id"], payment["remittance_date"], payment["method"], payment["amount_fen"]
    ):
        raise NotAdjustable(_("the cash was remitted since the void was asked for; ask for a refund instead"))
    try:
        row = await conn.fetchrow(
            Q["insert_event"],
            uuid7(),
            request["payment_id"],
            "approved" if data.approve else "rejected",
            request_id,
            None,
            data.note,
            actor.id,
            today,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(_("this request has already been decided")) from exc
    assert row is not None
    if voiding:
        await _undo_enrollments(conn, actor, payment, locked)
    await record(
        conn,
        actor,
        "approve" if data.approve else "reject",
        "payment",
        request["payment_id"],
        division_code=request["village_code"],
        summary={"request": request["kind"], "request_id": str(request_id)},
    )
    return _event(row)


async def _undo_enrollments(
    conn: Connection, actor: Actor, payment: asyncpg.Record, locked: list[asyncpg.Record]
) -> None:
    """A voided payment no longer pays anyone: enrolments it alone paid (of `locked`, the live
    enrolments it paid, locked) go back to `registered`; what other payments put towards them counts,
    whichever household paid."""
    covered = {
        r["enrollment_id"]: r["amount_fen"]
        for r in await conn.fetch(Q["allocated_to_enrollments"], [r["id"] for r in locked])
    }
    for row in locked:
        owed = (row["premium_fen"] or 0) - row["subsidy_fen"]
        if row["status"] == "paid" and covered.get(row["id"], 0) < owed:
            await conn.execute(Q["unpay_enrollment"], row["id"])
            await record(
                conn,
                actor,
                "unpaid",
                "enrollment",
                row["id"],
                division_code=row["village_code"],
                summary={"from": "paid", "to": "registered", "payment_id": str(payment["id"])},
            )


async def pending_requests(conn: Connection, actor: Actor) -> PaymentEvents:
    return PaymentEvents(items=[_event(r) for r in await conn.fetch(Q["pending_requests"], *scope_args(actor))])


async def payment_events(conn: Connection, actor: Actor, payment_id: UUID) -> PaymentEvents:
    await get_payment(conn, actor, payment_id)
    return PaymentEvents(items=[_event(r) for r in await conn.fetch(Q["payment_events"], payment_id)])
