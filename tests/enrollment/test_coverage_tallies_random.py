"""The 应保尽保 summary (`coverage_tallies`, migrations 0026, 0030 and 0032) against the facts counted, after
every one of a random sequence of raw writes to whatever the summary reads: enrolments inserted,
re-statused (paid ↔ subsidised included), moved to another year or person, deleted; memberships
left, rejoined, moved to another household, inserted current or already left, deleted; households
dissolved, restored, moved to another village; persons' ID numbers corrected; history rows inserted,
re-statused, moved to another number, deleted; statements of one row, a few rows, and more than 64
persons (the set refresh), and statements that change nothing the report reads.

The same sequence must notice any one of the summary's triggers missing (each dropped in turn): a
test that passes with a trigger gone, or a filter that passes over a change it must see, proves
nothing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from backend.enrollment.coverage_report import VillageCounts, village_counts

Conn = asyncpg.Connection  # type: ignore[type-arg]
DISTRICT = ("330106000000", "330106999999")
YEARS = (2025, 2026)
PERSONS = 100  # more than 64: a statement over a year's enrolments takes the set refresh
HOUSEHOLDS = 24
STATUSES = ("registered", "paid", "subsidised", "confirmed", "cancelled")


def number(i: int) -> bytes:
    """The i-th identity number's blind index (persons 0 … PERSONS − 1; the others are free numbers
    that only the history or a correction uses)."""
    return b"id-%04d" % i


def status_columns(status: str) -> tuple[str, str | None, str | None]:
    """(status, funding, cancel_reason) that the enrolments' checks accept."""
    funding = {"paid": "paid", "confirmed": "paid", "subsidised": "subsidised"}.get(status)
    return status, funding, "data_error" if status == "cancelled" else None


async def figures(conn: Conn) -> dict[int, tuple[list[VillageCounts], list[VillageCounts]]]:
    return {
        year: (
            await village_counts(conn, *DISTRICT, year),
            await village_counts(conn, *DISTRICT, year, from_facts=True),
        )
        for year in YEARS
    }


async def build(conn: Conn, pick: random.Random) -> list[str]:
    """Households over the district's villages, persons mostly in one, enrolments for both years."""
    villages: list[str] = await conn.fetchval(
        "SELECT array_agg(code ORDER BY code) FROM divisions WHERE level = 'village' AND code BETWEEN $1 AND $2",
        *DISTRICT,
    )
    assert len(villages) >= 3, villages

    def uid() -> UUID:
        return UUID(int=pick.getrandbits(128), version=4)

    persons = [uid() for _ in range(PERSONS)]
    households = [uid() for _ in range(HOUSEHOLDS)]
    await conn.execute(
        "INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date) "
        "SELECT id, h, h, '某某', 'female', date '1980-01-01' FROM unnest($1::uuid[], $2::bytea[]) AS p (id, h)",
        persons,
        [number(i) for i in range(PERSONS)],
    )
    await conn.execute(
        "INSERT INTO households (id, village_code, household_no) "
        "SELECT id, v, 'r-' || n FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS h (id, v, n)",
        households,
        [villages[i % len(villages)] for i in range(HOUSEHOLDS)],
    )
    placed = [(uid(), p, pick.choice(households)) for p in persons[: PERSONS - 8]]  # 8 in no household
    await conn.execute(
        "INSERT INTO memberships (id, person_id, household_id, relation) "
        "SELECT id, p, h, 'other' FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS m (id, p, h)",
        *zip(*placed, strict=True),
    )
    for year in YEARS:
        chosen = [p for p in persons if pick.random() < 0.8]
        statuses = [status_columns(pick.choice(STATUSES)) for _ in chosen]
        await conn.execute(
            "INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, funding, "
            "                         cancel_reason, registered_on) "
            "SELECT gen_random_uuid(), e.p, coalesce(m.household_id, $6), h.village_code, $1, e.s, e.f, e.r, "
            "       date '2025-10-01' "
            "FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS e (p, s, f, r) "
            "LEFT JOIN memberships m ON m.person_id = e.p AND m.left_at IS NULL "
            "JOIN households h ON h.id = coalesce(m.household_id, $6)",
            year,
            chosen,
            *zip(*statuses, strict=True),
            households[0],
        )
    await conn.execute(
        "INSERT INTO enrollment_history (id_number_hash, id_number_enc, coverage_year, status, source_file) "
        "SELECT h, h, y, s, 'old.csv' FROM unnest($1::bytea[], $2::int[], $3::text[]) AS x (h, y, s) "
        "ON CONFLICT DO NOTHING",
        [number(pick.randrange(PERSONS + 10)) for _ in range(40)],
        [pick.choice(YEARS) for _ in range(40)],
        [pick.choice(("paid", "subsidised", "confirmed", "cancelled")) for _ in range(40)],
    )
    return villages


