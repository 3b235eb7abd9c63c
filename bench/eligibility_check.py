"""Eligibility of 10,000 persons in one request, with a 1,000,000-row list loaded, through the full
stack, against a bare endpoint running one `id_number = ANY($1)` SELECT of the same rows.

The list (a di_bao version of the demo district, valid ID numbers from _harness.resident_id) is
written straight into list_versions and list_entries with INSERT … SELECT generate_series; loading
is not measured. The 10,000 numbers: 90% on the list, 9% valid but on no list, 1% the demo's
registered persons (some enrolled for 2026), shuffled. Ours: district civil affairs POST
/api/v1/eligibility/check {"id_numbers", "coverage_year": 2026, "as_of"} (auth, normalising and
checking each number, the versions in force, claims, enrolments, the year's policy, subsidy and
explanation per person, audit). Baseline (baseline_check_app.py): the SELECT, bare. Both under
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

import asyncpg
import httpx
from _harness import (
    BIRTH_DAYS,
    BIRTH_EPOCH,
    ID_CHECK,
    ID_WEIGHTS,
    CpuMeter,
    Database,
    Server,
    baseline_server,
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

YEAR = 2026
AS_OF = "2026-03-01"
LIST_TYPE = "di_bao"

# Row n of the list is person n of _harness.resident_id, computed here in SQL.
_CHECK_SUM = " + ".join(f"substr(b, {i + 1}, 1)::int * {w}" for i, w in enumerate(ID_WEIGHTS))
LOAD_SQL = f"""  -- a template: str.format(version_id=…, district=…, prefix=…, rows=N, area='330110')
INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version, effective_from, status,
    rows_read, rows_loaded, rows_rejected, file_name, file_sha256)
VALUES ('{{version_id}}', '{LIST_TYPE}', 'subsidy', '{{district}}', '{{prefix}}', 1, date '2025-09-01', 'loaded',
    {{rows}}, {{rows}}, 0, 'bench.csv', '\\x00'::bytea);

INSERT INTO list_entries (version_id, row_no, id_number, name, valid_from, valid_to, division_code)
SELECT '{{version_id}}', n + 2, b || substr('{ID_CHECK}', ({_CHECK_SUM}) % 11 + 1, 1),
       (ARRAY['王', '李', '张', '刘', '陈'])[n % 5 + 1] || (ARRAY['伟', '芳', '娜', '敏'])[n / 5 % 4 + 1],
       (ARRAY[date '2024-01-01', date '2025-01-01', NULL])[n % 3 + 1], NULL,
       (SELECT array_agg(code ORDER BY code) FROM divisions WHERE level = 'village')[n % 6 + 1]
FROM (
    SELECT n, '{{area}}' || to_char(date '{BIRTH_EPOCH.isoformat()}' + (n % {BIRTH_DAYS})::int, 'YYYYMMDD')
              || lpad((n / {BIRTH_DAYS})::text, 3, '0') AS b
    FROM generate_series(0, {{rows}} - 1) AS n
) AS g;
"""


async def load_list(dsn: str, rows: int, area: str) -> None:
    from backend.actor import Scope

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        district = await conn.fetchval("SELECT code FROM divisions WHERE level = 'district' ORDER BY code LIMIT 1")
        version_id = uuid.uuid4()
        assert area.isdigit()
        async with conn.transaction():
            await conn.execute(
                LOAD_SQL.format(
                    version_id=version_id,
                    district=district,
                    prefix=Scope(district, "district").prefix,
                    rows=int(rows),
                    area=area,
                )
            )
        await conn.execute("VACUUM (ANALYZE) list_versions, list_entries")
        await conn.execute("CHECKPOINT")
        log(f"loaded {rows} list rows in {time.perf_counter() - started:.1f} s")
        for n in (0, 1, rows - 1):
            got = await conn.fetchval("SELECT id_number FROM list_entries WHERE row_no = $1", n + 2)
            if got != resident_id(n, area):
                raise RuntimeError(f"row {n}: SQL made {got}, _harness.resident_id {resident_id(n, area)}")
    finally:
        await conn.close()


async def registered_numbers(dsn: str, count: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id_number FROM persons WHERE id_number IS NOT NULL ORDER BY id_number LIMIT $1", count
        )
    finally:
        await conn.close()
    return [r["id_number"] for r in rows]


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
