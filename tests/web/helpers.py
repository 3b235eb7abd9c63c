"""Driving the console through the test client: log in with the form, read the CSRF token of a page."""

from __future__ import annotations

import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import PASSWORD

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def console_login(client: AsyncTestClient[Litestar], username: str, password: str = PASSWORD) -> str:
    """Logs in through the form; the client keeps the cookie. Returns the CSRF token of the dashboard."""
    form = await client.get("/console/login")
    assert form.status_code == 200, form.text
    answer = await client.post(
        "/console/login",
        data={"username": username, "password": password, "_csrf": csrf_of(form.text), "next": "/console/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    home = await client.get("/console/")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)
