"""The audit log's hash chain: a background sealer gives each committed audit row a place and a hash
chained to the one before; `verify` recomputes it; `day_seals` shows each day's head to copy elsewhere.

Requests never wait for the chain: they insert audit rows as before. The sealer (`seal_loop`, run
by the job workers, one at a time by an advisory lock) takes the rows whose transactions have
ended — `xact` below the oldest running transaction — in (xact, id) order and appends them to
`audit_chain` (seq, audit_id, xact, hash). Both tables are append-only, so the service never
updates or deletes either. The encoding hashed is `FORMAT`, defined once here (`link_hash`) and
documented in README.md ("Audit"):

    hash(n) = SHA-256( "canbao-audit-chain-v1" ‖ hash(n-1) ‖ field(seq) ‖ field(id) ‖ field(xact)
                       ‖ field(at) ‖ field(actor_kind) ‖ field(actor_id) ‖ field(device_id)
                       ‖ field(action) ‖ field(entity) ‖ field(entity_id) ‖ field(division_code)
                       ‖ field(summary) ‖ field(request_id) )

with hash(0) 32 zero bytes, and field(v) the UTF-8 bytes of v's text prefixed by their length as a
4-byte big-endian integer, or the 4 bytes FF FF FF FF for NULL (as in PostgreSQL's binary COPY).
Texts: integers in decimal; `at` as whole microseconds since 1970-01-01 00:00 UTC; uuids in
lower-case 8-4-4-4-12 form; `summary` as PostgreSQL prints a jsonb value (`summary::text`: one
spelling per value, keys in jsonb's order); other columns as stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from backend.db import Connection, Pool, load_queries
from backend.errors import after_failure

Q = load_queries("backend.audit", "chain.sql")
log = logging.getLogger("canbao.audit")

FORMAT = "canbao-audit-chain-v1"
GENESIS = bytes(32)
BATCH = 2_000  # rows per sealing transaction
# The audit_log columns a link covers, in the order they are hashed (after seq). A column added to
# audit_log must be added here, with a new FORMAT (tests/access/test_audit_chain.py checks it).
COLUMNS = (
    "id",
    "xact",
    "at",
    "actor_kind",
    "actor_id",
    "device_id",
    "action",
    "entity",
    "entity_id",
    "division_code",
    "summary",
    "request_id",
)
_NULL = b"\xff\xff\xff\xff"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _text(column: str, value: Any) -> str | None:
    if value is None:
        return None
    if column == "at":
        return str((value - _EPOCH) // _MICROSECOND)
    return str(value)  # int: decimal; UUID: lower-case 8-4-4-4-12; str (summary is jsonb's text) as is


def link_hash(previous: bytes, seq: int, row: asyncpg.Record | Mapping[str, Any]) -> bytes:
    """The hash of the link `seq` sealing `row` (the columns of `COLUMNS`, `summary` as jsonb text)."""
    digest = hashlib.sha256(FORMAT.encode())
    digest.update(previous)
    for column, value in (("seq", seq), *((c, row[c]) for c in COLUMNS)):
        text = _text(column, value)
        if text is None:
            digest.update(_NULL)
        else:
            data = text.encode()
            digest.update(len(data).to_bytes(4, "big") + data)
    return digest.digest()


# Sealing -----------------------------------------------------------------------------------------


async def seal_batch(conn: Connection, batch: int = BATCH) -> int | None:
    """Appends up to `batch` committed rows to the chain, in the caller's transaction; how many, or
    None when another sealer holds the lock."""
    if not await conn.fetchval(Q["try_lock"]):
        return None
    head = await conn.fetchrow(Q["head"])
    seq, previous = (head["seq"], bytes(head["hash"])) if head else (0, GENESIS)
    after = (head["xact"], head["audit_id"]) if head else (0, 0)
    rows = await conn.fetch(Q["unsealed"], *after, batch)
    if not rows:
        return 0
    seqs, hashes = [], []
    for row in rows:
        seq += 1
        previous = link_hash(previous, seq, row)
        seqs.append(seq)
        hashes.append(previous)
    await conn.execute(Q["append"], seqs, [r["id"] for r in rows], [r["xact"] for r in rows], hashes)
    return len(rows)


async def seal(pool: Pool, batch: int = BATCH) -> int:
    """Seals every row committed by now, a transaction per batch; how many (0 when another sealer
    is at work)."""
    sealed = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            done = await seal_batch(conn, batch)
        sealed += done or 0
        if done is None or done < batch:
            return sealed


async def seal_loop(pool: Pool, interval_s: float, stop: asyncio.Event) -> None:
    """Seals every `interval_s` until `stop` is set; a failed round is logged and tried again."""
    while not stop.is_set():
        try:
            sealed = await seal(pool)
        except Exception as exc:  # the timer goes on: the next round takes up where the chain ends
            log.error("audit sealing failed", extra={"error": type(exc).__name__})
            after_failure(pool, exc)
        else:
            if sealed:
                log.debug("audit rows sealed", extra={"sealed": sealed})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


# Verifying ---------------------------------------------------------------------------------------


class Broken(msgspec.Struct, frozen=True, kw_only=True):
    """The first link that does not hold: its place, the audit row, and what is wrong."""

    seq: int
    audit_id: int | None
    problem: str

    def __str__(self) -> str:
        row = f"audit row {self.audit_id}" if self.audit_id is not None else "no audit row"
        return f"audit chain broken at seq {self.seq} ({row}): {self.problem}"


class Intact(msgspec.Struct, frozen=True, kw_only=True):
    sealed: int  # links checked
    head_hash: bytes  # the chain's hash after the last link (32 zero bytes when empty)
    awaiting: int  # rows written after the sealer's last link: not yet sealed


async def verify(conn: Connection, seals: Mapping[int, bytes] | None = None, prefetch: int = 2_000) -> Intact | Broken:
    """Recomputes the chain link by link (streamed by a cursor, in one read-only snapshot), checks
    that it still passes through `seals` (head hashes copied elsewhere, by seq), then that every
    row the sealer has passed is in it."""
    seals = seals or {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        seq, previous, after = 0, GENESIS, (0, 0)
        async for link in conn.cursor(Q["chain"], prefetch=prefetch):
            seq += 1
            broken = _check(link, seq, previous, after)
            if broken is not None:
                return broken
            previous, after = bytes(link["hash"]), (link["xact"], link["id"])
            if seq in seals and seals[seq] != previous:
                return Broken(
                    seq=seq,
                    audit_id=link["id"],
                    problem=f"the chain no longer passes through the seal copied for seq {seq} "
                    f"(its head hash there is now {previous.hex()[:16]}…): links up to here were rewritten",
                )
        if seals and max(seals) > seq:
            return Broken(
                seq=max(seals), audit_id=None, problem=f"the chain ends at seq {seq}, before this copied seal"
            )
        missing = await conn.fetchval(Q["first_unchained"], *after)
        if missing is not None:
            return Broken(seq=seq, audit_id=missing, problem="the row is older than the chain's head but not in it")
        awaiting = await conn.fetchval(Q["awaiting"], *after)
    return Intact(sealed=seq, head_hash=previous, awaiting=awaiting)


def _check(link: asyncpg.Record, seq: int, previous: bytes, after: tuple[int, int]) -> Broken | None:
    audit_id = link["audit_id"]
    if link["seq"] != seq:
        return Broken(seq=seq, audit_id=None, problem=f"the link is missing (the next one is seq {link['seq']})")
    if link["id"] is None:
        return Broken(seq=seq, audit_id=audit_id, problem="the row is missing from audit_log")
    if (link["xact"], link["id"]) <= after or link["chain_xact"] != link["xact"]:
        return Broken(seq=seq, audit_id=audit_id, problem="the row is out of the chain's (xact, id) order")
    computed = link_hash(previous, seq, link)
    stored = bytes(link["hash"])
    if computed != stored:
        return Broken(
            seq=seq,
            audit_id=audit_id,
            problem=f"the row differs from what was sealed (sealed hash {stored.hex()[:16]}…, "
            f"the row now hashes to {computed.hex()[:16]}…)",
        )
    return None


# Daily seals -------------------------------------------------------------------------------------


class DaySeal(msgspec.Struct, frozen=True, kw_only=True):
    """What the chain looked like at the end of a local day: copy `last_seq` and `head_hash`
    elsewhere; `canbao audit verify --seal SEQ:HASH` later checks the chain still passes through it."""

    day: date
    first_seq: int  # first link sealed that day
    last_seq: int  # last link sealed that day
    head_hash: str  # hex SHA-256 of the chain after last_seq


async def day_seals(conn: Connection, first: date, last: date, timezone: str) -> list[DaySeal]:
    """The days from `first` to `last` on which rows were sealed, newest first."""
    return [
        DaySeal(day=r["day"], first_seq=r["first_seq"], last_seq=r["last_seq"], head_hash=bytes(r["hash"]).hex())
        for r in await conn.fetch(Q["seals"], first, last, timezone)
    ]
