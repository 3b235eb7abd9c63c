"""Receipt blocks, payments, voids and refunds, remittance.

Money is a fact: a payment row is written once and never changed; voids and refunds are events
that a reviewer approves; every figure (paid, balance, cash expected) is derived from them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import fields
from backend.actor import Actor, Role, scope_args
from backend.audit import service as audit
from backend.audit.service import record
from backend.clock import local_date
from backend.db import Connection, from_row, load_queries
from backend.enrollment import enrollments as enrolment_service
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.ids import uuid7
from backend.policy import service as policies

Q = load_queries("backend.premiums")
LEDGER_Q = load_queries("backend.enrollment")  # the ledger reads the premium quote shares

Fen = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
Year = Annotated[int, msgspec.Meta(ge=2000, le=2100)]
ReceiptNo = Annotated[str, msgspec.Meta(pattern=fields.RECEIPT_NO)]

# A tablet's clock is information: a reported time ahead of the server by more than this, or older
# than the offline limit, is flagged (SPEC §2).
CLOCK_AHEAD = timedelta(minutes=10)
CLOCK_TOO_OLD = timedelta(days=45)


# Receipt blocks ---------------------------------------------------------------------------------


class BlockIssue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    collector_id: UUID
    device_id: UUID | None = None  # for offline work: only this tablet may use the numbers
    # Letters only, and one width per prefix: "A" + 8 digits and "A1" + 7 digits would collide.
    prefix: Annotated[str, msgspec.Meta(pattern=fields.RECEIPT_PREFIX)] = ""
    first_no: Annotated[int, msgspec.Meta(ge=0)]
    last_no: Annotated[int, msgspec.Meta(ge=0)]
    digits: Annotated[int, msgspec.Meta(ge=4, le=12)] = 8
    refill_of: UUID | None = None


class Block(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    township_code: str
    prefix: str
    first_no: int
    last_no: int
    digits: int
    collector_id: UUID
    device_id: UUID | None
    refill_of: UUID | None
    issued_by: UUID
    issued_at: datetime

    def number(self, n: int) -> str:
        return f"{self.prefix}{n:0{self.digits}d}"

    def parse(self, receipt_no: str) -> int | None:
        """The sequence number of `receipt_no` if it belongs to this block."""
        if not receipt_no.startswith(self.prefix):
            return None
        rest = receipt_no[len(self.prefix) :]
        if len(rest) != self.digits or not rest.isdigit():
            return None
        n = int(rest)
        return n if self.first_no <= n <= self.last_no else None


class BlockBalance(msgspec.Struct, frozen=True, kw_only=True):
    block: Block
    issued: int
    used: int
    voided: int
    retired: int
    open: int  # issued = used + voided + retired + open


class BlockBalances(msgspec.Struct, frozen=True):
    items: list[BlockBalance]


class Retired(msgspec.Struct, frozen=True, kw_only=True):
    block_id: UUID
    ranges: list[tuple[int, int]]
    numbers: int


def _block(row: asyncpg.Record) -> Block:
    return msgspec.convert({k: row[k] for k in Block.__struct_fields__}, Block)


async def issue_block(conn: Connection, actor: Actor, data: BlockIssue) -> Block:
    if data.last_no < data.first_no:
        raise InvalidInput("last_no", "must not be below first_no")
    if data.last_no - data.first_no >= 100_000:
        raise InvalidInput("last_no", "a block holds at most 100000 numbers")
    if data.last_no >= 10**data.digits:
        raise InvalidInput("last_no", f"does not fit in {data.digits} digits")
    collector = await conn.fetchrow(Q["collector"], data.collector_id)
    if collector is None or not actor.in_scope(collector["division_code"]):
        raise InvalidInput("collector_id", "no such collector in your scope")
    if collector["role"] not in (Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER):
        raise InvalidInput("collector_id", "receipts are issued to township staff")
    if data.device_id is not None:
        owner = await conn.fetchval("SELECT owner_id FROM devices WHERE id = $1 AND status = 'active'", data.device_id)
        if owner != data.collector_id:
            raise InvalidInput("device_id", "must be an active tablet of the collector")
    # Blocks of one prefix never overlap: checked under a lock per prefix.
    await conn.execute(Q["lock_prefix"], data.prefix)
    widths = {r["digits"] for r in await conn.fetch(Q["prefix_widths"], data.prefix)}
    if widths and widths != {data.digits}:
        raise InvalidInput("digits", f"blocks of prefix {data.prefix!r} have {widths.pop()} digits")
    if await conn.fetch(Q["overlapping_blocks"], data.prefix, data.first_no, data.last_no):
        raise Conflict("the range overlaps a block already issued", code_detail="receipt_range_overlaps")
    row = await conn.fetchrow(
        Q["insert_block"], uuid7(), collector["division_code"], data.prefix, data.first_no, data.last_no,
        data.digits, data.collector_id, data.device_id, data.refill_of, actor.id,
    )  # fmt: skip
    assert row is not None
    block = _block(row)
    await record(
        conn, actor, "issue", "receipt_block", block.id, division_code=block.township_code,
        summary={"prefix": block.prefix, "first_no": block.first_no, "last_no": block.last_no,
                 "collector_id": str(block.collector_id)},
    )  # fmt: skip
    return block


async def block_balances(conn: Connection, actor: Actor, collector_id: UUID | None) -> BlockBalances:
    items = []
    for row in await conn.fetch(Q["block_balances"], *scope_args(actor), collector_id):
        issued, used, voided, retired = row["issued"], row["used"], row["voided"], row["retired"]
        items.append(
            BlockBalance(
                block=_block(row),
                issued=issued,
                used=used,
                voided=voided,
                retired=retired,
                open=issued - used - voided - retired,
            )
        )
    return BlockBalances(items=items)


async def retire_unused(conn: Connection, actor: Actor | None, block_id: UUID, reason: str) -> Retired:
    """Takes every number of a block that was never used out of use (a lost or revoked tablet)."""
    row = await conn.fetchrow(Q["block"], block_id)
    if row is None or (actor is not None and not actor.in_scope(row["township_code"])):
        raise NotFound()
    block = _block(row)
    await conn.execute(Q["lock_prefix"], block.prefix)
    await conn.execute(Q["lock_block"], block_id)
    taken = {block.parse(r["receipt_no"]) for r in await conn.fetch(Q["used_numbers"], block_id)}
    for r in await conn.fetch(Q["retired_ranges"], block_id):
        taken.update(range(r["first_no"], r["last_no"] + 1))
    ranges: list[tuple[int, int]] = []
    for n in range(block.first_no, block.last_no + 1):
        if n in taken:
            continue
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    for first, last in ranges:
        await conn.execute(
            Q["insert_retirement"], uuid7(), block_id, first, last, reason, actor.id if actor else block.issued_by
        )
    await record(
        conn, actor, "retire", "receipt_block", block_id, division_code=block.township_code,
        summary={"reason": reason, "numbers": sum(b - a + 1 for a, b in ranges)},
    )  # fmt: skip
    return Retired(block_id=block_id, ranges=ranges, numbers=sum(b - a + 1 for a, b in ranges))


async def retire_device_blocks(conn: Connection, actor: Actor | None, device_id: UUID, reason: str) -> int:
    """A lost or revoked tablet's unused receipt numbers are retired."""
    total = 0
    for row in await conn.fetch(Q["open_blocks_of_device"], device_id):
        total += (await retire_unused(conn, actor, row["id"], reason)).numbers
    return total


