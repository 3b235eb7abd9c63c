"""The demo population behind `canbao demo seed`: a district that looks real (valid ID numbers
that agree with each member, plausible families, last year's cover, this year's enrolments in
every state), the same on every fresh database, and left alone by a second run."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import date
from typing import Any

import asyncpg
import pytest

from backend.actor import Actor, Role, Scope
from backend.auth.passwords import Passwords
from backend.crypto import ID_NUMBER
from backend.db import init_connection, load_queries
from backend.enrollment import enrollments
from backend.enrollment.coverage_report import coverage_report
from backend.i18n import use_language
from backend.residents import service as residents
from backend.tools import demo
from mobile_sync_protocol.rules.identity import parse_resident_id
from tests.conftest import JWT_SECRET, KEYS, PgServer
from tests.ops.test_cli import env_for
from tests.processes import run_cli

Conn = asyncpg.Connection  # type: ignore[type-arg]

PERSONS = 9576
ENROLLMENTS = {
    2025: {"cancelled": 97, "confirmed": 4421},
    2026: {"cancelled": 126, "confirmed": 2281, "paid": 2494, "registered": 1466, "subsidised": 103},
}
HISTORY_ROWS = 4072


@pytest.fixture
async def population(conn: Conn, seeded: None) -> demo.PopulationSummary:
    return await demo.seed_population(conn)


async def actor(conn: Conn, username: str) -> Actor:
    row = await conn.fetchrow("SELECT id, role, division_code FROM users WHERE username = $1", username)
    level = "district" if row["role"] == Role.DISTRICT_ADMIN else "township"
    return Actor(kind="user", id=row["id"], role=Role(row["role"]), scope=Scope(row["division_code"], level))


async def table_rows(conn: Conn) -> dict[str, list[str]]:
    tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return {t: sorted(r[0] for r in await conn.fetch(f'SELECT x::text FROM "{t}" AS x')) for t in sorted(tables)}


async def test_the_population_has_three_thousand_households_and_enrolments_in_every_state(
    conn: Conn, population: demo.PopulationSummary
) -> None:
    assert population == demo.PopulationSummary(
        created=True, households=3000, persons=PERSONS, enrollments=ENROLLMENTS, history_rows=HISTORY_ROWS
    )
    per_village = dict(await conn.fetch("SELECT village_code, count(*) FROM households GROUP BY 1"))
    assert per_village == demo.VILLAGE_HOUSEHOLDS
    assert await conn.fetchval("SELECT count(*) FROM persons") == PERSONS
    years = [(r["coverage_year"], r["premium_fen"]) for r in await conn.fetch("SELECT * FROM policy_versions")]
    assert sorted(years) == [(2025, 40000), (2026, 40000)]
    assert await conn.fetch("SELECT action, entity FROM audit_log WHERE entity = 'demo_population'") == [
        ("seed", "demo_population")
    ]


async def test_every_id_number_is_valid_and_agrees_with_the_members_birth_date_and_sex(
    conn: Conn, population: demo.PopulationSummary
) -> None:
    rows = await conn.fetch("SELECT id_number_hash, id_number_enc, birth_date, sex FROM persons")
    assert len(rows) == PERSONS
    for r in rows:
        number = KEYS.open(ID_NUMBER, r["id_number_enc"])
        assert number is not None and r["id_number_hash"] == KEYS.index(ID_NUMBER, number)  # stored sealed
        parsed = parse_resident_id(number, today=demo.REFERENCE_DATE, birth_date=r["birth_date"], sex=r["sex"])
        assert parsed.number == number
    assert max(r["birth_date"] for r in rows) <= demo.REFERENCE_DATE


async def test_households_are_plausible_families(conn: Conn, population: demo.PopulationSummary) -> None:
    members = await conn.fetch(
        """SELECT h.id AS household_id, h.head_person_id, m.person_id, m.relation, p.sex, p.birth_date, p.name
           FROM households h JOIN memberships m ON m.household_id = h.id JOIN persons p ON p.id = m.person_id"""
    )
    by_household: dict[Any, list[asyncpg.Record]] = {}
    for m in members:
        by_household.setdefault(m["household_id"], []).append(m)
    sizes = Counter(len(ms) for ms in by_household.values())
    assert set(sizes) == {1, 2, 3, 4, 5, 6}
    for ms in by_household.values():
        [head] = [m for m in ms if m["relation"] == "head"]
        assert head["person_id"] == head["head_person_id"]
        head_year = head["birth_date"].year
        assert head_year <= 2003  # heads are adults, 22 or older
        for m in ms:
            years_younger = m["birth_date"].year - head_year
            if m["relation"] == "spouse":
                assert m["sex"] != head["sex"]
            elif m["relation"] == "child":
                assert years_younger >= 17
            elif m["relation"] == "grandchild":
                assert years_younger >= 36
            elif m["relation"] in {"parent", "grandparent"}:
                assert years_younger <= -17
            assert 2 <= len(m["name"]) <= 4  # 欧阳 and other two-character surnames
    relations = Counter(m["relation"] for m in members)
    assert set(relations) == {
        "head",
        "spouse",
        "child",
        "parent",
        "grandchild",
        "grandparent",
        "sibling",
        "child_in_law",
    }


async def test_cover_follows_last_years_enrolments_and_history(conn: Conn, population: demo.PopulationSummary) -> None:
    """A 2026 enrolment funded inside the window covers the whole year exactly when the person
    had cover in 2025 (one of our enrolments, or the old system's history) or is a newborn."""
    rows = await conn.fetch(
        """SELECT e.status, e.funding, e.subsidy_fen, e.coverage_start, e.coverage_end, e.coverage_reason,
                  e.business_date, e.registered_on, e.confirmed_by IS NOT NULL AS has_reviewer,
                  (EXISTS (SELECT 1 FROM enrollments l WHERE l.person_id = e.person_id AND l.coverage_year = 2025
                           AND l.status <> 'cancelled')
                   OR EXISTS (SELECT 1 FROM enrollment_history h WHERE h.id_number_hash = p.id_number_hash
                              AND h.coverage_year = 2025 AND h.status <> 'cancelled')) AS covered_2025
           FROM enrollments e JOIN persons p ON p.id = e.person_id
           WHERE e.coverage_year = 2026"""
    )
    reasons: Counter[tuple[str | None, bool]] = Counter()
    for r in rows:
        if r["status"] in {"registered", "cancelled"}:
            assert (r["funding"], r["coverage_start"], r["business_date"]) == (None, None, None)
            continue
        assert r["coverage_end"] == date(2026, 12, 31)
        assert r["has_reviewer"] == (r["status"] == "confirmed")
        if r["funding"] == "subsidised":
            assert (r["subsidy_fen"], r["business_date"]) == (40000, r["registered_on"])
        in_window = r["business_date"] <= date(2025, 12, 31)
        if in_window and r["coverage_reason"] != "newborn":
            assert (r["coverage_reason"] == "in_window") == r["covered_2025"]
            assert r["coverage_start"] == (date(2026, 1, 1) if r["covered_2025"] else date(2026, 5, 1))
        reasons[r["coverage_reason"], in_window] += 1
    assert set(reasons) >= {("in_window", True), ("waiting_period", True), ("waiting_period", False)}
    subsidies = {r["subsidy_fen"] for r in rows if r["funding"] == "paid"}
    assert subsidies == {0, 20000, 30000}


async def test_the_review_queue_the_coverage_report_and_renewal_show_the_population(
    conn: Conn, population: demo.PopulationSummary
) -> None:
    reviewer = await actor(conn, "reviewer_b")
    queue = await enrollments.queue(
        conn, reviewer, year=2026, status="paid", village_code=None, household_id=None, after=None, limit=50
    )
    assert len(queue.items) == 50
    assert {e.village_code[:9] for e in queue.items} == {"330106002"}
    report = await coverage_report(conn, await actor(conn, "admin"), 2026, "village")
    assert [r.division_code for r in report.rows] == sorted(demo.VILLAGE_HOUSEHOLDS)
    assert all(0 < r.enrolled < r.persons for r in report.rows)
    assert report.total.persons == PERSONS
    assert report.total.enrolled == sum(n for s, n in ENROLLMENTS[2026].items() if s != "cancelled")
    # 双浦镇's 2025 cover is the old system's history: renewal finds it there.
    renewal = await enrollments.renewal_candidates(conn, await actor(conn, "staff_b"), 2026, None, None, 20)
    assert len(renewal.items) == 20


async def test_a_second_run_changes_no_table(conn: Conn, population: demo.PopulationSummary) -> None:
    before = await table_rows(conn)
    again = await demo.seed_population(conn)
    assert again == demo.PopulationSummary(
        created=False, households=3000, persons=PERSONS, enrollments=ENROLLMENTS, history_rows=HISTORY_ROWS
    )
    assert await table_rows(conn) == before


def test_every_fresh_database_gets_the_same_people(pg_server: PgServer) -> None:
    # The numbers are sealed under a fresh nonce each time: compared by their blind indexes.
    query = """SELECT h.village_code, h.household_no, h.address, m.relation, p.id, p.id_number_hash, p.name,
                      p.phone_hash
               FROM households h JOIN memberships m ON m.household_id = h.id JOIN persons p ON p.id = m.person_id
               ORDER BY p.id"""
    enrolments = (
        "SELECT id, person_id, coverage_year, status, business_date, coverage_start FROM enrollments ORDER BY id"
    )

    async def populate(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        try:
            await init_connection(conn)
            await demo.seed(conn, Passwords(1, 64))
            await demo.seed_population(conn)
            return [tuple(r) for r in await conn.fetch(query)], [tuple(r) for r in await conn.fetch(enrolments)]
        finally:
            await conn.close()

    names = [pg_server.create_database(), pg_server.create_database()]
    try:
        first, second = (asyncio.run(populate(pg_server.dsn(name))) for name in names)
    finally:
        for name in names:
            pg_server.drop_database(name)
    assert len(first[0]) == PERSONS
    assert first == second


async def test_the_population_waits_for_the_demo_users(conn: Conn) -> None:
    with pytest.raises(RuntimeError, match="seed the demo district and its users first"):
        await demo.seed_population(conn)


async def test_demo_queries_prepare(conn: Conn) -> None:
    queries = load_queries("backend.tools", "demo.sql")
    assert sorted(queries) == [
        "demo_households_exist",
        "demo_resident",
        "demo_resident_code",
        "enrollments_by_year_and_status",
        "history_rows_of_residents",
        "population_counts",
    ]
    for sql in queries.values():
        await conn.prepare(sql)


def test_demo_seed_prints_the_population(db_dsn: str) -> None:
    first = run_cli("demo", "seed", env=env_for(db_dsn))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-4:] == [
        f"Population (seeded): 3000 households, {PERSONS} persons",
        "  2025 enrolments: 97 cancelled, 4421 confirmed",
        "  2026 enrolments: 126 cancelled, 2281 confirmed, 2494 paid, 1466 registered, 103 subsidised",
        f"  enrolment history from the old system: {HISTORY_ROWS} rows",
    ]
    # With the signing key, the demo's resident for the residents' page too.
    keyed = run_cli("demo", "seed", env={**env_for(db_dsn), "CANBAO_JWT_SECRET": JWT_SECRET})
    assert keyed.returncode == 0, keyed.stderr
    assert keyed.stdout.splitlines()[-1].startswith("Residents' page /r/ (demo household, 2026): ID number ")
    # A demo on another day (CANBAO_BUSINESS_CLOCK): the resident of that day's year, and a warning.
    pinned = run_cli(
        "demo",
        "seed",
        env={**env_for(db_dsn), "CANBAO_JWT_SECRET": JWT_SECRET, "CANBAO_BUSINESS_CLOCK": "2025-10-01T02:00:00Z"},
    )
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.splitlines()[-1].startswith("Residents' page /r/ (demo household, 2025): ID number ")
    assert "business clock pinned by CANBAO_BUSINESS_CLOCK: business dates start at 2025-10-01T02:00:00+00:00" in (
        pinned.stderr
    )
    assert "CANBAO_BUSINESS_CLOCK" not in keyed.stderr
    second = run_cli("demo", "seed", env=env_for(db_dsn))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-4] == (
        f"Population (already there, left as it was): 3000 households, {PERSONS} persons"
    )


async def test_a_residents_page_says_why_in_the_readers_language(
    conn: Conn, population: demo.PopulationSummary
) -> None:
    """The demo's funded enrolments keep the facts of their cover, as a payment stores them, so a
    resident reading in Chinese is told why in Chinese (the stored English note is only for rows
    funded before facts were kept)."""
    covered = await conn.fetchrow(
        "SELECT count(*) AS covered, count(*) FILTER (WHERE coverage_facts IS NULL) AS without_facts"
        " FROM enrollments WHERE coverage_start IS NOT NULL"
    )
    assert covered["covered"] > 0 and covered["without_facts"] == 0
    row = await conn.fetchrow(
        "SELECT person_id, household_id FROM enrollments WHERE coverage_year = 2026 AND status = 'paid'"
        " AND coverage_reason = 'in_window' ORDER BY id LIMIT 1"
    )
    resident = Actor.resident(row["person_id"], row["household_id"], uuid.uuid4())
    with use_language("zh_CN"):
        async with conn.transaction():
            view = await residents.coverage(conn, resident, 2026, date(2026, 3, 1))
    why = next(m.reason_words for m in view.members if m.person_id == row["person_id"])
    assert why is not None and "在集中参保期内" in why and "Enrolled" not in why, why
