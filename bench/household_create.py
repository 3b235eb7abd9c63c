"""Households of 4 with their enrolments, through the full stack, against a bare endpoint.

Ours: as a township staff member, POST /api/v1/households with 4 members and `enrol_year` 2026: the
household, its people and their enrolments (with the query code, audit, scope, identity and enrolment
rules) in one request and one transaction, as staff register a household at the door.
Baseline (baseline_household_app.py): one request writing the same rows in one transaction.
Both under uvicorn with the same workers and pool size, on the same embedded PostgreSQL, at 16
connections, measured in alternating rounds. Last line: ratio=ours/baseline households per second.

    python bench/household_create.py            # full: 2 rounds of 30 s each side, ~3 minutes
    python bench/household_create.py --quick    # CI: a few seconds of each
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys

import asyncpg
from _harness import (
    TOWNSHIP_A_VILLAGES,
    Amount,
    CpuMeter,
    Database,
    Load,
    Server,
    Side,
    baseline_server,
    canbao_server,
    compare,
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
from _http import Client

CONNECTIONS = 16
YEAR = 2026
MEMBERS = (("王建国", "head"), ("李秀英", "spouse"), ("王小明", "child"), ("王小红", "child"))


def household(n: int, area: str) -> dict[str, object]:
    """The n-th household: a unique number, 4 members with unique identity numbers."""
    return {
        "village_code": TOWNSHIP_A_VILLAGES[n % len(TOWNSHIP_A_VILLAGES)],
        "household_no": f"bench-{n}",
        "members": [
            {"name": name, "relation": relation, "id_number": resident_id(4 * n + i, area)}
            for i, (name, relation) in enumerate(MEMBERS)
        ],
    }


async def measure(
    ours: Server, bare: Server, db: Database, headers: dict[str, str], area: str, quick: bool
) -> tuple[dict[str, Load], int]:
    numbers = itertools.count()  # shared by both sides: they write to the same tables

    async def ours_unit(client: Client, _: int) -> None:
        body = {**household(next(numbers), area), "enrol_year": YEAR}
        created = expect(await client.post("/api/v1/households", json=body, headers=headers), 201).json()
        if not created["query_code"] or any(m["enrollment"]["status"] != "registered" for m in created["members"]):
            raise RuntimeError(f"household {created['id']} was not enrolled: {created}")

    async def baseline_unit(client: Client, _: int) -> None:
        expect(await client.post("/households", json={**household(next(numbers), area), "coverage_year": YEAR}), 201)

    sides = [
        Side("ours", ours.url, ours_unit, CpuMeter(ours, db)),
        Side("baseline", bare.url, baseline_unit, CpuMeter(bare, db)),
    ]
    if quick:
        loads = await compare(
            sides, CONNECTIONS, rounds=1, warmup=Amount(seconds=0.5), phase=Amount(seconds=2), what="households"
        )
    else:
        loads = await compare(
            sides, CONNECTIONS, rounds=2, warmup=Amount(seconds=5), phase=Amount(seconds=30), what="households"
        )
    # Every number taken is a household written: any failed request has stopped the run.
    return loads, next(numbers)


async def check_rows(dsn: str, written: int) -> None:
    """Every household written is there with its 4 persons, memberships and live enrolments."""
    conn = await asyncpg.connect(dsn)
    try:
        found = tuple(
            await conn.fetchrow(
                "SELECT count(DISTINCT h.id), count(DISTINCT p.id), count(DISTINCT m.id), count(DISTINCT e.id)"
                " FROM households h JOIN memberships m ON m.household_id = h.id AND m.left_at IS NULL"
                " JOIN persons p ON p.id = m.person_id LEFT JOIN enrollments e ON e.person_id = p.id"
                " AND e.coverage_year = $1 AND e.status = 'registered' WHERE h.household_no LIKE 'bench-%'",
                YEAR,
            )
            or ()
        )
    finally:
        await conn.close()
    expected = (written, 4 * written, 4 * written, 4 * written)
    if found != expected:
        raise RuntimeError(f"rows written (households, persons, memberships, enrolments) {found}, expected {expected}")
    log(f"checked: {written} households, each with 4 persons, memberships and enrolments")


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_household_app", db.dsn, work))
        ensure_policy(ours.url, YEAR)
        headers = login(ours.url, "staff_a")
        area = unused_area(db.dsn)
        loads, written = asyncio.run(measure(ours, bare, db, headers, area, args.quick))
        asyncio.run(check_rows(db.dsn, written))
    print(f"households of 4 with their enrolments; {CONNECTIONS} connections; load average {load_average()}")
    for name, load in loads.items():
        print(
            f"{name}: {load.units} households in {load.seconds:.1f} s = {load.rate:.1f} households/s; "
            f"per household p50={load.percentile(50):.1f}ms p99={load.percentile(99):.1f}ms; "
            f"cpu ms per household: {load.cpu_per_unit()}"
        )
    ours_rate, base_rate = loads["ours"].rate, loads["baseline"].rate
    print(f"ratio={ours_rate / base_rate:.2f} ours={ours_rate:.0f}/s baseline={base_rate:.0f}/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
