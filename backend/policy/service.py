"""The policy of a coverage year (年度政策), versioned with effective dates.

A version applies from its effective date on; the latest version in force on a business date
decides that date's premium, subsidies and waiting periods. Nothing already paid is recomputed:
enrolments keep the version they were priced under. Once money has been collected for a year, a
version can no longer be edited; changes go into a new version.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import fields
from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import Conflict, InvalidInput, NotFound, plain_validation_message
from backend.i18n import _
from backend.ids import uuid7
from mobile_sync_protocol.rules import policy as rules
from mobile_sync_protocol.rules.continuity import SeriousIllnessIncentive
from mobile_sync_protocol.rules.coverage import EXEMPT_GROUP_CODES, EnrolmentWindow, NewStudentRule, WaitingPolicy
from mobile_sync_protocol.rules.premium import AgeRange, SubsidyPolicy

Q = load_queries("backend.policy")

Year = Annotated[int, msgspec.Meta(ge=2000, le=2100)]
Fen = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
BackdatingDays = Annotated[int, msgspec.Meta(ge=0, le=366)]


class SeriousIllnessIncentiveIn(SeriousIllnessIncentive, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The serious-illness ceiling's incentives as a new version gives them: no unknown field."""


class NewStudentRuleIn(NewStudentRule, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The new-student rule as a new version gives it: no unknown field."""


HospitalLevel = Literal["township", "county", "above_county"]
HOSPITAL_LEVELS: tuple[HospitalLevel, ...] = ("township", "county", "above_county")


class LevelBenefit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What basic insurance pays for a hospital stay at one level of hospital: township health
    centre (乡镇卫生院), county hospital (县级) or above the county (县级以上)."""

    level: HospitalLevel
    deductible_fen: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]  # 起付线, per stay
    reimbursement_basis_points: Annotated[int, msgspec.Meta(ge=0, le=10_000)]  # 报销比例 above it, 7000 = 70 %


class Benefits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The year's benefit facts as residents are told them (the residents' page): shown, never
    applied — the settlement system pays claims. One entry per hospital level at most."""

    levels: Annotated[list[LevelBenefit], msgspec.Meta(min_length=1, max_length=3)]
    annual_ceiling_fen: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]  # 基本医保年度最高支付限额


class PolicyRules(rules.PolicyRules, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything of a version besides premium and window: stored as one JSON document. The
    tablet's wire type, refusing unknown fields when a version is written, and what only the
    server applies (a tablet ignores it when it pulls the version)."""

    # How many days before the day it is recorded a payment at the counter (REST) may be dated by
    # its collector; earlier, a reviewer records it for them. A tablet keeps its own offline
    # allowance (`backend.premiums.payments.CLOCK_TOO_OLD`). Documents stored before it default.
    payment_backdating_days: BackdatingDays = 7

    # --- Continuity incentives (issue 17 point 3): the wire type's field, refusing unknown fields.
    serious_illness: SeriousIllnessIncentiveIn | None = None
    # --- New university students: the wire type's field, refusing unknown fields.
    new_students: NewStudentRuleIn | None = None
    # --- Benefit facts for residents (issue 19): shown on the residents' page only; the tablet
    # ignores them. None: the page sends residents to the township office.
    benefits: Benefits | None = None


class PolicyIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    effective_from: date
    premium_fen: Fen
    window_start: date
    window_end: date
    rules: PolicyRules = PolicyRules()
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class PolicyDocument(PolicyIn, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A policy version as a file (`docs/policies/*.json`, loaded with `canbao policy load FILE`):
    the coverage year and what `POST /api/v1/policy-years/{year}/versions` takes."""

    coverage_year: Year


def parse_document(raw: bytes) -> PolicyDocument:
    """A policy file decoded and checked as a new version would be (`_check`); a mistake is an
    InvalidInput naming its field, e.g. `rules.categories[2].ages[0].from_age`."""
    try:
        document = msgspec.json.decode(raw, type=PolicyDocument)
    except msgspec.ValidationError as exc:
        field, message = plain_validation_message(str(exc), PolicyDocument)
        raise InvalidInput(field or "document", message) from None
    except msgspec.DecodeError:
        raise InvalidInput("document", _("is not a JSON document")) from None
    _check(document.coverage_year, document)
    return document


async def load_document(conn: Connection, document: PolicyDocument) -> PolicyVersion:
    """The document as a new version of its year (the CLI's `policy load`; no user: created_by is empty)."""
    return await create_version(conn, None, document.coverage_year, document)


class PolicyVersion(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    coverage_year: int
    version: int
    effective_from: date
    premium_fen: int
    window_start: date
    window_end: date
    rules: PolicyRules
    note: str
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime

    @property
    def window(self) -> EnrolmentWindow:
        return EnrolmentWindow(start=self.window_start, end=self.window_end)

    def subsidy_policy(self) -> SubsidyPolicy:
        return SubsidyPolicy(
            premium_fen=self.premium_fen,
            categories=self.rules.categories,
            categories_stack=self.rules.categories_stack,
            top_ups=self.rules.top_ups,
        )


class PolicyYear(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    current: PolicyVersion | None  # the version in force today
    versions: list[PolicyVersion]
    money_collected: bool  # versions can no longer be edited, only superseded


class NoPolicy(InvalidInput):
    """No policy for that coverage year"""

    code = "validation_error"  # InvalidInput's, stated so that the title is extracted for translation


class PolicyLocked(Conflict):
    """Money has been collected for this year: publish a new version instead"""

    code = "policy_locked"


def _version(row: asyncpg.Record) -> PolicyVersion:
    return msgspec.convert(dict(row.items()), PolicyVersion)


def _check(year: int, data: PolicyIn) -> None:
    if data.window_end < data.window_start:
        raise InvalidInput("window_end", _("must not be before window_start"))
    if not date(year - 1, 1, 1) <= data.window_start <= date(year, 12, 31):
        raise InvalidInput("window_start", _("must lie in {previous} or {year}", previous=year - 1, year=year))
    if data.window_end > date(year, 12, 31):
        raise InvalidInput("window_end", _("must not be after the end of {year}", year=year))
    extended = data.rules.extended_payment
    if extended is not None:
        if extended.end < extended.start:
            raise InvalidInput("rules.extended_payment.end", _("must not be before start"))
        # After the window, inside the coverage year: the days between are simply late.
        if extended.start <= data.window_end:
            raise InvalidInput("rules.extended_payment.start", _("must be after window_end"))
        if extended.end > date(year, 12, 31):
            raise InvalidInput("rules.extended_payment.end", _("must not be after the end of {year}", year=year))
    try:
        SubsidyPolicy(
            premium_fen=data.premium_fen,
            categories=data.rules.categories,
            categories_stack=data.rules.categories_stack,
            top_ups=data.rules.top_ups,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput("rules", str(exc)) from None
    for i, category in enumerate(data.rules.categories):
        for j, ages in enumerate(category.ages):
            _check_ages(f"rules.categories[{i}].ages[{j}]", ages)
    for i, top_up in enumerate(data.rules.top_ups):
        for j, ages in enumerate(top_up.ages):
            _check_ages(f"rules.top_ups[{i}].ages[{j}]", ages)
    _check_exemptions(data.rules.waiting)
    if data.rules.benefits is not None:
        _check_benefits(data.rules.benefits)


def _check_ages(field: str, ages: AgeRange) -> None:
    """An age range names a bound, and its lower bound lies below its upper one (checked here, not
    in decoding: the schema cannot say it)."""
    if ages.from_age is None and ages.below_age is None:
        raise InvalidInput(field, _("must name from_age, below_age or both"))
    if ages.from_age is not None and ages.below_age is not None and ages.from_age >= ages.below_age:
        raise InvalidInput(field, _("from_age must be less than below_age"))


def _check_benefits(benefits: Benefits) -> None:
    """Each hospital level once, in the order township, county, above the county."""
    seen: set[str] = set()
    for i, level in enumerate(benefits.levels):
        if level.level in seen:
            raise InvalidInput(f"rules.benefits.levels[{i}].level", _("is given twice"))
        seen.add(level.level)
    order = [HOSPITAL_LEVELS.index(level.level) for level in benefits.levels]
    if order != sorted(order):
        raise InvalidInput("rules.benefits.levels", _("must be in the order township, county, above_county"))


def _check_exemptions(waiting: WaitingPolicy) -> None:
    """The exempt groups are ones the rules know (mobile_sync_protocol/rules/exemptions.py), each
    given parameters at most once and only when the policy names it; the lists they name are list
    types (a built-in type or a subsidy category)."""
    for code in sorted(waiting.exempt_groups - EXEMPT_GROUP_CODES):
        raise InvalidInput(
            "rules.waiting.exempt_groups",
            _("{code} is not an exempt group; known: {known}", code=code, known=", ".join(sorted(EXEMPT_GROUP_CODES))),
        )
    seen: set[str] = set()
    for i, group in enumerate(waiting.exemptions):
        field = f"rules.waiting.exemptions[{i}]"
        if group.group not in EXEMPT_GROUP_CODES or group.group == "newborn":
            raise InvalidInput(f"{field}.group", _("is not an exempt group recognised from evidence"))
        if group.group not in waiting.exempt_groups:
            raise InvalidInput(f"{field}.group", _("is not one of the policy's exempt_groups"))
        if group.group in seen:
            raise InvalidInput(f"{field}.group", _("is given twice"))
        seen.add(group.group)
        if group.list_types is not None:
            if not group.list_types:
                raise InvalidInput(f"{field}.list_types", _("must name at least one list type"))
            for j, list_type in enumerate(group.list_types):
                if re.fullmatch(fields.LIST_TYPE, list_type) is None:
                    raise InvalidInput(f"{field}.list_types[{j}]", _("is not a list type"))


async def money_collected(conn: Connection, year: int) -> bool:
    return bool(await conn.fetchval(Q["year_has_money"], year))


async def create_version(conn: Connection, actor: Actor | None, year: int, data: PolicyIn) -> PolicyVersion:
    """A new version of `year`'s policy (`actor` None: loaded from a file with `canbao policy load`)."""
    _check(year, data)
    # Serialise version numbering per year: two admins publishing at once get 1 and 2, not a clash.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('policy_versions'), $1)", year)
    version = await conn.fetchval(Q["next_policy_version"], year)
    row = await conn.fetchrow(
        Q["insert_policy_version"],
        uuid7(),
        year,
        version,
        data.effective_from,
        data.premium_fen,
        data.window_start,
        data.window_end,
        msgspec.to_builtins(data.rules),
        data.note,
        None if actor is None else actor.id,
    )
    assert row is not None
    created = _version(row)
    await record(conn, actor, "create", "policy_version", created.id, summary={"year": year, "version": version})
    return created


async def update_version(conn: Connection, actor: Actor, year: int, version: int, data: PolicyIn) -> PolicyVersion:
    _check(year, data)
    # Exclusive with payments of the year (they hold it shared): no payment slips in mid-edit.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('policy_versions'), $1)", year)
    before = await conn.fetchrow(Q["policy_version_for_update"], year, version)
    if before is None:
        raise NotFound()
    if await money_collected(conn, year):
        raise PolicyLocked()
    if await conn.fetchval(Q["version_has_enrollments"], before["id"]):
        # Registered enrolments are priced under this version; editing it in place would leave
        # them at the old premium. A new version applies from its effective date instead.
        raise PolicyLocked(_("enrolments are priced under this version: publish a new version instead"))
    row = await conn.fetchrow(
        Q["update_policy_version"],
        before["id"],
        data.effective_from,
        data.premium_fen,
        data.window_start,
        data.window_end,
        msgspec.to_builtins(data.rules),
        data.note,
    )
    assert row is not None
    await record(conn, actor, "update", "policy_version", before["id"], summary={"year": year, "version": version})
    return _version(row)


async def years(conn: Connection) -> list[int]:
    """The coverage years that have a policy, in order."""
    return [r["coverage_year"] for r in await conn.fetch(Q["policy_years"])]


async def versions(conn: Connection, year: int) -> list[PolicyVersion]:
    return [_version(r) for r in await conn.fetch(Q["policy_versions_of_year"], year)]


async def in_force(conn: Connection, year: int, on: date) -> PolicyVersion | None:
    """The version that applies to a business date: the newest one effective on or before it.

    A date before every version's effective date (registering for next year early) takes the
    first version."""
    row = await conn.fetchrow(Q["policy_in_force"], year, on)
    return None if row is None else _version(row)


async def require_in_force(conn: Connection, year: int, on: date) -> PolicyVersion:
    return required(await in_force(conn, year, on), year)


def required(policy: PolicyVersion | None, year: int) -> PolicyVersion:
    """The version `in_force` found for `year`; none is a 422."""
    if policy is None:
        raise NoPolicy("coverage_year", _("no policy has been published for {year}", year=year))
    return policy


async def policy_year(conn: Connection, year: int, today: date) -> PolicyYear:
    all_versions = await versions(conn, year)
    if not all_versions:
        raise NotFound()
    return PolicyYear(
        coverage_year=year,
        current=await in_force(conn, year, today),
        versions=all_versions,
        money_collected=await money_collected(conn, year),
    )
