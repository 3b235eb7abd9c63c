"""Log in, log out: the API's own auth service, the tokens kept in the session cookie."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect, Template

from backend.auth import service
from backend.deps import CurrentActor, Tx
from backend.errors import DomainError
from backend.i18n import _
from backend.web import session as sessions
from backend.web.pages import problem_text, public_page

PUBLIC = {"console_public": True}


def _safe_next(value: object) -> str:
    """Only a console path of this site: never another host after logging in."""
    text = value if isinstance(value, str) else ""
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not (text == "/console" or text.startswith("/console/")):
        return "/console/"
    return text


def _login_form(
    state: State,
    *,
    next_path: str,
    message: str | None = None,
    username: str = "",
    expired: bool = False,
    status: int = 200,
) -> Template:
    token = sessions.new_login_csrf()
    response = public_page(
        "console/login.html",
        title=_("Log in"),
        status_code=status,
        login_csrf=token,
        next_path=next_path,
        message=message,
        username=username,
        expired=expired,
    )
    response.cookies.append(sessions.login_csrf_cookie(state.settings, token))
    return response


@get("/login", opt=PUBLIC, include_in_schema=False)
async def login_page(state: State, request: Request[Any, Any, Any]) -> Template:
    return _login_form(
        state, next_path=_safe_next(request.query_params.get("next")), expired="expired" in request.query_params
    )


@post("/login", opt=PUBLIC, include_in_schema=False)
async def login(state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    form = await request.form()
    username = str(form.get("username") or "").strip()[:64]
    password = str(form.get("password") or "")[:256]
    next_path = _safe_next(form.get("next"))
    expected = request.cookies.get(sessions.cookie_name(state.settings, sessions.LOGIN_CSRF_COOKIE), "")
    given = str(form.get(sessions.CSRF_FIELD) or "")
    if not expected or not hmac.compare_digest(expected, given):
        return _login_form(
            state,
            next_path=next_path,
            username=username,
            message=_("The form expired: please log in again."),
            status=403,
        )
    if not username or not password:
        return _login_form(
            state, next_path=next_path, username=username, message=_("Enter your username and password."), status=422
        )
    client = request.client.host if request.client else "unknown"
    try:
        pair = await service.login(state.auth, username, password, client)
    except DomainError as exc:
        return _login_form(state, next_path=next_path, username=username, message=problem_text(exc), status=exc.status)
    response: Response[Any] = Redirect(next_path, status_code=303)
    response.cookies.append(sessions.start(state.settings, state.key, username, pair))
    response.cookies.append(sessions.login_csrf_cookie(state.settings, "", max_age=0))
    return response


@post("/logout", include_in_schema=False)
async def logout(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Redirect:
    """Ends the session as `POST /api/v1/auth/logout` does (its refresh family revoked, audited)."""
    await service.logout(tx, actor)
    sessions.session_of(request).ended = True
    return Redirect(sessions.LOGIN_PATH, status_code=303)