Step = Callable[[Conn, random.Random], Awaitable[str]]


async def an_enrolment(conn: Conn) -> asyncpg.Record:
    """Mostly a live one (which counts)."""
    row = await conn.fetchrow(
        "SELECT id, person_id, coverage_year, status FROM enrollments "
        "ORDER BY status = 'cancelled' AND random() < 0.8, random() LIMIT 1"
    )
    assert row is not None
    return row


async def enrol(conn: Conn, pick: random.Random) -> str:
    count = pick.choice((1, 1, 3))
    status = pick.choice(STATUSES)
    await conn.execute(
        "INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, funding, "
        "                         cancel_reason, registered_on) "
        "SELECT gen_random_uuid(), p.id, h.id, h.village_code, $1, $2, $3, $4, date '2025-10-01' "
        "FROM (SELECT id FROM persons p WHERE $2 = 'cancelled' OR NOT EXISTS ("
        "          SELECT 1 FROM enrollments e WHERE e.person_id = p.id AND e.coverage_year = $1 "
        "          AND e.status <> 'cancelled') ORDER BY random() LIMIT $5) AS p, "
        "     LATERAL (SELECT id, village_code FROM households ORDER BY random() LIMIT 1) AS h",
        pick.choice(YEARS),
        *status_columns(status),
        count,
    )
    return f"enrol {count} {status}"


async def restatus(conn: Conn, pick: random.Random) -> str:
    count = pick.choice((1, 1, 2, 4))
    status = pick.choice(STATUSES)
    await conn.execute(
        "UPDATE enrollments SET status = $1, funding = $2, cancel_reason = $3, updated_at = now() "
        "WHERE id IN (SELECT id FROM enrollments ORDER BY random() LIMIT $4)",
        *status_columns(status),
        count,
    )
    return f"restatus {count} → {status}"


async def paid_subsidised(conn: Conn, pick: random.Random) -> str:
    """Funded either way: the trigger may pass over it, the figures must not move."""
    await conn.execute(
        "UPDATE enrollments SET status = CASE status WHEN 'paid' THEN 'subsidised' ELSE 'paid' END, "
        "funding = CASE status WHEN 'paid' THEN 'subsidised' ELSE 'paid' END "
        "WHERE id IN (SELECT id FROM enrollments WHERE status IN ('paid', 'subsidised') ORDER BY random() LIMIT 2)"
    )
    return "paid ↔ subsidised"


async def other_year(conn: Conn, pick: random.Random) -> str:
    e = await an_enrolment(conn)
    await conn.execute("UPDATE enrollments SET coverage_year = $2 WHERE id = $1", e["id"], 2051 - e["coverage_year"])
    return f"year of a {e['status']} enrolment"


async def other_person(conn: Conn, pick: random.Random) -> str:
    e = await an_enrolment(conn)
    await conn.execute(
        "UPDATE enrollments SET person_id = (SELECT id FROM persons ORDER BY random() LIMIT 1) WHERE id = $1", e["id"]
    )
    return f"person of a {e['status']} enrolment"


async def unenrol(conn: Conn, pick: random.Random) -> str:
    e = await an_enrolment(conn)
    await conn.execute("DELETE FROM enrollments WHERE id = $1", e["id"])
    return f"delete a {e['status']} enrolment"


async def touch(conn: Conn, pick: random.Random) -> str:
    """Nothing the report reads."""
    await conn.execute(
        "UPDATE enrollments SET updated_at = now(), row_version = row_version + 1, coverage_note = 'x' "
        "WHERE id IN (SELECT id FROM enrollments ORDER BY random() LIMIT 3)"
    )
    await conn.execute("UPDATE households SET row_version = row_version + 1, address = 'x'")
    await conn.execute("UPDATE memberships SET relation = 'sibling' WHERE id = (SELECT id FROM memberships LIMIT 1)")
    await conn.execute("UPDATE persons SET name = '某某某' WHERE id = (SELECT id FROM persons LIMIT 1)")
    return "touch"


