"""The randomized fault suite (docs/fault-suite.md): tablets running the reference client and the back
office work against the real app and PostgreSQL through a network that drops, duplicates, reorders,
races and cuts requests, while tablets are suspended, revoked, reinstalled and their users moved;
after a final quiet sync every invariant of `backend.tools.simulate` must hold.

The CI profile runs 200 examples of 30 steps; `CANBAO_FAULTS_PROFILE=fault-thorough pytest
tests/sync/test_faults.py -k survive` runs 2,000 of 50. Below the suite: the server bugs it found, each
as a small test of its own.
"""

# ruff: noqa: S311 (simulation dice, not secrets)
from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from backend.actor import Actor, Role, Scope
from backend.admin import service as admin
from backend.app import create_app
from backend.auth.passwords import Passwords
from backend.config import Settings
from backend.db import init_connection
from backend.policy import service as policies
from backend.tools import demo
from backend.tools.simulate import (
    WORK_ACTIONS,
    Checker,
    InvariantResult,
    TabletSpec,
    World,
    check_invariants,
    pending_from_env,
    report,
)
from backend.tools.simulate.invariants import check_copies_after_scope_change, check_payments, check_suspended_reports
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.faults import FAULTS
from tests.conftest import PASSWORD, PgServer, make_settings
from tests.factories import POLICY_2026

T = TypeVar("T")

TOWNSHIP_A, TOWNSHIP_B = demo.TOWNSHIP_A, demo.TOWNSHIP_B
REVIEWERS = {TOWNSHIP_A: "reviewer_a", TOWNSHIP_B: "reviewer_b"}
# Two tablets of one staff member, one of a colleague in the same township, one in the other.
TABLETS = (TabletSpec("staff_a"), TabletSpec("staff_a", fmt="json"), TabletSpec("staff_a2"), TabletSpec("staff_b"))
# Everything a push or pull writes; users, divisions and the policy stay (moved users are put back).
KEPT_TABLES = {"divisions", "users", "policy_versions", "sync_horizon", "alembic_version", "crypto_keys"}
# Registering, enrolling and collecting come up more often than the rest, as in the field.
WORK = (
    "register",
    "register",
    "enrol",
    "enrol",
    "enrol",
    "pay",
    "pay",
    "pay",
    "pay",
    "edit_household",
    "edit_member_phone",
    *WORK_ACTIONS,
)
# What must have happened at least once in a run (a settlement by a reviewer needs something to
# settle, and is not required).
EVENTS = (
    "suspend",
    "reactivate",
    "revoke",
    "reinstall",
    "reexport",
    "scope_change",
    "office_edit",
    "duplicate_household",
    "concurrent_sync",
)

