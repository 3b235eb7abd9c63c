"""Continuous years of basic insurance (连续参保年数) and the serious-illness insurance ceiling
(大病保险最高支付限额) they raise, with a year of zero reimbursement (零报销), as 国办发〔2024〕38号
sets them out: after N continuous years each further continuous year raises the ceiling; a year
without any reimbursement from the fund raises it the next year; the two raises together are capped
at a share of the original ceiling.

The continuous years through a year are the run of years *known covered* (`gaps`: a funded
enrolment here, an imported history year marked paid, subsidised or confirmed, employee insurance
on the lists) that ends with that year. Only known cover counts: an unknown year ends the run as a
known uncovered year does — an incentive is never paid on a guess — but it is named
(`unknown_year`), so that a reviewer can look for the missing history. A policy may count the run
from a given year only (`count_from_year`: years before it never count).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal

import msgspec

__all__ = [
    "Ceiling",
    "CeilingReason",
    "Continuity",
    "SeriousIllnessIncentive",
    "continuity",
    "continuity_as_of",
    "serious_illness_ceiling",
]

CeilingFen = Annotated[int, msgspec.Meta(ge=1, le=100_000_000_000)]  # up to 1 billion yuan
RaiseFen = Annotated[int, msgspec.Meta(ge=0, le=100_000_000_000)]


class SeriousIllnessIncentive(msgspec.Struct, frozen=True, kw_only=True):
    """The year's incentive parameters for the serious-illness insurance ceiling (a policy's
    `serious_illness`). Fujian 2025: 3,000 yuan a continuous year after four years, 3,000 yuan
    after a zero-reimbursement year, both together at most 20 % of the original ceiling."""

    original_ceiling_fen: CeilingFen  # the pooling area's published ceiling (原封顶线)
    # The raise for each continuous year beyond `continuity_after_years` (满N年之后每连续参保1年)
    continuity_after_years: Annotated[int, msgspec.Meta(ge=0, le=100)] = 4
    continuity_raise_fen: RaiseFen = 0
    zero_claim_raise_fen: RaiseFen = 0  # after a year on the settlement system's zero-reimbursement list
    cap_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 20  # of the original ceiling, both raises together
    # Only years from this one on count toward continuity (None: every known year).
    count_from_year: Annotated[int, msgspec.Meta(ge=2000, le=2100)] | None = None


class Continuity(msgspec.Struct, frozen=True, kw_only=True):
    years: int  # the continuous years (0: the year counted to is not known covered)
    through: int  # the last year counted (the run ends with it)
    since: int | None  # the first year of the run; None when it is empty
    # The unknown year (neither known covered nor known uncovered) that ended the run: with its
    # history the run might be longer. None when a known uncovered year, the year of birth or the
    # policy's first counted year ended it.
    unknown_year: int | None


def continuity(
    *,
    through: int,
    covered: Collection[int],
    uncovered: Collection[int] = (),
    birth_year: int | None = None,
    count_from_year: int | None = None,
) -> Continuity:
    """The run of years known `covered` ending with `through` (a year in both `covered` and
    `uncovered` is covered: cover is the stronger evidence).

    >>> continuity(through=2026, covered={2022, 2023, 2024, 2025, 2026}, uncovered={2021}).years
    5
    >>> continuity(through=2026, covered={2025, 2026}).unknown_year
    2024
    """
    first = max(birth_year or 0, count_from_year or 0)
    year = through
    while year >= first and year in covered:
        year -= 1
    years = through - year
    unknown = year if year >= first and year not in uncovered else None
    return Continuity(years=years, through=through, since=year + 1 if years else None, unknown_year=unknown)


def continuity_as_of(
    year: int,
    *,
    covered: Collection[int],
    uncovered: Collection[int] = (),
    birth_year: int | None = None,
    count_from_year: int | None = None,
) -> Continuity:
    """The continuous years a person has as of `year`: through `year` when it is known covered,
    else through the year before (the run a payment for `year` would continue; before the person
    pays, last year's run is not lost yet).

    >>> continuity_as_of(2027, covered={2025, 2026}).years
    2
    """
    through = year if year in covered else year - 1
    return continuity(
        through=through, covered=covered, uncovered=uncovered, birth_year=birth_year, count_from_year=count_from_year
    )


class CeilingReason(msgspec.Struct, frozen=True, kw_only=True):
    """One reason of a ceiling, as data; the server and the tablet word it.

    continuity: `years` continuous years raise the ceiling by `raise_fen`; zero_claim: no
    reimbursement in `year` raises it by `raise_fen`; cap: both raises together are limited to
    `percent` % of the original ceiling (`raise_fen`, the cap), `capped` when the limit cut them."""

    code: Literal["continuity", "zero_claim", "cap"]
    raise_fen: int
    years: int | None = None
    year: int | None = None
    percent: int | None = None
    capped: bool = False


class Ceiling(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    original_fen: int
    continuous_years: int
    continuity_raise_fen: int  # before the cap
    zero_claim_year: int | None  # the year before, when it had no reimbursement
    zero_claim_raise_fen: int  # before the cap
    cap_fen: int  # the most both raises may add
    raise_fen: int  # what they add, capped
    ceiling_fen: int  # original + raise
    reasons: tuple[CeilingReason, ...]


def serious_illness_ceiling(
    incentive: SeriousIllnessIncentive, *, coverage_year: int, continuous_years: int, zero_claim_last_year: bool
) -> Ceiling:
    """The person's serious-illness ceiling for `coverage_year`, given the continuous years through
    that year (the year itself counted: `continuity(through=coverage_year, …)` of a person covered
    that year) and whether the settlement system listed the person with zero reimbursement the
    year before.

    >>> i = SeriousIllnessIncentive(original_ceiling_fen=40_000_000, continuity_raise_fen=300_000,
    ...                             zero_claim_raise_fen=300_000)
    >>> serious_illness_ceiling(i, coverage_year=2030, continuous_years=5, zero_claim_last_year=True).ceiling_fen
    40600000
    """
    steps = max(0, continuous_years - incentive.continuity_after_years)
    by_continuity = steps * incentive.continuity_raise_fen
    by_zero_claim = incentive.zero_claim_raise_fen if zero_claim_last_year else 0
    cap = incentive.original_ceiling_fen * incentive.cap_percent // 100
    total = min(by_continuity + by_zero_claim, cap)
    reasons: list[CeilingReason] = []
    if by_continuity:
        reasons.append(CeilingReason(code="continuity", raise_fen=by_continuity, years=continuous_years))
    if by_zero_claim:
        reasons.append(CeilingReason(code="zero_claim", raise_fen=by_zero_claim, year=coverage_year - 1))
    if reasons:
        capped = by_continuity + by_zero_claim > cap
        reasons.append(CeilingReason(code="cap", raise_fen=cap, percent=incentive.cap_percent, capped=capped))
    return Ceiling(
        coverage_year=coverage_year,
        original_fen=incentive.original_ceiling_fen,
        continuous_years=continuous_years,
        continuity_raise_fen=by_continuity,
        zero_claim_year=coverage_year - 1 if zero_claim_last_year else None,
        zero_claim_raise_fen=by_zero_claim,
        cap_fen=cap,
        raise_fen=total,
        ceiling_fen=incentive.original_ceiling_fen + total,
        reasons=tuple(reasons),
    )
