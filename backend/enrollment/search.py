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
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.enrollment.households import DivisionCode, HouseholdNo
from backend.logs import request_id_var
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
    # Searches are reads of personal data: the statement records what was searched by, not the
    # values, with whom a number found (search.sql).
    used = sorted(k for k in ("id_number", "household_no", "head_name", "village_code") if getattr(criteria, k))
    audit = (
        actor.kind,
        actor.id,
        actor.device_id,
        actor.scope.division_code,
        used,
        request_id_var.get(),
    )
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
            criteria.household_no,
            criteria.head_name,
            criteria.village_code,
            criteria.after,
            criteria.limit,
            *audit,
        )
        more = False
    else:
        rows = await conn.fetch(
            Q["search_households"],
            *scope_args(actor),
            criteria.household_no,
            criteria.head_name,
            criteria.village_code,
            criteria.after,
            criteria.limit,
            *audit,
        )
        more = len(rows) > criteria.limit
    fields = HouseholdSummary.__struct_fields__
    items = [HouseholdSummary(**{f: r[f] for f in fields}) for r in rows[: criteria.limit]]
    return HouseholdPage(items=items, next_cursor=items[-1].id if more else None)
