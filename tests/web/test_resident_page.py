"""The residents' page at /r/: the API's resident login (same limits, one answer for any wrong
field), a signed HttpOnly SameSite=Strict cookie, CSRF on every form, the household's cover and
money, the receipt, and nothing of another household."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.premiums import payments
from backend.premiums.payments import PaymentIn
from backend.tools import demo
from backend.web.session import CSP
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, POLICY_2026, publish_policy
from tests.premiums.test_payments import actor_of
from tests.residents.test_residents import BENEFITS, KEY, UNKNOWN_ID, Home, issue_r_block, make_home
from tests.web.helpers import csrf_of

Client = AsyncTestClient[Litestar]


async def pay_h1(client: Client, conn: asyncpg.Connection, home: Home) -> str:  # type: ignore[type-arg]
    """张三's premium paid in the window (2025-10-08) with receipt R00000001."""
    await issue_r_block(client, conn)
    person = UUID(home.h1["members"][0]["person_id"])
    at = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
    payment_id = uuid.uuid4()
    data = PaymentIn(
        id=payment_id,
        household_id=UUID(home.h1["id"]),
        coverage_year=2026,
        person_ids=[person],
        amount_fen=40000,
        method="cash",
        receipt_no="R00000001",
        collected_at=at,
    )
    async with conn.transaction():
        await conn.execute(
            "UPDATE enrollments SET registered_on = '2025-09-01', registered_at = '2025-09-01' WHERE person_id = $1",
            person,
        )
        await payments.record_payment(
            conn, await actor_of(conn, "staff_a"), data, timezone="Asia/Shanghai", code_key=KEY.secret, now=at
        )
    return str(payment_id)


async def page_login(client: Client, id_number: str, name: str, code: str) -> Any:
    form = await client.get("/r/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/r/login",
        data={"id_number": id_number, "name": name, "query_code": code, "_csrf": csrf_of(form.text)},
        follow_redirects=False,
    )


def without_form_state(html: str) -> str:
    """The answer without what differs between any two answers: the fresh form token, the echoed input."""
    html = re.sub(r'name="_csrf" value="[^"]+"', "", html)
    return re.sub(r'(id="(id_number|name)" name="\w+" value=)"[^"]*"', r"\1", html)


