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

from backend import reports as tables
from backend import tabular
from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import InvalidInput
from backend.i18n import N_, _
from backend.jobs.worker import JobRun, Outcome

Q = load_queries("backend.premiums")

Group = Literal["township", "collector", "day"]
# A channel's statement for a period: one line a payment, a few dozen columns of short text.
STATEMENT_LIMITS = tabular.Limits(max_rows=500_000, max_columns=64, max_cell_chars=1024)
HEADER = ("key", "payments", "cash_fen", "qr_fen", "bank_fen", "voided_fen", "refunded_fen", "net_fen")
# The key's column and the name beside it, by group (a day has no name).
KEYS = {
    "township": (N_("Division code"), N_("Township")),
    "collector": (N_("Collector id"), N_("Collector")),
    "day": (N_("Business date"), None),
}
GROUPS = {"township": N_("by township"), "collector": N_("by collector"), "day": N_("by day")}
AMOUNTS = (
    tables.Column("payments", N_("Payments"), "int"),
    tables.Column("cash_fen", N_("Cash (yuan)"), "fen"),
    tables.Column("qr_fen", N_("QR code payments (yuan)"), "fen"),
    tables.Column("bank_fen", N_("Bank transfers (yuan)"), "fen"),
    tables.Column("voided_fen", N_("Voided (yuan)"), "fen"),
    tables.Column("refunded_fen", N_("Refunded (yuan)"), "fen"),
    tables.Column("net_fen", N_("Net (yuan)"), "fen"),
)
COLLECTIONS_SHEET = N_("Collections {group}")
COLLECTIONS_TITLE = N_("{place}: premiums collected {group}, {date_from} to {date_to}")


class CollectionsRow(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # township code, collector id or business date
    payments: int
    cash_fen: int
    qr_fen: int
    bank_fen: int
    voided_fen: int
    refunded_fen: int
    net_fen: int  # cash + qr + bank − voided − refunded
    name: str = ""  # the township's or the collector's name (none for a day)


class CollectionsReport(msgspec.Struct, frozen=True, kw_only=True):
    group: Group
    date_from: date
    date_to: date
    rows: list[CollectionsRow]
    place: str = ""  # the scope's district (and township) by name: 西湖区 北山街道


async def collections(
    conn: Connection, actor: Actor, group: Group, date_from: date, date_to: date, *, reads: Connection | None = None
) -> CollectionsReport:
    """Read on `reads` when given (a replica, backend.replicas); the audit row written on `conn`."""
    if date_to < date_from:
        raise InvalidInput("to", "must not be before from")
    reads = reads or conn
    rows = []
    found = await reads.fetch(Q["collections_report"], *scope_args(actor), date_from, date_to, group)
    keys = [r["key"] for r in found]
    names = (
        await tables.division_names(reads, keys)
        if group == "township"
        else await tables.user_names(reads, keys)
        if group == "collector"
        else {}
    )
    for r in found:
        gross = r["cash_fen"] + r["qr_fen"] + r["bank_fen"]
        rows.append(
            CollectionsRow(
                key=r["key"],
                name=names.get(r["key"], ""),
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
    place = await tables.place(reads, actor)
    return CollectionsReport(group=group, date_from=date_from, date_to=date_to, rows=rows, place=place)


def table(report: CollectionsReport, headers: tables.Headers = "codes") -> tables.Table:
    """A row per township, collector or day; the totals below them in XLSX (not in the CSV)."""
    key_title, name_title = KEYS[report.group]
    named = name_title is not None
    columns = [
        tables.Column("key", key_title),
        *([tables.Column("name", name_title)] if name_title is not None else []),
        *AMOUNTS,
    ]

    def amounts(r: CollectionsRow) -> tuple[int, ...]:
        return (r.payments, r.cash_fen, r.qr_fen, r.bank_fen, r.voided_fen, r.refunded_fen, r.net_fen)

    rows = [(r.key, *((r.name,) if named else ()), *amounts(r)) for r in report.rows]
    sums = [sum(column) for column in zip(*(amounts(r) for r in report.rows), strict=True)] or [0] * len(AMOUNTS)
    group = _(GROUPS[report.group])
    return tables.Table(
        sheet=_(COLLECTIONS_SHEET, group=group),
        title=_(
            COLLECTIONS_TITLE,
            place=report.place,
            group=group,
            date_from=report.date_from.isoformat(),
            date_to=report.date_to.isoformat(),
        ),
        columns=columns,
        rows=rows,
        totals=(tables.total_label(headers), *(("",) if named else ()), *sums),
    )


def collections_file(
    report: CollectionsReport, format: tables.Format, headers: tables.Headers, encoding: tables.Encoding
) -> bytes:
    if format == "json":
        return msgspec.json.encode(report)
    return tables.table_file(table(report, headers), format, headers, encoding)


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
