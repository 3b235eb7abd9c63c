"""A prefecture on one node: 5,000,000 persons in 1,500,000 households (at `--scale 1`), every read
that grows with them, through the full stack against a bare SQL endpoint, in the same run.

The demo district gets 98 more townships of 5 villages (100 townships, 496 villages: the size of a
prefecture's townships); persons, households of 3, 3 and 4, memberships, this and last year's
enrolments (2027: every other household, the window under way; 2026: everyone but 1 in 20, 1 in
20 registered and unpaid), premium payments and their allocations for half the households in
2026, a di_bao list of 1 in 5 persons (1,000,000 rows at full size) and a deceased list of 1 in
1,000 are written straight into PostgreSQL (INSERT … SELECT generate_series; ID numbers as
_harness.resident_id, sealed and blind-indexed in Python under the servers' keys, as the service
stores them). Loading is timed but not compared.

Measured, ours (canbao serve) against bare (baseline_prefecture_app.py, one SELECT each; the first
pull against COPY of the same queries, as sync_first_pull.py):
  - at 4 connections: search by ID number (staff_a, township A's persons), a resident's coverage
    (GET /api/v1/resident/coverage, sessions of random households of township A), a FHIR
    CoverageEligibilityRequest (a partner, random persons of the district): p50 and p99;
  - one request at a time on one connection, at least 10 runs each (PostgreSQL switches a prepared
    statement to a generic plan after the fifth; the worst run is reported): an eligibility check
    of 10,000 ID numbers (civil affairs), the 应保尽保 report of township A (staff_a) and of the
    district (admin), JSON and XLSX, and township A's first sync pull (MessagePack + gzip).
Then the load time, the database size and the peak RSS of the server (all its processes) and of
PostgreSQL (every backend's RSS summed, shared buffers counted once per process that touched them).
Each figure prints with its ratio; the last line is the worst ratio.

    python bench/prefecture.py                 # 5,000,000 persons: loading takes long on 2 cores
    python bench/prefecture.py --scale 0.2     # 1,000,000 persons
    python bench/prefecture.py --quick         # CI: 1/100 (50,000 persons), well under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psutil
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
    exit_on_signals,
    expect,
    keys,
    load_average,
    log,
    login,
    resident_id,
    unused_area,
    workdir,
)
from _http import Client
from sync_first_pull import TOWNSHIP_HIGH, TOWNSHIP_LOW, Run, first_pull, publish_policies, register_tablet
from sync_first_pull import baseline as pull_baseline

from backend.auth.tokens import ACT_RESIDENT, SCOPE_RESIDENT, AccessClaims, SigningKey, encode_access
from backend.crypto import ID_NUMBER
from backend.fhir.resources import RESIDENT_ID_SYSTEM

FULL_PERSONS = 5_000_000
CONNECTIONS = 4
YEAR = 2026
DISTRICT = "330106000000"
TOWNSHIPS = range(3, 101)  # 330106003000 … 330106100000, 5 villages each, beside the demo's two
CHECK_IDS = 10_000
SEAL_CHUNK = 100_000

# Person n: block b = n / 10 holds households 3b, 3b + 1 (3 persons each) and 3b + 2 (4 persons).
PERSON_SQL = """
CREATE UNLOGGED TABLE bench_gen AS
SELECT n, 3 * (n / 10) + (n % 10 >= 3)::int + (n % 10 >= 6)::int AS hh,
       CASE WHEN n % 10 < 3 THEN n % 10 WHEN n % 10 < 6 THEN n % 10 - 3 ELSE n % 10 - 6 END AS pos,
       CASE WHEN n % 5 = 0 THEN 20000 ELSE 0 END AS subsidy
FROM generate_series(0, {persons} - 1) AS n;
ALTER TABLE bench_gen ADD COLUMN village text;
UPDATE bench_gen SET village = (SELECT array_agg(code ORDER BY code) FROM divisions WHERE level = 'village')
                               [hh % (SELECT count(*) FROM divisions WHERE level = 'village') + 1];
