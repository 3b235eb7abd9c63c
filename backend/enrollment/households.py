"""Households (户): register one with its members in one request (and enrol them, if asked), read
one, edit one under optimistic concurrency. Who a member is (identity numbers checked, persons
already known reused) is decided here, for registration and for `members`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto, fields
from backend.actor import Actor
from backend.api_docs.openapi import RESIDENT_ID_SCHEMA
from backend.audit import service as audit
from backend.audit.service import changes, record, record_many
from backend.crypto import BIRTH_CERT, ID_NUMBER, PHONE
from backend.db import Connection, load_queries
from backend.enrollment import enrollments
from backend.enrollment.continuity import PersonContinuity, continuity_of
from backend.enrollment.enrollments import EnrollmentCreate, Year
from backend.errors import Conflict, DomainError, InvalidInput, NotFound, PreconditionFailed
from backend.i18n import _
from backend.ids import uuid7
from mobile_sync_protocol.rules.identity import IdentityNumberError, parse_birth_certificate_number, parse_resident_id

Q = load_queries("backend.enrollment", "households.sql")
_READ_H = "WITH h AS (SELECT * FROM households WHERE id = $1)"
assert Q["household_and_members"].count(_READ_H) == 1


def with_members(statement: str) -> str:
    """One statement: `statement` (a write answering household $1's row), then the household with its
    members as `household_and_members` reads them. The REST answers; a push keeps the row alone."""
    return Q["household_and_members"].replace(_READ_H, f"WITH h AS (\n{statement}\n)")


UPDATE_HOUSEHOLD_WITH_MEMBERS = with_members(Q["update_household"])

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
    id_number: Annotated[str, msgspec.Meta(max_length=40, extra_json_schema=RESIDENT_ID_SCHEMA)] | None = None
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
    # completes a newborn's record
    id_number: Annotated[str, msgspec.Meta(max_length=40, extra_json_schema=RESIDENT_ID_SCHEMA)] | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    phone: Phone | None = None


class MemberEnrollment(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    status: str
    coverage_start: date | None
    coverage_end: date | None
    coverage_reason: str | None
    coverage_year: int | None = None  # (in `enrollments`; `enrollment` is of the year asked)


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
    # The live enrolments of every open year (this year and next, and the year asked), by year: a
    # member enrolled for next year only shows here whatever year was asked. (Reads that change
    # the household answer it without them: an empty list.)
    enrollments: list[MemberEnrollment] = []
    # Continuous years of basic insurance as of this year (continuity.py); only `get_household`
    # (GET /households/{id}) computes them, other answers leave None.
    continuity: PersonContinuity | None = None


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


_H = TypeVar("_H", bound=Household)


class PersonAlreadyRegistered(Conflict):
    """This person already belongs to a household"""

    code = "person_already_registered"


class PersonDeceased(Conflict):
    """This person's death is on record: they join no household again"""

    code = "person_deceased"


class HouseholdNumberTaken(Conflict):
    """That household number is already used in this village"""

    code = "household_number_taken"


class PreconditionRequired(DomainError):
    """Send If-Match with the household's ETag"""

    status, code = 428, "precondition_required"


class Identity(msgspec.Struct, frozen=True):
    id_number: str | None
    birth_cert_no: str | None
    converted_from_15: bool
    birth_date: date
    sex: Sex


def member_identity(
    field: str, member: MemberIn | MemberUpdate, today: date, *, current: Identity | None = None
) -> Identity:
    """Validates and normalises a member's identity fields (SPEC §2); errors name the field."""
    birth_cert = getattr(member, "birth_cert_no", None)
    if birth_cert is None and current is not None:
        birth_cert = current.birth_cert_no
    if member.id_number is not None:
        # A person known by a birth certificate only (a newborn) has the birth date and sex a clerk
        # entered: the number that completes them must agree with those (SPEC §2), unless the same
        # change corrects them.
        recorded = current if current is not None and current.id_number is None else None
        born = member.birth_date or (recorded.birth_date if recorded else None)
        sex = member.sex or (recorded.sex if recorded else None)
        try:
            parsed = parse_resident_id(member.id_number, today=today, birth_date=born, sex=sex)
        except IdentityNumberError as exc:
            name = {"birth_date_mismatch": "birth_date", "sex_mismatch": "sex"}.get(exc.code, "id_number")
            if recorded is not None and getattr(member, name, None) is None and name != "id_number":
                raise InvalidInput(
                    f"{field}id_number",
                    _(
                        "differs from the {what} on record; correct the number, or send the corrected {what} with it",
                        what=_("birth date") if name == "birth_date" else _("sex"),
                    ),
                    reason=exc.code,
                ) from None
            raise InvalidInput(f"{field}{name}", _(exc.template, **exc.params), reason=exc.code) from None
        return Identity(
            id_number=parsed.number,
            birth_cert_no=None if birth_cert is None else _birth_cert(field, birth_cert),
            converted_from_15=parsed.converted_from_15,
            birth_date=parsed.birth_date,
            sex=parsed.sex,
        )
    if current is not None:
        if current.id_number is not None and (member.birth_date or member.sex):
            raise InvalidInput(f"{field}birth_date", _("follows from the identity number; correct the number instead"))
        return Identity(
            id_number=current.id_number,
            birth_cert_no=current.birth_cert_no,
            converted_from_15=current.converted_from_15,
            birth_date=member.birth_date or current.birth_date,
            sex=member.sex or current.sex,
        )
    if birth_cert is None:
        raise InvalidInput(
            f"{field}id_number", _("an identity number, or a newborn's birth-certificate number, is required")
        )
    number = _birth_cert(field, birth_cert)
    if member.birth_date is None:
        raise InvalidInput(f"{field}birth_date", _("is required with a birth-certificate number"))
    if member.birth_date > today:
        raise InvalidInput(f"{field}birth_date", _("must not be in the future"))
    if member.sex is None:
        raise InvalidInput(f"{field}sex", _("is required with a birth-certificate number"))
    return Identity(
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
        raise InvalidInput(f"{field}birth_cert_no", _(exc.template, **exc.params), reason=exc.code) from None


async def _village_in_scope(conn: Connection, actor: Actor, code: str, field: str = "village_code") -> None:
    _check_village(actor, await conn.fetchval(Q["division_level"], code), code, field)


def _check_village(actor: Actor, level: str | None, code: str, field: str = "village_code") -> None:
    if level != "village" or not actor.in_scope(code):
        raise InvalidInput(field, _("no such village in your scope"))


async def existing_people(
    conn: Connection, actor: Actor, identities: list[Identity], fields: list[str], exclude: UUID | None = None
) -> dict[int, UUID]:
    """Index → person id of members already known and in no household now (they are reused).
    Anyone already in a household is a 409; the other household is named only within scope. Someone
    whose death is on record is a 409 too (`person_deceased`): nobody who died rejoins a household."""
    rows = await conn.fetch(Q["person_ids_by_identity"], *identity_hashes(identities))
    return reusable(actor, identities, fields, rows, exclude, deceased=await deceased_among(conn, rows))


async def deceased_among(conn: Connection, rows: Sequence[asyncpg.Record | Mapping[str, Any]]) -> set[UUID]:
    """Of the known persons in no household now (those `reusable` would reuse), the ones whose death
    is on record. No query when there is no such person: a new household pays nothing."""
    candidates = [row["id"] for row in rows if row["id"] is not None and row["household_id"] is None]
    if not candidates:
        return set()
    return {r["person_id"] for r in await conn.fetch(Q["deceased_among"], candidates)}


def reusable(
    actor: Actor,
    identities: list[Identity],
    fields: list[str],
    rows: Sequence[asyncpg.Record | Mapping[str, Any]],
    exclude: UUID | None = None,
    *,
    deceased: Collection[UUID] = (),
) -> dict[int, UUID]:
    """`existing_people` on rows already read (`person_ids_by_identity`); `deceased` from
    `deceased_among` on the same rows."""
    keyring = crypto.keys()
    reuse: dict[int, UUID] = {}
    conflicts: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    for index, identity in enumerate(identities):
        id_hash, birth_hash = (
            keyring.index(ID_NUMBER, identity.id_number),
            keyring.index(BIRTH_CERT, identity.birth_cert_no),
        )
        for row in rows:
            same = (id_hash is not None and row["id_number_hash"] == id_hash) or (
                birth_hash is not None and row["birth_cert_hash"] == birth_hash
            )
            if not same or row["id"] == exclude:
                continue
            if row["household_id"] is None:
                if row["id"] in deceased:
                    dead.append({"field": fields[index] + "id_number"})
                else:
                    reuse[index] = row["id"]
                continue
            conflict: dict[str, Any] = {"field": fields[index] + "id_number"}
            if actor.in_scope(row["village_code"]):
                conflict["household_id"] = str(row["household_id"])
            conflicts.append(conflict)
    if conflicts:
        raise PersonAlreadyRegistered(conflicts=conflicts)
    if dead:
        raise PersonDeceased(conflicts=dead)
    return reuse


def _new_people(
    members: list[MemberIn], identities: list[Identity], reuse: dict[int, UUID]
) -> tuple[list[UUID], list[int]]:
    """Every member's person id (reused, given by the client, or new), and the indexes of new persons."""
    person_ids = [reuse.get(i) or m.id or uuid7() for i, m in enumerate(members)]
    return person_ids, [i for i in range(len(members)) if i not in reuse]


def identity_hashes(identities: Sequence[Identity]) -> tuple[list[bytes], list[bytes]]:
    """The blind indexes of these identity and birth-certificate numbers (`person_ids_by_identity`)."""
    keyring = crypto.keys()
    return (
        [keyring.index(ID_NUMBER, i.id_number) or b"" for i in identities if i.id_number],
        [keyring.index(BIRTH_CERT, i.birth_cert_no) or b"" for i in identities if i.birth_cert_no],
    )


def _person_columns(
    person_ids: list[UUID], members: list[MemberIn], identities: list[Identity], new: list[int]
) -> tuple[tuple[list[Any], ...], tuple[list[Any], ...]]:
    """The new persons as the columns `insert_members` and `insert_household_with_members` take:
    the clear columns with the blind indexes, and the sealed numbers (id, birth certificate, phone)."""
    keyring = crypto.keys()
    return (
        (
            [person_ids[i] for i in new],
            [keyring.index(ID_NUMBER, identities[i].id_number) for i in new],
            [keyring.index(BIRTH_CERT, identities[i].birth_cert_no) for i in new],
            [identities[i].converted_from_15 for i in new],
            [members[i].name.strip() for i in new],
            [identities[i].sex for i in new],
            [identities[i].birth_date for i in new],
            [keyring.index(PHONE, members[i].phone) for i in new],
        ),
        (
            [keyring.seal(ID_NUMBER, identities[i].id_number) for i in new],
            [keyring.seal(BIRTH_CERT, identities[i].birth_cert_no) for i in new],
            [keyring.seal(PHONE, members[i].phone) for i in new],
        ),
    )


async def write_people(
    conn: Connection,
    household_id: UUID,
    members: list[MemberIn],
    identities: list[Identity],
    reuse: dict[int, UUID],
) -> list[UUID]:
    person_ids, new = _new_people(members, identities, reuse)
    clear, sealed = _person_columns(person_ids, members, identities, new)
    try:
        await conn.execute(
            Q["insert_members"],
            *clear,
            household_id,
            [uuid7() for _member in members],
            person_ids,
            [m.relation for m in members],
            *sealed,
        )
    except asyncpg.UniqueViolationError as exc:
        # A concurrent request registered the same person a moment ago.
        if exc.constraint_name in (
            "persons_id_number_key",
            "persons_birth_cert_key",
            "memberships_one_current_household",
            "persons_pkey",
        ):
            raise PersonAlreadyRegistered() from exc
        raise
    return person_ids


async def enrolments_follow(
    conn: Connection, actor: Actor, person_ids: list[UUID], household_id: UUID, today: date
) -> None:
    """A person's live enrolments of open years (this coverage year and later) are the person's: they
    follow the persons into `household_id`, which they have just joined (a move, or a registration
    that reuses them), status and money unchanged; past years stay where they were made. Audited
    (`follow_move`) on each enrolment."""
    if not person_ids:
        return
    followed = await conn.fetch(Q["enrolments_follow"], person_ids, household_id, today.year)
    await record_many(
        conn,
        actor,
        "follow_move",
        "enrollment",
        [
            (
                r["id"],
                r["village_code"],
                {
                    "person_id": str(r["person_id"]),
                    "year": r["coverage_year"],
                    "status": r["status"],
                    "from": str(r["from_household_id"]),
                    "to": str(household_id),
                },
            )
            for r in followed
        ],
    )


def _new_members(members: list[MemberIn], fields: list[str], today: date) -> tuple[int, list[Identity]]:
    """The head's index and every member's identity, checked: one head, valid numbers, nobody twice."""
    heads = [i for i, m in enumerate(members) if m.relation == "head"]
    if len(heads) != 1:
        raise InvalidInput(
            "members", _("exactly one member must be the head (relation 'head'), not {count}", count=len(heads))
        )
    identities = [member_identity(fields[i], m, today) for i, m in enumerate(members)]
    seen: dict[str, int] = {}
    for i, identity in enumerate(identities):
        key = identity.id_number or identity.birth_cert_no or ""
        if key in seen:
            raise InvalidInput(fields[i] + "id_number", _("the same person as members[{index}]", index=seen[key]))
        seen[key] = i
    return heads[0], identities


async def create_household(conn: Connection, actor: Actor, data: HouseholdCreate, today: date) -> dict[str, Any]:
    """The household alone (a tablet's household.create; its enrolments come as mutations of their
    own): `enrol_year` is `register_household`'s. Answers its row (`household_summary`)."""
    if data.enrol_year is not None:
        raise ValueError("create_household does not enrol: call register_household")
    created = await _create_with(conn, actor, data, [], today)
    assert created is not None
    return household_summary(created[0])


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
        e.person_id: MemberEnrollment(
            id=e.id,
            status=e.status,
            coverage_start=e.coverage_start,
            coverage_end=e.coverage_end,
            coverage_reason=e.coverage_reason,
        )
        for e in enrolled.items
    }
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


async def create_household_and_add(
    conn: Connection,
    actor: Actor,
    data: HouseholdCreate,
    added: list[MemberIn],
    today: date,
    edit: HouseholdUpdate | None = None,
) -> tuple[dict[str, Any], list[int]] | None:
    """`create_household`, then `members.add_member` of each of `added` in turn (at the version the
    one before left), then `update_household` with `edit` if it changes anything, as one read and
    one statement: the household is written with the edit's values at the version the last step
    gives, the additions' and the edit's audit rows are recorded after it as `add_member` and
    `update_household` record them (a household's first statement writes no change record for
    anyone: nobody can have seen it, nor the versions before the last). The household's row
    (`household_summary`), and the version after each addition and after the edit. None when anyone
    added is already known (reused: the caller adds them one by one); whatever else any step
    refuses raises (the caller, a push's fast path, then applies them one by one to answer each).
    An edit of the household number is not for here: one number refused at creation and another
    accepted after it would be written as the second."""
    data, edited = _with_edit(data, edit)
    created = await _create_with(conn, actor, data, added, today, edited=edited)
    return None if created is None else (household_summary(created[0]), created[1])


def _with_edit(data: HouseholdCreate, edit: HouseholdUpdate | None) -> tuple[HouseholdCreate, dict[str, Any]]:
    """`data` with the address and phone `edit` gives it, and what that changes (`audit.changes`)."""
    if data.enrol_year is not None:
        raise ValueError("a household created with members added and edited is not enrolled at once")
    if edit is None:
        return data, {}
    if edit.household_no is not None and edit.household_no != data.household_no:
        raise ValueError("a household created with its edit is not renumbered")
    before = {"address": data.address, "phone": data.phone}
    after = {k: before[k] if getattr(edit, k) is None else getattr(edit, k) for k in before}
    return msgspec.structs.replace(data, **after), changes(before, after)


async def _audit_created(
    conn: Connection, actor: Actor, household_id: UUID, data: HouseholdCreate, reused: int
) -> None:
    """The audit row of a new household (gathered by its caller for the household's own statement)."""
    summary = {"members": len(data.members), "reused_persons": reused}
    await audit.record(
        conn, actor, "create", "household", household_id, division_code=data.village_code, summary=summary
    )


async def _audit_added_and_edited(
    conn: Connection,
    actor: Actor,
    data: HouseholdCreate,
    household_id: UUID,
    added: list[tuple[UUID, MemberIn]],
    edited: Mapping[str, Any],
) -> None:
    """The audit rows of the members added to a new household at once and of its edit, after its own
    statement, as `members.add_member` and `update_household` record them."""
    for person_id, member in added:
        joined = {"person_id": str(person_id), "relation": member.relation}
        await record(
            conn, actor, "add_member", "household", household_id, division_code=data.village_code, summary=joined
        )
    if edited:
        summary = {"changed": sorted(edited)}
        await record(conn, actor, "update", "household", household_id, division_code=data.village_code, summary=summary)


class HouseholdRun(msgspec.Struct, frozen=True):
    """A new household, the members added to it next and its edit after them (`create_household_and_add`)."""

    data: HouseholdCreate
    added: list[MemberIn] = []
    edit: HouseholdUpdate | None = None


async def create_households(
    conn: Connection, actor: Actor, runs: list[HouseholdRun], today: date
) -> list[tuple[dict[str, Any], list[int]]] | None:
    """`create_household_and_add` of each of `runs` in turn (`create_household` of those that add no
    one and edit nothing), as one read and one statement: each household's row (`household_summary`)
    and its versions, in their order. None when anyone in them is known already or is in two of them
    (the caller creates them one by one: whom to reuse, and who is refused, follow each person's
    story); whatever `create_household_and_add` would refuse raises (the caller, a push's fast path,
    then applies them one by one to answer each)."""
    shaped = []
    for run in runs:
        data, edited = _with_edit(run.data, run.edit)
        members = [*data.members, *run.added]
        head, identities = _new_members(list(data.members), [f"members[{i}]." for i in range(len(data.members))], today)
        if any(member.relation == "head" for member in run.added):
            raise InvalidInput("relation", _("the household has a head; make the new member head afterwards"))
        identities += [member_identity("", member, today) for member in run.added]
        shaped.append((data, members, head, identities, len(run.added), edited))
    everyone = [identity for *_others, identities, _added, _edited in shaped for identity in identities]
    keys = [x.id_number or x.birth_cert_no for x in everyone]
    if len(set(keys)) != len(keys):
        return None
    villages = list(dict.fromkeys(run.data.village_code for run in runs))
    known = await conn.fetch(Q["villages_and_people_by_identity"], villages, *identity_hashes(everyone))
    levels: dict[str, str] = known[0]["levels"]
    for run in runs:
        _check_village(actor, levels.get(run.data.village_code), run.data.village_code)
    if any(row["id"] is not None for row in known):
        return None
    keyring = crypto.keys()
    clear: list[list[Any]] = [[] for _column in range(8)]
    sealed: list[list[Any]] = [[] for _column in range(3)]
    households: list[list[Any]] = [[] for _column in range(8)]
    memberships: list[list[Any]] = [[] for _column in range(4)]
    joining: list[list[tuple[UUID, MemberIn]]] = []
    with audit.gathered(conn) as audit_rows:  # written by the households' own statement
        for data, members, head, identities, added, edited in shaped:
            household_id = data.id or uuid7()
            person_ids, new = _new_people(members, identities, {})
            people, numbers = _person_columns(person_ids, members, identities, new)
            for column, values in zip(clear + sealed, people + numbers, strict=True):
                column.extend(values)
            row: tuple[Any, ...] = (
                household_id,
                data.village_code,
                data.household_no,
                data.address,
                keyring.index(PHONE, data.phone),
                keyring.seal(PHONE, data.phone),
                person_ids[head],
                1 + added + bool(edited),
            )
            for column, value in zip(households, row, strict=True):
                column.append(value)
            joined: tuple[list[Any], ...] = (
                [uuid7() for _m in members],
                person_ids,
                [household_id] * len(members),
                [m.relation for m in members],
            )
            for column, values in zip(memberships, joined, strict=True):
                column.extend(values)
            joining.append([*zip(person_ids[len(members) - added :], members[len(members) - added :], strict=True)])
            await _audit_created(conn, actor, household_id, data, reused=0)
    household_columns = households[:7]
    rows = await conn.fetch(
        Q["insert_households_with_members"],
        *clear,
        *sealed,
        *household_columns,
        actor.id,
        *memberships,
        *audit_rows.columns(),
        households[7],
    )
    audit_rows.written()
    by_id = {row["id"]: row for row in rows}
    answers = []
    for (data, _members, _head, _identities, added, edited), household_id, newcomers in zip(
        shaped, households[0], joining, strict=True
    ):
        await _audit_added_and_edited(conn, actor, data, household_id, newcomers, edited)
        answers.append((household_summary([by_id[household_id]]), list(range(1, added + 2 + bool(edited)))))
    return answers


async def _create(conn: Connection, actor: Actor, data: HouseholdCreate, today: date) -> tuple[Household, list[UUID]]:
    """The household, and its members' person ids in the order of `data.members`."""
    person_ids: list[UUID] = []
    created = await _create_with(conn, actor, data, [], today, person_ids)
    assert created is not None
    return household_from_rows(created[0]), person_ids


async def _create_with(
    conn: Connection,
    actor: Actor,
    data: HouseholdCreate,
    added: list[MemberIn],
    today: date,
    person_ids_out: list[UUID] | None = None,
    *,
    edited: Mapping[str, Any] | None = None,
) -> tuple[list[asyncpg.Record], list[int]] | None:
    """The household's rows as `household_with_members` reads them, and the version after each
    addition (and after the edit that `edited` records, `audit.changes` of the values `data` holds:
    one version more, and its audit row last)."""
    members = list(data.members)
    fields = [f"members[{i}]." for i in range(len(members))]
    try:
        head, identities = _new_members(members, fields, today)
    except InvalidInput:
        await _village_in_scope(conn, actor, data.village_code)  # a bad village is named before any member
        raise
    for member in added:
        if member.relation == "head":
            raise InvalidInput("relation", _("the household has a head; make the new member head afterwards"))
    joining = [member_identity("", member, today) for member in added]
    keys = [x.id_number or x.birth_cert_no for x in identities + joining]
    if len(set(keys)) != len(keys):  # someone added twice, or who is a member already
        raise PersonAlreadyRegistered()
    # The village's level comes with the people already known: one read for both checks.
    known = await conn.fetch(
        Q["village_and_people_by_identity"], data.village_code, *identity_hashes(identities + joining)
    )
    _check_village(actor, known[0]["level"], data.village_code)
    people = [r for r in known if r["id"] is not None]
    if joining:
        everyone = reusable(actor, identities + joining, fields + [""] * len(joining), people)
        if any(i >= len(members) for i in everyone):
            return None
    reuse = reusable(actor, identities, fields, people, deceased=await deceased_among(conn, people))
    household_id = data.id or uuid7()
    person_ids, new = _new_people(members + added, identities + joining, reuse)
    clear, sealed = _person_columns(person_ids, members + added, identities + joining, new)
    keyring = crypto.keys()
    with audit.gathered(conn) as audit_rows:  # written by the household's own statement
        await _audit_created(conn, actor, household_id, data, reused=len(reuse))
    try:
        rows = await conn.fetch(
            Q["insert_household_with_members"],
            household_id,
            data.village_code,
            data.household_no,
            data.address,
            keyring.index(PHONE, data.phone),
            actor.id,
            *clear,
            person_ids[head],
            [uuid7() for _member in members + added],
            person_ids,
            [m.relation for m in members + added],
            list(reuse.values()),
            *audit_rows.columns(),
            *sealed,
            keyring.seal(PHONE, data.phone),
            1 + len(added) + bool(edited),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "households_number_key":
            raise HouseholdNumberTaken(errors=[{"field": "household_no", "message": _("already used")}]) from exc
        if exc.constraint_name == "households_pkey":
            raise Conflict(_("a household with this id exists")) from exc
        # A concurrent request registered the same person a moment ago.
        raise PersonAlreadyRegistered() from exc
    audit_rows.written()
    await enrolments_follow(conn, actor, list(reuse.values()), household_id, today)
    await _audit_added_and_edited(
        conn, actor, data, household_id, [*zip(person_ids[len(members) :], added, strict=True)], edited or {}
    )
    if person_ids_out is not None:
        person_ids_out += person_ids
    return rows, list(range(1, len(added) + 2 + bool(edited)))


def open_years(today: date, year: int | None = None) -> list[int]:
    """The years a household shows enrolments of: this year and next (enrolment for next year opens
    with its window), and the year asked."""
    return sorted({today.year, today.year + 1} | ({year} if year else set()))


async def _load(conn: Connection, household_id: UUID, year: int | None, today: date | None = None) -> Household:
    years = open_years(today, year) if today is not None else ([year] if year else [])
    rows = await conn.fetch(Q["household_with_members"], household_id, year or 0, years)
    if not rows:
        raise NotFound()
    return household_from_rows(rows)


def household_from_rows(rows: list[asyncpg.Record]) -> Household:
    """A household from `household_with_members` rows (or rows of the same shape)."""
    keyring = crypto.keys()
    members = []
    for m in rows:
        if m["person_id"] is None:  # a household without current members
            continue
        enrollment = None
        if m.get("enrollment_id") is not None:
            enrollment = MemberEnrollment(
                id=m["enrollment_id"],
                status=m["enrollment_status"],
                coverage_start=m["coverage_start"],
                coverage_end=m["coverage_end"],
                coverage_reason=m["coverage_reason"],
            )
        members.append(
            Member(
                person_id=m["person_id"],
                name=m["name"],
                relation=m["relation"],
                id_number=keyring.open(ID_NUMBER, m["id_number_enc"]),
                birth_cert_no=keyring.open(BIRTH_CERT, m["birth_cert_enc"]),
                id_converted_from_15=m["id_converted_from_15"],
                birth_date=m["birth_date"],
                sex=m["sex"],
                phone=keyring.open(PHONE, m["member_phone_enc"]),
                joined_at=m["joined_at"],
                enrollment=enrollment,
                enrollments=msgspec.convert(m.get("enrollments") or [], list[MemberEnrollment]),
            )
        )
    household = opened_household(rows[0])
    household = {name: household[name] for name in _HOUSEHOLD_COLUMNS}
    return msgspec.convert({**household, "members": members}, Household, from_attributes=True)


_HOUSEHOLD_COLUMNS = tuple(f for f in Household.__struct_fields__ if f != "members")


def household_summary(rows: list[asyncpg.Record]) -> dict[str, Any]:
    """The household of `household_with_members` rows (or rows of its shape) without its members:
    its columns, the phone opened. What a push keeps of a household it wrote: none of its members'
    numbers is opened for it."""
    return opened_household({name: rows[0][name] for name in _SEALED_COLUMNS})


_SEALED_COLUMNS = tuple("phone_enc" if f == "phone" else f for f in _HOUSEHOLD_COLUMNS)  # as the rows carry them


def household_alone(rows: list[asyncpg.Record]) -> Household:
    """A household from its row alone (`household_summary`), `members` empty: what a push keeps of it."""
    return msgspec.convert({**household_summary(rows), "members": []}, Household)


def opened_household(row: asyncpg.Record | Mapping[str, Any]) -> dict[str, Any]:
    """A household row with its phone opened (`phone` instead of `phone_enc`)."""
    household = dict(row)
    household["phone"] = crypto.keys().open(PHONE, household.pop("phone_enc"))
    return household


async def household_row(conn: Connection, household_id: UUID) -> dict[str, Any] | None:
    """The household's row as stored (not locked, the phone opened), or None."""
    row = await conn.fetchrow(Q["household"], household_id)
    return None if row is None else opened_household(row)


async def locked_household(conn: Connection, household_id: UUID) -> dict[str, Any] | None:
    """The household's row (the phone opened), locked for this transaction's change, or None; in
    scope or not."""
    row = await conn.fetchrow(Q["household_for_update"], household_id)
    return None if row is None else opened_household(row)


async def household_in_scope(conn: Connection, actor: Actor, household_id: UUID) -> dict[str, Any]:
    """The household's row, locked for this transaction's change."""
    row = await locked_household(conn, household_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    return row


def check_version(row: asyncpg.Record | Mapping[str, Any], if_match: int | None) -> None:
    if if_match is None:
        raise PreconditionRequired()
    if row["row_version"] != if_match:
        raise PreconditionFailed(current_version=row["row_version"])


async def with_continuity(conn: Connection, household: _H, today: date) -> _H:
    """The household with each member's continuous years as of this year: how every answer of the
    household routes gives it (a write answers the household as it reads back)."""
    if not household.members:
        return household
    runs = await continuity_of(conn, [m.person_id for m in household.members], today.year, today)
    members = [msgspec.structs.replace(m, continuity=runs.get(m.person_id)) for m in household.members]
    return msgspec.structs.replace(household, members=members)


async def get_household(
    conn: Connection, actor: Actor, household_id: UUID, year: int | None, today: date | None = None
) -> Household:
    """The household with its members; `enrollment` of each is the one of `year`, `enrollments`
    those of the open years as of `today` (`open_years`; without `today`, of `year` only)."""
    household = await _load(conn, household_id, year, today)
    if not actor.in_scope(household.village_code):
        raise NotFound()
    if today is not None:
        household = await with_continuity(conn, household, today)
    await record(conn, actor, "read", "household", household_id, division_code=household.village_code)
    return household


async def update_household(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    if_match: int | None,
    data: HouseholdUpdate,
    *,
    locked: Mapping[str, Any] | None = None,
) -> Household:
    """`locked`: the household's row (its phone opened) as the caller read it under its lock in this
    transaction, in scope: not read again (a push that holds the lock and knows the row)."""
    return household_from_rows(await _update(conn, actor, household_id, if_match, data, locked, with_members=True))


async def update_household_row(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    if_match: int | None,
    data: HouseholdUpdate,
    *,
    locked: Mapping[str, Any],
) -> dict[str, Any]:
    """`update_household` answering the household's row alone (`household_summary`): a push's."""
    return household_summary(await _update(conn, actor, household_id, if_match, data, locked, with_members=False))


async def _update(
    conn: Connection,
    actor: Actor,
    household_id: UUID,
    if_match: int | None,
    data: HouseholdUpdate,
    locked: Mapping[str, Any] | None,
    *,
    with_members: bool,
) -> list[asyncpg.Record]:
    before = locked if locked is not None else await household_in_scope(conn, actor, household_id)
    check_version(before, if_match)
    after = {
        "household_no": data.household_no or before["household_no"],
        "address": before["address"] if data.address is None else data.address,
        "phone": before["phone"] if data.phone is None else data.phone,
    }
    try:
        keyring = crypto.keys()
        rows = await conn.fetch(
            UPDATE_HOUSEHOLD_WITH_MEMBERS if with_members else Q["update_household"],
            household_id,
            after["household_no"],
            after["address"],
            keyring.index(PHONE, after["phone"]),
            keyring.seal(PHONE, after["phone"]),
        )
    except asyncpg.UniqueViolationError as exc:
        raise HouseholdNumberTaken(errors=[{"field": "household_no", "message": _("already used")}]) from exc
    await record(
        conn,
        actor,
        "update",
        "household",
        household_id,
        division_code=before["village_code"],
        summary={"changed": sorted(changes({k: before[k] for k in after}, after))},
    )
    return rows
