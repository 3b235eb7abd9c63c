"""Exclusion reviews: a live enrolment of a person who later appears on an exclusion list
(deceased, employee insurance) waits for a township reviewer, who cancels it or keeps it with a
note. The list import opens the reviews; deciding one is a cancellation, so it lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.enrollment import enrollments
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _

Q = load_queries("backend.enrollment", "exclusions.sql")


class ExclusionReview(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    enrollment_id: UUID
    village_code: str
    coverage_year: int
    list_type: str
    list_version_id: UUID
    row_no: int
    status: Literal["open", "cancelled", "kept"]
    created_at: datetime
    decided_by: UUID | None
    decided_at: datetime | None
    note: str


class ExclusionReviewPage(msgspec.Struct, frozen=True):
    items: list[ExclusionReview]
    next_cursor: UUID | None


class ReviewDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["cancel", "keep"]
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


async def review_queue(
    conn: Connection, actor: Actor, *, status: str | None, year: int | None, after: UUID | None, limit: int
) -> ExclusionReviewPage:
    rows = await conn.fetch(Q["review_queue"], *scope_args(actor), status, year, after, limit + 1)
    items = [msgspec.convert(dict(r.items()), ExclusionReview) for r in rows[:limit]]
    return ExclusionReviewPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def decide_review(conn: Connection, actor: Actor, review_id: UUID, data: ReviewDecision) -> ExclusionReview:
    """A reviewer cancels the enrolment (reason: the list's type) or keeps it with a note."""
    row = await conn.fetchrow(Q["review_for_update"], review_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    if row["status"] != "open":
        raise Conflict(_("the review has been decided already"))
    if data.decision == "keep" and not data.note.strip():
        raise InvalidInput("note", _("keeping the enrolment needs a note"))
    if data.decision == "cancel":
        reason: enrollments.CancelReason = "deceased" if row["list_type"] == "deceased" else "employee_insurance"
        request = enrollments.CancelRequest(reason=reason, note=data.note)
        await enrollments.cancel(conn, actor, row["enrollment_id"], request)
    status = "cancelled" if data.decision == "cancel" else "kept"
    updated = await conn.fetchrow(Q["decide_review"], review_id, status, actor.id, data.note)
    assert updated is not None
    await record(
        conn,
        actor,
        "decide",
        "exclusion_review",
        review_id,
        division_code=row["village_code"],
        summary={"to": status, "enrollment_id": str(row["enrollment_id"])},
    )
    return msgspec.convert(dict(updated.items()), ExclusionReview)
