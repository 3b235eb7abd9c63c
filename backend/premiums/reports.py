"""Collections reports and the reconciliation of QR and bank payments against a channel statement."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal
from uuid import UUID

import msgspec

from backend import tabular
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import InvalidInput
from backend.jobs.worker import JobRun, Outcome

Q = load_queries("backend.premiums")

Group = Literal["township", "collector", "day"]
# A channel's statement for a period: one line a payment, a few dozen columns of short text.
STATEMENT_LIMITS = tabular.Limits(max_rows=500_000, max_columns=64, max_cell_chars=1024)
HEADER = ("key", "payments", "cash_fen", "qr_fen", "bank_fen", "voided_fen", "refunded_fen", "net_fen")


class CollectionsRow(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # township code, collector id or business date
    payments: int
    cash_fen: int
    qr_fen: int
    bank_fen: int
    voided_fen: int
    refunded_fen: int
    net_fen: int  # cash + qr + bank − voided − refunded


class CollectionsReport(msgspec.Struct, frozen=True, kw_only=True):
    group: Group
    date_from: date
    date_to: date
    rows: list[CollectionsRow]


async def collections(
    conn: Connection, actor: Actor, group: Group, date_from: date, date_to: date
) -> CollectionsReport:
    if date_to < date_from:
        raise InvalidInput("to", "must not be before from")
    rows = []
    for r in await conn.fetch(Q["collections_report"], *scope_args(actor), date_from, date_to, group):
        gross = r["cash_fen"] + r["qr_fen"] + r["bank_fen"]
        rows.append(
            CollectionsRow(
                key=r["key"],
                payments=r["payments"],
                cash_fen=r["cash_fen"],
                qr_fen=r["qr_fen"],
                bank_fen=r["bank_fen"],
                voided_fen=r["voided_fen"],
                refunded_fen=r["refunded_fen"],
                net_fen=gross - r["voided_fen"] - r["refunded_fen"],
            )
        )
    await record(
        conn,
        actor,
        "report",
        "collections",
        None,
        division_code=actor.scope.division_code,
        summary={"group": group, "from": date_from.isoformat(), "to": date_to.isoformat()},
    )
    return CollectionsReport(group=group, date_from=date_from, date_to=date_to, rows=rows)


def table(report: CollectionsReport) -> list[tuple[object, ...]]:
    return [
        (r.key, r.payments, r.cash_fen, r.qr_fen, r.bank_fen, r.voided_fen, r.refunded_fen, r.net_fen)
        for r in report.rows
    ]


# Reconciliation ----------------------------------------------------------------------------------


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    row: int
    channel_ref: str
    amount_fen: int
    paid_on: date


class Matched(msgspec.Struct, frozen=True, kw_only=True):
    channel_ref: str
    payment_id: UUID
    receipt_no: str
    amount_fen: int


class AmountMismatch(msgspec.Struct, frozen=True, kw_only=True):
    channel_ref: str
    payment_id: UUID
    receipt_no: str
    recorded_fen: int
    statement_fen: int


class MissingFromStatement(msgspec.Struct, frozen=True, kw_only=True):
    payment_id: UUID
    receipt_no: str
    channel_ref: str | None
    amount_fen: int
    business_date: date


class Reconciliation(msgspec.Struct, frozen=True, kw_only=True):
    date_from: date
    date_to: date
    matched: list[Matched]
    amount_mismatches: list[AmountMismatch]
    missing: list[MissingFromStatement]  # recorded here, not on the statement
    unexpected: list[StatementLine]  # on the statement, not recorded here


def parse_statement(raw: bytes) -> list[StatementLine]:
    """A channel statement as CSV: a reference, an amount in yuan (two decimals) or fen, a date.
    Headers in English or Chinese; UTF-8 (with or without BOM) or GB18030. A file beyond
    STATEMENT_LIMITS raises `tabular.LimitExceeded`."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("gb18030", errors="strict")
        except UnicodeDecodeError:
            raise InvalidInput("file", "is neither UTF-8 nor GB18030 text") from None
    try:
        return _lines(tabular.csv_rows(io.StringIO(text), STATEMENT_LIMITS))
    except csv.Error as exc:
        raise InvalidInput("file", f"is not a readable CSV file ({exc})") from None


