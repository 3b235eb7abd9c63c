"""The household page: found by ID number (a POST form: the number never goes in a URL), household
number or the head's name; its members, enrolments by year with their cover and reasons, what was
due and paid, the payments with their receipts (the PDF), each member's continuous years, and its
audit trail (`GET /households/{id}/audit`: rows about it, its enrolments and payments).

Services: `enrollment.search.search` and `households.get_household` (`POST /households/search`,
`GET /households/{id}`), `quotes.premium_quote`, `payments.household_payments`
(`GET /payments?household_id=`), `receipts.staff_receipt`, `adjustments.request_adjustment`.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Template

from backend.actor import Role
from backend.audit import service as audit
from backend.clock import local_today
from backend.deps import CurrentActor, Tx
from backend.enrollment import households, quotes
from backend.enrollment import search as household_search
from backend.guards import require_roles
from backend.i18n import _
from backend.premiums import adjustments, payments, receipts
from backend.printing.responses import pdf_response
from backend.web.pages import attempt, page

TRAIL_ROWS = 50  # the newest rows of the household's audit trail; the API pages through the rest
COLLECTORS = require_roles(Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER)  # as POST /payments/{id}/adjustments


def _search_page(request: Request[Any, Any, Any], **context: Any) -> Template:
    return page(request, "console/households.html", title=_("Households"), **context)


@get("/households", include_in_schema=False)
async def search_form(request: Request[Any, Any, Any]) -> Template:
    return _search_page(request, results=None, criteria={})


@post("/households", include_in_schema=False)
async def search(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    """The search, by POST: an ID number stays in the body, never in the URL or the logs."""
    form = await request.form()
    criteria = {name: str(form.get(name) or "").strip() or None for name in ("id_number", "household_no", "head_name")}
    if not any(criteria.values()):
        return _search_page(
            request, results=None, criteria={}, error=_("Enter an ID number, a household number or a name.")
        )
    try:
        query = msgspec.convert(criteria, household_search.HouseholdSearch)
    except msgspec.ValidationError as exc:
        return _search_page(request, results=None, criteria={}, error=str(exc))
    found, error = await attempt(
        tx, lambda: household_search.search(tx, actor, query, local_today(state.settings.timezone))
    )
    # The number typed is not shown back: the page would keep it in the browser's history.
    shown = {k: v for k, v in criteria.items() if k != "id_number"}
    return _search_page(request, results=found.items if found else [], criteria=shown, error=error)


@get("/households/{household_id:uuid}", include_in_schema=False)
async def household_page(
    household_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    return await _household(request, tx, actor, state, household_id)


async def _household(
    request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, state: State, household_id: UUID, **extra: Any
) -> Template:
    today = local_today(state.settings.timezone)
    query_year = request.query_params.get("year", "")
    year = int(query_year) if query_year.isdigit() and len(query_year) == 4 else today.year
    household = await households.get_household(tx, actor, household_id, year, today)  # NotFound out of scope
    quote, quote_error = await attempt(tx, lambda: quotes.premium_quote(tx, actor, household_id, year, today))
    paid = await payments.household_payments(tx, actor, household_id, None)
    trail = await audit.household_trail(tx, actor, household_id, None, TRAIL_ROWS)
    years: dict[int, list[tuple[str, Any]]] = {}
    for member in household.members:
        for enrolment in member.enrollments:
            years.setdefault(enrolment.coverage_year or year, []).append((member.name, enrolment))
    return page(
        request,
        "console/household.html",
        title=_("Household {number}", number=household.household_no),
        household=household,
        year=year,
        quote=quote,
        quote_error=quote_error,
        years=sorted(years.items(), reverse=True),
        payments=list(reversed(paid)),
        trail=trail,
        may_adjust=actor.role in (Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER),
        **extra,
    )


@get("/payments/{payment_id:uuid}/receipt.pdf", include_in_schema=False)
async def receipt(payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State) -> Response[bytes]:
    """The receipt PDF, as `GET /payments/{id}/receipt.pdf` gives it."""
    body = await receipts.staff_receipt(tx, actor, payment_id, state.key.secret)
    return pdf_response(body, f"receipt-{payment_id}.pdf")


@post("/payments/{payment_id:uuid}/adjustments", guards=[COLLECTORS], include_in_schema=False)
async def request_adjustment(
    payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    """Ask for a void (same day) or a refund of the whole payment; another reviewer decides."""
    form = await request.form()
    payment = await payments.get_payment(tx, actor, payment_id)
    kind: Literal["void", "refund"] = "refund" if form.get("kind") == "refund" else "void"
    reason = str(form.get("reason") or "").strip()[:100]
    if not reason:
        return await _household(
            request, tx, actor, state, payment.household_id, error=_("Write why the payment is to be undone.")
        )
    data = adjustments.AdjustmentRequest(kind=kind, reason=reason)
    today = local_today(state.settings.timezone)
    done, error = await attempt(tx, lambda: adjustments.request_adjustment(tx, actor, payment_id, data, today))
    flash = _("Request sent: another reviewer decides it.") if done is not None else None
    return await _household(request, tx, actor, state, payment.household_id, flash=flash, error=error)


HANDLERS = [search_form, search, household_page, receipt, request_adjustment]
