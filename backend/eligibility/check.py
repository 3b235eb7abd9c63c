"""Eligibility for a person, a year and a date: may they enrol here, which subsidy categories apply
(from the lists in force and accepted claims), the subsidy, and the explanation of each answer.

Persons are found by the blind index of their numbers (backend/crypto.py); an answer echoes only
the numbers it was asked about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Annotated, Literal, NamedTuple
from uuid import UUID

import msgspec

from backend import crypto
from backend.actor import Actor
from backend.audit.service import persons, record
from backend.db import Connection, load_queries
from backend.eligibility.lists import Year
from backend.i18n import N_, SOURCE_LANGUAGE, _, current_language, terms, yuan
from backend.policy import service as policies
from mobile_sync_protocol.rules.coverage import ExemptionEvidence
from mobile_sync_protocol.rules.identity import IdentityNumberError, parse_resident_id
from mobile_sync_protocol.rules.premium import PremiumDue, SubsidyLine, age_on_1_january, premium_due

Q = load_queries("backend.eligibility")


RawIdNumber = Annotated[str, msgspec.Meta(max_length=40)]


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id_numbers: Annotated[list[RawIdNumber], msgspec.Meta(min_length=1, max_length=10_000)]
    coverage_year: Year
    as_of: date | None = None  # default: today (local)


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """Where a category or an exclusion comes from: a list row, or an accepted claim."""

    kind: Literal["list", "claim"]
    list_id: UUID | None = None
    list_type: str | None = None
    version: int | None = None
    row: int | None = None
    effective_from: date | None = None
    claim_id: UUID | None = None
    decided_by: UUID | None = None
    decided_at: datetime | None = None


class HeldCategory(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    valid_from: date | None
    valid_to: date | None
    source: Source


class Obstacle(msgspec.Struct, frozen=True, kw_only=True):
    """Why a person may not enrol here."""

    # member_elsewhere: of a household outside the caller's scope, whose lists and claims are not
    # the caller's to read (SPEC §1): nothing of them is answered but that
    code: Literal["employee_insurance", "deceased", "already_enrolled", "member_elsewhere"]
    source: Source | None = None
    enrollment_id: UUID | None = None  # only for an enrolment in the caller's scope


class IdProblem(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class Eligibility(msgspec.Struct, frozen=True, kw_only=True):
    index: int  # position in the request
    id_number: str | None  # normalised (a 15-digit number converted); None when not valid
    error: IdProblem | None = None
    may_enrol: bool = False
    obstacles: list[Obstacle] = []
    categories: list[HeldCategory] = []
    premium_fen: int = 0
    subsidy_fen: int = 0
    due_fen: int = 0
    chosen_categories: list[str] = []
    lines: list[SubsidyLine] = []
    capped: bool = False
    explanation: list[str] = []


class EligibilityAnswer(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    as_of: date
    policy_version: int
    items: list[Eligibility]


class PersonEligibility(msgspec.Struct, frozen=True, kw_only=True):
    """What eligibility knows about one ID number on a date, before money."""

    categories: list[HeldCategory]
    exclusions: list[Obstacle]


async def facts(conn: Connection, id_numbers: list[str], year: int, on: date) -> dict[str, PersonEligibility]:
    """Categories (list rows in force, accepted claims) and exclusion-list rows per ID number (the
    numbers as given; only those with something to say are keys)."""
    hashes = crypto.keys().index_many(crypto.ID_NUMBER, id_numbers)
    known = await facts_by_hash(conn, list(set(hashes)), year, on)
    return {number: known[h] for number, h in zip(id_numbers, hashes, strict=True) if h in known}


async def facts_by_hash(
    conn: Connection, id_number_hashes: list[bytes], year: int, on: date
) -> dict[bytes, PersonEligibility]:
    """`facts` of persons known by the blind index of their numbers (`persons.id_number_hash`), for
    callers that hold the hash and need not open the number."""
    cats: dict[bytes, list[HeldCategory]] = {}
    excl: dict[bytes, list[Obstacle]] = {}
    for r in await conn.fetch(Q["facts_in_force"], id_number_hashes, on, year):  # list rows first
        if r["source"] == "claim":
            held = cats.setdefault(r["id_number_hash"], [])
            if any(h.category == r["category"] for h in held):
                continue  # a list row explains it already
            claim = Source(kind="claim", claim_id=r["claim_id"], decided_by=r["decided_by"], decided_at=r["decided_at"])
            held.append(HeldCategory(category=r["category"], valid_from=None, valid_to=None, source=claim))
            continue
        source = Source(
            kind="list",
            list_id=r["list_id"],
            list_type=r["list_type"],
            version=r["version"],
            row=r["row_no"],
            effective_from=r["effective_from"],
        )
        if r["kind"] == "subsidy":
            cats.setdefault(r["id_number_hash"], []).append(
                HeldCategory(category=r["list_type"], valid_from=r["valid_from"], valid_to=r["valid_to"], source=source)
            )
        elif r["kind"] == "exclusion":
            excl.setdefault(r["id_number_hash"], []).append(Obstacle(code=r["list_type"], source=source))
    return {h: PersonEligibility(categories=cats.get(h, []), exclusions=excl.get(h, [])) for h in set(cats) | set(excl)}


# Names of the codes an explanation uses beside the list types (backend/i18n/terms.py).
_SUBSIDY_SOURCES = {"category": N_("subsidy category"), "top_up": N_("top-up")}
_OBSTACLES = {
    **terms.LIST_TYPES,
    "already_enrolled": N_("already enrolled"),
    "member_elsewhere": N_("a member of a household of another township"),
}


def _named(code: str | None, names: Mapping[str, str] = terms.LIST_TYPES) -> str:
    """A code as an explanation writes it: English, which developers read, keeps the code itself;
    another language names it (a code without a name stays a code)."""
    if code is None:
        return ""
    if current_language() == SOURCE_LANGUAGE or code not in names:
        return code
    return _(names[code])


def _money(fen: int) -> str:
    """An amount as an explanation writes it: fen in English (`40000 fen`), yuan in another language."""
    return str(fen) if current_language() == SOURCE_LANGUAGE else yuan(fen)


class _Describer:
    """The sentences of where a category held comes from (`describe`) and of why a person may not
    enrol (`obstacle`), for one request: their templates translated and the codes named once, not
    for each of thousands of persons."""

    def __init__(self) -> None:
        self.from_list = _("{category}: list {list_type} version {version} row {row}")
        self.from_claim = _("{category}: accepted claim {claim_id}")
        self.excluded_by_list = _("not eligible, {code}: list {list_type} version {version} row {row}")
        self.names: dict[str | None, str] = {}
        self.obstacle_names: dict[str, str] = {}
        self.for_the_year: dict[str, str] = {}  # an obstacle without a source says only its code

    def named(self, code: str | None) -> str:
        if (name := self.names.get(code)) is None:
            name = self.names[code] = _named(code)
        return name

    def describe(self, held: HeldCategory) -> str:
        s = held.source
        if s.kind == "list":
            return self.from_list.format(
                category=self.named(held.category), list_type=self.named(s.list_type), version=s.version, row=s.row
            )
        return self.from_claim.format(category=self.named(held.category), claim_id=s.claim_id)

    def obstacle(self, o: Obstacle) -> str:
        if (code := self.obstacle_names.get(o.code)) is None:
            code = self.obstacle_names[o.code] = _named(o.code, _OBSTACLES)
        if o.code == "member_elsewhere":
            return _("{code}: that township checks and registers them, or moves them here first", code=code)
        if o.source is not None:
            return self.excluded_by_list.format(
                code=code, list_type=self.named(o.source.list_type), version=o.source.version, row=o.source.row
            )
        if (line := self.for_the_year.get(o.code)) is None:
            line = self.for_the_year[o.code] = _("not eligible: {code} for the year", code=code)
        return line


def _person_lines(held: list[HeldCategory], obstacles: list[Obstacle], describer: _Describer) -> list[str]:
    """The first sentences of an explanation: where each category held comes from, and each obstacle,
    in the request's language (categories by name outside English)."""
    return [*map(describer.describe, held), *map(describer.obstacle, obstacles)]


