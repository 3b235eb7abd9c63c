"""Remittance: a collector's cash day (collected, voided, handed to the bank) and its closing."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import Conflict, Forbidden, NotFound
from backend.i18n import _
from backend.ids import uuid7
from backend.premiums.amounts import Fen

Q = load_queries("backend.premiums")


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


async def _collector(conn: Connection, actor: Actor, collector_id: UUID) -> asyncpg.Record:
    collector = await conn.fetchrow(Q["collector"], collector_id)
    if collector is None or not actor.in_scope(collector["division_code"]):
        raise NotFound()
    return collector


async def collector_day(conn: Connection, actor: Actor, collector_id: UUID, day: date) -> CollectorDay:
    await _collector(conn, actor, collector_id)
    cash = await conn.fetchrow(Q["cash_for_day"], collector_id, day)
    assert cash is not None
    remitted = await conn.fetchval(Q["remitted_on"], collector_id, day)
    expected = cash["collected_fen"] - cash["voided_fen"]
    return CollectorDay(
        collector_id=collector_id,
        business_date=day,
        cash_collected_fen=cash["collected_fen"],
        cash_voided_fen=cash["voided_fen"],
        expected_fen=expected,
        remitted_fen=remitted,
        difference_fen=remitted - expected,
        late_arrivals=cash["late_arrivals"],
        closed=bool(await conn.fetchval(Q["day_closed"], collector_id, day)),
    )


async def record_remittance(conn: Connection, actor: Actor, data: RemittanceIn) -> CollectorDay:
    """Records cash handed to the bank. Each slip once a day: under the collector's lock (exclusive),
    the same bank reference again for the day is refused, so a retried request never counts the
    cash twice (remittances are append-only: a double could not be taken back)."""
    await conn.execute(Q["lock_collector"], data.collector_id)
    collector = await _collector(conn, actor, data.collector_id)
    day = await collector_day(conn, actor, data.collector_id, data.business_date)
    if day.closed:
        raise Conflict(_("the day is closed"))
    reference = data.bank_reference.strip()
    if await conn.fetchval(Q["remittance_recorded"], data.collector_id, data.business_date, reference):
        raise Conflict(
            _("this bank reference is recorded for the day already"),
            errors=[{"field": "bank_reference", "message": _("already recorded for this collector's day")}],
        )
    await conn.execute(
        Q["insert_remittance"],
        uuid7(),
        data.collector_id,
        data.business_date,
        data.amount_fen,
        reference,
        actor.id,
    )
    await record(
        conn,
        actor,
        "remit",
        "collector_day",
        f"{data.collector_id}:{data.business_date}",
        division_code=collector["division_code"],
        summary={"amount_fen": data.amount_fen},
    )
    return await collector_day(conn, actor, data.collector_id, data.business_date)


async def close_day(conn: Connection, actor: Actor, collector_id: UUID, day: date) -> CollectorDay:
    if collector_id == actor.id:
        raise Forbidden(_("a reviewer closes another collector's day, not their own"))
    await conn.execute(Q["lock_collector"], collector_id)
    collector = await _collector(conn, actor, collector_id)
    current = await collector_day(conn, actor, collector_id, day)
    if current.closed:
        raise Conflict(_("the day is already closed"))
    if await conn.fetchval(Q["pending_voids_of_day"], collector_id, day):
        raise Conflict(_("a void of this day awaits a decision; decide it before closing the day"))
    try:
        await conn.execute(Q["close_day"], collector_id, day, current.expected_fen, current.remitted_fen, actor.id)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(_("the day is already closed")) from exc
    await record(
        conn,
        actor,
        "close",
        "collector_day",
        f"{collector_id}:{day}",
        division_code=collector["division_code"],
        summary={"expected_fen": current.expected_fen, "remitted_fen": current.remitted_fen},
    )
    return await collector_day(conn, actor, collector_id, day)
