"""One tablet push of 5,000 mutations through the sync endpoint, against a bare COPY of the same rows.

Ours: a registered tablet of staff_a (receipt block issued by reviewer_a) pushes, in one MessagePack
request, 500 households each made of 10 mutations: household.create with the head, 3 member.create,
a household.update (the phone noted at the end of the visit), an enrollment.create for each of the 4
members (coverage year 2026) and one payment.record of their 4 premiums. Every answer must be
`applied`. Then the same request again: every answer must be `duplicate` and no row may be added
anywhere. Baseline (baseline_sync_push_app.py): the same kind of
body (other households) written with one COPY per table in one transaction. Both under uvicorn with the
same workers and pool, on the same embedded PostgreSQL, in the same run; each side first pushes one
small warm-up batch. Last line: ratio=ours/baseline seconds (aim: ours < 2 s, ratio <= 10).

    python bench/sync_push.py            # 500 households = 5,000 mutations
    python bench/sync_push.py --quick    # CI: 20 households = 200 mutations
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
import uuid
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
    ensure_policy,
    exit_on_signals,
    expect,
    load_average,
    log,
    login,
    parse_args,
    resident_id,
    unused_area,
    workdir,
)

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

YEAR = 2026
PREMIUM = 40000
MEMBERS = (("王建国", "head"), ("李秀英", "spouse"), ("王小明", "child"), ("王小红", "child"))
# Tables a replay must leave as they are (the ledger and the audit trail included).
COUNTED = (
    "households",
    "persons",
    "memberships",
    "enrollments",
    "payments",
    "payment_allocations",
    "household_query_codes",
    "sync_mutations",
    "sync_quarantine",
    "sync_changes",
    "audit_log",
)


def tablet(base_url: str) -> tuple[uuid.UUID, dict[str, str]]:
    """A tablet registered by staff_a, its receipt block S00000001–S00010000, and its device-bound token."""
    staff = login(base_url, "staff_a")
    registered = expect(
        httpx.post(
            f"{base_url}/api/v1/devices", json={"model": "bench", "app_version": "1.0"}, headers=staff, timeout=30
        ),
        201,
    ).json()
    device_id = registered["device"]["id"]
    token = expect(
        httpx.post(
            f"{base_url}/api/v1/auth/login",
            timeout=30,
            json={
                "username": "staff_a",
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
        "prefix": "S",
        "first_no": 1,
        "last_no": 10_000,
    }
    expect(
        httpx.post(f"{base_url}/api/v1/receipt-blocks", json=block, headers=login(base_url, "reviewer_a"), timeout=30),
        201,
    )
    return uuid.UUID(device_id), {"Authorization": f"Bearer {token}", "Content-Type": m.MSGPACK}


def mutations(households: range, area: str, first_seq: int) -> list[m.AnyMutation]:
    out: list[m.AnyMutation] = []
    collected = business_now()
    seqs = itertools.count(first_seq)

    def ids() -> dict[str, Any]:
        return {"seq": next(seqs), "mutation_id": uuid.uuid4()}

    for n in households:
        household_id = uuid.uuid4()
        people = [
            m.NewMember(person_id=uuid.uuid4(), name=name, relation=relation, id_number=resident_id(4 * n + i, area))  # type: ignore[arg-type]
            for i, (name, relation) in enumerate(MEMBERS)
        ]
        out.append(
            m.HouseholdCreate(
                **ids(),
                household_id=household_id,
                household_no=f"sync-{n}",
                members=people[:1],
                village_code=TOWNSHIP_A_VILLAGES[n % len(TOWNSHIP_A_VILLAGES)],
            )
        )
        out += [
            m.MemberCreate(**ids(), household_id=household_id, base_version=1 + i, member=p)
            for i, p in enumerate(people[1:])
        ]
        out.append(m.HouseholdUpdate(**ids(), household_id=household_id, base_version=4, phone=f"138{n:08d}"))
        out += [
            m.EnrollmentCreate(**ids(), household_id=household_id, coverage_year=YEAR, person_ids=[p.person_id])
            for p in people
        ]
        out.append(
            m.PaymentRecord(
                **ids(),
                payment_id=uuid.uuid4(),
                household_id=household_id,
                coverage_year=YEAR,
                person_ids=[p.person_id for p in people],
                amount_fen=PREMIUM * 4,
                method="cash",
                receipt_no=f"S{n + 1:08d}",
                collected_at=collected,
                due_fen=PREMIUM * 4,
                acknowledge_no_cover=True,  # collected today: past the window, the resident's word is kept
            )
        )
    return out


def body(device_id: uuid.UUID, batch: list[m.AnyMutation]) -> bytes:
    raws = [msgspec.Raw(codec.encode(x, "msgpack")) for x in batch]
    return codec.encode(
        m.PushRequest(protocol_version=m.PROTOCOL_VERSION, device_id=device_id, mutations=raws), "msgpack"
    )


def post(url: str, content: bytes, headers: dict[str, str]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = httpx.post(url, content=content, headers=headers, timeout=600)
    return time.perf_counter() - started, response


def answers(response: httpx.Response, expected_status: str, count: int) -> None:
    pushed = codec.decode(expect(response, 200).content, m.PushResponse, "msgpack")
    wrong = [a for a in pushed.answers if a.status != expected_status]
    if len(pushed.answers) != count or wrong:
        raise RuntimeError(f"{len(pushed.answers)} answers, not all {expected_status}: {wrong[:3]}")


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in COUNTED}
    finally:
        await conn.close()


def measure(ours: Server, bare: Server, db: Database, quick: bool) -> dict[str, Any]:
    import asyncio

    ensure_policy(ours.url, YEAR)
    area = unused_area(db.dsn)
    households = 20 if quick else 500
    device_id, headers = tablet(ours.url)
    warm, main = mutations(range(1), area, 1), mutations(range(1, 1 + households), area, 11)
    answers(post(f"{ours.url}/api/v1/sync/push", body(device_id, warm), headers)[1], "applied", len(warm))
    payload = body(device_id, main)
    log(f"pushing {len(main)} mutations ({len(payload)} bytes) to canbao")
    meter = CpuMeter(ours, db)
    cpu = meter.sample()
    ours_s, response = post(f"{ours.url}/api/v1/sync/push", payload, headers)
    ours_cpu = meter.since(cpu)
    answers(response, "applied", len(main))
    before = asyncio.run(counts(db.dsn))
    replay_s, response = post(f"{ours.url}/api/v1/sync/push", payload, headers)
    answers(response, "duplicate", len(main))
    after = asyncio.run(counts(db.dsn))
    if before != after:
        raise RuntimeError(f"the replay changed rows: {before} -> {after}")
    log(f"replayed: {len(main)} duplicates in {replay_s:.2f} s, no row added ({before})")
    others = range(10_000, 10_001 + households)  # other households and receipt numbers than ours
    bare_batches = mutations(others[:1], area, 1), mutations(others[1:], area, 11)
    post(f"{bare.url}/push", body(device_id, bare_batches[0]), {"Content-Type": m.MSGPACK})
    meter = CpuMeter(bare, db)
    cpu = meter.sample()
    bare_s, response = post(f"{bare.url}/push", body(device_id, bare_batches[1]), {"Content-Type": m.MSGPACK})
    bare_cpu = meter.since(cpu)
    expect(response, 200)
    return {
        "mutations": len(main),
        "ours": ours_s,
        "baseline": bare_s,
        "replay": replay_s,
        "ours_cpu": ours_cpu,
        "bare_cpu": bare_cpu,
    }


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_sync_push_app", db.dsn, work))
        r = measure(ours, bare, db, args.quick)
    cpu = lambda used: " ".join(f"{k} {v:.2f}" for k, v in used.items())  # noqa: E731
    print(f"one push of {r['mutations']} mutations; load average {load_average()}")
    print(f"ours: {r['ours']:.2f} s = {r['mutations'] / r['ours']:.0f} mutations/s; cpu s: {cpu(r['ours_cpu'])}")
    print(f"replay of the same push: {r['replay']:.2f} s, all duplicate, no row added")
    print(f"baseline: {r['baseline']:.2f} s; cpu s: {cpu(r['bare_cpu'])}")
    print(f"ratio={r['ours'] / r['baseline']:.1f} ours={r['ours']:.2f}s baseline={r['baseline']:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
