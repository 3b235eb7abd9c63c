"""The civil-affairs and district screens and the residents' page, walked as another township's
staff and reviewer and as a resident: nothing of township A comes back, nothing of it changes.
A new route of `console/civil.py`, `console/admin.py` or `/r` fails
`test_every_screen_route_is_walked` until it is listed here."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.web.console import admin, civil
from tests.access.test_scope_walk import township_a_records
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member
from tests.web.helpers import console_login, csrf_of

# (method, path template, form) — the form's `{sample}` values are filled like the path's.
PAGES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/console/lists", {}),
    ("POST", "/console/lists", {"type": "di_bao", "effective_from": "2025-09-01"}),
    ("GET", "/console/jobs/{job_id}", {}),
    ("GET", "/console/jobs/{job_id}/status", {}),
    ("GET", "/console/lists/{list_id}", {}),
    ("GET", "/console/claims?status=pending", {}),
    ("POST", "/console/claims/{claim_id}/decide", {"decision": "reject", "reason": "x"}),
    ("GET", "/console/exclusion-reviews", {}),
    ("POST", "/console/exclusion-reviews/{review_id}/decide", {"decision": "cancel", "note": "x"}),
    ("GET", "/console/unenrolled?year={year}&village={code}", {}),
    ("GET", "/console/unenrolled/file?year={year}&format=csv", {}),
    ("GET", "/console/users", {}),
    (
        "POST",
        "/console/users",
        {
            "username": "intruder",
            "password": "a-long-passphrase",
            "role": "district_admin",
            "division_code": "330106000000",
        },
    ),
    ("POST", "/console/users/{user_id}", {"role": "township_staff", "division_code": "330106002000", "active": "yes"}),
    ("GET", "/console/devices", {}),
    ("POST", "/console/devices/{device_id}/{move}", {}),
    ("GET", "/console/partners", {}),
    ("POST", "/console/partners", {"name": "intruder"}),
    ("POST", "/console/partners/{partner_id}/rotate", {}),
    ("POST", "/console/partners/{partner_id}/disable", {}),
    ("GET", "/console/policy?year={year}", {}),
    (
        "POST",
        "/console/policy/{year}/versions/{version}",
        {"premium": "1", "effective_from": "2025-09-01", "window_start": "2025-09-01", "window_end": "2025-12-31"},
    ),
    (
        "POST",
        "/console/policy/{year}/versions",
        {"premium": "1", "effective_from": "2025-09-01", "window_start": "2025-09-01", "window_end": "2025-12-31"},
    ),
    ("GET", "/console/district?year={year}", {}),
]
RESIDENT_PAGES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/r", {}),
    ("GET", "/r/payments/{payment_id}/receipt.pdf", {}),
    ("GET", "/r/verify?receipt_no={receipt_no}&code=ABCDEFGH", {}),
    ("GET", "/r/login", {}),
]
NOT_WALKED = {("POST", "/r/login"), ("POST", "/r/logout")}  # the session's own: test_resident_page.py


def fill(template: str, samples: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: samples[m.group(1)], template)


def test_every_screen_route_is_walked(app: Litestar) -> None:
    walked = {(m, re.sub(r"{\w+}", "{}", p.split("?")[0])) for m, p, _f in PAGES + RESIDENT_PAGES}
    ours = {"/console" + path for handler in civil.HANDLERS + admin.HANDLERS for path in handler.paths}
    found = 0
    for route in app.routes:
        if not (route.path in ours or route.path == "/r" or route.path.startswith("/r/")):
            continue
        for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
            key = (method, re.sub(r"{\w+(:\w+)?}", "{}", route.path))
            assert key in walked | NOT_WALKED, f"{key} is not in tests/web/test_office_scope.py"
            found += 1
    assert found == len(walked | NOT_WALKED)


WRITES = "SELECT count(*) FROM audit_log WHERE action NOT IN ('read', 'report', 'denied', 'login')"
SECRET_SAMPLES = ("code", "year", "version", "day", "from", "to", "move")


@pytest.mark.parametrize("outsider", ["staff_b", "reviewer_b", "resident"])
async def test_no_screen_shows_township_a_to_another(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    outsider: str,
) -> None:
    samples = {**await township_a_records(client, conn), "move": "revoke"}
    secrets = {v for k, v in samples.items() if k not in SECRET_SAMPLES}
    secrets |= {"staff_a", "北山", "张三", "李四", "A00000001", "县人民医院", *ID_NUMBERS[1:4]}
    csrf = ""
    if outsider == "resident":
        # 赵六 of another household, logged in to the residents' page (a cookie of /r/ only).
        staff_a = await auth_headers(client, "staff_a")
        own = await create_household(client, staff_a, [member(ID_NUMBERS[8], "赵六")], household_no="0009")
        enrolled = await client.post(
            "/api/v1/enrollments",
            json={"household_id": own["id"], "coverage_year": 2026, "person_ids": [own["members"][0]["person_id"]]},
            headers=staff_a,
        )
        form = await client.get("/r/login")
        login = await client.post(
            "/r/login",
            data={
                "id_number": ID_NUMBERS[8],
                "name": "赵六",
                "query_code": enrolled.json()["query_code"],
                "_csrf": csrf_of(form.text),
            },
            follow_redirects=False,
        )
        assert login.status_code == 303, login.text
        csrf = csrf_of((await client.get("/r/")).text)
    else:
        csrf = await console_login(client, outsider)
    before = await conn.fetchval(WRITES)
    for method, template, form in PAGES + RESIDENT_PAGES:
        url = fill(template, samples)
        data: dict[str, Any] = {k: fill(v, samples) for k, v in form.items()}
        files = None
        if method == "POST":
            data["_csrf"] = csrf
            if url == "/console/lists":
                files = {"file": ("list.csv", f"身份证号,姓名\n{ID_NUMBERS[2]},李四\n".encode())}
        response = await client.request(method, url, data=data or None, files=files, follow_redirects=False)
        assert response.status_code != 500, f"{method} {url}: {response.text}"
        if outsider == "resident" and url.startswith("/console"):
            assert response.status_code == 303 and "/console/login" in response.headers["location"], url
        elif outsider != "resident" and url.startswith("/r") and not url.startswith(("/r/verify", "/r/login")):
            assert response.status_code == 303 and response.headers["location"].startswith("/r/login"), url
        else:
            assert response.status_code in (200, 403, 404), f"{method} {url}: {response.status_code}"
        if outsider == "resident" and url == "/r":
            assert "赵六" in response.text
        # The receipt check shows the number the caller typed back in its form: that is not A's data.
        text = response.text.replace(f'value="{samples["receipt_no"]}"', "")
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{method} {url} leaked {leaked}"
    after = await conn.fetchval(WRITES)
    assert after == before, "an outsider changed nothing"
    assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'intruder'") == 0
    assert await conn.fetchval("SELECT status FROM eligibility_claims") == "pending"
    assert await conn.fetchval("SELECT count(*) FROM exclusion_reviews WHERE status = 'open'") == 1
    assert await conn.fetchval("SELECT count(*) FROM list_versions") == 1
