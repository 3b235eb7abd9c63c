"""Baseline of sync_concurrent_push.py: a push's rows by plain INSERTs (executemany per table), one transaction."""

import os
from datetime import date
from pathlib import Path
from uuid import uuid4

import asyncpg
import msgspec
from litestar import Litestar, Request, post

from backend.crypto import ID_NUMBER, read_key_file
from mobile_sync_protocol import messages as m

DECODE, KEYS = msgspec.msgpack.Decoder(m.AnyMutation), read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
SEAL = lambda n: (KEYS.index(ID_NUMBER, n), KEYS.seal(ID_NUMBER, n))  # noqa: E731  (as ours stores an ID number)
TABLES = """persons id id_number_hash id_number_enc name sex birth_date
households id village_code household_no head_person_id
memberships id person_id household_id relation
enrollments id person_id household_id village_code coverage_year status funding registered_on premium_fen
payments id household_id village_code coverage_year person_ids amount_fen method kind receipt_no receipt_block_id
    collector_id device_id collected_at business_date remittance_date""".replace("\n ", " ").splitlines()
ARGS = lambda c: ", ".join(f"${i}" for i in range(1, len(c) + 1))  # noqa: E731
INSERTS = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({ARGS(c)})" for t, *c in map(str.split, TABLES)}


@post("/push", status_code=200)
async def push(request: Request) -> dict[str, int]:
    env, today, village = msgspec.msgpack.decode(await request.body(), type=m.PushRequest), date.today(), {}
    rows: dict[str, list[tuple]] = {table: [] for table in INSERTS}
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        block = await conn.fetchrow("SELECT id, collector_id FROM receipt_blocks WHERE device_id = $1", env.device_id)
        for mu in (DECODE.decode(raw) for raw in env.mutations):
            if isinstance(mu, m.HouseholdCreate | m.MemberCreate):
                x = mu.members[0] if isinstance(mu, m.HouseholdCreate) else mu.member
                if isinstance(mu, m.HouseholdCreate):
                    village[mu.household_id] = mu.village_code
                    rows["households"].append((mu.household_id, mu.village_code, mu.household_no, x.person_id))
                n, sex = x.id_number or "", "male" if int((x.id_number or "0" * 17)[16]) % 2 else "female"
                born = date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
                rows["persons"].append((x.person_id, *SEAL(n), x.name, sex, born))
                rows["memberships"].append((uuid4(), x.person_id, mu.household_id, x.relation))
            elif isinstance(mu, m.EnrollmentCreate):
                e = (mu.household_id, village[mu.household_id], mu.coverage_year, "paid", "paid", today, 40000)
                rows["enrollments"] += [(uuid4(), p, *e) for p in mu.person_ids]
            elif isinstance(mu, m.PaymentRecord):
                y = (mu.payment_id, mu.household_id, village[mu.household_id], mu.coverage_year, mu.person_ids)
                y += (mu.amount_fen, mu.method, mu.kind, mu.receipt_no, *block, env.device_id, mu.collected_at)
                rows["payments"].append((*y, today, today))
        for table, sql in INSERTS.items():
            await conn.executemany(sql, rows[table])
    return {"mutations": len(env.mutations)}


async def start(app: Litestar) -> None:  # the same pool size as Canbao's (the harness sets it)
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size)


app = Litestar([push], on_startup=[start], request_max_body_size=64 * 1024 * 1024)
