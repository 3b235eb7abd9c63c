"""Every console page, walked as another township's staff and reviewer and as a resident: nothing of
township A comes back (the pages are not in the OpenAPI schema, so they are listed here; a new
console route fails `test_every_console_route_is_walked` until it is)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.access.test_scope_walk import resident_of_another_household, township_a_records
from tests.factories import ID_NUMBERS
from tests.web.helpers import console_login
from tests.web.test_office_scope import PAGES as OFFICE_PAGES

# (method, path template, form) — the form's `{sample}` values are filled like the path's.
PAGES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/console", {}),
    ("GET", "/console/enrollments?year={year}&status=registered", {}),
    ("POST", "/console/enrollments/confirm", {"ids": "{enrollment_id}"}),
    ("GET", "/console/adjustments", {}),
    ("POST", "/console/adjustments/{request_id}/decide", {"approve": "yes"}),
    ("GET", "/console/collector-days?collector_id={collector_id}&day={day}", {}),
    ("POST", "/console/collector-days/{collector_id}/{day}/remittances", {"amount": "1", "bank_reference": "x"}),
    ("POST", "/console/collector-days/{collector_id}/{day}/close", {}),
    ("GET", "/console/sync", {}),
    ("POST", "/console/sync/conflicts/{conflict_id}/resolve", {"resolution": "discarded", "note": "x"}),
    ("POST", "/console/sync/quarantine/{quarantine_id}/settle", {"resolution": "dismiss", "note": "x"}),
    ("GET", "/console/households", {}),
    ("POST", "/console/households", {"id_number": ID_NUMBERS[1]}),
    ("POST", "/console/households", {"head_name": "张三"}),
    ("POST", "/console/households", {"household_no": "0002"}),
    ("GET", "/console/households/{household_id}", {}),
    ("GET", "/console/payments/{payment_id}/receipt.pdf", {}),
    ("POST", "/console/payments/{payment_id}/adjustments", {"kind": "void", "reason": "x"}),
    ("GET", "/console/reports", {}),
    ("GET", "/console/reports/coverage?year={year}&format=csv", {}),
    ("GET", "/console/reports/coverage-trend?year={year}&format=csv", {}),
    ("GET", "/console/reports/collections?from={from}&to={to}&format=csv", {}),
    ("GET", "/console/reports/enrolment-roster?year={year}&format=csv", {}),
    ("GET", "/console/login", {}),
]
NOT_WALKED = {
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
}  # the session's own: tests/web/test_console_session.py


def fill(template: str, samples: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: samples[m.group(1)], template)


def test_every_console_route_is_walked(app: Litestar) -> None:
    # The civil-affairs and district screens are walked by tests/web/test_office_scope.py.
    walked = {(method, re.sub(r"{\w+}", "{}", path.split("?")[0])) for method, path, _form in PAGES + OFFICE_PAGES}
    for route in app.routes:
        if not route.path.startswith("/console"):
            continue
        for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
            key = (method, re.sub(r"{\w+(:\w+)?}", "{}", route.path).rstrip("/") or "/console")
            assert key in walked | NOT_WALKED, f"{key} is not in tests/web/test_console_scope.py PAGES"


@pytest.mark.parametrize("outsider", ["staff_b", "reviewer_b", "resident"])
async def test_no_console_page_shows_township_a_to_another(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    outsider: str,
) -> None:
    samples = await township_a_records(client, conn)
    secrets = {v for k, v in samples.items() if k not in ("code", "year", "version", "day", "from", "to")}
    secrets |= {"staff_a", "北山", "张三", "李四", ID_NUMBERS[1], ID_NUMBERS[2], ID_NUMBERS[3], "A00000001"}
    headers: dict[str, str] = {}
    csrf = ""
    if outsider == "resident":
        headers = await resident_of_another_household(client)  # a resident's bearer token opens no page
    else:
        csrf = await console_login(client, outsider)
    for method, template, form in PAGES:
        url = fill(template, samples)
        data: dict[str, Any] = {k: fill(v, samples) for k, v in form.items()}
        if method == "POST":
            data["_csrf"] = csrf
        response = await client.request(method, url, data=data or None, headers=headers, follow_redirects=False)
        assert response.status_code != 500, f"{method} {url}: {response.text}"
        if outsider == "resident":
            assert response.status_code in (200, 303, 403), f"{method} {url}: {response.status_code}"
            assert response.status_code != 200 or url == "/console/login"
        else:
            assert response.status_code in (200, 403, 404), f"{method} {url}: {response.status_code}"
        leaked = [s for s in secrets if s in response.text]
        assert not leaked, f"{method} {url} leaked {leaked}"
    # Nothing of township A changed: the request is still pending, the day open, the conflict open.
    assert await conn.fetchval("SELECT count(*) FROM remittances") == 0
    assert await conn.fetchval("SELECT count(*) FROM sync_conflicts WHERE status = 'open'") == 1
    assert await conn.fetchval("SELECT count(*) FROM payment_events WHERE kind LIKE '%\\_requested'") == 1