def _due_lines(due: PremiumDue, year: int) -> list[str]:
    """The rest of an explanation: each subsidy applied or not, and what is due. It depends on the
    due alone (and the year), which depends on the categories held and the age."""
    lines: list[str] = []
    for line in due.lines:
        if line.applied_fen:
            lines.append(
                _(
                    "subsidy {amount} fen from {source} {code}",
                    amount=_money(line.applied_fen),
                    source=_named(line.source, _SUBSIDY_SOURCES),
                    code=_named(line.code),
                )
            )
        elif line.source == "category" and not line.chosen:
            lines.append(_("{code} not applied: a more favourable category won", code=_named(line.code)))
    for code in due.age_excluded:
        lines.append(
            _(
                "{code} not applied: aged {age} on 1 January {year}, an age the year's policy does not subsidise",
                code=_named(code),
                age=due.age if due.age is not None else "?",
                year=year,
            )
        )
    if due.capped:
        lines.append(_("subsidies capped at the premium of {premium} fen", premium=_money(due.premium_fen)))
    for code in due.unmatched_categories:
        lines.append(_("{code}: no subsidy for this category in the year's policy", code=_named(code)))
    lines.append(
        _("due {due} fen of a premium of {premium} fen", due=_money(due.due_fen), premium=_money(due.premium_fen))
    )
    return lines


