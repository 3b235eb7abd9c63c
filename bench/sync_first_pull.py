"""A tablet's first sync in a township of 20,000 households: the whole snapshot, every page, in JSON
and in MessagePack, each with and without gzip, against a bare `COPY (SELECT …) TO STDOUT` of the
same rows, in the same run.

The township (330106001000, three villages; the demo seed's households included) is filled up to
20,000 households straight in PostgreSQL (their ID numbers and phones sealed under the server's keys,
as it stores them), not timed: households of 4 (persons and memberships),
enrolments for 2026 (everyone) and 2027 (every other household, the window under way), one payment
per household and year (1 % of the 2026 ones voided: two payment events each), district subsidy
lists (di_bao 5 %, te_kun 1 % of the township's people, and as many rows again for people
registered elsewhere), a conflict per 500 households, the 2026 and 2027 policies and the tablet's
receipt block. Ours: the tablet (staff_a's, registered and
logged in through the API) pulls with no cursor until `has_more` is false, `limit` records a page,
`Accept-Encoding: identity` or `gzip`; timed from the first request to the last answer (not
decoded meanwhile), bytes as downloaded. Where the server answers uncompressed although gzip was
asked, the gzip figures are the answers compressed here with the protocol's codec
(`codec.gzip_body`), and the time that took is added. Every run must bring every record of the
scope. Baseline: the same named queries pull.py pages through (`backend/sync/queries.sql`), each
run once over the whole scope as `COPY (…) TO STDOUT` (text), through one connection. Last line:
ratio = ours (MessagePack + gzip) / baseline seconds; aim: ours < 10 s, < 20 MB compressed.

    python bench/sync_first_pull.py             # 20,000 households, pages of 5,000
    python bench/sync_first_pull.py --quick     # CI: the demo's ~1,900 households and 300 more
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import io
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from _harness import (
    BIRTH_DAYS,
    BIRTH_EPOCH,
    DEMO_PASSWORD,
    ID_CHECK,
    ID_WEIGHTS,
    TOWNSHIP_A_VILLAGES,
    CpuMeter,
    Database,
    Server,
    business_now,
    canbao_server,
    database,
    exit_on_signals,
    expect,
    load_average,
    log,
    login,
    server_env,
    unused_area,
    workdir,
)

from backend import crypto
from backend.db import load_queries
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

SYNC_Q = load_queries("backend.sync")
FORMATS: tuple[codec.Format, ...] = ("json", "msgpack")
ZERO = uuid.UUID(int=0)
ALL = 2**31 - 1  # a LIMIT that keeps every row
TOWNSHIP_LOW, TOWNSHIP_HIGH = "330106001000", "330106001999"
RULES = {
    "categories": [
        {"category": "te_kun", "rule": {"type": "full"}},
        {"category": "di_bao", "rule": {"type": "percent", "basis_points": 5000}},
    ],
    "categories_stack": False,
    "top_ups": [],
}

_CHECK_SUM = " + ".join(f"substr(b, {i + 1}, 1)::int * {w}" for i, w in enumerate(ID_WEIGHTS))
_VILLAGES = ", ".join(f"'{v}'" for v in TOWNSHIP_A_VILLAGES)
_EPOCH = BIRTH_EPOCH.isoformat()
# Person n lives in household n / 4. Identity numbers as _harness.resident_id, computed in SQL; the
# lists' outsiders are persons n ≥ 4 × households, never registered. Subsidies: di_bao for n % 20 = 7
# (50 %), te_kun for n % 100 = 3 (all of it). `str.format` fills the braces in single braces. The
# numbers and phones are made in SQL (GEN_SQL), sealed and indexed in Python under the server's keys
# (`gen_sealed`, as the server stores them), and LOAD_SQL writes the rows from both. Households and memberships
# date from 400 days before the business day (_harness.BUSINESS_CLOCK), never PostgreSQL's now().
GEN_SQL = f"""
CREATE TEMP TABLE gen ON COMMIT DROP AS
SELECT n, n / 4 AS hh, n % 4 AS pos, (ARRAY[{_VILLAGES}])[(n / 4) % 3 + 1] AS village,
       date '{_EPOCH}' + (n % {BIRTH_DAYS})::int AS born,
       '{{area}}' || to_char(date '{_EPOCH}' + (n % {BIRTH_DAYS})::int, 'YYYYMMDD')
                || lpad((n / {BIRTH_DAYS})::text, 3, '0') AS b,
       CASE WHEN n % 100 = 3 THEN 40000 WHEN n % 20 = 7 THEN 20000 ELSE 0 END AS subsidy
