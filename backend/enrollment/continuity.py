"""Continuous years of basic insurance (连续参保年数) of persons, and their serious-illness insurance
ceiling (大病保险最高支付限额) for a year with its reasons, from what the server knows: the pure rules
are `mobile_sync_protocol/rules/continuity.py`; this module reads the years (`continuity.sql`) and
words the answers. Shown on the household, the resident's view, FHIR and the enrolment list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from uuid import UUID

import asyncpg
import msgspec

from backend.db import Connection, load_queries
from backend.i18n import _, ngettext, yuan
from backend.policy import service as policies
from mobile_sync_protocol.rules.continuity import (
    Ceiling,
    CeilingReason,
    Continuity,
    SeriousIllnessIncentive,
    continuity,
    continuity_as_of,
    serious_illness_ceiling,
)

Q = load_queries("backend.enrollment", "continuity.sql")

# The pooling area's local time zone (as `enrollments.LOCAL_TIMEZONE`).
LOCAL_TIMEZONE = "Asia/Shanghai"


class PersonContinuity(msgspec.Struct, frozen=True, kw_only=True):
    """A person's continuous years as of a year (`continuity_as_of`): through that year when it is
    known covered, else through the year before."""

    years: int
    through: int
    since: int | None
    # The unknown year that ended the run: its history (an import) might make the run longer.
    unknown_year: int | None
    words: str


class CeilingView(msgspec.Struct, frozen=True, kw_only=True):
    """A person's serious-illness insurance ceiling for a year, with the reasons."""

    coverage_year: int
    original_fen: int
    original_yuan: str
    raise_fen: int  # both raises together, capped
    ceiling_fen: int
    ceiling_yuan: str
    continuous_years: int  # through the year itself
    zero_claim_year: int | None  # the year before, when the settlement system listed no reimbursement
    reason_codes: list[str]  # continuity, zero_claim, cap (capped: the cap cut the raises)
    reasons: list[str]  # each reason in words, in the same order
    words: str  # the ceiling and its reasons in one sentence


class Known(msgspec.Struct, frozen=True, kw_only=True):
    birth_year: int
    covered: frozenset[int]
    uncovered: frozenset[int]
    zero_claim: frozenset[int]


async def known_years(
    conn: Connection, person_ids: Sequence[UUID], year: int, timezone: str = LOCAL_TIMEZONE
) -> dict[UUID, Known]:
    """What is known of each person's years up to `year` (one query for all)."""
    if not person_ids:
        return {}
    rows = await conn.fetch(Q["known_years"], list(person_ids), year, timezone, None)
    return {r["person_id"]: _known(r) for r in rows}


# The same of a household's current members, the persons named by the household rather than listed:
# with only scalar parameters PostgreSQL keeps the statement's generic plan after a few runs, where
# with a list of persons it plans every run anew (0.6 ms of planning for 0.3 ms of work; issue 20).
_OF_PERSONS = "WHERE p.id = ANY($1::uuid[])"
_OF_HOUSEHOLD = "WHERE p.id IN (SELECT m.person_id FROM memberships m WHERE m.household_id = $1 AND m.left_at IS NULL)"
assert Q["known_years"].endswith(_OF_PERSONS)
KNOWN_YEARS_OF_HOUSEHOLD = Q["known_years"].removesuffix(_OF_PERSONS) + _OF_HOUSEHOLD


async def known_years_and_policy_of_household(
    conn: Connection, household_id: UUID, year: int, on: date, timezone: str = LOCAL_TIMEZONE
) -> tuple[dict[UUID, Known], policies.PolicyVersion | None]:
    """`known_years` of the household's current members, and the policy version of `year` in force
    on `on`, in one round trip. Without current members nothing says the policy: ({}, None)."""
    rows = await conn.fetch(KNOWN_YEARS_OF_HOUSEHOLD, household_id, year, timezone, on)
    policy = next((r["policy"] for r in rows if r["policy"] is not None), None)
    version = None if policy is None else msgspec.convert(policy, policies.PolicyVersion)
    return {r["person_id"]: _known(r) for r in rows}, version


def _known(r: asyncpg.Record) -> Known:
    return Known(
        birth_year=r["birth_date"].year,
        covered=frozenset(r["covered_years"]),
        uncovered=frozenset(r["uncovered_years"]),
        zero_claim=frozenset(r["zero_claim_years"]),
    )


def continuity_words(c: Continuity) -> str:
    if c.years == 0:
        words = _("no continuous years of basic insurance known")
    else:
        words = ngettext(
            "{n} continuous year of basic insurance ({since}–{through})",
            "{n} continuous years of basic insurance ({since}–{through})",
            c.years,
            since=c.since,
            through=c.through,
        )
    if c.unknown_year is not None:
        words = _("{words}; nothing is known of {year}", words=words, year=c.unknown_year)
    return words


def person_continuity(known: Known, year: int, count_from_year: int | None = None) -> PersonContinuity:
    c = continuity_as_of(
        year,
        covered=known.covered,
        uncovered=known.uncovered,
        birth_year=known.birth_year,
        count_from_year=count_from_year,
    )
    return PersonContinuity(
        years=c.years, through=c.through, since=c.since, unknown_year=c.unknown_year, words=continuity_words(c)
    )


