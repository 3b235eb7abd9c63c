"""Baseline of payments.py: bare Litestar + asyncpg writing a payment, its allocations (the amount split
evenly) and its idempotency key with the answer, in one transaction; no auth, rules, replay or audit.
Environment: DATABASE_URL, CANBAO_POOL_MAX_SIZE (the pool size, as Canbao's)."""

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec
from litestar import Litestar, Response, post
from litestar.datastructures import State
from litestar.params import Parameter

PAYMENT = """INSERT INTO payments (id, household_id, village_code, coverage_year, person_ids, amount_fen, method,
    kind, receipt_no, collected_at, collector_id, receipt_block_id, business_date, remittance_date)
SELECT $1, h.id, h.village_code, $3, $4, $5, $6, 'premium', $7, $8, $9, $10, d, d FROM households h,
    (SELECT ($8::timestamptz AT TIME ZONE 'Asia/Shanghai')::date) AS b(d) WHERE h.id = $2 RETURNING *"""
ALLOCATIONS = """INSERT INTO payment_allocations (payment_id, person_id, amount_fen)
    SELECT $1, p, $3 FROM unnest($2::uuid[]) AS p"""
KEY = """INSERT INTO idempotency_keys (actor_id, key, route, request_hash, status, response)
    VALUES ($1, $2, 'POST /payments', $3, 201, $4)"""


class PaymentIn(msgspec.Struct):  # in the order of PAYMENT's parameters
    id: UUID
    household_id: UUID
    coverage_year: int
    person_ids: list[UUID]
    amount_fen: int
    method: str
    receipt_no: str
    collected_at: datetime
    collector_id: UUID  # no auth: the client names the collector and the receipt block
    receipt_block_id: UUID


@post("/payments")
async def record(data: PaymentIn, state: State, key: str = Parameter(header="Idempotency-Key")) -> Response[bytes]:
    share = data.amount_fen // len(data.person_ids)
    async with state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(PAYMENT, *msgspec.structs.astuple(data))
        await conn.execute(ALLOCATIONS, data.id, data.person_ids, share)
        body = msgspec.json.encode({"payment": dict(row or {}), "allocations": [[p, share] for p in data.person_ids]})
        await conn.execute(KEY, data.collector_id, key, hashlib.sha256(msgspec.json.encode(data)).digest(), body)
    return Response(body, status_code=201, media_type="application/json")


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = Litestar([record], lifespan=[lifespan])
