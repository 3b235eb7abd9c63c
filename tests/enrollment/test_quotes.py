"""The premium quote says what a payment today would buy: the cover's start, in the reader's words,
and plainly when it buys no cover in the year (naming the next). Literal dates: the household of two
was covered in 2025 and is enrolled for 2026, whose window closed on 2025-12-31 (3 months' wait after)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import quotes
from backend.i18n import use_language
from tests.conftest import auth_headers
from tests.premiums.test_payments import World, actor_of, http_body, world_fixture  # noqa: F401 (fixture)

Client = AsyncTestClient[Litestar]


async def quote_on(conn: asyncpg.Connection, world: World, today: date) -> quotes.PremiumQuote:  # type: ignore[type-arg]
    actor = await actor_of(conn, "staff_a")
    return await quotes.premium_quote(conn, actor, UUID(world.household["id"]), 2026, today)


async def test_paid_on_2_december_the_quote_says_no_cover_in_2026_and_names_2027(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    quote = await quote_on(conn, world, date(2026, 12, 2))
    assert quote.no_cover_this_year == [UUID(p) for p in world.person_ids]
    assert [(m.cover_reason_if_paid_today, m.cover_start_if_paid_today) for m in quote.members] == [
        ("no_cover_this_year", None)
    ] * 2
    assert quote.members[0].cover_if_paid_today == (
        "Paid today (2026-12-02), the cover would start on 2027-03-02, after 2026 ends: no cover in 2026. "
        "For cover in 2027, enrol for 2027."
    )
    assert quote.notice == (
        "Paid today (2026-12-02), the premium for 2026 buys 2 members no cover this year: the cover would start "
        "only after 2026 ends. Paying still counts as a year insured (no gap before 2027); for cover in 2027, "
        "enrol for 2027. A payment for them needs acknowledge_no_cover."
    )
    # The money is quoted as before.
    assert (quote.due_fen, quote.balance_fen) == (80000, 80000)
    with use_language("zh_CN"):
        chinese = await quote_on(conn, world, date(2026, 12, 2))
    assert chinese.members[0].cover_if_paid_today == (
        "今天（2026年12月2日）缴费，待遇享受期将从2027年3月2日开始，已在2026年度结束之后：2026年度不享受待遇。"
        "如需2027年度享受待遇，请办理2027年度参保登记。"
    )
    assert chinese.notice is not None and "2名家庭成员本年度不享受待遇" in chinese.notice


async def test_paid_in_march_the_quote_gives_the_cover_and_no_notice(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    world: World,
) -> None:
    quote = await quote_on(conn, world, date(2026, 3, 10))
    assert (quote.no_cover_this_year, quote.notice) == ([], None)
    assert [(m.cover_reason_if_paid_today, m.cover_start_if_paid_today) for m in quote.members] == [
        ("waiting_period", date(2026, 6, 10))
    ] * 2
    assert quote.members[0].cover_if_paid_today == "Paid today (2026-03-10), covered from 2026-06-10 to 2026-12-31."


async def test_members_already_paid_are_quoted_without_a_cover_to_buy(
    client: Client,
    world: World,
) -> None:
    staff = await auth_headers(client, "staff_a")
    paid = await client.post(
        "/api/v1/payments", json=http_body(world), headers={**staff, "Idempotency-Key": "quote-paid-1"}
    )
    assert paid.status_code == 201, paid.text
    quote = await client.get(
        f"/api/v1/households/{world.household['id']}/premium",
        params={"year": 2026},
        headers={**staff, "Accept-Language": "zh-CN"},
    )
    assert quote.status_code == 200, quote.text
    body = quote.json()
    assert (body["no_cover_this_year"], body["notice"]) == ([], None)
    assert [(m["status"], m["cover_reason_if_paid_today"]) for m in body["members"]] == [("paid", None)] * 2


async def test_the_route_says_it_in_the_readers_language(client: Client, world: World) -> None:
    """Asked today (any day after 2026-09-30 buys no cover in 2026)."""
    staff = await auth_headers(client, "staff_a")
    quote = await client.get(
        f"/api/v1/households/{world.household['id']}/premium",
        params={"year": 2026},
        headers={**staff, "Accept-Language": "zh-CN"},
    )
    body = quote.json()
    assert body["no_cover_this_year"] == world.person_ids
    assert "2027年度参保登记" in body["notice"]
    assert body["members"][0]["cover_reason_if_paid_today"] == "no_cover_this_year"
