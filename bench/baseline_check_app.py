"""Baseline of eligibility_check.py: bare Litestar + asyncpg answering an eligibility check with the
numbers' blind index (the same key file as Canbao's, CANBAO_KEY_FILE) and one `id_number_hash =
ANY($1)` SELECT of the list rows (no auth, no normalising or checking of the numbers, no versions in
force, claims, enrolments, policy or audit). Environment: DATABASE_URL, CANBAO_KEY_FILE,
CANBAO_POOL_MAX_SIZE (the pool size, as Canbao's)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, post
from litestar.datastructures import State

from backend import crypto

KEYS = crypto.read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
ROWS = """
SELECT id_number_hash, version_id, row_no, valid_from, valid_to
FROM list_entries
WHERE id_number_hash = ANY($1::bytea[])
"""


class CheckIn(msgspec.Struct):
    id_numbers: list[str]


@post("/eligibility/check", status_code=200)
async def check(data: CheckIn, state: State) -> dict[str, Any]:
    hashes = KEYS.index_many(crypto.ID_NUMBER, data.id_numbers)
    rows = await state.pool.fetch(ROWS, hashes)
    return {"items": [dict(r) for r in rows]}


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = Litestar([check], lifespan=[lifespan])
