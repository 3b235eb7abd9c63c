"""Registered persons written straight into the tables, their numbers sealed with the session's keys
(tests.conftest.KEYS), for eligibility tests that need someone in a household but not the household
API: the same blind index and sealed value the enrolment code writes."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg

from backend import crypto
from mobile_sync_protocol.rules.identity import parse_resident_id
from tests.conftest import KEYS

PERSON = """
INSERT INTO persons (id, id_number_hash, id_number_enc, name, sex, birth_date) VALUES ($1, $2, $3, $4, $5, $6)
"""
HOUSEHOLD = """
INSERT INTO households (id, village_code, household_no, head_person_id) VALUES ($1, $2, $3, $4)
"""
MEMBERSHIP = "INSERT INTO memberships (id, person_id, household_id, relation) VALUES ($1, $2, $3, $4)"


async def register(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    members: list[tuple[str, str]],
    *,
    village_code: str = "330106001001",
    household_no: str = "0001",
) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A household of `members` (ID number, name; the first is the head): its id and the person id
    of each number."""
    household_id = uuid.uuid4()
    persons: dict[str, uuid.UUID] = {}
    async with conn.transaction():
        for number, name in members:
            parsed = parse_resident_id(number, today=date(2026, 1, 1))
            persons[number] = uuid.uuid4()
            await conn.execute(
                PERSON,
                persons[number],
                KEYS.index(crypto.ID_NUMBER, parsed.number),
                KEYS.seal(crypto.ID_NUMBER, parsed.number),
                name,
                parsed.sex,
                parsed.birth_date,
            )
        head = persons[members[0][0]]
        await conn.execute(HOUSEHOLD, household_id, village_code, household_no, head)
        for i, person_id in enumerate(persons.values()):
            await conn.execute(MEMBERSHIP, uuid.uuid4(), person_id, household_id, "head" if i == 0 else "other")
    return household_id, persons