async def continuity_of(
    conn: Connection, person_ids: Sequence[UUID], year: int, on: date, timezone: str = LOCAL_TIMEZONE
) -> dict[UUID, PersonContinuity]:
    """Each person's continuous years as of `year` (`continuity_as_of`), counted from the first year
    that counts in the policy in force for `year` on `on` (all years without one)."""
    if not person_ids:
        return {}
    # The years and the policy in force in one round trip.
    rows = await conn.fetch(Q["known_years"], list(person_ids), year, timezone, on)
    policy = next((r["policy"] for r in rows if r["policy"] is not None), None)
    incentive = None if policy is None else msgspec.convert(policy, policies.PolicyVersion).rules.serious_illness
    first = incentive.count_from_year if incentive is not None else None
    return {r["person_id"]: person_continuity(_known(r), year, first) for r in rows}


def reason_words(reason: CeilingReason) -> str:
    amount = yuan(reason.raise_fen)
    if reason.code == "continuity":
        return ngettext(
            "{n} continuous year insured: raised by {amount}",
            "{n} continuous years insured: raised by {amount}",
            reason.years or 0,
            amount=amount,
        )
    if reason.code == "zero_claim":
        return _("no reimbursement in {year}: raised by {amount}", year=reason.year, amount=amount)
    if reason.capped:
        return _("capped at {percent}% of the original ceiling ({amount})", percent=reason.percent, amount=amount)
    return _(
        "both raises together at most {percent}% of the original ceiling ({amount})",
        percent=reason.percent,
        amount=amount,
    )


def ceiling_view(ceiling: Ceiling) -> CeilingView:
    reasons = [reason_words(r) for r in ceiling.reasons]
    if reasons:
        words = _(
            "Serious-illness insurance ceiling {year}: {ceiling} ({reasons})",
            year=ceiling.coverage_year,
            ceiling=yuan(ceiling.ceiling_fen),
            reasons=_("; ").join(reasons),
        )
    else:
        words = _(
            "Serious-illness insurance ceiling {year}: {ceiling}, the original ceiling ({continuity})",
            year=ceiling.coverage_year,
            ceiling=yuan(ceiling.ceiling_fen),
            continuity=ngettext(
                "{n} continuous year insured", "{n} continuous years insured", ceiling.continuous_years
            ),
        )
    return CeilingView(
        coverage_year=ceiling.coverage_year,
        original_fen=ceiling.original_fen,
        original_yuan=yuan(ceiling.original_fen),
        raise_fen=ceiling.raise_fen,
        ceiling_fen=ceiling.ceiling_fen,
        ceiling_yuan=yuan(ceiling.ceiling_fen),
        continuous_years=ceiling.continuous_years,
        zero_claim_year=ceiling.zero_claim_year,
        reason_codes=[r.code for r in ceiling.reasons],
        reasons=reasons,
        words=words,
    )


def person_ceiling(incentive: SeriousIllnessIncentive, known: Known, year: int) -> Ceiling:
    """The ceiling of a person covered in `year` (the year counts, whatever the rolls say)."""
    run = continuity(
        through=year,
        covered=known.covered | {year},
        uncovered=known.uncovered,
        birth_year=known.birth_year,
        count_from_year=incentive.count_from_year,
    )
    return serious_illness_ceiling(
        incentive, coverage_year=year, continuous_years=run.years, zero_claim_last_year=year - 1 in known.zero_claim
    )


async def ceilings(
    conn: Connection, person_ids: Sequence[UUID], year: int, on: date, timezone: str = LOCAL_TIMEZONE
) -> dict[UUID, CeilingView]:
    """The serious-illness ceiling for `year` of persons covered that year (the caller knows they
    are), under the year's policy in force on `on`; none when the policy carries no incentive."""
    if not person_ids:
        return {}
    policy = await policies.in_force(conn, year, on)
    incentive = policy.rules.serious_illness if policy is not None else None
    if incentive is None:
        return {}
    known = await known_years(conn, person_ids, year, timezone)
    return {p: ceiling_view(person_ceiling(incentive, k, year)) for p, k in known.items()}


class RosterYears(msgspec.Struct, frozen=True, kw_only=True):
    """A person's continuous years as of a year and, when covered that year under a policy with the
    incentive, the serious-illness ceiling: what a roster's row shows."""

    continuous_years: int
    ceiling_fen: int | None


async def roster_years(
    conn: Connection,
    person_ids: Sequence[UUID],
    covered: Sequence[UUID],
    year: int,
    on: date,
    timezone: str = LOCAL_TIMEZONE,
) -> dict[UUID, RosterYears]:
    """For a page of persons (one query for all, one look-up of the policy): continuous years as
    of `year` (`continuity_as_of`) and, for those of `covered` (the caller knows they are), the
    ceiling under the year's policy in force on `on` (None without an incentive)."""
    if not person_ids:
        return {}
    policy = await policies.in_force(conn, year, on)
    incentive = policy.rules.serious_illness if policy is not None else None
    first = incentive.count_from_year if incentive is not None else None
    known = await known_years(conn, person_ids, year, timezone)
    covered_set = set(covered)
    answer = {}
    for p, k in known.items():
        run = continuity_as_of(
            year, covered=k.covered, uncovered=k.uncovered, birth_year=k.birth_year, count_from_year=first
        )
        ceiling = None
        if incentive is not None and p in covered_set:
            ceiling = person_ceiling(incentive, k, year).ceiling_fen
        answer[p] = RosterYears(continuous_years=run.years, ceiling_fen=ceiling)
    return answer
