"""Hospital eligibility checks per second with 0, 1 and 2 read replicas (issue 21 point 3), against a
bare endpoint, all in one run.

Hospitals ask one patient at a time: FHIR POST /fhir/CoverageEligibilityRequest (the batch check,
POST /api/v1/eligibility/check, is civil affairs' and reads the primary). The demo district is
seeded into an embedded PostgreSQL; two streaming standbys of it are made with pg_basebackup and
started beside it (`backend.tools.standby`, seconds; no Patroni, no root, no fixed ports, so this
runs in CI). Three Canbao servers, the same workers and pool, differ only in
`CANBAO_REPLICA_DSNS`: none, the first standby, both. Each check is for a registered person of
the district (random, the same sequence on every side), serviced 2026-03-01: partner token, the
request checked, enrolments and history read, ceilings, the answer, the audit row (always on the
primary). Baseline (baseline_fhir_app.py): the blind index and one SELECT on the primary, bare.
All sides at the same 16 connections, measured in alternating rounds.

On this machine the standbys share the 2 cores with the primary, the servers and the load
generator: a replica cannot add CPU here, so checks per second show what routing costs, not what
it gains. What it gains is read off the CPU columns: the primary's CPU per check (`postgres`) falls
as the reads move to the standbys (`standbys`); on hosts of their own that is capacity the primary
keeps for writes. Last line: ratio = ours (2 replicas) / baseline checks per second.

    python bench/replicas.py            # full: 3 rounds of 15 s per side, ~4 minutes
    python bench/replicas.py --quick    # CI: 1 round of 3 s per side, about a minute
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
from _harness import (
    CANBAO,
    WORKERS,
    Amount,
    CpuMeter,
    CpuSample,
    Database,
    Server,
    Side,
    baseline_server,
    compare,
    database,
    ensure_policy,
    exit_on_signals,
    expect,
    free_port,
    load_average,
    log,
    login,
    parse_args,
    server,
    server_env,
    workdir,
)
from _http import Client
from eligibility_check import registered_numbers

from backend.fhir.resources import RESIDENT_ID_SYSTEM
from backend.tools.standby import Standby, start_standby

CONNECTIONS = 16
SERVICED = "2026-03-01"
ELIGIBILITY = "/fhir/CoverageEligibilityRequest"


class ReplicaMeter(CpuMeter):
    """CPU seconds of the load generator, a server, the primary (`postgres`) and the standbys."""

    def __init__(self, server: Server, db: Database, standbys: list[Standby]) -> None:
        super().__init__(server, db)
        self.standbys = [Database("", s.pgdata) for s in standbys]

    def sample(self) -> CpuSample:
        sample = super().sample()
        sample["standbys"] = self._seconds([p for s in self.standbys for p in s.postgres_processes()])
        return sample


@contextlib.contextmanager
def standbys(db: Database, count: int) -> Iterator[list[Standby]]:
    made: list[Standby] = []
    try:
        for _ in range(count):
            made.append(start_standby(db.dsn))
            log(f"standby {len(made)} streaming in {made[-1].folder}")
        yield made
    finally:
        for standby in made:
            standby.stop()


def canbao_with_replicas(
    name: str, db: Database, replicas: list[Standby], work: Path
) -> contextlib.AbstractContextManager[Server]:
    """`canbao serve` as the harness starts it, reading `replicas` (CANBAO_REPLICA_DSNS)."""
    port = free_port()
    argv = [CANBAO, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]
    env = server_env(db.dsn) | {"CANBAO_REPLICA_DSNS": ",".join(s.dsn(db.dsn) for s in replicas)}
    return server(name, argv, env, port, work)


def request_for(number: str) -> dict[str, object]:
    return {
        "resourceType": "CoverageEligibilityRequest",
        "identifier": [{"system": "urn:hospital:his", "value": "bench"}],
        "status": "active",
        "purpose": ["validation"],
        "patient": {"identifier": {"system": RESIDENT_ID_SYSTEM, "value": number}},
        "created": "2026-03-01T09:00:00+08:00",
        "servicedDate": SERVICED,
        "insurer": {"display": "城乡居民基本医疗保险"},
    }


def partner_token(url: str) -> dict[str, str]:
    admin = login(url, "admin")
    created = expect(httpx.post(url + "/api/v1/partners", json={"name": "县人民医院"}, headers=admin, timeout=30), 201)
    body = created.json()
    form = {"grant_type": "client_credentials", "client_id": body["partner"]["client_id"]}
    form["client_secret"] = body["client_secret"]
    token = expect(httpx.post(url + "/fhir/token", data=form, timeout=30), 200).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


async def standby_clients(standby: Standby, dsn: str) -> int:
    """Client connections to Canbao's database on a standby: a server that read there keeps its pool's."""
    conn = await asyncpg.connect(standby.dsn(dsn))
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        count: int = await conn.fetchval(sql)
        return count
    finally:
        await conn.close()


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    rounds, phase, warmup = (
        (1, Amount(seconds=3), Amount(seconds=1)) if args.quick else (3, Amount(seconds=15), Amount(seconds=5))
    )
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        numbers = asyncio.run(registered_numbers(db.dsn, 2000))
        if not numbers:
            raise RuntimeError("the demo seed registered nobody")
        made = stack.enter_context(standbys(db, 2))
        bare = stack.enter_context(baseline_server("baseline_fhir_app", db.dsn, work))
        ours = {
            n: stack.enter_context(canbao_with_replicas(f"canbao-{n}-replicas", db, made[:n], work)) for n in (0, 1, 2)
        }
        ensure_policy(ours[0].url, 2026)
        headers = partner_token(ours[0].url)

        def unit_for(path: str, hdrs: dict[str, str]):  # type: ignore[no-untyped-def]
            async def unit(client: Client, index: int) -> None:
                number = numbers[random.randrange(len(numbers))]
                answer = await client.post(path, json=request_for(number), headers=hdrs)
                expect(answer, 200)
                if answer.json()["resourceType"] != "CoverageEligibilityResponse":
                    raise RuntimeError(f"not an eligibility answer: {answer.text[:300]}")

            return unit

        random.seed(2026)
        sides = [Side("baseline", bare.url, unit_for(ELIGIBILITY, {}), ReplicaMeter(bare, db, made))]
        sides += [
            Side(f"ours_{n}", ours[n].url, unit_for(ELIGIBILITY, headers), ReplicaMeter(ours[n], db, made))
            for n in (0, 1, 2)
        ]
        totals = asyncio.run(compare(sides, CONNECTIONS, rounds=rounds, warmup=warmup, phase=phase, what="checks"))
        reached = [asyncio.run(standby_clients(s, db.dsn)) for s in made]
        if not all(reached):
            raise RuntimeError(f"a standby was never read: client connections {reached}")
    print(
        f"{len(numbers)} registered persons; {CONNECTIONS} connections; {rounds} round(s) of {phase} per side; "
        f"{WORKERS} worker(s); load average {load_average()}; standbys' client connections {reached}"
    )
    for name, load in totals.items():
        cpu = load.cpu
        share = cpu["postgres"] / sum(cpu.values()) * 100 if sum(cpu.values()) else 0.0
        print(
            f"{name}: {load.rate:.0f} checks/s p50={load.percentile(50):.1f}ms p99={load.percentile(99):.1f}ms; "
            f"cpu ms per check: {load.cpu_per_unit()}; primary's share of the CPU used {share:.0f}%"
        )
    rate = {name: load.rate for name, load in totals.items()}
    print(
        f"ratio={rate['ours_2'] / rate['baseline']:.2f} ours={rate['ours_2']:.0f}/s baseline={rate['baseline']:.0f}/s "
        f"ours_0={rate['ours_0']:.0f}/s ours_1={rate['ours_1']:.0f}/s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