CREATE UNLOGGED TABLE bench_sealed (n integer, h bytea, e bytea);
"""
# Households and memberships date from 400 days before the business day (_harness.BUSINESS_CLOCK), never
# PostgreSQL's now(): members before 1 January of the years reported, whatever the real date.
# After bench_sealed is filled (COPY, from Python):
LOAD_SQL = """
ALTER TABLE bench_sealed ADD PRIMARY KEY (n);
INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date)
SELECT md5('p' || n)::uuid, s.h, s.e,
       (ARRAY['王', '李', '张', '刘', '陈', '杨', '赵', '黄', '周', '吴'])[n % 10 + 1]
           || (ARRAY['伟', '芳', '娜', '敏', '静', '强', '磊', '洋', '艳', '军'])[n / 10 % 10 + 1]
           || (ARRAY['', '华', '平', '明', '丽'])[n / 100 % 5 + 1],
       CASE WHEN (n / 25000) % 2 = 1 THEN 'male' ELSE 'female' END, date '1940-01-01' + (n % 25000)
FROM bench_gen JOIN bench_sealed s USING (n);

INSERT INTO households (id, village_code, household_no, address, head_person_id, row_version, created_at)
SELECT md5('h' || hh)::uuid, village, 'pf-' || hh, '某村' || (hh % 12 + 1) || '组' || (hh % 97 + 1) || '号',
       md5('p' || n)::uuid, 1, timestamptz '2025-10-28 10:00+08'
FROM bench_gen WHERE pos = 0;

INSERT INTO memberships (id, person_id, household_id, relation, joined_at)
SELECT md5('m' || n)::uuid, md5('p' || n)::uuid, md5('h' || hh)::uuid,
       CASE pos WHEN 0 THEN 'head' WHEN 1 THEN 'spouse' ELSE 'child' END, timestamptz '2025-10-28 10:00+08'
FROM bench_gen;

INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, funding,
                         policy_version_id, registered_on, business_date, premium_fen, subsidy_fen,
                         coverage_start, coverage_end, coverage_reason, row_version)
SELECT md5('e' || y || '-' || n)::uuid, md5('p' || n)::uuid, md5('h' || hh)::uuid, village, y,
       CASE WHEN y = 2026 AND n % 20 = 17 THEN 'registered' WHEN y = 2026 THEN 'confirmed' ELSE 'paid' END,
       CASE WHEN y = 2026 AND n % 20 = 17 THEN NULL WHEN subsidy > 0 THEN 'subsidised' ELSE 'paid' END,
       CASE WHEN y = 2026 THEN '{policy_2026}'::uuid ELSE '{policy_2027}'::uuid END,
       make_date(y - 1, 10, 8), make_date(y - 1, 10, 8), 40000, subsidy,
       CASE WHEN y = 2026 AND n % 20 = 17 THEN NULL ELSE make_date(y, 1, 1) END,
       CASE WHEN y = 2026 AND n % 20 = 17 THEN NULL ELSE make_date(y, 12, 31) END,
       CASE WHEN y = 2026 AND n % 20 = 17 THEN NULL ELSE 'in_window' END, 2
FROM bench_gen CROSS JOIN (VALUES (2026), (2027)) AS years (y)
WHERE (y = 2026 AND n % 20 <> 19) OR (y = 2027 AND hh % 2 = 0);

INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                      receipt_no, receipt_block_id, collector_id, device_id, collected_at, business_date,
                      remittance_date)
SELECT md5('pay' || hh)::uuid, md5('h' || hh)::uuid, min(village), 2026, array_agg(md5('p' || n)::uuid ORDER BY n),
       sum(40000 - subsidy), CASE WHEN hh % 3 = 0 THEN 'qr' ELSE 'cash' END, 'premium',
       'P' || lpad(hh::text, 9, '0'), '{block}', '{collector}', '{device}',
       timestamptz '2025-10-08 09:00+08' + hh * interval '10 ms', date '2025-10-08', date '2025-10-08'
FROM bench_gen WHERE hh % 2 = 0 AND n % 20 NOT IN (17, 19)
GROUP BY hh HAVING sum(40000 - subsidy) > 0;

INSERT INTO payment_allocations (payment_id, person_id, amount_fen, enrollment_id)
SELECT md5('pay' || hh)::uuid, md5('p' || n)::uuid, 40000 - subsidy, md5('e2026-' || n)::uuid
FROM bench_gen WHERE hh % 2 = 0 AND n % 20 NOT IN (17, 19) AND subsidy < 40000;

INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version, effective_from, status,
                           rows_read, rows_loaded, rows_rejected, file_name, file_sha256, uploaded_by)
