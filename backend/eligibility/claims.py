"""Claims: a township officer claims a category for a person missing from the lists; civil affairs
accepts or rejects it, and an accepted claim counts like a list row. A claim keeps the person's number
as the person's row does (blind index and sealed value) and shows none.

A claim of a subsidy category gives the subsidy (purpose `subsidy`); a claim of an evidence list type
(employee insurance that ended, a discharge) is a paper proof of an exemption from the waiting period
(purpose `exemption`) and gives the proof's dates: from (the discharge, the start of the insured
period) and, for employee insurance, to (its end)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor, Role, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.eligibility.check import facts_by_hash
from backend.eligibility.lists import ListType, Year, list_kind
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7

Q = load_queries("backend.eligibility")


ClaimStatus = Literal["pending", "accepted", "rejected"]


class ClaimIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    person_id: UUID
    coverage_year: Year
    category: ListType
    note: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    evidence_ref: Annotated[str, msgspec.Meta(max_length=200)] = ""
    valid_from: date | None = None  # an exemption's proof: the day of discharge, the start of the insured period
    valid_to: date | None = None  # ... the end of the insured period (employee insurance)


class ClaimDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    person_id: UUID
    village_code: str
    coverage_year: int
    category: str
    note: str
    evidence_ref: str
    status: ClaimStatus
    raised_by: UUID
    raised_at: datetime
    decided_by: UUID | None
    decided_at: datetime | None
    reason: str | None
    row_version: int
    purpose: Literal["subsidy", "exemption"] = "subsidy"
    valid_from: date | None = None
    valid_to: date | None = None


class ClaimPage(msgspec.Struct, frozen=True):
    items: list[Claim]
    next_cursor: UUID | None


class ClaimNotPending(Conflict):
    """The claim has been decided already"""

    code = "claim_decided"


class AlreadyListed(Conflict):
    """The person is on that list already; no claim is needed"""

    code = "already_listed"


class ClaimExists(Conflict):
    """A pending or accepted claim for that person, year and category exists"""

    code = "claim_exists"


def _claim(row: asyncpg.Record) -> Claim:
    data = dict(row.items())
    data.pop("id_number_hash", None)
    data.pop("id_number_enc", None)
    return msgspec.convert(data, Claim)


async def raise_claim(conn: Connection, actor: Actor, data: ClaimIn, today: date) -> Claim:
    home = await conn.fetchrow(Q["person_home"], data.person_id)
    if home is None or not actor.in_scope(home["village_code"]):
        raise NotFound()
    kind = await list_kind(conn, data.category)
    if kind not in ("subsidy", "evidence"):
        raise InvalidInput("category", _("is not a subsidy category or evidence of an exemption"))
    purpose = "subsidy" if kind == "subsidy" else "exemption"
    if purpose == "exemption" and data.valid_from is None:
        raise InvalidInput("valid_from", _("the proof's date is needed for evidence of an exemption"))
    if data.category == "employee_insurance_ended" and data.valid_to is None:
        raise InvalidInput("valid_to", _("the end of the employee insurance is needed"))
    if data.valid_from is not None and data.valid_to is not None and data.valid_to < data.valid_from:
        raise InvalidInput("valid_to", _("must not be before valid_from"))
    if home["id_number_hash"] is not None:
        known = await facts_by_hash(conn, [home["id_number_hash"]], data.coverage_year, today)
        held = known.get(home["id_number_hash"])
        if held and any(h.category == data.category and h.source.kind == "list" for h in held.categories):
            raise AlreadyListed()
    try:
        row = await conn.fetchrow(
            Q["insert_claim"],
            uuid7(),
            data.person_id,
            home["id_number_hash"],
            home["id_number_enc"],
            home["village_code"],
            data.coverage_year,
            data.category,
            data.note,
            data.evidence_ref,
            actor.id,
            purpose,
            data.valid_from,
            data.valid_to,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "eligibility_claims_one_open":
            raise ClaimExists() from exc
        raise
    assert row is not None
    claim = _claim(row)
    await record(
        conn,
        actor,
        "create",
        "eligibility_claim",
        claim.id,
        division_code=claim.village_code,
        summary={"person_id": str(claim.person_id), "year": claim.coverage_year, "category": claim.category},
    )
    return claim


async def get_claim(conn: Connection, actor: Actor, claim_id: UUID) -> Claim:
    row = await conn.fetchrow(Q["claim"], claim_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    await record(conn, actor, "read", "eligibility_claim", claim_id, division_code=row["village_code"])
    return _claim(row)


async def decide_claim(conn: Connection, actor: Actor, claim_id: UUID, accept: bool, reason: str) -> Claim:
    row = await conn.fetchrow(Q["claim_for_update"], claim_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    if row["status"] != "pending":
        raise ClaimNotPending(current=row["status"])
    if not accept and not reason.strip():
        raise InvalidInput("reason", _("a rejection needs a reason"))
    if row["raised_by"] == actor.id or actor.role is not Role.CIVIL_AFFAIRS:
        raise InvalidInput("claim", _("is decided by civil affairs, never by whoever raised it"))
    status = "accepted" if accept else "rejected"
    updated = await conn.fetchrow(Q["decide_claim"], claim_id, status, actor.id, reason.strip() or None)
    assert updated is not None
    await record(
        conn,
        actor,
        "accept" if accept else "reject",
        "eligibility_claim",
        claim_id,
        division_code=row["village_code"],
        summary={"from": "pending", "to": status, "category": row["category"]},
    )
    return _claim(updated)


async def claim_queue(
    conn: Connection,
    actor: Actor,
    *,
    status: str | None,
    category: str | None,
    year: int | None,
    village_code: str | None,
    after: UUID | None,
    limit: int,
) -> ClaimPage:
    rows = await conn.fetch(
        Q["claim_queue"], *scope_args(actor), status, category, year, village_code, after, limit + 1
    )
    items = [_claim(r) for r in rows[:limit]]
    await record(
        conn,
        actor,
        "read",
        "eligibility_claims",
        None,
        division_code=actor.scope.division_code,
        summary={"status": status, "category": category, "year": year, "results": len(items)},
    )
    return ClaimPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)
