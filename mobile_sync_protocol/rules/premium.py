"""Subsidy and amount due for a person and a household, in integer fen.

Which subsidy categories (特困, 低保, …) apply, which one wins or how they stack, district top-ups,
and a breakdown from which an explanation can be written. No floats anywhere: percentages are
basis points (1 % = 100) and round half up to the fen.

A category or a top-up may also depend on age (`ages`: e.g. members of 低保边缘 families only when
aged 60 or over or under 18; a reduction for everyone aged 70 or over). Age is measured once for
the whole coverage year: the completed years on **1 January of the coverage year**
(`age_on_1_january`), so that a quote in November, a payment in December and the tablet offline
give the same answer whatever the business date.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date
from typing import Annotated, Literal

import msgspec

__all__ = [
    "AgeRange",
    "CategorySubsidy",
    "FixedSubsidy",
    "FullSubsidy",
    "HouseholdDue",
    "PercentSubsidy",
    "PremiumDue",
    "SubsidyLine",
    "SubsidyPolicy",
    "SubsidyRule",
    "TopUp",
    "age_on_1_january",
    "household_due",
    "percent_of",
    "premium_due",
    "rule_amount_fen",
]

BASIS_POINTS_PER_WHOLE = 10_000


class FullSubsidy(msgspec.Struct, frozen=True, tag="full"):
    """The whole individual premium (e.g. 特困供养人员 in most places)."""


class FixedSubsidy(msgspec.Struct, frozen=True, tag="fixed"):
    """A fixed amount, in fen; more than the premium gives the premium."""

    amount_fen: Annotated[int, msgspec.Meta(ge=0)]

    def __post_init__(self) -> None:
        if self.amount_fen < 0:
            raise ValueError("a subsidy amount must not be negative")


class PercentSubsidy(msgspec.Struct, frozen=True, tag="percent"):
    """A share of the premium in basis points (10000 = 100 %), rounded half up to the fen."""

    basis_points: Annotated[int, msgspec.Meta(ge=0, le=BASIS_POINTS_PER_WHOLE)]

    def __post_init__(self) -> None:
        if not 0 <= self.basis_points <= BASIS_POINTS_PER_WHOLE:
            raise ValueError("a percentage subsidy lies between 0 and 10000 basis points")


SubsidyRule = FullSubsidy | FixedSubsidy | PercentSubsidy

Age = Annotated[int, msgspec.Meta(ge=0, le=150)]


class AgeRange(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Ages, in completed years on 1 January of the coverage year, from `from_age` (included) to
    `below_age` (excluded); a bound left out is open. "60 or over" is {from_age: 60}, "under 18"
    is {below_age: 18}."""

    from_age: Age | None = None
    below_age: Age | None = None

    # A range with neither bound, or with from_age ≥ below_age, is refused when a version is
    # published (backend/policy/service.py), not when a document is decoded: the schema cannot say
    # it, and a tablet decodes what the server stored (such a range would hold for nobody).

    def holds(self, age: int) -> bool:
        return (self.from_age is None or age >= self.from_age) and (self.below_age is None or age < self.below_age)


def age_on_1_january(birth_date: date, coverage_year: int) -> int:
    """Completed years of age on 1 January of `coverage_year` (0 for a person born on it or later):
    for 2025, born 2007-01-01 → 18, born 2007-01-02 → 17, born 1965-01-01 → 60, born 1965-01-02 → 59."""
    day = date(coverage_year, 1, 1)
    if birth_date >= day:
        return 0
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def _age_allows(ages: tuple[AgeRange, ...], age: int | None) -> bool:
    """No ranges: any age (and an unknown one); else the age must be known and in one of them."""
    return not ages or (age is not None and any(r.holds(age) for r in ages))


