"""50 tablets back in signal at once, each pushing its day of work through the sync endpoint, against
a bare endpoint that inserts the same rows with plain statements, in the same run.

Setup (not timed): 50 staff users (25 in each demo township), each with a registered tablet, logged
in with its device credential, and a receipt block of its own. A tablet's batch is one push request
(MessagePack) of 20 households made of 10 mutations each, as in sync_push.py: household.create with
the head, 3 member.create, a household.update (the phone noted at the end of the visit), an
enrollment.create for each of the 4 members (2026) and one payment.record of their premiums: 200
mutations, 10,000 for the 50. Ours: all 50 pushes start together on `--connections` HTTP
connections (default 16: a fleet shares the server's front); every answer must be `applied`, and
the rows must be there afterwards. Baseline (baseline_sync_concurrent_push_app.py): the same kind of
body (other households) from the same 50 tablets at once, written with one INSERT … executemany per
table in one transaction per push. Both under uvicorn with the same workers and pool, on the same
embedded PostgreSQL; each side first takes a warm-up round of one household per tablet, then the
rounds alternate. Reported: mutations per second across all tablets (all mutations / wall time from
the first request to the last answer) and the slowest tablet's time. Last line:
ratio = ours / baseline wall seconds; aim: ours ≥ 5,000 mutations/s (issue 20).

    python bench/sync_concurrent_push.py            # 50 tablets × 200 mutations, 2 rounds each side
    python bench/sync_concurrent_push.py --quick    # CI: 6 tablets × 20 mutations, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import msgspec
from _harness import (
    DEMO_PASSWORD,
    TOWNSHIP_A_VILLAGES,
    CpuMeter,
    Database,
    Server,
    baseline_server,
    business_now,
    canbao_server,
    database,
    exit_on_signals,
    expect,
    load_average,
    log,
    login,
    resident_id,
    unused_area,
    workdir,
)

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

YEAR = 2026
PREMIUM = 40000
MEMBERS = (("王建国", "head"), ("李秀英", "spouse"), ("王小明", "child"), ("王小红", "child"))
TOWNSHIPS = {
    "330106001000": ("reviewer_a", TOWNSHIP_A_VILLAGES),
    "330106002000": ("reviewer_b", ("330106002201", "330106002202", "330106002203")),
}
MUTATIONS_PER_HOUSEHOLD = 10


@dataclass
class Tablet:
    index: int
    device_id: uuid.UUID
    headers: dict[str, str]
    prefix: str  # its receipt block's, e.g. "TAB"
    villages: tuple[str, ...]
    next_seq: int = 1
    next_receipt: int = 1


def prefix_of(index: int) -> str:
    """Letters only (receipt prefixes are [A-Z]{0,8}): TAA, TAB, … one per tablet."""
    return "T" + string.ascii_uppercase[index // 26] + string.ascii_uppercase[index % 26]


def setup_tablets(base_url: str, count: int) -> list[Tablet]:
    """`count` staff users, half in each township, each with a registered tablet and a receipt block."""
    admin = login(base_url, "admin")
    reviewers = {code: login(base_url, reviewer) for code, (reviewer, _) in TOWNSHIPS.items()}
    tablets = []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for i in range(count):
            township = list(TOWNSHIPS)[i % len(TOWNSHIPS)]
            username = f"bench_tablet_{i:03d}"
            user = http.post(
                "/api/v1/users",
                headers=admin,
                json={
                    "username": username,
                    "password": DEMO_PASSWORD,
                    "role": "township_staff",
                    "division_code": township,
                    "full_name": f"经办员{i}",
                },
            )
            expect(user, 201)
            staff = login(base_url, username)
            registered = expect(
                http.post("/api/v1/devices", json={"model": "bench", "app_version": "1.0"}, headers=staff), 201
            ).json()
            device_id = registered["device"]["id"]
            token = expect(
                http.post(
                    "/api/v1/auth/login",
                    json={
                        "username": username,
                        "password": DEMO_PASSWORD,
                        "device_id": device_id,
                        "device_secret": registered["device_secret"],
                    },
                ),
                200,
            ).json()["access_token"]
            block = {
                "collector_id": registered["device"]["owner_id"],
                "device_id": device_id,
                "prefix": prefix_of(i),
                "first_no": 1,
                "last_no": 99_999,
            }
            expect(http.post("/api/v1/receipt-blocks", json=block, headers=reviewers[township]), 201)
            tablets.append(
                Tablet(
                    i,
                    uuid.UUID(device_id),
                    {"Authorization": f"Bearer {token}", "Content-Type": m.MSGPACK},
                    prefix_of(i),
                    TOWNSHIPS[township][1],
                )
            )
    return tablets


class People:
    """Identity numbers never used before in this run: _harness.resident_id of a running counter."""

    def __init__(self, area: str) -> None:
        self.area, self.counter = area, itertools.count()

    def next(self) -> str:
        return resident_id(next(self.counter), self.area)


def batch(tablet: Tablet, households: int, people: People, tag: str) -> list[m.AnyMutation]:
    """A tablet's day: `households` visits of 10 mutations each, seq following its last push."""
    out: list[m.AnyMutation] = []
    collected = business_now()

    def ids() -> dict[str, Any]:
        tablet.next_seq += 1
        return {"seq": tablet.next_seq - 1, "mutation_id": uuid.uuid4()}

    for n in range(households):
        household_id = uuid.uuid4()
        members = [
            m.NewMember(person_id=uuid.uuid4(), name=name, relation=relation, id_number=people.next())  # type: ignore[arg-type]
            for name, relation in MEMBERS
        ]
        number = f"{tag}-{tablet.index}-{tablet.next_receipt}"
        out.append(
            m.HouseholdCreate(
                **ids(),
                household_id=household_id,
                household_no=number,
                members=members[:1],
                village_code=tablet.villages[n % len(tablet.villages)],
            )
        )
        out += [
            m.MemberCreate(**ids(), household_id=household_id, base_version=1 + i, member=p)
            for i, p in enumerate(members[1:])
        ]
        out.append(
            m.HouseholdUpdate(
                **ids(),
                household_id=household_id,
                base_version=4,
                phone=f"139{tablet.index:03d}{tablet.next_receipt:05d}",
            )
        )
        out += [
            m.EnrollmentCreate(**ids(), household_id=household_id, coverage_year=YEAR, person_ids=[p.person_id])
            for p in members
        ]
        out.append(
            m.PaymentRecord(
                **ids(),
                payment_id=uuid.uuid4(),
                household_id=household_id,
                coverage_year=YEAR,
                person_ids=[p.person_id for p in members],
                amount_fen=PREMIUM * 4,
                method="cash",
                receipt_no=f"{tablet.prefix}{tablet.next_receipt:08d}",
                collected_at=collected,
                due_fen=PREMIUM * 4,
                acknowledge_no_cover=True,  # collected today: past the window, the resident's word is kept
            )
        )
        tablet.next_receipt += 1
    return out


