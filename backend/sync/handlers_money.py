"""Push handlers for money: a payment is recorded exactly once, or kept aside for a reviewer
(quarantined), never dropped; a void becomes a void request for another reviewer to approve."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor
from backend.audit import service as audit
from backend.clock import local_date
from backend.db import Connection, load_queries
from backend.errors import DomainError, InvalidInput
from backend.i18n import _
from backend.premiums import adjustments as premium_adjustments
from backend.premiums import payments as premium_payments
from backend.premiums.payments import CLOCK_AHEAD, CLOCK_TOO_OLD
from backend.sync.conflicts import service as conflicts
from backend.sync.context import Context, Quarantine, failure_text, savepoint
from backend.sync.handlers_households import known_household
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")


def _payment_hash_of_row(row: asyncpg.Record) -> bytes:
    as_reported = m.PaymentRecord(
        seq=1,
        mutation_id=row["id"],
        payment_id=row["id"],
        household_id=row["household_id"],
        coverage_year=row["coverage_year"],
        person_ids=list(row["person_ids"]),
        amount_fen=row["amount_fen"],
        method=row["method"],
        kind=row["kind"],
        back_years=list(row["back_years"]),
        receipt_no=row["receipt_no"],
        collected_at=row["collected_at"],
        channel_ref=row["channel_ref"],
    )
    return m.payment_content_hash(as_reported)


class Reported(msgspec.Struct, frozen=True):
    """What the server held of a payment id when a push's chunk began (`reported_before`)."""

    recorded: asyncpg.Record | None
    held: asyncpg.Record | None


async def reported_before(conn: Connection, payment_ids: list[UUID]) -> dict[UUID, Reported]:
    """What `earlier_report` reads, for many payment ids in two round trips. Only for an id no other
    mutation of the push names: nothing but its own report can change it before its turn (another
    tablet's may, as between earlier_report's read and the insert; the insert's unique key decides)."""
    recorded = await premium_payments.get_rows(conn, payment_ids)
    held = {r["payment_id"]: r for r in await conn.fetch(Q["quarantined_payments"], payment_ids)}
    return {x: Reported(recorded.get(x), held.get(x)) for x in payment_ids}


async def earlier_report(
    conn: Connection, mu: m.PaymentRecord, content: bytes, known: Reported | None = None
) -> m.Answer | None:
    """The answer when this payment id was reported before: the same facts are a duplicate; other
    facts under the same id are kept aside, never applied over the first. `known`: read already."""
    recorded = known.recorded if known is not None else await premium_payments.get_row(conn, mu.payment_id)
    if recorded is not None:
        if _payment_hash_of_row(recorded) == content:
            return m.Answer(seq=None, status="duplicate", code="payment_already_recorded")
        raise Quarantine("payment_id_reused", _("another payment was recorded under this id"), content)
    held = known.held if known is not None else await conn.fetchrow(Q["quarantined_payment"], mu.payment_id)
    if held is not None:
        if held["content_hash"] == content:
            return m.Answer(seq=None, status="duplicate", code="payment_already_quarantined", quarantine_id=held["id"])
        raise Quarantine("payment_id_reused", _("another payment was reported under this id"), content)
    return None