async def a_year_at_once(conn: Conn, pick: random.Random) -> str:
    """Every enrolment of a year in one statement: more persons than the one-by-one refresh takes."""
    year = pick.choice(YEARS)
    await conn.execute(
        "UPDATE enrollments SET status = CASE status WHEN 'registered' THEN 'paid' WHEN 'paid' THEN 'confirmed' "
        "                                       WHEN 'confirmed' THEN 'registered' ELSE status END, "
        "funding = CASE status WHEN 'confirmed' THEN NULL WHEN 'registered' THEN 'paid' ELSE funding END "
        "WHERE coverage_year = $1 AND status <> 'cancelled'",
        year,
    )
    return f"all of {year}"


async def leave(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        "UPDATE memberships SET left_at = now(), left_reason = 'moved' "
        "WHERE id = (SELECT id FROM memberships WHERE left_at IS NULL ORDER BY random() LIMIT 1)"
    )
    return "leave"


async def rejoin(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        "UPDATE memberships SET left_at = NULL, left_reason = NULL "
        "WHERE id = (SELECT id FROM memberships WHERE left_at IS NOT NULL ORDER BY random() LIMIT 1)"
    )
    return "rejoin"


async def rehouse(conn: Conn, pick: random.Random) -> str:
    current = pick.random() < 0.7
    await conn.execute(
        "UPDATE memberships SET household_id = (SELECT id FROM households ORDER BY random() LIMIT 1) "
        "WHERE id = (SELECT id FROM memberships WHERE (left_at IS NULL) = $1 ORDER BY random() LIMIT 1)",
        current,
    )
    return f"rehouse a {'current' if current else 'past'} membership"


async def join(conn: Conn, pick: random.Random) -> str:
    gone = pick.random() < 0.3
    await conn.execute(
        "INSERT INTO memberships (id, person_id, household_id, relation, left_at, left_reason) "
        "SELECT gen_random_uuid(), (SELECT id FROM persons p WHERE $1 OR NOT EXISTS ("
        "           SELECT 1 FROM memberships m WHERE m.person_id = p.id AND m.left_at IS NULL) "
        "           ORDER BY random() LIMIT 1), "
        "       (SELECT id FROM households ORDER BY random() LIMIT 1), 'other', "
        "       CASE WHEN $1 THEN now() END, CASE WHEN $1 THEN 'removed' END",
        gone,
    )
    return f"join{' (already left)' if gone else ''}"


async def drop_membership(conn: Conn, pick: random.Random) -> str:
    await conn.execute("DELETE FROM memberships WHERE id = (SELECT id FROM memberships ORDER BY random() LIMIT 1)")
    return "delete a membership"


async def household_status(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        "UPDATE households SET status = CASE status WHEN 'active' THEN 'dissolved' ELSE 'active' END "
        "WHERE id = (SELECT id FROM households ORDER BY random() LIMIT 1)"
    )
    return "dissolve or restore a household"


async def household_village(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        "UPDATE households SET village_code = (SELECT code FROM divisions WHERE level = 'village' "
        "                                      AND code BETWEEN $1 AND $2 ORDER BY random() LIMIT 1) "
        "WHERE id = (SELECT id FROM households ORDER BY random() LIMIT 1)",
        *DISTRICT,
    )
    return "move a household to a village"


async def renumber(conn: Conn, pick: random.Random) -> str:
    """A person in a household takes a number nobody has: one with history, mostly."""
    await conn.execute(
        "UPDATE persons SET id_number_hash = n.h, id_number_enc = n.h "
        "FROM (SELECT coalesce((SELECT eh.id_number_hash FROM enrollment_history eh "
        "                       WHERE $1 AND eh.status <> 'cancelled' AND NOT EXISTS ("
        "                           SELECT 1 FROM persons p WHERE p.id_number_hash = eh.id_number_hash) "
        "                       ORDER BY random() LIMIT 1), $2) AS h) AS n "
        # mostly one whom a history year could cover: not enrolled for one of the years
        "WHERE id = (SELECT m.person_id FROM memberships m WHERE m.left_at IS NULL "
        "            ORDER BY (SELECT count(*) FROM enrollments e WHERE e.person_id = m.person_id "
        "                      AND e.status <> 'cancelled') = 2, random() LIMIT 1)",
        pick.random() < 0.8,
        number(pick.randrange(PERSONS, PERSONS + 10)),
    )
    return "correct an ID number"