class _Answer(NamedTuple):
    """What a check answers every person of the same categories and age (`check`)."""

    due: PremiumDue
    chosen_categories: list[str]
    lines: list[SubsidyLine]
    explanation: list[str]  # the due's sentences, after a person's own


async def check(conn: Connection, actor: Actor, data: CheckRequest, today: date) -> EligibilityAnswer:
    on = data.as_of or today
    policy = await policies.require_in_force(conn, data.coverage_year, on)
    subsidy_policy = policy.subsidy_policy()
    parsed: list[str | IdProblem] = []
    born: dict[str, date] = {}  # the birth date the number encodes: the age the subsidy depends on
    for raw in data.id_numbers:
        try:
            resident = parse_resident_id(raw, today=today)
            parsed.append(resident.number)
            born[resident.number] = resident.birth_date
        except IdentityNumberError as exc:
            parsed.append(IdProblem(code=exc.code, message=_(exc.template, **exc.params)))
    numbers = list({p: None for p in parsed if isinstance(p, str)})
    hashes = dict(zip(numbers, crypto.keys().index_many(crypto.ID_NUMBER, numbers), strict=True))
    asked = list(hashes.values())
    held = await conn.fetch(Q["persons_and_live_enrollments_by_id_number"], asked, data.coverage_year)
    enrolled = {r["id_number_hash"]: r for r in held if r["enrollment_id"] is not None}
    # Township staff check the persons they may register: a member of another township's household
    # is answered as that, without the categories, exclusions or claims the lists hold of them (a
    # township's staff read no list rows; a check of thousands must not read them either).
    elsewhere = {
        r["id_number_hash"] for r in held if r["home_village"] is not None and not actor.in_scope(r["home_village"])
    }
    known = await facts_by_hash(conn, [h for h in asked if h not in elsewhere], data.coverage_year, on)
    none = PersonEligibility(categories=[], exclusions=[])
    items: list[Eligibility] = []
    # A check of thousands asks the same few questions: what is due depends only on the categories
    # held and the age, and so do the sentences that explain it. Each is worked out once per request
    # and key, and its lists are shared by the items of that key (an answer is only encoded); only
    # where each category comes from, and the obstacles, are a person's own.
    answers: dict[tuple[tuple[str, ...], int], _Answer] = {}
    in_scope: dict[str, bool] = {}  # per village code: whether the caller may see the enrolment's id
    describer = _Describer()
    year = data.coverage_year
    for index, number in enumerate(parsed):
        if isinstance(number, IdProblem):
            items.append(Eligibility(index=index, id_number=None, error=number))
            continue
        person = known.get(hashes[number], none)
        obstacles = list(person.exclusions)
        if hashes[number] in elsewhere:
            obstacles.append(Obstacle(code="member_elsewhere"))
        if (e := enrolled.get(hashes[number])) is not None:
            village = e["village_code"]
            if (mine := in_scope.get(village)) is None:
                mine = in_scope[village] = actor.in_scope(village)
            obstacles.append(Obstacle(code="already_enrolled", enrollment_id=e["enrollment_id"] if mine else None))
        held_codes = tuple(h.category for h in person.categories) if person.categories else ()
        key = (held_codes, age_on_1_january(born[number], year))
        if (answer := answers.get(key)) is None:
            due = premium_due(subsidy_policy, key[0], age=key[1])
            answer = answers[key] = _Answer(due, list(due.chosen_categories), list(due.lines), _due_lines(due, year))
        due = answer.due
        own = _person_lines(person.categories, obstacles, describer) if person.categories or obstacles else None
        items.append(
            Eligibility(
                index=index,
                id_number=number,
                may_enrol=not obstacles,
                obstacles=obstacles,
                categories=person.categories,
                premium_fen=due.premium_fen,
                subsidy_fen=due.subsidy_fen,
                due_fen=due.due_fen,
                chosen_categories=answer.chosen_categories,
                lines=answer.lines,
                capped=due.capped,
                explanation=answer.explanation if own is None else [*own, *answer.explanation],
            )
        )
    await record(
        conn,
        actor,
        "read",
        "eligibility",
        None,
        division_code=actor.scope.division_code,
        summary={
            "year": data.coverage_year,
            "as_of": on.isoformat(),
            "persons": len(parsed),
            **persons(r["person_id"] for r in held),
        },
    )
    return EligibilityAnswer(coverage_year=data.coverage_year, as_of=on, policy_version=policy.version, items=items)


