"""`canbao simulate`: tablets work offline for some days against the server in this process (or one
at --url), sync through a faulty network, and every invariant is checked after a quiet final sync."""

# ruff: noqa: S311 (simulation dice, not secrets)
from __future__ import annotations

import random
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec

from backend.actor import Actor, Role, Scope
from backend.admin import service as admin
from backend.app import create_app
from backend.auth.passwords import Passwords
from backend.clock import local_today
from backend.config import Settings
from backend.db import init_connection, load_queries
from backend.policy import service as policies
from backend.tools import demo
from backend.tools.simulate.checker import InvariantResult, Refusals, final_answer, refusals, report
from backend.tools.simulate.invariants import PENDING, check_invariants
from backend.tools.simulate.tablet import YEAR, WorkAction
from backend.tools.simulate.world import SimulationError, TabletSpec, World
from mobile_sync_protocol import messages as m

Q = load_queries("backend.tools.simulate")

# How often a day's work does each thing; registrations are counted separately.
DAY_MIX: dict[WorkAction, int] = {
    "edit_household": 8,
    "edit_member_phone": 6,
    "edit_member_identity": 4,
    "make_head": 1,
    "add_member": 3,
    "move_member": 1,
    "remove_member": 2,
    "dissolve": 1,
    "enrol": 14,
    "pay": 14,
    "cancel_enrolment": 1,
    "void": 1,
}
DEMO_REVIEWERS = {demo.TOWNSHIP_A: "reviewer_a", demo.TOWNSHIP_B: "reviewer_b"}


class Options(msgspec.Struct, frozen=True, kw_only=True):
    tablets: int
    households: int  # registered by the tablets, over all days
    offline_days: int = 1
    faults: bool = False  # a faulty network, a suspension, a reinstall, duplicate registrations
    fault_rate: float = 0.25  # of requests, with --faults
    seed: int | None = None
    url: str | None = None  # a server already running; None: the app in this process
    check_pending: bool = False  # also run the checks that wait for fixes