async def history_insert(conn: Conn, pick: random.Random) -> str:
    count = pick.choice((1, 3))
    if pick.random() < 0.6:  # years it covers: of persons in a household, not enrolled for the year
        await conn.execute(
            "INSERT INTO enrollment_history (id_number_hash, id_number_enc, coverage_year, status, source_file) "
            "SELECT p.id_number_hash, p.id_number_hash, y, $2, 'old.csv' "
            "FROM persons p JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL, unnest($3::int[]) AS y "
            "WHERE p.id_number_hash IS NOT NULL "
            "  AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.person_id = p.id AND e.coverage_year = y "
            "                  AND e.status <> 'cancelled') "
            "  AND NOT EXISTS (SELECT 1 FROM enrollment_history eh WHERE eh.id_number_hash = p.id_number_hash "
            "                  AND eh.coverage_year = y) "
            "ORDER BY random() LIMIT $1",
            count,
            pick.choice(("paid", "subsidised", "confirmed")),
            list(YEARS),
        )
        return f"history {count} that covers"
    await conn.execute(
        "INSERT INTO enrollment_history (id_number_hash, id_number_enc, coverage_year, status, source_file) "
        "SELECT h, h, $2, $3, 'old.csv' FROM unnest($1::bytea[]) AS h",
        list({number(pick.randrange(PERSONS + 10)) for _ in range(count)}),
        pick.choice(YEARS),
        pick.choice(("paid", "subsidised", "confirmed", "cancelled")),
    )
    return f"history {count}"


# A history row, mostly one that counts (of a person in a household, for a year they are not
# enrolled for, not cancelled): the row's key.
A_HISTORY_ROW = (
    "SELECT eh.id_number_hash, eh.coverage_year FROM enrollment_history eh "
    "LEFT JOIN persons p ON p.id_number_hash = eh.id_number_hash "
    "ORDER BY $1 AND eh.status <> 'cancelled' "
    "    AND EXISTS (SELECT 1 FROM memberships m WHERE m.person_id = p.id AND m.left_at IS NULL) "
    "    AND NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.person_id = p.id "
    "                    AND e.coverage_year = eh.coverage_year AND e.status <> 'cancelled') DESC, random() "
    "LIMIT 1"
)


async def history_restatus(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        f"UPDATE enrollment_history SET status = $2 WHERE (id_number_hash, coverage_year) = ({A_HISTORY_ROW})",
        pick.random() < 0.7,
        pick.choice(("paid", "cancelled")),
    )
    return "history status"


async def history_renumber(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        f"UPDATE enrollment_history SET id_number_hash = $2 WHERE (id_number_hash, coverage_year) = ({A_HISTORY_ROW})",
        pick.random() < 0.7,
        number(pick.randrange(PERSONS + 10)),
    )
    return "history to another number"


async def history_delete(conn: Conn, pick: random.Random) -> str:
    await conn.execute(
        f"DELETE FROM enrollment_history WHERE (id_number_hash, coverage_year) = ({A_HISTORY_ROW})",
        pick.random() < 0.7,
    )
    return "history deleted"


STEPS: list[Step] = [
    enrol, enrol, restatus, restatus, restatus, paid_subsidised, other_year, other_person, unenrol, touch,
    a_year_at_once, leave, leave, rejoin, rehouse, rehouse, join, drop_membership, household_status,
    household_village, renumber, renumber, history_insert, history_restatus, history_renumber, history_delete,
]  # fmt: skip


async def run(conn: Conn, seed: int, steps: int, *, stop_at_first: bool = False) -> list[str]:
    """The sequence; what differed after which step ([] when the summary kept to the facts)."""
    pick = random.Random(seed)  # noqa: S311 - a repeatable sequence, not a secret
    await conn.execute("SELECT setseed($1)", 1 / (seed + 2))  # ORDER BY random() repeats too
    wrong: list[str] = []
    for i in range(steps):
        step = pick.choice(STEPS)
        try:
            async with conn.transaction():
                what = await step(conn, pick)
        except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError):
            continue  # refused as a whole: nothing changed
        for year, (summary, facts) in (await figures(conn)).items():
            if summary != facts:
                wrong.append(f"step {i} ({what}), {year}: summary {summary} facts {facts}")
        if wrong and stop_at_first:
            break
    return wrong