SELECT md5('list-' || t)::uuid, t, k, '330106000000', '330106', 1, date '2025-09-01', 'loaded',
       count(*), count(*), 0, t || '.csv', '\\x00'::bytea, '{civil}'
FROM bench_gen CROSS JOIN (VALUES ('di_bao', 'subsidy'), ('deceased', 'exclusion')) AS lists (t, k)
WHERE (t = 'di_bao' AND n % 5 = 0) OR (t = 'deceased' AND n % 1000 = 7)
GROUP BY t, k;
INSERT INTO list_entries (version_id, row_no, id_number_hash, id_number_enc, name, valid_from, valid_to, division_code)
SELECT md5('list-' || t)::uuid, row_number() OVER (PARTITION BY t ORDER BY n) + 1, s.h, s.e, '某某',
       NULL, NULL, village
FROM bench_gen JOIN bench_sealed s USING (n) CROSS JOIN (VALUES ('di_bao'), ('deceased')) AS lists (t)
WHERE (t = 'di_bao' AND n % 5 = 0) OR (t = 'deceased' AND n % 1000 = 7);
DROP TABLE bench_gen, bench_sealed;
"""


def household_of(n: int) -> int:
    return 3 * (n // 10) + (n % 10 >= 3) + (n % 10 >= 6)


def village_of(n: int, villages: list[str]) -> str:
    return villages[household_of(n) % len(villages)]


# Loading ------------------------------------------------------------------------------------------


async def add_townships(dsn: str) -> list[str]:
    """98 more townships of 5 villages in the demo district; every village code, in order."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = [(f"330106{t:03d}000", DISTRICT, "township", f"第{t}镇") for t in TOWNSHIPS]
        rows += [(f"330106{t:03d}{v:03d}", f"330106{t:03d}000", "village", f"第{t}镇{v}村") for t in TOWNSHIPS
                 for v in range(1, 6)]  # fmt: skip
        await conn.executemany("INSERT INTO divisions (code, parent_code, level, name) VALUES ($1, $2, $3, $4)", rows)
        return list(await conn.fetchval("SELECT array_agg(code ORDER BY code) FROM divisions WHERE level = 'village'"))
    finally:
        await conn.close()


async def load(dsn: str, persons: int, area: str, fill: dict[str, Any]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        # Loading only: consistent by construction, so triggers (foreign keys, change capture) are skipped.
        await conn.execute("SET session_replication_role = replica; SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'; SET work_mem = '256MB'")
        await conn.execute(PERSON_SQL.format(persons=int(persons)))
        keyring = keys()
        for start in range(0, persons, SEAL_CHUNK):
            span = range(start, min(start + SEAL_CHUNK, persons))
            numbers = [resident_id(n, area) for n in span]
            await conn.copy_records_to_table(
                "bench_sealed",
                records=zip(
                    span, keyring.index_many(ID_NUMBER, numbers), keyring.seal_many(ID_NUMBER, numbers), strict=True
                ),
            )
        sealed = time.perf_counter()
        log(f"numbers made and sealed in {sealed - started:.1f} s")
        async with conn.transaction():
            await conn.execute(LOAD_SQL.format(**fill))
        log(f"rows written in {time.perf_counter() - sealed:.1f} s")
        await conn.execute("RESET session_replication_role; RESET synchronous_commit")
        # The triggers were skipped: the 应保尽保 report's summary (migration 0025) is built from
        # the rows, as the migration's backfill does.
        summary = time.perf_counter()
        await conn.execute("SELECT coverage_rebuild()")
        log(f"the coverage summary built in {time.perf_counter() - summary:.1f} s")
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM persons) AS persons, (SELECT count(*) FROM households) AS households, "
            "(SELECT count(*) FROM enrollments) AS enrollments, (SELECT count(*) FROM payments) AS payments, "
            "(SELECT count(*) FROM list_entries) AS list_entries"
        )
        log(f"loaded in {seconds:.1f} s: {dict(counts)}")
        for n in (0, 9, persons - 1):  # the SQL numbering must be the Python one
            sql = "SELECT id_number_enc FROM persons WHERE id = md5('p' || $1::bigint)::uuid"
            sealed_number = await conn.fetchval(sql, n)
            if keyring.open(ID_NUMBER, sealed_number) != resident_id(n, area):
                raise RuntimeError(f"person {n} does not hold _harness.resident_id {resident_id(n, area)}")
        return seconds
    finally:
        await conn.close()


