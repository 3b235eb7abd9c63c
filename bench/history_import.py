"""An enrolment history file re-imported during the season: `canbao enrollments import` of 200,000
rows for persons enrolled this year, against `psql \\copy` of the same file into a table shaped as
enrollment_history, on the same embedded PostgreSQL.

An import changes what is known of the years before this one, so after it the live enrolments of a
later year of every person it changed are found again: the registered ones reopened (their cover at
payment follows the new history), the paid ones' cover decided again from their business date and
put to a reviewer's gap review when it differs (README, Coverage dates). Finding them once grew with
the square of the file (2f4f0ad: 4,000 persons 3.2 s; this size, hours), and deciding the paid ones
took a round trip each (c2f893c). This benchmark keeps the import's time linear in the file.

Not timed: the demo district, plus 200,000 persons (`--quick`: 2,000) in households of the demo's
township A, loaded by SQL as bench/search_by_id.py does; each enrolled for 2026, every other one paid
on one of 64 business dates (2025-12-01 onwards, in the window), the rest registered. Two files of
身份证号,参保年度,状态: every person's 2025 as 已缴费 (paid), then as 已注销 (cancelled).

Ours, timed: `canbao enrollments import FILE` as a child process until it exits (the file parsed and
checked whole, the rows hashed, sealed and upserted, the enrolments after them reopened or reviewed,
the summary refreshed, committed as one job); its printed counts are checked. First file A (every row
new), then file B (every row updated: 2025 now uncovered, so paid enrolments may wait). Baseline:
`psql -c 'TRUNCATE …' -c '\\copy bench_history … FROM FILE'`: the same three columns, the number in
clear where enrollment_history has its blind index and sealed value, keyed as it is; a plain COPY can
neither seal, nor upsert, nor find what a year bears on. A CHECKPOINT before every timed command.
Last line: ratio = ours / baseline seconds for file B, the re-import.

    python bench/history_import.py            # full: 200,000 rows, ~2 minutes
    python bench/history_import.py --quick    # CI: 2,000 rows
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from pathlib import Path

from _harness import CANBAO, database, exit_on_signals, log, parse_args, resident_id, server_env, unused_area, workdir
from list_import import PSQL, Run, describe, run, sql
from search_by_id import load_persons

YEAR = 2026  # the enrolments' year; the file's is the one before
# Every bench person enrolled for YEAR, every other one paid on one of 64 business dates. Loading only
# (the rows consistent by construction): triggers off, as the persons' load; the summary refreshes
# these persons when the import changes them.
ENROL = f"""
SET session_replication_role = replica;
INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, funding, registered_on,
                         business_date, coverage_start, coverage_end, coverage_reason, waiting_months)
SELECT gen_random_uuid(), m.person_id, m.household_id, h.village_code, {YEAR}, s.status, s.funding,
       date '{YEAR - 1}-10-01', s.business_date, s.starts, s.ends, s.reason, s.waiting
