"""A tablet back after 30 days offline (issue 20 item 4): it pushes a month of queued work in pages and pulls
until it is current, against a server that changed meanwhile; the month is the simulator's fault-free
scenario (backend/tools/simulate), so the figure is for a month of correct work (issue 22).

The scenario, not timed: the demo district, two tablets of the same township (the simulator's
`sim_…` staff) and the office (the township's reviewer). In the office on day 0 both tablets
register a few households and take their first snapshot. Then for 30 simulated days the first
tablet never syncs: each day it registers households (2,500 over the month; `--quick`: 60) and
does the simulator's day mix on its copy (edits, new members, moves, removals, dissolutions,
enrolments, payments, cancellations, voids) — about 10,000 mutations (`--quick`: a few hundred).
Meanwhile the other tablet works and syncs most days, and the office edits the township's
households through REST and settles quarantined items and conflicts, both on the households the
offline tablet works on most: conflicts are part of the month.

Ours, timed: the offline tablet's reference client (mobile_sync_protocol.client, MessagePack)
pushes its queue in pages of 500 until every mutation is answered, then pulls (pages of 1,000)
until a pull brings nothing new. Then, not timed: every tablet's quiet final sync and the
simulator's invariants. The run fails (exit 1, no ratio line) when any invariant fails or the
simulator finds a refusal (rejected or quarantined answer) the scenario did not mean
(checker.refusals, the `refused:` line of `canbao simulate`).

Baseline (baseline_sync_offline_month_app.py, same workers and pool, same run): the same pages
pushed to a bare endpoint that writes each change with plain SQL into a copy of the tables as the
month left them (schema `bare`, made before our push), then the township's rows changed since the
tablet went offline pulled in pages of 1,000 by keyset on sync_changes. Last line: ratio = ours /
baseline seconds, push and pull together (aim: ours < 5 s end to end, every conflict recorded).

    python bench/sync_offline_month.py            # 2,500 households, ~10,000 mutations
    python bench/sync_offline_month.py --quick    # CI: 60 households, a few hundred mutations
    CANBAO_BENCH_SEED=N python bench/sync_offline_month.py  # the month of seed N again (runs compared)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
from _harness import (
    DEMO_PASSWORD,
    CpuMeter,
    Database,
    Server,
    baseline_server,
    business_now,
    canbao_server,
    database,
    exit_on_signals,
    keys,
    load_average,
    log,
    parse_args,
    workdir,
)

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

DAYS = 30
PAGE = 500  # mutations a push (the reference client's batch)
PULL_PAGE = 1000  # records a pull page (the simulator's)
BARE_TABLES = ("households", "persons", "memberships", "enrollments", "payments")


@dataclass
class Month:
    """What the month and the tablet's return did, ours and the baseline's."""

    mutations: int = 0
    pages: list[bytes] = field(default_factory=list)  # the push bodies, for the baseline
    device_id: UUID | None = None
    township: str = ""
    offline_after: int = 0  # the last sync_changes id the tablet had seen when it went offline
    push_s: float = 0.0
    push_requests: int = 0
    pull_s: float = 0.0
    pull_requests: int = 0
    pulled: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    conflicts: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    meant: dict[str, int] = field(default_factory=dict)
    unmeant: dict[str, int] = field(default_factory=dict)
    office: Counter[str] = field(default_factory=Counter)
    invariants: str = ""
    checked: int = 0
    failed: list[str] = field(default_factory=list)
    seed: int = 0


async def copy_to_bare(db: asyncpg.Connection) -> None:
    """Schema `bare`: the tables the baseline writes, as they are now, with their indexes and checks
    (no triggers, no foreign keys)."""
    await db.execute("DROP SCHEMA IF EXISTS bare CASCADE; CREATE SCHEMA bare")
    for table in BARE_TABLES:
        await db.execute(
            f"CREATE TABLE bare.{table} (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            f"INCLUDING INDEXES); INSERT INTO bare.{table} SELECT * FROM public.{table}; ANALYZE bare.{table}"
        )


def timezone() -> ZoneInfo:
    """The server's local time (business dates): Canbao's default, as the benchmark's server runs."""
    from backend.config import Settings

    return ZoneInfo(next(str(f.default) for f in msgspec.structs.fields(Settings) if f.name == "timezone"))


