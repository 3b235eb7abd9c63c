"""Finding households in scope: by a member's identity number (sent in the body, never in a URL), or
by household number, head's name and village. A search is a read of personal data: the audit keeps
what was searched by, not the values."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Annotated
from uuid import UUID

import msgspec

from backend import crypto
from backend.actor import Actor, scope_args
from backend.audit.service import persons, record
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.enrollment.households import DivisionCode, HouseholdNo
from mobile_sync_protocol.rules.identity import IdentityNumberError, parse_resident_id

Q = load_queries("backend.enrollment", "search.sql")


class HouseholdSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    village_code: str
    household_no: str
    address: str
    status: str
    row_version: int
    head_name: str | None
    member_count: int


class HouseholdSearch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Search criteria; an identity number is sent here, in the body, never in a URL."""

    id_number: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    household_no: HouseholdNo | None = None
    head_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    village_code: DivisionCode | None = None
    after: UUID | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class HouseholdPage(msgspec.Struct, frozen=True):
    items: list[HouseholdSummary]
    next_cursor: UUID | None


async def search(conn: Connection, actor: Actor, criteria: HouseholdSearch, today: date) -> HouseholdPage:
    touched: dict[str, list[str]] = {}  # a search by number: the persons it found (their ids)
    if criteria.id_number is not None:
        number = criteria.id_number.strip().upper()
        # A birth-certificate number, or a typo, is searched as given: it simply matches nothing.
        with contextlib.suppress(IdentityNumberError):
            number = parse_resident_id(number, today=today).number
        keyring = crypto.keys()
        rows = await conn.fetch(
            Q["search_by_identity"],
            keyring.index(ID_NUMBER, number),
            *scope_args(actor),
            keyring.index(BIRTH_CERT, number),
        )
        found = [msgspec.convert(dict(r.items()), HouseholdSummary) for r in rows]
        touched = persons(r["person_id"] for r in rows)
        items = [
            h
            for h in found
            if (criteria.household_no is None or h.household_no == criteria.household_no)
            and (criteria.village_code is None or h.village_code == criteria.village_code)
            and (criteria.head_name is None or (h.head_name or "").startswith(criteria.head_name))
            and (criteria.after is None or h.id > criteria.after)
        ][: criteria.limit]
        more = False
    else:
        rows = await conn.fetch(
            Q["search_households"],
            *scope_args(actor),
            criteria.household_no,
            criteria.head_name,
            criteria.village_code,
            criteria.after,
            criteria.limit + 1,
        )
        items = [msgspec.convert(dict(r.items()), HouseholdSummary) for r in rows[: criteria.limit]]
        more = len(rows) > criteria.limit
    # Searches are reads of personal data: record what was searched by, not the values.
    used = sorted(k for k in ("id_number", "household_no", "head_name", "village_code") if getattr(criteria, k))
    await record(
        conn,
        actor,
        "search",
        "household",
        None,
        division_code=actor.scope.division_code,
        summary={"criteria": used, "results": len(items), **touched},
    )
    return HouseholdPage(items=items, next_cursor=items[-1].id if more else None)