FROM memberships m
JOIN households h ON h.id = m.household_id
CROSS JOIN LATERAL (
    SELECT CASE WHEN paid THEN 'paid' ELSE 'registered' END AS status, CASE WHEN paid THEN 'paid' END AS funding,
           CASE WHEN paid THEN date '{YEAR - 1}-12-01' + (hashtext(m.person_id::text) & 63) END AS business_date,
           CASE WHEN paid THEN date '{YEAR}-01-01' END AS starts, CASE WHEN paid THEN date '{YEAR}-12-31' END AS ends,
           CASE WHEN paid THEN 'in_window' END AS reason, CASE WHEN paid THEN 0 END AS waiting
    FROM (SELECT hashtext(m.person_id::text) % 2 = 0 AS paid) AS p
) AS s
WHERE h.household_no LIKE 'bench-%';
RESET session_replication_role;
ANALYZE enrollments;
"""
BASELINE_TABLE = """
CREATE TABLE bench_history (
    id_number text NOT NULL CHECK (id_number ~ '^[0-9]{17}[0-9X]$'),
    coverage_year integer NOT NULL,
    status text NOT NULL,
    PRIMARY KEY (id_number, coverage_year)
);
"""
PAID = f"""SELECT count(*) FROM enrollments e JOIN households h ON h.id = e.household_id
WHERE h.household_no LIKE 'bench-%' AND e.coverage_year = {YEAR} AND e.status = 'paid'"""
SUMMARY = re.compile(r"(\d+) rows: (\d+) new, (\d+) updated, (\d+) unchanged")


def write_history(path: Path, persons: int, area: str, status: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("身份证号,参保年度,状态\n")
        f.writelines(f"{resident_id(n, area)},{YEAR - 1},{status}\n" for n in range(persons))


def ours(dsn: str, path: Path, work: Path) -> Run:
    asyncio.run(sql(dsn, "CHECKPOINT"))
    return run([CANBAO, "enrollments", "import", str(path)], server_env(dsn), work, f"ours-{path.stem}")


def baseline(dsn: str, path: Path, work: Path) -> Run:
    asyncio.run(sql(dsn, "CHECKPOINT"))
    copy = f"\\copy bench_history (id_number, coverage_year, status) FROM '{path}' WITH (FORMAT csv, HEADER true)"
    argv = [PSQL or "psql", dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "TRUNCATE bench_history", "-c", copy]
    return run(argv, server_env(dsn), work, f"baseline-{path.stem}")


def check(result: Run, rows: int, new: int, updated: int) -> None:
    found = SUMMARY.search(result.stdout)
    got = tuple(int(g) for g in found.groups()) if found else None
    if got != (rows, new, updated, 0):
        raise RuntimeError(
            f"canbao enrollments import said {result.stdout.strip()!r}; expected {rows} rows, "
            f"{new} new, {updated} updated"
        )


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    persons = 2_000 if args.quick else 200_000
    if PSQL is None:
        raise SystemExit("psql not found (Debian: postgresql-client)")
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        area = unused_area(db.dsn)
        asyncio.run(load_persons(db.dsn, persons, area))
        started = time.perf_counter()
        asyncio.run(sql(db.dsn, ENROL))
        asyncio.run(sql(db.dsn, BASELINE_TABLE))
        paid = asyncio.run(sql(db.dsn, PAID))
        files = (work / "history-a.csv", work / "history-b.csv")
        write_history(files[0], persons, area, "已缴费")
        write_history(files[1], persons, area, "已注销")
        took = time.perf_counter() - started
        log(f"enrolled {persons} persons for {YEAR} ({paid} paid), wrote 2 files in {took:.1f} s")
        first = ours(db.dsn, files[0], work)
        check(first, persons, persons, 0)
        log(describe("ours", 1, first))
        first_bare = baseline(db.dsn, files[0], work)
        log(describe("baseline", 1, first_bare))
        again = ours(db.dsn, files[1], work)
        check(again, persons, 0, persons)
        log(describe("ours", 2, again))
        again_bare = baseline(db.dsn, files[1], work)
        log(describe("baseline", 2, again_bare))
        reviewed = asyncio.run(sql(db.dsn, "SELECT count(*) FROM enrollments WHERE gap_review IS NOT NULL"))
        reopened = asyncio.run(sql(db.dsn, "SELECT count(*) FROM audit_log WHERE action = 'reopen'"))

    print(f"{persons} rows a file, persons enrolled for {YEAR} ({paid} paid); version 1: file A (new), 2: file B")
    print(f"after both: {reopened} reopenings audited, {reviewed} paid enrolments with an open gap review")
    for version, mine, bare in ((1, first, first_bare), (2, again, again_bare)):
        print(describe("ours", version, mine) + f"; {mine.seconds / persons * 1e6:.0f} µs a row")
        print(describe("baseline", version, bare))
    print(
        f"ratio={again.seconds / again_bare.seconds:.1f} ours={again.seconds:.2f}s baseline={again_bare.seconds:.2f}s "
        f"ours_first={first.seconds:.2f}s ours_peak_rss={max(first.peak_rss_mb, again.peak_rss_mb):.1f}MB",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
