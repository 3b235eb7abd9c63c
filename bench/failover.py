"""The primary fails under load (issue 21 point 4): a three-node Patroni cluster on this machine
(deploy/cluster/cluster.sh, each node in a network namespace of its own), `canbao serve --workers 2`
on its multi-host DSN, 10 tablets pushing, 4 counters taking payments and 3 of the simulator's
tablets (backend/tools/simulate) working and syncing; mid-load the leader fails, Patroni promotes a
standby and the load goes on. Two scenarios, each on a fresh cluster:

- kill: `kill -9` of the leader's Patroni, its postmaster and the postmaster's children, as when
  the machine dies;
- cut: the leader's link to etcd is cut (`cluster.sh cut`: frames dropped both ways, silently) while
  it still reaches the other nodes and the app reaches it. Patroni demotes it once it cannot renew
  its key (retry_timeout 5 s); the standby takes the key when it expires (ttl 10 s). Before the link
  is healed the old leader is read directly: it must be read-only and hold no mutation, payment or
  household the new primary lacks (split brain); after healing it must rejoin as a replica.

Not a CI benchmark: it needs `apt-get install -y patroni etcd-server postgresql-15 python3-etcd`,
root (namespaces; the nodes run as `postgres`) and cluster.sh's ports, shifted by --port-offset,
free; bench/run_quick.sh leaves it out (its short run is tests/ops/test_failover.py, which CI runs:
.ci/run installs those packages).

Setup (not timed): the cluster; roles canbao_owner and canbao_app and database canbao made on the
leader; `canbao migrate` and `canbao demo seed` through the multi-host DSNs (as an operator would);
households for the counters copied in (bench/payments.py's loader); 10 tablet users with registered
devices and receipt blocks (bench/sync_concurrent_push.py's), 4 counter users in township A with a
receipt block each; the simulator's tablets in township B, registered, with a first snapshot.

Load: each tablet pushes batches of `--households` visits (10 mutations each: a household, 3 members,
an update, 4 enrolments, a payment); each counter POSTs /api/v1/payments with an Idempotency-Key,
one household after the other. A client that gets 503 (or loses its connection) sends the same
request again — same body, same key, same sequence numbers — after the answer's Retry-After, at most
`--retry-cap` seconds (default 1 s, so that the figure is the cluster's and not the clients' back-off).
The simulator's tablets register, edit, enrol and collect offline, then all sync, again and again (a
sync cut short is tried again next round). `--before` seconds after the load starts the leader
fails; the load goes on until `--after` seconds after Patroni named a new leader; then each client
finishes what it is sending (given up after `--give-up` seconds).

Checked, reading the new primary's tables directly: every acknowledged mutation is in the ledger
once, applied, and its household, members, enrolments (paid) and payment are there once; every
device's ledger is 1…last_seq without a gap; every acknowledged counter payment is there once with
its allocations, key and paid enrolments; no household has two payments for the year; a request
never acknowledged (cut by --give-up) is all there or not at all; no payment lacks allocations;
`canbao audit verify` passes; the simulator's invariants hold after a quiet final sync (its 503
`try_again` answers during the outage are the answer meant, not a failure); the node promoted was
the synchronous standby (Patroni's /cluster just before the fault); a reconciliation stored as a job
after the failover runs within 10 s although the worker polls only every 60 s (its LISTEN session
died with the old primary and was opened again). Reported: seconds from the fault to Patroni's new
leader, the longest stretch without an acknowledged write after the fault (`outage_s`) and when it
ended (`failover_s`, the time from the fault to the first write on the new primary), 503 answers
and lost connections seen by the clients. Last line: each scenario's
`failover_s=… outage_s=… promoted_s=… acknowledged=… lost=0 duplicated=0 half_applied=0 …`.

    python bench/failover.py                              # as root; both scenarios, about 8 minutes
    python bench/failover.py --scenario cut --port-offset 100 --keep-logs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import psutil
from _harness import (
    CANBAO,
    DEMO_PASSWORD,
    REPO,
    Server,
    business_now,
    ensure_policy,
    exit_on_signals,
    expect,
    free_port,
    keys,
    load_average,
    log,
    login,
    server,
    server_env,
    unused_area,
)
from payments import MEMBERS as COUNTER_MEMBERS
from payments import TIMEZONE, Household, load_households
from sync_concurrent_push import People, Tablet, batch, body, setup_tablets

from backend import crypto
from backend.auth.passwords import Passwords
from backend.db import init_connection
from backend.tools.simulate import InvariantResult, World, check_invariants, report
from backend.tools.simulate.checker import mutation_keys
from backend.tools.simulate.runner import DAY_MIX, DEMO_REVIEWERS, ensure_demo
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

CLUSTER_SH = REPO / "deploy" / "cluster" / "cluster.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres:cluster-superuser"  # cluster.sh's
OWNER_PASSWORD, APP_PASSWORD = "failover-owner", "failover-app"
# name: (host, PostgreSQL port, Patroni REST port), read from the running cluster's DIR/nodes
NODES: dict[str, tuple[str, int, int]] = {}
CUT: set[str] = set()  # nodes cut off etcd: their REST API's view of the cluster is stale
YEAR = 2026
COUNTERS = 4
COUNTER_PREFIXES = ("CA", "CB", "CC", "CD")
TOWNSHIP_A = "330106001000"


def dsn(userinfo: str, database: str) -> str:
    hosts = ",".join(f"{host}:{pg}" for host, pg, _ in NODES.values())
    return f"postgresql://{userinfo}@{hosts}/{database}?target_session_attrs=read-write"


def admin_dsn() -> str:
    return dsn(SUPERUSER, "canbao")


def missing_tools() -> list[str]:
    return [t for t in ("patroni", "etcd", str(PG_BIN / "postgres")) if shutil.which(t) is None]


def ports_taken(offset: int) -> list[int]:
    ports = (2379, 2380, *(5440 + n for n in (1, 2, 3)), *(8010 + n for n in (1, 2, 3)))
    taken = []
    for port in (p + offset for p in ports):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def cluster_sh(*args: str, offset: int) -> str:
    env = dict(os.environ, CANBAO_CLUSTER_PORT_OFFSET=str(offset), CANBAO_CLUSTER_NETNS="1")
    done = subprocess.run(
        ["sh", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


@contextlib.contextmanager
def cluster(folder: Path, keep_logs: bool, offset: int) -> Iterator[Path]:
    """cluster.sh start (each node in a network namespace of its own), and always stop (every
    process, the namespaces, the folder)."""
    started = time.monotonic()
    try:
        cluster_sh("start", str(folder), offset=offset)
        NODES.clear()
        for line in (folder / "nodes").read_text().splitlines():
            name, host, pg, rest, _ = line.split()
            NODES[name] = (host, int(pg), int(rest))
        log(f"cluster up in {folder} ({time.monotonic() - started:.1f} s): {NODES}")
        yield folder
    finally:
        if keep_logs:
            target = Path(tempfile.mkdtemp(prefix="canbao-failover-logs-"))
            for logfile in folder.glob("*.log"):
                shutil.copy(logfile, target / logfile.name)
            log(f"nodes' logs kept in {target}")
        env = dict(os.environ, CANBAO_CLUSTER_PORT_OFFSET=str(offset))
        stopped = subprocess.run(
            ["sh", str(CLUSTER_SH), "stop", str(folder)], capture_output=True, timeout=120, check=False, env=env
        )
        log(f"cluster stopped ({stopped.returncode}): {stopped.stdout.decode().strip()}")


def members() -> list[dict[str, Any]]:
    """Patroni's view of the cluster, from the first node whose REST API answers."""
    for name, (host, _, rest) in NODES.items():
        if name in CUT:
            continue
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found: list[dict[str, Any]] = httpx.get(f"http://{host}:{rest}/cluster", timeout=1).json()["members"]
            return found
    return []


