"""The district administrator's screens: users, tablets, partners, policy versions edited with the
validation's messages in the reader's language, and the district dashboard's SVG charts."""

from __future__ import annotations

import re

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.web.session import CSP
from tests.conftest import auth_headers
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.enrollment.test_coverage_trend import populate as trend_population
from tests.factories import ID_NUMBERS, POLICY_2026, publish_policy
from tests.web.helpers import console_login

Client = AsyncTestClient[Litestar]


def policy_form(csrf: str, **changes: str) -> dict[str, str]:
    form = {
        "effective_from": POLICY_2026["effective_from"],
        "premium": "400.00",
        "window_start": POLICY_2026["window_start"],
        "window_end": POLICY_2026["window_end"],
        "note": "",
        "rules": '{"categories": [{"category": "te_kun", "rule": {"type": "full"}}]}',
        "_csrf": csrf,
    }
    return {**form, **changes}


async def test_users_are_created_and_disabled_with_the_services_checks(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    csrf = await console_login(client, "admin")
    weak = await client.post(
        "/console/users",
        data={"username": "clerk_c", "password": "short", "role": "township_staff", "division_code": "330106001000"},
    )
    assert weak.status_code == 403, "no CSRF token"
    form = {"username": "clerk_c", "role": "township_staff", "division_code": "330106001000", "_csrf": csrf}
    weak = await client.post("/console/users", data={**form, "password": "short"})
    assert weak.status_code == 200 and 'class="flash error"' in weak.text
    assert 'value="clerk_c"' in weak.text, "what was typed stays in the form"
    assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'clerk_c'") == 0
    bad_role = await client.post("/console/users", data={**form, "role": "king", "password": "a-long-passphrase"})
    assert "Role:" in bad_role.text
    made = await client.post("/console/users", data={**form, "password": "a-long-passphrase"})
    assert "User clerk_c created." in made.text
    user_id = await conn.fetchval("SELECT id FROM users WHERE username = 'clerk_c'")
    disabled = await client.post(
        f"/console/users/{user_id}",
        data={"role": "township_staff", "division_code": "330106001000", "full_name": "王会计", "_csrf": csrf},
    )
    assert "User clerk_c saved." in disabled.text
    assert await conn.fetchval("SELECT active FROM users WHERE id = $1", user_id) is False


async def test_tablets_are_suspended_and_revoked_and_partners_get_a_secret_once(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    device = await client.post("/api/v1/devices", json={"model": "Tab A8", "app_version": "1.0.0"}, headers=staff_a)
    device_id = device.json()["device"]["id"]
    csrf = await console_login(client, "admin")
    listed = await client.get("/console/devices")
    assert "Tab A8" in listed.text and f"/console/devices/{device_id}/suspend" in listed.text
    assert (await client.post(f"/console/devices/{device_id}/suspend", data={"_csrf": csrf})).status_code == 200
    assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", device_id) == "suspended"
    revoked = await client.post(f"/console/devices/{device_id}/revoke", data={"_csrf": csrf})
    assert "revoked" in revoked.text
    assert await conn.fetchval("SELECT status FROM devices WHERE id = $1", device_id) == "revoked"
    again = await client.post(f"/console/devices/{device_id}/suspend", data={"_csrf": csrf})
    assert again.status_code == 200 and 'class="flash error"' in again.text
    made = await client.post("/console/partners", data={"name": "县人民医院", "_csrf": csrf})
    secret = re.search(r'Client secret: <span class="secret">([^<]+)</span>', made.text)
    assert secret, made.text
    assert secret.group(1) not in (await client.get("/console/partners")).text, "shown once"
    partner_id = await conn.fetchval("SELECT id FROM partners")
    rotated = await client.post(f"/console/partners/{partner_id}/rotate", data={"_csrf": csrf})
    assert "Client secret" in rotated.text and secret.group(1) not in rotated.text


async def test_a_policy_version_is_edited_with_its_errors_in_the_readers_language(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    csrf = await console_login(client, "admin")
    shown = await client.get("/console/policy", params={"year": 2026})
    assert "Version 1" in shown.text and "CN¥400.00" in shown.text
    backwards = await client.post(
        "/console/policy/2026/versions/1", data=policy_form(csrf, window_end="2025-08-01", note="倒置")
    )
    assert backwards.status_code == 200, "a refusal is the form again with its message (no failed load)"
    assert "window_end: must not be before window_start" in backwards.text
    assert 'value="倒置"' in backwards.text and "<details open>" in backwards.text, "the form as typed, opened"
    not_json = await client.post("/console/policy/2026/versions/1", data=policy_form(csrf, rules="{categories"))
    assert "Rules: is not valid JSON" in not_json.text
    unknown = await client.post("/console/policy/2026/versions/1", data=policy_form(csrf, rules='{"deductible": 1}'))
    assert "rules.deductible: is not a known field" in unknown.text
    money = await client.post("/console/policy/2026/versions/1", data=policy_form(csrf, premium="four hundred"))
    assert "Premium per person: enter an amount in yuan" in money.text
    chinese = await client.post(
        "/console/policy/2026/versions/1",
        data=policy_form(csrf, window_end="2025-08-01"),
        headers={"Accept-Language": "zh-CN"},
    )
    message = re.search(r'<p class="flash error" role="alert">([^<]+)</p>', chinese.text)
    assert message and re.search(r"[\u4e00-\u9fff]", message.group(1)) and "must not" not in message.group(1)
    assert await conn.fetchval("SELECT premium_fen FROM policy_versions") == 40000, "nothing written"
    saved = await client.post("/console/policy/2026/versions/1", data=policy_form(csrf, premium="420.50"))
    assert saved.status_code == 200 and "Version 1 of 2026 saved." in saved.text
    assert await conn.fetchval("SELECT premium_fen FROM policy_versions") == 42050
    published = await client.post(
        "/console/policy/2026/versions", data=policy_form(csrf, effective_from="2025-10-01", premium="430")
    )
    assert "Version 2 of 2026 published." in published.text
    assert await conn.fetchval("SELECT count(*) FROM policy_versions") == 2


async def test_the_district_dashboard_draws_its_three_charts(client: Client) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    await console_login(client, "admin")
    board = await client.get("/console/district", params={"year": 2026, "from": "2025-10-01", "to": "2025-10-31"})
    assert board.status_code == 200, board.text
    assert board.headers["content-security-policy"] == CSP
    assert board.text.count("<svg") == 1, "the rate alone: nothing collected, no subsidy list in force yet"
    listed = await upload(
        client, await auth_headers(client, "civil"), csv(f"{ID_NUMBERS[1]},张三,,", f"{ID_NUMBERS[2]},李四,,")
    )
    assert listed.status_code == 201, listed.text
    board = await client.get("/console/district", params={"year": 2026})
    assert board.text.count("<svg") == 2
    assert re.search(r"<tr><td>Minimum living allowance[^<]*</td><td class=\"num\">2</td></tr>", board.text), board.text
    assert "Funded rate by township, 2026" in board.text and "Collections by day and method" in board.text
    assert "<script>" not in board.text and "style=" not in board.text
    assert "/console/reports/coverage?year=2026&amp;level=township&amp;format=xlsx" in board.text
    assert (await client.get("/console/lists")).status_code == 200
    for path in ("/console/users", "/console/devices", "/console/partners", "/console/policy"):
        assert f'href="{path}"' in board.text, f"{path} in the admin's menu"


async def test_the_rate_by_township_over_time_is_a_line_chart_with_its_table(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await trend_population(client, conn)
    await console_login(client, "admin")
    board = await client.get("/console/district", params={"year": 2026})
    assert board.status_code == 200, board.text
    assert board.headers["content-security-policy"] == CSP
    title = "Funded rate by township and week, 2026"
    chart = re.search(r'<svg class="chart"[^>]*aria-label="' + title + r'">(.*?)</svg>', board.text, re.S)
    assert chart, board.text
    assert f"<title>{title}</title>" in chart.group(1)
    assert chart.group(1).count("<polyline") == 2, "a line per township"
    assert re.search(r'<g class="chart-line chart-l0"><line [^>]*/><text [^>]*>北山街道</text></g>', chart.group(1))
    assert "<title>北山街道 2025-09-22: 75.0%</title>" in chart.group(1)
    # The table beside it: a row per week, the rate and the persons funded per township and the district.
    assert (
        '<tr><th scope="row">2025-09-15</th><td class="num">50.00% (2)</td><td class="num">33.33% (1)</td>'
        '<td class="num">42.86% (3)</td></tr>'
    ) in board.text
    assert "Funded rate by date of funding, against today&#39;s persons" in board.text
    assert "/console/reports/coverage-trend?year=2026&amp;format=xlsx" in board.text
    assert "<script>" not in board.text and "style=" not in board.text
    download = await client.get("/console/reports/coverage-trend", params={"year": 2026, "format": "csv"})
    assert download.status_code == 200 and "2025-09-15" in download.content.decode("utf-8-sig")


async def test_a_township_reviewers_dashboard_shows_its_villages_over_time(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await trend_population(client, conn)
    await console_login(client, "reviewer_b")
    board = await client.get("/console/")
    assert board.status_code == 200, board.text
    assert "Funded rate by village and week, 2026" in board.text and board.text.count("<polyline") == 3
    assert '<tr><th scope="row">2025-09-15</th><td class="num">33.33% (1)</td>' in board.text
    assert "2025-09-01" not in board.text and "北山" not in board.text, "nothing of township A"
