"""The console's session: the API's own tokens in one signed, HttpOnly, SameSite=Strict cookie.

The cookie holds what `POST /api/v1/auth/login` answers — the access and the refresh token — with
the username and the time of the last request, signed with the app's signing key (so the time
cannot be moved). `console_session`, the middleware of every console route, turns it into the same
`Actor` the bearer middleware gives the API (`auth.middleware.user_actor`, checked against the
database on every request), so guards, services and scope are the API's:

- an access token that expired is refreshed quietly with the refresh token (`auth.service.refresh`),
  and the new pair goes back in the cookie of the same answer;
- a session left unused for `CANBAO_CONSOLE_IDLE_TIMEOUT_S` is ended as a logout would
  (`auth.service.logout`: the refresh family revoked, audited), and the browser sent to the login;
- every state-changing request carries the CSRF token (`_csrf` form field, or the `X-CSRF-Token`
  header htmx sends): an HMAC of the session id under the signing key, checked here before the handler.

Routes that need no session (the login page) set `opt={"console_public": True}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

from backend.actor import Actor
from backend.auth import service
from backend.auth.middleware import user_actor
from backend.auth.service import AuthContext, TokenPair
from backend.auth.tokens import AccessClaims, SigningKey, decode_access
from backend.config import Settings
from backend.errors import DomainError
from backend.i18n import _
from backend.replicas import read_after_cookie

SESSION_SCOPE_KEY = "canbao_console"  # where the middleware leaves the ConsoleSession in the ASGI scope
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"
LOGIN_CSRF_COOKIE = "canbao_login_csrf"
LOGIN_PATH = "/console/login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The security headers of every page of the console and the residents' page: no script, style or
# image from anywhere but this app, no inline script, never in a frame.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PAGE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class Payload(msgspec.Struct, frozen=True):
    a: str  # access token
    r: str  # refresh token
    u: str  # username, to greet
    t: int  # last request, seconds since the epoch


class ConsoleSession(msgspec.Struct, kw_only=True):
    """What a console handler knows of its session (`session_of(request)`)."""

    username: str
    csrf: str
    actor: Actor
    ended: bool = False  # set by logout: the answer clears the cookie


def cookie_name(settings: Settings, base: str = "canbao_console") -> str:
    """Behind TLS the cookie is Secure and `__Host-` prefixed (no Domain, path /, never over HTTP)."""
    return f"__Host-{base}" if settings.cookie_secure else base


def _mac(key: SigningKey, purpose: bytes, data: bytes) -> bytes:
    return hmac.new(key.secret, b"canbao-console-" + purpose + b":" + data, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: SigningKey, payload: Payload) -> str:
    body = msgspec.json.encode(payload)
    return f"{_b64(body)}.{_b64(_mac(key, b'session', body))}"


def unseal(key: SigningKey, value: str) -> Payload | None:
    try:
        body_text, mac_text = value.split(".", 1)
        body = _unb64(body_text)
        if not hmac.compare_digest(_unb64(mac_text), _mac(key, b"session", body)):
            return None
        return msgspec.json.decode(body, type=Payload)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def csrf_token(key: SigningKey, session_id: Any) -> str:
    return _b64(_mac(key, b"csrf", str(session_id).encode()))[:32]


def page_cookie(settings: Settings, base: str, value: str, max_age: int | None = None) -> Cookie:
    """A page cookie: HttpOnly, SameSite=Strict, path / (as a `__Host-` cookie must have), Secure behind TLS."""
    return Cookie(
        key=cookie_name(settings, base),
        value=value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )


def session_cookie(settings: Settings, value: str) -> Cookie:
    return page_cookie(settings, "canbao_console", value)


def cleared_cookie(settings: Settings) -> Cookie:
    return page_cookie(settings, "canbao_console", "", 0)


def login_csrf_cookie(settings: Settings, value: str, max_age: int | None = None) -> Cookie:
    """The login form's double-submit token: a cookie and a hidden field that must agree."""
    return page_cookie(settings, LOGIN_CSRF_COOKIE, value, max_age)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def start(settings: Settings, key: SigningKey, username: str, pair: TokenPair) -> Cookie:
    """The cookie of a session that just logged in."""
    return session_cookie(settings, seal(key, Payload(a=pair.access_token, r=pair.refresh_token, u=username, t=_now())))


def session_of(request: Request[Any, Any, Any]) -> ConsoleSession:
    found = request.scope.get(SESSION_SCOPE_KEY)
    assert isinstance(found, ConsoleSession), "a console handler without the console_session middleware"
    return found


def _now() -> int:
    return int(time.time())


def read_cookie(scope: Scope, name: str) -> str | None:
    for header_name, value in scope["headers"]:
        if header_name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _eq, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": headers}
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)


