"""Baseline of replicas.py: bare Litestar + asyncpg answering a FHIR CoverageEligibilityRequest with
the patient number's blind index (the same key file as Canbao's, CANBAO_KEY_FILE) and one SELECT of
the person's enrolment of the serviced year, on the primary (no auth, no checking of the request or
the number, no history, ceilings, explanation or audit; a minimal answer). Environment:
DATABASE_URL, CANBAO_KEY_FILE, CANBAO_POOL_MAX_SIZE (the pool size, as Canbao's)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from litestar import Litestar, Request, post
from litestar.datastructures import State

from backend import crypto

KEYS = crypto.read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
COVER = """
SELECT e.status, e.coverage_start, e.coverage_end
FROM persons p JOIN enrollments e ON e.person_id = p.id
WHERE p.id_number_hash = $1 AND e.coverage_year = $2 AND e.status <> 'cancelled'
"""


@post("/fhir/CoverageEligibilityRequest", status_code=200)
async def eligibility(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    body = await request.json()
    number = body["patient"]["identifier"]["value"]
    row = await state.pool.fetchrow(COVER, KEYS.index(crypto.ID_NUMBER, number), int(body["servicedDate"][:4]))
    inforce = row is not None and row["status"] in ("paid", "subsidised", "confirmed")
    return {"resourceType": "CoverageEligibilityResponse", "insurance": [{"inforce": inforce}]}


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size) as pool:
        app.state.pool = pool
        yield


app = Litestar([eligibility], lifespan=[lifespan])