async def resident_tokens(dsn: str, households: list[int]) -> list[tuple[int, str]]:
    """A resident session (the household's head) per household, as a resident login makes one."""
    key = SigningKey.from_secret(JWT_SECRET.encode())
    now = datetime.now(UTC).replace(microsecond=0)
    conn = await asyncpg.connect(dsn)
    try:
        tokens = []
        for hh in households:
            person = await conn.fetchval("SELECT head_person_id FROM households WHERE household_no = $1", f"pf-{hh}")
            session = uuid.uuid4()
            await conn.execute(
                "INSERT INTO resident_sessions (id, person_id, household_id, created_at, expires_at) "
                "VALUES ($1, $2, md5('h' || $3::bigint)::uuid, $4, $5)",
                *(session, person, hh, now, now + timedelta(hours=2)),
            )
            claims = AccessClaims(
                sub=person, sid=session, act=ACT_RESIDENT, scope=SCOPE_RESIDENT, jti=uuid.uuid4(),
                iat=int(now.timestamp()), exp=int(now.timestamp()) + 7200,
            )  # fmt: skip
            tokens.append((hh, encode_access(key, claims)))
        return tokens
    finally:
        await conn.close()


# Memory -------------------------------------------------------------------------------------------


class PeakRss:
    """Samples the server's processes and PostgreSQL's every 0.2 s; keeps the peaks (MB)."""

    def __init__(self, server: Server, db: Database) -> None:
        self.server, self.db = server, db
        self.peaks = {"server": 0.0, "postgres": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, procs: list[psutil.Process]) -> float:
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 1e6

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(self.server.process.pid)
                self.peaks["server"] = max(self.peaks["server"], self._rss([top, *top.children(recursive=True)]))
            self.peaks["postgres"] = max(self.peaks["postgres"], self._rss(self.db.postgres_processes()))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# Measuring ----------------------------------------------------------------------------------------


class Figures:
    def __init__(self) -> None:
        self.ratios: list[tuple[float, str]] = []

    def add(self, what: str, ours: float, bare: float, unit: str = "ms", extra: str = "") -> None:
        ratio = ours / bare if bare else float("inf")
        self.ratios.append((ratio, what))
        print(f"{what}: ours={ours:.1f}{unit} baseline={bare:.1f}{unit} ratio={ratio:.2f}{extra}", flush=True)


def repeat(runs: int, call: Callable[[httpx.Client], httpx.Response], base_url: str) -> list[float]:
    """`runs` requests one after the other on one keep-alive connection; each one's seconds."""
    times = []
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for _ in range(runs):
            started = time.perf_counter()
            expect(call(client), 200)
            times.append(time.perf_counter() - started)
    return times


def show_runs(what: str, times: list[float]) -> None:
    log(f"{what}: " + " ".join(f"{t * 1000:.0f}" for t in times) + " ms")


