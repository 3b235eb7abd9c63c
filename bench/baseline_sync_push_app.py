"""Baseline of sync_push.py: the same push body (MessagePack) written as persons, households, memberships, enrolments
(paid) and payments, one COPY per table, one transaction; no auth, ledger, rules, audit. Env: DATABASE_URL,
CANBAO_KEY_FILE (the ID numbers are stored as ours stores them: blind index and sealed)."""

import os
from datetime import date
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg
import msgspec
from litestar import Litestar, Request, post
from litestar.datastructures import State

from backend.crypto import ID_NUMBER, read_key_file
from mobile_sync_protocol import messages as m

DECODE = msgspec.msgpack.Decoder(m.AnyMutation)
# A person's number is stored as ours stores it, blind index and sealed, under the same keys.
KEYS = read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
COLUMNS = {
    table: tuple(names.split())
    for table, names in {
        "persons": "id id_number_hash id_number_enc name sex birth_date",
        "households": "id village_code household_no head_person_id",
        "memberships": "id person_id household_id relation",
        "enrollments": "id person_id household_id village_code coverage_year status funding registered_on premium_fen",
        "payments": "id household_id village_code coverage_year person_ids amount_fen method kind receipt_no "
        "receipt_block_id collector_id device_id collected_at business_date remittance_date",
    }.items()
}


@post("/push", status_code=200)
async def push(request: Request[Any, Any, Any], state: State) -> dict[str, int]:
    env = msgspec.msgpack.decode(await request.body(), type=m.PushRequest)
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    village, today = {}, date.today()
    async with state.pool.acquire() as conn, conn.transaction():
        block, collector = await conn.fetchrow(
            "SELECT id, collector_id FROM receipt_blocks WHERE device_id = $1", env.device_id
        )
        for mu in (DECODE.decode(raw) for raw in env.mutations):
            if isinstance(mu, m.HouseholdCreate | m.MemberCreate):
                x = mu.members[0] if isinstance(mu, m.HouseholdCreate) else mu.member
                if isinstance(mu, m.HouseholdCreate):
                    village[mu.household_id] = mu.village_code
                    rows["households"].append((mu.household_id, mu.village_code, mu.household_no, x.person_id))
                n, sex = x.id_number or "", "male" if int((x.id_number or "0" * 17)[16]) % 2 else "female"
                born = date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
                rows["persons"].append(
                    (x.person_id, KEYS.index(ID_NUMBER, n), KEYS.seal(ID_NUMBER, n), x.name, sex, born)
                )
                rows["memberships"].append((uuid4(), x.person_id, mu.household_id, x.relation))
            elif isinstance(mu, m.EnrollmentCreate):
                rows["enrollments"] += [
                    (
                        uuid4(),
                        p,
                        mu.household_id,
                        village[mu.household_id],
                        mu.coverage_year,
                        "paid",
                        "paid",
                        today,
                        40000,
                    )
                    for p in mu.person_ids
                ]
            elif isinstance(mu, m.PaymentRecord):
                rows["payments"].append(
                    (
                        mu.payment_id,
                        mu.household_id,
                        village[mu.household_id],
                        mu.coverage_year,
                        mu.person_ids,
                        mu.amount_fen,
                        mu.method,
                        mu.kind,
                        mu.receipt_no,
                        block,
                        collector,
                        env.device_id,
                        mu.collected_at,
                        today,
                        today,
                    )
                )
        for table, columns in COLUMNS.items():
            await conn.copy_records_to_table(table, records=rows[table], columns=columns)
    return {"mutations": len(env.mutations)}


async def start(app: Litestar) -> None:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size)


app = Litestar([push], on_startup=[start], request_max_body_size=64 * 1024 * 1024)