async def the_month(ours: Server, db: Database, quick: bool, meter: CpuMeter) -> Month:
    from backend import crypto
    from backend.auth.passwords import Passwords
    from backend.db import init_connection
    from backend.tools.simulate import PENDING, check_invariants, report, runner
    from backend.tools.simulate.checker import final_answer, refusals
    from backend.tools.simulate.tablet import build_view
    from backend.tools.simulate.world import World

    crypto.install(keys())  # the invariants open sealed values with the run's keys, as the server does
    seed = os.environ.get("CANBAO_BENCH_SEED")  # the same month again: the seed a run printed
    result = Month(seed=int(seed) if seed else random.SystemRandom().randrange(2**32))
    rng = random.Random(result.seed)
    tag = "B" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
    conn = await asyncpg.connect(db.dsn, server_settings={"application_name": "bench-offline", "timezone": "UTC"})
    await init_connection(conn)
    try:
        # Three staff of the simulator: the first and third are of the same township.
        specs = await runner.ensure_demo(conn, Passwords(1, 1024), 3, tag)
        tz = timezone()
        first_day = datetime.combine(
            business_now().astimezone(tz).date() - timedelta(days=DAYS), datetime.min.time(), tzinfo=tz
        ).astimezone(UTC)
        day = [0]

        def clock() -> datetime:  # office hours of the simulated day, as the simulator's
            return first_day + timedelta(days=day[0], hours=rng.uniform(8.5, 17.5))

        world = World(
            inner=httpx.AsyncHTTPTransport(),
            base_url=ours.url,
            db=conn,
            rng=rng,
            password=DEMO_PASSWORD,
            tag=tag,
            clock=clock,
            timezone=tz,
            pull_limit=PULL_PAGE,
        )
        try:
            await world.prepare([specs[0], specs[2]], runner.DEMO_REVIEWERS)
            away, peer = world.tablets
            result.device_id, result.township = away.device_id, world.townships[away.username]
            # Day 0, in the office: a few households each, everyone synced with everyone.
            for tablet in (away, peer):
                for _ in range(5):
                    tablet.register(rng)
            await world.sync_together([away, peer])
            for tablet in (peer, away):
                if not await tablet.sync():
                    raise RuntimeError(f"{tablet} could not sync in the office: {dict(world.stats)}")
            result.offline_after = await conn.fetchval("SELECT coalesce(max(id), 0) FROM sync_changes")
            households = 60 if quick else 2500
            plan = [0] * DAYS
            for _ in range(households):
                plan[rng.randrange(DAYS)] += 1
            actions = list(runner.DAY_MIX)
            weights = [runner.DAY_MIX[a] for a in actions]
            log(f"a month offline: {households} households on {away}, {DAYS} days")
            for d in range(DAYS):
                day[0] = d
                for _ in range(plan[d]):
                    away.register(rng)
                for action in rng.choices(actions, weights, k=3 + 3 * plan[d]):
                    away.work(action, rng)
                for _ in range(rng.randint(0, 2)):  # the other tablet: a smaller round, online most days
                    peer.register(rng)
                for action in rng.choices(actions, weights, k=6):
                    peer.work(action, rng)
                if rng.random() < 0.8:
                    await peer.sync()
                for _ in range(rng.randint(0, 2)):  # the office
                    result.office[await world.office_edit(result.township, rng) or "nothing"] += 1
                if rng.random() < 0.5:
                    result.office[(await world.review(result.township, rng) or "nothing").split("/")[0]] += 1
            day[0] = DAYS
            await peer.sync()
            # The same pages our push will send, for the baseline; the tables as the month left them.
            entries = [e for e in away.store.entries() if e.state == "pending"]
            result.mutations = len(entries)
            for start in range(0, len(entries), PAGE):
                raws = [msgspec.Raw(codec.encode(e.mutation, "msgpack")) for e in entries[start : start + PAGE]]
                request = m.PushRequest(protocol_version=m.PROTOCOL_VERSION, device_id=away.device_id, mutations=raws)
                result.pages.append(codec.encode(request, "msgpack"))
            await copy_to_bare(conn)
            log(f"back in signal: {result.mutations} mutations queued on {away}")

            # Timed: push every page, then pull until current.
            cpu = meter.sample()
            started = time.perf_counter()
            while away.pending():
                before = away.pending()
                await away.client.push(batch=PAGE)
                result.push_requests += 1
                if away.pending() >= before:
                    raise RuntimeError(f"a push made no progress: {before} mutations still queued")
            pushed = time.perf_counter()
            while True:
                applied = await away.client.pull(limit=PULL_PAGE)
                result.pull_requests += 1
                result.pulled += applied
                if applied == 0 or result.pull_requests > 5:
                    break
            finished = time.perf_counter()
            result.cpu = meter.since(cpu)
            result.push_s, result.pull_s = pushed - started, finished - pushed
            away.pulled, away.view = True, build_view(away.store, away.device_id)

            # Not timed: the quiet final sync of everyone, the invariants, the refusals.
            log("checking the month: final sync, invariants, refusals")
            await world.quiesce()
            results = await check_invariants(world, PENDING)
            result.invariants = report(results)
            result.checked = sum(r.checked for r in results)
            result.failed = [r.name for r in results if r.failed]
            for entry in away.store.entries():
                answer = final_answer(entry)
                result.answers[(answer.first or answer).status if answer is not None else "pending"] += 1
            refused = refusals(world)
            result.meant, result.unmeant = refused.meant, refused.unmeant
            device = [away.device_id]
            result.conflicts = {r["kind"]: r["n"] for r in await conn.fetch(runner.Q["conflicts_by_kind"], device)}
            result.quarantined = {
                r["reason"]: r["n"] for r in await conn.fetch(runner.Q["quarantine_by_reason"], device)
            }
        finally:
            await world.close()
    finally:
        await conn.close()
    return result


