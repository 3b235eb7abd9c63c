"""Baseline of prefecture.py: bare Litestar + asyncpg, one SELECT per answer; the report's codes go into its text."""

import os
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from baseline_check_app import ROWS, CheckIn
from baseline_search_app import SEARCH, SearchIn
from litestar import Litestar, get, post
from litestar.datastructures import State

from backend.crypto import ID_NUMBER, read_key_file

KEYS = read_key_file(Path(os.environ["CANBAO_KEY_FILE"]))
MEMBERS = """SELECT p.name, e.status, e.coverage_start, e.premium_fen, e.subsidy_fen, (SELECT sum(amount_fen)
FROM payments y WHERE y.household_id = $1 AND y.coverage_year = $2) AS paid FROM memberships m JOIN persons p
ON p.id = m.person_id LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = $2
AND e.status <> 'cancelled' WHERE m.household_id = $1 AND m.left_at IS NULL"""
COVERED = """SELECT e.status, e.coverage_start, e.coverage_end FROM persons p JOIN enrollments e
ON e.person_id = p.id AND e.coverage_year = $2 AND e.status <> 'cancelled' WHERE p.id_number_hash = $1"""
REPORT = """SELECT h.village_code, count(*) AS persons, count(*) FILTER (WHERE e.status IN ('paid', 'subsidised',
 'confirmed')) AS funded, count(*) FILTER (WHERE e.status = 'registered') AS registered_unpaid
FROM memberships m JOIN households h ON h.id = m.household_id AND h.status = 'active'
LEFT JOIN enrollments e ON e.person_id = m.person_id AND e.coverage_year = {year} AND e.status <> 'cancelled'
WHERE m.left_at IS NULL AND h.village_code BETWEEN '{low}' AND '{high}' GROUP BY h.village_code"""


@post("/households/search", status_code=200)
async def search(data: SearchIn, state: State) -> list[dict[str, Any]]:
    return [dict(r) for r in await state.pool.fetch(SEARCH, KEYS.index(ID_NUMBER, data.id_number))]


@get("/coverage/{household_id:uuid}")
async def coverage(household_id: UUID, year: int, state: State) -> list[dict[str, Any]]:
    return [dict(r) for r in await state.pool.fetch(MEMBERS, household_id, year)]


@post("/covered", status_code=200)
async def covered(data: SearchIn, year: int, state: State) -> list[dict[str, Any]]:
    return [dict(r) for r in await state.pool.fetch(COVERED, KEYS.index(ID_NUMBER, data.id_number), year)]


@post("/eligibility/check", status_code=200)
async def check(data: CheckIn, state: State) -> list[dict[str, Any]]:
    return [dict(r) for r in await state.pool.fetch(ROWS, KEYS.index_many(ID_NUMBER, data.id_numbers))]


@get("/report")
async def report(low: int, high: int, year: int, state: State) -> list[dict[str, Any]]:
    return [dict(r) for r in await state.pool.fetch(REPORT.format(low=low, high=high, year=year))]


async def start(app: Litestar) -> None:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size)


app = Litestar([search, coverage, covered, check, report], on_startup=[start])
