"""Baseline of household_create.py: bare Litestar + asyncpg writing a household, its persons, memberships
and enrolments in one transaction; no auth, rules or audit; the head comes first. Numbers are stored
as the schema keeps them: blind index and sealed value, with the run's keys (CANBAO_KEY_FILE)."""

import os
from pathlib import Path
from uuid import uuid4

import asyncpg
import msgspec
from litestar import Litestar, post
from litestar.datastructures import State

from backend.crypto import ID_NUMBER, read_key_file

KEYS = read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
PERSONS = """INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date) SELECT p, h, e, nm, CASE
WHEN substr(n, 17, 1)::int % 2 = 1 THEN 'male' ELSE 'female' END, to_date(substr(n, 7, 8), 'YYYYMMDD')
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS x(p, n, nm, h, e)"""
HOUSEHOLD = "INSERT INTO households (id, village_code, household_no, head_person_id) VALUES ($1, $2, $3, $4)"
MEMBERSHIPS = """INSERT INTO memberships (id, person_id, household_id, relation) SELECT gen_random_uuid(), p, $2, r
FROM unnest($1::uuid[], $3::text[]) AS m(p, r)"""
ENROLMENTS = """INSERT INTO enrollments (id, person_id, household_id, village_code, coverage_year, status,
registered_on) SELECT gen_random_uuid(), p, $2, $3, $4, 'registered', current_date FROM unnest($1::uuid[]) AS p"""


class HouseholdIn(msgspec.Struct):
    village_code: str
    household_no: str
    coverage_year: int
    members: list[dict[str, str]]  # name, relation, id_number


@post("/households")
async def create(data: HouseholdIn, state: State) -> dict[str, str]:
    hid, ms = uuid4(), data.members
    pids, numbers = [uuid4() for _ in ms], [m["id_number"] for m in ms]
    async with state.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            PERSONS,
            pids,
            numbers,
            [m["name"] for m in ms],
            KEYS.index_many(ID_NUMBER, numbers),
            KEYS.seal_many(ID_NUMBER, numbers),
        )
        await conn.execute(HOUSEHOLD, hid, data.village_code, data.household_no, pids[0])
        await conn.execute(MEMBERSHIPS, pids, hid, [m["relation"] for m in ms])
        await conn.execute(ENROLMENTS, pids, hid, data.village_code, data.coverage_year)
    return {"id": str(hid)}


async def start(app: Litestar) -> None:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size)


app = Litestar([create], on_startup=[start])
