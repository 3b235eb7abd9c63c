"""The reviewer's side of sync: quarantined work to settle, and what a tablet may still hold."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor, Role, Scope, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from backend.i18n import _
from backend.premiums import payments as premium_payments
from backend.sync import sealed
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")


class QuarantineItem(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    device_id: UUID
    seq: int
    user_id: UUID
    township_code: str
    kind: str
    payment_id: UUID | None
    reason: str
    detail: str | None
    body: dict[str, Any]
    status: Literal["open", "applied", "dismissed"]
    settled_by: UUID | None
    settled_at: datetime | None
    settlement_note: str | None
    at: datetime


class QuarantinePage(msgspec.Struct, frozen=True):
    items: list[QuarantineItem]
    next_cursor: UUID | None


class Settlement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`apply` records a quarantined payment now, as its collector from that tablet; `dismiss`
    closes the item (the money was handed back, it was a duplicate, …) with a note saying why.

    `household_id` with `person_ids` applies it to another household than the tablet named — the
    one a held duplicate turned out to be. Only a reviewer says so, and the audit keeps both:
    a payment is never re-pointed by itself."""

    resolution: Literal["apply", "dismiss"]
    note: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    household_id: UUID | None = None
    person_ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=50)] | None = None


class NotSettleable(Conflict):
    """This quarantined item cannot be settled that way"""

    code = "not_settleable"


def _body(row: asyncpg.Record) -> Any:
    return sealed.open_document(sealed.QUARANTINED_BODY, row["body_enc"])


def _item(row: asyncpg.Record) -> QuarantineItem:
    values = {k: _body(row) if k == "body" else row[k] for k in QuarantineItem.__struct_fields__}
    return msgspec.convert(values, QuarantineItem)


async def queue(conn: Connection, actor: Actor, status: str | None, after: UUID | None, limit: int) -> QuarantinePage:
    rows = await conn.fetch(Q["quarantine_queue"], *scope_args(actor), status, after, limit + 1)
    items = [_item(r) for r in rows[:limit]]
    await record(
        conn,
        actor,
        "read_queue",
        "sync_quarantine",
        None,
        division_code=actor.scope.division_code,
        summary={"results": len(items)},
    )
    return QuarantinePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def settle(
    conn: Connection, actor: Actor, quarantine_id: UUID, data: Settlement, *, timezone: str, code_key: bytes
) -> QuarantineItem:
    row = await conn.fetchrow(Q["quarantine_for_update"], quarantine_id)
    if row is None or not actor.in_scope(row["township_code"]):
        raise NotFound()
    if row["user_id"] == actor.id:
        # Dismissing one's own quarantined payment would be a void approved by its collector.
        raise Forbidden(_("nobody settles a quarantined item of their own"))
    if row["status"] != "open":
        raise NotSettleable(_("the item is already {status}", status=row["status"]))
    if (data.household_id is None) != (data.person_ids is None):
        raise InvalidInput(
            "person_ids" if data.person_ids is None else "household_id", _("household_id and person_ids go together")
        )
    if data.household_id is not None and data.resolution != "apply":
        raise InvalidInput("household_id", _("only an applied payment goes to another household"))
    if data.resolution == "apply":
        if row["kind"] != "payment.record":
            raise InvalidInput("resolution", _("only a quarantined payment can be applied; dismiss the rest"))
        try:
            mutation = msgspec.convert(_body(row), m.PaymentRecord)
            payment = msgspec.convert(
                {
                    "id": mutation.payment_id,
                    "household_id": data.household_id or mutation.household_id,
                    "coverage_year": mutation.coverage_year,
                    "person_ids": data.person_ids or mutation.person_ids,
                    "amount_fen": mutation.amount_fen,
                    "method": mutation.method,
                    "kind": mutation.kind,
                    "back_years": mutation.back_years,
                    "receipt_no": mutation.receipt_no,
                    "collected_at": mutation.collected_at,
                    "channel_ref": mutation.channel_ref,
                },
                premium_payments.PaymentIn,
            )
        except msgspec.ValidationError as exc:
            raise NotSettleable(_("the quarantined payment is malformed; dismiss it")) from exc
        # The payment is the collector's, from their tablet and receipt block; the reviewer's
        # decision is audited separately below.
        collector = Actor(
            kind="user",
            id=row["user_id"],
            role=Role(row["user_role"]),
            scope=Scope(row["user_division"], row["user_level"]),
            device_id=row["device_id"],
        )
        try:
            async with conn.transaction():
                await premium_payments.record_payment(
                    conn, collector, payment, timezone=timezone, code_key=code_key, settling=True
                )
        except DomainError as exc:
            raise NotSettleable(
                _("the payment still cannot be recorded: {code}", code=exc.code), reason=exc.code
            ) from exc
    status = "applied" if data.resolution == "apply" else "dismissed"
    updated = await conn.fetchrow(Q["settle_quarantine"], quarantine_id, status, actor.id, data.note)
    assert updated is not None
    await record(
        conn,
        actor,
        f"settle_{status}",
        "sync_quarantine",
        quarantine_id,
        division_code=row["township_code"],
        summary={"reason": row["reason"], "kind": row["kind"]}
        | ({"repointed_to": str(data.household_id)} if data.household_id is not None else {}),
    )
    return _item(updated)


class BlockHolding(msgspec.Struct, frozen=True, kw_only=True):
    block_id: UUID
    prefix: str
    first_no: int
    last_no: int
    digits: int
    used: int
    retired: list[tuple[int, int]]  # never used on the server: the tablet may hold receipts from these


class DeviceFollowUp(msgspec.Struct, frozen=True, kw_only=True):
    device_id: UUID
    status: str
    owner_id: UUID
    last_seq: int  # work up to this seq reached the server; anything after it is still on the tablet
    last_push_at: datetime | None
    last_pull_at: datetime | None
    last_app_version: str | None
    last_clock_skew_s: int | None
    open_quarantine: int
    receipt_blocks: list[BlockHolding]


async def follow_up(conn: Connection, actor: Actor, device_id: UUID) -> DeviceFollowUp:
    row = await conn.fetchrow(Q["device_follow_up"], device_id)
    if row is None or not actor.in_scope(row["division_code"]):
        raise NotFound()
    blocks = [
        BlockHolding(
            block_id=b["id"],
            prefix=b["prefix"],
            first_no=b["first_no"],
            last_no=b["last_no"],
            digits=b["digits"],
            used=b["used"],
            retired=[(x[0], x[1]) for x in b["retired"]],
        )
        for b in await conn.fetch(Q["device_blocks"], device_id)
    ]
    await record(conn, actor, "read", "device", device_id, division_code=row["division_code"])
    return DeviceFollowUp(
        device_id=row["id"],
        status=row["status"],
        owner_id=row["owner_id"],
        last_seq=row["last_seq"],
        last_push_at=row["last_push_at"],
        last_pull_at=row["last_pull_at"],
        last_app_version=row["last_app_version"],
        last_clock_skew_s=row["last_clock_skew_s"],
        open_quarantine=row["open_quarantine"],
        receipt_blocks=blocks,
    )