@dataclass
class Bare:
    push_s: float = 0.0
    pull_s: float = 0.0
    pull_requests: int = 0
    pulled: int = 0
    cpu: dict[str, float] = field(default_factory=dict)


def bare_return(bare: Server, db: Database, month: Month) -> Bare:
    """The same pages to the bare /push, then the bare /pull until a page comes back empty."""
    out = Bare()
    meter = CpuMeter(bare, db)
    with httpx.Client(base_url=bare.url, timeout=600) as http:
        cpu = meter.sample()
        started = time.perf_counter()
        for page in month.pages:
            response = http.post("/push", content=page, headers={"Content-Type": m.MSGPACK})
            if response.status_code != 200:
                raise RuntimeError(f"bare push answered {response.status_code}: {response.text[-1500:]}")
        pushed = time.perf_counter()
        after = month.offline_after
        while True:
            response = http.post("/pull", json={"township": month.township, "after": after, "limit": PULL_PAGE})
            if response.status_code != 200:
                raise RuntimeError(f"bare pull answered {response.status_code}: {response.text[-1500:]}")
            page: dict[str, Any] = response.json()
            out.pull_requests += 1
            out.pulled += len(page["rows"])
            if page["after"] == after:
                break
            after = page["after"]
        out.pull_s = time.perf_counter() - pushed
        out.push_s = pushed - started
        out.cpu = meter.since(cpu)
    return out


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_sync_offline_month_app", db.dsn, work))
        month = asyncio.run(the_month(ours, db, args.quick, CpuMeter(ours, db)))
        base = bare_return(bare, db, month)
    counts = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"  # noqa: E731
    cpu = lambda used: " ".join(f"{k} {v:.2f}" for k, v in used.items())  # noqa: E731
    ours_s, bare_s = month.push_s + month.pull_s, base.push_s + base.pull_s
    log(month.invariants)
    print(f"a tablet back after {DAYS} days offline (seed {month.seed}); load average {load_average()}")
    print(f"mutations: {month.mutations} in {month.push_requests} pushes; answers: {counts(month.answers)}")
    print(f"conflicts recorded: {sum(month.conflicts.values())} ({counts(month.conflicts)})")
    print(f"quarantined: {sum(month.quarantined.values())} ({counts(month.quarantined)})")
    print(f"refused: {sum(month.meant.values())} meant ({counts(month.meant)}); {sum(month.unmeant.values())} unmeant")
    print(f"office meanwhile: {counts(month.office)}")
    print(f"invariants: {month.checked} checked, {len(month.failed)} failed")
    print(
        f"ours: push {month.push_s:.2f} s ({month.mutations / month.push_s:.0f} mutations/s) "
        f"+ pull {month.pull_s:.2f} s ({month.pulled} changes, {month.pull_requests} pulls) "
        f"= {ours_s:.2f} s; cpu s: {cpu(month.cpu)}"
    )
    print(
        f"baseline: push {base.push_s:.2f} s + pull {base.pull_s:.2f} s ({base.pulled} rows, "
        f"{base.pull_requests} pages) = {bare_s:.2f} s; cpu s: {cpu(base.cpu)}"
    )
    if month.failed or month.unmeant:
        print(
            f"FAILED: not a month of correct work: invariants failed {month.failed or 'none'}; "
            f"refusals not meant: {counts(month.unmeant)}",
            flush=True,
        )
        return 1
    print(
        f"ratio={ours_s / bare_s:.1f} ours={ours_s:.2f}s baseline={bare_s:.2f}s "
        f"push={month.push_s:.2f}s pull={month.pull_s:.2f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