async def payment_record(conn: Connection, actor: Actor, mu: m.PaymentRecord, ctx: Context) -> m.Answer:
    content = m.payment_content_hash(mu)
    known = None if ctx.payments is None else ctx.payments.pop(mu.payment_id, None)
    earlier = await earlier_report(conn, mu, content, known)
    if earlier is not None:
        return earlier
    household = known_household(ctx, mu.household_id) or await conn.fetchrow(Q["household_state"], mu.household_id)
    if household is None and await conflicts.held_household(conn, mu.household_id) is not None:
        # Never re-pointed to the household it may duplicate: a reviewer settles both.
        raise Quarantine("household_held", _("the household is held as a possible duplicate"), content)
    if household is None or not actor.in_scope(household["village_code"]):
        raise Quarantine("out_of_scope", _("no such household in the collector's scope"), content)
    if household["status"] != "active":
        raise Quarantine("household_dissolved", _("the household is dissolved"), content)
    try:
        data = _payment_in(mu)
    except msgspec.ValidationError as exc:
        raise Quarantine("malformed_payment", failure_text(exc), content) from exc
    held = audit.held(conn)
    mark = held.mark() if held is not None else 0
    try:
        async with savepoint(conn, ctx):
            receipt = await premium_payments.record_payment(
                conn,
                actor,
                data,
                timezone=ctx.timezone,
                code_key=ctx.code_key,
                now=ctx.now,
                registered_offline=_registered_offline(conn, actor, mu, ctx),
            )
    except premium_payments.PaymentAlreadyRecorded:
        if ctx.fast:
            raise  # no savepoint of its own: the chunk is undone and this payment answered alone
        if held is not None:
            held.undo(mark)  # the savepoint rolled back whatever it had recorded
        # Another tablet reported the same payment a moment ago, and it has committed now.
        earlier = await earlier_report(conn, mu, content)
        assert earlier is not None
        return earlier
    except premium_payments.NoCoverThisYear as exc:
        # Money collected offline is never refused: a reviewer settles it with the resident.
        raise Quarantine("no_cover_this_year", exc.detail, content) from exc
    except premium_payments.CollectedBeforeRegistration as exc:
        raise Quarantine("collected_before_registration", exc.detail, content) from exc
    except premium_payments.ReceiptNumberUsed as exc:
        raise Quarantine("receipt_clash", _("the receipt number is already used"), content) from exc
    except premium_payments.ChannelReferenceUsed as exc:
        raise Quarantine(
            "channel_ref_clash", _("a payment with this transaction reference is recorded"), content
        ) from exc
    except InvalidInput as exc:
        field = (exc.extra.get("errors") or [{}])[0].get("field", "")
        reason = "receipt_not_issued" if field == "receipt_no" else "not_applicable"
        raise Quarantine(reason, exc.detail, content) from exc
    except DomainError as exc:
        raise Quarantine("not_applicable", f"{exc.code}: {exc.detail or _(exc.title())}", content) from exc
    return _applied(mu, receipt)


def _applied(mu: m.PaymentRecord, receipt: premium_payments.Receipt) -> m.Answer:
    money = receipt.household
    differs = mu.due_fen is not None and mu.due_fen != money.due_fen
    return m.Answer(
        seq=None,
        status="applied_with_conflict" if differs else "applied",
        code="due_differs" if differs else None,
        due_fen=money.due_fen,
        paid_fen=money.paid_fen,
        balance_fen=money.balance_fen,
    )


def _payment_in(mu: m.PaymentRecord) -> premium_payments.PaymentIn:
    return msgspec.convert(
        {
            "id": mu.payment_id,
            "household_id": mu.household_id,
            "coverage_year": mu.coverage_year,
            "person_ids": mu.person_ids,
            "amount_fen": mu.amount_fen,
            "method": mu.method,
            "kind": mu.kind,
            "back_years": mu.back_years,
            "receipt_no": mu.receipt_no,
            "collected_at": mu.collected_at,
            "channel_ref": mu.channel_ref,
            "acknowledge_no_cover": mu.acknowledge_no_cover,
        },
        premium_payments.PaymentIn,
    )


def _registered_offline(
    conn: Connection, actor: Actor, mu: m.PaymentRecord, ctx: Context
) -> premium_payments.OfflineRegistrations:
    async def registered_offline(registered_now: Mapping[UUID, bool]) -> dict[UUID, date | None]:
        """The tablet's own registration counts: its clock then, when plausible; in this push, or
        with no time, the order of its work (the enrolment came first) stands for it. Registered in
        this push (this transaction) is known without a read: `registered_by_tablet` answers None."""
        found: dict[UUID, date | None] = {p: None for p, now in registered_now.items() if now}
        earlier = [p for p, now in registered_now.items() if not now]
        if not earlier:
            return found
        rows = await conn.fetch(Q["registered_by_tablet"], mu.household_id, earlier, mu.coverage_year, actor.device_id)
        for r in rows:
            at = r["device_time"]
            plausible = at is not None and not r["this_push"]
            plausible = plausible and timedelta(0) <= r["registered_on"] - local_date(at, ctx.timezone) <= CLOCK_TOO_OLD
            found[r["person_id"]] = local_date(at, ctx.timezone) if plausible else None
        return found

    return registered_offline


