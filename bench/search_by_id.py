"""Household search by a member's identity number with 1,000,000 persons loaded, through the full
stack, against a bare endpoint running the same indexed SELECT.

The persons (households of 3 and 4, alternately, in the three villages of township 330106001000)
are loaded straight into PostgreSQL with INSERT … SELECT generate_series; loading is not measured.
Ours: township staff POST /api/v1/households/search {"id_number"} (auth, scope, audit row, one
transaction per request). Baseline (baseline_search_app.py): the same SELECT, bare. Both under
uvicorn with the same workers and pool size, at 4 connections, in alternating rounds; every answer
must name the one household the number belongs to. Last line: ratio = ours p99 / baseline p99.

    python bench/search_by_id.py            # full: 1,000,000 persons, 2 rounds of 20 s each side, ~3 minutes
    python bench/search_by_id.py --quick    # CI: 20,000 persons, a few hundred requests each side
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time

import asyncpg
from _harness import (
    BIRTH_DAYS,
    BIRTH_EPOCH,
    ID_CHECK,
    ID_WEIGHTS,
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
from _http import Client, Reply

from backend.crypto import ID_NUMBER

CONNECTIONS = 4

# Person n belongs to household hh(n): persons come in runs of 7, a household of 3 then one of 4.
# Its identity number is resident_id(n) of _harness, computed here in SQL.
_CHECK_SUM = " + ".join(f"substr(b, {i + 1}, 1)::int * {w}" for i, w in enumerate(ID_WEIGHTS))
_VILLAGES = ", ".join(f"'{v}'" for v in TOWNSHIP_A_VILLAGES)
LOAD_SQL = f"""  -- a template: str.format(persons=N, area='330110')
CREATE TEMP TABLE gen ON COMMIT DROP AS
SELECT n,
       (n / 7) * 2 + (n % 7 >= 3)::int AS hh,
       CASE WHEN n % 7 < 3 THEN n % 7 ELSE n % 7 - 3 END AS pos,
       date '{BIRTH_EPOCH.isoformat()}' + (n % {BIRTH_DAYS})::int AS born,
       '{{area}}' || to_char(date '{BIRTH_EPOCH.isoformat()}' + (n % {BIRTH_DAYS})::int, 'YYYYMMDD')
                || lpad((n / {BIRTH_DAYS})::text, 3, '0') AS b
FROM generate_series(0, {{persons}} - 1) AS n;
ALTER TABLE gen ADD COLUMN num text;
UPDATE gen SET num = b || substr('{ID_CHECK}', ({_CHECK_SUM}) % 11 + 1, 1);
CREATE TEMP TABLE gen_sealed (n bigint PRIMARY KEY, h bytea, e bytea) ON COMMIT DROP;
"""
# The numbers are sealed in Python (the keys never enter the database) into gen_sealed, then:
FILL_SQL = f"""
INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date)
SELECT md5('p' || n)::uuid, s.h, s.e,
       (ARRAY['王', '李', '张', '刘', '陈', '杨', '赵', '黄', '周', '吴'])[n % 10 + 1]
           || (ARRAY['伟', '芳', '娜', '敏', '静', '强', '磊', '洋', '艳', '军'])[n / 10 % 10 + 1]
           || (ARRAY['', '华', '平', '明', '丽'])[n / 100 % 5 + 1],
       CASE WHEN (n / {BIRTH_DAYS}) % 2 = 1 THEN 'male' ELSE 'female' END,
       born
FROM gen JOIN gen_sealed s USING (n);

INSERT INTO households (id, village_code, household_no, head_person_id)
SELECT md5('h' || hh)::uuid, (ARRAY[{_VILLAGES}])[hh % 3 + 1], 'bench-' || hh, md5('p' || n)::uuid
FROM gen WHERE pos = 0;

INSERT INTO memberships (id, person_id, household_id, relation)
SELECT md5('m' || n)::uuid, md5('p' || n)::uuid, md5('h' || hh)::uuid,
       CASE pos WHEN 0 THEN 'head' WHEN 1 THEN 'spouse' ELSE 'child' END