# Payments ----------------------------------------------------------------------------------------


class PaymentIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: UUID  # generated by the client: the payment's identity across retries
    household_id: UUID
    coverage_year: Year
    person_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=30)]
    amount_fen: Fen
    method: Literal["cash", "qr", "bank"]
    kind: Literal["premium", "back_payment"] = "premium"
    back_years: Annotated[list[Year], msgspec.Meta(max_length=20)] = []
    receipt_no: ReceiptNo
    collected_at: datetime
    channel_ref: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    household_id: UUID
    village_code: str
    coverage_year: int
    person_ids: list[UUID]
    amount_fen: int
    method: str
    kind: str
    back_years: list[int]
    receipt_no: str
    receipt_block_id: UUID
    collector_id: UUID
    device_id: UUID | None
    collected_at: datetime
    received_at: datetime
    business_date: date
    clock_flag: str | None
    remittance_date: date
    channel_ref: str | None


class Allocation(msgspec.Struct, frozen=True):
    person_id: UUID
    amount_fen: int


class HouseholdMoney(msgspec.Struct, frozen=True, kw_only=True):
    due_fen: int  # Σ over live enrolments of premium − subsidy
    paid_fen: int  # payments − voids − refunds
    balance_fen: int  # due − paid: > 0 still owed, < 0 refund due


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    payment: Payment
    allocations: list[Allocation]
    enrollments_paid: list[UUID]  # enrolments this payment fully covered, now `paid`
    household: HouseholdMoney
    query_code: str | None  # printed on every receipt


