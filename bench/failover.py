"""The primary dies under load (issue 21 point 4): a three-node Patroni cluster on this machine
(deploy/cluster/cluster.sh), `canbao serve --workers 2` on its multi-host DSN, 10 tablets pushing and
4 counters taking payments; mid-load the leader node is killed (`kill -9` of its Patroni, its
postmaster and the postmaster's children, as when the machine dies), Patroni promotes a standby and
the load goes on. Not a CI benchmark: it needs `apt-get install -y patroni etcd-server postgresql-15`,
root (the nodes run as `postgres`) and the ports of cluster.sh free; bench/run_quick.sh leaves it out.

Setup (not timed): the cluster; roles canbao_owner and canbao_app and database canbao made on the
leader; `canbao migrate` and `canbao demo seed` through the multi-host DSNs (as an operator would);
households for the counters copied in (bench/payments.py's loader); 10 tablet users with registered
devices and receipt blocks (bench/sync_concurrent_push.py's), 4 counter users in township A with a
receipt block each.

Load: each tablet pushes batches of `--households` visits (10 mutations each: a household, 3 members,
an update, 4 enrolments, a payment); each counter POSTs /api/v1/payments with an Idempotency-Key,
one household after the other. A client that gets 503 (or loses its connection) sends the same
request again — same body, same key, same sequence numbers — after the answer's Retry-After, at most
`--retry-cap` seconds (default 1 s, so that the figure is the cluster's and not the clients' back-off).
`--before` seconds after the load starts the leader is killed; the load goes on until `--after`
seconds after the first write that succeeded after the kill; then each client finishes what it is
sending (given up after `--give-up` seconds).

Checked, reading the new primary's tables directly: every acknowledged mutation is in the ledger
once, applied, and its household, members, enrolments (paid) and payment are there once; every
device's ledger is 1…last_seq without a gap; every acknowledged counter payment is there once with
its allocations, key and paid enrolments; no household has two payments for the year; a request
never acknowledged (cut by --give-up) is all there or not at all; no payment lacks allocations;
`canbao audit verify` passes. Reported: seconds from the kill to Patroni's new leader and to the
first successful write, 503 answers and lost connections seen by the clients. Last line:
`failover_s=… acknowledged=… lost=0 duplicated=0`.

    python bench/failover.py                  # as root; about 2 minutes
    python bench/failover.py --keep-logs      # keep the servers' and nodes' logs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from datetime import datetime
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
    ensure_policy,
    exit_on_signals,
    expect,
    free_port,
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

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

CLUSTER_SH = REPO / "deploy" / "cluster" / "cluster.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
NODES = {f"node{n}": (5440 + n, 8010 + n) for n in (1, 2, 3)}  # name: (PostgreSQL port, Patroni REST port)
PORTS = (2379, 2380, *(p for pair in NODES.values() for p in pair))
SUPERUSER = "postgres:cluster-superuser"  # cluster.sh's
OWNER_PASSWORD, APP_PASSWORD = "failover-owner", "failover-app"
HOSTS = ",".join(f"127.0.0.1:{pg}" for pg, _ in NODES.values())
YEAR = 2026
COUNTERS = 4
COUNTER_PREFIXES = ("CA", "CB", "CC", "CD")
TOWNSHIP_A = "330106001000"


def dsn(userinfo: str, database: str) -> str:
    return f"postgresql://{userinfo}@{HOSTS}/{database}?target_session_attrs=read-write"


ADMIN_DSN = dsn(SUPERUSER, "canbao")
OWNER_DSN = dsn(f"canbao_owner:{OWNER_PASSWORD}", "canbao")
APP_DSN = dsn(f"canbao_app:{APP_PASSWORD}", "canbao")


def missing_tools() -> list[str]:
    return [t for t in ("patroni", "etcd", str(PG_BIN / "postgres")) if shutil.which(t) is None]


def ports_taken() -> list[int]:
    taken = []
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


@contextlib.contextmanager
def cluster(folder: Path, keep_logs: bool) -> Iterator[Path]:
    """cluster.sh start, and always stop (every process, the folder)."""
    started = time.monotonic()
    try:
        subprocess.run(["sh", str(CLUSTER_SH), "start", str(folder)], check=True, capture_output=True, timeout=300)
        log(f"cluster up in {folder} ({time.monotonic() - started:.1f} s)")
        yield folder
    finally:
        if keep_logs:
            target = Path(tempfile.mkdtemp(prefix="canbao-failover-logs-"))
            for logfile in folder.glob("*.log"):
                shutil.copy(logfile, target / logfile.name)
            log(f"nodes' logs kept in {target}")
        stopped = subprocess.run(
            ["sh", str(CLUSTER_SH), "stop", str(folder)], capture_output=True, timeout=120, check=False
        )
        log(f"cluster stopped ({stopped.returncode}): {stopped.stdout.decode().strip()}")


def members() -> list[dict[str, Any]]:
    """Patroni's view of the cluster, from the first node whose REST API answers."""
    for _, rest in NODES.values():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found: list[dict[str, Any]] = httpx.get(f"http://127.0.0.1:{rest}/cluster", timeout=1).json()["members"]
            return found
    return []


