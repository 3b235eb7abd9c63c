"""Resident login: does a wrong login take as long for an unknown person as for a known one?

A benchmark, not a test: it measures whether the time of `POST /api/v1/resident/login` tells an
attacker that an ID number is registered. Both kinds of attempt run against the same Canbao server
(uvicorn, one worker, the embedded PostgreSQL with the demo district), in the same run, one request
at a time (what a timing attacker would do), in interleaved pairs (one of each kind back to back,
alternating which goes first) so that other load on the machine falls on both alike:

- unknown: a valid ID number nobody holds, any name, any code;
- known_wrong_code: a registered person's ID number and name, with a wrong query code.

Both answer 401 with the same body (any other answer stops the run). Each side cycles through as
many distinct ID numbers, so both insert and update their attempt-count rows alike. The attempt
limits are raised for this server only (CANBAO_RESIDENT_MAX_FAILURES_*), or the lockout would
answer 429 after a few attempts; the code path measured is otherwise the one in production.
Last line: ratio = unknown p50 / known_wrong_code p50 (1.00: no difference).

    python bench/resident_login_timing.py            # full: 200 persons, 5000 pairs, about a minute
    python bench/resident_login_timing.py --quick    # CI: 20 persons, 300 pairs
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

import httpx
from _harness import (
    CANBAO,
    TOWNSHIP_A_VILLAGES,
    WORKERS,
    Load,
    Server,
    database,
    ensure_policy,
    exit_on_signals,
    expect,
    free_port,
    load_average,
    log,
    login,
    parse_args,
    resident_id,
    server,
    server_env,
    unused_area,
    workdir,
)

YEAR = 2026
NAME = "王建国"
WRONG_CODE = "ZZZZ2222"  # a well-formed code no household gets in this run (checked below)
LIMITS = {"CANBAO_RESIDENT_MAX_FAILURES_PER_ID": "100000000", "CANBAO_RESIDENT_MAX_FAILURES_PER_ADDRESS": "100000000"}


def canbao_server(dsn: str, work: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [CANBAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]
    return server("canbao", argv, server_env(dsn) | LIMITS, port, work)


def register(base_url: str, persons: int, area: str) -> None:
    """Persons 0 … persons-1 of `area`, each alone in a household enrolled for YEAR."""
    staff = login(base_url, "staff_a")
    with httpx.Client(base_url=base_url, headers=staff, timeout=60) as client:
        for n in range(persons):
            created = expect(
                client.post(
                    "/api/v1/households",
                    json={
                        "village_code": TOWNSHIP_A_VILLAGES[n % len(TOWNSHIP_A_VILLAGES)],
                        "household_no": f"login-{n}",
                        "members": [{"name": NAME, "relation": "head", "id_number": resident_id(n, area)}],
                    },
                ),
                201,
            ).json()
            enrolled = expect(
                client.post(
                    "/api/v1/enrollments",
                    json={
                        "household_id": created["id"],
                        "coverage_year": YEAR,
                        "person_ids": [created["members"][0]["person_id"]],
                    },
                ),
                201,
            ).json()
            if enrolled["query_code"] == WRONG_CODE:
                raise RuntimeError("a household got the code used as the wrong one; pick another")
    log(f"registered {persons} persons, each with an enrolled household")


async def measure(ours: Server, persons: int, area: str, quick: bool) -> dict[str, Load]:
    """Pairs of attempts, one of each kind back to back (which goes first alternates), on one
    keep-alive connection: whatever else the machine is doing falls on both kinds alike."""
    seen: dict[str, bytes] = {}
    loads = {"unknown": Load(), "known_wrong_code": Load()}
    offsets = {"unknown": persons, "known_wrong_code": 0}  # persons persons… are registered by nobody

    async def attempt(client: httpx.AsyncClient, kind: str, i: int, timed: bool) -> None:
        body = {"id_number": resident_id(offsets[kind] + i % persons, area), "name": NAME, "query_code": WRONG_CODE}
        started = time.perf_counter()
        response = await client.post("/api/v1/resident/login", json=body)
        elapsed = time.perf_counter() - started
        expect(response, 401)
        answer = {k: v for k, v in response.json().items() if k not in ("instance", "request_id")}
        encoded = repr(sorted(answer.items())).encode()
        if seen.setdefault("body", encoded) != encoded:
            raise RuntimeError(f"{kind}: the answer differs from the other kind's: {answer}")
        if timed:
            loads[kind].latencies.append(elapsed)
            loads[kind].units += 1
            loads[kind].seconds += elapsed

    pairs = 300 if quick else 5000
    warmup = 2 * persons
    async with httpx.AsyncClient(base_url=ours.url, timeout=60) as client:
        for i in range(warmup + pairs):
            first, second = ("unknown", "known_wrong_code") if i % 2 == 0 else ("known_wrong_code", "unknown")
            await attempt(client, first, i, i >= warmup)
            await attempt(client, second, i, i >= warmup)
            if i == warmup:
                log(f"warmed up with {warmup} pairs; timing {pairs} pairs")
    return loads


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    persons = 20 if args.quick else 200
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        area = unused_area(db.dsn)
        ours = stack.enter_context(canbao_server(db.dsn, work))
        ensure_policy(ours.url, YEAR)
        register(ours.url, persons, area)
        loads = asyncio.run(measure(ours, persons, area, args.quick))
    print(
        f"resident logins answered 401; one connection, attempts in interleaved pairs; {persons} persons each "
        f"side; load average {load_average()}"
    )
    for name, load in loads.items():
        mean = statistics.fmean(load.latencies) * 1000
        print(
            f"{name}: {load.units} logins; p25={load.percentile(25):.2f}ms p50={load.percentile(50):.2f}ms "
            f"p75={load.percentile(75):.2f}ms p90={load.percentile(90):.2f}ms p99={load.percentile(99):.2f}ms "
            f"mean={mean:.2f}ms"
        )
    pairs = zip(loads["unknown"].latencies, loads["known_wrong_code"].latencies, strict=True)
    differences = sorted((u - k) * 1000 for u, k in pairs)
    print(
        f"per pair, unknown - known_wrong_code: median {statistics.median(differences):+.3f}ms, "
        f"middle half {differences[len(differences) // 4]:+.3f}…{differences[3 * len(differences) // 4]:+.3f}ms"
    )
    unknown, known = loads["unknown"].percentile(50), loads["known_wrong_code"].percentile(50)
    print(f"ratio={unknown / known:.2f} unknown_p50={unknown:.2f}ms known_wrong_code_p50={known:.2f}ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
