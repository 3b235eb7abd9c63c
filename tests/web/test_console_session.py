"""The console's session: the API's tokens in a cookie, CSRF on every form, logout, idle timeout,
quiet refresh, and the security headers of every page."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.web import session as sessions
from backend.web.session import CSP
from tests.web.helpers import console_login, csrf_of


def put(client: AsyncTestClient[Litestar], value: str) -> None:
    """The browser's cookie replaced by `value` (as a stolen or an old one would be sent)."""
    client.cookies.clear()
    client.cookies.set("canbao_console", value)


def sent(answer_cookie: str) -> str:
    """The session cookie's value in a Set-Cookie header."""
    return answer_cookie.split("canbao_console=", 1)[1].split(";", 1)[0]


async def test_root_and_console_go_to_the_login_and_pages_carry_the_csp(client: AsyncTestClient[Litestar]) -> None:
    root = await client.get("/", follow_redirects=False)
    assert root.headers["location"] == "/console/login"
    console = await client.get("/console/", follow_redirects=False)
    assert console.status_code == 303
    assert console.headers["location"] == "/console/login?next=/console"
    login = await client.get("/console/login")
    assert login.headers["content-security-policy"] == CSP
    assert "unsafe-inline" not in CSP
    assert login.headers["cache-control"] == "no-store"
    assert "<script>" not in login.text and "style=" not in login.text
    htmx = await client.get("/static/vendor/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:2000]
    licence = await client.get("/static/vendor/htmx.LICENSE")
    assert "Zero-Clause BSD" in licence.text


async def test_a_wrong_password_says_so_and_sets_no_session(client: AsyncTestClient[Litestar]) -> None:
    form = await client.get("/console/login")
    answer = await client.post(
        "/console/login",
        data={"username": "reviewer_a", "password": "wrong-password", "_csrf": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 401
    assert "canbao_console=" not in answer.headers.get("set-cookie", "") or "Max-Age=0" in answer.headers["set-cookie"]
    forged = await client.post(
        "/console/login", data={"username": "reviewer_a", "password": "x", "_csrf": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 403


async def test_the_cookie_is_httponly_strict_and_a_post_needs_the_csrf_token(
    client: AsyncTestClient[Litestar],
) -> None:
    csrf = await console_login(client, "reviewer_a")
    home = await client.get("/console/")
    cookie = home.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    refused = await client.post("/console/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403
    wrong = await client.post("/console/logout", data={"_csrf": "x" * 32}, follow_redirects=False)
    assert wrong.status_code == 403
    by_header = await client.get("/console/", headers={"X-CSRF-Token": csrf})
    assert by_header.status_code == 200


@pytest.mark.parametrize(("user", "read"), [("staff_a", False), ("civil", True)])
async def test_a_form_is_read_for_its_token_only_when_the_route_admits_the_caller(
    client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch, user: str, read: bool
) -> None:
    """A list upload takes 512 MB: a console user its route refuses (township staff) is refused by the
    route, the form never read for its token; a civil-affairs officer without the token is refused
    for the token, as any form."""
    asked: list[str] = []
    check = sessions.csrf_ok

    async def counted(scope: Any, receive: Any, expected: str) -> bool:
        asked.append(scope["path"])
        return await check(scope, receive, expected)

    monkeypatch.setattr(sessions, "csrf_ok", counted)
    await console_login(client, user)
    answer = await client.post(
        "/console/lists",
        files={"file": ("list.csv", "身份证号,姓名\n".encode())},
        data={"type": "di_bao", "note": "x" * (1 << 20)},  # no _csrf
    )
    assert answer.status_code == 403
    assert asked == (["/console/lists"] if read else [])
    assert ("The form expired" in answer.text) is read


async def test_logout_revokes_the_session_as_the_api_does(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    csrf = await console_login(client, "reviewer_a")
    stolen = client.cookies["canbao_console"]
    out = await client.post("/console/logout", data={"_csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'logout'") == 1
    # The old cookie, replayed: its tokens are revoked, so it leads to the login.
    put(client, stolen)
    again = await client.get("/console/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/console/login")


async def test_an_expired_access_token_is_refreshed_quietly_and_an_idle_session_ends(
    client: AsyncTestClient[Litestar],
    app: Litestar,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await console_login(client, "reviewer_a")
    key = app.state.key
    payload = sessions.unseal(key, client.cookies["canbao_console"])
    assert payload is not None
    # An access token that is no token any more (as an expired one): the refresh token renews it.
    put(client, sessions.seal(key, sessions.Payload(a="expired", r=payload.r, u="reviewer_a", t=payload.t)))
    page = await client.get("/console/", follow_redirects=False)
    assert page.status_code == 200
    renewed = sessions.unseal(key, sent(page.headers["set-cookie"]))
    assert renewed is not None and renewed.r != payload.r and renewed.a != "expired"
    # Unused for longer than the idle timeout: logged out (the family revoked), back to the login.
    idle = sessions.Payload(a=renewed.a, r=renewed.r, u="reviewer_a", t=int(time.time()) - 1_801)
    put(client, sessions.seal(key, idle))
    gone = await client.get("/console/", follow_redirects=False)
    assert gone.status_code == 303 and "expired=1" in gone.headers["location"]
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'logout'") == 1
    # A cookie whose signature does not hold is no session.
    put(client, sessions.seal(key, idle)[:-3] + "AAA")
    assert (await client.get("/console/", follow_redirects=False)).status_code == 303


@pytest.mark.parametrize("secure", [True])
async def test_behind_tls_the_cookie_is_secure_and_host_prefixed(secure: bool) -> None:
    from tests.conftest import make_settings

    settings = make_settings("postgresql://unused/x", cookie_secure=secure)
    cookie = sessions.session_cookie(settings, "v").to_header(header="")
    assert cookie.startswith("__Host-canbao_console=v") and "Secure" in cookie and "Path=/" in cookie