def _lines(reader: Iterator[list[str]]) -> list[StatementLine]:
    header = [h.strip().lower() for h in next(reader, [])]

    def column(*names: str) -> int:
        for name in names:
            if name in header:
                return header.index(name)
        raise InvalidInput("file", f"the statement has no column {names[0]} ({' / '.join(names[1:])})")

    ref_col = column("channel_ref", "交易流水号", "流水号", "reference")
    date_col = column("paid_at", "交易时间", "交易日期", "date")
    fen_col = header.index("amount_fen") if "amount_fen" in header else None
    yuan_col = None if fen_col is not None else column("amount", "金额", "交易金额")
    lines = []
    for rowno, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        try:
            ref = cells[ref_col].strip()
            if fen_col is not None:
                amount = int(cells[fen_col].strip())
            else:
                assert yuan_col is not None
                yuan = Decimal(cells[yuan_col].strip().replace(",", ""))
                if yuan != yuan.quantize(Decimal("0.01")):
                    raise InvalidInput(f"row {rowno}", "amounts have at most two decimals")
                amount = int(yuan * 100)
            paid_on = datetime.fromisoformat(cells[date_col].strip()[:19].replace("/", "-")).date()
        except (IndexError, ValueError, InvalidOperation):
            raise InvalidInput(f"row {rowno}", "needs a reference, an amount and a date") from None
        if not ref or amount <= 0:
            raise InvalidInput(f"row {rowno}", "needs a reference and a positive amount")
        lines.append(StatementLine(row=rowno, channel_ref=ref, amount_fen=amount, paid_on=paid_on))
    if not lines:
        raise InvalidInput("file", "the statement has no lines")
    return lines


async def reconcile(conn: Connection, actor: Actor, lines: list[StatementLine]) -> Reconciliation:
    date_from = min(line.paid_on for line in lines)
    date_to = max(line.paid_on for line in lines)
    payments = [
        r for r in await conn.fetch(Q["channel_payments"], *scope_args(actor), date_from, date_to) if not r["voided"]
    ]
    by_ref = {r["channel_ref"]: r for r in payments if r["channel_ref"]}
    matched, mismatched, unexpected, seen = [], [], [], set()
    for line in lines:
        payment = by_ref.get(line.channel_ref)
        if payment is None:
            unexpected.append(line)
            continue
        seen.add(payment["id"])
        if payment["amount_fen"] == line.amount_fen:
            matched.append(
                Matched(
                    channel_ref=line.channel_ref,
                    payment_id=payment["id"],
                    receipt_no=payment["receipt_no"],
                    amount_fen=line.amount_fen,
                )
            )
        else:
            mismatched.append(
                AmountMismatch(
                    channel_ref=line.channel_ref,
                    payment_id=payment["id"],
                    receipt_no=payment["receipt_no"],
                    recorded_fen=payment["amount_fen"],
                    statement_fen=line.amount_fen,
                )
            )
    missing = [
        MissingFromStatement(
            payment_id=r["id"],
            receipt_no=r["receipt_no"],
            channel_ref=r["channel_ref"],
            amount_fen=r["amount_fen"],
            business_date=r["business_date"],
        )
        for r in payments
        if r["id"] not in seen
    ]
    await record(
        conn,
        actor,
        "reconcile",
        "channel_statement",
        None,
        division_code=actor.scope.division_code,
        summary={
            "lines": len(lines),
            "matched": len(matched),
            "mismatched": len(mismatched),
            "missing": len(missing),
            "unexpected": len(unexpected),
        },
    )
    return Reconciliation(
        date_from=date_from,
        date_to=date_to,
        matched=matched,
        amount_mismatches=mismatched,
        missing=missing,
        unexpected=unexpected,
    )


# The background path: a statement over the request's size, reconciled by a job worker.

RECONCILIATION = "reconciliation"


async def run_reconciliation_job(run: JobRun) -> Outcome:
    """A `reconciliation` job: the same reconciliation as the request's; the result is the report."""
    assert run.actor is not None, "reconciliations are asked for by a reviewer"
    with await run.open_file() as source:
        raw = source.read()
    run.advance(len(raw))
    return Outcome(await reconcile(run.conn, run.actor, parse_statement(raw)))
