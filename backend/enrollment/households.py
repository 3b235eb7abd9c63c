"""Households (户) and their members: create with members in one request, read, edit under
optimistic concurrency, search, and move people between households with history kept."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import fields
from backend.actor import Actor, scope_args
from backend.audit import service as audit
from backend.audit.service import changes, record
from backend.db import Connection, load_queries
from backend.enrollment import enrollments
from backend.enrollment.enrollments import EnrollmentCreate, Year
from backend.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed
from backend.ids import uuid7
from mobile_sync_protocol.rules.identity import IdentityNumberError, parse_birth_certificate_number, parse_resident_id

Q = load_queries("backend.enrollment")

Relation = Literal["head", "spouse", "child", "parent", "grandchild", "grandparent", "sibling", "child_in_law", "other"]
Sex = Literal["male", "female"]
# Free text: never only blanks (it is stripped), never a NUL byte (PostgreSQL refuses it).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=fields.NOT_BLANK)]
Phone = Annotated[str, msgspec.Meta(pattern=fields.PHONE)]
HouseholdNo = Annotated[str, msgspec.Meta(pattern=fields.HOUSEHOLD_NO)]
DivisionCode = Annotated[str, msgspec.Meta(pattern=fields.DIVISION_CODE)]
Address = Annotated[str, msgspec.Meta(max_length=200, pattern=fields.NO_NUL)]


class MemberIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A member as entered. Either an identity number, or — for a newborn without one yet — a
    birth-certificate number (出生医学证明编号) with birth date and sex."""

    id: UUID | None = None  # client-generated person id (tablets create records offline)
    name: Name
    relation: Relation
    id_number: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    birth_cert_no: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    phone: Phone | None = None


class HouseholdCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: UUID | None = None
    village_code: DivisionCode
    household_no: HouseholdNo
    address: Address = ""
    phone: Phone | None = None
    members: Annotated[list[MemberIn], msgspec.Meta(min_length=1, max_length=30)]
    # Enrol every member for this coverage year in the same transaction, as staff do at the door:
    # all or nothing, under the rules of POST /api/v1/enrollments.
    enrol_year: Year | None = None


class HouseholdUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    household_no: HouseholdNo | None = None
    address: Address | None = None
    phone: Phone | None = None


class MemberUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    relation: Relation | None = None
    former_head_relation: Relation | None = None  # when this member becomes head: the old head's new relation
    id_number: Annotated[str, msgspec.Meta(max_length=40)] | None = None  # completes a newborn's record
    birth_date: date | None = None
    sex: Sex | None = None
    phone: Phone | None = None


