"""Unknown is not a gap (issue 17, point 2), end to end: what is known of each year before 2027
decides the wait of a payment for 2027; unknown years flag the enrolment for the reviewer; a later
history import reopens registered enrolments and puts paid ones to a review; a history year marked
paid covers in the resident view. And the household view shows next year's enrolments (point 8).

The 2027 window runs 1 Sep – 31 Dec 2026; every payment here is made in it, on 2026-11-20.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor
from backend.enrollment import continuity, enrollments, history
from backend.residents import service as residents
from tests.conftest import auth_headers
from tests.enrollment.test_enrollments import staff_actor
from tests.factories import ID_NUMBERS, add_history, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
PAID_ON = date(2026, 11, 20)
POLICY_2027 = {"effective_from": "2026-09-01", "window_start": "2026-09-01", "window_end": "2026-12-31"}


async def setup(client: Client, waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    """The 2027 policy (its waiting rules as given), and a household of two enrolled for 2027."""
    rules: dict[str, Any] = {"categories": [], "categories_stack": False, "top_ups": []}
    if waiting is not None:
        rules["waiting"] = waiting
    await publish_policy(client, await auth_headers(client, "admin"), year=2027, rules=rules, **POLICY_2027)
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2027,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    return {"household": household, "ids": [UUID(e["id"]) for e in enrolled.json()["items"]]}


async def pay(conn: asyncpg.Connection, enrollment_id: UUID) -> enrollments.Enrollment:  # type: ignore[type-arg]
    async with conn.transaction():
        return await enrollments.mark_paid(conn, await staff_actor(conn), enrollment_id, PAID_ON)


def cover(e: enrollments.Enrollment) -> tuple[Any, ...]:
    return (e.coverage_start, e.coverage_reason, e.waiting_months, e.unknown_years)


async def test_no_record_at_all_paid_in_the_window_waits_nothing_and_is_flagged_with_the_unknown_years(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    paid = await pay(conn, world["ids"][0])
    # Before: a gap counted since 2025 → 3 + 2 = 5 months. Now 2025 and 2026 are unknown: no wait.
    assert cover(paid) == (date(2027, 1, 1), "in_window", 0, [2025, 2026])
    reviewer = await auth_headers(client, "reviewer_a")
    answer = await client.get(f"/api/v1/enrollments/{world['ids'][0]}", headers=reviewer)
    assert answer.json()["unknown_years"] == [2025, 2026]
    flagged = await client.get("/api/v1/enrollments", params={"year": 2027, "flag": "unknown_years"}, headers=reviewer)
    assert flagged.status_code == 200, flagged.text
    assert [e["id"] for e in flagged.json()["items"]] == [str(world["ids"][0])]  # not the unpaid one
    everything = await client.get("/api/v1/enrollments", params={"year": 2027}, headers=reviewer)
    assert len(everything.json()["items"]) == 2
    bad = await client.get("/api/v1/enrollments", params={"year": 2027, "flag": "maybe"}, headers=reviewer)
    assert bad.status_code in {400, 422}


async def test_known_uncovered_2025_and_2026_wait_three_plus_two_months(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    # On the rolls since mid-2024 (a member on 1 January 2025 and 2026) and never covered.
    await conn.execute(
        "UPDATE memberships SET joined_at = '2024-06-01T02:00:00Z' WHERE person_id = $1",
        UUID(world["household"]["members"][0]["person_id"]),
    )
    paid = await pay(conn, world["ids"][0])
    assert cover(paid) == (date(2027, 6, 1), "waiting_period", 5, [])


async def test_on_the_rolls_since_2026_only_counts_2026_and_lists_2025(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    await conn.execute(
        "UPDATE memberships SET joined_at = '2025-12-31T15:59:00Z' WHERE person_id = $1",  # 23:59 in Beijing
        UUID(world["household"]["members"][0]["person_id"]),
    )
    paid = await pay(conn, world["ids"][0])
    assert cover(paid) == (date(2027, 5, 1), "waiting_period", 4, [2025])


async def test_employee_insurance_and_history_years_are_cover(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    for m in world["household"]["members"]:
        await conn.execute(
            "UPDATE memberships SET joined_at = '2024-06-01T02:00:00Z' WHERE person_id = $1", UUID(m["person_id"])
        )
    await add_history(conn, ID_NUMBERS[1], 2026, "paid")
    civil = await auth_headers(client, "civil")
    upload = await client.post(
        "/api/v1/eligibility/lists",
        data={"type": "employee_insurance", "effective_from": "2026-01-01"},
        files={
            "file": ("zg.csv", f"身份证号,姓名,开始日期,结束日期\r\n{ID_NUMBERS[2]},李四,2025-03-01,2026-08-31\r\n")
        },
        headers=civil,
    )
    assert upload.status_code == 201, upload.text
    first, second = await pay(conn, world["ids"][0]), await pay(conn, world["ids"][1])
    assert cover(first) == (date(2027, 1, 1), "in_window", 0, [])
    assert cover(second) == (date(2027, 1, 1), "in_window", 0, [])


async def test_a_policy_that_counts_unknown_years_as_gaps(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client, waiting={"unknown_years": "gap"})
    paid = await pay(conn, world["ids"][0])
    assert cover(paid) == (date(2027, 6, 1), "waiting_period", 5, [2025, 2026])


async def test_a_policy_with_another_word_for_unknown_years_is_refused_naming_the_field(client: Client) -> None:
    rules = {"categories": [], "categories_stack": False, "top_ups": [], "waiting": {"unknown_years": "covered"}}
    response = await client.post(
        "/api/v1/policy-years/2027/versions",
        json={"premium_fen": 40000, "rules": rules, "note": "", **POLICY_2027},
        headers=await auth_headers(client, "admin"),
    )
    assert response.status_code in (400, 422), response.text
    assert "unknown_years" in response.text


def history_rows(*rows: tuple[str, int, history.HistoryStatus]) -> list[history.HistoryRow]:
    return [history.HistoryRow(row=i + 2, id_number=n, coverage_year=y, status=s) for i, (n, y, s) in enumerate(rows)]


async def test_a_history_import_that_proves_a_gap_reopens_the_registered_and_puts_the_paid_to_review(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    paid_id, registered_id = world["ids"]
    paid = await pay(conn, paid_id)
    assert cover(paid) == (date(2027, 1, 1), "in_window", 0, [2025, 2026])

    # The old system's export: both were registered in 2025 and 2026 and cancelled, never covered.
    rows = history_rows(
        (ID_NUMBERS[1], 2025, "cancelled"),
        (ID_NUMBERS[1], 2026, "cancelled"),
        (ID_NUMBERS[2], 2025, "cancelled"),
        (ID_NUMBERS[2], 2026, "cancelled"),
    )
    async with conn.transaction():
        summary = await history.import_history(conn, rows, "old-2026.csv")
    assert (summary.inserted, summary.reopened, summary.to_review) == (4, 1, 1)

    reviewer = await auth_headers(client, "reviewer_a")
    # The paid enrolment keeps its cover: a review shows the cover it would have now.
    kept = (await client.get(f"/api/v1/enrollments/{paid_id}", headers=reviewer)).json()
    assert (kept["coverage_start"], kept["waiting_months"]) == ("2027-01-01", 0)
    review = kept["gap_review"]
    assert (review["source_file"], review["years"]) == ("old-2026.csv", [2025, 2026])
    assert review["cover"] == {
        "coverage_start": "2027-06-01",
        "coverage_end": "2027-12-31",
        "coverage_reason": "waiting_period",
        "waiting_months": 5,
        "counted_gap_years": [2025, 2026],
        "unknown_years": [],
    }
    queue = await client.get("/api/v1/enrollments", params={"year": 2027, "flag": "gap_review"}, headers=reviewer)
    assert [e["id"] for e in queue.json()["items"]] == [str(paid_id)]
    audited = await conn.fetch(
        "SELECT action, entity_id FROM audit_log WHERE action IN ('reopen', 'open_gap_review') ORDER BY id"
    )
    assert [(r["action"], r["entity_id"]) for r in audited] == [
        ("reopen", str(registered_id)),
        ("open_gap_review", str(paid_id)),
    ]

    # The registered one was reopened: paying now buys the cover the new history gives.
    later = await pay(conn, registered_id)
    assert cover(later) == (date(2027, 6, 1), "waiting_period", 5, [])

    # Keeping needs a note; staff cannot decide; applying gives the cover as known now.
    url = f"/api/v1/enrollments/{paid_id}/gap-review"
    no_note = await client.post(url, json={"decision": "keep"}, headers=reviewer)
    assert (no_note.status_code, no_note.json()["errors"][0]["field"]) == (422, "note")
    staff = await auth_headers(client, "staff_a")
    assert (await client.post(url, json={"decision": "apply"}, headers=staff)).status_code == 403
    applied = await client.post(url, json={"decision": "apply"}, headers=reviewer)
    assert applied.status_code == 200, applied.text
    body = applied.json()
    assert (body["coverage_start"], body["waiting_months"], body["gap_review"]) == ("2027-06-01", 5, None)
    again = await client.post(url, json={"decision": "apply"}, headers=reviewer)
    assert (again.status_code, again.json()["code"]) == (409, "no_gap_review")


async def test_the_paid_enrolments_an_import_bears_on_are_read_once_per_business_date(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A history import can bear on every paid enrolment of the season: what their cover depends on is
    read for all those paid on one date at once, not one enrolment at a time (each one a round trip:
    half a millisecond, ten minutes for a district's million). Each still gets its own review."""
    world = await setup(client)
    for enrollment_id in world["ids"]:
        await pay(conn, enrollment_id)
    reads: list[list[tuple[UUID, int]]] = []
    read = enrollments.coverage_inputs

    async def counted(conn: Any, person_years: list[tuple[UUID, int]], on: date, *args: Any) -> Any:
        reads.append(person_years)
        return await read(conn, person_years, on, *args)

    monkeypatch.setattr(enrollments, "coverage_inputs", counted)
    rows = history_rows(*((number, year, "cancelled") for number in ID_NUMBERS[1:3] for year in (2025, 2026)))
    async with conn.transaction():
        summary = await history.import_history(conn, rows, "old-2026.csv")
    assert (summary.reopened, summary.to_review) == (0, 2)
    assert len(reads) == 1 and len(reads[0]) == 2  # both paid on PAID_ON: one read
    for enrollment_id in world["ids"]:
        review = await conn.fetchval("SELECT gap_review FROM enrollments WHERE id = $1", enrollment_id)
        assert (review["cover"]["coverage_start"], review["cover"]["waiting_months"]) == ("2027-06-01", 5)


