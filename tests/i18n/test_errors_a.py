"""Errors of enrolment, premiums and policy in the negotiated language (issue 18, point 2): with
`Accept-Language: zh-CN` the problem's title, detail and per-field messages are Chinese; with `en`
they are the English of the code. The `code` and every `errors[].field` never change."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import clock
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, POLICY_2026, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
ZH = {"Accept-Language": "zh-CN"}
EN = {"Accept-Language": "en"}


class Expected:
    """One problem as each language must say it: (title, detail, errors' messages) per language."""

    def __init__(
        self,
        status: int,
        code: str,
        fields: list[str],
        zh: tuple[str, str | None, list[str]],
        en: tuple[str, str | None, list[str]],
    ) -> None:
        self.status, self.code, self.fields = status, code, fields
        self.said = {"zh": zh, "en": en}

    def check(self, response: httpx.Response, language: str) -> None:
        assert response.status_code == self.status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body: dict[str, Any] = response.json()
        title, detail, messages = self.said[language]
        assert body["code"] == self.code
        assert body["title"] == title
        assert body.get("detail") == detail
        assert [e["field"] for e in body.get("errors", [])] == self.fields
        assert [e["message"] for e in body.get("errors", [])] == messages


async def both(send: Any, expected: Expected) -> None:
    """The same failing request in Chinese and in English (a refused request changes nothing)."""
    expected.check(await send(ZH), "zh")
    expected.check(await send(EN), "en")


@pytest.fixture
async def household(client: Client) -> dict[str, Any]:
    await publish_policy(client, await auth_headers(client, "admin"))
    return await create_household(
        client,
        await auth_headers(client, "staff_a"),
        [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")],
    )


async def test_household_and_enrolment_errors_follow_the_language(client: Client, household: dict[str, Any]) -> None:
    staff = await auth_headers(client, "staff_a")
    person_ids = [m["person_id"] for m in household["members"]]

    async def missing_household(language: dict[str, str]) -> httpx.Response:
        return await client.get(f"/api/v1/households/{uuid.uuid4()}", headers={**staff, **language})

    missing = Expected(404, "not_found", [], ("未找到该记录", None, []), ("Record not found", None, []))
    await both(missing_household, missing)

    async def same_number(language: dict[str, str]) -> httpx.Response:
        body = {"village_code": "330106001001", "household_no": "0001", "members": [member(ID_NUMBERS[7], "王五")]}
        return await client.post("/api/v1/households", json=body, headers={**staff, **language})

    await both(
        same_number,
        Expected(
            409,
            "household_number_taken",
            ["household_no"],
            ("该户号在本村（社区）已被使用", None, ["已被使用"]),
            ("That household number is already used in this village", None, ["already used"]),
        ),
    )

    async def two_heads(language: dict[str, str]) -> httpx.Response:
        body = {
            "village_code": "330106001001",
            "household_no": "0002",
            "members": [member(ID_NUMBERS[7], "王五"), member(ID_NUMBERS[9], "赵六")],
        }
        return await client.post("/api/v1/households", json=body, headers={**staff, **language})

    await both(
        two_heads,
        Expected(
            422,
            "validation_error",
            ["members"],
            (
                "请求内容不符合要求",
                "members: 须有且仅有一名家庭成员为户主（relation 为 'head'），现为 2 名",
                ["须有且仅有一名家庭成员为户主（relation 为 'head'），现为 2 名"],
            ),
            (
                "Request body is not valid",
                "members: exactly one member must be the head (relation 'head'), not 2",
                ["exactly one member must be the head (relation 'head'), not 2"],
            ),
        ),
    )

    enrolled = await client.post(
        "/api/v1/enrollments",
        json={"household_id": household["id"], "coverage_year": 2026, "person_ids": person_ids[:1]},
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text

    async def enrol_again(language: dict[str, str]) -> httpx.Response:
        body = {"household_id": household["id"], "coverage_year": 2026, "person_ids": person_ids}
        return await client.post("/api/v1/enrollments", json=body, headers={**staff, **language})

    await both(
        enrol_again,
        Expected(
            409,
            "already_enrolled",
            ["person_ids[0]"],
            ("此人本年度已有有效的参保登记", None, ["本年度已参保"]),
            ("Person already has a live enrolment for this year", None, ["already enrolled for the year"]),
        ),
    )

    async def no_policy(language: dict[str, str]) -> httpx.Response:
        body = {"household_id": household["id"], "coverage_year": 2031, "person_ids": person_ids[1:]}
        return await client.post("/api/v1/enrollments", json=body, headers={**staff, **language})

    await both(
        no_policy,
        Expected(
            422,
            "validation_error",
            ["coverage_year"],
            ("该参保年度没有政策", "coverage_year: 2031 年度尚未发布政策", ["2031 年度尚未发布政策"]),
            (
                "No policy for that coverage year",
                "coverage_year: no policy has been published for 2031",
                ["no policy has been published for 2031"],
            ),
        ),
    )

    enrolment_id = enrolled.json()["items"][0]["id"]
    cancelled = await client.post(
        f"/api/v1/enrollments/{enrolment_id}/cancel", json={"reason": "data_error"}, headers=staff
    )
    assert cancelled.status_code in (200, 201), cancelled.text

    async def cancel_again(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            f"/api/v1/enrollments/{enrolment_id}/cancel", json={"reason": "data_error"}, headers={**staff, **language}
        )

    await both(
        cancel_again,
        Expected(
            409,
            "illegal_transition",
            [],
            ("参保登记不能从当前状态变为该状态", "状态为 cancelled 的参保登记不能变为 cancelled", []),
            (
                "The enrolment cannot move to that state from its current one",
                "a cancelled enrolment cannot become cancelled",
                [],
            ),
        ),
    )


def payment_body(household: dict[str, Any], receipt_no: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "household_id": household["id"],
        "coverage_year": 2026,
        "person_ids": [m["person_id"] for m in household["members"]],
        "amount_fen": 80000,
        "method": "cash",
        "receipt_no": receipt_no,
        "collected_at": clock.now().isoformat(),
        "acknowledge_no_cover": True,  # (paid today for 2026: no cover in 2026, which the resident was told)
        **extra,
    }


async def test_payment_errors_follow_the_language(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
) -> None:
    staff = await auth_headers(client, "staff_a")
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    reviewer = await auth_headers(client, "reviewer_a")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "A", "first_no": 1, "last_no": 100},
        headers=reviewer,
    )
    assert block.status_code == 201, block.text

    async def outside_block(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            "/api/v1/payments",
            json=payment_body(household, "Z00000001"),
            headers={**staff, **language, "Idempotency-Key": f"k-{uuid.uuid4().hex[:12]}"},
        )

    await both(
        outside_block,
        Expected(
            422,
            "validation_error",
            ["receipt_no"],
            ("请求内容不符合要求", "receipt_no: 不在发放给您的缴费凭证号段内", ["不在发放给您的缴费凭证号段内"]),
            (
                "Request body is not valid",
                "receipt_no: is not in a receipt block issued to you",
                ["is not in a receipt block issued to you"],
            ),
        ),
    )

    async def back_years_without_back_payment(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            "/api/v1/payments",
            json=payment_body(household, "A00000002", back_years=[2025]),
            headers={**staff, **language, "Idempotency-Key": f"k-{uuid.uuid4().hex[:12]}"},
        )

    await both(
        back_years_without_back_payment,
        Expected(
            422,
            "validation_error",
            ["back_years"],
            ("请求内容不符合要求", "back_years: 只有补缴才列明以往年度", ["只有补缴才列明以往年度"]),
            (
                "Request body is not valid",
                "back_years: only a back-payment names past years",
                ["only a back-payment names past years"],
            ),
        ),
    )

    first = await client.post(
        "/api/v1/payments",
        json=payment_body(household, "A00000001"),
        headers={**staff, "Idempotency-Key": "k-first-0001"},
    )
    assert first.status_code == 201, first.text

    async def receipt_used(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            "/api/v1/payments",
            json=payment_body(household, "A00000001", amount_fen=1),
            headers={**staff, **language, "Idempotency-Key": f"k-{uuid.uuid4().hex[:12]}"},
        )

    await both(
        receipt_used,
        Expected(
            409,
            "receipt_number_used",
            ["receipt_no"],
            ("该缴费凭证号已被使用", None, ["已被使用"]),
            ("That receipt number has already been used", None, ["already used"]),
        ),
    )

    async def overlapping_block(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            "/api/v1/receipt-blocks",
            json={"collector_id": staff_a, "prefix": "A", "first_no": 100, "last_no": 120},
            headers={**reviewer, **language},
        )

    await both(
        overlapping_block,
        Expected(
            409,
            "conflict",
            [],
            ("请求与当前状态冲突", "该号码范围与已发放的号段重叠", []),
            ("Request conflicts with the current state", "the range overlaps a block already issued", []),
        ),
    )


@pytest.mark.parametrize(
    ("change", "field", "zh", "en"),
    [
        ({"window_start": "2023-09-01"}, "window_start", "须在 2025 年或 2026 年内", "must lie in 2025 or 2026"),
        ({"window_end": "2025-08-01"}, "window_end", "不能早于 window_start", "must not be before window_start"),
        ({"window_end": "2027-01-31"}, "window_end", "不能晚于 2026 年年底", "must not be after the end of 2026"),
    ],
)
async def test_policy_validation_follows_the_language(
    client: Client, change: dict[str, Any], field: str, zh: str, en: str
) -> None:
    admin = await auth_headers(client, "admin")

    async def publish(language: dict[str, str]) -> httpx.Response:
        return await client.post(
            "/api/v1/policy-years/2026/versions", json={**POLICY_2026, **change}, headers={**admin, **language}
        )

    await both(
        publish,
        Expected(
            422,
            "validation_error",
            [field],
            ("请求内容不符合要求", f"{field}: {zh}", [zh]),
            ("Request body is not valid", f"{field}: {en}", [en]),
        ),
    )