FROM generate_series(0, {{households}} * 8 - 1) AS n;
ALTER TABLE gen ADD COLUMN id_number text, ADD COLUMN phone text, ADD COLUMN household_phone text;
UPDATE gen SET id_number = b || substr('{ID_CHECK}', ({_CHECK_SUM}) % 11 + 1, 1),
               phone = CASE WHEN pos < 2 AND n < {{households}} * 4
                            THEN '13' || lpad((n * 7919 % 1000000000)::text, 9, '0') END,
               household_phone = CASE WHEN pos = 0 AND n < {{households}} * 4
                                      THEN '138' || lpad((hh * 104729 % 100000000)::text, 8, '0') END;
CREATE TEMP TABLE gen_sealed (n integer PRIMARY KEY, id_hash bytea, id_enc bytea, phone_hash bytea, phone_enc bytea,
                              household_phone_hash bytea, household_phone_enc bytea) ON COMMIT DROP;
"""
LOAD_SQL = f"""
INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date, phone_hash, phone_enc)
SELECT md5('p' || n)::uuid, s.id_hash, s.id_enc,
       (ARRAY['王', '李', '张', '刘', '陈', '杨', '赵', '黄', '周', '吴'])[n % 10 + 1]
           || (ARRAY['伟', '芳', '娜', '敏', '静', '强', '磊', '洋', '艳', '军'])[n / 10 % 10 + 1]
           || (ARRAY['', '华', '平', '明', '丽'])[n / 100 % 5 + 1],
       CASE WHEN (n / {BIRTH_DAYS}) % 2 = 1 THEN 'male' ELSE 'female' END, born, s.phone_hash, s.phone_enc
FROM gen JOIN gen_sealed s USING (n) WHERE n < {{households}} * 4;

INSERT INTO households (id, village_code, household_no, address, phone_hash, phone_enc, head_person_id, row_version,
                        created_at)
SELECT md5('h' || hh)::uuid, village, 'fp-' || hh, '北山村' || (hh % 12 + 1) || '组' || (hh % 97 + 1) || '号',
       s.household_phone_hash, s.household_phone_enc, md5('p' || n)::uuid, 4, timestamptz '2025-10-28 10:00+08'
FROM gen JOIN gen_sealed s USING (n) WHERE pos = 0 AND n < {{households}} * 4;

INSERT INTO memberships (id, person_id, household_id, relation, joined_at)
SELECT md5('m' || n)::uuid, md5('p' || n)::uuid, md5('h' || hh)::uuid,
       CASE pos WHEN 0 THEN 'head' WHEN 1 THEN 'spouse' ELSE 'child' END, timestamptz '2025-10-28 10:00+08'
FROM gen WHERE n < {{households}} * 4;

INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status, funding,
                         policy_version_id, registered_on, business_date, premium_fen, subsidy_fen,
                         coverage_start, coverage_end, coverage_reason, row_version)
