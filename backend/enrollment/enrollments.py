"""Enrolment (参保登记) of members for a coverage year, and its lifecycle.

registered → paid | subsidised → confirmed, and cancelled (with a reason) from any live state.
`mark_paid` and `mark_subsidised` are reached through the service layer only (registration marks a
person eligibility fully subsidises at once), and premium collection plans the same funding
(`plan_funding`) and writes it with the payment. At
most one live enrolment per person and year is enforced by the database
(`enrollments_one_live_per_person_year`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto
from backend.actor import Actor, scope_args
from backend.audit import service as audit
from backend.audit.service import persons, record, record_many
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.eligibility import check as eligibility
from backend.eligibility.check import PersonEligibility
from backend.enrollment import continuity, explain
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7
from backend.policy import service as policies
from mobile_sync_protocol.query_codes import derive_query_code, query_code_hash
from mobile_sync_protocol.rules.coverage import (
    Coverage,
    CoverageDecision,
    CoverageFacts,
    ExemptionEvidence,
    WaitingPolicy,
    decide_coverage,
)
from mobile_sync_protocol.rules.coverage_state import FUNDED
from mobile_sync_protocol.rules.exemptions import exemption_for, group_rules
from mobile_sync_protocol.rules.gaps import GapYears, gap_years
from mobile_sync_protocol.rules.identity import mask
from mobile_sync_protocol.rules.premium import PremiumDue, age_on_1_january, premium_due

Q = load_queries("backend.enrollment", "enrollments.sql")

Status = Literal["registered", "paid", "subsidised", "confirmed", "cancelled"]
CancelReason = Literal["employee_insurance", "deceased", "duplicate", "moved_away", "data_error"]
Year = Annotated[int, msgspec.Meta(ge=2000, le=2100)]
QueueFlag = Literal["unknown_years", "gap_review"]

# Which state may follow which; anything else is a 409.
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": frozenset({"paid", "subsidised", "cancelled"}),
    "paid": frozenset({"confirmed", "cancelled"}),
    "subsidised": frozenset({"confirmed", "cancelled"}),
    "confirmed": frozenset({"cancelled"}),
    "cancelled": frozenset(),
}


class Enrollment(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    person_id: UUID
    household_id: UUID
    village_code: str
    coverage_year: int
    status: Status
    funding: Literal["paid", "subsidised"] | None
    source: str
    policy_version_id: UUID | None
    registered_at: datetime
    registered_on: date
    business_date: date | None
    premium_fen: int | None
    subsidy_fen: int
    coverage_start: date | None
    coverage_end: date | None
    coverage_reason: str | None
    coverage_note: str | None
    waiting_months: int | None
    confirmed_at: datetime | None
    confirmed_by: UUID | None
    cancelled_at: datetime | None
    cancelled_by: UUID | None
    cancel_reason: CancelReason | None
    cancel_note: str | None
    row_version: int
    updated_at: datetime
    # Years before the coverage year whose cover nobody knows and that could have changed the gap
    # this cover was decided on (ignored, or counted as gaps, as the policy's `unknown_years` says):
    # for the reviewer to check. Empty: nothing to check.
    unknown_years: list[int] = []
    gap_review: GapReview | None = None  # open: a later history import would change the cover
    # The person's continuous years of basic insurance as of the coverage year (continuity.py):
    # given in the list of a year's enrolments (the review queue), None elsewhere.
    continuous_years: int | None = None
    # Registered at the school as a new university student's (EnrollmentCreate.new_student).
    new_student: bool = False


class GapCover(msgspec.Struct, frozen=True, kw_only=True):
    """The cover an enrolment would have now, from the same business date and today's knowledge."""

    coverage_start: date | None
    coverage_end: date | None
    coverage_reason: str
    waiting_months: int
    counted_gap_years: list[int]  # the years now counted as gaps
    unknown_years: list[int]


class GapReview(msgspec.Struct, frozen=True, kw_only=True):
    """A funded enrolment whose cover a history import would change: a reviewer applies the new
    cover or keeps the old one; nothing changes until then."""

    opened_at: datetime
    source_file: str  # the history file that changed what is known
    years: list[int]  # the imported years that changed, before the coverage year
    cover: GapCover  # the cover the enrolment would have now


class EnrollmentCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    household_id: UUID
    coverage_year: Year
    person_ids: Annotated[
        list[UUID], msgspec.Meta(min_length=1, max_length=30, extra_json_schema={"extra": {"unique_items": True}})
    ]
    # Every person of the request is a new student of a university of the pooling area, registered
    # by the school's office in its enrolment period (高校新生, 闽政办〔2025〕3号 §1); refused when the
    # year's policy has no `rules.new_students`.
    new_student: bool = False


class Enrolled(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Enrollment]
    # Printed on the enrolment slip; shown once, when the household is first enrolled for the year.
    query_code: str | None


class EnrollmentPage(msgspec.Struct, frozen=True):
    items: list[Enrollment]
    next_cursor: UUID | None


class ConfirmRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ids: Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=500)]


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: CancelReason
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class AlreadyEnrolled(Conflict):
    """Person already has a live enrolment for this year"""

    code = "already_enrolled"


class IllegalTransition(Conflict):
    """The enrolment cannot move to that state from its current one"""

    code = "illegal_transition"


def _enrollment(row: asyncpg.Record) -> Enrollment:
    values = dict(row.items())
    # The note in the reader's language, from the facts the cover was decided on (an enrolment
    # funded before they were kept shows the English note it was given then).
    if (facts := explain.coverage_facts(values.get("coverage_facts"))) is not None:
        values["coverage_note"] = explain.cover_words(facts)
        values["unknown_years"] = list(facts.unknown_years)
    return msgspec.convert(values, Enrollment)


async def household_query_code(conn: Connection, key: bytes, household_id: UUID, year: int) -> str | None:
    """The code printed on the household's slip for the year, or None before its first enrolment."""
    generation: int | None = await conn.fetchval(Q["query_code_generation"], household_id, year)
    return None if generation is None else derive_query_code(key, household_id, year, generation)


async def enrol(conn: Connection, actor: Actor, data: EnrollmentCreate, today: date, code_key: bytes) -> Enrolled:
    """Registers members of one household for a year (state `registered`)."""
    return (await enrol_many(conn, actor, [data], today, code_key))[0]


