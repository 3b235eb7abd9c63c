"""Receipt blocks: numbers issued to a collector (or a collector's tablet), their balance, and the
retirement of numbers never used."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import asyncpg
import msgspec

from backend import fields
from backend.actor import Actor, Role, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7

Q = load_queries("backend.premiums")


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
        raise InvalidInput("last_no", _("must not be below first_no"))
    if data.last_no - data.first_no >= 100_000:
        raise InvalidInput("last_no", _("a block holds at most 100000 numbers"))
    if data.last_no >= 10**data.digits:
        raise InvalidInput("last_no", _("does not fit in {digits} digits", digits=data.digits))
    collector = await conn.fetchrow(Q["collector"], data.collector_id)
    if collector is None or not actor.in_scope(collector["division_code"]):
        raise InvalidInput("collector_id", _("no such collector in your scope"))
    if collector["role"] not in (Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER):
        raise InvalidInput("collector_id", _("receipts are issued to township staff"))
    if data.device_id is not None:
        owner = await conn.fetchval("SELECT owner_id FROM devices WHERE id = $1 AND status = 'active'", data.device_id)
        if owner != data.collector_id:
            raise InvalidInput("device_id", _("must be an active tablet of the collector"))
    # Blocks of one prefix never overlap: checked under a lock per prefix.
    await conn.execute(Q["lock_prefix"], data.prefix)
    widths = {r["digits"] for r in await conn.fetch(Q["prefix_widths"], data.prefix)}
    if widths and widths != {data.digits}:
        raise InvalidInput(
            "digits", _("blocks of prefix {prefix} have {digits} digits", prefix=repr(data.prefix), digits=widths.pop())
        )
    if await conn.fetch(Q["overlapping_blocks"], data.prefix, data.first_no, data.last_no):
        raise Conflict(_("the range overlaps a block already issued"), code_detail="receipt_range_overlaps")
    row = await conn.fetchrow(
        Q["insert_block"],
        uuid7(),
        collector["division_code"],
        data.prefix,
        data.first_no,
        data.last_no,
        data.digits,
        data.collector_id,
        data.device_id,
        data.refill_of,
        actor.id,
    )
    assert row is not None
    block = _block(row)
    await record(
        conn,
        actor,
        "issue",
        "receipt_block",
        block.id,
        division_code=block.township_code,
        summary={
            "prefix": block.prefix,
            "first_no": block.first_no,
            "last_no": block.last_no,
            "collector_id": str(block.collector_id),
        },
    )
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
        conn,
        actor,
        "retire",
        "receipt_block",
        block_id,
        division_code=block.township_code,
        summary={"reason": reason, "numbers": sum(b - a + 1 for a, b in ranges)},
    )
    return Retired(block_id=block_id, ranges=ranges, numbers=sum(b - a + 1 for a, b in ranges))


async def retire_device_blocks(conn: Connection, actor: Actor | None, device_id: UUID, reason: str) -> int:
    """A lost or revoked tablet's unused receipt numbers are retired."""
    total = 0
    for row in await conn.fetch(Q["open_blocks_of_device"], device_id):
        total += (await retire_unused(conn, actor, row["id"], reason)).numbers
    return total


def pick_block(actor: Actor, rows: list[asyncpg.Record], receipt_no: str) -> tuple[Block, int]:
    """The block of the collector's (`rows`, oldest first) that `receipt_no` belongs to, and its number."""
    for row in rows:
        block = _block(row)
        n = block.parse(receipt_no)
        if n is None:
            continue
        if block.device_id is not None and block.device_id != actor.device_id:
            raise InvalidInput("receipt_no", _("belongs to a block issued to another tablet"))
        return block, n
    raise InvalidInput("receipt_no", _("is not in a receipt block issued to you"))