SELECT md5('e' || y || '-' || n)::uuid, md5('p' || n)::uuid, md5('h' || hh)::uuid, village, y,
       CASE WHEN y = 2026 THEN 'confirmed' ELSE 'paid' END, CASE WHEN subsidy = 40000 THEN 'subsidised' ELSE 'paid' END,
       CASE WHEN y = 2026 THEN '{{policy_2026}}'::uuid ELSE '{{policy_2027}}'::uuid END,
       make_date(y - 1, 10, 8), make_date(y - 1, 10, 8), 40000, subsidy, make_date(y, 1, 1), make_date(y, 12, 31),
       'in_window', 2
FROM gen CROSS JOIN (VALUES (2026), (2027)) AS years (y)
WHERE n < {{households}} * 4 AND (y = 2026 OR hh % 2 = 0);

INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind,
                      receipt_no, receipt_block_id, collector_id, device_id, collected_at, business_date,
                      remittance_date)
SELECT md5('pay' || y || '-' || hh)::uuid, md5('h' || hh)::uuid, min(village), y,
       array_agg(md5('p' || n)::uuid ORDER BY n), sum(40000 - subsidy),
       CASE WHEN hh % 3 = 0 THEN 'qr' ELSE 'cash' END, 'premium',
       'S' || lpad((hh + 1 + CASE WHEN y = 2027 THEN {{households}} ELSE 0 END)::text, 8, '0'),
       '{{block}}', '{{collector}}', '{{device}}',
       make_date(y - 1, 10, 8) + interval '1 hour' + hh * interval '1 second', make_date(y - 1, 10, 8),
       make_date(y - 1, 10, 8)
FROM gen CROSS JOIN (VALUES (2026), (2027)) AS years (y)
WHERE n < {{households}} * 4 AND (y = 2026 OR hh % 2 = 0)
GROUP BY y, hh
HAVING sum(40000 - subsidy) > 0;

INSERT INTO payment_events (id, payment_id, kind, request_id, amount_fen, reason, actor_id, at, business_date)
SELECT md5('ev-r' || hh)::uuid, md5('pay2026-' || hh)::uuid, 'void_requested', NULL::uuid, NULL::bigint,
       '收款员录入错误', '{{collector}}'::uuid, timestamptz '2025-10-08 10:00+08', date '2025-10-08'
FROM generate_series(0, {{households}} - 1) AS hh WHERE hh % 100 = 5
UNION ALL
SELECT md5('ev-a' || hh)::uuid, md5('pay2026-' || hh)::uuid, 'approved', md5('ev-r' || hh)::uuid, NULL, '同意作废',
       '{{reviewer}}', timestamptz '2025-10-08 11:00+08', date '2025-10-08'
FROM generate_series(0, {{households}} - 1) AS hh WHERE hh % 100 = 5;

INSERT INTO list_versions (id, list_type, kind, division_code, scope_prefix, version, effective_from, status,
                           rows_read, rows_loaded, rows_rejected, file_name, file_sha256, uploaded_by)
SELECT md5('list-' || t)::uuid, t, 'subsidy', '330106000000', '330106', 1, date '2025-09-01', 'loaded',
       count(*), count(*), 0, t || '.csv', '\\x00'::bytea, '{{civil}}'
FROM gen CROSS JOIN (VALUES ('di_bao'), ('te_kun')) AS lists (t)
WHERE (t = 'di_bao' AND n % 20 = 7) OR (t = 'te_kun' AND n % 100 = 3)
GROUP BY t;
INSERT INTO list_entries (version_id, row_no, id_number_hash, id_number_enc, name, valid_from, valid_to, division_code)
SELECT md5('list-' || t)::uuid, row_number() OVER (PARTITION BY t ORDER BY n) + 1, s.id_hash, s.id_enc, '某某',
       NULL, NULL, CASE WHEN n < {{households}} * 4 THEN village END
FROM gen JOIN gen_sealed s USING (n) CROSS JOIN (VALUES ('di_bao'), ('te_kun')) AS lists (t)
WHERE (t = 'di_bao' AND n % 20 = 7) OR (t = 'te_kun' AND n % 100 = 3);

