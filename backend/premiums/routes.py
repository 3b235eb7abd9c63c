"""`/api/v1/receipt-blocks`, `/api/v1/payments`, `/api/v1/payment-adjustments`, `/api/v1/collector-days`."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from backend import fields, idempotency
from backend import reports as tables
from backend.actor import Role
from backend.api_docs.openapi import RAISES
from backend.clock import local_today
from backend.config import Settings
from backend.deps import CurrentActor, Reads, Tx
from backend.guards import require_roles
from backend.jobs import service as jobs
from backend.jobs.service import Job
from backend.jobs.uploads import size_of, upload_slot
from backend.premiums import adjustments, blocks, payments, receipts, remittance, reports
from backend.premiums.adjustments import AdjustmentRequest, Decision, PaymentEvent, PaymentEvents
from backend.premiums.blocks import Block, BlockBalances, BlockIssue, Retired
from backend.premiums.payments import Payment, PaymentIn, Receipt
from backend.premiums.receipts import ReceiptCheck
from backend.premiums.remittance import CollectorDay, RemittanceIn
from backend.printing.responses import PDF, PDF_RESPONSE, pdf_response
from backend.tabular import CellLimitExceeded, LimitExceeded
from backend.timeouts import TIMEOUT_OPT

FILE_LIMITS = (LimitExceeded, CellLimitExceeded)  # raised while the file is read (backend/tabular.py)
REVIEWERS = require_roles(Role.TOWNSHIP_REVIEWER, Role.DISTRICT_ADMIN)
COLLECTORS = require_roles(Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER)
PAYMENTS_ROUTE = "POST /api/v1/payments"
STATEMENT_TIMEOUT_S = 600  # a 20 MB statement over a slow township line


class RetireRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PaymentList(msgspec.Struct, frozen=True):
    items: list[Payment]


class ReceiptBlockController(Controller):
    path = "/api/v1/receipt-blocks"
    tags = ["premiums"]

    @post("/", summary="Issue a block of receipt numbers to a collector or a collector's tablet", guards=[REVIEWERS])
    async def issue(self, data: JSONBody[BlockIssue], tx: Tx, actor: CurrentActor) -> Block:
        return await blocks.issue_block(tx, actor, data)

    @get("/", summary="Receipt blocks and their balance: issued = used + voided + retired + open")
    async def balances(self, tx: Tx, actor: CurrentActor, collector_id: FromQuery[UUID | None] = None) -> BlockBalances:
        if actor.role == Role.TOWNSHIP_STAFF:
            collector_id = actor.id  # staff see their own blocks
        return await blocks.block_balances(tx, actor, collector_id)

    @post("/{block_id:uuid}/retire", status_code=200, summary="Retire a block's unused numbers", guards=[REVIEWERS])
    async def retire(
        self, block_id: FromPath[UUID], data: JSONBody[RetireRequest], tx: Tx, actor: CurrentActor
    ) -> Retired:
        return await blocks.retire_unused(tx, actor, block_id, data.reason)


class PaymentController(Controller):
    path = "/api/v1/payments"
    tags = ["premiums"]

    @post(
        "/",
        summary="Record a payment exactly once (Idempotency-Key required)",
        guards=[COLLECTORS],
        responses={201: ResponseSpec(Receipt, description="The receipt; a replay of the key gives it again")},
    )
    async def record(
        self,
        data: JSONBody[PaymentIn],
        tx: Tx,
        actor: CurrentActor,
        state: State,
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", required=True, schema_extra=idempotency.KEY_SCHEMA)
        ] = None,
    ) -> Response[bytes]:
        key = idempotency.check_key(idempotency_key)
        claim = idempotency.Claim(actor.id, key, PAYMENTS_ROUTE, idempotency.request_hash(PAYMENTS_ROUTE, data))
        answer = await payments.record_claimed_payment(
            tx, actor, data, claim, timezone=state.settings.timezone, code_key=state.key.secret
        )
        if isinstance(answer, idempotency.Stored):
            return answer.replayed()
        _receipt, body = answer  # stored as the key's answer by the payment's statement
        assert body is not None
        return Response(body, status_code=201, media_type="application/json")

    @get("/", summary="The payments of a household (a year's, or all), oldest first")
    async def of_household(
        self,
        tx: Tx,
        actor: CurrentActor,
        household_id: FromQuery[UUID],
        year: Annotated[int | None, QueryParameter(ge=2000, le=2100, description="coverage year")] = None,
    ) -> PaymentList:
        return PaymentList(items=await payments.household_payments(tx, actor, household_id, year))

    @get("/{payment_id:uuid}", summary="A payment")
    async def get_payment(self, payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Payment:
        return await payments.get_payment(tx, actor, payment_id)

    @get(
        "/{payment_id:uuid}/receipt.pdf",
        summary="A payment's receipt (参保缴费凭证) as a PDF, with its verification code",
        media_type=PDF,
        responses={200: PDF_RESPONSE},
    )
    async def receipt(self, payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State) -> Response[bytes]:
        body = await receipts.staff_receipt(tx, actor, payment_id, state.key.secret)
        return pdf_response(body, f"receipt-{payment_id}.pdf")

    @get("/{payment_id:uuid}/events", summary="A payment's void and refund requests and decisions")
    async def events(self, payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> PaymentEvents:
        return await adjustments.payment_events(tx, actor, payment_id)

    @post("/{payment_id:uuid}/adjustments", summary="Ask for a void (same day) or a refund", guards=[COLLECTORS])
    async def adjust(
        self, payment_id: FromPath[UUID], data: JSONBody[AdjustmentRequest], tx: Tx, actor: CurrentActor, state: State
    ) -> PaymentEvent:
        return await adjustments.request_adjustment(tx, actor, payment_id, data, local_today(state.settings.timezone))


class ReceiptCheckController(Controller):
    path = "/api/v1/receipts"
    tags = ["premiums"]

    @get(
        "/verify",
        summary="Check that a receipt is genuine: its number and verification code (public, rate-limited)",
        description="Answers whether the code belongs to the receipt number and, if it does, the amount, date "
        "and coverage year it was paid for, and whether the payment was voided or refunded; nothing about "
        "the household. Wrong codes count against the caller's address, as resident log-ins do.",
    )
    async def verify(
        self,
        state: State,
        request: Request[Any, Any, Any],
        receipt_no: Annotated[
            str, QueryParameter(pattern=fields.RECEIPT_NO, description="the receipt number printed on it")
        ],
        code: Annotated[str, QueryParameter(min_length=1, max_length=40, description="the verification code")],
    ) -> ReceiptCheck:
        client = request.client.host if request.client else "unknown"
        caller = state.key.keyed_hash("receipt-check-addr", client)
        async with state.pool.acquire() as conn:  # autocommit: a wrong code counts although it is refused
            return await receipts.check_receipt(conn, state.settings, caller, receipt_no, code)


class AdjustmentController(Controller):
    path = "/api/v1/payment-adjustments"
    tags = ["premiums"]

    @get("/", summary="Voids and refunds awaiting a decision in your scope")
    async def pending(self, tx: Tx, actor: CurrentActor) -> PaymentEvents:
        return await adjustments.pending_requests(tx, actor)

    @post(
        "/{request_id:uuid}/decision",
        summary="Approve or reject (never your own)",
        guards=[require_roles(Role.TOWNSHIP_REVIEWER)],
    )
    async def decide(
        self, request_id: FromPath[UUID], data: JSONBody[Decision], tx: Tx, actor: CurrentActor, state: State
    ) -> PaymentEvent:
        return await adjustments.decide_adjustment(tx, actor, request_id, data, local_today(state.settings.timezone))


class CollectorDayController(Controller):
    path = "/api/v1/collector-days"
    tags = ["premiums"]

    @get("/{collector_id:uuid}/{day:date}", summary="A collector's cash day: collected, voided, remitted, difference")
    async def day(self, collector_id: FromPath[UUID], day: FromPath[date], tx: Tx, actor: CurrentActor) -> CollectorDay:
        return await remittance.collector_day(tx, actor, collector_id, day)

    @post("/remittances", summary="Record cash handed to the bank for a collector's day", guards=[COLLECTORS])
    async def remit(self, data: JSONBody[RemittanceIn], tx: Tx, actor: CurrentActor) -> CollectorDay:
        return await remittance.record_remittance(tx, actor, data)

    @post(
        "/{collector_id:uuid}/{day:date}/close",
        status_code=200,
        summary="Close a collector's day (reviewer)",
        guards=[require_roles(Role.TOWNSHIP_REVIEWER)],
    )
    async def close(
        self, collector_id: FromPath[UUID], day: FromPath[date], tx: Tx, actor: CurrentActor
    ) -> CollectorDay:
        return await remittance.close_day(tx, actor, collector_id, day)


class StatementUpload(msgspec.Struct):
    file: UploadFile


class CollectionReportController(Controller):
    path = "/api/v1/reports/collections"
    tags = ["reports"]

    @get(
        "/",
        summary="Collections per township, collector or day: cash, QR, bank, voided, refunded (JSON, CSV, XLSX)",
        guards=[REVIEWERS],
    )
    async def collections(
        self,
        tx: Tx,
        reads: Reads,
        actor: CurrentActor,
        date_from: Annotated[date, QueryParameter(name="from")],
        date_to: Annotated[date, QueryParameter(name="to")],
        group: FromQuery[reports.Group] = "collector",
        format: FromQuery[tables.Format] = "json",
        column_headers: tables.HeadersQuery = "names",
        encoding: tables.EncodingQuery = "utf-8",
    ) -> Response[reports.CollectionsReport | bytes]:
        report = await reports.collections(tx, actor, group, date_from, date_to, reads=reads)
        if format == "json":
            return Response(report)
        body = reports.collections_file(report, format, column_headers, encoding)
        name = f"collections-{group}-{date_from}-{date_to}.{format}"
        return Response(
            body,
            media_type=tables.response_media_type(format),
            encoding=tables.charset(encoding),
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


class ReconciliationController(Controller):
    path = "/api/v1/reconciliations"
    tags = ["premiums"]

    @post(
        "/",
        status_code=200,
        summary="Reconcile QR and bank payments against a channel statement (CSV)",
        description=(
            "A statement up to CANBAO_SYNC_UPLOAD_MAX_BYTES (1 MiB) is reconciled in the request (200); a "
            "bigger one, or any with `background=true`, by a job worker: 202 with the job, whose result is "
            "the same report."
        ),
        guards=[REVIEWERS],
        request_max_body_size=20_000_000,
        opt={TIMEOUT_OPT: STATEMENT_TIMEOUT_S, RAISES: FILE_LIMITS},
        middleware=[upload_slot(STATEMENT_TIMEOUT_S)],
        responses={202: ResponseSpec(Job, description="Stored; a worker reconciles it (follow the job)")},
    )
    async def reconcile(
        self,
        tx: Tx,
        actor: CurrentActor,
        state: State,
        data: Annotated[StatementUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
        background: FromQuery[bool | None] = None,
    ) -> Response[reports.Reconciliation | Job]:
        settings: Settings = state.settings
        source = data.file.file
        size = await asyncio.to_thread(size_of, source)
        if background or (background is None and size > settings.sync_upload_max_bytes):
            job = await jobs.enqueue(
                tx,
                actor,
                reports.RECONCILIATION,
                {},
                division_code=actor.scope.division_code,
                settings=settings,
                file=source,
                file_name=data.file.filename or "statement.csv",
                file_bytes=size,
            )
            return Response(job, status_code=202, headers={"Location": job.href})
        lines = reports.parse_statement(await data.file.read())
        return Response(await reports.reconcile(tx, actor, lines), status_code=200)
