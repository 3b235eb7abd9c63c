"""A household's members: add one, edit one (identity, relation, who is head), remove one, each
under the household's optimistic concurrency (If-Match).

A removed person's live enrolments of open years (the current coverage year or a later one): a
death cancels them all (reason `deceased`); any other removal cancels those still `registered`
(nothing paid: reason `moved_away` for a person who left, `data_error` for one registered by
mistake), while a paid, subsidised or confirmed one stays in force, in the household that paid, for
a reviewer to settle (a refund is a cancellation and a refund request). Enrolments of past years are
history and stay as they are. A household is dissolved by removing its members, so the same holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto
from backend.actor import Actor
from backend.audit.service import changes, record, record_many
from backend.crypto import BIRTH_CERT, ID_NUMBER, PHONE
from backend.db import Connection, load_queries
from backend.enrollment.households import (
    Household,
    Identity,
    MemberIn,
    MemberUpdate,
    PersonAlreadyRegistered,
    check_version,
    deceased_among,
    enrolments_follow,
    existing_people,
    household_alone,
    household_from_rows,
    household_in_scope,
    identity_hashes,
    locked_household,
    member_identity,
    reusable,
    with_members,
    write_people,
)
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _

Q = load_queries("backend.enrollment", "members.sql")


class MemberRemove(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Literal["removed", "deceased", "data_error"]


# The cancel reason of the enrolments a removal cancels (see the module's docstring).
CANCEL_ON_REMOVAL: dict[str, str] = {"deceased": "deceased", "removed": "moved_away", "data_error": "data_error"}
BUMP_WITH_MEMBERS = with_members(Q["bump_household_row"])


async def _bumped(conn: Connection, household_id: UUID, members: bool) -> Household:
    """The household's version bumped, answered with its members; or without them (`members` False:
    a push, which keeps the household's row alone): `members` empty, nobody's numbers opened."""
    if members:
        return household_from_rows(await conn.fetch(BUMP_WITH_MEMBERS, household_id))
    return household_alone(await conn.fetch(Q["bump_household_row"], household_id))


async def add_member(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    if_match: int | None,
    data: MemberIn,
    today: date,
    *,
    members: bool = True,
) -> Household:
    """`members`: answer the household with its members (else without: `_bumped`)."""
    try:
        identity = member_identity("", data, today)
    except InvalidInput:
        # The household's own refusals come first, as when it is read before the member.
        _check_addable(actor, await locked_household(conn, household_id), if_match, data)
        raise
    # The household's row, locked, with whoever already holds the new member's number.
    rows = await conn.fetch(Q["household_for_update_with_people"], household_id, *identity_hashes([identity]))
    household = _check_addable(actor, rows[0] if rows else None, if_match, data)
    known = [
        {
            "id": r["known_id"],
            "id_number_hash": r["known_id_number_hash"],
            "birth_cert_hash": r["known_birth_cert_hash"],
            "household_id": r["known_household_id"],
            "village_code": r["known_village_code"],
        }
        for r in rows
        if r["known_id"] is not None
    ]
    reuse = reusable(actor, [identity], [""], known, deceased=await deceased_among(conn, known))
    person_ids = await write_people(conn, household_id, [data], [identity], reuse)
    await enrolments_follow(conn, actor, list(reuse.values()), household_id, today)
    await record(
        conn,
        actor,
        "add_member",
        "household",
        household_id,
        division_code=household["village_code"],
        summary={"person_id": str(person_ids[0]), "relation": data.relation},
    )
    return await _bumped(conn, household_id, members)


async def add_members(
    conn: Connection, actor: Actor, household_id: UUID, if_match: int | None, members: list[MemberIn], today: date
) -> tuple[Household, list[int]] | None:
    """`add_member` of each member in turn (the first at version `if_match`, each next one at the
    version the one before left), as one set: one read, one insert of the persons and memberships,
    one bump of the household by their number, each membership's change record stamped with the
    version its own bump would have given. The household as the last left it, and the version after
    each. None when anyone of them is already known (reused or refused as `add_member` decides: the
    caller adds them one by one); anything else `add_member` refuses raises (the caller, a push's
    fast path, then adds them one by one to answer each)."""
    identities = [member_identity("", data, today) for data in members]
    rows = await conn.fetch(Q["household_for_update_with_people"], household_id, *identity_hashes(identities))
    for data in members:
        household = _check_addable(actor, rows[0] if rows else None, if_match, data)
    if any(r["known_id"] is not None for r in rows):
        return None
    person_ids = await write_people(conn, household_id, members, identities, {})
    for person_id, data in zip(person_ids, members, strict=True):
        await record(
            conn,
            actor,
            "add_member",
            "household",
            household_id,
            division_code=household["village_code"],
            summary={"person_id": str(person_id), "relation": data.relation},
        )
    after = household_from_rows(await conn.fetch(Q["bump_household_by_with_members"], household_id, person_ids))
    first = after.row_version - len(members) + 1
    return after, list(range(first, after.row_version + 1))


def _check_addable(
    actor: Actor, household: asyncpg.Record | dict[str, Any] | None, if_match: int | None, data: MemberIn
) -> asyncpg.Record | dict[str, Any]:
    """The household a member may be added to: in scope, at the version the caller saw, active."""
    if household is None or not actor.in_scope(household["village_code"]):
        raise NotFound()
    check_version(household, if_match)
    if household["status"] != "active":
        raise Conflict(_("the household is dissolved"))
    if data.relation == "head":
        raise InvalidInput("relation", _("the household has a head; make the new member head afterwards"))
    return household


def opened_person(row: asyncpg.Record) -> dict[str, Any]:
    """A person's row with the sealed numbers opened (`id_number`, `birth_cert_no`, `phone`)."""
    keyring = crypto.keys()
    person = dict(row)
    person["id_number"] = keyring.open(ID_NUMBER, person.pop("id_number_enc"))
    person["birth_cert_no"] = keyring.open(BIRTH_CERT, person.pop("birth_cert_enc"))
    person["phone"] = keyring.open(PHONE, person.pop("phone_enc"))
    return person