class Progress:
    """A counter on standard error, redrawn in place when standard error is a terminal."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total, self.done_steps = max(total, 1), 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def step(self, what: str, n: int = 1) -> None:
        self.done_steps = min(self.total, self.done_steps + n)
        if self.enabled:
            width = 28
            filled = width * self.done_steps // self.total
            print(
                f"\r[{'#' * filled:<{width}}] {self.done_steps}/{self.total} {what:<40.40}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def finish(self) -> None:
        if self.enabled:
            print(f"\r{' ' * 80}\r", end="", file=sys.stderr, flush=True)


class Summary(msgspec.Struct, kw_only=True):
    options: Options
    seed: int
    seconds: float
    answers: dict[str, int]  # final answer status → count
    queued: int
    conflicts: dict[str, int]  # kind → raised during the run
    quarantined: dict[str, int]  # reason → count (this run's tablets)
    payments_made: tuple[int, int]  # count, fen: made on the tablets
    payments_recorded: tuple[int, int]
    payments_quarantined: tuple[int, int]
    payments_on_revoked: tuple[int, int]
    faults: dict[str, int]
    events: dict[str, int]
    refused: Refusals  # rejected or quarantined answers: meant by the scenario (by cause), or not
    results: list[InvariantResult]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    def text(self) -> str:
        o = self.options
        checked = [r for r in self.results if r.checked]
        failed = [r for r in checked if r.problems]
        waiting = sorted({r.depends for r in self.results if not r.checked and r.depends})

        def money(pair: tuple[int, int]) -> str:
            return f"{pair[0]} ({pair[1] / 100:,.2f} yuan)"

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"

        lines = [
            f"canbao simulate: {o.tablets} tablets, {o.households} households, {o.offline_days} offline day(s), "
            f"faults {'on' if o.faults else 'off'}, seed {self.seed} — {self.seconds:.1f} s",
            f"  mutations:   {self.queued} made offline; answers: {counts(self.answers)}",
            f"  conflicts:   {sum(self.conflicts.values())} raised ({counts(self.conflicts)})",
            f"  quarantine:  {sum(self.quarantined.values())} items for reviewers ({counts(self.quarantined)})",
            f"  refused:     {sum(self.refused.meant.values())} meant by the scenario ({counts(self.refused.meant)}); "
            f"{sum(self.refused.unmeant.values())} not meant ({counts(self.refused.unmeant)})",
            f"  payments in: {money(self.payments_made)} collected on the tablets",
            f"  payments out: {money(self.payments_recorded)} recorded, {money(self.payments_quarantined)} in "
            f"quarantine, {money(self.payments_on_revoked)} listed on revoked tablets' follow-up sheets",
            f"  faults:      {counts(self.faults)}",
            f"  events:      {counts(self.events)}",
            f"  invariants:  {len(checked)} checked, {len(failed)} failed"
            + (f"; waiting for fixes: {', '.join(waiting)}" if waiting else ""),
            report(self.results),
        ]
        return "\n".join(lines)


async def ensure_demo(db: asyncpg.Connection, passwords: Passwords, tablets: int, tag: str) -> list[TabletSpec]:
    """The demo district and its users (`canbao demo seed`), the year's policy, and one staff member
    per tablet (`sim_…`, the demo password), the tablets spread over the two townships."""
    await demo.seed(db, passwords)
    if not await policies.in_force(db, YEAR, date(YEAR - 1, 9, 1)):
        district_admin = await admin.get_user_by_username(db, "admin")
        assert district_admin is not None  # seeded above
        actor = Actor(
            kind="user", id=district_admin.id, role=Role.DISTRICT_ADMIN, scope=Scope(demo.DISTRICT, "district")
        )
        await policies.create_version(
            db,
            actor,
            YEAR,
            policies.PolicyIn(
                effective_from=date(YEAR - 1, 9, 1),
                premium_fen=demo.PREMIUM_FEN,
                window_start=date(YEAR - 1, 9, 1),
                window_end=date(YEAR - 1, 12, 31),
                note=f"{YEAR} policy (canbao simulate)",
            ),
        )
    specs = []
    townships = sorted(DEMO_REVIEWERS)
    for i in range(tablets):
        township = townships[i % len(townships)]
        username = f"sim_{tag.lower()}_{i}"
        if await admin.get_user_by_username(db, username) is None:
            await admin.create_user(
                db,
                None,
                passwords,
                admin.UserCreate(
                    username=username,
                    password=demo.DEMO_PASSWORD,
                    role=Role.TOWNSHIP_STAFF,
                    division_code=township,
                    full_name=f"模拟经办员 {i}",
                ),
            )
        specs.append(TabletSpec(username, fmt="json" if i % 3 == 2 else "msgpack"))
    return specs


async def refuse_real_data(db: asyncpg.Connection) -> None:
    """The simulation writes made-up people into the database: never next to real ones."""
    real = await db.fetchval(Q["households_outside_villages"], list(demo.VILLAGE_HOUSEHOLDS))
    if real:
        raise SimulationError(
            f"the database holds {real} households outside the demo villages: simulate only on a demo or test database"
        )


def _day_plan(options: Options, rng: random.Random) -> list[list[int]]:
    """Households each tablet registers on each day: M spread over D days and N tablets."""
    plan = [[0] * options.tablets for _ in range(options.offline_days)]
    for _ in range(options.households):
        plan[rng.randrange(options.offline_days)][rng.randrange(options.tablets)] += 1
    return plan


async def run(
    options: Options,
    dsn: str,
    *,
    app_settings: Settings | None = None,
    passwords: Passwords,
    progress: Progress | None = None,
) -> Summary:
    """Tablets work offline for `offline_days` days, syncing now and then where they find signal, then
    all sync at once; after a quiet sync every invariant is checked."""
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    tag = "S" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
    started = time.monotonic()
    db = await asyncpg.connect(dsn, server_settings={"application_name": "canbao-simulate", "timezone": "UTC"})
    await init_connection(db)
    app_stack: Any = None
    try:
        await refuse_real_data(db)
        specs = await ensure_demo(db, passwords, options.tablets, tag)
        if options.url is not None:
            inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            base_url = options.url.rstrip("/")
        else:
            app = create_app(app_settings, configure_logs=False)
            app_stack = app.lifespan()
            await app_stack.__aenter__()
            inner, base_url = httpx.ASGITransport(app=app), "http://canbao.simulate"  # type: ignore[arg-type]
        # The server's local time (business dates): the default's when it runs elsewhere.
        tz = ZoneInfo((app_settings or Settings()).timezone)
        # Local midnight of the first day: every simulated day ends before today does.
        first_day = datetime.combine(
            local_today(tz.key) - timedelta(days=options.offline_days), datetime.min.time(), tzinfo=tz
        ).astimezone(UTC)
        day = [0]

        def clock() -> datetime:
            # Office hours of the simulated day (payments and device times): 08:30 to 17:30 local.
            return first_day + timedelta(days=day[0], hours=rng.uniform(8.5, 17.5))

        world = World(
            inner=inner,
            base_url=base_url,
            db=db,
            rng=rng,
            password=demo.DEMO_PASSWORD,
            tag=tag,
            clock=clock,
            timezone=tz,
        )
        try:
            summary = await _simulate(world, options, specs, rng, day, progress or Progress(1, enabled=False))
        finally:
            await world.close()
    finally:
        if app_stack is not None:
            await app_stack.__aexit__(None, None, None)
        await db.close()
    summary.seed, summary.seconds = seed, time.monotonic() - started
    return summary


async def _simulate(
    world: World, options: Options, specs: list[TabletSpec], rng: random.Random, day: list[int], progress: Progress
) -> Summary:
    plan = _day_plan(options, rng)
    progress.total = options.tablets * (options.offline_days + 3) + 2
    await world.prepare(specs, DEMO_REVIEWERS)
    progress.step("tablets registered", options.tablets)
    if options.faults:
        for tablet in world.tablets:
            tablet.transport.rate = options.fault_rate
    # Morning of the first day, in the office: every tablet takes its first snapshot.
    await world.sync_together(list(world.tablets))
    progress.step("first snapshots", options.tablets)
    actions = list(DAY_MIX)
    weights = [DAY_MIX[a] for a in actions]
    for d in range(options.offline_days):
        day[0] = d
        for slot, tablet in enumerate(list(world.tablets)):
            for _ in range(plan[d][slot]):
                peers = [
                    t
                    for t in world.tablets
                    if t is not tablet and world.townships[t.username] == world.townships[tablet.username]
                ]
                if options.faults and peers and rng.random() < 0.05:
                    await world.register_twice(tablet, rng.choice(peers), rng)  # the same family, twice
                else:
                    tablet.register(rng)
            for action in rng.choices(actions, weights, k=3 + 3 * plan[d][slot]):
                tablet.work(action, rng)
            if rng.random() < 0.3:  # found signal
                await tablet.sync()
            progress.step(f"day {d + 1}: {tablet.name}")
        for township in DEMO_REVIEWERS:  # the office works too
            for _ in range(rng.randint(0, 2)):
                await world.office_edit(township, rng)
            if rng.random() < 0.5:
                await world.review(township, rng)
        if options.faults and options.tablets >= 2:
            await _device_events(world, options, d, rng)
    day[0] = options.offline_days
    # Back in signal: everyone syncs at once, and again where the network (or the server) cut it
    # short; then a quiet final sync.
    for _ in range(3):
        waiting = [t for t in world.tablets if t.status != "revoked" and (t.pending() or not t.pulled)]
        if not waiting:
            break
        await world.sync_together(waiting)
    progress.step("everyone syncs", options.tablets)
    await world.quiesce()
    progress.step("quiet sync")
    results = await check_invariants(world, () if options.check_pending else PENDING)
    progress.step("invariants")
    progress.finish()
    return await _summary(world, options, results)


async def _device_events(world: World, options: Options, d: int, rng: random.Random) -> None:
    """With --faults: one tablet is suspended for a day, one app is reinstalled mid-way (its unsynced
    queue exported and pushed again by the new install)."""
    if d == 0:
        await world.suspend(world.tablets[-1])
    elif world.tablets[-1].status == "suspended":
        await world.reactivate(world.tablets[-1])
    if d == options.offline_days // 2 and not world.retired:
        await world.reinstall(rng.randrange(len(world.tablets) - 1), reexport=True)


async def _summary(world: World, options: Options, results: list[InvariantResult]) -> Summary:
    answers: Counter[str] = Counter()
    queued = 0
    made: dict[UUID, int] = {}
    revoked_payments: dict[UUID, int] = {}
    for tablet in world.all_tablets:
        for entry in tablet.store.entries():
            queued += 1
            answer = final_answer(entry)
            answers[(answer.first or answer).status if answer is not None else "left on a revoked tablet"] += 1
            if isinstance(entry.mutation, m.PaymentRecord):
                made[entry.mutation.payment_id] = entry.mutation.amount_fen
                if answer is None and tablet.status == "revoked":
                    revoked_payments[entry.mutation.payment_id] = entry.mutation.amount_fen
    devices = [t.device_id for t in world.all_tablets]
    conflicts = {r["kind"]: r["n"] for r in await world.db.fetch(Q["conflicts_by_kind"], devices)}
    quarantined = {r["reason"]: r["n"] for r in await world.db.fetch(Q["quarantine_by_reason"], devices)}
    ids = list(made)
    recorded = await world.db.fetchrow(Q["payments_recorded"], ids)
    held_ids = {r["payment_id"] for r in await world.db.fetch(Q["payment_ids_held"], ids)}
    recorded_ids = {r["id"] for r in await world.db.fetch(Q["payment_ids_recorded"], ids)}
    outstanding = {p: f for p, f in revoked_payments.items() if p not in held_ids and p not in recorded_ids}
    assert recorded is not None
    return Summary(
        options=options,
        seed=0,
        seconds=0.0,
        answers=dict(answers),
        queued=queued,
        conflicts=conflicts,
        quarantined=quarantined,
        payments_made=(len(made), sum(made.values())),
        payments_recorded=(recorded["n"], recorded["fen"]),
        payments_quarantined=(len(held_ids), sum(made[p] for p in held_ids)),
        payments_on_revoked=(len(outstanding), sum(outstanding.values())),
        faults={k: v for k, v in world.faults.items() if "/" not in k},
        events=dict(world.events),
        refused=refusals(world),
        results=results,
    )