def leader() -> str | None:
    return next((mm["name"] for mm in members() if mm["role"] == "leader" and mm["state"] == "running"), None)


def kill_node(folder: Path, name: str) -> list[int]:
    """SIGKILL to the node's Patroni, its postmaster and the postmaster's children, all at once."""
    patroni = int((folder / f"{name}.pid").read_text().split()[0])
    postmaster = int((folder / name / "postmaster.pid").read_text().split()[0])
    victims = [psutil.Process(patroni), psutil.Process(postmaster), *psutil.Process(postmaster).children(True)]
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return [p.pid for p in victims]


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
    hard_stop: float = float("inf")


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
        household, number = next(queue), number + 1
        payment = {
            "id": str(uuid.uuid4()),
            "household_id": str(household.id),
            "coverage_year": YEAR,
            "person_ids": [str(p) for p in household.person_ids],
            "amount_fen": amount_fen,
            "method": "cash",
            "receipt_no": f"{prefix}{number:08d}",
            "collected_at": datetime.now(TIMEZONE).isoformat(),
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
    old_leader: str = ""
    new_leader: str = ""
    kill_at: float = 0.0
    promoted_at: float | None = None
    killed: list[int] = field(default_factory=list)


async def load(
    url: str, folder: Path, tablets: list[Tablet], people: People, counters: list[tuple[str, dict[str, str]]],
    queue: Iterator[Household], amount_fen: int, args: argparse.Namespace,
) -> tuple[Counters, Ledger, Timeline]:  # fmt: skip
    seen, book, timeline = Counters(), Ledger(), Timeline()
    stop, stop_watch = asyncio.Event(), asyncio.Event()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        clients = [
            asyncio.create_task(tablet_loop(http, t, people, args.households, stop, seen, book, args.retry_cap))
            for t in tablets
        ] + [
            asyncio.create_task(counter_loop(http, prefix, staff, queue, amount_fen, stop, seen, book, args.retry_cap))
            for prefix, staff in counters
        ]
        await asyncio.sleep(args.before)
        writes_before = seen.writes
        timeline.old_leader = await asyncio.to_thread(leader) or "?"
        timeline.kill_at = seen.kill_at = time.monotonic()
        timeline.killed = kill_node(folder, timeline.old_leader)
        log(f"killed {timeline.old_leader} (pids {timeline.killed}) after {writes_before} writes")
        watcher = asyncio.create_task(watch_leader(timeline.old_leader, stop_watch))
        deadline = timeline.kill_at + args.max_outage
        while seen.first_write_after_kill is None and time.monotonic() < deadline:
            if all(c.done() for c in clients):
                break
            await asyncio.sleep(0.1)
        if seen.first_write_after_kill is None:
            book.problems.append(f"no write succeeded within {args.max_outage} s of the kill")
        else:
            log(f"first write {seen.first_write_after_kill - timeline.kill_at:.1f} s after the kill")
            await asyncio.sleep(args.after)
        stop.set()
        seen.hard_stop = time.monotonic() + args.give_up
        stop_watch.set()
        timeline.promoted_at = await watcher
        timeline.new_leader = await asyncio.to_thread(leader) or "?"
        for task in clients:
            with contextlib.suppress(Exception):
                await task
        for task in clients:
            if task.exception() is not None:
                book.problems.append(f"a client failed: {task.exception()!r}")
    return seen, book, timeline


async def verify(book: Ledger) -> dict[str, int]:
    """Reads the new primary's tables. Returns lost/duplicated/half-applied counts and problems in book."""
    db = await asyncpg.connect(ADMIN_DSN)
    try:
        found: dict[str, int] = {"lost": 0, "duplicated": 0, "half_applied": 0}
        # Tablets: the ledger holds each acknowledged mutation once, applied.
        ids = [mid for _, _, mid in book.mutations]
        rows = await db.fetch(
            "SELECT mutation_id, count(*) AS n, bool_and(status IN ('applied', 'duplicate')) AS ok"
            " FROM sync_mutations WHERE mutation_id = ANY($1::uuid[]) GROUP BY mutation_id",
            ids,
        )
        in_ledger = {r["mutation_id"]: r for r in rows}
        found["lost"] += sum(1 for i in ids if i not in in_ledger)
        found["duplicated"] += sum(r["n"] - 1 for r in rows)
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
        # Their households: there once, 4 members, 4 enrolments paid, one payment of 4 allocations.
        shape = await db.fetch(
            """
            SELECT h.id,
                   (SELECT count(*) FROM memberships ms WHERE ms.household_id = h.id) AS members,
                   (SELECT count(*) FROM enrollments e WHERE e.household_id = h.id AND e.coverage_year = $2
                      AND e.status = 'paid') AS paid,
                   (SELECT count(*) FROM payments p WHERE p.household_id = h.id AND p.coverage_year = $2) AS payments,
                   (SELECT count(*) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id
                      WHERE p.household_id = h.id) AS allocations
            FROM households h WHERE h.id = ANY($1::uuid[])
            """,
            book.households,
            YEAR,
        )
        found["lost"] += len(book.households) - len(shape)
        for row in shape:
            if row["payments"] > 1:
                found["duplicated"] += row["payments"] - 1
            if (row["members"], row["paid"], row["payments"], row["allocations"]) != (4, 4, 1, 4):
                book.problems.append(f"household {row['id']}: {dict(row)}")
        # No household of the tablets' beyond those acknowledged (every push was acknowledged in the
        # end, or is counted below as never acknowledged): a retry never made a second one.
        registered = await db.fetchval("SELECT count(*) FROM households WHERE household_no LIKE 'fo%'")
        unacknowledged = sum(
            1 for push in book.unacknowledged_pushes for mu in push if isinstance(mu, m.HouseholdCreate)
        )
        found["duplicated"] += max(0, registered - len(book.households) - unacknowledged)
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
            found["duplicated"] += row["for_household"] - 1
            if (row["allocations"], row["paid"]) != (len(COUNTER_MEMBERS), len(COUNTER_MEMBERS)):
                book.problems.append(f"payment {row['id']}: {dict(row)}")
        keys = await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE route = 'POST /api/v1/payments' AND key = ANY($1::text[])",
            [p["key"] for p in book.counter_payments],
        )
        if keys != len(paid):
            book.problems.append(f"{keys} idempotency keys for {len(paid)} acknowledged payments")
        receipts = await db.fetchval("SELECT count(*) - count(DISTINCT (receipt_block_id, receipt_no)) FROM payments")
        found["duplicated"] += receipts
        extra = await db.fetchval(
            "SELECT count(*) FROM payments WHERE household_id = ANY($1::uuid[]) AND NOT id = ANY($2::uuid[])",
            households,
            paid,
        )
        found["duplicated"] += extra
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' and nodes' logs")
    p.add_argument("--tablets", type=int, default=10)
    p.add_argument("--households", type=int, default=2, help="visits per push (10 mutations each)")
    p.add_argument("--before", type=float, default=15, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=20, help="seconds of load after the first write after the kill")
    p.add_argument("--max-outage", type=float, default=120, help="give up waiting for a write after the kill")
    p.add_argument("--give-up", type=float, default=60, help="seconds a client keeps retrying after the load ends")
    p.add_argument("--retry-cap", type=float, default=1.0, help="longest wait before a retry (Retry-After is 5)")
    p.add_argument("--counter-households", type=int, default=10_000, help="households loaded for the counters")
    args = p.parse_args()
    if missing := missing_tools():
        print(f"skipped: {', '.join(missing)} not installed (apt-get install -y patroni etcd-server postgresql-15)")
        return 0
    if taken := ports_taken():
        print(f"cannot run: ports {taken} are in use (another cluster.sh cluster?)", file=sys.stderr)
        return 1
    exit_on_signals()
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="canbao-failover-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        # Its own folder, which cluster.sh gives to the `postgres` user (and deletes when it stops).
        folder = stack.enter_context(cluster(Path(tempfile.mkdtemp(prefix="canbao-failover-cluster-")), args.keep_logs))
        asyncio.run(prepare_database())
        env = server_env(APP_DSN) | {"CANBAO_OWNER_DATABASE_URL": OWNER_DSN}
        log(run_cli(["migrate"], env))
        run_cli(["demo", "seed"], env)
        port = free_port()
        argv = [CANBAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        ours: Server = stack.enter_context(server("canbao", argv, server_env(APP_DSN), port, work))
        if args.keep_logs:
            stack.callback(lambda: shutil.copy(ours.logfile, tempfile.mkdtemp(prefix="canbao-failover-serve-")))
        ensure_policy(ours.url, YEAR)
        admin = login(ours.url, "admin")
        policy = expect(httpx.get(f"{ours.url}/api/v1/policy-years/{YEAR}", headers=admin, timeout=30), 200).json()
        loaded = asyncio.run(
            load_households(ADMIN_DSN, args.counter_households, unused_area(ADMIN_DSN), policy["current"])
        )
        counters = counters_setup(ours.url)
        people = People(unused_area(ADMIN_DSN))
        tablets = setup_tablets(ours.url, args.tablets)
        log(f"{len(tablets)} tablets, {len(counters)} counters; load for {args.before} s, then the kill")
        amount = len(COUNTER_MEMBERS) * policy["current"]["premium_fen"]
        seen, book, timeline = asyncio.run(
            load(ours.url, folder, tablets, people, counters, iter(loaded), amount, args)
        )
        found = asyncio.run(verify(book))
        audit = run_cli(["audit", "verify"], server_env(APP_DSN))
        log(audit)
        alive = [mm["name"] for mm in members()]
    leftovers = [
        proc.pid for proc in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(proc.info["cmdline"] or [])
    ]
    acknowledged = len(book.mutations) + len(book.counter_payments)
    failover = (seen.first_write_after_kill - timeline.kill_at) if seen.first_write_after_kill else float("nan")
    promoted = (timeline.promoted_at - timeline.kill_at) if timeline.promoted_at else float("nan")
    print(
        f"{args.tablets} tablets ({args.households * 10} mutations a push) and {COUNTERS} counters; "
        f"canbao serve --workers 2; retries wait at most {args.retry_cap} s; load average {load_average()}"
    )
    print(
        f"killed {timeline.old_leader} (Patroni, postmaster and {len(timeline.killed) - 2} children, SIGKILL) "
        f"after {args.before} s of load; Patroni named {timeline.new_leader} leader after {promoted:.1f} s; "
        f"first successful write {failover:.1f} s after the kill; members at the end: {alive}"
    )
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
    if leftovers:
        book.problems.append(f"processes left running: {leftovers}")
    for problem in book.problems[:20]:
        print(f"PROBLEM: {problem}")
    unavailable = sum(n for k, n in seen.unavailable.items() if k.startswith("503"))
    print(
        f"failover_s={failover:.1f} promoted_s={promoted:.1f} acknowledged={acknowledged} lost={found['lost']} "
        f"duplicated={found['duplicated']} half_applied={found['half_applied']} try_again_503={unavailable}",
        flush=True,
    )
    ok = not book.problems and found == {"lost": 0, "duplicated": 0, "half_applied": 0}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