async def lookups(ours: Server, bare: Server, db: Database, figures: Figures, ctx: dict[str, Any], quick: bool) -> None:
    pick = random.Random(2026)
    area, township_a, persons = ctx["area"], ctx["township_a"], ctx["persons"]
    staff = ctx["staff"]
    amount = (Amount(units=50), Amount(units=200)) if quick else (Amount(units=500), Amount(seconds=15))
    rounds = 1 if quick else 2

    async def search_ours(client: Client, _: int) -> None:
        n = pick.choice(township_a)
        r = expect(await client.post("/api/v1/households/search", json={"id_number": resident_id(n, area)},
                                     headers=staff), 200)  # fmt: skip
        if [i["household_no"] for i in r.json()["items"]] != [f"pf-{household_of(n)}"]:
            raise RuntimeError(f"search for person {n} did not find their household")

    async def search_bare(client: Client, _: int) -> None:
        n = pick.choice(township_a)
        if (
            len(expect(await client.post("/households/search", json={"id_number": resident_id(n, area)}), 200).json())
            != 1
        ):
            raise RuntimeError(f"bare search for person {n} did not find one household")

    residents = ctx["residents"]

    async def coverage_ours(client: Client, _: int) -> None:
        _hh, token = pick.choice(residents)
        r = await client.get(f"/api/v1/resident/coverage?year={YEAR}", headers={"Authorization": f"Bearer {token}"})
        if len(expect(r, 200).json()["members"]) not in (3, 4):
            raise RuntimeError("a resident's coverage did not list 3 or 4 members")

    async def coverage_bare(client: Client, _: int) -> None:
        hh, _token = pick.choice(residents)
        household = uuid.UUID(bytes=hashlib.md5(f"h{hh}".encode()).digest())  # noqa: S324 (the SQL md5)
        if len(expect(await client.get(f"/coverage/{household}?year={YEAR}"), 200).json()) not in (3, 4):
            raise RuntimeError("the bare coverage did not list 3 or 4 members")

    partner = ctx["partner"]  # client_id, client_secret; a token lives 5 minutes: a new one every 2

    def partner_headers(_client: Client) -> dict[str, str]:
        if time.monotonic() - partner.get("at", -1e9) > 120:
            form = {"grant_type": "client_credentials", "client_id": partner["id"], "client_secret": partner["secret"]}
            answer = expect(httpx.post(f"{ours.url}/fhir/token", data=form), 200)
            partner.update(token=answer.json()["access_token"], at=time.monotonic())
        return {"Authorization": f"Bearer {partner['token']}"}

    today = business_now().date().isoformat()

    def fhir_body(number: str) -> dict[str, Any]:
        return {
            "resourceType": "CoverageEligibilityRequest",
            "identifier": [{"system": "urn:hospital:his", "value": "bench"}],
            "status": "active",
            "purpose": ["validation"],
            "patient": {"identifier": {"system": RESIDENT_ID_SYSTEM, "value": number}},
            "created": f"{today}T09:00:00+08:00",
            "servicedDate": today,
            "insurer": {"display": "城乡居民基本医疗保险"},
        }

    async def fhir_ours(client: Client, _: int) -> None:
        number = resident_id(pick.randrange(persons), area)
        headers = {**partner_headers(client), "Content-Type": "application/fhir+json"}
        r = expect(await client.post("/fhir/CoverageEligibilityRequest", json=fhir_body(number), headers=headers), 200)
        if r.json().get("resourceType") != "CoverageEligibilityResponse":
            raise RuntimeError("FHIR did not answer a CoverageEligibilityResponse")

    async def fhir_bare(client: Client, _: int) -> None:
        number = resident_id(pick.randrange(persons), area)
        expect(await client.post(f"/covered?year={YEAR}", json={"id_number": number}), 200)

    for what, ours_unit, bare_unit in (
        ("search by ID number", search_ours, search_bare),
        ("resident coverage", coverage_ours, coverage_bare),
        ("FHIR CoverageEligibilityRequest", fhir_ours, fhir_bare),
    ):
        sides = [
            Side("ours", ours.url, ours_unit, CpuMeter(ours, db)),
            Side("baseline", bare.url, bare_unit, CpuMeter(bare, db)),
        ]
        loads: dict[str, Load] = await compare(
            sides, CONNECTIONS, rounds=rounds, warmup=amount[0], phase=amount[1], what=what
        )
        o, b = loads["ours"], loads["baseline"]
        figures.add(f"{what} p50", o.percentile(50), b.percentile(50))
        figures.add(f"{what} p99", o.percentile(99), b.percentile(99), extra=f" ours_rate={o.rate:.0f}/s")


def singles(ours: Server, bare: Server, db: Database, figures: Figures, ctx: dict[str, Any], runs: int) -> None:
    area, persons = ctx["area"], ctx["persons"]
    pick = random.Random(7)
    count = min(CHECK_IDS, persons)
    numbers = [resident_id(n, area) for n in pick.sample(range(persons), count)]
    civil = login(ours.url, "civil")
    check_body = {"id_numbers": numbers, "coverage_year": YEAR, "as_of": "2026-03-01"}
    o = repeat(runs, lambda c: c.post("/api/v1/eligibility/check", json=check_body, headers=civil), ours.url)
    b = repeat(runs, lambda c: c.post("/eligibility/check", json={"id_numbers": numbers}), bare.url)
    show_runs("check ours", o)
    show_runs("check baseline", b)
    figures.add(f"eligibility check of {count} IDs worst", max(o) * 1000, max(b) * 1000)

    admin, staff = login(ours.url, "admin"), ctx["staff"]
    for scope, headers, (low, high) in (
        ("township", staff, (TOWNSHIP_LOW, TOWNSHIP_HIGH)),
        ("district", admin, ("330106000000", "330106999999")),
    ):
        b = repeat(runs, lambda c, lo=low, hi=high: c.get(f"/report?low={lo}&high={hi}&year={YEAR}"), bare.url)
        show_runs(f"{scope} report baseline", b)
        for fmt in ("json", "xlsx"):
            url = f"/api/v1/reports/coverage?year={YEAR}&level=village&format={fmt}"
            o = repeat(runs, lambda c, u=url, h=headers: c.get(u, headers=h), ours.url)
            show_runs(f"{scope} report {fmt} ours", o)
            figures.add(f"{scope} report {fmt} worst", max(o) * 1000, max(b) * 1000,
                        extra=f" ours_first={o[0] * 1000:.0f}ms ours_best={min(o) * 1000:.0f}ms")  # fmt: skip