class MemberRemove(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Literal["removed", "deceased", "data_error"]


class MoveIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to_household_id: UUID
    relation: Relation
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class MoveDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class MemberEnrollment(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    status: str
    coverage_start: date | None
    coverage_end: date | None
    coverage_reason: str | None


class Member(msgspec.Struct, frozen=True, kw_only=True):
    person_id: UUID
    name: str
    relation: Relation
    id_number: str | None
    birth_cert_no: str | None
    id_converted_from_15: bool
    birth_date: date
    sex: Sex
    phone: str | None
    joined_at: datetime
    enrollment: MemberEnrollment | None  # for the year asked, when one was asked


class Household(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    village_code: str
    household_no: str
    address: str
    phone: str | None
    head_person_id: UUID | None
    status: str
    row_version: int
    created_at: datetime
    updated_at: datetime
    members: list[Member]


class HouseholdCreated(Household, frozen=True, kw_only=True, omit_defaults=True):
    """A new household; with `enrol_year`, each member's new enrolment and the household's query code."""

    # Printed on the enrolment slip; shown once, when the household is first enrolled for the year.
    query_code: str | None = None


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


class PersonAlreadyRegistered(Conflict):
    """This person already belongs to a household"""

    code = "person_already_registered"


class HouseholdNumberTaken(Conflict):
    """That household number is already used in this village"""

    code = "household_number_taken"


class PreconditionRequired(DomainError):
    """Send If-Match with the household's ETag"""

    status, code = 428, "precondition_required"


class _Identity(msgspec.Struct, frozen=True):
    id_number: str | None
    birth_cert_no: str | None
    converted_from_15: bool
    birth_date: date
    sex: Sex


def _identity(
    field: str, member: MemberIn | MemberUpdate, today: date, *, current: _Identity | None = None
) -> _Identity:
    """Validates and normalises a member's identity fields (SPEC §2); errors name the field."""
    birth_cert = getattr(member, "birth_cert_no", None)
    if birth_cert is None and current is not None:
        birth_cert = current.birth_cert_no
    if member.id_number is not None:
        try:
            parsed = parse_resident_id(member.id_number, today=today, birth_date=member.birth_date, sex=member.sex)
        except IdentityNumberError as exc:
            name = {"birth_date_mismatch": "birth_date", "sex_mismatch": "sex"}.get(exc.code, "id_number")
            raise InvalidInput(f"{field}{name}", exc.message, reason=exc.code) from None
        return _Identity(
            id_number=parsed.number,
            birth_cert_no=None if birth_cert is None else _birth_cert(field, birth_cert),
            converted_from_15=parsed.converted_from_15,
            birth_date=parsed.birth_date,
            sex=parsed.sex,
        )
    if current is not None:
        if current.id_number is not None and (member.birth_date or member.sex):
            raise InvalidInput(f"{field}birth_date", "follows from the identity number; correct the number instead")
        return _Identity(
            id_number=current.id_number,
            birth_cert_no=current.birth_cert_no,
            converted_from_15=current.converted_from_15,
            birth_date=member.birth_date or current.birth_date,
            sex=member.sex or current.sex,
        )
    if birth_cert is None:
        raise InvalidInput(
            f"{field}id_number", "an identity number, or a newborn's birth-certificate number, is required"
        )
    number = _birth_cert(field, birth_cert)
    if member.birth_date is None:
        raise InvalidInput(f"{field}birth_date", "is required with a birth-certificate number")
    if member.birth_date > today:
        raise InvalidInput(f"{field}birth_date", "must not be in the future")
    if member.sex is None:
        raise InvalidInput(f"{field}sex", "is required with a birth-certificate number")
    return _Identity(
        id_number=None,
        birth_cert_no=number,
        converted_from_15=False,
        birth_date=member.birth_date,
        sex=member.sex,
    )


def _birth_cert(field: str, raw: str) -> str:
    try:
        return parse_birth_certificate_number(raw).number
    except IdentityNumberError as exc:
        raise InvalidInput(f"{field}birth_cert_no", exc.message, reason=exc.code) from None


async def _village_in_scope(conn: Connection, actor: Actor, code: str, field: str = "village_code") -> None:
    _check_village(actor, await conn.fetchval(Q["division_level"], code), code, field)


def _check_village(actor: Actor, level: str | None, code: str, field: str = "village_code") -> None:
    if level != "village" or not actor.in_scope(code):
        raise InvalidInput(field, "no such village in your scope")


async def _existing_people(
    conn: Connection, actor: Actor, identities: list[_Identity], fields: list[str], exclude: UUID | None = None
) -> dict[int, UUID]:
    """Index → person id of members already known and in no household now (they are reused).
    Anyone already in a household is a 409; the other household is named only within scope."""
    rows = await conn.fetch(
        Q["person_ids_by_identity"],
        [i.id_number for i in identities if i.id_number],
        [i.birth_cert_no for i in identities if i.birth_cert_no],
    )
    return _reusable(actor, identities, fields, rows, exclude)


def _reusable(
    actor: Actor,
    identities: list[_Identity],
    fields: list[str],
    rows: Sequence[asyncpg.Record | Mapping[str, Any]],
    exclude: UUID | None = None,
) -> dict[int, UUID]:
    """`_existing_people` on rows already read (`person_ids_by_identity`)."""
    reuse: dict[int, UUID] = {}
    conflicts: list[dict[str, Any]] = []
    for index, identity in enumerate(identities):
        for row in rows:
            same = (identity.id_number and row["id_number"] == identity.id_number) or (
                identity.birth_cert_no and row["birth_cert_no"] == identity.birth_cert_no
            )
            if not same or row["id"] == exclude:
                continue
            if row["household_id"] is None:
                reuse[index] = row["id"]
                continue
            conflict: dict[str, Any] = {"field": fields[index] + "id_number"}
            if actor.in_scope(row["village_code"]):
                conflict["household_id"] = str(row["household_id"])
            conflicts.append(conflict)
    if conflicts:
        raise PersonAlreadyRegistered(conflicts=conflicts)
    return reuse


def _new_people(
    members: list[MemberIn], identities: list[_Identity], reuse: dict[int, UUID]
) -> tuple[list[UUID], list[int]]:
    """Every member's person id (reused, given by the client, or new), and the indexes of new persons."""
    person_ids = [reuse.get(i) or m.id or uuid7() for i, m in enumerate(members)]
    return person_ids, [i for i in range(len(members)) if i not in reuse]


def _person_columns(
    person_ids: list[UUID], members: list[MemberIn], identities: list[_Identity], new: list[int]
) -> tuple[list[Any], ...]:
    """The new persons as the columns `insert_members` and `insert_household_with_members` take."""
    return (
        [person_ids[i] for i in new],
        [identities[i].id_number for i in new],
        [identities[i].birth_cert_no for i in new],
        [identities[i].converted_from_15 for i in new],
        [members[i].name.strip() for i in new],
        [identities[i].sex for i in new],
        [identities[i].birth_date for i in new],
        [members[i].phone for i in new],
    )


async def _write_people(
    conn: Connection,
    household_id: UUID,
    members: list[MemberIn],
    identities: list[_Identity],
    reuse: dict[int, UUID],
) -> list[UUID]:
    person_ids, new = _new_people(members, identities, reuse)
    try:
        await conn.execute(
            Q["insert_members"], *_person_columns(person_ids, members, identities, new), household_id,
            [uuid7() for _ in members], person_ids, [m.relation for m in members],
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        # A concurrent request registered the same person a moment ago.
        if exc.constraint_name in (
            "persons_id_number_key",
            "persons_birth_cert_no_key",
            "memberships_one_current_household",
            "persons_pkey",
        ):
            raise PersonAlreadyRegistered() from exc
        raise
    return person_ids


def _new_members(members: list[MemberIn], fields: list[str], today: date) -> tuple[int, list[_Identity]]:
    """The head's index and every member's identity, checked: one head, valid numbers, nobody twice."""
    heads = [i for i, m in enumerate(members) if m.relation == "head"]
    if len(heads) != 1:
        raise InvalidInput("members", f"exactly one member must be the head (relation 'head'), not {len(heads)}")
    identities = [_identity(fields[i], m, today) for i, m in enumerate(members)]
    seen: dict[str, int] = {}
    for i, identity in enumerate(identities):
        key = identity.id_number or identity.birth_cert_no or ""
        if key in seen:
            raise InvalidInput(fields[i] + "id_number", f"the same person as members[{seen[key]}]")
        seen[key] = i
    return heads[0], identities


async def create_household(conn: Connection, actor: Actor, data: HouseholdCreate, today: date) -> Household:
    """The household alone (a tablet's household.create; its enrolments come as mutations of their
    own): `enrol_year` is `register_household`'s."""
    if data.enrol_year is not None:
        raise ValueError("create_household does not enrol: call register_household")
    household, _ = await _create(conn, actor, data, today)
    return household


async def register_household(
    conn: Connection, actor: Actor, data: HouseholdCreate, today: date, code_key: bytes
) -> HouseholdCreated:
    """A new household and, with `enrol_year`, its members enrolled for that year by `enrollments.enrol`
    in the same transaction; an enrolment refused names the member (`members[i]`) and fails it all."""
    household, person_ids = await _create(conn, actor, data, today)
    fields = {f: getattr(household, f) for f in household.__struct_fields__}
    if data.enrol_year is None:
        return HouseholdCreated(**fields)
    request = EnrollmentCreate(household_id=household.id, coverage_year=data.enrol_year, person_ids=person_ids)
    try:
        enrolled = await enrollments.enrol(conn, actor, request, today, code_key)
    except DomainError as exc:
        _name_as_members(exc)
        raise
    by_person = {
        e.person_id: MemberEnrollment(id=e.id, status=e.status, coverage_start=e.coverage_start,
                                      coverage_end=e.coverage_end, coverage_reason=e.coverage_reason)
        for e in enrolled.items
    }  # fmt: skip
    fields["members"] = [msgspec.structs.replace(m, enrollment=by_person[m.person_id]) for m in household.members]
    return HouseholdCreated(**fields, query_code=enrolled.query_code)


def _name_as_members(exc: DomainError) -> None:
    """An enrolment error in the request's terms: `person_ids[i]` is `members[i]` (same order) and
    `coverage_year` is `enrol_year`."""

    def rename(text: str) -> str:
        return text.replace("person_ids[", "members[").replace("coverage_year", "enrol_year")

    for error in exc.extra.get("errors") or []:
        if isinstance(error.get("field"), str):
            error["field"] = rename(error["field"])
    if exc.detail:
        exc.detail = rename(exc.detail)
        exc.args = (exc.detail,)


async def _create(conn: Connection, actor: Actor, data: HouseholdCreate, today: date) -> tuple[Household, list[UUID]]:
    """The household, and its members' person ids in the order of `data.members`."""
    members = list(data.members)
    fields = [f"members[{i}]." for i in range(len(members))]
    try:
        head, identities = _new_members(members, fields, today)
    except InvalidInput:
        await _village_in_scope(conn, actor, data.village_code)  # a bad village is named before any member
        raise
    # The village's level comes with the people already known: one read for both checks.
    known = await conn.fetch(
        Q["village_and_people_by_identity"], data.village_code,
        [i.id_number for i in identities if i.id_number], [i.birth_cert_no for i in identities if i.birth_cert_no],
    )  # fmt: skip
    _check_village(actor, known[0]["level"], data.village_code)
    reuse = _reusable(actor, identities, fields, [r for r in known if r["id"] is not None])
    household_id = data.id or uuid7()
    person_ids, new = _new_people(members, identities, reuse)
    with audit.gathered(conn) as audit_rows:  # written by the household's own statement
        await audit.record(
            conn, actor, "create", "household", household_id, division_code=data.village_code,
            summary={"members": len(person_ids), "reused_persons": len(reuse)},
        )  # fmt: skip
    try:
        rows = await conn.fetch(
            Q["insert_household_with_members"],
            household_id, data.village_code, data.household_no, data.address, data.phone, actor.id,
            *_person_columns(person_ids, members, identities, new), person_ids[head],
            [uuid7() for _ in members], person_ids, [m.relation for m in members], list(reuse.values()),
            *audit_rows.columns(),
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "households_number_key":
            raise HouseholdNumberTaken(errors=[{"field": "household_no", "message": "already used"}]) from exc
        if exc.constraint_name == "households_pkey":
            raise Conflict("a household with this id exists") from exc
        # A concurrent request registered the same person a moment ago.
        raise PersonAlreadyRegistered() from exc
    audit_rows.written()
    return _household(rows), person_ids


async def _load(conn: Connection, household_id: UUID, year: int | None) -> Household:
    rows = await conn.fetch(Q["household_with_members"], household_id, year or 0)
    if not rows:
        raise NotFound()
    return _household(rows)


def _household(rows: list[asyncpg.Record]) -> Household:
    """A household from `household_with_members` rows (or rows of the same shape)."""
    members = []
    for m in rows:
        if m["person_id"] is None:  # a household without current members
            continue
        enrollment = None
        if m.get("enrollment_id") is not None:
            enrollment = MemberEnrollment(
                id=m["enrollment_id"], status=m["enrollment_status"], coverage_start=m["coverage_start"],
                coverage_end=m["coverage_end"], coverage_reason=m["coverage_reason"],
            )  # fmt: skip
        members.append(
            Member(
                person_id=m["person_id"],
                name=m["name"],
                relation=m["relation"],
                id_number=m["id_number"],
                birth_cert_no=m["birth_cert_no"],
                id_converted_from_15=m["id_converted_from_15"],
                birth_date=m["birth_date"],
                sex=m["sex"],
                phone=m["member_phone"],
                joined_at=m["joined_at"],
                enrollment=enrollment,
            )
        )
    household = {name: rows[0][name] for name in _HOUSEHOLD_COLUMNS}
    return msgspec.convert({**household, "members": members}, Household, from_attributes=True)


_HOUSEHOLD_COLUMNS = tuple(f for f in Household.__struct_fields__ if f != "members")


async def _household_in_scope(conn: Connection, actor: Actor, household_id: UUID) -> asyncpg.Record:
    """The household's row, locked for this transaction's change."""
    row = await conn.fetchrow(Q["household_for_update"], household_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    return row


def check_version(row: asyncpg.Record, if_match: int | None) -> None:
    if if_match is None:
        raise PreconditionRequired()
    if row["row_version"] != if_match:
        raise PreconditionFailed(current_version=row["row_version"])


async def get_household(conn: Connection, actor: Actor, household_id: UUID, year: int | None) -> Household:
    household = await _load(conn, household_id, year)
    if not actor.in_scope(household.village_code):
        raise NotFound()
    await record(conn, actor, "read", "household", household_id, division_code=household.village_code)
    return household


async def update_household(
    conn: Connection, actor: Actor, household_id: UUID, if_match: int | None, data: HouseholdUpdate
) -> Household:
    before = await _household_in_scope(conn, actor, household_id)
    check_version(before, if_match)
    after = {
        "household_no": data.household_no or before["household_no"],
        "address": before["address"] if data.address is None else data.address,
        "phone": before["phone"] if data.phone is None else data.phone,
    }
    try:
        rows = await conn.fetch(
            Q["update_household_with_members"], household_id, after["household_no"], after["address"], after["phone"]
        )
    except asyncpg.UniqueViolationError as exc:
        raise HouseholdNumberTaken(errors=[{"field": "household_no", "message": "already used"}]) from exc
    await record(
        conn, actor, "update", "household", household_id, division_code=before["village_code"],
        summary={"changed": sorted(changes({k: before[k] for k in after}, after))},
    )  # fmt: skip
    return _household(rows)


async def add_member(
    conn: Connection, actor: Actor, household_id: UUID, if_match: int | None, data: MemberIn, today: date
) -> Household:
    try:
        identity = _identity("", data, today)
    except InvalidInput:
        # The household's own refusals come first, as when it is read before the member.
        _check_addable(actor, await conn.fetchrow(Q["household_for_update"], household_id), if_match, data)
        raise
    # The household's row, locked, with whoever already holds the new member's number.
    rows = await conn.fetch(
        Q["household_for_update_with_people"], household_id,
        [identity.id_number] if identity.id_number else [], [identity.birth_cert_no] if identity.birth_cert_no else [],
    )  # fmt: skip
    household = _check_addable(actor, rows[0] if rows else None, if_match, data)
    known = [
        {"id": r["known_id"], "id_number": r["known_id_number"], "birth_cert_no": r["known_birth_cert_no"],
         "household_id": r["known_household_id"], "village_code": r["known_village_code"]}
        for r in rows if r["known_id"] is not None
    ]  # fmt: skip
    reuse = _reusable(actor, [identity], [""], known)
    person_ids = await _write_people(conn, household_id, [data], [identity], reuse)
    await record(
        conn, actor, "add_member", "household", household_id, division_code=household["village_code"],
        summary={"person_id": str(person_ids[0]), "relation": data.relation},
    )  # fmt: skip
    return _household(await conn.fetch(Q["bump_household_with_members"], household_id))


def _check_addable(
    actor: Actor, household: asyncpg.Record | None, if_match: int | None, data: MemberIn
) -> asyncpg.Record:
    """The household a member may be added to: in scope, at the version the caller saw, active."""
    if household is None or not actor.in_scope(household["village_code"]):
        raise NotFound()
    check_version(household, if_match)
    if household["status"] != "active":
        raise Conflict("the household is dissolved")
    if data.relation == "head":
        raise InvalidInput("relation", "the household has a head; make the new member head afterwards")
    return household


async def _membership_in(conn: Connection, household_id: UUID, person_id: UUID) -> asyncpg.Record:
    membership = await conn.fetchrow(Q["current_membership"], person_id)
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
) -> Household:
    household = await _household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    membership = await _membership_in(conn, household_id, person_id)
    person = await conn.fetchrow(Q["person_for_update"], person_id)
    assert person is not None
    current = _Identity(
        id_number=person["id_number"], birth_cert_no=person["birth_cert_no"],
        converted_from_15=person["id_converted_from_15"], birth_date=person["birth_date"], sex=person["sex"],
    )  # fmt: skip
    identity = _identity("", data, today, current=current)
    if identity.id_number and identity.id_number != person["id_number"]:
        await _existing_people(conn, actor, [identity], [""], exclude=person_id)
    before = {
        "name": person["name"], "phone": person["phone"], "id_number": person["id_number"],
        "birth_date": person["birth_date"].isoformat(), "sex": person["sex"], "relation": membership["relation"],
    }  # fmt: skip
    name = person["name"] if data.name is None else data.name.strip()
    phone = person["phone"] if data.phone is None else data.phone
    try:
        await conn.execute(
            Q["update_person"], person_id, identity.id_number, identity.birth_cert_no, identity.converted_from_15,
            name, identity.sex, identity.birth_date, phone,
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise PersonAlreadyRegistered() from exc
    relation = membership["relation"]
    if data.relation is not None and data.relation != relation:
        relation = data.relation
        if relation == "head":
            await _change_head(conn, household, person_id, membership["id"], data.former_head_relation)
        elif membership["relation"] == "head":
            raise InvalidInput("relation", "make another member head instead; a household always has one")
        else:
            await conn.execute(Q["set_relation"], membership["id"], relation)
    after = {
        "name": name, "phone": phone, "id_number": identity.id_number,
        "birth_date": identity.birth_date.isoformat(), "sex": identity.sex, "relation": relation,
    }  # fmt: skip
    # The audit keeps which fields changed, not the values: they are personal data.
    changed = sorted(changes(before, after))
    await record(
        conn, actor, "update_member", "household", household_id, division_code=household["village_code"],
        summary={"person_id": str(person_id), "changed": changed},
    )  # fmt: skip
    return _household(await conn.fetch(Q["bump_household_with_members"], household_id))


async def _change_head(
    conn: Connection, household: asyncpg.Record, person_id: UUID, membership_id: UUID, former: str | None
) -> None:
    if former is None or former == "head":
        raise InvalidInput("former_head_relation", "give the current head's new relation")
    old_head = household["head_person_id"]
    if old_head is not None:
        old = await conn.fetchrow(Q["current_membership"], old_head)
        if old is not None and old["household_id"] == household["id"]:
            await conn.execute(Q["set_relation"], old["id"], former)
    await conn.execute(Q["set_relation"], membership_id, "head")
    await conn.execute(Q["set_head"], household["id"], person_id)


async def remove_member(
    conn: Connection, actor: Actor, household_id: UUID, person_id: UUID, if_match: int | None, data: MemberRemove
) -> Household:
    household = await _household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    membership = await _membership_in(conn, household_id, person_id)
    members = await conn.fetch(Q["members_with_enrollment"], household_id, 0)
    if membership["relation"] == "head" and len(members) > 1:
        raise Conflict("make another member head before removing the head")
    await conn.execute(Q["leave_household"], membership["id"], data.reason)
    if len(members) == 1:
        await conn.execute("UPDATE households SET status = 'dissolved' WHERE id = $1", household_id)
    await record(
        conn, actor, "remove_member", "household", household_id, division_code=household["village_code"],
        summary={"person_id": str(person_id), "reason": data.reason},
    )  # fmt: skip
    return _household(await conn.fetch(Q["bump_household_with_members"], household_id))


def _township(code: str) -> str:
    return code[:9]


async def move_member(
    conn: Connection, actor: Actor, household_id: UUID, person_id: UUID, if_match: int | None, data: MoveIn
) -> Move:
    """Within the caller's township: done at once. To another township: a pending move, which
    the receiving township accepts or rejects."""
    household = await _household_in_scope(conn, actor, household_id)
    check_version(household, if_match)
    membership = await _membership_in(conn, household_id, person_id)
    if data.to_household_id == household_id:
        raise InvalidInput("to_household_id", "is the household the person is in")
    target = await conn.fetchrow(Q["household"], data.to_household_id)
    if target is None or target["status"] != "active":
        raise InvalidInput("to_household_id", "no such active household")
    if membership["relation"] == "head":
        raise Conflict("make another member head before moving the head")
    if data.relation == "head":
        raise InvalidInput("relation", "a person joins as a member; make them head afterwards")
    immediate = actor.in_scope(target["village_code"]) and _township(target["village_code"]) == _township(
        household["village_code"]
    )
    row = await conn.fetchrow(
        Q["insert_move"], uuid7(), person_id, household_id, data.to_household_id, data.relation,
        "accepted" if immediate else "pending", data.note, actor.id, actor.id if immediate else None,
    )  # fmt: skip
    assert row is not None
    if immediate:
        await _carry_out(conn, person_id, membership["id"], household_id, data.to_household_id, data.relation)
    else:
        await conn.execute(Q["bump_household"], household_id)
    await record(
        conn, actor, "move" if immediate else "request_move", "person", person_id,
        division_code=household["village_code"],
        summary={"from": str(household_id), "to": str(data.to_household_id), "move_id": str(row["id"])},
    )  # fmt: skip
    return msgspec.convert(dict(row.items()), Move)


async def _carry_out(
    conn: Connection, person_id: UUID, membership_id: UUID, from_id: UUID, to_id: UUID, relation: str
) -> None:
    await conn.execute(Q["leave_household"], membership_id, "moved")
    await conn.execute(Q["insert_membership"], uuid7(), person_id, to_id, relation)
    await conn.execute(Q["bump_household"], from_id)
    await conn.execute(Q["bump_household"], to_id)


async def decide_move(conn: Connection, actor: Actor, move_id: UUID, accept: bool, reason: str) -> Move:
    move = await conn.fetchrow(Q["move_for_update"], move_id)
    if move is None or not (actor.in_scope(move["to_village"]) or actor.in_scope(move["from_village"])):
        raise NotFound()
    if not actor.in_scope(move["to_village"]):
        raise DomainError("only the receiving township decides a move")
    if move["status"] != "pending":
        raise Conflict(f"the move is already {move['status']}")
    if accept:
        membership = await conn.fetchrow(Q["current_membership"], move["person_id"])
        if membership is None or membership["household_id"] != move["from_household_id"]:
            raise Conflict("the person is no longer in the household the move started from")
        await _carry_out(
            conn, move["person_id"], membership["id"], move["from_household_id"], move["to_household_id"],
            move["relation"],
        )  # fmt: skip
    row = await conn.fetchrow(Q["decide_move"], move_id, "accepted" if accept else "rejected", actor.id, reason)
    assert row is not None
    await record(
        conn, actor, "accept_move" if accept else "reject_move", "person", move["person_id"],
        division_code=move["to_village"], summary={"move_id": str(move_id)},
    )  # fmt: skip
    return msgspec.convert(dict(row.items()), Move)


async def list_moves(conn: Connection, actor: Actor, status: str | None, after: UUID | None, limit: int) -> MovePage:
    rows = await conn.fetch(Q["moves_in_scope"], *scope_args(actor), status, after, limit + 1)
    items = [msgspec.convert({k: v for k, v in r.items() if not k.endswith("_village")}, Move) for r in rows[:limit]]
    return MovePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def search(conn: Connection, actor: Actor, criteria: HouseholdSearch, today: date) -> HouseholdPage:
    if criteria.id_number is not None:
        number = criteria.id_number.strip().upper()
        # A birth-certificate number, or a typo, is searched as given: it simply matches nothing.
        with contextlib.suppress(IdentityNumberError):
            number = parse_resident_id(number, today=today).number
        found = [
            msgspec.convert(dict(r.items()), HouseholdSummary)
            for r in await conn.fetch(Q["search_by_identity"], number, *scope_args(actor))
        ]
        items = [
            h for h in found
            if (criteria.household_no is None or h.household_no == criteria.household_no)
            and (criteria.village_code is None or h.village_code == criteria.village_code)
            and (criteria.head_name is None or (h.head_name or "").startswith(criteria.head_name))
            and (criteria.after is None or h.id > criteria.after)
        ][: criteria.limit]  # fmt: skip
        more = False
    else:
        rows = await conn.fetch(
            Q["search_households"], *scope_args(actor), criteria.household_no, criteria.head_name,
            criteria.village_code, criteria.after, criteria.limit + 1,
        )  # fmt: skip
        items = [msgspec.convert(dict(r.items()), HouseholdSummary) for r in rows[: criteria.limit]]
        more = len(rows) > criteria.limit
    # Searches are reads of personal data: record what was searched by, not the values.
    used = sorted(k for k in ("id_number", "household_no", "head_name", "village_code") if getattr(criteria, k))
    await record(
        conn, actor, "search", "household", None, division_code=actor.scope.division_code,
        summary={"criteria": used, "results": len(items)},
    )  # fmt: skip
    return HouseholdPage(items=items, next_cursor=items[-1].id if more else None)