def settable(actor: Actor, mu: m.PaymentRecord, ctx: Context, new_households: Mapping[UUID, str] | None = None) -> bool:
    """Whether a payment may join a set (`payment_record_set`) as the push reads it: reported for
    the first time (`Context.payments`), a premium of a household the push holds, active and in scope,
    or of one of `new_households` (held back to be written before the set: household → village).
    Whatever else could refuse it, the set's statements find, and it is then applied alone."""
    known = None if ctx.payments is None else ctx.payments.get(mu.payment_id)
    household = known_household(ctx, mu.household_id)
    if household is None and new_households and mu.household_id in new_households:
        household = {"status": "active", "village_code": new_households[mu.household_id]}
    return (
        ctx.device_status == "active"
        and known is not None
        and known.recorded is None
        and known.held is None
        and mu.kind == "premium"
        and not mu.back_years
        and household is not None
        and household["status"] == "active"
        and actor.in_scope(household["village_code"])
    )


async def payment_record_set(
    conn: Connection, actor: Actor, mutations: list[m.PaymentRecord], ctx: Context
) -> list[m.Answer]:
    """`settable` payments of one year, households, receipt numbers and references apart, recorded
    as one set (`premium_payments.record_payments`), each answered as `payment_record` answers it.
    Only on the push's fast path: any refusal raises, and the push applies them one by one."""
    assert ctx.fast
    receipts = await premium_payments.record_payments(
        conn,
        actor,
        [(_payment_in(mu), _registered_offline(conn, actor, mu, ctx)) for mu in mutations],
        timezone=ctx.timezone,
        code_key=ctx.code_key,
        now=ctx.now,
    )
    return [_applied(mu, receipt) for mu, receipt in zip(mutations, receipts, strict=True)]


def _void_day(mu: m.PaymentVoid, ctx: Context) -> date:
    """The local day the void was made on the tablet, when its clock is plausible; else today."""
    if mu.device_time is None or mu.device_time.tzinfo is None:
        return ctx.today
    if mu.device_time - ctx.now > CLOCK_AHEAD or ctx.now - mu.device_time > CLOCK_TOO_OLD:
        return ctx.today
    return local_date(mu.device_time, ctx.timezone)


async def payment_void(conn: Connection, actor: Actor, mu: m.PaymentVoid, ctx: Context) -> m.Answer:
    recorded = await premium_payments.get_row(conn, mu.payment_id)
    if recorded is None or not actor.in_scope(recorded["village_code"]):
        # Another township's payment, recorded or held, is answered as one nobody knows: the answer
        # must not tell that it exists.
        held = await conn.fetchrow(Q["quarantined_payment"], mu.payment_id)
        mine = held is not None and actor.in_scope(held["township_code"])
        raise Quarantine("payment_quarantined" if mine else "unknown_payment", _("the payment to void is not recorded"))
    try:
        data = msgspec.convert(
            {"kind": "void", "reason": mu.reason, "note": mu.note}, premium_adjustments.AdjustmentRequest
        )
        async with savepoint(conn, ctx):
            event = await premium_adjustments.request_adjustment(conn, actor, mu.payment_id, data, _void_day(mu, ctx))
    except msgspec.ValidationError as exc:
        raise Quarantine("malformed_void", failure_text(exc)) from exc
    except DomainError as exc:
        raise Quarantine("void_not_possible", f"{exc.code}: {exc.detail or _(exc.title())}") from exc
    return m.Answer(seq=None, status="applied", void_request_id=event.id)
