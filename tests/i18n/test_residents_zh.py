"""Residents and partners read their cover in their language: why the cover starts when it does
(from the facts kept with the enrolment, put into words when read), the status and subsidy
categories by name beside their codes, money in yuan beside fen and the household's money in one
picture, and FHIR texts in the negotiated language with their codes unchanged."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import explain
from backend.i18n import use_language
from backend.premiums import payments
from backend.premiums.payments import PaymentIn
from mobile_sync_protocol.rules.coverage import EnrolmentWindow, WaitingPolicy, decide_coverage
from tests.conftest import auth_headers
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy
from tests.fhir.test_fhir import (
    ELIGIBILITY,
    FHIR_JSON,
    SEARCH,
    World,
    partner_headers,
    register_partner,
    request_for,
    world_fixture,  # noqa: F401 (the FHIR tests' township, as a fixture here)
)
from tests.premiums.test_payments import actor_of
from tests.residents.test_residents import COVERAGE, KEY, enrol, resident_headers

Client = AsyncTestClient[Litestar]
ZH = {"Accept-Language": "zh-CN"}
EN = {"Accept-Language": "en"}
WINDOW = EnrolmentWindow(start=date(2025, 9, 1), end=date(2025, 12, 31))

# (business date, birth date) → (reason code, Chinese, English); coverage year 2026, national policy.
RULES = {
    "in window": (
        date(2025, 10, 8),
        None,
        "in_window",
        "2025年10月8日参保，在集中参保期内（2025年12月31日截止）参保，不设待遇等待期；"
        "待遇享受期2026年1月1日至2026年12月31日。",
        "Enrolled on 2025-10-08, before the enrolment window closed on 2025-12-31: no waiting period; "
        "covered from 2026-01-01 to 2026-12-31.",
    ),
    "late, waiting period": (
        date(2026, 2, 10),
        None,
        "waiting_period",
        "2026年2月10日参保，未在集中参保期内参保（集中参保期2025年12月31日截止）；"
        "待遇等待期3个月：固定待遇等待期3个月；等待期至2026年5月9日，待遇享受期2026年5月10日至2026年12月31日。",
        "Enrolled on 2026-02-10, after the enrolment window closed on 2025-12-31; waiting period of 3 months: "
        "3 fixed; waiting until 2026-05-09, covered from 2026-05-10 to 2026-12-31.",
    ),
    "newborn within 90 days": (
        date(2026, 2, 1),
        date(2026, 1, 15),
        "newborn",
        "2026年2月1日参保，新生儿出生90天内参保，自出生之日起享受待遇，不设待遇等待期；"
        "待遇享受期2026年1月15日至2026年12月31日。",
        "Enrolled on 2026-02-01, within 90 days of birth: no waiting period, covered from birth; "
        "covered from 2026-01-15 to 2026-12-31.",
    ),
    "no cover this year": (
        date(2026, 11, 1),
        None,
        "no_cover_this_year",
        "2026年11月1日参保，未在集中参保期内参保（集中参保期2025年12月31日截止）；"
        "待遇等待期3个月：固定待遇等待期3个月；待遇应自2027年2月1日起享受，已超出2026年度：本年度不享受待遇。",
        "Enrolled on 2026-11-01, after the enrolment window closed on 2025-12-31; waiting period of 3 months: "
        "3 fixed; cover would start on 2027-02-01, after the end of 2026: no cover this year.",
    ),
}


@pytest.mark.parametrize("case", RULES)
def test_the_reason_of_a_cover_is_said_in_chinese_and_english_from_the_stored_facts(case: str) -> None:
    business_date, birth_date, code, chinese, english = RULES[case]
    decided = decide_coverage(
        coverage_year=2026, business_date=business_date, window=WINDOW, policy=WaitingPolicy(), birth_date=birth_date
    )
    assert decided.coverage.reason_code == code
    # As the database keeps them (jsonb) and gives them back.
    stored = msgspec.json.decode(msgspec.json.encode(decided.facts))
    facts = explain.coverage_facts(stored)
    assert facts == decided.facts
    with use_language("zh_CN"):
        assert explain.cover_words(facts) == chinese
    with use_language("en"):
        assert explain.cover_words(facts) == english


def test_the_tablets_english_reason_is_made_of_the_same_facts() -> None:
    decided = decide_coverage(
        coverage_year=2026, business_date=date(2026, 2, 10), window=WINDOW, policy=WaitingPolicy()
    )
    assert decided.coverage.reason == (
        "Enrolled on 2026-02-10, after the enrolment window closed on 2025-12-31; waiting period of 3 months: "
        "3 fixed; covered from 2026-05-10 to 2026-12-31."
    )
    assert (decided.facts.rule, decided.facts.late, decided.facts.start) == ("waiting_period", True, date(2026, 5, 10))
    assert explain.coverage_facts({"rule": "in_window"}) is None  # facts that do not decode: the stored note shows


# The resident's answer ---------------------------------------------------------------------------


async def _pay(client: Client, conn: Any, household_id: str, person_id: str, paid_on: date) -> None:
    staff_id = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_id, "prefix": "Z", "first_no": 1, "last_no": 50},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    at = datetime(paid_on.year, paid_on.month, paid_on.day, 2, tzinfo=UTC)
    data = PaymentIn(
        id=uuid.uuid4(),
        household_id=UUID(household_id),
        coverage_year=2026,
        person_ids=[UUID(person_id)],
        amount_fen=40000,
        method="cash",
        receipt_no="Z00000001",
        collected_at=at,
    )
    async with conn.transaction():
        await conn.execute(  # registered before the day it is paid (a payment is never dated before)
            "UPDATE enrollments SET registered_on = least(registered_on, $2), "
            "registered_at = least(registered_at, $2::timestamptz) WHERE person_id = $1",
            UUID(person_id),
            paid_on,
        )
        await payments.record_payment(
            conn, await actor_of(conn, "staff_a"), data, timezone="Asia/Shanghai", code_key=KEY.secret, now=at
        )


async def test_the_resident_reads_status_reasons_categories_and_money_in_chinese(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """张三 特困 (subsidised in full), 李四 paid in the window, 王五 registered and unpaid."""
    await publish_policy(client, await auth_headers(client, "admin"))
    listed = await upload(
        client, await auth_headers(client, "civil"), csv(f"{ID_NUMBERS[1]},张三,,"), list_type="te_kun"
    )
    assert listed.status_code == 201, listed.text
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client,
        staff,
        [
            member(ID_NUMBERS[1], "张三"),
            member(ID_NUMBERS[2], "李四", "spouse"),
            member(ID_NUMBERS[3], "王五", "child"),
        ],
    )
    person = {m["name"]: m["person_id"] for m in household["members"]}
    await add_history(conn, ID_NUMBERS[2], 2025)  # covered last year: no gap, no waiting
    code = (await enrol(client, staff, household, list(person.values())))["query_code"]
    await _pay(client, conn, household["id"], person["李四"], date(2025, 10, 8))
    headers = await resident_headers(client, ID_NUMBERS[2], "李四", code)

    response = await client.get(COVERAGE, params={"year": 2026}, headers={**headers, **ZH})
    assert response.status_code == 200, response.text
    body = response.json()
    got = {m["name"]: m for m in body["members"]}
    zhang, li, wang = got["张三"], got["李四"], got["王五"]
    # Status by name beside its code.
    assert [(m["enrollment_status"], m["enrollment_status_name"]) for m in (zhang, li, wang)] == [
        ("subsidised", "资助参保"),
        ("paid", "已缴费"),
        ("registered", "已登记，未缴费"),
    ]
    # Why, in Chinese, from the facts kept when 李四 paid.
    assert li["reason_words"] == (
        "2025年10月8日参保，在集中参保期内（2025年12月31日截止）参保，不设待遇等待期；"
        "待遇享受期2026年1月1日至2026年12月31日。"
    )
    assert li["explanation"].endswith(li["reason_words"]) and li["explanation"].startswith(li["state_words"])
    assert (li["coverage_reason_code"], li["coverage_reason_name"]) == ("in_window", "集中参保期内参保")
    assert wang["state_words"] == "已办理2026年度参保登记，但尚未缴纳个人缴费：缴费后方可享受待遇。"
    assert wang["reason_words"] is None
    # Subsidy categories by name beside their codes.
    assert (zhang["subsidy_categories"], zhang["subsidy_category_names"]) == (["te_kun"], ["特困人员"])
    assert (li["subsidy_categories"], li["subsidy_category_names"]) == ([], [])
    # Yuan beside fen, member by member.
    assert (zhang["premium_fen"], zhang["premium_yuan"], zhang["subsidy_fen"], zhang["subsidy_yuan"]) == (
        40000,
        "¥400.00",
        40000,
        "¥400.00",
    )
    assert (li["paid_fen"], li["paid_yuan"], li["balance_fen"], li["balance_yuan"]) == (40000, "¥400.00", 0, "¥0.00")
    assert (wang["due_fen"], wang["due_yuan"], wang["balance_fen"], wang["balance_yuan"]) == (
        40000,
        "¥400.00",
        40000,
        "¥400.00",
    )
    # The household's money in one picture: 1200 − 400 − 400 = 400 still owed.
    money = body["money"]
    assert (money["premium_fen"], money["subsidy_fen"], money["paid_fen"], money["balance_fen"]) == (
        120000,
        40000,
        40000,
        40000,
    )
    assert money["balance_fen"] == money["premium_fen"] - money["subsidy_fen"] - money["paid_fen"]
    assert (money["premium_yuan"], money["subsidy_yuan"], money["paid_yuan"], money["balance_yuan"]) == (
        "¥1,200.00",
        "¥400.00",
        "¥400.00",
        "¥400.00",
    )
    assert money["words"] == "个人缴费¥1,200.00 − 财政补助¥400.00 − 已缴¥400.00 = 还需缴纳¥400.00"
    assert (body["balance_fen"], body["balance_yuan"], body["paid_yuan"]) == (40000, "¥400.00", "¥400.00")

    # Staff read the same note in their language on the enrolment itself.
    enrolment_id = await conn.fetchval("SELECT id::text FROM enrollments WHERE person_id = $1", UUID(person["李四"]))
    for language, words in (ZH, li["reason_words"]), (EN, "Enrolled on 2025-10-08, before the enrolment window"):
        seen = await client.get(f"/api/v1/enrollments/{enrolment_id}", headers={**staff, **language})
        assert seen.status_code == 200, seen.text
        assert seen.json()["coverage_note"].startswith(words)

    # The same answer in English: the words change, the codes and amounts do not.
    english = (await client.get(COVERAGE, params={"year": 2026}, headers={**headers, **EN})).json()
    li_en = next(m for m in english["members"] if m["name"] == "李四")
    assert li_en["reason_words"] == (
        "Enrolled on 2025-10-08, before the enrolment window closed on 2025-12-31: no waiting period; "
        "covered from 2026-01-01 to 2026-12-31."
    )
    assert (li_en["enrollment_status"], li_en["enrollment_status_name"], li_en["paid_yuan"]) == (
        "paid",
        "Paid",
        "CN¥400.00",
    )
    assert english["money"]["balance_fen"] == money["balance_fen"]

    # An enrolment funded before the facts were kept shows the note it was stored with.
    await conn.execute(
        "UPDATE enrollments SET coverage_facts = NULL, coverage_note = 'Enrolled on 2025-10-08 (as stored).' "
        "WHERE person_id = $1",
        UUID(person["李四"]),
    )
    older = (await client.get(COVERAGE, params={"year": 2026}, headers={**headers, **ZH})).json()
    assert next(m for m in older["members"] if m["name"] == "李四")["reason_words"] == (
        "Enrolled on 2025-10-08 (as stored)."
    )


# Partners ----------------------------------------------------------------------------------------


async def test_fhir_texts_follow_the_negotiated_language_and_codes_do_not(client: Client, world: World) -> None:
    headers = {**await partner_headers(client, await register_partner(client)), **FHIR_JSON}
    # 李四 paid late (2026-02-10): in the waiting period on 2026-03-01.
    response = await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[2]), headers={**headers, **ZH})
    assert response.status_code == 200, response.text
    answer = response.json()
    (insurance,) = answer["insurance"]
    (state,) = [e for e in insurance["extension"] if e["url"].endswith("/coverage-state")]
    concept = state["valueCodeableConcept"]
    assert concept["coding"][0]["code"] == "waiting_period"
    assert (
        concept["text"] == answer["disposition"] == "处于待遇等待期，等待期至2026年5月9日：自2026年5月10日起享受待遇。"
    )
    assert (insurance["inforce"], answer["insurer"]["display"]) == (False, "城乡居民基本医疗保险")
    (coverage,) = answer["contained"]
    assert (coverage["status"], coverage["type"]["coding"][0]["code"]) == ("active", "urrbmi")
    assert coverage["class"][0]["name"] == "参保年度2026"
    reason = next(e["valueString"] for e in coverage["extension"] if e["url"].endswith("/coverage-reason"))
    assert "等待期至2026年5月9日" in reason and reason.startswith("2026年2月10日参保，未在集中参保期内参保")

    english = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[2]), headers={**headers, **EN})).json()
    assert english["disposition"] == "In the waiting period until 2026-05-09: covered from 2026-05-10."
    assert english["insurance"][0]["extension"][0]["valueCodeableConcept"]["coding"] == concept["coding"]

    # Nobody holds ID_NUMBERS[7]: no enrolment, said in Chinese.
    nobody = (await client.post(ELIGIBILITY, json=request_for(ID_NUMBERS[7]), headers={**headers, **ZH})).json()
    assert nobody["insurance"][0]["coverage"] == {"display": "2026年度未参保"}
    assert nobody["disposition"] == "2026年度未参保。"

    # Errors: OperationOutcome with the stable code, its texts in Chinese.
    bad = await client.post(
        ELIGIBILITY, json=request_for(ID_NUMBERS[2], purpose=["benefits"]), headers={**headers, **ZH}
    )
    assert bad.status_code == 422, bad.text
    (issue,) = bad.json()["issue"]
    assert (issue["code"], issue["details"]["coding"][0]["code"], issue["expression"]) == (
        "invalid",
        "validation_error",
        ["purpose"],
    )
    assert issue["details"]["text"] == "请求内容不符合要求"
    assert issue["diagnostics"] == "purpose: 此处只答复validation（该人员是否享受待遇）"
    twice = await client.post(
        SEARCH,
        content=f"identifier={ID_NUMBERS[1]}&identifier={ID_NUMBERS[2]}",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded", **ZH},
    )
    assert twice.status_code == 422, twice.text
    assert twice.json()["issue"][0]["diagnostics"] == "identifier: 须恰好一个identifier：每次只查询一人"