async def current_membership(conn: Connection, person_id: UUID) -> asyncpg.Record | None:
    """The person's current membership (id, relation, household, its village), or None."""
    return await conn.fetchrow(Q["current_membership"], person_id)


async def leave_household(conn: Connection, membership_id: UUID, reason: str) -> None:
    """Ends a current membership (`moved`, or a `MemberRemove` reason)."""
    await conn.execute(Q["leave_household"], membership_id, reason)


async def membership_in(conn: Connection, household_id: UUID, person_id: UUID) -> asyncpg.Record:
    """The person's current membership, which must be of `household_id` (else a 404)."""
    membership = await current_membership(conn, person_id)
    if membership is None or membership["household_id"] != household_id:
        raise NotFound()
    return membership


async def update_member(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    person_id: UUID,
    if_match: int | None,
    data: MemberUpdate,
    today: date,
    *,
    locked: Mapping[str, Any] | None = None,
    known: Mapping[str, Any] | None = None,
    members: bool = True,
) -> Household:
    """`locked`: the household's row as `update_household` takes it (`members`: as `add_member`).
    `known`: the person's row as `person_for_update` reads it (numbers opened, as `opened_person`),
    locked in this transaction, with their current membership (`membership_id`, `current_relation`,
    `current_household_id`): read already by a push that holds the household's lock, not read again."""
    household = locked if locked is not None else await household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    if known is None:
        membership: Mapping[str, Any] = dict(await membership_in(conn, household_id, person_id))
        row = await conn.fetchrow(Q["person_for_update"], person_id)
        assert row is not None
        person: Mapping[str, Any] = opened_person(row)
    else:
        if known["id"] != person_id or known["current_household_id"] != household_id:
            raise NotFound()
        membership, person = {"id": known["membership_id"], "relation": known["current_relation"]}, known
    current = Identity(
        id_number=person["id_number"],
        birth_cert_no=person["birth_cert_no"],
        converted_from_15=person["id_converted_from_15"],
        birth_date=person["birth_date"],
        sex=person["sex"],
    )
    identity = member_identity("", data, today, current=current)
    if identity.id_number and identity.id_number != person["id_number"]:
        await existing_people(conn, actor, [identity], [""], exclude=person_id)
    before = {
        "name": person["name"],
        "phone": person["phone"],
        "id_number": person["id_number"],
        "birth_date": person["birth_date"].isoformat(),
        "sex": person["sex"],
        "relation": membership["relation"],
    }
    name = person["name"] if data.name is None else data.name.strip()
    phone = person["phone"] if data.phone is None else data.phone
    keyring = crypto.keys()
    try:
        await conn.execute(
            Q["update_person"],
            person_id,
            keyring.index(ID_NUMBER, identity.id_number),
            keyring.index(BIRTH_CERT, identity.birth_cert_no),
            identity.converted_from_15,
            name,
            identity.sex,
            identity.birth_date,
            keyring.index(PHONE, phone),
            keyring.seal(ID_NUMBER, identity.id_number),
            keyring.seal(BIRTH_CERT, identity.birth_cert_no),
            keyring.seal(PHONE, phone),
        )
    except asyncpg.UniqueViolationError as exc:
        raise PersonAlreadyRegistered() from exc
    relation = membership["relation"]
    if data.relation is not None and data.relation != relation:
        relation = data.relation
        if relation == "head":
            await _change_head(conn, household, person_id, membership["id"], data.former_head_relation)
        elif membership["relation"] == "head":
            raise InvalidInput("relation", _("make another member head instead; a household always has one"))
        else:
            await conn.execute(Q["set_relation"], membership["id"], relation)
    after = {
        "name": name,
        "phone": phone,
        "id_number": identity.id_number,
        "birth_date": identity.birth_date.isoformat(),
        "sex": identity.sex,
        "relation": relation,
    }
    # The audit keeps which fields changed, not the values: they are personal data.
    changed = sorted(changes(before, after))
    await record(
        conn,
        actor,
        "update_member",
        "household",
        household_id,
        division_code=household["village_code"],
        summary={"person_id": str(person_id), "changed": changed},
    )
    return await _bumped(conn, household_id, members)