def leader() -> str | None:
    return next((mm["name"] for mm in members() if mm["role"] == "leader" and mm["state"] == "running"), None)


def roles() -> dict[str, str]:
    return {mm["name"]: mm["role"] for mm in members()}


def kill_node(folder: Path, name: str) -> list[int]:
    """SIGKILL to the node's Patroni, its postmaster and every process under either, all at once; again
    for any that was forked meanwhile or is the node's without being their child (a pg_ctl of Patroni's)."""
    patroni = int((folder / f"{name}.pid").read_text().split()[0])
    postmaster = int((folder / name / "postmaster.pid").read_text().split()[0])
    killed: dict[int, psutil.Process] = {}
    for _round in range(3):
        victims = [p for p in _node_processes(folder / name, (patroni, postmaster)) if p.pid not in killed]
        if not victims:
            break
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
            killed[proc.pid] = proc
    return list(killed)


def _node_processes(node: Path, roots: tuple[int, ...]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
    for proc in psutil.process_iter(["cmdline"]):
        if str(node) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return list({p.pid: p for p in found}.values())


async def prepare_database() -> None:
    admin = await asyncpg.connect(dsn(SUPERUSER, "postgres"))
    try:
        await admin.execute(f"CREATE ROLE canbao_owner LOGIN PASSWORD '{OWNER_PASSWORD}'")
        await admin.execute(f"CREATE ROLE canbao_app LOGIN PASSWORD '{APP_PASSWORD}'")
        await admin.execute("CREATE DATABASE canbao OWNER canbao_owner")
    finally:
        await admin.close()


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([CANBAO, *args], env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"canbao {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip()


@dataclass
class Counters:
    """What the clients saw."""

    kill_at: float | None = None
    first_write_after_kill: float | None = None
    unavailable: Counter[str] = field(default_factory=Counter)  # "503 try_again", "connection lost", …
    writes: int = 0
    acknowledged_at: list[float] = field(default_factory=list)  # when each write was answered
    hard_stop: float = float("inf")

    def outage(self, fault_at: float) -> tuple[float, float] | None:
        """The longest stretch without an acknowledged write from the fault on: (start, end)."""
        after = [fault_at, *sorted(t for t in self.acknowledged_at if t > fault_at)]
        gaps = [(a, b) for a, b in itertools.pairwise(after)]
        return max(gaps, key=lambda g: g[1] - g[0]) if gaps else None


async def send(
    http: httpx.AsyncClient, path: str, content: bytes, headers: dict[str, str], seen: Counters, cap: float
) -> httpx.Response | None:
    """The request, again and again while the service is unavailable; None if given up."""
    while True:
        if time.monotonic() > seen.hard_stop:
            return None
        started = time.monotonic()
        try:
            answer = await http.post(path, content=content, headers=headers)
        except httpx.TransportError as exc:
            seen.unavailable[f"connection: {type(exc).__name__}"] += 1
            await asyncio.sleep(cap)
            continue
        if answer.status_code == 503:
            code = msgspec.json.decode(answer.content).get("code", "?") if answer.content else "?"
            seen.unavailable[f"503 {code}"] += 1
            await asyncio.sleep(min(float(answer.headers.get("Retry-After", cap)), cap))
            continue
        if answer.is_success:
            seen.writes += 1
            seen.acknowledged_at.append(time.monotonic())
            if seen.kill_at is not None and started >= seen.kill_at and seen.first_write_after_kill is None:
                seen.first_write_after_kill = time.monotonic()
        return answer


@dataclass
class Ledger:
    """The clients' own record: what was acknowledged, what was sent and never acknowledged."""

    mutations: list[tuple[uuid.UUID, int, uuid.UUID]] = field(default_factory=list)  # device, seq, mutation id
    households: list[uuid.UUID] = field(default_factory=list)  # registered by tablets
    tablet_payments: list[uuid.UUID] = field(default_factory=list)
    counter_payments: list[dict[str, Any]] = field(default_factory=list)  # body and key
    unacknowledged_pushes: list[list[m.AnyMutation]] = field(default_factory=list)
    unacknowledged_payments: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def tablet_loop(
    http: httpx.AsyncClient, tablet: Tablet, people: People, households: int, stop: asyncio.Event, seen: Counters,
    book: Ledger, cap: float,
) -> None:  # fmt: skip
    n = 0
    while not stop.is_set():
        n += 1
        mutations = batch(tablet, households, people, f"fo{n}")
        answer = await send(http, "/api/v1/sync/push", body(tablet, mutations), tablet.headers, seen, cap)
        if answer is None:
            book.unacknowledged_pushes.append(mutations)
            return
        expect(answer, 200)
        pushed = codec.decode(answer.content, m.PushResponse, "msgpack")
        statuses = [a.status if a.status != "duplicate" or a.first is None else a.first.status for a in pushed.answers]
        if len(statuses) != len(mutations) or set(statuses) != {"applied"}:
            book.problems.append(f"tablet {tablet.index}: answers {Counter(statuses)} for {len(mutations)} mutations")
        for mu in mutations:
            book.mutations.append((tablet.device_id, mu.seq, mu.mutation_id))
            if isinstance(mu, m.HouseholdCreate):
                book.households.append(mu.household_id)
            elif isinstance(mu, m.PaymentRecord):
                book.tablet_payments.append(mu.payment_id)


async def counter_loop(
    http: httpx.AsyncClient, prefix: str, staff: dict[str, str], queue: Iterator[Household], amount_fen: int,
    stop: asyncio.Event, seen: Counters, book: Ledger, cap: float,
) -> None:  # fmt: skip
    number = 0
    while not stop.is_set():
        household, number = next(queue, None), number + 1
        if household is None:  # every loaded household paid: --counter-households
            return
        payment = {
            "id": str(uuid.uuid4()),
            "household_id": str(household.id),
            "coverage_year": YEAR,
            "person_ids": [str(p) for p in household.person_ids],
            "amount_fen": amount_fen,
            "method": "cash",
            "receipt_no": f"{prefix}{number:08d}",
            "collected_at": business_now().astimezone(TIMEZONE).isoformat(),
            "acknowledge_no_cover": True,
        }
        key = f"failover-{uuid.uuid4()}"
        headers = staff | {"Idempotency-Key": key, "Content-Type": "application/json"}
        answer = await send(http, "/api/v1/payments", msgspec.json.encode(payment), headers, seen, cap)
        if answer is None:
            book.unacknowledged_payments.append(payment | {"key": key})
            return
        expect(answer, 201)
        book.counter_payments.append(payment | {"key": key})


async def watch_leader(old: str, stop: asyncio.Event) -> float | None:
    """When Patroni's REST API first names another running leader."""
    while not stop.is_set():
        now = await asyncio.to_thread(leader)
        if now is not None and now != old:
            return time.monotonic()
        await asyncio.sleep(0.2)
    return None


@dataclass
class Timeline:
    scenario: str = "kill"
    old_leader: str = ""
    sync_standby: str = ""  # Patroni's synchronous standby just before the fault
    new_leader: str = ""
    kill_at: float = 0.0
    promoted_at: float | None = None
    killed: list[int] = field(default_factory=list)
    healed_at: float | None = None
    rejoined_at: float | None = None  # the old leader back as a streaming replica
    old_in_recovery: bool | None = None  # the old leader, read during the cut: refuses writes
    only_on_old: dict[str, int] = field(default_factory=dict)  # rows the old primary has and the new lacks
    job_s: float | None = None  # a job stored after the failover: seconds until it succeeded
    job_state: str = "not stored"
    sim: list[InvariantResult] = field(default_factory=list)
    sim_try_again: int = 0
    sim_touched: set[uuid.UUID] = field(default_factory=set)  # households and persons its tablets worked on


async def sim_world(url: str, tablets: int, seed: int) -> World:
    """The simulator's tablets (backend/tools/simulate), in township B (A holds the counters' many
    households, which every tablet of A would pull): registered, with a first snapshot."""
    crypto.install(keys())  # the server's: the checks open sealed numbers
    db = await asyncpg.connect(admin_dsn(), server_settings={"timezone": "UTC"})
    await init_connection(db)
    rng = random.Random(seed)
    tag = "SF" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    specs = (await ensure_demo(db, Passwords(1, 1024), 2 * tablets, tag))[1::2]  # every other one is in B
    world = World(inner=httpx.AsyncHTTPTransport(), base_url=url, db=db, rng=rng, password=DEMO_PASSWORD, tag=tag)
    await world.prepare(specs, DEMO_REVIEWERS)
    await world.sync_together(list(world.tablets))
    return world


async def sim_loop(world: World, stop: asyncio.Event) -> None:
    """Each tablet registers a household and does some work offline, then all sync; again and again
    through the failover (a sync cut short is simply tried again next time, as in the field)."""
    actions = list(DAY_MIX)
    weights = [DAY_MIX[a] for a in actions]
    while not stop.is_set():
        for tablet in world.tablets:
            tablet.register(world.rng)
            for action in world.rng.choices(actions, weights, k=6):
                tablet.work(action, world.rng)
        await world.sync_together(list(world.tablets))
        await asyncio.sleep(0.5)


async def sim_check(world: World, timeline: Timeline) -> None:
    """After the load: a quiet final sync, then every invariant of the simulator, read on the new
    primary. A 503 `try_again` during the outage is the answer meant for it, not a server failure."""
    await world.db.close()
    world.db = await asyncpg.connect(admin_dsn(), server_settings={"timezone": "UTC"})
    await init_connection(world.db)
    try:
        await world.quiesce()
        meant = [e for e in world.server_errors if " → 503 " in e and "try_again" in e]
        timeline.sim_try_again = len(meant)
        world.server_errors = [e for e in world.server_errors if e not in meant]
        timeline.sim = await check_invariants(world)
        timeline.sim_touched = {
            key for t in world.all_tablets for e in t.store.entries() for key in mutation_keys(e.mutation)
        }
    finally:
        await world.db.close()
        await world.close()


async def old_primary_rows(host: str, port: int, timeline: Timeline) -> dict[str, set[uuid.UUID]]:
    """The old leader, still cut off from etcd: read-only, and what it holds (read before it rejoins
    and pg_rewind could drop a divergent write)."""
    for _ in range(30):
        try:
            conn = await asyncpg.connect(f"postgresql://{SUPERUSER}@{host}:{port}/canbao", timeout=5)
            break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await asyncio.sleep(1)
    else:
        raise RuntimeError(f"the old leader ({host}:{port}) could not be read during the cut")
    try:
        timeline.old_in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
        return await written_ids(conn)
    finally:
        await conn.close()


async def written_ids(conn: asyncpg.Connection) -> dict[str, set[uuid.UUID]]:
    return {
        "sync_mutations": {r[0] for r in await conn.fetch("SELECT mutation_id FROM sync_mutations")},
        "payments": {r[0] for r in await conn.fetch("SELECT id FROM payments")},
        "households": {r[0] for r in await conn.fetch("SELECT id FROM households")},
    }


async def job_after_failover(url: str, timeline: Timeline) -> None:
    """A reconciliation stored as a job once the load is over: the worker started before the
    failover must see it through a new LISTEN session (its poll is set to 60 s here)."""
    statement = "交易流水号,交易时间,交易金额\nFO-1,2026-10-08 09:01:00,300.00\n".encode()
    reviewer = await asyncio.to_thread(login, url, "reviewer_a")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        started = time.monotonic()
        stored = expect(
            await http.post(
                "/api/v1/reconciliations?background=true",
                files={"file": ("statement.csv", statement, "text/csv")},
                headers=reviewer,
            ),
            202,
        ).json()
        while time.monotonic() - started < 90:
            job = expect(await http.get(stored["href"], headers=reviewer), 200).json()
            timeline.job_state = job["state"]
            if job["state"] in ("succeeded", "failed", "cancelled"):
                timeline.job_s = time.monotonic() - started if job["state"] == "succeeded" else None
                return
            await asyncio.sleep(0.1)


async def rejoined(name: str, timeline: Timeline) -> None:
    for _ in range(120):
        member = next((mm for mm in await asyncio.to_thread(members) if mm["name"] == name), None)
        if member is not None and member["role"] != "leader" and member["state"] in ("running", "streaming"):
            timeline.rejoined_at = time.monotonic()
            return
        await asyncio.sleep(0.5)


async def load(
    url: str, folder: Path, tablets: list[Tablet], people: People, counters: list[tuple[str, dict[str, str]]],
    queue: Iterator[Household], amount_fen: int, args: argparse.Namespace, scenario: str,
) -> tuple[Counters, Ledger, Timeline]:  # fmt: skip
    seen, book, timeline = Counters(), Ledger(), Timeline(scenario=scenario)
    stop, stop_watch = asyncio.Event(), asyncio.Event()
    world = await sim_world(url, args.sim_tablets, args.seed)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        clients = [
            asyncio.create_task(tablet_loop(http, t, people, args.households, stop, seen, book, args.retry_cap))
            for t in tablets
        ] + [
            asyncio.create_task(counter_loop(http, prefix, staff, queue, amount_fen, stop, seen, book, args.retry_cap))
            for prefix, staff in counters
        ]
        simulated = asyncio.create_task(sim_loop(world, stop))
        await asyncio.sleep(args.before)
        writes_before = seen.writes
        before = await asyncio.to_thread(roles)
        timeline.old_leader = next((n for n, r in before.items() if r == "leader"), "?")
        timeline.sync_standby = next((n for n, r in before.items() if r == "sync_standby"), "?")
        timeline.kill_at = seen.kill_at = time.monotonic()
        if scenario == "kill":
            timeline.killed = kill_node(folder, timeline.old_leader)
            log(f"killed {timeline.old_leader} (pids {timeline.killed}) after {writes_before} writes")
        else:
            await asyncio.to_thread(cluster_sh, "cut", str(folder), timeline.old_leader, offset=args.port_offset)
            CUT.add(timeline.old_leader)
            log(f"cut {timeline.old_leader} off etcd after {writes_before} writes")
        watcher = asyncio.create_task(watch_leader(timeline.old_leader, stop_watch))
        deadline = timeline.kill_at + args.max_outage
        while seen.first_write_after_kill is None and time.monotonic() < deadline:
            if all(c.done() for c in clients):
                break
            await asyncio.sleep(0.1)
        # The first write after a cut may still be the old leader's (it serves until it demotes):
        # what counts is the end of the outage (Counters.outage), once the new leader is named.
        with contextlib.suppress(TimeoutError):
            timeline.promoted_at = await asyncio.wait_for(watcher, args.max_outage)
        if seen.first_write_after_kill is None:
            book.problems.append(f"no write succeeded within {args.max_outage} s of the fault")
        else:
            log(f"first write {seen.first_write_after_kill - timeline.kill_at:.1f} s after the fault")
            await asyncio.sleep(args.after)
        stop.set()
        seen.hard_stop = time.monotonic() + args.give_up
        stop_watch.set()
        timeline.new_leader = await asyncio.to_thread(leader) or "?"
        for task in [*clients, simulated]:
            with contextlib.suppress(Exception):
                await task
        for task in [*clients, simulated]:
            if task.exception() is not None:
                book.problems.append(f"a client failed: {task.exception()!r}")
    await job_after_failover(url, timeline)
    if scenario == "cut":
        host, pg, _ = NODES[timeline.old_leader]
        old = await old_primary_rows(host, pg, timeline)
        new_conn = await asyncpg.connect(admin_dsn())
        try:
            new = await written_ids(new_conn)
        finally:
            await new_conn.close()
        timeline.only_on_old = {table: len(old[table] - new[table]) for table in old}
        await asyncio.to_thread(cluster_sh, "heal", str(folder), timeline.old_leader, offset=args.port_offset)
        timeline.healed_at = time.monotonic()
        CUT.discard(timeline.old_leader)
        await rejoined(timeline.old_leader, timeline)
    await sim_check(world, timeline)
    return seen, book, timeline


async def verify(book: Ledger, touched: set[uuid.UUID]) -> dict[str, int]:
    """Reads the new primary's tables. Returns lost/duplicated/half-applied counts and problems in book.
    A tablet's household the simulator's tablets also worked on (they pull township B) may have more
    members: its shape is the simulator's invariants' business, its payment still counted here."""
    db = await asyncpg.connect(admin_dsn())
    try:
        found: dict[str, int] = {"lost": 0, "duplicated": 0, "half_applied": 0}
        twice: Counter[str] = Counter()  # which check found each duplicate (named in the problems)
        # Tablets: the ledger holds each acknowledged mutation once, applied.
        ids = [mid for _, _, mid in book.mutations]
        rows = await db.fetch(
            "SELECT mutation_id, count(*) AS n, bool_and(status IN ('applied', 'duplicate')) AS ok"
            " FROM sync_mutations WHERE mutation_id = ANY($1::uuid[]) GROUP BY mutation_id",
            ids,
        )
        in_ledger = {r["mutation_id"]: r for r in rows}
        found["lost"] += sum(1 for i in ids if i not in in_ledger)
        twice["a mutation in the ledger twice"] += sum(r["n"] - 1 for r in rows)
        if bad := [r["mutation_id"] for r in rows if not r["ok"]]:
            book.problems.append(f"{len(bad)} acknowledged mutations not applied in the ledger")
        gaps = await db.fetch(
            "SELECT d.device_id, d.last_seq, count(m.seq) AS n, max(m.seq) AS top FROM sync_devices d"
            " JOIN sync_mutations m USING (device_id) WHERE d.device_id = ANY($1::uuid[])"
            " GROUP BY d.device_id, d.last_seq HAVING count(m.seq) <> d.last_seq OR max(m.seq) <> d.last_seq",
            list({device for device, _, _ in book.mutations}),
        )
        book.problems += [
            f"device {g['device_id']}: ledger {g['n']} rows up to {g['top']}, last_seq {g['last_seq']}" for g in gaps
        ]
        # Their households: there once, 4 members, 4 enrolments paid, one payment of 4 allocations; one
        # payment from the tablets (a simulator's tablet may pay for a member it added: not a duplicate).
        devices = list({device for device, _, _ in book.mutations})
        shape = await db.fetch(
            """
            SELECT h.id,
                   (SELECT count(*) FROM memberships ms WHERE ms.household_id = h.id) AS members,
                   (SELECT count(*) FROM enrollments e WHERE e.household_id = h.id AND e.coverage_year = $2
                      AND e.status = 'paid') AS paid,
                   (SELECT count(*) FROM payments p WHERE p.household_id = h.id AND p.coverage_year = $2) AS payments,
                   (SELECT count(*) FROM payments p WHERE p.household_id = h.id AND p.coverage_year = $2
                      AND p.device_id = ANY($3::uuid[])) AS tablet_payments,
                   (SELECT count(*) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id
                      WHERE p.household_id = h.id) AS allocations
            FROM households h WHERE h.id = ANY($1::uuid[])
            """,
            book.households,
            YEAR,
            devices,
        )
        found["lost"] += len(book.households) - len(shape)
        for row in shape:
            if row["tablet_payments"] > 1:
                twice["a tablet household paid twice by the tablets"] += row["tablet_payments"] - 1
            if row["id"] in touched:
                continue
            if (row["members"], row["paid"], row["payments"], row["allocations"]) != (4, 4, 1, 4):
                book.problems.append(f"household {row['id']}: {dict(row)}")
        # No household of the tablets' beyond those acknowledged (every push was acknowledged in the
        # end, or is counted below as never acknowledged): a retry never made a second one.
        registered = await db.fetchval("SELECT count(*) FROM households WHERE household_no LIKE 'fo%'")
        unacknowledged = sum(
            1 for push in book.unacknowledged_pushes for mu in push if isinstance(mu, m.HouseholdCreate)
        )
        twice["a tablet household registered twice"] += max(0, registered - len(book.households) - unacknowledged)
        tablet_paid = await db.fetchval(
            "SELECT count(*) FROM payments WHERE id = ANY($1::uuid[])", book.tablet_payments
        )
        found["lost"] += len(book.tablet_payments) - tablet_paid
        # Counters: each acknowledged payment once, with its allocations, its key, its enrolments paid.
        paid = [uuid.UUID(p["id"]) for p in book.counter_payments]
        households = [uuid.UUID(p["household_id"]) for p in book.counter_payments]
        rows = await db.fetch(
            """
            SELECT p.id, (SELECT count(*) FROM payment_allocations a WHERE a.payment_id = p.id) AS allocations,
                   (SELECT count(*) FROM payments q WHERE q.household_id = p.household_id
                      AND q.coverage_year = p.coverage_year) AS for_household,
                   (SELECT count(*) FROM enrollments e WHERE e.household_id = p.household_id
                      AND e.coverage_year = p.coverage_year AND e.status = 'paid') AS paid
            FROM payments p WHERE p.id = ANY($1::uuid[])
            """,
            paid,
        )
        found["lost"] += len(paid) - len(rows)
        for row in rows:
            twice["a counter household paid twice"] += row["for_household"] - 1
            if (row["allocations"], row["paid"]) != (len(COUNTER_MEMBERS), len(COUNTER_MEMBERS)):
                book.problems.append(f"payment {row['id']}: {dict(row)}")
        keys = await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE route = 'POST /api/v1/payments' AND key = ANY($1::text[])",
            [p["key"] for p in book.counter_payments],
        )
        if keys != len(paid):
            book.problems.append(f"{keys} idempotency keys for {len(paid)} acknowledged payments")
        receipts = await db.fetchval("SELECT count(*) - count(DISTINCT (receipt_block_id, receipt_no)) FROM payments")
        twice["a receipt number used twice"] += receipts
        extra = await db.fetchval(
            "SELECT count(*) FROM payments WHERE household_id = ANY($1::uuid[]) AND NOT id = ANY($2::uuid[])",
            households,
            paid,
        )
        twice["a counter household with a payment not acknowledged"] += extra
        found["duplicated"] = sum(twice.values())
        if found["duplicated"]:
            book.problems.append(f"duplicated: {dict(+twice)}")
        # Never acknowledged (cut by --give-up): all there or nothing.
        for payment in book.unacknowledged_payments:
            n = await db.fetchval(
                "SELECT (SELECT count(*) FROM payments WHERE id = $1::uuid)"
                " + (SELECT count(*) FROM payment_allocations WHERE payment_id = $1::uuid)",
                payment["id"],
            )
            if n not in (0, 1 + len(COUNTER_MEMBERS)):
                found["half_applied"] += 1
        for mutations in book.unacknowledged_pushes:
            for mu in mutations:
                if isinstance(mu, m.HouseholdCreate):
                    row = await db.fetchrow(
                        "SELECT (SELECT count(*) FROM households WHERE id = $1) AS h,"
                        " (SELECT count(*) FROM sync_mutations WHERE mutation_id = $2) AS l",
                        mu.household_id,
                        mu.mutation_id,
                    )
                    if row["h"] != row["l"]:
                        found["half_applied"] += 1
        # Anywhere: a payment always has its allocations.
        found["half_applied"] += await db.fetchval(
            "SELECT count(*) FROM payments p"
            " WHERE NOT EXISTS (SELECT 1 FROM payment_allocations a WHERE a.payment_id = p.id)"
        )
        return found
    finally:
        await db.close()


def counters_setup(url: str) -> list[tuple[str, dict[str, str]]]:
    """4 township A staff users, each with a receipt block of its own."""
    admin, reviewer = login(url, "admin"), login(url, "reviewer_a")
    out = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i, prefix in enumerate(COUNTER_PREFIXES):
            username = f"failover_counter_{i}"
            user = {
                "username": username,
                "password": DEMO_PASSWORD,
                "role": "township_staff",
                "division_code": TOWNSHIP_A,
                "full_name": f"柜台{i}",
            }
            made = expect(http.post("/api/v1/users", headers=admin, json=user), 201).json()
            block = {"collector_id": made["id"], "prefix": prefix, "first_no": 1, "last_no": 99_999, "digits": 8}
            expect(http.post("/api/v1/receipt-blocks", json=block, headers=reviewer), 201)
            out.append((prefix, login(url, username)))
    return out


def scenario(args: argparse.Namespace, which: str) -> tuple[bool, str]:
    """One run on a cluster of its own: the report printed, and (ok, the figures' line)."""
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="canbao-failover-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        # Its own folder, which cluster.sh gives to the `postgres` user (and deletes when it stops).
        folder = Path(tempfile.mkdtemp(prefix="canbao-failover-cluster-"))
        stack.enter_context(cluster(folder, args.keep_logs, args.port_offset))
        asyncio.run(prepare_database())
        app_dsn = dsn(f"canbao_app:{APP_PASSWORD}", "canbao")
        env = server_env(app_dsn) | {"CANBAO_OWNER_DATABASE_URL": dsn(f"canbao_owner:{OWNER_PASSWORD}", "canbao")}
        log(run_cli(["migrate"], env))
        run_cli(["demo", "seed"], env)
        port = free_port()
        argv = [CANBAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        # A worker that missed a notification would wait a minute: the job after the failover shows it.
        serve_env = server_env(app_dsn) | {"CANBAO_JOB_POLL_S": "60"}
        ours: Server = stack.enter_context(server("canbao", argv, serve_env, port, work))
        if args.keep_logs:
            stack.callback(lambda: shutil.copy(ours.logfile, tempfile.mkdtemp(prefix="canbao-failover-serve-")))
        ensure_policy(ours.url, YEAR)
        admin = login(ours.url, "admin")
        policy = expect(httpx.get(f"{ours.url}/api/v1/policy-years/{YEAR}", headers=admin, timeout=30), 200).json()
        loaded = asyncio.run(
            load_households(admin_dsn(), args.counter_households, unused_area(admin_dsn()), policy["current"])
        )
        counters = counters_setup(ours.url)
        people = People(unused_area(admin_dsn()))
        tablets = setup_tablets(ours.url, args.tablets)
        log(f"{len(tablets)} tablets, {len(counters)} counters; load for {args.before} s, then the {which}")
        amount = len(COUNTER_MEMBERS) * policy["current"]["premium_fen"]
        seen, book, timeline = asyncio.run(
            load(ours.url, folder, tablets, people, counters, iter(loaded), amount, args, which)
        )
        found = asyncio.run(verify(book, timeline.sim_touched))
        audit = run_cli(["audit", "verify"], server_env(app_dsn))
        log(audit)
        alive = roles()
    leftovers = [
        proc.pid for proc in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(proc.info["cmdline"] or [])
    ]
    acknowledged = len(book.mutations) + len(book.counter_payments)
    t0 = timeline.kill_at
    gap = seen.outage(t0)
    failover = gap[1] - t0 if gap else float("nan")
    outage = gap[1] - gap[0] if gap else float("nan")
    last = gap[0] - t0 if gap else float("nan")
    promoted = (timeline.promoted_at - t0) if timeline.promoted_at else float("nan")
    fault = (
        f"killed {timeline.old_leader} (Patroni, postmaster and {len(timeline.killed) - 2} children, SIGKILL)"
        if which == "kill"
        else f"cut {timeline.old_leader} off etcd (its namespace: frames to etcd dropped both ways)"
    )
    print(f"== {which}: {fault} after {args.before} s of load")
    print(
        f"{args.tablets} tablets ({args.households * 10} mutations a push), {COUNTERS} counters and "
        f"{args.sim_tablets} simulator tablets; canbao serve --workers 2; retries wait at most {args.retry_cap} s; "
        f"load average {load_average()}"
    )
    print(
        f"synchronous standby before the fault: {timeline.sync_standby}; Patroni named {timeline.new_leader} "
        f"leader after {promoted:.1f} s; last write before the outage at +{last:.1f} s, "
        f"first after it at +{failover:.1f} s (no write acknowledged for {outage:.1f} s); members at the end: {alive}"
    )
    if which == "cut":
        rejoin = (timeline.rejoined_at - timeline.healed_at) if timeline.rejoined_at and timeline.healed_at else None
        print(
            f"old leader during the cut: in recovery (refuses writes) {timeline.old_in_recovery}; rows it held that "
            f"the new primary lacks: {timeline.only_on_old}; after healing it rejoined as a replica in "
            + (f"{rejoin:.1f} s" if rejoin is not None else "— (not within 60 s)")
        )
        if timeline.old_in_recovery is not True:
            book.problems.append("the old leader was still writable during the cut")
        if any(timeline.only_on_old.values()):
            book.problems.append(f"split brain: rows only on the old primary {timeline.only_on_old}")
        if rejoin is None:
            book.problems.append("the old leader did not rejoin after healing")
    print(
        f"acknowledged: {len(book.mutations)} mutations ({len(book.households)} households, "
        f"{len(book.tablet_payments)} tablet payments), {len(book.counter_payments)} counter payments; "
        f"never acknowledged: {len(book.unacknowledged_pushes)} pushes, {len(book.unacknowledged_payments)} payments"
    )
    print(f"unavailable answers seen by the clients: {dict(seen.unavailable) or 'none'}")
    print(
        f"checked on the new primary: lost {found['lost']}, duplicated {found['duplicated']}, "
        f"half-applied {found['half_applied']}; {audit}"
    )
    failed = [r.name for r in timeline.sim if r.failed]
    print(
        f"simulator invariants: {sum(r.checked for r in timeline.sim)} checked, {len(failed)} failed "
        f"({timeline.sim_try_again} 503 try_again answers to its tablets during the outage)"
    )
    if failed:
        print(report(timeline.sim))
        book.problems.append(f"simulator invariants failed: {failed}")
    if not timeline.sim:
        book.problems.append("the simulator's invariants were not checked")
    job = f"{timeline.job_s:.1f} s" if timeline.job_s is not None else f"never (left {timeline.job_state})"
    print(f"a job stored after the failover ran in {job} (the worker polls every 60 s: LISTEN again)")
    if timeline.job_s is None or timeline.job_s > 10:
        book.problems.append(f"the job stored after the failover took {job}")
    if timeline.new_leader != timeline.sync_standby:
        book.problems.append(f"promoted {timeline.new_leader}, not the synchronous standby {timeline.sync_standby}")
    if leftovers:
        book.problems.append(f"processes left running: {leftovers}")
    for problem in book.problems[:20]:
        print(f"PROBLEM: {problem}")
    unavailable = sum(n for k, n in seen.unavailable.items() if k.startswith("503"))
    figures = (
        f"{which}: failover_s={failover:.1f} outage_s={outage:.1f} promoted_s={promoted:.1f} "
        f"acknowledged={acknowledged} lost={found['lost']} duplicated={found['duplicated']} "
        f"half_applied={found['half_applied']} try_again_503={unavailable}"
    )
    print(figures, flush=True)
    ok = not book.problems and found == {"lost": 0, "duplicated": 0, "half_applied": 0}
    return ok, figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=("kill", "cut", "both"), default="both")
    p.add_argument("--port-offset", type=int, default=0, help="CANBAO_CLUSTER_PORT_OFFSET for cluster.sh")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' and nodes' logs")
    p.add_argument("--tablets", type=int, default=10)
    p.add_argument("--households", type=int, default=2, help="visits per push (10 mutations each)")
    p.add_argument("--sim-tablets", type=int, default=3, help="the simulator's tablets, beside the pushing ones")
    p.add_argument("--seed", type=int, default=21, help="the simulator's dice")
    p.add_argument("--before", type=float, default=15, help="seconds of load before the fault")
    p.add_argument("--after", type=float, default=20, help="seconds of load once Patroni named a new leader")
    p.add_argument("--max-outage", type=float, default=120, help="give up waiting for a write after the fault")
    p.add_argument("--give-up", type=float, default=60, help="seconds a client keeps retrying after the load ends")
    p.add_argument("--retry-cap", type=float, default=1.0, help="longest wait before a retry (Retry-After is 5)")
    p.add_argument("--counter-households", type=int, default=10_000, help="households loaded for the counters")
    args = p.parse_args()
    if missing := missing_tools():
        print(f"skipped: {', '.join(missing)} not installed (apt-get install -y patroni etcd-server postgresql-15)")
        return 0
    if os.geteuid() != 0:
        print("skipped: needs root (network namespaces; the nodes run as postgres)")
        return 0
    if taken := ports_taken(args.port_offset):
        print(f"cannot run: ports {taken} are in use (another cluster.sh cluster? --port-offset)", file=sys.stderr)
        return 1
    exit_on_signals()
    results = [scenario(args, which) for which in (("kill", "cut") if args.scenario == "both" else (args.scenario,))]
    print(" | ".join(figures for _, figures in results))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
