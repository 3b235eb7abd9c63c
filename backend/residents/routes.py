"""`/api/v1/resident`: a resident's login, their household's coverage, logout."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from backend.api_docs.openapi import RESIDENT_ID_SCHEMA
from backend.clock import local_today
from backend.deps import Autocommit, CurrentActor, FreshReads, Tx
from backend.guards import require_kind
from backend.premiums import receipts
from backend.premiums.receipts import HouseholdPayments
from backend.printing.responses import PDF, PDF_RESPONSE, pdf_response
from backend.residents import service
from backend.residents.service import HouseholdCoverage, ResidentToken

RESIDENTS = require_kind("resident")
OptionalYear = Annotated[int | None, QueryParameter(ge=2000, le=2100, description="coverage year (default: this year)")]


class ResidentLogin(msgspec.Struct, forbid_unknown_fields=True):
    id_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40, extra_json_schema=RESIDENT_ID_SCHEMA)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    query_code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]  # printed on the slip and receipts


class ResidentController(Controller):
    path = "/api/v1/resident"
    tags = ["resident"]

    @post(
        "/login",
        exclude_from_auth=True,
        status_code=200,
        summary="Log in as a resident with ID number, name and the household's query code",
    )
    async def login(
        self, data: JSONBody[ResidentLogin], state: State, request: Request[Any, Any, Any]
    ) -> ResidentToken:
        client = request.client.host if request.client else "unknown"
        today = local_today(state.settings.timezone)
        return await service.login(state.auth, data.id_number, data.name, data.query_code, client, today)

    @get(
        "/coverage",
        guards=[RESIDENTS],
        summary="Your household's enrolment, cover, subsidy and payments for a year, member by member",
    )
    async def coverage(
        self,
        autocommit: Autocommit,
        fresh_reads: FreshReads,
        actor: CurrentActor,
        state: State,
        year: OptionalYear = None,
    ) -> HouseholdCoverage:
        # No transaction: the reads are each a statement of their own, as in one at READ COMMITTED, and
        # the audit row the only write (a BEGIN and a COMMIT are two round trips of eight).
        today = local_today(state.settings.timezone)
        return await service.coverage(autocommit, actor, year or today.year, today, reads=fresh_reads)

    @get("/payments", guards=[RESIDENTS], summary="Your household's payments (all years, or `year`'s)")
    async def payments(self, tx: Tx, actor: CurrentActor, year: OptionalYear = None) -> HouseholdPayments:
        return await receipts.resident_payments(tx, actor, year)

    @get(
        "/payments/{payment_id:uuid}/receipt.pdf",
        guards=[RESIDENTS],
        summary="The receipt (参保缴费凭证) of one of your household's payments, as a PDF",
        media_type=PDF,
        responses={200: PDF_RESPONSE},
    )
    async def receipt(self, payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State) -> Response[bytes]:
        body = await receipts.resident_receipt(tx, actor, payment_id, state.key.secret)
        return pdf_response(body, f"receipt-{payment_id}.pdf")

    @post("/logout", status_code=204, guards=[RESIDENTS], summary="End this resident session")
    async def logout(self, tx: Tx, actor: CurrentActor) -> None:
        await service.logout(tx, actor)
