"""`canbao simulate`, small, through the CLI entry point: tablets work offline for some days, sync
through a faulty network, and every invariant holds; a server that breaks exactly-once fails it."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import asyncpg
import msgspec
import pytest

from backend import cli
from backend.db import load_queries
from backend.tools.simulate import checker, invariants
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import QueueEntry
from tests.conftest import JWT_SECRET, KEY_FILE, PgServer

SMALL = ["simulate", "--tablets", "3", "--households", "12", "--offline-days", "2", "--faults", "--seed", "5"]


@pytest.fixture
def simulation_db(pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = pg_server.create_database()
    monkeypatch.setenv("DATABASE_URL", pg_server.dsn(name))
    monkeypatch.setenv("CANBAO_KEY_FILE", KEY_FILE)  # the template's numbers are sealed under the test keys
    monkeypatch.setenv("CANBAO_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("CANBAO_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("CANBAO_ARGON2_MEMORY_KIB", "64")
    try:
        yield name
    finally:
        pg_server.drop_database(name)


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, (pattern, text)
    return int(found.group(1))


def test_simulated_tablets_work_offline_sync_through_faults_and_every_invariant_holds(
    simulation_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(SMALL)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 tablets, 12 households, 2 offline day(s), faults on, seed 5" in out
    assert _number(r"invariants:\s+(\d+) checked", out) >= 10
    assert _number(r"checked, (\d+) failed", out) == 0
    assert _number(r"mutations:\s+(\d+) made offline", out) >= 12
    made = _number(r"payments in: (\d+) ", out)
    recorded = _number(r"payments out: (\d+) \(", out)
    held = _number(r"recorded, (\d+) \(", out)
    on_revoked = _number(r"in quarantine, (\d+) \(", out)
    assert made == recorded + held + on_revoked  # every payment is somewhere, once
    assert re.search(r"faults:\s+\w+ \d+", out), out  # some fault fired


def test_a_fault_free_month_offline_refuses_nothing_the_scenario_did_not_mean(
    simulation_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One tablet, no faults, 30 days offline: moves, removals and dissolutions among the enrolling
    and collecting. Nothing is rejected or quarantined but what the office's competing edits cause,
    and every live enrolment is in its person's household (it followed them on a move)."""
    code = cli.main(["simulate", "--tablets", "1", "--households", "150", "--offline-days", "30", "--seed", "22"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _number(r"refused:\s+\d+ meant by the scenario .*; (\d+) not meant", out) == 0, out
    assert re.search(r"enrolments_follow_persons\s+ok", out), out
    assert _number(r"mutations:\s+(\d+) made offline", out) >= 500


def test_simulate_exits_non_zero_when_an_invariant_fails(
    simulation_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cli._settings
    # The server re-applies mutations it already holds (a test-only switch, not in the environment).
    monkeypatch.setattr(cli, "_settings", lambda args: msgspec.structs.replace(real(args), test_break_push_dedup=True))
    code = cli.main([*SMALL[:-1], "6"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(r"replay_changes_nothing\s+FAILED", out), out


def test_simulate_refuses_a_database_with_real_households(
    simulation_db: str, capsys: pytest.CaptureFixture[str], pg_server: PgServer
) -> None:
    async def a_real_household() -> None:
        conn = await asyncpg.connect(pg_server.dsn(simulation_db))
        try:
            await conn.execute(
                "INSERT INTO divisions (code, parent_code, level, name) VALUES "
                "('110000000000', NULL, 'province', '北京市'), ('110100000000', '110000000000', 'city', '市辖区'), "
                "('110105000000', '110100000000', 'district', '朝阳区'), "
                "('110105001000', '110105000000', 'township', '建外街道'), "
                "('110105001001', '110105001000', 'village', '永安里社区')"
            )
            await conn.execute(
                "INSERT INTO households (id, village_code, household_no, address) "
                "VALUES (gen_random_uuid(), '110105001001', '0001', '')"
            )
        finally:
            await conn.close()

    asyncio.run(a_real_household())
    assert cli.main(SMALL) == 2
    assert "outside the demo villages" in capsys.readouterr().err


async def test_the_simulators_queries_prepare(conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    world = load_queries("backend.tools.simulate")
    invariants = load_queries("backend.tools.simulate", "invariants.sql")
    assert {f"scope_{entity}" for entity in checker.SCOPE_ENTITIES} <= set(invariants)
    for name, sql in [*world.items(), *invariants.items()]:
        if name == "table_digest":
            for table in checker.FINGERPRINTED:
                await conn.prepare(sql.format(table=table))
        else:
            await conn.prepare(sql)


class _Store:
    """The part of a tablet's store the refusal check reads: its queue and synced records."""

    def __init__(self, entries: list[QueueEntry], records: dict[str, list[dict[str, str]]]) -> None:
        self._entries, self._records = entries, records

    def entries(self) -> list[QueueEntry]:
        return self._entries

    def records(self, entity: str) -> dict[uuid.UUID, dict[str, str]]:
        return {uuid.uuid4(): row for row in self._records.get(entity, [])}


def test_a_cancellation_refused_after_another_tablet_dissolved_the_household_was_meant() -> None:
    """Seed 3844753692 of bench/sync_offline_month.py: while tablet A was offline, tablet B dissolved
    a household, which cancelled its members' enrolments; A's cancellation of one of them (it names
    only the person) was answered not_found. That follows from B's work on the household."""
    person, household = uuid.uuid4(), uuid.uuid4()
    now = datetime(2026, 11, 13, tzinfo=UTC)
    cancel = m.EnrollmentCancel(
        seq=1, mutation_id=uuid.uuid4(), device_time=now, person_id=person, coverage_year=2026, reason="deceased"
    )
    refused = m.Answer(seq=1, mutation_id=cancel.mutation_id, status="rejected", code="not_found")
    dissolve = m.HouseholdDissolve(
        seq=1, mutation_id=uuid.uuid4(), device_time=now, household_id=household, base_version=1, reason="removed"
    )
    done = m.Answer(seq=1, mutation_id=dissolve.mutation_id, status="applied")
    membership = {"person_id": str(person), "household_id": str(household)}
    queued = [QueueEntry(seq=1, mutation=cancel, state="rejected", answer=refused)]
    a = SimpleNamespace(device_id=uuid.uuid4(), store=_Store(queued, {"membership": [membership]}))
    b = SimpleNamespace(
        device_id=uuid.uuid4(), store=_Store([QueueEntry(seq=1, mutation=dissolve, state="applied", answer=done)], {})
    )
    world = SimpleNamespace(on_purpose={}, all_tablets=[a, b])
    assert checker.refusals(world) == checker.Refusals(meant={"other_tablet": 1}, unmeant={})  # type: ignore[arg-type]
    # Without the person's household in A's records, nothing links the two: not meant.
    a.store = _Store(queued, {})
    assert checker.refusals(world).unmeant == {"enrollment.cancel rejected not_found": 1}  # type: ignore[arg-type]
    # Nor is B's other work on the household an excuse: only a dissolution cancels the enrolments.
    a.store = _Store(queued, {"membership": [membership]})
    edit = m.HouseholdUpdate(seq=1, mutation_id=uuid.uuid4(), device_time=now, household_id=household, base_version=1)
    b.store = _Store([QueueEntry(seq=1, mutation=edit, state="applied", answer=done)], {})
    assert checker.refusals(world).unmeant == {"enrollment.cancel rejected not_found": 1}  # type: ignore[arg-type]


def test_an_edit_that_changed_nothing_wins_nothing_another_tablet_wrote_at_its_version() -> None:
    """The fault suite's thorough profile (seed 20261207): T1 changed a household's head at version
    3, then made a member head at version 4; T2's make-head of the same member, from base 2, found them
    head already, changed nothing, and was answered with the household's version: 4. That version's
    change is T1's. Taken for T2's, it read as T2's stale edit winning over version 3."""
    household, member, former = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    t1, t2 = uuid.uuid4(), uuid.uuid4()
    heads = [
        {"version": 3, "new_value": str(former), "device_id": t1},
        {"version": 4, "new_value": str(member), "device_id": t1},
    ]
    changes: dict[tuple[uuid.UUID, uuid.UUID | None, str], list[dict[str, object]]] = {(household, None, "head"): heads}
    assert invariants._applied_here(changes, household, member, "relation", "head", 4, t1)
    assert not invariants._applied_here(changes, household, member, "relation", "head", 4, t2)
    relations = {(household, member, "relation"): [{"version": 4, "new_value": "spouse", "device_id": t1}]}
    assert invariants._applied_here(relations, household, member, "relation", "spouse", 4, t1)
    assert not invariants._applied_here(relations, household, member, "relation", "spouse", 4, t2)