INSERT INTO sync_conflicts (id, township_code, household_id, person_id, kind, outcome, fields, base_values,
                            server_values, tablet_values, raised_by)
SELECT md5('c' || hh)::uuid, '330106001000', md5('h' || hh)::uuid, NULL, 'field_overwritten', 'applied',
       '{{{{phone}}}}', '{{conflict_base}}', '{{conflict_server}}', '{{conflict_tablet}}', '{{collector}}'
FROM generate_series(0, {{households}} - 1) AS hh WHERE hh % 500 = 1;
"""


# Setting up: policies, the tablet, its receipt block, the township --------------------------------


def publish_policies(base_url: str) -> dict[int, uuid.UUID]:
    admin = login(base_url, "admin")
    ids = {}
    for year in (2026, 2027):
        existing = httpx.get(f"{base_url}/api/v1/policy-years/{year}", headers=admin, timeout=30)
        if existing.status_code != 200:
            body = {
                "effective_from": f"{year - 1}-09-01",
                "premium_fen": 40000,
                "window_start": f"{year - 1}-09-01",
                "window_end": f"{year - 1}-12-31",
                "rules": RULES,
            }
            expect(
                httpx.post(f"{base_url}/api/v1/policy-years/{year}/versions", json=body, headers=admin, timeout=30), 201
            )
            existing = httpx.get(f"{base_url}/api/v1/policy-years/{year}", headers=admin, timeout=30)
        ids[year] = uuid.UUID(expect(existing, 200).json()["versions"][-1]["id"])
    return ids


@dataclass(frozen=True)
class Tablet:
    device_id: uuid.UUID
    user_id: uuid.UUID
    block_id: uuid.UUID
    token: str


def register_tablet(base_url: str) -> Tablet:
    """staff_a's tablet, logged in with its device credential, and its receipt block S00000001–S00099999."""
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
        "last_no": 99_999,
    }
    issued = expect(
        httpx.post(f"{base_url}/api/v1/receipt-blocks", json=block, headers=login(base_url, "reviewer_a"), timeout=30),
        201,
    ).json()
    return Tablet(uuid.UUID(device_id), uuid.UUID(registered["device"]["owner_id"]), uuid.UUID(issued["id"]), token)


def sealed(keys: crypto.Keyring, kind: str, value: str) -> dict[str, str]:
    """A conflict value as the push keeps it (backend/sync/sealed.py)."""
    return {"sealed": base64.b64encode(keys.seal_bytes(kind, value.encode())).decode()}


async def seal_numbers(conn: asyncpg.Connection, keys: crypto.Keyring) -> None:  # type: ignore[type-arg]
    """`gen_sealed`: each generated number and phone as the server stores it (blind index, sealed)."""

    def pair(kind: str, value: str | None) -> tuple[bytes | None, bytes | None]:
        return keys.index(kind, value), keys.seal(kind, value)

    rows = await conn.fetch("SELECT n, id_number, phone, household_phone FROM gen")
    records = [
        (
            r["n"],
            *pair(crypto.ID_NUMBER, r["id_number"]),
            *pair(crypto.PHONE, r["phone"]),
            *pair(crypto.PHONE, r["household_phone"]),
        )
        for r in rows
    ]
    await conn.copy_records_to_table("gen_sealed", records=records)