class CategorySubsidy(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The subsidy a policy grants one category (a code such as `tekun` or `dibao`); with `ages`,
    only to a holder whose age (on 1 January of the coverage year) lies in one of the ranges."""

    category: str
    rule: SubsidyRule
    ages: tuple[AgeRange, ...] = ()


class TopUp(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A district's own subsidy, added on top of the category subsidy.

    It applies to everyone when `categories` is None, else to a person who holds any of them,
    whether or not that category won (or is in the pooling area's list at all); with `ages`, only
    when the person's age (on 1 January of the coverage year) lies in one of the ranges.
    """

    code: str
    rule: SubsidyRule
    categories: frozenset[str] | None = None
    ages: tuple[AgeRange, ...] = ()


class SubsidyPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The premium and subsidies of one coverage year, as the district applies them.

    `categories` is in the policy's order, which breaks ties between equally favourable ones.
    """

    premium_fen: int  # the individual premium per person, e.g. 40000 for 2025
    categories: tuple[CategorySubsidy, ...] = ()
    categories_stack: bool = False  # False: only the most favourable category counts
    top_ups: tuple[TopUp, ...] = ()

    def __post_init__(self) -> None:
        if self.premium_fen < 0:
            raise ValueError("a premium must not be negative")
        codes = [c.category for c in self.categories]
        if len(codes) != len(set(codes)):
            raise ValueError("a category appears twice in the policy")


class SubsidyLine(msgspec.Struct, frozen=True, kw_only=True):
    """One source of subsidy considered for a person."""

    source: Literal["category", "top_up"]
    code: str  # the category, or the top-up's code
    rule: SubsidyRule
    amount_fen: int  # what the rule gives on its own, at most the premium
    applied_fen: int  # what it contributes once the total is capped at the premium
    chosen: bool  # False for a category beaten by a more favourable one


class PremiumDue(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one person owes: due_fen = premium_fen − subsidy_fen, with 0 ≤ subsidy_fen ≤ premium_fen."""

    premium_fen: int
    subsidy_fen: int
    due_fen: int
    chosen_categories: tuple[str, ...]
    lines: tuple[SubsidyLine, ...]  # categories held (in policy order), then top-ups; Σ applied_fen = subsidy_fen
    capped: bool  # the subsidies together would have exceeded the premium
    unmatched_categories: tuple[str, ...]  # held, but the policy has no subsidy for them (sorted)
    # Held, but the policy grants them only at other ages (policy order); `age` is the age the
    # rules used (on 1 January of the coverage year), None when not given.
    age_excluded: tuple[str, ...] = ()
    age: int | None = None


class HouseholdDue(msgspec.Struct, frozen=True, kw_only=True):
    """Σ over the members enrolled for the year."""

    member_count: int
    premium_fen: int
    subsidy_fen: int
    due_fen: int


def percent_of(amount_fen: int, basis_points: int) -> int:
    """`amount_fen` × `basis_points` / 10000, rounded half up to the fen (both non-negative):
    40000 fen at 33.33 % = 13332 fen; 12345 fen at 50 % = 6172.5 → 6173 fen."""
    if amount_fen < 0 or basis_points < 0:
        raise ValueError("percent_of is defined for non-negative amounts and rates")
    return (amount_fen * basis_points + BASIS_POINTS_PER_WHOLE // 2) // BASIS_POINTS_PER_WHOLE


def rule_amount_fen(rule: SubsidyRule, premium_fen: int) -> int:
    """What one rule gives on its own, at most the premium; a percentage is of the full premium."""
    if isinstance(rule, FullSubsidy):
        return premium_fen
    if isinstance(rule, FixedSubsidy):
        return min(rule.amount_fen, premium_fen)
    return percent_of(premium_fen, rule.basis_points)


def premium_due(policy: SubsidyPolicy, person_categories: Collection[str], *, age: int | None = None) -> PremiumDue:
    """The subsidy and the amount due for a person holding `person_categories`, aged `age` on
    1 January of the coverage year (`age_on_1_january`; None: unknown, and then no category or
    top-up that names ages applies).

    Categories: if the policy stacks them, all held ones count; otherwise the most favourable
    (largest amount; the first in policy order on a tie). Top-ups that apply are added after
    them. The total is capped at the premium by filling it line by line in that order, so each
    line's `applied_fen` shows where the cap bit.
    """
    held = frozenset(person_categories)
    premium = policy.premium_fen
    held_here = [c for c in policy.categories if c.category in held]
    candidates = [(c, rule_amount_fen(c.rule, premium)) for c in held_here if _age_allows(c.ages, age)]
    if policy.categories_stack:
        chosen = {c.category for c, _ in candidates}
    elif candidates:
        best, _ = max(candidates, key=lambda pair: pair[1])  # max keeps the first of equals
        chosen = {best.category}
    else:
        chosen = set()

    remaining = premium
    lines: list[SubsidyLine] = []
    for category, amount in candidates:
        applied = min(amount, remaining) if category.category in chosen else 0
        remaining -= applied
        lines.append(
            SubsidyLine(
                source="category",
                code=category.category,
                rule=category.rule,
                amount_fen=amount,
                applied_fen=applied,
                chosen=category.category in chosen,
            )
        )
    for top_up in policy.top_ups:
        if top_up.categories is not None and not (top_up.categories & held):
            continue
        if not _age_allows(top_up.ages, age):
            continue
        amount = rule_amount_fen(top_up.rule, premium)
        applied = min(amount, remaining)
        remaining -= applied
        lines.append(
            SubsidyLine(
                source="top_up", code=top_up.code, rule=top_up.rule, amount_fen=amount, applied_fen=applied, chosen=True
            )
        )

    subsidy = premium - remaining
    return PremiumDue(
        premium_fen=premium,
        subsidy_fen=subsidy,
        due_fen=remaining,
        chosen_categories=tuple(c.category for c, _ in candidates if c.category in chosen),
        lines=tuple(lines),
        capped=sum(line.amount_fen for line in lines if line.chosen) > premium,
        unmatched_categories=tuple(sorted(held - {c.category for c in policy.categories})),
        age_excluded=tuple(c.category for c in held_here if not _age_allows(c.ages, age)),
        age=age,
    )


def household_due(members: Iterable[PremiumDue]) -> HouseholdDue:
    """The household's totals for a year: sums over its enrolled members' `PremiumDue`."""
    count = premium = subsidy = due = 0
    for member in members:
        count += 1
        premium += member.premium_fen
        subsidy += member.subsidy_fen
        due += member.due_fen
    return HouseholdDue(member_count=count, premium_fen=premium, subsidy_fen=subsidy, due_fen=due)
