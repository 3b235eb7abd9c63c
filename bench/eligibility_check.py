"""Eligibility of 10,000 persons in one request, with a 1,000,000-row list loaded, through the full
stack, against a bare endpoint running one `id_number_hash = ANY($1)` SELECT of the same rows.

The list (a di_bao version of the demo district, valid ID numbers from _harness.resident_id, hashed
and sealed with the run's keys) is written straight into list_versions and list_entries (COPY);
loading is not measured. The 10,000 numbers: 90% on the list, 9% valid but on no list, 1% the demo's
registered persons (some enrolled for 2026), shuffled. Ours: district civil affairs POST
/api/v1/eligibility/check {"id_numbers", "coverage_year": 2026, "as_of"} (auth, normalising and
checking each number, its blind index, the versions in force, claims, enrolments, the year's policy,
subsidy and explanation per person, audit). Baseline (baseline_check_app.py): the numbers' blind
index and the SELECT, bare. Both under
uvicorn with the same workers and pool size; one request at a time, alternating, timed until the
whole answer has arrived; every answer's counts are checked. Last line: ratio = ours p50 / baseline p50.

    python bench/eligibility_check.py            # full: 1,000,000 rows, 10,000 numbers, 9 requests each side
    python bench/eligibility_check.py --quick    # CI: 20,000 rows, 2,000 numbers, 3 requests each side
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date

import asyncpg
import httpx
from _harness import (
    CpuMeter,
    Database,
    Server,
    baseline_server,
    canbao_server,
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
    unused_area,
    workdir,
)

from backend.crypto import ID_NUMBER

YEAR = 2026
AS_OF = "2026-03-01"
LIST_TYPE = "di_bao"

# Row n of the list is person n of _harness.resident_id, its number hashed and sealed with the run's
# keys (_harness.keys(), the servers' CANBAO_KEY_FILE), written by COPY.
VERSION_SQL = f"""
INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version, effective_from, status,
    rows_read, rows_loaded, rows_rejected, file_name, file_sha256)
VALUES ($1, '{LIST_TYPE}', 'subsidy', $2, $3, 1, date '2025-09-01', 'loaded', $4, $4, 0, 'bench.csv', '\\x00'::bytea)
"""
ENTRY_COLUMNS = ("version_id", "row_no", "id_number_hash", "id_number_enc", "name", "valid_from", "valid_to",
                 "division_code")  # fmt: skip
SURNAMES = ("王", "李", "张", "刘", "陈")
GIVEN = ("伟", "芳", "娜", "敏")
VALID_FROM = (date(2024, 1, 1), date(2025, 1, 1), None)


def list_rows(version_id: uuid.UUID, rows: int, area: str, villages: list[str]) -> Iterator[tuple[object, ...]]:
    keyring = keys()
    for start in range(0, rows, 10_000):
        span = range(start, min(start + 10_000, rows))
        numbers = [resident_id(n, area) for n in span]
        hashes, sealed = keyring.index_many(ID_NUMBER, numbers), keyring.seal_many(ID_NUMBER, numbers)
        for n, hashed, seal in zip(span, hashes, sealed, strict=True):
            name = SURNAMES[n % 5] + GIVEN[n // 5 % 4]
            yield (version_id, n + 2, hashed, seal, name, VALID_FROM[n % 3], None, villages[n % 6])


async def load_list(dsn: str, rows: int, area: str) -> None:
    from backend.actor import Scope

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        district = await conn.fetchval("SELECT code FROM divisions WHERE level = 'district' ORDER BY code LIMIT 1")
        villages = await conn.fetchval("SELECT array_agg(code ORDER BY code) FROM divisions WHERE level = 'village'")
        version_id = uuid.uuid4()
        async with conn.transaction():
            await conn.execute(VERSION_SQL, version_id, district, Scope(district, "district").prefix, rows)
            await conn.copy_records_to_table(
                "list_entries", columns=ENTRY_COLUMNS, records=list_rows(version_id, rows, area, villages)
            )
        await conn.execute("VACUUM (ANALYZE) list_versions, list_entries")
        await conn.execute("CHECKPOINT")
        log(f"loaded {rows} list rows in {time.perf_counter() - started:.1f} s")
        keyring = keys()
        for n in (0, 1, rows - 1):
            got = await conn.fetchrow("SELECT id_number_hash, id_number_enc FROM list_entries WHERE row_no = $1", n + 2)
            assert got is not None
            number = resident_id(n, area)
            if (got["id_number_hash"], keyring.open(ID_NUMBER, got["id_number_enc"])) != (
                keyring.index(ID_NUMBER, number),
                number,
            ):
                raise RuntimeError(f"row {n} does not hold _harness.resident_id {number} sealed")
    finally:
        await conn.close()


async def registered_numbers(dsn: str, count: int) -> list[str]:
    """The first `count` registered persons' numbers, in the order of their blind index (opened here)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id_number_enc FROM persons WHERE id_number_hash IS NOT NULL ORDER BY id_number_hash LIMIT $1", count
        )
    finally:
        await conn.close()
    keyring = keys()
    return [keyring.open_bytes(ID_NUMBER, r["id_number_enc"]).decode() for r in rows]