async def load_township(
    dsn: str, households: int | None, area: str, tablet: Tablet, policies: dict[int, uuid.UUID]
) -> None:
    """Households added until the township holds `households` (the demo seed has some already); None: 300 more."""
    keys = crypto.read_key_file(Path(server_env(dsn)["CANBAO_KEY_FILE"]))  # the server's
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        existing = await conn.fetchval(
            "SELECT count(*) FROM households WHERE village_code BETWEEN $1 AND $2", TOWNSHIP_LOW, TOWNSHIP_HIGH
        )
        households = 300 if households is None else max(households - existing, 0)
        users = {r["username"]: r["id"] for r in await conn.fetch("SELECT username, id FROM users")}
        # Loading only: consistent by construction, so triggers (foreign keys, change capture) are
        # skipped: a first pull reads the tables, not the change log.
        await conn.execute("SET session_replication_role = replica; SET synchronous_commit = off")
        async with conn.transaction():
            assert area.isdigit()
            await conn.execute(GEN_SQL.format(households=int(households), area=area))
            await seal_numbers(conn, keys)
            conflict = {
                f"conflict_{side}": msgspec.json.encode({"phone": sealed(keys, crypto.PHONE, phone)}).decode()
                for side, phone in (("base", "13800000001"), ("server", "13800000002"), ("tablet", "13800000003"))
            }
            await conn.execute(
                LOAD_SQL.format(
                    households=int(households),
                    area=area,
                    **conflict,
                    block=tablet.block_id,
                    collector=tablet.user_id,
                    device=tablet.device_id,
                    reviewer=users["reviewer_a"],
                    civil=users["civil"],
                    policy_2026=policies[2026],
                    policy_2027=policies[2027],
                )
            )
        await conn.execute("RESET session_replication_role; RESET synchronous_commit")
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
        log(f"loaded {households} households (besides the demo's {existing}) in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


# Ours: the first pull through the API -------------------------------------------------------------


@dataclass
class Run:
    fmt: codec.Format
    gzip: bool
    seconds: float = 0.0
    pages: int = 0
    wire_bytes: int = 0  # as downloaded (compressed when the server compressed)
    body_bytes: int = 0  # the bodies, uncompressed
    zip_seconds: float = 0.0  # gzip done here because the server did not
    level6: tuple[int, float] = (0, 0.0)  # the same at gzip level 6 (bytes, seconds): what a server might pick
    server_gzip: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    entities: Counter[str] = field(default_factory=Counter)
    entity_bytes: Counter[str] = field(default_factory=Counter)  # each upsert encoded on its own

    @property
    def name(self) -> str:
        return f"{'MessagePack' if self.fmt == 'msgpack' else 'JSON'}{' + gzip' if self.gzip else ''}"

    @property
    def total_seconds(self) -> float:
        return self.seconds + self.zip_seconds


def first_pull(base_url: str, tablet: Tablet, run: Run, limit: int, meter: CpuMeter) -> Run:
    headers = {
        "Authorization": f"Bearer {tablet.token}",
        "Content-Type": codec.media_type(run.fmt),
        "Accept-Encoding": "gzip" if run.gzip else "identity",
    }
    bodies: list[bytes] = []
    token: str | None = None
    with httpx.Client(base_url=base_url, timeout=300) as client:
        cpu = meter.sample()
        started = time.perf_counter()
        while True:
            request = m.PullRequest(
                protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, page_token=token, limit=limit
            )
            response = expect(
                client.post("/api/v1/sync/pull", content=codec.encode(request, run.fmt), headers=headers), 200
            )
            run.wire_bytes += response.num_bytes_downloaded
            run.server_gzip = response.headers.get("content-encoding") == "gzip"
            bodies.append(response.content)
            # Only the paging state is read while timing: the tablet's own decoding is not the server's cost.
            token = _page_token(response.content, run.fmt)
            if token is None:
                break
        run.seconds = time.perf_counter() - started
        run.cpu = meter.since(cpu)
    run.pages = len(bodies)
    run.body_bytes = sum(len(b) for b in bodies)
    if run.gzip and not run.server_gzip:
        started = time.perf_counter()
        run.wire_bytes = sum(len(codec.gzip_body(b)) for b in bodies)
        run.zip_seconds = time.perf_counter() - started
        started = time.perf_counter()
        run.level6 = (sum(len(gzip.compress(b, 6, mtime=0)) for b in bodies), time.perf_counter() - started)
    for body in bodies:
        page = codec.decode(body, m.PullResponse, run.fmt)
        for c in page.changes:
            if isinstance(c, m.Upsert):
                run.entities[c.row.__struct_config__.tag] += 1
                run.entity_bytes[c.row.__struct_config__.tag] += len(codec.encode(c, run.fmt))
        if any(isinstance(c, m.Tombstone) for c in page.changes):
            raise RuntimeError("a first pull brought a tombstone")
    return run


def warm_up(base_url: str, tablet: Tablet, limit: int) -> None:
    """A few pages of every kind, untimed: the server's connections and plans are ready, as they
    are on a server that has been up for a while."""
    headers = {"Authorization": f"Bearer {tablet.token}", "Content-Type": m.JSON}
    token = None
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for _ in range(3 * len(FORMATS) * 10):
            request = m.PullRequest(
                protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, page_token=token, limit=min(limit, 100)
            )
            body = expect(
                client.post("/api/v1/sync/pull", content=codec.encode(request, "json"), headers=headers), 200
            ).content
            token = _page_token(body, "json")
            if token is None:
                return


class _Paging(msgspec.Struct):
    has_more: bool = False
    page_token: str | None = None


def _page_token(body: bytes, fmt: codec.Format) -> str | None:
    paging = codec.decode(body, _Paging, fmt)
    return paging.page_token if paging.has_more else None


# Baseline: the same queries, each once over the whole scope, as COPY … TO STDOUT -----------------


@dataclass
class Baseline:
    seconds: float = 0.0
    bytes: int = 0
    gzip_bytes: int = 0
    rows: Counter[str] = field(default_factory=Counter)


def baseline_queries(tablet: Tablet, since: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
    scope = (TOWNSHIP_LOW, TOWNSHIP_HIGH)
    return [
        ("policy_version", SYNC_Q["policies_all"], (ZERO, ALL)),
        ("receipt_block", SYNC_Q["receipt_blocks_of_device"], (tablet.user_id, tablet.device_id, ZERO, ALL)),
        ("household", SYNC_Q["households_in_scope"], (*scope, ZERO, ALL)),
        ("person", SYNC_Q["persons_in_scope"], (*scope, ZERO, ALL)),
        ("membership", SYNC_Q["memberships_in_scope"], (*scope, ZERO, ALL)),
        ("enrollment", SYNC_Q["enrollments_in_scope"], (*scope, ZERO, ALL)),
        ("payment", SYNC_Q["payments_in_scope"], (*scope, ZERO, ALL)),
        ("payment_event", SYNC_Q["payment_events_in_scope"], (*scope, ZERO, ALL)),
        ("subsidy", SYNC_Q["subsidies_in_scope"], (*scope, ZERO, ALL, since)),
        ("conflict", SYNC_Q["conflicts_in_scope"], (*scope, ZERO, ALL)),
    ]


def _statement(sql: str) -> str:
    """A named block without the comment lines (a section heading) and `;` that may follow it, as COPY takes it."""
    lines = sql.rstrip().splitlines()
    while lines and lines[-1].lstrip().startswith("--"):
        lines.pop()
    return "\n".join(lines).rstrip().rstrip(";") + "\n"


async def baseline(dsn: str, tablet: Tablet) -> Baseline:

    from backend.sync.pull import subsidy_horizon

    out = Baseline()
    conn = await asyncpg.connect(dsn)
    try:
        outputs: list[bytes] = []
        queries = baseline_queries(tablet, subsidy_horizon(business_now()))
        started = time.perf_counter()
        for kind, sql, args in queries:
            sink = io.BytesIO()
            status = await conn.copy_from_query(_statement(sql), *args, output=sink)
            out.rows[kind] = int(status.split()[-1])
            outputs.append(sink.getvalue())
        out.seconds = time.perf_counter() - started
    finally:
        await conn.close()
    out.bytes = sum(len(b) for b in outputs)
    out.gzip_bytes = sum(len(codec.gzip_body(b)) for b in outputs)
    return out


def measure(ours: Server, db: Database, households: int | None, limit: int) -> tuple[list[Run], Baseline]:
    policies = publish_policies(ours.url)
    tablet = register_tablet(ours.url)
    asyncio.run(load_township(db.dsn, households, unused_area(db.dsn), tablet, policies))
    meter = CpuMeter(ours, db)
    warm_up(ours.url, tablet, limit)
    runs = []
    for fmt in FORMATS:
        for gz in (False, True):
            run = first_pull(ours.url, tablet, Run(fmt, gz), limit, meter)
            log(
                f"{run.name}: {run.pages} pages in {run.seconds:.2f} s (+ gzip here {run.zip_seconds:.2f} s), "
                f"{run.wire_bytes / 1e6:.1f} MB on the wire, {run.body_bytes / 1e6:.1f} MB of bodies"
            )
            runs.append(run)
    bare = asyncio.run(baseline(db.dsn, tablet))
    log(f"baseline: {sum(bare.rows.values())} rows in {bare.seconds:.2f} s, {bare.bytes / 1e6:.1f} MB")
    for run in runs:
        if run.entities != bare.rows - Counter():  # every record of the scope, and nothing else
            raise RuntimeError(f"{run.name} brought {dict(run.entities)}, the scope holds {dict(bare.rows)}")
    return runs, bare


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the demo's households and 300 more, a few seconds (CI)")
    p.add_argument("--keep-logs", action="store_true", help="keep the server's log (in a new temporary folder)")
    p.add_argument("--households", type=int, default=20_000, help="households in the township (default 20,000)")
    p.add_argument("--limit", type=int, default=5000, help="records per page (the protocol's maximum: 5,000)")
    args = p.parse_args()
    exit_on_signals()
    households = None if args.quick else args.households
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep_logs))
        db = stack.enter_context(database(work))
        ours = stack.enter_context(canbao_server(db.dsn, work))
        runs, bare = measure(ours, db, households, args.limit)
    records, households = sum(bare.rows.values()), bare.rows["household"]
    print(
        f"first pull of {households} households: {records} records "
        f"({', '.join(f'{k} {v}' for k, v in bare.rows.items())}); pages of {args.limit}; "
        f"load average {load_average()}"
    )
    for run in runs:
        zipped = ""
        if run.gzip:
            zipped = (
                " (gzip by the server)"
                if run.server_gzip
                else (
                    f" (gzip -9 here, +{run.zip_seconds:.2f} s; at level 6: {run.level6[0] / 1e6:.2f} MB, "
                    f"{run.level6[1]:.2f} s)"
                )
            )
        cpu = " ".join(f"{k} {v:.2f}" for k, v in run.cpu.items())
        print(
            f"ours {run.name}: {run.total_seconds:.2f} s, {run.pages} pages, {run.wire_bytes / 1e6:.2f} MB on the "
            f"wire{zipped}, {run.wire_bytes / households:.0f} B per household; cpu s: {cpu}"
        )
    for fmt in FORMATS:
        sizes = next(r for r in runs if r.fmt == fmt).entity_bytes
        print(
            f"{fmt} bytes per household, uncompressed, by entity: "
            + ", ".join(f"{k} {v / households:.0f}" for k, v in sizes.most_common())
        )
    print(
        f"baseline COPY: {bare.seconds:.2f} s, {bare.bytes / 1e6:.2f} MB as text, "
        f"{bare.gzip_bytes / 1e6:.2f} MB gzipped"
    )
    best = next(r for r in runs if r.fmt == "msgpack" and r.gzip)
    print(
        f"ratio={best.total_seconds / bare.seconds:.1f} ours={best.total_seconds:.2f}s baseline={bare.seconds:.2f}s "
        f"ours_mb={best.wire_bytes / 1e6:.2f} baseline_mb={bare.gzip_bytes / 1e6:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
