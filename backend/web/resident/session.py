"""The residents' page's session: the resident's own API token in one signed, HttpOnly,
SameSite=Strict cookie.

`POST /r/login` calls the resident login service the API's `POST /api/v1/resident/login` calls
(`backend.residents.service.login`: the same attempt limits, the same answer whichever of ID number,
name or code is wrong). The token it answers goes in the cookie; `resident_session`, the middleware
of every /r route, checks it on each request as the API's bearer middleware does
(`auth.middleware.resident_actor`: the session live, the person still in the household) and puts the
resident `Actor` where that middleware does. A resident's token is short-lived and has no refresh:
when it ends, the page goes back to the login. Every POST carries the CSRF token (an HMAC of the
session id), checked before the handler runs. Routes that need no session set
`opt={"resident_public": True}`.
"""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from backend.actor import Actor
from backend.auth.middleware import resident_actor
from backend.auth.tokens import SigningKey, decode_access
from backend.config import Settings
from backend.errors import DomainError
from backend.web.session import (
    PAGE_HEADERS,
    SAFE_METHODS,
    cookie_name,
    csrf_ok,
    csrf_token,
    forbidden,
    page_cookie,
    read_cookie,
    respond,
)

RESIDENT_PATH = "/r"
RESIDENT_LOGIN_PATH = "/r/login"
RESIDENT_COOKIE = "canbao_resident"
RESIDENT_LOGIN_CSRF_COOKIE = "canbao_resident_login"
RESIDENT_SCOPE_KEY = "canbao_resident"


class ResidentPayload(msgspec.Struct, frozen=True):
    a: str  # the resident's access token, as POST /api/v1/resident/login answers it


class ResidentSession(msgspec.Struct, kw_only=True):
    """What a residents' page handler knows of its session (`resident_session_of(request)`)."""

    csrf: str
    actor: Actor
    ended: bool = False  # set by logout: the answer clears the cookie


def _mac(key: SigningKey, data: bytes) -> bytes:
    return hmac.new(key.secret, b"canbao-resident-session:" + data, "sha256").digest()


def seal(key: SigningKey, token: str) -> str:
    body = msgspec.json.encode(ResidentPayload(a=token))
    return f"{body.hex()}.{_mac(key, body).hex()}"


def unseal(key: SigningKey, value: str) -> ResidentPayload | None:
    try:
        body_hex, mac_hex = value.split(".", 1)
        body = bytes.fromhex(body_hex)
        if not hmac.compare_digest(bytes.fromhex(mac_hex), _mac(key, body)):
            return None
        return msgspec.json.decode(body, type=ResidentPayload)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def session_cookie(settings: Settings, key: SigningKey, token: str, max_age: int) -> Cookie:
    return page_cookie(settings, RESIDENT_COOKIE, seal(key, token), max_age)


def cleared_cookie(settings: Settings) -> Cookie:
    return page_cookie(settings, RESIDENT_COOKIE, "", 0)


def login_csrf_cookie(settings: Settings, value: str, max_age: int | None = None) -> Cookie:
    """The login form's double-submit token: a cookie and a hidden field that must agree."""
    return page_cookie(settings, RESIDENT_LOGIN_CSRF_COOKIE, value, max_age)


def resident_session_of(request: Request[Any, Any, Any]) -> ResidentSession:
    found = request.scope.get(RESIDENT_SCOPE_KEY)
    assert isinstance(found, ResidentSession), "a residents' page handler without the resident_session middleware"
    return found


async def _to_login(send: Send, settings: Settings, *, expired: bool) -> None:
    target = (RESIDENT_LOGIN_PATH + ("?expired=1" if expired else "")).encode()
    headers = [(b"location", target), cleared_cookie(settings).to_encoded_header(), *PAGE_HEADERS]
    await respond(send, 303, headers)


def resident_session(app: ASGIApp) -> ASGIApp:
    """The middleware of the residents' page (see the module's docstring)."""

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
        if handler is not None and handler.opt.get("resident_public"):
            await app(scope, receive, send_with_headers)
            return
        raw = read_cookie(scope, cookie_name(settings, RESIDENT_COOKIE))
        payload = unseal(key, raw) if raw else None
        if payload is None:
            await _to_login(send, settings, expired=False)
            return
        try:
            claims = decode_access(key, payload.a)
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive)
            actor = await resident_actor(connection, claims)
        except DomainError:  # expired, logged out, or no longer in the household
            await _to_login(send, settings, expired=True)
            return
        session = ResidentSession(csrf=csrf_token(key, claims.sid), actor=actor)
        if scope.get("method", "GET") not in SAFE_METHODS and not await csrf_ok(scope, receive, session.csrf):
            await forbidden(send)
            return
        scope["user"] = actor
        scope["auth"] = claims
        scope[RESIDENT_SCOPE_KEY] = session  # type: ignore[literal-required]

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start" and session.ended:
                message["headers"] = [*message.get("headers", []), cleared_cookie(settings).to_encoded_header()]
            await send_with_headers(message)

        await app(scope, receive, send_with_session)

    return middleware
