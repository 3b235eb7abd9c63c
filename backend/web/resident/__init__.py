"""The residents' page at /r/: an H5 page for a phone in WeChat's browser. A resident logs in with
ID number, name and the household's query code (the API's resident login service: the same limits
and answers) and reads the household's cover for this year and next, the money (premium, what the
government pays, what was paid, the balance), the year's policy, the last receipt, and how to enrol
or pay. Every read is the resident API's service call (`backend.residents.service.coverage`,
`backend.premiums.receipts`), for the resident's own household only. Its own small stylesheet
(`static/resident.css`), no script.
"""

from __future__ import annotations

import hmac
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template

from backend import i18n
from backend.clock import local_today
from backend.deps import Autocommit, CurrentActor, FreshReads, Tx
from backend.errors import DomainError, InvalidInput, NotAuthenticated
from backend.i18n import _
from backend.policy import service as policy
from backend.policy.service import PolicyVersion
from backend.premiums import receipts
from backend.premiums.receipts import HouseholdPayment, ReceiptCheck
from backend.printing.responses import pdf_response
from backend.residents import service as residents
from backend.residents.service import HouseholdCoverage
from backend.web.pages import problem_text
from backend.web.resident.session import (
    RESIDENT_LOGIN_CSRF_COOKIE,
    RESIDENT_LOGIN_PATH,
    RESIDENT_PATH,
    login_csrf_cookie,
    resident_session,
    resident_session_of,
    session_cookie,
)
from backend.web.session import CSRF_FIELD, cookie_name, new_login_csrf

PUBLIC = {"resident_public": True}


class YearView(msgspec.Struct, frozen=True, kw_only=True):
    """One coverage year on the page: the household's cover and money, and the year's policy."""

    year: int
    coverage: HouseholdCoverage
    policy: PolicyVersion | None
    enrolled: bool  # someone of the household has an enrolment (or imported cover) for the year


def _template(template: str, *, title: str, status_code: int = 200, **context: Any) -> Template:
    return Template(
        template_name=template,
        status_code=status_code,
        context={"title": title, "lang": i18n.language_tag(), "csrf_field": CSRF_FIELD, **context},
    )


def _login_form(
    state: State,
    *,
    message: str | None = None,
    id_number: str = "",
    name: str = "",
    expired: bool = False,
    status: int = 200,
) -> Template:
    token = new_login_csrf()
    response = _template(
        "resident/login.html",
        title=_("Residents' page"),
        status_code=status,
        login_csrf=token,
        message=message,
        id_number=id_number,
        name=name,
        expired=expired,
        help=state.settings.resident_help,
    )
    response.cookies.append(login_csrf_cookie(state.settings, token))
    return response


def _refusal(exc: DomainError) -> str:
    """A refused login as one line; a malformed ID number names the field in words."""
    if isinstance(exc, InvalidInput):
        errors = exc.extra.get("errors") or [{}]
        return _("ID number: {problem}", problem=errors[0].get("message", ""))
    return problem_text(exc)


@get("/login", opt=PUBLIC, include_in_schema=False)
async def login_page(state: State, request: Request[Any, Any, Any]) -> Template:
    return _login_form(state, expired="expired" in request.query_params)