async def _to_login(scope: Scope, send: Send, settings: Settings, *, expired: bool = False) -> None:
    """Back to the login page (htmx follows `HX-Redirect`), the cookie cleared."""
    path = scope.get("path", "/console/")
    query = f"?next={quote(path)}" if scope.get("method") == "GET" else ""
    if expired:
        query += ("&" if query else "?") + "expired=1"
    target = (LOGIN_PATH + query).encode()
    headers = [cleared_cookie(settings).to_encoded_header(), *PAGE_HEADERS]
    if any(k == b"hx-request" for k, _v in scope["headers"]):
        await respond(send, 200, [(b"hx-redirect", target), *headers])
    else:
        await respond(send, 303, [(b"location", target), *headers])


async def forbidden(send: Send) -> None:
    """A form without its session's CSRF token: refused before the handler runs."""
    text = _("The form expired: go back, reload the page and send it again.")
    await respond(send, 403, [(b"content-type", b"text/plain; charset=utf-8"), *PAGE_HEADERS], text.encode())


async def _claims(auth: AuthContext, key: SigningKey, payload: Payload) -> tuple[AccessClaims, Payload] | None:
    """The access token's claims, refreshing the pair when it has expired; None when the session is gone."""
    try:
        return decode_access(key, payload.a), payload
    except DomainError:
        pass
    try:
        pair = await service.refresh(auth, payload.r)
        fresh = msgspec.structs.replace(payload, a=pair.access_token, r=pair.refresh_token)
        return decode_access(key, fresh.a), fresh
    except DomainError:
        return None


def console_session(app: ASGIApp) -> ASGIApp:
    """The middleware of the console's routes (see the module's docstring)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        state = scope["app"].state
        settings: Settings = state.settings
        key: SigningKey = state.key

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *PAGE_HEADERS]
            await send(message)

        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get("console_public"):
            await app(scope, receive, send_with_headers)
            return
        raw = read_cookie(scope, cookie_name(settings))
        payload = unseal(key, raw) if raw else None
        if payload is None:
            await _to_login(scope, send, settings)
            return
        found = await _claims(state.auth, key, payload)
        if found is None:
            await _to_login(scope, send, settings, expired=True)
            return
        claims, payload = found
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive)
        try:
            actor = await user_actor(connection, claims, scope["path"])
        except DomainError:
            await _to_login(scope, send, settings, expired=True)
            return
        if _now() - payload.t > settings.console_idle_timeout_s:
            async with state.pool.acquire() as conn, conn.transaction():
                await service.logout(conn, actor)
            await _to_login(scope, send, settings, expired=True)
            return
        session = ConsoleSession(username=payload.u, csrf=csrf_token(key, claims.sid), actor=actor)
        scope["user"] = actor
        scope["auth"] = claims
        # The route's guards judge the caller before a form is read for its token: one they refuse
        # goes on unread and the route refuses it as always. Else any console user could make the
        # server hold a form as large as the route allows (a list upload's 512 MB) for nothing.
        writing = scope.get("method", "GET") not in SAFE_METHODS
        if writing and not await _refused(handler, connection) and not await csrf_ok(scope, receive, session.csrf):
            await forbidden(send)
            return
        scope[SESSION_SCOPE_KEY] = session  # type: ignore[literal-required]
        renewed = msgspec.structs.replace(payload, t=_now())

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = cleared_cookie(settings) if session.ended else session_cookie(settings, seal(key, renewed))
                # A page that wrote: the next pages read a replica only once it has this write.
                read_after = read_after_cookie(scope, settings.cookie_secure)
                message["headers"] = [
                    *message.get("headers", []),
                    cookie.to_encoded_header(),
                    *([read_after] if read_after is not None else []),
                ]
            await send_with_headers(message)

        await app(scope, receive, send_with_session)

    return middleware


async def _refused(handler: Any, connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether a guard of the route refuses the connection's user."""
    if handler is None:
        return False
    for guard in handler.resolve_guards():
        try:
            answer = guard(connection, handler)
            if inspect.isawaitable(answer):
                await answer
        except Exception:
            return True
    return False


async def csrf_ok(scope: Scope, receive: Receive, expected: str) -> bool:
    """The header htmx sends, else the form's hidden field (the parsed form is cached for the handler)."""
    header = next((v.decode("latin-1") for k, v in scope["headers"] if k == CSRF_HEADER.encode()), None)
    if header is not None:
        return hmac.compare_digest(header, expected)
    request: Request[Any, Any, Any] = Request(scope, receive)
    try:
        form = await request.form()
    except Exception:  # a body that is no form carries no token
        return False
    given = form.get(CSRF_FIELD)
    return isinstance(given, str) and hmac.compare_digest(given, expected)


def dumps(value: Any) -> str:
    """JSON for an attribute (`hx-headers`), escaped by the template."""
    return json.dumps(value, ensure_ascii=False)