async def test_the_enrolments_an_import_bears_on_are_decided_a_page_at_a_time(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory holds a page of the enrolments found, not the season's: with pages of one, the two paid
    enrolments are decided in two pages and come to the same reviews and counts as in one."""
    world = await setup(client)
    for enrollment_id in world["ids"]:
        await pay(conn, enrollment_id)
    pages: list[int] = []
    decide = enrollments._reopen_some

    async def counted(conn: Any, rows: list[Any], *args: Any) -> Any:
        pages.append(len(rows))
        return await decide(conn, rows, *args)

    monkeypatch.setattr(enrollments, "REOPEN_AT_ONCE", 1)
    monkeypatch.setattr(enrollments, "_reopen_some", counted)
    rows = history_rows(*((number, year, "cancelled") for number in ID_NUMBERS[1:3] for year in (2025, 2026)))
    async with conn.transaction():
        summary = await history.import_history(conn, rows, "old-2026.csv")
    assert pages == [1, 1]
    assert (summary.reopened, summary.to_review) == (0, 2)
    reviewed = await conn.fetchval("SELECT count(*) FROM enrollments WHERE gap_review IS NOT NULL")
    assert reviewed == 2


async def test_an_import_that_changes_nothing_for_a_paid_enrolment_opens_no_review(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    await pay(conn, world["ids"][0])
    async with conn.transaction():
        summary = await history.import_history(conn, history_rows((ID_NUMBERS[1], 2026, "paid")), "old.csv")
    # Covered 2026 confirms the whole year it has: nothing to review (the registered spouse: untouched).
    assert (summary.reopened, summary.to_review) == (0, 0)
    assert await conn.fetchval("SELECT count(*) FROM enrollments WHERE gap_review IS NOT NULL") == 0


@pytest.mark.parametrize("status", ["paid", "confirmed"])
async def test_a_history_year_marked_paid_covers_in_the_resident_view(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    status: history.HistoryStatus,
) -> None:
    world = await setup(client)
    await add_history(conn, ID_NUMBERS[1], 2026, status)
    head = UUID(world["household"]["members"][0]["person_id"])
    actor = Actor.resident(head, UUID(world["household"]["id"]))
    async with conn.transaction():
        view = await residents.coverage(conn, actor, 2026, date(2026, 3, 1))
    by_person = {m.person_id: m for m in view.members}
    mine, spouse = by_person[head], by_person[UUID(world["household"]["members"][1]["person_id"])]
    assert (
        mine.in_force_today,
        mine.coverage_state,
        mine.enrollment_status,
        mine.coverage_start,
        mine.coverage_end,
        mine.coverage_reason_code,
        mine.coverage_source,
        mine.premium_fen,
    ) == (True, "in_force", status, date(2026, 1, 1), date(2026, 12, 31), "history", "history", 0)
    assert "Not enrolled" not in mine.explanation
    assert "awaits review" not in mine.explanation
    assert "enrolment history imported from the previous system" in mine.explanation
    assert (spouse.coverage_state, spouse.coverage_source) == ("not_enrolled", None)


async def test_the_household_shows_next_years_enrolment_whatever_year_is_asked(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    world = await setup(client)
    await pay(conn, world["ids"][0])
    staff = await auth_headers(client, "staff_a")
    url = f"/api/v1/households/{world['household']['id']}"
    # Today (this test's clock) is in 2026: the open years are 2026 and 2027.
    plain = (await client.get(url, headers=staff)).json()
    head = plain["members"][0]
    assert head["enrollment"] is None  # no year asked: `enrollment` keeps its meaning
    assert [(e["coverage_year"], e["status"], e["coverage_start"]) for e in head["enrollments"]] == [
        (2027, "paid", "2027-01-01")
    ]
    assert [(e["coverage_year"], e["status"]) for e in plain["members"][1]["enrollments"]] == [(2027, "registered")]
    asked = (await client.get(url, params={"year": 2027}, headers=staff)).json()
    assert asked["members"][0]["enrollment"]["status"] == "paid"
    assert [e["coverage_year"] for e in asked["members"][0]["enrollments"]] == [2027]


async def test_a_history_year_marked_paid_counts_as_funded_in_the_coverage_report(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await setup(client)
    await add_history(conn, ID_NUMBERS[1], 2026, "confirmed")
    await add_history(conn, ID_NUMBERS[2], 2026, "cancelled")
    admin = await auth_headers(client, "admin")
    report = (await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)).json()
    [village] = [r for r in report["rows"] if r["persons"]]
    assert (village["persons"], village["funded"], village["registered_unpaid"], village["not_enrolled"]) == (
        2,
        1,
        0,
        1,
    )
    assert village["rate_percent"] == 50.0


async def test_the_policy_in_force_is_read_once_per_year_not_once_per_person(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """The policy version (the whole row as JSON) comes on one row per year, so the client decodes it
    once, and every person's facts still see it."""
    world = await setup(client)
    household_id = UUID(world["household"]["id"])
    persons = [UUID(m["person_id"]) for m in world["household"]["members"]]
    facts = await conn.fetch(enrollments.Q["coverage_facts"], persons, [2027, 2027], PAID_ON, "Asia/Shanghai")
    assert sorted(r["policy"] is not None for r in facts) == [False, True]
    inputs = await enrollments.coverage_inputs(conn, [(p, 2027) for p in persons], PAID_ON)
    in_force = inputs.in_force[2027]
    assert in_force is not None and in_force.effective_from == date(2026, 9, 1)
    asked = await conn.fetch(
        enrollments.Q["households_for_enrolments"], [household_id] * len(persons), persons, 2027, PAID_ON
    )
    assert [r["policy"] is not None for r in asked] == [True, False]
    years = await conn.fetch(continuity.KNOWN_YEARS_OF_HOUSEHOLD, household_id, 2027, "Asia/Shanghai", PAID_ON)
    assert sorted(r["policy"] is not None for r in years) == [False, True]
    _known, policy = await continuity.known_years_and_policy_of_household(conn, household_id, 2027, PAID_ON)
    assert policy is not None and policy.coverage_year == 2027


async def test_uncovered_years_are_the_local_new_years_a_membership_spans(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """A member on 1 January (Beijing time) of a year is known uncovered that year, in both queries
    that read it: a membership that began at New Year's midnight exactly is not counted for that
    year, one that ended then is; one entered in error never counts."""
    world = await setup(client)
    person_id = UUID(world["household"]["members"][1]["person_id"])  # born 1980
    household_id = UUID(world["household"]["id"])
    # Now a member since 23:59:59 on 31 Dec 2019 in Beijing: 2020 … 2026 (2027 is the year itself).
    await conn.execute("UPDATE memberships SET joined_at = '2019-12-31T15:59:59Z' WHERE person_id = $1", person_id)
    await conn.execute(
        "INSERT INTO memberships (id, person_id, household_id, relation, joined_at, left_at, left_reason)"
        " VALUES (gen_random_uuid(), $1, $2, 'other', $3, $4, $5)",
        person_id,
        household_id,
        *rows_of(("2009-12-31T16:00:00Z", "2013-12-31T16:00:00Z", "moved")),  # New Year 2010 to New Year 2014
    )
    await conn.execute(
        "INSERT INTO memberships (id, person_id, household_id, relation, joined_at, left_at, left_reason)"
        " VALUES (gen_random_uuid(), $1, $2, 'other', $3, $4, $5)",
        person_id,
        household_id,
        *rows_of(("1999-06-01T00:00:00Z", "2005-06-01T00:00:00Z", "data_error")),
    )
    expected = [2011, 2012, 2013, 2014, 2020, 2021, 2022, 2023, 2024, 2025, 2026]
    inputs = await enrollments.coverage_inputs(conn, [(person_id, 2027)], PAID_ON)
    assert sorted(inputs.facts[person_id, 2027]["uncovered_years"]) == expected
    known = await continuity.known_years(conn, [person_id], 2026)
    assert sorted(known[person_id].uncovered) == expected  # `known_years` counts the year itself


def rows_of(row: tuple[str, str, str]) -> tuple[Any, ...]:
    joined, left, reason = row
    return (datetime.fromisoformat(joined), datetime.fromisoformat(left), reason)