async def subsidies(
    conn: Connection,
    person_ids: Iterable[UUID],
    year: int,
    on: date,
    *,
    policy: policies.PolicyVersion | Literal["look up"] | None = "look up",
) -> dict[UUID, PremiumDue]:
    """The subsidy of registered persons for a year under the policy in force on `on` (their age on
    1 January of the year from their birth date; a person without an ID number holds no category,
    but an age's top-up may still apply). A caller that has read that policy already passes it."""
    if isinstance(policy, str):
        policy = await policies.in_force(conn, year, on)
    if policy is None:
        return {}
    persons = await conn.fetch(Q["persons_for_subsidy"], list(person_ids))
    facts = [(r["id"], r["id_number_hash"], r["birth_date"]) for r in persons]
    return await subsidies_of(conn, facts, year, on, policy)


async def subsidies_of(
    conn: Connection,
    persons: Iterable[tuple[UUID, bytes | None, date]],
    year: int,
    on: date,
    policy: policies.PolicyVersion,
) -> dict[UUID, PremiumDue]:
    """`subsidies` of persons the caller has read already: (id, `id_number_hash`, birth date) each."""
    persons = list(persons)
    hashes = {number for _id, number, _birth in persons if number is not None}
    known = await facts_by_hash(conn, list(hashes), year, on)
    subsidy_policy = policy.subsidy_policy()
    out: dict[UUID, PremiumDue] = {}
    for person_id, number, birth_date in persons:
        held = known.get(number) if number is not None else None
        out[person_id] = premium_due(
            subsidy_policy,
            [h.category for h in held.categories] if held else [],
            age=age_on_1_january(birth_date, year),
        )
    return out


async def exclusions(conn: Connection, person_ids: list[UUID], year: int, on: date) -> dict[UUID, list[Obstacle]]:
    """Exclusion-list rows in force on `on` for registered persons: they cannot be enrolled."""
    numbers = {r["id"]: r["id_number_hash"] for r in await conn.fetch(Q["id_numbers_of_persons"], person_ids)}
    known = await facts_by_hash(conn, list(set(numbers.values())), year, on)
    return {p: known[n].exclusions for p, n in numbers.items() if n in known and known[n].exclusions}


async def exemption_evidence(
    conn: Connection, person_ids: list[UUID], year: int, on: date, list_types: Iterable[str]
) -> dict[UUID, list[ExemptionEvidence]]:
    """What can show registered persons exempt from the waiting period in `year` for the business
    date `on`: rows of the lists `list_types` in the version in force on that date, whatever their
    own dates (the rule judges them), and claims of those categories accepted for the year. Only
    persons with something are keys."""
    types = sorted(set(list_types))
    out: dict[UUID, list[ExemptionEvidence]] = {}
    if not types or not person_ids:
        return out
    for r in await conn.fetch(Q["exemption_evidence"], person_ids, year, on, types):
        values = dict(r.items())
        person_id = values.pop("person_id")
        out.setdefault(person_id, []).append(msgspec.convert(values, ExemptionEvidence))
    return out


async def set_registered_subsidy(conn: Connection, enrollment_id: UUID, subsidy_fen: int) -> None:
    """The subsidy known at registration, kept on a registered enrolment until payment fixes it."""
    await conn.execute(Q["set_registered_subsidy"], enrollment_id, subsidy_fen)