def body(tablet: Tablet, mutations: list[m.AnyMutation]) -> bytes:
    raws = [msgspec.Raw(codec.encode(x, "msgpack")) for x in mutations]
    request = m.PushRequest(
        protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, mutations=raws, device_time=business_now()
    )
    return codec.encode(request, "msgpack")


@dataclass
class Round:
    side: str
    mutations: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.mutations / self.seconds if self.seconds else 0.0


async def push_all(
    url: str,
    path: str,
    tablets: list[Tablet],
    bodies: list[bytes],
    counts: list[int],
    connections: int,
    ours: bool,
    meter: CpuMeter,
    side: str,
) -> Round:
    """Every tablet's push at once; each waits for its own answer (checked: all applied)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    result = Round(side)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as http:

        async def one(tablet: Tablet, content: bytes, count: int) -> float:
            started = time.perf_counter()
            headers = tablet.headers if ours else {"Content-Type": m.MSGPACK}
            response = expect(await http.post(path, content=content, headers=headers), 200)
            seconds = time.perf_counter() - started
            if ours:
                answer = codec.decode(response.content, m.PushResponse, "msgpack")
                wrong = [a for a in answer.answers if a.status != "applied"]
                if len(answer.answers) != count or wrong:
                    got = len(answer.answers)
                    raise RuntimeError(f"tablet {tablet.index}: {got} answers, some not applied: {wrong[:3]}")
            return seconds

        cpu = meter.sample()
        started = time.perf_counter()
        result.latencies = list(
            await asyncio.gather(*(one(t, b, c) for t, b, c in zip(tablets, bodies, counts, strict=True)))
        )
        result.seconds = time.perf_counter() - started
        result.cpu = meter.since(cpu)
    result.mutations, result.slowest = sum(counts), max(result.latencies)
    return result


def run_round(
    server: Server,
    path: str,
    tablets: list[Tablet],
    households: int,
    people: People,
    connections: int,
    ours: bool,
    db: Database,
    tag: str,
) -> Round:
    batches = [batch(t, households, people, tag) for t in tablets]
    if not ours:  # the baseline's pushes do not move the tablets' sequences on the server
        for t, b in zip(tablets, batches, strict=True):
            t.next_seq -= len(b)
    bodies = [body(t, b) for t, b in zip(tablets, batches, strict=True)]
    side = "ours" if ours else "baseline"
    return asyncio.run(
        push_all(
            server.url, path, tablets, bodies, [len(b) for b in batches], connections, ours, CpuMeter(server, db), side
        )
    )


async def row_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = ("households", "persons", "enrollments", "payments")
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
    finally:
        await conn.close()


def measure(ours: Server, bare: Server, db: Database, args: argparse.Namespace) -> list[Round]:
    from _harness import ensure_policy

    ensure_policy(ours.url, YEAR)
    people = People(unused_area(db.dsn))
    tablets = setup_tablets(ours.url, args.tablets)
    log(f"{len(tablets)} tablets registered; warming up")
    run_round(ours, "/api/v1/sync/push", tablets, 1, people, args.connections, True, db, "warm")
    run_round(bare, "/push", tablets, 1, people, args.connections, False, db, "bwarm")
    rounds = []
    for r in range(args.rounds):
        for side in ("ours", "baseline"):
            before = asyncio.run(row_counts(db.dsn))
            if side == "ours":
                done = run_round(
                    ours, "/api/v1/sync/push", tablets, args.households, people, args.connections, True, db, f"r{r}"
                )
            else:
                done = run_round(bare, "/push", tablets, args.households, people, args.connections, False, db, f"b{r}")
            added = asyncio.run(row_counts(db.dsn))
            expected = len(tablets) * args.households
            if added["households"] - before["households"] != expected:
                raise RuntimeError(f"{side}: {added['households'] - before['households']} households, not {expected}")
            log(
                f"round {r + 1} {side}: {done.mutations} mutations in {done.seconds:.2f} s = {done.rate:.0f}/s, "
                f"slowest tablet {done.slowest:.2f} s; load average {load_average()}"
            )
            rounds.append(done)
    return rounds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="6 tablets × 2 households, 1 round: keeps the script working")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (in a new temporary folder)")
    p.add_argument("--tablets", type=int, default=50)
    p.add_argument("--households", type=int, default=20, help="households per tablet and round (10 mutations each)")
    p.add_argument("--connections", type=int, default=16, help="concurrent HTTP connections shared by the tablets")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    if args.quick:
        args.tablets, args.households, args.rounds = 6, 2, 1
    exit_on_signals()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_sync_concurrent_push_app", db.dsn, work))
        rounds = measure(ours, bare, db, args)
    per_tablet = args.households * MUTATIONS_PER_HOUSEHOLD
    print(
        f"{args.tablets} tablets × {per_tablet} mutations at once, {args.connections} connections, "
        f"{args.rounds} round(s) each side; load average {load_average()}"
    )
    totals = {}
    for side in ("ours", "baseline"):
        mine = [r for r in rounds if r.side == side]
        for i, r in enumerate(mine):
            cpu = " ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
            print(
                f"{side} round {i + 1}: {r.mutations} mutations in {r.seconds:.2f} s = {r.rate:.0f} mutations/s; "
                f"slowest tablet {r.slowest:.2f} s, median {sorted(r.latencies)[len(r.latencies) // 2]:.2f} s; "
                f"cpu s: {cpu}"
            )
        seconds, mutations = sum(r.seconds for r in mine), sum(r.mutations for r in mine)
        totals[side] = (seconds, mutations / seconds, max(r.slowest for r in mine))
    (ours_s, ours_rate, ours_slow), (bare_s, bare_rate, bare_slow) = totals["ours"], totals["baseline"]
    print(
        f"ours: {ours_rate:.0f} mutations/s, slowest tablet {ours_slow:.2f} s; "
        f"baseline: {bare_rate:.0f} mutations/s, slowest tablet {bare_slow:.2f} s"
    )
    print(
        f"ratio={ours_s / bare_s:.1f} ours={ours_s:.2f}s baseline={bare_s:.2f}s ours_rate={ours_rate:.0f}/s "
        f"baseline_rate={bare_rate:.0f}/s ours_slowest={ours_slow:.2f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