settings.register_profile(
    "fault-ci",
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.register_profile(
    "fault-thorough",
    max_examples=2000,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.register_profile(  # a quick look while working on the suite: no shrinking
    "fault-debug",
    max_examples=10,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
    database=None,
)
PROFILE = os.environ.get("CANBAO_FAULTS_PROFILE", "fault-ci")


# The world under test: one app and database per test, the database emptied per example -----------


async def _build_template(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        passwords = Passwords(1, 64)
        await demo.seed(conn, passwords)
        await admin.create_user(
            conn,
            None,
            passwords,
            admin.UserCreate(
                username="staff_a2",
                password=PASSWORD,
                role=Role.TOWNSHIP_STAFF,
                division_code=TOWNSHIP_A,
            ),
        )
        admin_id = await conn.fetchval("SELECT id FROM users WHERE username = 'admin'")
        actor = Actor(kind="user", id=admin_id, role=Role.DISTRICT_ADMIN, scope=Scope(demo.DISTRICT, "district"))
        await policies.create_version(conn, actor, 2026, msgspec.convert(POLICY_2026, policies.PolicyIn))
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def fault_template(pg_server: PgServer) -> Iterator[str]:
    """A migrated database with the demo district, a second staff member in township A and the 2026 policy."""
    name = pg_server.create_database()
    asyncio.run(_build_template(pg_server.dsn(name)))
    try:
        yield name
    finally:
        pg_server.drop_database(name)


class Harness:
    """One event loop, app (with its pool) and database for a whole hypothesis run; `new_world`
    empties the data tables (a TRUNCATE: ~30 ms, against ~250 ms for a template clone and a new pool)."""

    def __init__(self, dsn: str, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        if "maintenance_interval_s" in Settings.__struct_fields__:
            overrides.setdefault("maintenance_interval_s", 0)
        self.app = create_app(make_settings(dsn, pool_max_size=12, **overrides), configure_logs=False)
        self.inner = httpx.ASGITransport(app=self.app)
        self.faults: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.examples = 0
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._lifespan = self.loop.create_task(self._hold_lifespan())
        self.run(self._started.wait())
        self.db: asyncpg.Connection = self.run(self._connect(dsn))  # type: ignore[type-arg]
        self.users = self.run(self.db.fetch("SELECT id, division_code FROM users"))
        tables = self.run(self.db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        self.tables = sorted(r["tablename"] for r in tables if r["tablename"] not in KEPT_TABLES)

    async def _hold_lifespan(self) -> None:
        async with self.app.lifespan():
            self._started.set()
            await self._stop.wait()

    @staticmethod
    async def _connect(dsn: str) -> asyncpg.Connection:  # type: ignore[type-arg]
        conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        await init_connection(conn)
        return conn

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _reset(self) -> None:
        # The append-only tables refuse TRUNCATE by trigger; a throwaway test database may bypass it.
        async with self.db.transaction():
            await self.db.execute("SET LOCAL session_replication_role = replica")
            await self.db.execute(f"TRUNCATE {', '.join(self.tables)} RESTART IDENTITY")
        await self.db.executemany(
            "UPDATE users SET division_code = $2 WHERE id = $1", [(r["id"], r["division_code"]) for r in self.users]
        )

    def new_world(self, seed: int) -> World:
        self.run(self._reset())
        self.examples += 1
        world = World(
            inner=self.inner,
            base_url="http://canbao.test",
            db=self.db,
            rng=random.Random(seed),
            password=PASSWORD,
            pull_limit=40,
            faults=self.faults,
            stats=self.stats,
        )
        self.run(world.prepare(TABLETS, REVIEWERS))
        return world

    def record(self, results: list[InvariantResult], world: World) -> None:
        self.events.update(world.events)
        for r in results:
            self.results[f"{r.name}/{'skipped' if not r.checked else 'failed' if r.problems else 'ok'}"] += 1
            self.items[r.name] += r.items
            self.items.update(r.details)

    def close(self) -> None:
        self._stop.set()
        self.run(self._lifespan)
        self.run(self.db.close())
        self.loop.close()


def harness_for(pg_server: PgServer, template: str, **overrides: Any) -> tuple[Harness, str]:
    name = pg_server.create_database(template)
    return Harness(pg_server.dsn(name), **overrides), name


class SyncFaults(RuleBasedStateMachine):
    """Tablets work offline, sync through a faulty network; the office edits, reviews, suspends,
    revokes, reinstalls and moves people. Checked once at the end, after a quiet sync."""

    def __init__(self, harness: Harness, skip: frozenset[str]) -> None:
        super().__init__()
        self.h, self.skip = harness, skip
        self.world: World | None = None
        self.whole = True  # False when a step failed: the end checks are not run over a broken state
        self.moves = self.revokes = self.reinstalls = 0

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        self.whole = False
        result = self.h.run(coro)
        self.whole = True
        return result

    slots = st.integers(min_value=0, max_value=len(TABLETS) - 1)
    randoms = st.randoms(use_true_random=True)  # drawn once: server timing may change how many a step uses
    faults = st.lists(st.sampled_from(FAULTS), max_size=3)

    @initialize(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def start(self, seed: int) -> None:
        self.whole = False
        self.world = self.h.new_world(seed)  # the world's own dice (ID numbers, cut points) come from hypothesis
        self.whole = True

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    # The field's rhythm: a tablet works offline, then (usually) finds signal and syncs through the
    # faults drawn for it. Hypothesis turns rules on and off per example (swarm testing), so work and
    # sync share a rule, registered twice: no example goes without them.

    def _field_work(
        self,
        slot: int,
        actions: list[Any],
        sync: bool,
        push_faults: list[Any],
        pull_faults: list[Any],
        rng: random.Random,
    ) -> None:
        tablet = self.w.tablets[slot]
        for action in actions:
            tablet.work(action, rng)
        if sync:
            self._sync([slot], push_faults, pull_faults)

    field = rule(
        slot=slots,
        actions=st.lists(st.sampled_from(WORK), min_size=1, max_size=6),
        sync=st.booleans(),
        push_faults=faults,
        pull_faults=faults,
        rng=randoms,
    )
    work_and_sync, work_and_sync_again = field(_field_work), field(_field_work)

    def _sync(self, slots: list[int], push_faults: list[Any], pull_faults: list[Any]) -> None:
        tablets = [self.w.tablets[s] for s in slots]
        for tablet in tablets:
            tablet.transport.arm(*push_faults, kind="push")
            tablet.transport.arm(*pull_faults, kind="pull")
        self._run(self.w.sync_together(tablets))
        for tablet in tablets:
            tablet.transport.disarm()

    @rule(slots=st.lists(slots, min_size=2, max_size=4, unique=True), push_faults=faults, pull_faults=faults)
    def sync_at_once(self, slots: list[int], push_faults: list[Any], pull_faults: list[Any]) -> None:
        """Several tablets sync at the same moment (their transactions interleave on the server)."""
        self._sync(slots, push_faults, pull_faults)

    @rule(first=slots, second=slots, rng=randoms)
    def register_same_family_twice(self, first: int, second: int, rng: random.Random) -> None:
        self._run(self.w.register_twice(self.w.tablets[first], self.w.tablets[second], rng))

    @rule(township=st.sampled_from((TOWNSHIP_A, TOWNSHIP_B)), review=st.booleans(), rng=randoms)
    def office(self, township: str, review: bool, rng: random.Random) -> None:
        """A REST edit by the township's reviewer, or a settlement of quarantine or a conflict."""
        self._run(self.w.review(township, rng) if review else self.w.office_edit(township, rng))

    @rule(
        slot=slots,
        event=st.sampled_from(("reactivate", "suspend", "reinstall_reexport", "reinstall", "move", "revoke")),
    )
    def device_event(self, slot: int, event: str) -> None:
        tablet = self.w.tablets[slot]
        if event == "suspend":
            self._run(self.w.suspend(tablet))
        elif event == "reactivate":
            self._run(self.w.reactivate(tablet))
        elif event == "revoke" and self.revokes < 1:
            self.revokes += self._run(self.w.revoke(tablet))
        elif event.startswith("reinstall") and self.reinstalls < 2:
            self.reinstalls += self._run(self.w.reinstall(slot, reexport=event.endswith("reexport")))
        elif event == "move" and self.moves < 1:
            other = TOWNSHIP_B if self.w.townships[tablet.username] == TOWNSHIP_A else TOWNSHIP_A
            self.moves += self._run(self.w.move_user(tablet.username, other))

    def teardown(self) -> None:
        if self.world is None:
            return
        try:
            if self.whole:
                results = self.h.run(self._finish())
                self.h.record(results, self.world)
                failed = [r for r in results if r.failed]
                assert not failed, "invariants failed after the final sync:\n" + report(results)
        finally:
            self.h.run(self.w.close())

    async def _finish(self) -> list[InvariantResult]:
        await self.w.quiesce()
        return await check_invariants(self.w, self.skip)


def run_suite(harness: Harness, profile: settings, skip: frozenset[str]) -> None:
    # Every example runs the profile's full number of steps (hypothesis' `_min_steps`; without it
    # most examples stop early and barely reach a push).
    run_state_machine_as_test(
        lambda: SyncFaults(harness, skip), settings=profile, _min_steps=profile.stateful_step_count
    )


@pytest.fixture
def fault_harness(pg_server: PgServer, fault_template: str) -> Iterator[Harness]:
    harness, name = harness_for(pg_server, fault_template)
    try:
        yield harness
    finally:
        harness.close()
        pg_server.drop_database(name)


def test_tablets_survive_a_faulty_network_and_every_invariant_holds(fault_harness: Harness) -> None:
    run_suite(fault_harness, settings.get_profile(PROFILE), pending_from_env())
    h = fault_harness
    summary = (
        f"{h.examples} examples\nfaults {dict(sorted(h.faults.items()))}\nevents {dict(sorted(h.events.items()))}\n"
        f"checked {dict(sorted(h.items.items()))}\nresults {dict(sorted(h.results.items()))}"
    )
    print(summary)  # pytest -s shows what the run did
    assert not [f for f in FAULTS if h.faults[f"{f}/push"] == 0], summary
    assert not [e for e in EVENTS if h.events[e] == 0], summary


def test_the_suite_catches_a_server_that_applies_a_mutation_again(pg_server: PgServer, fault_template: str) -> None:
    harness, name = harness_for(pg_server, fault_template, test_break_push_dedup=True)
    broken = settings(
        settings.get_profile("fault-ci"),
        max_examples=20,
        stateful_step_count=15,
        phases=[Phase.generate],
        derandomize=True,
        database=None,
    )
    try:
        with pytest.raises((AssertionError, ExceptionGroup)) as caught:
            run_suite(harness, broken, pending_from_env())
    finally:
        harness.close()
        pg_server.drop_database(name)
    message = str(caught.value) + "".join(str(e) for e in getattr(caught.value, "exceptions", []))
    assert "replay_changes_nothing" in message or "sequences_without_gaps" in message, message


# Server bugs the suite found, each on its own (docs/fault-suite.md, "What it found") ------------------


@pytest.fixture
def fault_db(pg_server: PgServer, fault_template: str) -> Iterator[str]:
    name = pg_server.create_database(fault_template)
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@asynccontextmanager
async def live_world(dsn: str, seed: int = 1) -> AsyncIterator[World]:
    """The suite's world in the test's own event loop: the app with its lifespan, four tablets."""
    app = create_app(make_settings(dsn, pool_max_size=12), configure_logs=False)
    async with app.lifespan():
        db = await Harness._connect(dsn)
        world = World(
            inner=httpx.ASGITransport(app=app),
            base_url="http://canbao.test",
            db=db,
            rng=random.Random(seed),
            password=PASSWORD,
        )
        try:
            await world.prepare(TABLETS, REVIEWERS)
            yield world
        finally:
            await world.close()
            await db.close()


async def test_a_tablet_whose_user_moved_to_another_township_holds_that_township_after_a_sync(fault_db: str) -> None:
    async with live_world(fault_db) as world:
        moving, in_b = world.tablets[2], world.tablets[3]  # staff_a2 (township A), staff_b
        rng = random.Random(7)
        moving.register(rng)
        in_b.register(rng)
        assert await moving.sync() and await in_b.sync()
        assert await world.move_user("staff_a2", TOWNSHIP_B)
        assert await moving.sync()
        # Township A's household must be gone from the tablet, township B's there.
        assert await check_copies_after_scope_change(Checker(world)) == []


async def test_two_pulls_of_one_tablet_at_once_are_both_answered(fault_db: str) -> None:
    # Found by the suite: pull ran REPEATABLE READ and then updated sync_devices, so a second pull (or
    # a push) of the same tablet meanwhile made it a 500 (SerializationError). Fixed in f03cd0c.
    async with live_world(fault_db) as world:
        tablet = world.tablets[0]
        assert await tablet.sync()
        request = m.PullRequest(protocol_version=1, device_id=tablet.device_id, cursor=tablet.store.get("cursor"))
        headers = {"Authorization": f"Bearer {tablet.client.token}", "Content-Type": m.JSON}
        statuses = []
        for _ in range(5):  # a tablet retrying a pull whose answer is slow to come
            answers = await asyncio.gather(
                *(
                    world.plain.post("/api/v1/sync/pull", content=codec.encode(request, "json"), headers=headers)
                    for _ in range(3)
                )
            )
            statuses += [a.status_code for a in answers]
        assert set(statuses) == {200}, (statuses, world.error_log.errors)


async def test_two_tablets_editing_the_same_households_in_another_order_are_both_answered(fault_db: str) -> None:
    async with live_world(fault_db) as world:
        first, second = world.tablets[0], world.tablets[2]
        rng = random.Random(3)
        households = [first.register(rng) for _ in range(6)]
        assert await first.sync() and await second.sync()
        failures = []
        for round_ in range(6):
            for tablet, order in ((first, households), (second, households[::-1])):
                for created in order:
                    assert created is not None
                    house = tablet.view.houses[created.household_id]
                    tablet.enqueue(
                        m.HouseholdUpdate(
                            seq=1,
                            mutation_id=world.people.uuid(),
                            household_id=house.id,
                            base_version=house.seen_version,
                            phone=world.people.phone(),
                        )
                    )
            await asyncio.gather(first.sync(pull=False), second.sync(pull=False))
            failures += [
                f"round {round_}: {error} ({sqlstate}) at {where}" for error, sqlstate, where in world.error_log.errors
            ]
            world.error_log.errors.clear()
            assert await first.sync() and await second.sync()
        assert failures == []


async def test_a_payment_reported_again_by_a_suspended_tablet_is_a_duplicate_not_a_second_quarantine(
    fault_db: str,
) -> None:
    async with live_world(fault_db) as world:
        tablet = world.tablets[0]
        rng = random.Random(5)
        tablet.register(rng)
        tablet.work("enrol", rng)
        paid = tablet.work("pay", rng)
        assert isinstance(paid, m.PaymentRecord)
        tablet.transport.arm("drop_answer", kind="push")
        assert not await tablet.sync()  # recorded on the server; the answer never came back
        assert await world.reinstall(0, reexport=True)  # the new install pushes the old queue again…
        again = world.tablets[0]
        assert await world.suspend(again)  # …from a tablet suspended meanwhile
        await again.sync(pull=False)
        checker = Checker(world)
        assert await check_payments(checker) == []
        assert await check_suspended_reports(checker) == []
