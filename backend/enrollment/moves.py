"""Moves of a person to another household (history kept): within the caller's township at once; to
another township as a pending move, which the receiving township accepts or rejects.

A person's live enrolment of an open year (the current coverage year or a later one) is the
person's: when the move is carried out it follows them into the new household, its status, cover
and money unchanged; the payments already made stay as recorded, each naming the household that
paid (its receipt is never reissued). Enrolments of past years stay with the household they were
made in: they are history.

Locks: the household the person leaves (its row), then the household they join (its row, by its
version bump), then the person's enrolments (`households.enrolments_follow`), the order in which a payment takes a
household's row and then its enrolments (premiums.payments)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

import msgspec

from backend.actor import Actor, scope_args
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.enrollment.households import (
    Relation,
    check_version,
    enrolments_follow,
    household_in_scope,
    household_row,
)
from backend.enrollment.members import current_membership, leave_household, membership_in
from backend.errors import Conflict, DomainError, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7

Q = load_queries("backend.enrollment", "moves.sql")


class MoveIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to_household_id: UUID
    relation: Relation
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class MoveDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Move(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    person_id: UUID
    from_household_id: UUID
    to_household_id: UUID
    relation: str
    status: str
    note: str
    requested_by: UUID
    requested_at: datetime
    decided_by: UUID | None
    decided_at: datetime | None
    decision_reason: str | None


class MovePage(msgspec.Struct, frozen=True):
    items: list[Move]
    next_cursor: UUID | None


def _township(code: str) -> str:
    return code[:9]


async def move_member(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    person_id: UUID,
    if_match: int | None,
    data: MoveIn,
    today: date,
) -> Move:
    """Within the caller's township: done at once. To another township: a pending move, which
    the receiving township accepts or rejects."""
    household = await household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    membership = await membership_in(conn, household_id, person_id)
    if data.to_household_id == household_id:
        raise InvalidInput("to_household_id", _("is the household the person is in"))
    target = await household_row(conn, data.to_household_id)
    if target is None or target["status"] != "active":
        raise InvalidInput("to_household_id", _("no such active household"))
    if membership["relation"] == "head":
        raise Conflict(_("make another member head before moving the head"))
    if data.relation == "head":
        raise InvalidInput("relation", _("a person joins as a member; make them head afterwards"))
    immediate = actor.in_scope(target["village_code"]) and _township(target["village_code"]) == _township(
        household["village_code"]
    )
    row = await conn.fetchrow(
        Q["insert_move"],
        uuid7(),
        person_id,
        household_id,
        data.to_household_id,
        data.relation,
        "accepted" if immediate else "pending",
        data.note,
        actor.id,
        actor.id if immediate else None,
    )
    assert row is not None
    if immediate:
        await _carry_out(
            conn, actor, person_id, membership["id"], household_id, data.to_household_id, data.relation, today
        )
    else:
        await conn.execute(Q["bump_household"], household_id)
    await record(
        conn,
        actor,
        "move" if immediate else "request_move",
        "person",
        person_id,
        division_code=household["village_code"],
        summary={"from": str(household_id), "to": str(data.to_household_id), "move_id": str(row["id"])},
    )
    return msgspec.convert(dict(row.items()), Move)


async def _carry_out(
    conn: Connection,
    actor: Actor,
    person_id: UUID,
    membership_id: UUID,
    from_id: UUID,
    to_id: UUID,
    relation: str,
    today: date,
) -> None:
    await leave_household(conn, membership_id, "moved")
    await conn.execute(Q["insert_membership"], uuid7(), person_id, to_id, relation)
    await conn.execute(Q["bump_household"], from_id)
    await conn.execute(Q["bump_household"], to_id)
    # The person's live enrolments of open years follow them (see the module's docstring).
    await enrolments_follow(conn, actor, [person_id], to_id, today)


async def decide_move(conn: Connection, actor: Actor, move_id: UUID, accept: bool, reason: str, today: date) -> Move:
    move = await conn.fetchrow(Q["move_for_update"], move_id)
    if move is None or not (actor.in_scope(move["to_village"]) or actor.in_scope(move["from_village"])):
        raise NotFound()
    if not actor.in_scope(move["to_village"]):
        raise DomainError(_("only the receiving township decides a move"))
    if move["status"] != "pending":
        raise Conflict(_("the move is already {status}", status=move["status"]))
    if accept:
        membership = await current_membership(conn, move["person_id"])
        if membership is None or membership["household_id"] != move["from_household_id"]:
            raise Conflict(_("the person is no longer in the household the move started from"))
        await _carry_out(
            conn,
            actor,
            move["person_id"],
            membership["id"],
            move["from_household_id"],
            move["to_household_id"],
            move["relation"],
            today,
        )
    row = await conn.fetchrow(Q["decide_move"], move_id, "accepted" if accept else "rejected", actor.id, reason)
    assert row is not None
    await record(
        conn,
        actor,
        "accept_move" if accept else "reject_move",
        "person",
        move["person_id"],
        division_code=move["to_village"],
        summary={"move_id": str(move_id)},
    )
    return msgspec.convert(dict(row.items()), Move)


async def list_moves(conn: Connection, actor: Actor, status: str | None, after: UUID | None, limit: int) -> MovePage:
    rows = await conn.fetch(Q["moves_in_scope"], *scope_args(actor), status, after, limit + 1)
    items = [msgspec.convert({k: v for k, v in r.items() if not k.endswith("_village")}, Move) for r in rows[:limit]]
    return MovePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)