class ReceiptNumberUsed(Conflict):
    """That receipt number has already been used"""

    code = "receipt_number_used"


class ChannelReferenceUsed(Conflict):
    """A payment with this QR or bank transaction reference is already recorded"""

    code = "channel_ref_used"


class PaymentAlreadyRecorded(Conflict):
    """A payment with this id is already recorded"""

    code = "payment_already_recorded"


def _payment(row: asyncpg.Record) -> Payment:
    return from_row(row, Payment)


def business_date_of(collected_at: datetime, received_at: datetime, timezone: str) -> tuple[date, str | None]:
    """The local date the money changed hands, and a flag when the reported time is implausible."""
    if collected_at - received_at > CLOCK_AHEAD:
        return local_date(received_at, timezone), "ahead"
    if received_at - collected_at > CLOCK_TOO_OLD:
        return local_date(collected_at, timezone), "too_old"
    return local_date(collected_at, timezone), None


def _pick_block(actor: Actor, rows: list[asyncpg.Record], receipt_no: str) -> tuple[Block, int]:
    """The block of the collector's (`rows`, oldest first) that `receipt_no` belongs to, and its number."""
    for row in rows:
        block = _block(row)
        n = block.parse(receipt_no)
        if n is None:
            continue
        if block.device_id is not None and block.device_id != actor.device_id:
            raise InvalidInput("receipt_no", "belongs to a block issued to another tablet")
        return block, n
    raise InvalidInput("receipt_no", "is not in a receipt block issued to you")


async def household_money(conn: Connection, household_id: UUID, year: int) -> HouseholdMoney:
    money = await conn.fetchrow(LEDGER_Q["household_money"], household_id, year)
    assert money is not None
    paid = money["payments_fen"] - money["voided_fen"] - money["refunded_fen"]
    due = await conn.fetchval(
        "SELECT coalesce(sum(premium_fen - subsidy_fen), 0)::bigint FROM enrollments "
        "WHERE household_id = $1 AND coverage_year = $2 AND status <> 'cancelled'",
        household_id,
        year,
    )
    return HouseholdMoney(due_fen=due, paid_fen=paid, balance_fen=due - paid)