async def test_a_resident_logs_in_and_reads_the_cover_and_the_money(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    home = await make_home(client)
    payment_id = await pay_h1(client, conn, home)
    login = await page_login(client, ID_NUMBERS[2], "李四", home.code1)
    assert login.status_code == 303 and login.headers["location"] == "/r/", login.text
    cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("canbao_resident="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = await client.get("/r/")
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == CSP and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "style=" not in page.text
    text = page.text
    assert "张三" in text and "李四" in text and "110105********0016" in text
    assert ID_NUMBERS[1] not in text, "ID numbers are shown masked"
    # 把帐算清楚: 2 × ¥400 premiums, no subsidy, ¥400 paid, ¥400 still to pay.
    assert "Premium CN¥800.00 − government subsidy CN¥0.00 − paid CN¥400.00 = still owed CN¥400.00" in text
    assert "Coverage year 2026" in text and "Coverage year 2027" not in text  # no policy, no enrolment for 2027
    assert "Enrolment and payment period" in text and "2025-09-01 – 2025-12-31" in text
    assert f"/r/payments/{payment_id}/receipt.pdf" in text and "R00000001" in text
    pdf = await client.get(f"/r/payments/{payment_id}/receipt.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # The other household's resident sees none of it, and not its receipt.
    client.cookies.clear()
    assert (await page_login(client, ID_NUMBERS[3], "张小明", home.code2)).status_code == 303
    other = await client.get("/r/")
    assert "张小明" in other.text and "张三" not in other.text and "R00000001" not in other.text
    refused = await client.get(f"/r/payments/{payment_id}/receipt.pdf")
    assert refused.status_code == 404 and "R00000001" not in refused.text


async def test_wrong_id_name_or_code_answer_alike_and_count_as_the_api_does(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    home = await make_home(client)
    answers = [
        await page_login(client, ID_NUMBERS[1], "张三", "WRONGCODE"),
        await page_login(client, ID_NUMBERS[1], "王五", home.code1),
        await page_login(client, UNKNOWN_ID, "张三", home.code1),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({without_form_state(a.text) for a in answers}) == 1
    assert "ID number, name or query code is wrong" in answers[0].text
    assert "canbao_resident=" not in " ".join(answers[0].headers.get_list("set-cookie"))
    # The same counter as the API's: four more failures on this number, and even the right code is refused.
    for _ in range(4):
        await page_login(client, ID_NUMBERS[1], "张三", "WRONGCODE")
    locked = await page_login(client, ID_NUMBERS[1], "张三", home.code1)
    assert locked.status_code == 429, locked.text
    api = await client.post(
        "/api/v1/resident/login", json={"id_number": ID_NUMBERS[1], "name": "张三", "query_code": home.code1}
    )
    assert api.status_code == 429
    # Five failures on the number (the sixth attempt already refused), one on the unknown number.
    failed = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'resident_login_failed'")
    refused = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'resident_login_refused'")
    assert (failed, refused) == (6, 3)
    malformed = await page_login(client, "12345", "张三", home.code1)
    assert malformed.status_code == 422 and "ID number:" in malformed.text


async def test_forms_need_their_token_and_logout_ends_the_session(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    home = await make_home(client)
    forged = await client.post(
        "/r/login",
        data={"id_number": ID_NUMBERS[1], "name": "张三", "query_code": home.code1, "_csrf": "forged"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert (await page_login(client, ID_NUMBERS[1], "张三", home.code1)).status_code == 303
    page = await client.get("/r/")
    assert (await client.post("/r/logout", data={}, follow_redirects=False)).status_code == 403
    stolen = client.cookies["canbao_resident"]
    out = await client.post("/r/logout", data={"_csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/r/login"
    assert "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.set("canbao_resident", stolen)  # replayed: the session is over
    again = await client.get("/r/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/r/login")
    # A staff member's console cookie opens no resident page, and a resident's cookie no console page.
    client.cookies.clear()
    assert (await client.get("/r/", follow_redirects=False)).status_code == 303
    assert (await page_login(client, ID_NUMBERS[1], "张三", home.code1)).status_code == 303
    console = await client.get("/console/", follow_redirects=False)
    assert console.status_code == 303 and console.headers["location"].startswith("/console/login")
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'logout'") == 1


async def test_a_receipt_is_checked_without_logging_in(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    home = await make_home(client)
    await pay_h1(client, conn, home)
    wrong = await client.get("/r/verify", params={"receipt_no": "R00000001", "code": "NOTTHIS1"})
    assert wrong.status_code == 200 and "do not belong together" in wrong.text
    assert "张三" not in wrong.text
    blank = await client.get("/r/verify")
    assert blank.status_code == 200 and blank.headers["content-security-policy"] == CSP


async def test_the_demo_resident_the_cli_prints_logs_in(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await demo.seed_population(conn)
    resident = await demo.demo_resident(conn, KEY.secret, 2026)
    assert resident is not None and len(resident.id_number) == 18
    again = await demo.demo_resident(conn, KEY.secret, 2026)
    assert again == resident, "the same household and code every time"
    assert (await page_login(client, resident.id_number, resident.name, resident.query_code)).status_code == 303
    home = await client.get("/r/")
    assert home.status_code == 200 and resident.name in home.text and "Coverage year 2026" in home.text


async def test_the_page_shows_the_years_benefit_facts_and_each_members_ceiling(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    home = await make_home(client)
    rules = {
        **POLICY_2026["rules"],
        "benefits": BENEFITS,
        "serious_illness": {"original_ceiling_fen": 40000000, "continuity_raise_fen": 300000},
    }
    await publish_policy(client, await auth_headers(client, "admin"), rules=rules)  # version 2, in force
    await pay_h1(client, conn, home)
    assert (await page_login(client, ID_NUMBERS[2], "李四", home.code1)).status_code == 303
    page = await client.get("/r/")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<script" not in text and "style=" not in text
    assert "What the insurance pays for a hospital stay" in text
    for row in (
        ("Township health centre", "CN¥100.00", "90%"),
        ("County hospital", "CN¥500.00", "75%"),
        ("Hospital above the county", "CN¥1,000.00", "60%"),
    ):
        assert '<tr><th scope="row">{}</th><td class="num">{}</td><td class="num">{}</td></tr>'.format(*row) in text
    assert "Basic medical insurance pays at most CN¥200,000.00 in 2026 for each insured person." in text
    # 张三 is paid for 2026 (covered): his own serious-illness ceiling; 李四, unpaid, has none.
    assert "<li>张三: CN¥400,000.00</li>" in text and "<li>李四:" not in text
    assert "ask the township office." not in text.split("How to enrol or pay")[0]
