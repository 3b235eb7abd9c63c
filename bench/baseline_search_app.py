"""Baseline of search_by_id.py: bare Litestar + asyncpg answering a household search by a member's
identity number with one indexed SELECT on its blind index (the rows Canbao's search returns); no
auth, scope, audit or transaction. Environment: DATABASE_URL, CANBAO_POOL_MAX_SIZE (the pool size,
as Canbao's), CANBAO_KEY_FILE (the run's keys)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, post
from litestar.datastructures import State

from backend.crypto import ID_NUMBER, read_key_file

KEYS = read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))

SEARCH = """
SELECT h.id, h.village_code, h.household_no, h.address, h.status, h.row_version, hp.name AS head_name,
       (SELECT count(*) FROM memberships c WHERE c.household_id = h.id AND c.left_at IS NULL) AS member_count
FROM persons p
JOIN memberships m ON m.person_id = p.id AND m.left_at IS NULL
JOIN households h ON h.id = m.household_id
LEFT JOIN persons hp ON hp.id = h.head_person_id
WHERE p.id_number_hash = $1
ORDER BY h.id
LIMIT 51
"""


class SearchIn(msgspec.Struct):
    id_number: str


@post("/households/search", status_code=200)
async def search(data: SearchIn, state: State) -> dict[str, Any]:
    rows = await state.pool.fetch(SEARCH, KEYS.index(ID_NUMBER, data.id_number))
    return {"items": [dict(r) for r in rows[:50]], "next_cursor": None}


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = Litestar([search], lifespan=[lifespan])