def pull(ours: Server, db: Database, figures: Figures, ctx: dict[str, Any], runs: int) -> None:
    tablet, meter = ctx["tablet"], CpuMeter(ours, db)
    times = []
    for _ in range(runs):
        run = first_pull(ours.url, tablet, Run("msgpack", True), 5000, meter)
        times.append(run.total_seconds)
    bare = [asyncio.run(pull_baseline(db.dsn, tablet)) for _ in range(min(runs, 3))]
    show_runs("first pull ours", times)
    households = bare[0].rows["household"]
    figures.add(f"first pull of township A ({households} households) worst", max(times), max(x.seconds for x in bare),
                unit="s", extra=f" ours_mb={run.wire_bytes / 1e6:.1f}")  # fmt: skip


async def db_size(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size
    finally:
        await conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1/100 of the size, fewer requests (CI)")
    p.add_argument("--scale", type=float, default=1.0, help="of 5,000,000 persons (default 1)")
    p.add_argument("--runs", type=int, default=10, help="runs of each single request (at least 10)")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (in a new temporary folder)")
    args = p.parse_args()
    exit_on_signals()
    scale = 0.01 if args.quick else args.scale
    persons = max(10, int(FULL_PERSONS * scale) // 10 * 10)
    runs = max(10, args.runs)
    figures = Figures()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        area = unused_area(db.dsn)
        villages = asyncio.run(add_townships(db.dsn))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        policies = publish_policies(ours.url)
        tablet = register_tablet(ours.url)
        conn_users = asyncio.run(_users(db.dsn))
        fill = {"policy_2026": policies[2026], "policy_2027": policies[2027], "block": tablet.block_id,
                "collector": tablet.user_id, "device": tablet.device_id, "civil": conn_users["civil"]}  # fmt: skip
        load_seconds = asyncio.run(load(db.dsn, persons, area, fill))
        size = asyncio.run(db_size(db.dsn))
        bare = stack.enter_context(baseline_server("baseline_prefecture_app", db.dsn, work))
        rss = stack.enter_context(PeakRss(ours, db))
        township_a = [n for n in range(persons) if village_of(n, villages) in TOWNSHIP_A_VILLAGES]
        heads = sorted({household_of(n) for n in random.Random(3).sample(township_a, min(200, len(township_a)))})
        created = expect(
            httpx.post(f"{ours.url}/api/v1/partners", json={"name": "市人民医院"}, headers=login(ours.url, "admin")),
            201,
        ).json()

        ctx = {
            "area": area,
            "persons": persons,
            "township_a": township_a,
            "staff": login(ours.url, "staff_a"),
            "residents": asyncio.run(resident_tokens(db.dsn, heads)),
            "partner": {"id": created["partner"]["client_id"], "secret": created["client_secret"]},
            "tablet": tablet,
        }
        asyncio.run(lookups(ours, bare, db, figures, ctx, args.quick))
        singles(ours, bare, db, figures, ctx, runs)
        pull(ours, db, figures, ctx, runs)
    households = (persons + 9) // 10 * 3
    print(
        f"{persons} persons in {households} households ({len(villages)} villages) loaded in {load_seconds:.0f} s; "
        f"database {size / 1e9:.2f} GB; peak RSS server {rss.peaks['server']:.0f} MB, "
        f"postgres {rss.peaks['postgres']:.0f} MB; load average {load_average()}"
    )
    worst, what = max(figures.ratios)
    print(f"ratio={worst:.2f} worst={what!r} persons={persons}", flush=True)
    return 0


async def _users(dsn: str) -> dict[str, uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["username"]: r["id"] for r in await conn.fetch("SELECT username, id FROM users")}
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