@post("/login", opt=PUBLIC, include_in_schema=False)
async def login(state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    """The API's resident login (`backend.residents.service.login`): the same attempt limits per ID
    number and per address, and one answer whether the number, the name or the code is wrong."""
    form = await request.form()
    id_number = str(form.get("id_number") or "").strip()[:40]
    name = str(form.get("name") or "").strip()[:100]
    code = str(form.get("query_code") or "").strip()[:40]
    expected = request.cookies.get(cookie_name(state.settings, RESIDENT_LOGIN_CSRF_COOKIE), "")
    given = str(form.get(CSRF_FIELD) or "")
    if not expected or not hmac.compare_digest(expected, given):
        return _login_form(state, message=_("The form expired: please log in again."), status=403)
    if not (id_number and name and code):
        return _login_form(
            state,
            message=_("Enter your ID number, your name and the query code."),
            id_number=id_number,
            name=name,
            status=422,
        )
    client = request.client.host if request.client else "unknown"
    try:
        token = await residents.login(state.auth, id_number, name, code, client, local_today(state.settings.timezone))
    except DomainError as exc:
        return _login_form(state, message=_refusal(exc), id_number=id_number, name=name, status=exc.status)
    response: Response[Any] = Redirect(f"{RESIDENT_PATH}/", status_code=303)
    response.cookies.append(session_cookie(state.settings, state.key, token.access_token, token.expires_in))
    response.cookies.append(login_csrf_cookie(state.settings, "", max_age=0))
    return response


@post("/logout", include_in_schema=False)
async def logout(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Redirect:
    """Ends the session as `POST /api/v1/resident/logout` does."""
    await residents.logout(tx, actor)
    resident_session_of(request).ended = True
    return Redirect(RESIDENT_LOGIN_PATH, status_code=303)


def _last(payments: list[HouseholdPayment]) -> HouseholdPayment | None:
    live = [p for p in payments if not p.voided]
    return max(live or payments, key=lambda p: (p.business_date, p.receipt_no), default=None)


@get("/", include_in_schema=False)
async def home(
    autocommit: Autocommit,
    fresh_reads: FreshReads,
    actor: CurrentActor,
    state: State,
    request: Request[Any, Any, Any],
) -> Template:
    """The household's cover and money for this year and next, as the resident API answers them (read
    on a replica that has replayed all the primary had committed, as the API's, backend.replicas; no
    transaction on the primary, as the API's)."""
    today = local_today(state.settings.timezone)
    views = []
    for year in (today.year, today.year + 1):
        coverage = await residents.coverage(autocommit, actor, year, today, reads=fresh_reads)
        version = await policy.in_force(fresh_reads, year, today)
        enrolled = any(m.coverage_source is not None for m in coverage.members)
        if year == today.year or enrolled or version is not None:
            views.append(YearView(year=year, coverage=coverage, policy=version, enrolled=enrolled))
    payments = await receipts.resident_payments(autocommit, actor, None)
    session = resident_session_of(request)
    return _template(
        "resident/home.html",
        title=_("My household's medical insurance"),
        session=session,
        years=views,
        today=today,
        last_payment=_last(payments.items),
        help=state.settings.resident_help,
        household_no=views[0].coverage.household_no,
    )


@get("/payments/{payment_id:uuid}/receipt.pdf", include_in_schema=False)
async def receipt(payment_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State) -> Response[bytes]:
    """The receipt PDF, as `GET /api/v1/resident/payments/{id}/receipt.pdf` answers it."""
    body = await receipts.resident_receipt(tx, actor, payment_id, state.key.secret)
    return pdf_response(body, f"receipt-{payment_id}.pdf")


@get("/verify", opt=PUBLIC, include_in_schema=False)
async def verify(state: State, request: Request[Any, Any, Any]) -> Template:
    """Whether a receipt is genuine, as the public `GET /api/v1/receipts/verify` answers (the same
    limits per address): the amount, date and year paid for, never who paid."""
    receipt_no = request.query_params.get("receipt_no", "").strip()[:40]
    code = request.query_params.get("code", "").strip()[:40]
    answer: ReceiptCheck | None = None
    message = None
    if receipt_no and code:
        client = request.client.host if request.client else "unknown"
        caller = state.key.keyed_hash("receipt-check-addr", client)
        try:
            async with state.pool.acquire() as conn:  # autocommit: a wrong code counts although refused
                answer = await receipts.check_receipt(conn, state.settings, caller, receipt_no, code)
        except DomainError as exc:
            message = problem_text(exc)
    return _template(
        "resident/verify.html",
        title=_("Check a receipt"),
        receipt_no=receipt_no,
        answer=answer,
        message=message,
    )


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, NotAuthenticated):
        return Redirect(RESIDENT_LOGIN_PATH, status_code=303)
    assert isinstance(exc, DomainError)
    return _template(
        "resident/error.html", title=_("Could not be done"), status_code=exc.status, message=problem_text(exc)
    )


def resident_router() -> Router:
    return Router(
        path=RESIDENT_PATH,
        route_handlers=[login_page, login, logout, home, receipt, verify],
        middleware=[resident_session],
        opt={"exclude_from_auth": True},  # the bearer header is the API's; the page has its cookie
        exception_handlers={DomainError: _error_page},
        include_in_schema=False,
    )