async def record_payment(
    conn: Connection, actor: Actor, data: PaymentIn, *, timezone: str, code_key: bytes, now: datetime | None = None
) -> Receipt:
    """Records one payment and applies it: members it fully covers become `paid`, with cover from
    its business date. Over- and under-payments are accepted: the money has changed hands."""
    if data.collected_at.tzinfo is None:
        raise InvalidInput("collected_at", "must carry a time zone (e.g. 2025-10-08T09:30:00+08:00)")
    if len(set(data.person_ids)) != len(data.person_ids):
        raise InvalidInput("person_ids", "lists a person twice")
    if data.kind == "back_payment" and not data.back_years:
        raise InvalidInput("back_years", "a back-payment names the years it pays for")
    if data.kind == "premium" and data.back_years:
        raise InvalidInput("back_years", "only a back-payment names past years")
    if any(y >= data.coverage_year for y in data.back_years):
        raise InvalidInput("back_years", "must be years before the coverage year")
    received_at = now or datetime.now(UTC)
    # The locks, in this order: the year's policy shared (exclusive with policy.update_version), the
    # household's row (one payment of a household at a time), the receipt block's row shared, the
    # enrolments' rows, the collector's lock (shared). Whatever can be read before the locks is, so
    # they are held for as few round trips as can be.
    rows = await conn.fetch(Q["household_for_payment"], data.coverage_year, data.household_id, actor.id)
    if not rows or not actor.in_scope(rows[0]["household_village_code"]):
        raise NotFound()
    village_code = rows[0]["household_village_code"]
    if rows[0]["household_status"] != "active":
        # At the counter the payment is simply refused; a tablet's offline payment for a dissolved
        # household is quarantined by the sync endpoint instead.
        raise Conflict("the household is dissolved; no payment can be taken for it")
    block, number = _pick_block(actor, [r for r in rows if r["id"] is not None], data.receipt_no)
    business_date, clock_flag = business_date_of(data.collected_at, received_at, timezone)
    coverage = None
    if data.kind == "premium":  # what cover will depend on, for whichever of them this pays
        coverage = await enrolment_service.coverage_inputs(
            conn, [(p, data.coverage_year) for p in data.person_ids], business_date
        )
    # The block's row shared: a retirement of its unused numbers waits for this payment. Then the
    # enrolments' rows: no other payment can allocate to these persons until this one commits.
    locked = await conn.fetch(
        Q["lock_block_and_enrollments"], block.id, data.household_id, data.coverage_year, data.person_ids
    )
    assert locked, "receipt blocks are never deleted"
    enrolled = {r["person_id"]: r for r in locked if r["id"] is not None}
    # The collector's lock, shared: a payment can never land in a day while that day is being
    # closed (closing, remittance and void decisions take it exclusively), but a collector's payments
    # (a tablet's sync and the counter at once) do not wait for each other. Held from here on: one
    # statement writes the payment; the caller then stores its answer (idempotency) and commits.
    channel = None if data.channel_ref is None else f"{data.method}:{data.channel_ref}"
    reads = await conn.fetchrow(
        Q["lock_collector_and_read"], actor.id, block.id, number, data.household_id, data.coverage_year, channel
    )
    assert reads is not None
    if reads["retired"]:
        raise InvalidInput("receipt_no", "was retired")
    # One transfer is one payment: its reference is recorded once (a voided payment's may be again).
    if data.channel_ref is not None and await conn.fetchval(Q["channel_ref_taken"], data.method, data.channel_ref):
        raise ChannelReferenceUsed(errors=[{"field": "channel_ref", "message": "already recorded"}])
    if data.kind == "premium":
        for i, person_id in enumerate(data.person_ids):
            if person_id not in enrolled:
                raise InvalidInput(f"person_ids[{i}]", f"has no live enrolment for {data.coverage_year}")
    else:
        members = {r["person_id"] for r in await conn.fetch(LEDGER_Q["current_members_of"], data.household_id)}
        for i, person_id in enumerate(data.person_ids):
            if person_id not in members:
                raise InvalidInput(f"person_ids[{i}]", "is not a current member of the household")
        policy = await policies.require_in_force(conn, data.coverage_year, business_date)
        # Back-payment is at the current rate (SPEC §2): a year per person per premium.
        owed = policy.premium_fen * len(data.back_years) * len(data.person_ids)
        if data.amount_fen < owed:
            raise InvalidInput("amount_fen", f"a back-payment of these years and persons is {owed} fen")
    already = dict(zip(reads["allocated_person_ids"], reads["allocated_fen"], strict=True))
    # Apply the money member by member, in the order given; what is left over is a credit.
    remaining = data.amount_fen
    allocations: list[Allocation] = []
    fully_covered: list[asyncpg.Record] = []
    for person_id in data.person_ids:
        if data.kind != "premium":
            share = data.amount_fen // len(data.person_ids)
            allocations.append(Allocation(person_id, share))
            continue
        e = enrolled[person_id]
        owed = max(0, (e["premium_fen"] or 0) - e["subsidy_fen"] - already.get(person_id, 0))
        share = min(owed, remaining)
        remaining -= share
        allocations.append(Allocation(person_id, share))
        if share == owed and e["status"] == "registered":
            fully_covered.append(e)
    # Members it fully covers become `paid`, with cover from its business date (mark_paid's rules).
    if not all(actor.in_scope(e["village_code"]) for e in fully_covered):
        raise NotFound()
    funding = enrolment_service.plan_funding(fully_covered, "paid", business_date, coverage or _NO_INPUTS)
    paid_now = [e["id"] for e in fully_covered]
    with audit.gathered(conn) as audit_rows:  # written by the payment's own statement
        await audit.record_many(conn, actor, "paid", "enrollment", funding.audit())
        await audit.record(
            conn, actor, "record", "payment", data.id, division_code=village_code,
            summary={"amount_fen": data.amount_fen, "method": data.method, "kind": data.kind,
                     "receipt_no": data.receipt_no, "clock_flag": clock_flag, "enrollments_paid": len(paid_now)},
        )  # fmt: skip
    try:
        row = await conn.fetchrow(
            Q["insert_payment"], data.id, data.household_id, village_code, data.coverage_year, data.person_ids,
            data.amount_fen, data.method, data.kind, data.back_years, data.receipt_no, block.id, actor.id,
            actor.device_id, data.collected_at, business_date, clock_flag, local_date(received_at, timezone),
            data.channel_ref, [a.person_id for a in allocations], [a.amount_fen for a in allocations],
            *funding.columns(), *audit_rows.columns(),
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "payments_receipt_no_key":
            raise ReceiptNumberUsed(errors=[{"field": "receipt_no", "message": "already used"}]) from exc
        if exc.constraint_name == "payments_pkey":
            raise PaymentAlreadyRecorded(payment_id=str(data.id)) from exc
        raise
    assert row is not None
    audit_rows.written()
    payment = _payment(row)
    # The household's money as `household_money` would read it now: the other payments, as read by
    # the same statement, and this one (a premium counts; it is neither voided nor refunded). Paying
    # changes nothing owed.
    paid_fen = row["payments_fen"] + (payment.amount_fen if payment.kind == "premium" else 0)
    paid_fen -= row["voided_fen"] + row["refunded_fen"]
    due_fen, generation = row["due_fen"], row["code_generation"]
    return Receipt(
        payment=payment,
        allocations=allocations,
        enrollments_paid=paid_now,
        household=HouseholdMoney(due_fen=due_fen, paid_fen=paid_fen, balance_fen=due_fen - paid_fen),
        query_code=None
        if generation is None
        else enrolment_service.query_code(code_key, data.household_id, data.coverage_year, generation),
    )


_NO_INPUTS = enrolment_service.CoverageInputs(facts={}, in_force={})  # a back-payment funds no enrolment


async def get_payment(conn: Connection, actor: Actor, payment_id: UUID) -> Payment:
    row = await conn.fetchrow(Q["payment"], payment_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    return _payment(row)


# Voids and refunds -------------------------------------------------------------------------------


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


async def request_adjustment(
    conn: Connection, actor: Actor, payment_id: UUID, data: AdjustmentRequest, today: date
) -> PaymentEvent:
    payment = await get_payment(conn, actor, payment_id)
    await conn.execute(Q["lock_payment"], payment_id)
    voided, refunded, pending = await _state(conn, payment_id)
    if voided:
        raise NotAdjustable("the payment is voided")
    if pending:
        raise NotAdjustable("a void or refund of this payment awaits a decision")
    remitted = await conn.fetchval(Q["day_closed"], payment.collector_id, payment.remittance_date)
    if data.kind == "void":
        if data.amount_fen is not None:
            raise InvalidInput("amount_fen", "a void is always of the whole payment")
        if payment.business_date != today or remitted or refunded:
            raise NotAdjustable("a void is for the same day, before remittance; ask for a refund instead")
        if await conn.fetchval(Q["payment_confirmed_enrollments"], payment.household_id, payment.coverage_year,
                               payment.person_ids):  # fmt: skip
            raise NotAdjustable("an enrolment this payment covers is confirmed; ask for a refund instead")
        amount = payment.amount_fen
    else:
        policy = await policies.in_force(conn, payment.coverage_year, today)
        refundable = policy.rules.refundable_reasons if policy else ()
        if data.reason not in refundable:
            raise InvalidInput("reason", f"is not a refundable case under the policy ({', '.join(refundable)})")
        amount = payment.amount_fen - refunded if data.amount_fen is None else data.amount_fen
        if not 0 < amount <= payment.amount_fen - refunded:
            raise InvalidInput("amount_fen", f"must lie between 1 and {payment.amount_fen - refunded}")
    reason = data.reason if not data.note else f"{data.reason}: {data.note}"
    row = await conn.fetchrow(
        Q["insert_event"], uuid7(), payment_id, f"{data.kind}_requested", None, amount, reason, actor.id, today
    )
    assert row is not None
    await record(
        conn, actor, f"request_{data.kind}", "payment", payment_id, division_code=payment.village_code,
        summary={"amount_fen": amount, "reason": data.reason},
    )  # fmt: skip
    return _event(row)


async def decide_adjustment(
    conn: Connection, actor: Actor, request_id: UUID, data: Decision, today: date
) -> PaymentEvent:
    request = await conn.fetchrow(Q["event"], request_id)
    if request is None or not actor.in_scope(request["village_code"]) or request["kind"] not in (
        "void_requested", "refund_requested",
    ):  # fmt: skip
        raise NotFound()
    if request["actor_id"] == actor.id or request["collector_id"] == actor.id:
        raise Forbidden("nobody approves their own void or refund")
    voiding = data.approve and request["kind"] == "void_requested"
    payment = await conn.fetchrow(Q["payment"], request["payment_id"])
    assert payment is not None
    locked: list[asyncpg.Record] = []
    if voiding:
        # The enrolments it paid, locked before the collector's lock as a payment locks them: the
        # two never wait for each other in a circle.
        locked = await conn.fetch(
            Q["live_enrollments_for_payment"], payment["household_id"], payment["coverage_year"], payment["person_ids"]
        )
    await conn.execute(Q["lock_collector"], request["collector_id"])
    await conn.execute(Q["lock_payment"], request["payment_id"])
    if voiding and await conn.fetchval(Q["day_closed"], payment["collector_id"], payment["remittance_date"]):
        raise NotAdjustable("the day was closed since the void was asked for; ask for a refund instead")
    try:
        row = await conn.fetchrow(
            Q["insert_event"], uuid7(), request["payment_id"], "approved" if data.approve else "rejected",
            request_id, None, data.note, actor.id, today,
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("this request has already been decided") from exc
    assert row is not None
    if voiding:
        await _undo_enrollments(conn, actor, payment, locked)
    await record(
        conn, actor, "approve" if data.approve else "reject", "payment", request["payment_id"],
        division_code=request["village_code"], summary={"request": request["kind"], "request_id": str(request_id)},
    )  # fmt: skip
    return _event(row)


async def _undo_enrollments(
    conn: Connection, actor: Actor, payment: asyncpg.Record, locked: list[asyncpg.Record]
) -> None:
    """A voided payment no longer pays anyone: enrolments it alone paid (of `locked`, the live
    enrolments of its persons, locked) go back to `registered`."""
    covered = {r["person_id"]: r["amount_fen"] for r in await conn.fetch(
        LEDGER_Q["allocated_to_persons"], payment["household_id"], payment["coverage_year"]
    )}  # fmt: skip
    for row in locked:
        owed = (row["premium_fen"] or 0) - row["subsidy_fen"]
        if row["status"] == "paid" and covered.get(row["person_id"], 0) < owed:
            await conn.execute(Q["unpay_enrollment"], row["id"])
            await record(
                conn, actor, "unpaid", "enrollment", row["id"], division_code=payment["village_code"],
                summary={"from": "paid", "to": "registered", "payment_id": str(payment["id"])},
            )  # fmt: skip


async def pending_requests(conn: Connection, actor: Actor) -> PaymentEvents:
    return PaymentEvents(items=[_event(r) for r in await conn.fetch(Q["pending_requests"], *scope_args(actor))])


async def payment_events(conn: Connection, actor: Actor, payment_id: UUID) -> PaymentEvents:
    await get_payment(conn, actor, payment_id)
    return PaymentEvents(items=[_event(r) for r in await conn.fetch(Q["payment_events"], payment_id)])


# Remittance --------------------------------------------------------------------------------------


class RemittanceIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    collector_id: UUID
    business_date: date
    amount_fen: Fen
    bank_reference: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CollectorDay(msgspec.Struct, frozen=True, kw_only=True):
    collector_id: UUID
    business_date: date
    cash_collected_fen: int
    cash_voided_fen: int
    expected_fen: int  # cash collected − cash voided
    remitted_fen: int
    difference_fen: int  # remitted − expected
    late_arrivals: int  # payments of earlier, closed days counted here
    closed: bool


async def collector_day(conn: Connection, actor: Actor, collector_id: UUID, day: date) -> CollectorDay:
    collector = await conn.fetchrow(Q["collector"], collector_id)
    if collector is None or not actor.in_scope(collector["division_code"]):
        raise NotFound()
    cash = await conn.fetchrow(Q["cash_for_day"], collector_id, day)
    assert cash is not None
    remitted = await conn.fetchval(Q["remitted_on"], collector_id, day)
    expected = cash["collected_fen"] - cash["voided_fen"]
    return CollectorDay(
        collector_id=collector_id, business_date=day, cash_collected_fen=cash["collected_fen"],
        cash_voided_fen=cash["voided_fen"], expected_fen=expected, remitted_fen=remitted,
        difference_fen=remitted - expected, late_arrivals=cash["late_arrivals"],
        closed=bool(await conn.fetchval(Q["day_closed"], collector_id, day)),
    )  # fmt: skip


async def record_remittance(conn: Connection, actor: Actor, data: RemittanceIn) -> CollectorDay:
    await conn.execute(Q["lock_collector"], data.collector_id)
    day = await collector_day(conn, actor, data.collector_id, data.business_date)
    if day.closed:
        raise Conflict("the day is closed")
    await conn.execute(
        Q["insert_remittance"], uuid7(), data.collector_id, data.business_date, data.amount_fen,
        data.bank_reference, actor.id,
    )  # fmt: skip
    await record(
        conn, actor, "remit", "collector_day", f"{data.collector_id}:{data.business_date}",
        summary={"amount_fen": data.amount_fen},
    )  # fmt: skip
    return await collector_day(conn, actor, data.collector_id, data.business_date)


async def close_day(conn: Connection, actor: Actor, collector_id: UUID, day: date) -> CollectorDay:
    if collector_id == actor.id:
        raise Forbidden("a reviewer closes another collector's day, not their own")
    await conn.execute(Q["lock_collector"], collector_id)
    current = await collector_day(conn, actor, collector_id, day)
    if current.closed:
        raise Conflict("the day is already closed")
    if await conn.fetchval(Q["pending_voids_of_day"], collector_id, day):
        raise Conflict("a void of this day awaits a decision; decide it before closing the day")
    try:
        await conn.execute(Q["close_day"], collector_id, day, current.expected_fen, current.remitted_fen, actor.id)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("the day is already closed") from exc
    await record(
        conn, actor, "close", "collector_day", f"{collector_id}:{day}",
        summary={"expected_fen": current.expected_fen, "remitted_fen": current.remitted_fen},
    )  # fmt: skip
    return await collector_day(conn, actor, collector_id, day)
