"""Payments recorded exactly once, through the full stack, against a bare endpoint; then every
request again, which must change nothing.

Households of 2, both members enrolled for 2026, are loaded straight into PostgreSQL (not
measured); reviewer_a issues staff_a one receipt block per side through the API. Ours: staff_a
POST /api/v1/payments with an Idempotency-Key, 80000 fen in cash for both members (payment,
allocations, key and answer, both enrolments made paid, audit). Baseline
(baseline_payments_app.py): one request writing the payment, allocation and key rows in one
transaction. Both under uvicorn with the same workers and pool size, at 16 connections, in
alternating rounds; every payment is for a household of its own, since a household is paid once.
Then every request ours answered is sent again, same key and body: each must answer 201 with
`Idempotent-Replayed: true` and the first answer's body (compared by hash), and no payment,
allocation or key row may appear. Last line: ratio = ours/baseline payments per second.

    python bench/payments.py            # full: 200 + 10,000 payments each side, then 10,200 replays, ~2 minutes
    python bench/payments.py --quick    # CI: 32 + 300 payments each side, then 332 replays, seconds
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
from _harness import (
    JWT_SECRET,
    TOWNSHIP_A_VILLAGES,
    Amount,
    CpuMeter,
    Database,
    Load,
    Server,
    Side,
    baseline_server,
    business_now,
    canbao_server,
    compare,
    database,
    ensure_policy,
    exit_on_signals,
    expect,
    keys,
    load_average,
    log,
    login,
    parse_args,
    resident_id,
    run_load,
    unused_area,
    workdir,
)
from _http import Client

from backend.crypto import ID_NUMBER
from mobile_sync_protocol.query_codes import derive_query_code, query_code_hash

CONNECTIONS = 16
YEAR = 2026
TIMEZONE = ZoneInfo("Asia/Shanghai")  # Canbao's default CANBAO_TIMEZONE: business dates are local
MEMBERS = (("赵建华", "head"), ("钱桂兰", "spouse"))
PREFIX = {"ours": "B", "baseline": "C"}  # a receipt block per side: numbers never clash
TABLES = ("payments", "payment_allocations", "idempotency_keys")


@dataclass(frozen=True)
class Household:
    id: UUID
    person_ids: list[UUID]


@dataclass(frozen=True)
class Plan:
    """Payments per side: a warm-up, then `rounds` measured phases of `phase` each (alternating sides)."""

    rounds: int
    warmup: int
    phase: int

    @property
    def per_side(self) -> int:
        return self.warmup + self.rounds * self.phase  # each payment takes a household of its side


QUICK = Plan(rounds=1, warmup=32, phase=300)
FULL = Plan(rounds=2, warmup=200, phase=5000)


@dataclass(frozen=True)
class Setup:
    staff: dict[str, str]  # staff_a's Authorization header
    collector_id: str  # staff_a, to whom both receipt blocks are issued
    baseline_block_id: str  # the baseline has no auth: it is told the block
    amount_fen: int  # the premium of both members
    households: dict[str, list[Household]]  # per side


@dataclass(frozen=True)
class Sent:
    """A request ours answered for the first time, and the hash of that answer."""

    key: str
    content: bytes
    digest: bytes


async def load_households(dsn: str, count: int, area: str, policy: dict[str, Any]) -> list[Household]:
    """`count` households of 2 in township A, both members registered for YEAR under `policy`,
    each with its query code: the rows `POST /api/v1/enrollments` leaves (less its audit rows)."""
    today = business_now().astimezone(TIMEZONE).date()
    code_key = JWT_SECRET.encode()  # Canbao derives query codes from its signing key
    rows: dict[str, list[tuple[Any, ...]]] = {
        t: [] for t in ("persons", "households", "memberships", "enrollments", "household_query_codes")
    }
    keyring = keys()  # the server's: numbers are stored sealed, found by their blind index
    households = []
    for n in range(count):
        hid, village, pids = uuid4(), TOWNSHIP_A_VILLAGES[n % len(TOWNSHIP_A_VILLAGES)], [uuid4() for _ in MEMBERS]
        rows["households"].append((hid, village, f"pay-{n}", pids[0]))
        for i, ((name, relation), pid) in enumerate(zip(MEMBERS, pids, strict=True)):
            number = resident_id(len(MEMBERS) * n + i, area)
            born = datetime.strptime(number[6:14], "%Y%m%d").date()
            rows["persons"].append(
                (pid, keyring.index(ID_NUMBER, number), keyring.seal(ID_NUMBER, number), name, sex(number), born)
            )
            rows["memberships"].append((uuid4(), pid, hid, relation))
            rows["enrollments"].append(
                (uuid4(), pid, hid, village, YEAR, "registered", UUID(policy["id"]), today, policy["premium_fen"])
            )
        code = derive_query_code(code_key, hid, YEAR)
        rows["household_query_codes"].append((hid, YEAR, query_code_hash(code_key, hid, YEAR, code)))
        households.append(Household(hid, pids))
    columns = {
        "persons": ("id", "id_number_hash", "id_number_enc", "name", "sex", "birth_date"),
        "households": ("id", "village_code", "household_no", "head_person_id"),
        "memberships": ("id", "person_id", "household_id", "relation"),
        "enrollments": (
            "id",
            "person_id",
            "household_id",
            "village_code",
            "coverage_year",
            "status",
            "policy_version_id",
            "registered_on",
            "premium_fen",
        ),
        "household_query_codes": ("household_id", "coverage_year", "code_hash"),
    }
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():  # in this order: each table's foreign keys point to those before it
            for table, records in rows.items():
                await conn.copy_records_to_table(table, records=records, columns=columns[table])
        await conn.execute("VACUUM (ANALYZE) persons, households, memberships, enrollments, household_query_codes")
        log(f"loaded {count} households of 2 with their enrolments in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()
    return households


def sex(number: str) -> str:
    return "male" if int(number[16]) % 2 else "female"


async def user_id(dsn: str, username: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT id FROM users WHERE username = $1", username))
    finally:
        await conn.close()


async def count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await conn.close()


async def check_rows(dsn: str, ours: list[Household], paid: int, baseline_paid: int) -> None:
    """Each side wrote a payment, an allocation per member and a key per request; ours made the
    enrolments of the households it paid `paid` (all of its side's)."""
    conn = await asyncpg.connect(dsn)
    try:
        found = tuple(
            await conn.fetchrow(
                "SELECT (SELECT count(*) FROM payments WHERE receipt_no LIKE $2 || '%'),"
                " (SELECT count(*) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id"
                "  WHERE p.receipt_no LIKE $2 || '%'),"
                " (SELECT count(*) FROM idempotency_keys WHERE route = 'POST /api/v1/payments'),"
                " (SELECT count(*) FROM enrollments WHERE household_id = ANY($1::uuid[]) AND status = 'paid'),"
                " (SELECT count(*) FROM payments WHERE receipt_no LIKE $3 || '%'),"
                " (SELECT count(*) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id"
                "  WHERE p.receipt_no LIKE $3 || '%'),"
                " (SELECT count(*) FROM idempotency_keys WHERE route = 'POST /payments')",
                [h.id for h in ours],
                PREFIX["ours"],
                PREFIX["baseline"],
            )
            or ()
        )
    finally:
        await conn.close()
    m = len(MEMBERS)
    expected = (paid, m * paid, paid, m * paid, baseline_paid, m * baseline_paid, baseline_paid)
    if found != expected:
        raise RuntimeError(
            "rows (ours: payments, allocations, keys, enrolments paid; baseline: payments, allocations, keys) "
            f"{found}, expected {expected}"
        )
    log(f"checked: ours {paid} payments, baseline {baseline_paid}, each with {m} allocations and a key")


async def measure(
    ours: Server, bare: Server, db: Database, setup: Setup, plan: Plan
) -> tuple[dict[str, Load], list[Sent]]:
    queue: dict[str, Iterator[Household]] = {side: iter(h) for side, h in setup.households.items()}
    numbers = {side: itertools.count(1) for side in PREFIX}
    sent: list[Sent] = []

    def payment(side: str) -> dict[str, Any]:
        household = next(queue[side])
        return {
            "id": uuid4(),
            "household_id": household.id,
            "coverage_year": YEAR,
            "person_ids": household.person_ids,
            "amount_fen": setup.amount_fen,
            "method": "cash",
            "receipt_no": f"{PREFIX[side]}{next(numbers[side]):08d}",
            "collected_at": business_now().astimezone(TIMEZONE),
            # Collected today for YEAR: after its window the cover may fall past the year's end, and the
            # resident's word is recorded (issue 17's rule; the same write either way).
            "acknowledge_no_cover": True,
        }

    async def ours_unit(client: Client, _: int) -> None:
        key, content = f"bench-{uuid4()}", msgspec.json.encode(payment("ours"))
        headers = setup.staff | {"Idempotency-Key": key, "Content-Type": "application/json"}
        answer = expect(await client.post("/api/v1/payments", content=content, headers=headers), 201)
        receipt = msgspec.json.decode(answer.content)
        if "Idempotent-Replayed" in answer.headers:
            raise RuntimeError("a new key's first answer says Idempotent-Replayed")
        if len(receipt["enrollments_paid"]) != len(MEMBERS) or not receipt["query_code"]:
            raise RuntimeError(
                f"a receipt paid {len(receipt['enrollments_paid'])} enrolments, not {len(MEMBERS)}, "
                f"or lacks the query code ({receipt['query_code'] is not None})"
            )
        sent.append(Sent(key, content, hashlib.sha256(answer.content).digest()))

    async def baseline_unit(client: Client, _: int) -> None:
        body = payment("baseline") | {"collector_id": setup.collector_id, "receipt_block_id": setup.baseline_block_id}
        headers = {"Idempotency-Key": f"bench-{uuid4()}", "Content-Type": "application/json"}
        expect(await client.post("/payments", content=msgspec.json.encode(body), headers=headers), 201)

    sides = [
        Side("ours", ours.url, ours_unit, CpuMeter(ours, db)),
        Side("baseline", bare.url, baseline_unit, CpuMeter(bare, db)),
    ]
    loads = await compare(
        sides,
        CONNECTIONS,
        rounds=plan.rounds,
        warmup=Amount(units=plan.warmup),
        phase=Amount(units=plan.phase),
        what="payments",
    )
    return loads, sent


async def replay(ours: Server, db: Database, staff: dict[str, str], sent: list[Sent]) -> Load:
    """Every request ours answered, again: the first answer back, marked as a replay."""
    pending = iter(sent)

    async def unit(client: Client, _: int) -> None:
        first = next(pending)
        headers = staff | {"Idempotency-Key": first.key, "Content-Type": "application/json"}
        answer = expect(await client.post("/api/v1/payments", content=first.content, headers=headers), 201)
        if answer.headers.get("Idempotent-Replayed") != "true":
            raise RuntimeError("a replay came without Idempotent-Replayed: true")
        if hashlib.sha256(answer.content).digest() != first.digest:
            raise RuntimeError("a replay's body differs from the first answer's")  # receipts carry query codes

    return await run_load(ours.url, CONNECTIONS, unit, units=len(sent), meter=CpuMeter(ours, db))


def prepare(ours: Server, dsn: str, per_side: int) -> Setup:
    """The policy, the households of each side, and a receipt block per side issued to staff_a."""
    ensure_policy(ours.url, YEAR)
    admin = login(ours.url, "admin")
    policy = expect(httpx.get(f"{ours.url}/api/v1/policy-years/{YEAR}", headers=admin, timeout=30), 200).json()
    if policy["current"] is None:
        raise RuntimeError(f"no {YEAR} policy in force today")
    loaded = asyncio.run(load_households(dsn, 2 * per_side, unused_area(dsn), policy["current"]))
    collector_id = asyncio.run(user_id(dsn, "staff_a"))
    reviewer = login(ours.url, "reviewer_a")
    blocks = {}
    for side, prefix in PREFIX.items():
        block = {"collector_id": collector_id, "prefix": prefix, "first_no": 1, "last_no": 99999, "digits": 8}
        issued = httpx.post(f"{ours.url}/api/v1/receipt-blocks", json=block, headers=reviewer, timeout=30)
        blocks[side] = expect(issued, 201).json()["id"]
    return Setup(
        staff=login(ours.url, "staff_a"),
        collector_id=collector_id,
        baseline_block_id=blocks["baseline"],
        amount_fen=len(MEMBERS) * policy["current"]["premium_fen"],
        households={"ours": loaded[:per_side], "baseline": loaded[per_side:]},
    )


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    plan = QUICK if args.quick else FULL
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_payments_app", db.dsn, work))
        setup = prepare(ours, db.dsn, plan.per_side)
        loads, sent = asyncio.run(measure(ours, bare, db, setup, plan))
        asyncio.run(check_rows(db.dsn, setup.households["ours"], len(sent), plan.per_side))
        before = asyncio.run(count_rows(db.dsn))
        replayed = asyncio.run(replay(ours, db, setup.staff, sent))
        after = asyncio.run(count_rows(db.dsn))
        if after != before:
            raise RuntimeError(f"the replays wrote rows: before {before}, after {after}")
        log(f"replayed {replayed.units} requests: each answered 201 with its first body; rows unchanged {after}")
    print(f"payments of 2 members with idempotency keys; {CONNECTIONS} connections; load average {load_average()}")
    for name, load in loads.items():
        print(
            f"{name}: {load.units} payments in {load.seconds:.1f} s = {load.rate:.1f} payments/s; "
            f"p50={load.percentile(50):.1f}ms p99={load.percentile(99):.1f}ms; "
            f"cpu ms per payment: {load.cpu_per_unit()}"
        )
    print(
        f"replay (ours): {replayed.units} requests in {replayed.seconds:.1f} s = {replayed.rate:.1f}/s; "
        f"p50={replayed.percentile(50):.1f}ms p99={replayed.percentile(99):.1f}ms; all 201, Idempotent-Replayed, "
        f"first body; rows unchanged: " + ", ".join(f"{t} {n}" for t, n in after.items())
    )
    ours_rate, base_rate = loads["ours"].rate, loads["baseline"].rate
    print(f"ratio={ours_rate / base_rate:.2f} ours={ours_rate:.0f}/s baseline={base_rate:.0f}/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