async def enrol_many(
    conn: Connection, actor: Actor, enrolments: list[EnrollmentCreate], today: date, code_key: bytes
) -> list[Enrolled]:
    """Registers members of households for a year (`enrol`: of one), in one read and one insert for
    them all: each household's enrolments, query code (made unless it has one) and audit rows. Of one
    year and new-student flag, and of persons told apart between households (a sync push, issue 20,
    writes a row of visits so). A refusal of any of them raises (which of several households it names
    first is not that of enrolling them one by one: the push then enrols them so to answer it), and
    nothing is written."""
    year, new_student = enrolments[0].coverage_year, enrolments[0].new_student
    pairs = [(data.household_id, p) for data in enrolments for p in data.person_ids]
    apart = sum(len(set(data.person_ids)) for data in enrolments) == len({p for _h, p in pairs})
    if any((x.coverage_year, x.new_student) != (year, new_student) for x in enrolments) or not apart:
        raise ValueError("a set is of one year and new-student flag, households' persons told apart")
    rows = await conn.fetch(Q["households_for_enrolments"], [h for h, _p in pairs], [p for _h, p in pairs], year, today)
    policy_row, at = rows[0]["policy"], 0
    asked_by: list[list[asyncpg.Record]] = []
    for data in enrolments:
        asked = rows[at : at + len(data.person_ids)]
        at += len(data.person_ids)
        if asked[0]["village_code"] is None:
            raise NotFound()
        asked_by.append(asked)
    policies_of = [
        _enrollable(actor, data, asked[0], asked, policy_row) for data, asked in zip(enrolments, asked_by, strict=True)
    ]
    policy = policies_of[0]
    numbers_by = [_numbers(asked) for asked in asked_by]
    known: dict[str, PersonEligibility] = {}
    if rows[0]["eligibility_known"]:
        every = sorted({n for numbers in numbers_by for n in numbers.values()})
        known = await eligibility.facts(conn, every, year, today)
    codes: list[str] = []
    ids: list[list[UUID]] = []
    gathered: list[audit.Gathered] = []
    live = set(rows[0]["enrolled"])
    for data, asked, numbers in zip(enrolments, asked_by, numbers_by, strict=True):
        _check_registrable(data, policy, numbers, known, live)
        codes.append(derive_query_code(code_key, data.household_id, year))
        made, audit_rows = await _enrolment_audit(conn, actor, data, asked[0]["village_code"])
        ids.append(made)
        gathered.append(audit_rows)
    audit_columns = [g.columns() for g in gathered]
    try:
        inserted = await conn.fetch(
            Q["insert_enrollments_many_with_codes"],
            [i for made in ids for i in made],
            [p for _h, p in pairs],
            [h for h, _p in pairs],
            year,
            policy.id,
            today,
            policy.premium_fen,
            new_student,
            [data.household_id for data in enrolments],
            [
                query_code_hash(code_key, data.household_id, year, code)
                for data, code in zip(enrolments, codes, strict=True)
            ],
            [
                asked[0]["village_code"]
                for data, asked in zip(enrolments, asked_by, strict=True)
                for _p in data.person_ids
            ],
            *([v for columns in audit_columns for v in columns[i]] for i in range(9)),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "enrollments_one_live_per_person_year":
            raise AlreadyEnrolled() from exc  # a concurrent request won the race
        raise
    for g in gathered:
        g.written()
    of_household: dict[UUID, list[asyncpg.Record]] = {}
    for r in inserted:
        of_household.setdefault(r["household_id"], []).append(r)
    return [
        await _registered(
            conn,
            actor,
            of_household[data.household_id],
            made,
            policy,
            asked,
            numbers,
            known,
            code if of_household[data.household_id][0]["code_created"] else None,
        )
        for data, made, asked, numbers, code in zip(enrolments, ids, asked_by, numbers_by, codes, strict=True)
    ]


def _enrollable(
    actor: Actor, data: EnrollmentCreate, household: asyncpg.Record, asked: list[asyncpg.Record], policy: Any
) -> policies.PolicyVersion:
    """The checks of an enrolment on its household's rows (`households_for_enrolments`: the household
    on each, a row per person asked): the year's policy version in force (`policy`, as JSON)."""
    if not actor.in_scope(household["village_code"]):
        raise NotFound()
    if household["status"] != "active":
        raise Conflict(_("the household is dissolved"))
    if len(set(data.person_ids)) != len(data.person_ids):
        raise InvalidInput("person_ids", _("lists a person twice"))
    for i, row in enumerate(asked):
        if not row["member"]:
            raise InvalidInput(f"person_ids[{i}]", _("is not a current member of the household"))
    # The version in force today came with the household.
    return policies.required(
        None if policy is None else msgspec.convert(policy, policies.PolicyVersion), data.coverage_year
    )


def _numbers(asked: list[asyncpg.Record]) -> dict[UUID, str]:
    keyring = crypto.keys()
    return {r["person_id"]: keyring.open(ID_NUMBER, r["id_number_enc"]) or "" for r in asked if r["id_number_enc"]}


def _check_registrable(
    data: EnrollmentCreate,
    policy: policies.PolicyVersion,
    numbers: dict[UUID, str],
    known: dict[str, PersonEligibility],
    live: Collection[UUID],
) -> None:
    """No exclusion-list row, a policy with a rule for new students if they are, nobody enrolled."""
    _check_not_excluded(data, numbers, known)
    if data.new_student and policy.rules.new_students is None:
        raise InvalidInput(
            "new_student", _("the policy of {year} has no rule for new university students", year=data.coverage_year)
        )
    enrolled = [f"person_ids[{i}]" for i, person_id in enumerate(data.person_ids) if person_id in live]
    if enrolled:
        raise AlreadyEnrolled(errors=[{"field": f, "message": _("already enrolled for the year")} for f in enrolled])


async def _enrolment_audit(
    conn: Connection, actor: Actor, data: EnrollmentCreate, village_code: str
) -> tuple[list[UUID], audit.Gathered]:
    """The ids of an enrolment's rows, and their audit rows, gathered for the statement that writes them."""
    ids = [uuid7() for _person in data.person_ids]
    with audit.gathered(conn) as audit_rows:  # written by the enrolments' own statement
        await record_many(
            conn,
            actor,
            "enrol",
            "enrollment",
            [
                (
                    enrollment_id,
                    village_code,
                    {"person_id": str(person_id), "year": data.coverage_year, "status": "registered"}
                    | ({"new_student": True} if data.new_student else {}),
                )
                for enrollment_id, person_id in zip(ids, data.person_ids, strict=True)
            ],
        )
    return ids, audit_rows


async def _registered(
    conn: Connection,
    actor: Actor,
    rows: list[asyncpg.Record],
    ids: list[UUID],
    policy: policies.PolicyVersion,
    asked: list[asyncpg.Record],
    numbers: dict[UUID, str],
    known: dict[str, PersonEligibility],
    query_code: str | None,
) -> Enrolled:
    """The enrolments written (`rows`, in `ids` order once read), their subsidies applied."""
    by_id = {r["id"]: _enrollment(r) for r in rows}
    items = [by_id[i] for i in ids]
    dues = _dues(policy, {r["person_id"]: r["birth_date"] for r in asked}, numbers, known)
    return Enrolled(items=await _apply_subsidies(conn, actor, items, dues), query_code=query_code)


class OnExclusionList(Conflict):
    """Person is on an exclusion list (employee insurance, deceased) and cannot be enrolled"""

    code = "on_exclusion_list"


def _check_not_excluded(data: EnrollmentCreate, numbers: dict[UUID, str], known: dict[str, PersonEligibility]) -> None:
    """Exclusion-list rows in force (`eligibility.exclusions`, on facts already read) refuse the lot."""
    excluded = {p: known[n].exclusions for p, n in numbers.items() if n in known and known[n].exclusions}
    if excluded:
        errors = []
        for i, person_id in enumerate(data.person_ids):
            for o in excluded.get(person_id, []):
                message = (
                    _(
                        "is on the {list} list (list {list_type} version {version} row {row})",
                        list=o.code,
                        list_type=o.source.list_type,
                        version=o.source.version,
                        row=o.source.row,
                    )
                    if o.source
                    else _("is on the {list} list", list=o.code)
                )
                errors.append({"field": f"person_ids[{i}]", "message": message, "reason": o.code})
        raise OnExclusionList(errors=errors)


def _dues(
    policy: policies.PolicyVersion,
    born: dict[UUID, date],
    numbers: dict[UUID, str],
    known: dict[str, PersonEligibility],
) -> dict[UUID, PremiumDue]:
    """What each person owes under `policy` given the categories they hold and their age on
    1 January of the year (`eligibility.subsidies`, on facts already read)."""
    subsidy_policy = policy.subsidy_policy()
    out = {}
    for person_id, birth_date in born.items():
        n = numbers.get(person_id)
        held = [h.category for h in known[n].categories] if n is not None and n in known else []
        out[person_id] = premium_due(subsidy_policy, held, age=age_on_1_january(birth_date, policy.coverage_year))
    return out


async def _apply_subsidies(
    conn: Connection, actor: Actor, items: list[Enrollment], dues: dict[UUID, PremiumDue]
) -> list[Enrollment]:
    """Eligibility at registration: a fully subsidised person is `subsidised` at once, without
    payment; a partial subsidy is recorded so that the amount due shows it."""
    out = []
    for item in items:
        due = dues.get(item.person_id)
        premium = item.premium_fen or 0
        if due is None or due.subsidy_fen == 0 or premium == 0:
            out.append(item)
        elif min(due.subsidy_fen, premium) == premium:
            out.append(await mark_subsidised(conn, actor, item.id))
        else:
            await eligibility.set_registered_subsidy(conn, item.id, due.subsidy_fen)
            row = await conn.fetchrow(Q["enrollment"], item.id)
            assert row is not None
            out.append(_enrollment(row))
    return out


async def _locked(conn: Connection, actor: Actor | None, ids: list[UUID]) -> list[asyncpg.Record]:
    rows = await conn.fetch(Q["enrollments_for_update"], ids)
    found = {r["id"] for r in rows}
    if len(found) != len(set(ids)) or (actor is not None and not all(actor.in_scope(r["village_code"]) for r in rows)):
        raise NotFound()
    return list(rows)


def _check_transition(row: asyncpg.Record, to: str) -> None:
    if to not in TRANSITIONS[row["status"]]:
        raise IllegalTransition(
            _("a {status} enrolment cannot become {to}", status=row["status"], to=to),
            enrollment_id=str(row["id"]),
            current=row["status"],
        )


class CoverageInputs(msgspec.Struct, frozen=True):
    """What cover from a business date depends on besides the enrolment: each person's birth date,
    earlier years known covered and known uncovered, and years paid back (`coverage_facts`, by
    person and coverage year), the policy in force on that date for each year, and what could show
    the person exempt from waiting under that policy (list rows and accepted claims of the lists its
    groups name). A payment reads them before it takes its locks."""

    facts: dict[tuple[UUID, int], asyncpg.Record]
    in_force: dict[int, policies.PolicyVersion | None]  # None: no policy for that year (a 422 if needed)
    evidence: dict[tuple[UUID, int], list[ExemptionEvidence]] = {}


# The pooling area's local time zone (Settings.timezone's default): a person on the rolls on
# 1 January of a year, local time, is known uncovered that year unless something shows cover.
LOCAL_TIMEZONE = "Asia/Shanghai"


async def coverage_inputs(
    conn: Connection, person_years: list[tuple[UUID, int]], on: date, timezone: str = LOCAL_TIMEZONE
) -> CoverageInputs:
    persons, years = [p for p, _y in person_years], [y for _p, y in person_years]
    rows = await conn.fetch(Q["coverage_facts"], persons, years, on, timezone)
    in_force: dict[int, policies.PolicyVersion | None] = {y: None for _, y in person_years}
    for r in rows:  # (one row of each year carries its version)
        if r["policy"] is not None and in_force[r["year"]] is None:
            in_force[r["year"]] = msgspec.convert(r["policy"], policies.PolicyVersion)
    evidence: dict[tuple[UUID, int], list[ExemptionEvidence]] = {}
    # Evidence is read only for those of whom something can be known (one round trip spared when
    # nobody is on any list nor has a claim accepted for the year, as most payers).
    possible = {(r["person_id"], r["year"]) for r in rows if r["evidence_possible"]}
    for year, policy in in_force.items():
        if policy is None:
            continue
        types = {t for g in group_rules(policy.rules.waiting) for t in g.list_types or ()}
        of_year = [p for p, y in person_years if y == year and (p, y) in possible]
        for person_id, held in (await eligibility.exemption_evidence(conn, of_year, year, on, types)).items():
            evidence[person_id, year] = held
    return CoverageInputs({(r["person_id"], r["year"]): r for r in rows}, in_force, evidence)


def person_gaps(policy: WaitingPolicy, person: asyncpg.Record | dict[str, Any], year: int) -> GapYears:
    """The counted gap before `year` of a person as `coverage_facts` read them (`gaps.gap_years`)."""
    return gap_years(
        policy,
        coverage_year=year,
        birth_year=person["birth_date"].year,
        covered=set(person["covered_years"]),
        uncovered=set(person["uncovered_years"]),
    )


class Funding(msgspec.Struct, frozen=True):
    """Enrolments moved to paid or subsidised, with their cover, as `plan_funding` computed it: what
    `set_funded_many` writes (a payment writes it within its own statement) and what the audit says."""

    to: Literal["paid", "subsidised"]
    business_date: date
    rows: list[asyncpg.Record]  # the enrolments as they were, locked
    subsidies: list[int]
    cover: list[Coverage]
    facts: list[CoverageFacts]  # why each cover is what it is, put into words when read

    def columns(self) -> tuple[list[Any], ...]:
        """Ids, subsidies, starts, ends, reason codes, reasons, waiting months and coverage facts
        (`set_funded_many` $1, $4 … $10)."""
        c = self.cover
        return (
            [r["id"] for r in self.rows],
            self.subsidies,
            [x.start for x in c],
            [x.end for x in c],
            [x.reason_code for x in c],
            [x.reason for x in c],
            [x.waiting_months for x in c],
            self.facts,
        )

    def audit(self) -> list[tuple[object, str | None, dict[str, Any]]]:
        """The audit entries (`record_many`, action `to`, entity `enrollment`)."""
        return [
            (
                row["id"],
                row["village_code"],
                {
                    "from": row["status"],
                    "to": self.to,
                    "business_date": self.business_date.isoformat(),
                    "coverage_reason": c.reason_code,
                },
            )
            for row, c in zip(self.rows, self.cover, strict=True)
        ]


def plan_funding(
    rows: list[asyncpg.Record],
    to: Literal["paid", "subsidised"],
    business_date: date,
    inputs: CoverageInputs,
    subsidy_fen: dict[UUID, int] | None = None,
) -> Funding:
    """The cover of each enrolment (`rows`, locked) funded on `business_date`; the transition and the
    subsidy checked. No I/O: `inputs` is what `coverage_inputs` read for them."""
    for row in rows:
        _check_transition(row, to)
    subsidies, cover, facts = [], [], []
    for row in rows:
        year = row["coverage_year"]
        policy = policies.required(inputs.in_force[year], year)
        premium = row["premium_fen"] if row["premium_fen"] is not None else policy.premium_fen
        subsidy = row["subsidy_fen"] if subsidy_fen is None else subsidy_fen.get(row["id"], row["subsidy_fen"])
        if not 0 <= subsidy <= premium:
            raise InvalidInput("subsidy_fen", _("must lie between 0 and the premium"))
        subsidies.append(subsidy)
        decided = decide_cover(row, business_date, inputs)
        cover.append(decided.coverage)
        facts.append(decided.facts)
    return Funding(to=to, business_date=business_date, rows=rows, subsidies=subsidies, cover=cover, facts=facts)


def cover_if_funded(person_id: UUID, year: int, business_date: date, inputs: CoverageInputs) -> CoverageDecision:
    """The cover of `person_id` in `year` if funded on `business_date` (`inputs` as `coverage_inputs`
    read them): what a payment would buy, for the quote as for the payment itself."""
    return decide_cover({"coverage_year": year, "person_id": person_id}, business_date, inputs)


def decide_cover(row: asyncpg.Record | dict[str, Any], business_date: date, inputs: CoverageInputs) -> CoverageDecision:
    """The cover of one enrolment funded on `business_date`, from what `coverage_inputs` read."""
    year = row["coverage_year"]
    policy = policies.required(inputs.in_force[year], year)
    person = inputs.facts[row["person_id"], year]
    # The counted gap just before `year`, from what is known of each year (unknown is not a gap
    # unless the policy says so); the years of it paid back repair it.
    gaps = person_gaps(policy.rules.waiting, person, year)
    back_paid = len(set(gaps.counted) & set(person["back_paid_years"]))
    # An exempt group of the policy that the lists or an accepted claim show (decide_coverage uses
    # it only when the person enrols late or after a gap).
    exempt = exemption_for(
        policy.rules.waiting,
        inputs.evidence.get((row["person_id"], year), []),
        coverage_year=year,
        business_date=business_date,
    )
    return decide_coverage(
        coverage_year=year,
        business_date=business_date,
        window=policy.window,
        policy=policy.rules.waiting,
        exemption=None if exempt is None else exempt.group,
        evidence=None if exempt is None else exempt.evidence,
        birth_date=person["birth_date"],
        gap_years=gaps.gap_years,
        back_paid_years=back_paid,
        unknown_years=gaps.unknown,
        extended=policy.rules.extended_payment,
        new_student=bool(person["new_student"]),
        new_students=policy.rules.new_students,
    )


async def _fund(
    conn: Connection,
    actor: Actor | None,
    enrollment_ids: list[UUID],
    to: Literal["paid", "subsidised"],
    business_date: date,
    subsidy_fen: dict[UUID, int] | None = None,
) -> list[Enrollment]:
    """Moves enrolments to paid or subsidised and fixes their cover from `business_date`, in a
    few statements for the lot (several enrolments at once, e.g. a household's)."""
    rows = await _locked(conn, actor, enrollment_ids)
    for row in rows:
        _check_transition(row, to)
    inputs = await coverage_inputs(conn, [(r["person_id"], r["coverage_year"]) for r in rows], business_date)
    funding = plan_funding(rows, to, business_date, inputs, subsidy_fen)
    ids, *columns = funding.columns()
    updated = await conn.fetch(Q["set_funded_many"], ids, to, business_date, *columns)
    await record_many(conn, actor, to, "enrollment", funding.audit())
    by_id = {r["id"]: _enrollment(r) for r in updated}
    return [by_id[i] for i in enrollment_ids]


async def mark_paid(
    conn: Connection, actor: Actor | None, enrollment_id: UUID, business_date: date, subsidy_fen: int | None = None
) -> Enrollment:
    """The premium was paid on `business_date` (local): cover follows from that date. The subsidy
    recorded at registration stands unless another is given."""
    subsidies = None if subsidy_fen is None else {enrollment_id: subsidy_fen}
    (paid,) = await _fund(conn, actor, [enrollment_id], "paid", business_date, subsidies)
    return paid


async def mark_subsidised(conn: Connection, actor: Actor | None, enrollment_id: UUID) -> Enrollment:
    """Fully subsidised: nothing to pay, cover follows the registration date."""
    row = await conn.fetchrow(Q["enrollment"], enrollment_id)
    if row is None:
        raise NotFound()
    premium = row["premium_fen"] or 0
    (subsidised,) = await _fund(
        conn, actor, [enrollment_id], "subsidised", row["registered_on"], {enrollment_id: premium}
    )
    return subsidised


async def confirm(conn: Connection, actor: Actor, ids: list[UUID]) -> list[Enrollment]:
    """Bulk confirmation by a reviewer: all or nothing."""
    rows = await _locked(conn, actor, ids)
    illegal = [str(r["id"]) for r in rows if "confirmed" not in TRANSITIONS[r["status"]]]
    if illegal:
        raise IllegalTransition(_("only paid or subsidised enrolments can be confirmed"), enrollment_ids=illegal)
    updated = [_enrollment(r) for r in await conn.fetch(Q["set_confirmed"], ids, actor.id)]
    before = {r["id"]: r["status"] for r in rows}
    await record_many(
        conn,
        actor,
        "confirm",
        "enrollment",
        [(item.id, item.village_code, {"from": before[item.id], "to": "confirmed"}) for item in updated],
    )
    return sorted(updated, key=lambda e: ids.index(e.id))


async def cancel(conn: Connection, actor: Actor, enrollment_id: UUID, data: CancelRequest) -> Enrollment:
    (row,) = await _locked(conn, actor, [enrollment_id])
    _check_transition(row, "cancelled")
    updated = await conn.fetchrow(Q["set_cancelled"], enrollment_id, actor.id, data.reason, data.note)
    assert updated is not None
    await record(
        conn,
        actor,
        "cancel",
        "enrollment",
        enrollment_id,
        division_code=row["village_code"],
        summary={"from": row["status"], "to": "cancelled", "reason": data.reason},
    )
    return _enrollment(updated)


# Gap reviews: what a later history import does to enrolments --------------------------------------


class GapReviewDecision(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    decision: Literal["apply", "keep"]  # apply: the cover as known now; keep: the cover as it was (a note)
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Reopened(msgspec.Struct, frozen=True, kw_only=True):
    reopened: int  # registered enrolments whose cover at payment follows the new history
    to_review: int  # funded enrolments whose cover would change: a gap review each


class NoGapReview(Conflict):
    """The enrolment has no open gap review"""

    code = "no_gap_review"


def _gap_cover(decided: CoverageDecision) -> GapCover:
    c, f = decided.coverage, decided.facts
    counted = f.waiting.counted_gap_years if f.waiting is not None else f.counted_gap_years
    return GapCover(
        coverage_start=c.start,
        coverage_end=c.end,
        coverage_reason=c.reason_code,
        waiting_months=c.waiting_months,
        counted_gap_years=list(range(c.coverage_year - counted, c.coverage_year)),
        unknown_years=list(f.unknown_years),
    )


INPUTS_AT_ONCE = 500  # (person, year) pairs read at once by `_inputs_on_business_dates`


async def _inputs_on_business_dates(
    conn: Connection, rows: list[asyncpg.Record]
) -> dict[tuple[UUID, int], CoverageInputs]:
    """What the cover of each funded enrolment of `rows` depends on as of its business date: read for
    all the enrolments funded on one date at once (`INPUTS_AT_ONCE` a read), not one enrolment at a
    time — a history import can bear on every enrolment of the season."""
    by_date: dict[date, list[tuple[UUID, int]]] = {}
    for r in rows:
        by_date.setdefault(r["business_date"], []).append((r["person_id"], r["coverage_year"]))
    inputs_of: dict[tuple[UUID, int], CoverageInputs] = {}
    for business_date, pairs in by_date.items():
        for start in range(0, len(pairs), INPUTS_AT_ONCE):
            some = pairs[start : start + INPUTS_AT_ONCE]
            inputs = await coverage_inputs(conn, some, business_date)
            inputs_of |= dict.fromkeys(some, inputs)
    return inputs_of


async def reopen_after_history(
    conn: Connection, changed: list[tuple[bytes, int]], source_file: str, now: datetime
) -> Reopened:
    """After a history import changed the years `changed` (blind index of the number, year): the
    live enrolments of those persons for a later year. A registered one is reopened: nothing of it
    was fixed, so the cover a payment buys (and its quote) follows the new history; it is audited.
    A funded one keeps its cover; when the cover decided again from its business date with what is
    known now differs, it gets an open gap review (`gap_review`) for a reviewer, and is audited."""
    if not changed:
        return Reopened(reopened=0, to_review=0)
    reopened = to_review = 0
    # A district's file can bear on every enrolment of the season: read and decided a page at a time,
    # so that memory holds a page, not the season. Each page's rows are locked as it is fetched and
    # stay locked to the commit; a payment committed meanwhile on a later page is seen paid when its
    # page comes (and is reviewed, not reopened). The cursor must stay ahead of this transaction's
    # own writes: an enrolment that it updated before the cursor reached it would be skipped without
    # error (PostgreSQL's FOR UPDATE passes over rows the same transaction changed after the cursor's
    # snapshot), so nothing here may write enrolments of later pages.
    found = await conn.cursor(Q["enrollments_after_history"], [h for h, _y in changed], [y for _h, y in changed])
    while rows := await found.fetch(REOPEN_AT_ONCE):
        done = await _reopen_some(conn, rows, source_file, now)
        reopened, to_review = reopened + done.reopened, to_review + done.to_review
    return Reopened(reopened=reopened, to_review=to_review)


REOPEN_AT_ONCE = 10_000  # enrolments after a history import read and decided at once


async def _reopen_some(conn: Connection, rows: list[asyncpg.Record], source_file: str, now: datetime) -> Reopened:
    """`reopen_after_history` for a page of the enrolments it found."""
    reopened = [r for r in rows if r["status"] == "registered"]
    reviews: list[tuple[asyncpg.Record, GapReview]] = []
    funded = [r for r in rows if r["status"] in FUNDED and r["business_date"] is not None]
    inputs_of = await _inputs_on_business_dates(conn, funded)
    for r in funded:
        inputs = inputs_of[r["person_id"], r["coverage_year"]]
        if inputs.in_force[r["coverage_year"]] is None:
            continue  # (no policy to decide with: nothing to compare)
        now_cover = _gap_cover(decide_cover(r, r["business_date"], inputs))
        if (now_cover.coverage_start, now_cover.coverage_reason, now_cover.waiting_months) == (
            r["coverage_start"],
            r["coverage_reason"],
            r["waiting_months"],
        ):
            continue
        reviews.append(
            (r, GapReview(opened_at=now, source_file=source_file, years=list(r["changed_years"]), cover=now_cover))
        )
    if reviews:
        await conn.execute(
            Q["open_gap_reviews"], [r["id"] for r, _g in reviews], [msgspec.to_builtins(g) for _r, g in reviews]
        )
    await record_many(
        conn,
        None,
        "reopen",
        "enrollment",
        [(r["id"], r["village_code"], {"file": source_file, "years": list(r["changed_years"])}) for r in reopened],
    )
    await record_many(
        conn,
        None,
        "open_gap_review",
        "enrollment",
        [
            (
                r["id"],
                r["village_code"],
                {
                    "file": source_file,
                    "years": g.years,
                    "coverage_start": None if r["coverage_start"] is None else r["coverage_start"].isoformat(),
                    "would_start": None if g.cover.coverage_start is None else g.cover.coverage_start.isoformat(),
                },
            )
            for r, g in reviews
        ],
    )
    return Reopened(reopened=len(reopened), to_review=len(reviews))


async def decide_gap_review(conn: Connection, actor: Actor, enrollment_id: UUID, data: GapReviewDecision) -> Enrollment:
    """A reviewer applies the cover as known now (decided again from the enrolment's business date)
    or keeps the cover it has, with a note; the review is closed either way."""
    (row,) = await _locked(conn, actor, [enrollment_id])
    if row["gap_review"] is None or row["status"] not in FUNDED or row["business_date"] is None:
        raise NoGapReview()
    if data.decision == "keep" and not data.note.strip():
        raise InvalidInput("note", _("keeping the cover needs a note"))
    before = row["coverage_start"]
    if data.decision == "apply":
        inputs = await coverage_inputs(conn, [(row["person_id"], row["coverage_year"])], row["business_date"])
        decided = decide_cover(row, row["business_date"], inputs)
        c = decided.coverage
        updated = await conn.fetchrow(
            Q["apply_gap_review"],
            enrollment_id,
            c.start,
            c.end,
            c.reason_code,
            c.reason,
            c.waiting_months,
            decided.facts,
        )
    else:
        updated = await conn.fetchrow(Q["close_gap_review"], enrollment_id)
    assert updated is not None
    await record(
        conn,
        actor,
        "decide_gap_review",
        "enrollment",
        enrollment_id,
        division_code=row["village_code"],
        summary={
            "decision": data.decision,
            "coverage_start": None if before is None else before.isoformat(),
            "now": None if updated["coverage_start"] is None else updated["coverage_start"].isoformat(),
        },
    )
    return _enrollment(updated)


async def get(conn: Connection, actor: Actor, enrollment_id: UUID) -> Enrollment:
    row = await conn.fetchrow(Q["enrollment"], enrollment_id)
    if row is None or not actor.in_scope(row["village_code"]):
        raise NotFound()
    return _enrollment(row)


async def queue(
    conn: Connection,
    actor: Actor,
    *,
    year: int,
    status: str | None,
    village_code: str | None,
    household_id: UUID | None,
    after: UUID | None,
    limit: int,
    flag: QueueFlag | None = None,
    today: date | None = None,
) -> EnrollmentPage:
    """The enrolments of a year in scope; `flag` keeps those a reviewer should look at: with
    `unknown_years` listed, or with an open `gap_review`."""
    rows = await conn.fetch(
        Q["enrollment_queue"], *scope_args(actor), year, status, village_code, household_id, after, limit + 1, flag
    )
    items = [_enrollment(r) for r in rows[:limit]]
    next_cursor = items[-1].id if len(rows) > limit else None
    runs = await continuity.continuity_of(conn, list({e.person_id for e in items}), year, today or date(year, 1, 1))
    items = [
        msgspec.structs.replace(e, continuous_years=run.years if (run := runs.get(e.person_id)) else None)
        for e in items
    ]
    return EnrollmentPage(items=items, next_cursor=next_cursor)


async def queue_people(conn: Connection, actor: Actor, person_ids: Collection[UUID]) -> dict[UUID, tuple[str, str]]:
    """Who a page of the review queue is for (person → name, masked number: a newborn's birth
    certificate's when it has no identity number), so that a reviewer confirms people, not ids. The
    persons are those of enrolments `queue` found in the actor's scope; the read is audited with
    their record ids, as the roster's is."""
    if not person_ids:
        return {}
    keyring = crypto.keys()
    found = {
        r["id"]: (
            r["name"],
            mask(keyring.open(ID_NUMBER, r["id_number_enc"]) or keyring.open(BIRTH_CERT, r["birth_cert_enc"]) or ""),
        )
        for r in await conn.fetch(Q["queue_people"], list(person_ids))
    }
    await record(
        conn, actor, "read", "enrollment_queue", None, division_code=actor.scope.division_code, summary=persons(found)
    )
    return found


# Renewal (续保) -----------------------------------------------------------------------------------


class RenewalCandidate(msgspec.Struct, frozen=True, kw_only=True):
    person_id: UUID
    name: str
    household_id: UUID
    village_code: str
    household_no: str


class RenewalPage(msgspec.Struct, frozen=True):
    items: list[RenewalCandidate]
    next_cursor: UUID | None


class RenewalRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    coverage_year: Year
    person_ids: Annotated[
        list[UUID], msgspec.Meta(min_length=1, max_length=2000, extra_json_schema={"extra": {"unique_items": True}})
    ]


class Renewed(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Enrollment]
    query_codes: dict[str, str]  # household id → its new query code, for households first enrolled now


async def renewal_candidates(
    conn: Connection, actor: Actor, year: int, village_code: str | None, after: UUID | None, limit: int
) -> RenewalPage:
    """Last year's members not yet enrolled this year: the roster for renewal."""
    rows = await conn.fetch(Q["renewal_candidates"], *scope_args(actor), year, village_code, after, limit + 1)
    items = [msgspec.convert(dict(r.items()), RenewalCandidate) for r in rows[:limit]]
    await record(
        conn,
        actor,
        "read",
        "renewal_roster",
        None,
        division_code=actor.scope.division_code,
        summary={"year": year, "results": len(items)},
    )
    return RenewalPage(items=items, next_cursor=items[-1].person_id if len(rows) > limit else None)


async def renew(conn: Connection, actor: Actor, data: RenewalRequest, today: date, code_key: bytes) -> Renewed:
    """Enrols a chosen set of people, household by household, all or nothing."""
    if len(set(data.person_ids)) != len(data.person_ids):
        raise InvalidInput("person_ids", _("lists a person twice"))
    homes = {r["person_id"]: r["household_id"] for r in await conn.fetch(Q["households_of_persons"], data.person_ids)}
    by_household: dict[UUID, list[UUID]] = {}
    for i, person_id in enumerate(data.person_ids):
        if person_id not in homes:
            raise InvalidInput(f"person_ids[{i}]", _("is in no household"))
        by_household.setdefault(homes[person_id], []).append(person_id)
    items: list[Enrollment] = []
    codes: dict[str, str] = {}
    for household_id, person_ids in by_household.items():
        done = await enrol(
            conn,
            actor,
            EnrollmentCreate(household_id=household_id, coverage_year=data.coverage_year, person_ids=person_ids),
            today,
            code_key,
        )
        items.extend(done.items)
        if done.query_code is not None:
            codes[str(household_id)] = done.query_code
    return Renewed(items=items, query_codes=codes)
