"""Does the API stay responsive while a big list is uploaded and imported?

A household read (township staff `GET /api/v1/households/{id}`: auth, scope, audit row) at 4
connections, first alone, then while a civil-affairs officer uploads a 1,000,000-row list (about
60 MB of CSV, sent by curl from another process) and a job worker of the same `canbao serve`
imports it. The read's latencies are split by phase: while the upload is being received (until the
202), and while the job runs (until it has ended). The import's own time (the job's start to its
end) is set against `psql \\copy` of the same file into a table like list_entries (as in
list_import.py), on the same database afterwards.

Aims (issue 15): read p99 during the import ≤ 3 × p99 alone; the import ≤ 2.0 × psql \\copy.
Last line: ratio = read p99 during the import / read p99 alone (the baseline: the same read, alone).

    python bench/import_responsiveness.py            # full: 1,000,000 rows, ~3 minutes
    python bench/import_responsiveness.py --quick    # CI: 20,000 rows
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from _harness import (
    canbao_server,
    database,
    exit_on_signals,
    load_average,
    log,
    login,
    parse_args,
    unused_area,
    workdir,
)
from list_import import BASELINE_TABLE, VILLAGES, baseline, sql, write_list

CONNECTIONS = 4
CURL = shutil.which("curl")


@dataclass
class Reads:
    """Each read's end time (monotonic) and latency (s)."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    def p99(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, int]:
        chosen = sorted(latency for at, latency in self.samples if start <= at <= end)
        if not chosen:
            return float("nan"), 0
        return chosen[max(0, -(-len(chosen) * 99 // 100) - 1)] * 1000, len(chosen)


async def read_until(url: str, path: str, headers: dict[str, str], stop: asyncio.Event, reads: Reads) -> None:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120, headers=headers) as client:

        async def one() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                response = await client.get(path)
                if response.status_code != 200:
                    raise RuntimeError(f"household read answered {response.status_code}: {response.text[:300]}")
                reads.samples.append((time.monotonic(), time.monotonic() - t0))

        await asyncio.gather(*(one() for _ in range(CONNECTIONS)))


async def upload(url: str, headers: dict[str, str], path: Path) -> dict[str, str]:
    """The upload, from a process of its own (curl), so that sending 60 MB costs this loop nothing."""
    assert CURL is not None, "the benchmark needs curl (Debian package curl)"
    proc = await asyncio.create_subprocess_exec(
        CURL,
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-H",
        f"Authorization: {headers['Authorization']}",
        "-F",
        f"file=@{path};filename=list.csv",
        "-F",
        "type=di_bao",
        "-F",
        "effective_from=2025-09-01",
        f"{url}/api/v1/eligibility/lists?background=true",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    body, _, status = out.decode().rpartition("\n")
    if status != "202":
        raise RuntimeError(f"the upload answered {status}: {body[:500]}")
    return httpx.Response(202, content=body).json()  # type: ignore[no-any-return]


async def measure(url: str, household: str, file: Path, alone_s: float) -> tuple[Reads, float, float, dict]:
    staff, civil = login(url, "staff_a"), login(url, "civil")
    path = f"/api/v1/households/{household}"
    reads = Reads()
    stop = asyncio.Event()
    log(f"reading alone for {alone_s} s")
    loop = asyncio.create_task(read_until(url, path, staff, stop, reads))
    await asyncio.sleep(alone_s)
    receiving = time.monotonic()
    log("uploading while reading")
    job = await upload(url, civil, file)
    importing = time.monotonic()
    log(f"202 after {importing - receiving:.1f} s; the job runs while reading")
    async with httpx.AsyncClient(base_url=url, headers=civil, timeout=60) as client:
        while job["state"] in ("queued", "running"):
            await asyncio.sleep(0.5)
            job = (await client.get(job["href"])).json()
    done = time.monotonic()
    stop.set()
    await loop
    if job["state"] != "succeeded":
        raise RuntimeError(f"the import job ended {job['state']}: {job.get('error')}")
    return reads, receiving, importing, job | {"done": done}


def main() -> int:
    args = parse_args(__doc__)
    exit_on_signals()
    rows, alone_s = (20_000, 3.0) if args.quick else (1_000_000, 20.0)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        villages = asyncio.run(sql(db.dsn, VILLAGES))
        assert isinstance(villages, list)
        file = work / "list.csv"
        write_list(file, range(rows), range(0), unused_area(db.dsn), villages)
        size_mb = file.stat().st_size / 1e6
        household = asyncio.run(
            sql(db.dsn, "SELECT id::text FROM households WHERE village_code LIKE '330106001%' ORDER BY id LIMIT 1")
        )
        with canbao_server(db.dsn, work) as ours:
            reads, receiving, importing, job = asyncio.run(measure(ours.url, str(household), file, alone_s))
        loaded = job["result"]["rows_loaded"]
        if loaded != rows:
            raise RuntimeError(f"the job loaded {loaded} rows, expected {rows}")
        asyncio.run(sql(db.dsn, BASELINE_TABLE))
        copy = baseline(db.dsn, file, 1, work)

    job_s = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    alone, n_alone = reads.p99(end=receiving)
    during_upload, n_upload = reads.p99(receiving, importing)
    during_import, n_import = reads.p99(importing, job["done"])
    print(f"{rows} rows ({size_mb:.0f} MB); household read at {CONNECTIONS} connections")
    print(f"read alone: p99={alone:.1f}ms over {n_alone} reads")
    print(
        f"read while the upload was received ({importing - receiving:.1f} s): p99={during_upload:.1f}ms over {n_upload}"
    )
    print(f"read while the job imported ({job['done'] - importing:.1f} s): p99={during_import:.1f}ms ({n_import})")
    print(
        f"import: job {job_s:.2f} s, psql \\copy {copy.seconds:.2f} s, "
        f"import_ratio={job_s / copy.seconds:.2f} (aim ≤ 2.0); load average {load_average()}"
    )
    print(f"ratio={during_import / alone:.2f} ours={during_import:.1f}ms baseline={alone:.1f}ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