def measure(ours: Server, bare: Server, db: Database, numbers: list[str], listed: int, reps: int) -> dict[str, dict]:
    headers = login(ours.url, "civil")
    ours_body = {"id_numbers": numbers, "coverage_year": YEAR, "as_of": AS_OF}
    sides = {
        "ours": (ours, ours.url + "/api/v1/eligibility/check", ours_body, headers),
        "baseline": (bare, bare.url + "/eligibility/check", {"id_numbers": numbers}, {}),
    }

    def check(name: str, response: httpx.Response) -> None:
        items = expect(response, 200).json()["items"]
        if name == "ours":
            subsidised = sum(1 for i in items if LIST_TYPE in i["chosen_categories"])
            if len(items) != len(numbers) or subsidised != listed:
                raise RuntimeError(
                    f"ours answered {len(items)} persons, {subsidised} on {LIST_TYPE}; "
                    f"expected {len(numbers)}, {listed}"
                )
        elif len(items) != listed:
            raise RuntimeError(f"the baseline found {len(items)} list rows, expected {listed}")

    results: dict[str, dict] = {name: {"seconds": [], "cpu": []} for name in sides}
    with httpx.Client(timeout=120) as client:
        for name, (_, url, body, hdrs) in sides.items():  # warm-up: connections, prepared statements
            for _ in range(2):
                check(name, client.post(url, json=body, headers=hdrs))
        for r in range(reps):
            for name, (server, url, body, hdrs) in sides.items():
                meter = CpuMeter(server, db)
                before = meter.sample()
                started = time.perf_counter()
                response = client.post(url, json=body, headers=hdrs)  # returns once the body is read
                seconds = time.perf_counter() - started
                cpu = meter.since(before)
                check(name, response)
                results[name]["seconds"].append(seconds)
                results[name]["cpu"].append(cpu)
                log(
                    f"round {r + 1} {name}: {seconds * 1000:.0f} ms, {len(response.content) / 1e6:.1f} MB answer; "
                    f"cpu ms: "
                    + " ".join(f"{p} {s * 1000:.0f}" for p, s in cpu.items())
                    + f"; load average {load_average()}"
                )
    return results


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    rows, count, reps = (20_000, 2_000, 3) if args.quick else (1_000_000, 10_000, 9)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        area = unused_area(db.dsn)
        asyncio.run(load_list(db.dsn, rows, area))
        pick = random.Random(YEAR)
        listed = count * 9 // 10
        numbers = [resident_id(n, area) for n in pick.sample(range(rows), listed)]
        numbers += [resident_id(n, area) for n in range(rows, rows + count * 9 // 100)]
        numbers += asyncio.run(registered_numbers(db.dsn, count - len(numbers)))
        pick.shuffle(numbers)
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_check_app", db.dsn, work))
        ensure_policy(ours.url, YEAR)
        results = measure(ours, bare, db, numbers, listed, reps)
    print(f"{rows} list rows; {len(numbers)} ID numbers per request ({listed} listed); {reps} requests each side")
    p50 = {}
    for name, result in results.items():
        seconds = result["seconds"]
        p50[name] = statistics.median(seconds)
        cpu = {p: statistics.median(c[p] for c in result["cpu"]) * 1000 for p in result["cpu"][0]}
        print(
            f"{name}: p50={p50[name]:.3f}s min={min(seconds):.3f}s max={max(seconds):.3f}s; "
            "cpu ms per request (p50): " + " ".join(f"{p} {v:.0f}" for p, v in cpu.items())
        )
    print(
        f"ratio={p50['ours'] / p50['baseline']:.2f} ours={p50['ours']:.3f}s baseline={p50['baseline']:.3f}s", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