async def test_random_writes_keep_the_summary_to_the_facts(conn: Conn, seeded: None) -> None:
    async with conn.transaction():
        await build(conn, random.Random(30))  # noqa: S311
    assert [summary == facts for summary, facts in (await figures(conn)).values()] == [True, True]
    assert any((await figures(conn))[2026][1]), "the world counts somebody"
    for seed in (1, 2):
        assert await run(conn, seed, 150) == []
    # The summary was exercised, and folding or rebuilding it changes no figure.
    assert await conn.fetchval("SELECT count(*) FROM coverage_tallies") > 100
    before = await figures(conn)
    await conn.execute("SELECT coverage_compact()")
    await conn.execute("SELECT coverage_rebuild()")
    assert await figures(conn) == before


async def test_the_sequence_notices_any_trigger_missing(conn: Conn, seeded: None) -> None:
    async with conn.transaction():
        await build(conn, random.Random(30))  # noqa: S311
    triggers = await conn.fetch(
        "SELECT t.tgname, t.tgrelid::regclass::text AS table_name FROM pg_trigger t "
        "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname IN ('coverage_facts_changed', 'coverage_flush') ORDER BY 1"
    )
    assert len(triggers) == 12, triggers  # 11 on the facts, and the refresh at the commit (migration 0032)
    unnoticed = []
    for t in [None, *triggers]:
        tr = conn.transaction()
        await tr.start()
        try:
            # Each step's writes are refreshed at the end of its statements, not at the commit of
            # this transaction, which is rolled back to bring the trigger back.
            await conn.execute("SET CONSTRAINTS coverage_dirty_at_commit IMMEDIATE")
            if t is None:  # the control: with every trigger, the sequence finds nothing wrong
                assert await run(conn, 1, 150) == []
                continue
            await conn.execute(f'DROP TRIGGER "{t["tgname"]}" ON "{t["table_name"]}"')
            # The rows a step picks follow the tables' physical order, which autovacuum may change:
            # another sequence when one happened to miss.
            for seed in (1, 2, 3):
                if await run(conn, seed, 150, stop_at_first=True):
                    break
            else:
                unnoticed.append(t["tgname"])
        finally:
            await tr.rollback()
    assert unnoticed == [], unnoticed


async def test_a_set_refresh_at_the_commit_takes_its_rows_in_one_order(
    conn: Conn,
    seeded: None,
    admin_db_dsn: str,
) -> None:
    """A commit refreshing more than 64 persons, one of whom has no summary row yet, while another
    transaction holds a lower person's row and then refreshes the one without: the commit takes the
    rows in id order (inserting the missing one in its turn), so it waits for the lower row before it
    takes the missing one's key, and both transactions end. The set refresh alone would insert the
    missing key first, then wait for the lower row: a deadlock (migration 0032)."""
    async with conn.transaction():
        await build(conn, random.Random(30))  # noqa: S311
    ids = sorted(await conn.fetchval("SELECT array_agg(person_id) FROM coverage_persons"))
    assert len(ids) > 64
    low, missing = ids[0], ids[1]
    # As after a load that bypassed the triggers: not counted, and no row.
    await conn.execute(
        "WITH gone AS (DELETE FROM coverage_persons WHERE person_id = $1 RETURNING village_code, years, classes) "
        "INSERT INTO coverage_tallies SELECT d.* FROM gone, "
        "coverage_deltas(gone.village_code, gone.years, gone.classes, NULL, '{}', '{}') AS d",
        missing,
    )
    holder, committer = await asyncpg.connect(admin_db_dsn), await asyncpg.connect(admin_db_dsn)
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT coverage_refresh_now($1::uuid[])", [low])  # holds the lower row
        await committer.execute("BEGIN")
        await committer.execute("SELECT coverage_refresh_some($1::uuid[])", ids)  # noted: refreshed at the commit
        commit = asyncio.ensure_future(committer.execute("COMMIT"))
        await asyncio.sleep(0.3)  # the commit is waiting for the lower row meanwhile
        assert not commit.done()
        await holder.execute("SELECT coverage_refresh_now($1::uuid[])", [missing])
        await holding.commit()
        await asyncio.wait_for(commit, 10)
    finally:
        await holder.close()
        await committer.close()
    for summary, facts in (await figures(conn)).values():
        assert summary == facts