async def _change_head(
    conn: Connection,
    household: Mapping[str, Any],
    person_id: UUID,
    membership_id: UUID,
    former: str | None,
) -> None:
    if former is None or former == "head":
        raise InvalidInput("former_head_relation", _("give the current head's new relation"))
    old_head = household["head_person_id"]
    if old_head is not None:
        old = await current_membership(conn, old_head)
        if old is not None and old["household_id"] == household["id"]:
            await conn.execute(Q["set_relation"], old["id"], former)
    await conn.execute(Q["set_relation"], membership_id, "head")
    await conn.execute(Q["set_head"], household["id"], person_id)


async def remove_member(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    person_id: UUID,
    if_match: int | None,
    data: MemberRemove,
    today: date,
    *,
    locked: Mapping[str, Any] | None = None,
    known: Mapping[str, Any] | None = None,
    members: bool = True,
) -> Household:
    """`locked`: the household's row as `update_household` takes it (`members`: as `add_member`).
    `known`: the person's current membership (`id`, `membership_id`, `current_relation`,
    `current_household_id`) read under the household's lock in this transaction: not read again."""
    household = locked if locked is not None else await household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    if known is None:
        membership: Mapping[str, Any] = dict(await membership_in(conn, household_id, person_id))
    else:
        if known["id"] != person_id or known["current_household_id"] != household_id:
            raise NotFound()
        membership = {"id": known["membership_id"], "relation": known["current_relation"]}
    current = await conn.fetch(Q["members_with_enrollment"], household_id, 0)
    if membership["relation"] == "head" and len(current) > 1:
        raise Conflict(_("make another member head before removing the head"))
    await leave_household(conn, membership["id"], data.reason)
    if len(current) == 1:
        await conn.execute("UPDATE households SET status = 'dissolved' WHERE id = $1", household_id)
    await record(
        conn,
        actor,
        "remove_member",
        "household",
        household_id,
        division_code=household["village_code"],
        summary={"person_id": str(person_id), "reason": data.reason},
    )
    reason = CANCEL_ON_REMOVAL[data.reason]
    cancelled = await conn.fetch(
        Q["cancel_on_removal"], person_id, today.year, reason, actor.id, data.reason == "deceased"
    )
    await record_many(
        conn,
        actor,
        "cancel",
        "enrollment",
        [
            (r["id"], r["village_code"], {"from": r["from_status"], "to": "cancelled", "reason": reason})
            for r in cancelled
        ],
    )
    return await _bumped(conn, household_id, members)