FROM gen;
"""


def household_of(n: int) -> int:
    return (n // 7) * 2 + (n % 7 >= 3)


async def load_persons(dsn: str, persons: int, area: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        # Loading only: the rows are consistent by construction, so foreign-key triggers are skipped,
        # and nothing here needs to survive a crash.
        await conn.execute("SET session_replication_role = replica; SET synchronous_commit = off;")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        async with conn.transaction():
            assert area.isdigit()
            await conn.execute(LOAD_SQL.format(persons=int(persons), area=area))
            rows = await conn.fetch("SELECT n, num FROM gen ORDER BY n")
            numbers = [r["num"] for r in rows]
            keyring = keys()
            await conn.copy_records_to_table(
                "gen_sealed",
                records=zip(
                    [r["n"] for r in rows],
                    keyring.index_many(ID_NUMBER, numbers),
                    keyring.seal_many(ID_NUMBER, numbers),
                    strict=True,
                ),
            )
            await conn.execute(FILL_SQL)
        await conn.execute("RESET session_replication_role; RESET synchronous_commit;")
        await conn.execute("VACUUM (ANALYZE) persons, households, memberships")
        await conn.execute("CHECKPOINT")
        count = await conn.fetchval("SELECT count(*) FROM persons")
        log(f"loaded {persons} persons ({count} in all, with the demo's) in {time.perf_counter() - started:.1f} s")
        # The SQL numbering must be the Python one, or every search would miss.
        sample = [0, 6, 7, persons - 1, *random.Random(1).sample(range(persons), 5)]
        for n in sample:
            sealed = await conn.fetchval("SELECT id_number_enc FROM persons WHERE id = md5('p' || $1::bigint)::uuid", n)
            got = keys().open(ID_NUMBER, sealed)
            if got != resident_id(n, area):
                raise RuntimeError(f"person {n}: SQL made {got}, _harness.resident_id {resident_id(n, area)}")
    finally:
        await conn.close()


async def measure(
    ours: Server, bare: Server, db: Database, headers: dict[str, str], persons: int, area: str, quick: bool
) -> dict[str, Load]:
    pick = random.Random(2026)

    def check(response: Reply, n: int) -> None:
        items = expect(response, 200).json()["items"]
        if [i["household_no"] for i in items] != [f"bench-{household_of(n)}"]:
            raise RuntimeError(f"search for person {n} found {len(items)} households, not their own")

    async def ours_unit(client: Client, _: int) -> None:
        n = pick.randrange(persons)
        body = {"id_number": resident_id(n, area)}
        check(await client.post("/api/v1/households/search", json=body, headers=headers), n)

    async def baseline_unit(client: Client, _: int) -> None:
        n = pick.randrange(persons)
        check(await client.post("/households/search", json={"id_number": resident_id(n, area)}), n)

    sides = [
        Side("ours", ours.url, ours_unit, CpuMeter(ours, db)),
        Side("baseline", bare.url, baseline_unit, CpuMeter(bare, db)),
    ]
    # The warm-up is long enough for every pooled connection to have prepared its statements
    # (PostgreSQL weighs a generic plan after 5 executions of a prepared statement).
    if quick:
        return await compare(
            sides, CONNECTIONS, rounds=1, warmup=Amount(units=100), phase=Amount(units=300), what="searches"
        )
    return await compare(
        sides, CONNECTIONS, rounds=2, warmup=Amount(units=1000), phase=Amount(seconds=20), what="searches"
    )


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    persons = 20_000 if args.quick else 1_000_000
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        area = unused_area(db.dsn)
        asyncio.run(load_persons(db.dsn, persons, area))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        bare = stack.enter_context(baseline_server("baseline_search_app", db.dsn, work))
        headers = login(ours.url, "staff_a")
        loads = asyncio.run(measure(ours, bare, db, headers, persons, area, args.quick))
    print(f"{persons} persons loaded; {CONNECTIONS} connections; load average {load_average()}")
    for name, load in loads.items():
        print(
            f"{name}: {load.units} searches in {load.seconds:.1f} s = {load.rate:.0f}/s; "
            f"p50={load.percentile(50):.2f}ms p99={load.percentile(99):.2f}ms; cpu ms per search: {load.cpu_per_unit()}"
        )
    ours_load, base_load = loads["ours"], loads["baseline"]
    ours_p99, base_p99 = ours_load.percentile(99), base_load.percentile(99)
    print(
        f"ratio={ours_p99 / base_p99:.2f} ours_p99={ours_p99:.1f}ms baseline_p99={base_p99:.1f}ms "
        f"ours_p50={ours_load.percentile(50):.1f}ms baseline_p50={base_load.percentile(50):.1f}ms",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
