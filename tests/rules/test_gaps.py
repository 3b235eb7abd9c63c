"""Unknown is not a gap: which years before a coverage year count as gaps, from the years known
covered and known uncovered (mobile_sync_protocol/rules/gaps.py). No database needed."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from mobile_sync_protocol.rules.coverage import EnrolmentWindow, WaitingPolicy, decide_coverage
from mobile_sync_protocol.rules.gaps import GapYears, gap_years

IGNORE = WaitingPolicy()  # the default: unknown years ignored
GAP = WaitingPolicy(unknown_years="gap")


@pytest.mark.parametrize(
    ("policy", "coverage_year", "birth_year", "covered", "uncovered", "expected"),
    [
        # Nothing known at all: no gap by default, both years listed for the reviewer.
        (IGNORE, 2027, 1980, (), (), GapYears(gap_years=0, counted=(), unknown=(2025, 2026))),
        # ... and two gap years when the policy counts unknown years as gaps.
        (GAP, 2027, 1980, (), (), GapYears(gap_years=2, counted=(2025, 2026), unknown=(2025, 2026))),
        # Known uncovered 2025 and 2026: a gap of two, nothing to review.
        (IGNORE, 2027, 1980, (), (2025, 2026), GapYears(gap_years=2, counted=(2025, 2026), unknown=())),
        # Covered 2026: no gap, whatever came before.
        (IGNORE, 2027, 1980, (2026,), (2025,), GapYears(gap_years=0, counted=(), unknown=())),
        # Covered 2025, unknown 2026.
        (IGNORE, 2027, 1980, (2025,), (), GapYears(gap_years=0, counted=(), unknown=(2026,))),
        (GAP, 2027, 1980, (2025,), (), GapYears(gap_years=1, counted=(2026,), unknown=(2026,))),
        # Known uncovered 2026, unknown 2025: the known year counts, the unknown one is listed.
        (IGNORE, 2027, 1980, (), (2026,), GapYears(gap_years=1, counted=(2026,), unknown=(2025,))),
        # Unknown 2026 ends the run by default: the known uncovered 2025 behind it does not count.
        (IGNORE, 2027, 1980, (), (2025,), GapYears(gap_years=0, counted=(), unknown=(2026,))),
        (GAP, 2027, 1980, (), (2025,), GapYears(gap_years=2, counted=(2025, 2026), unknown=(2026,))),
        # Cover is the stronger evidence: a year both covered and uncovered is covered.
        (IGNORE, 2027, 1980, (2026,), (2026,), GapYears(gap_years=0, counted=(), unknown=())),
        # Years before 2025 never count, however uncovered.
        (
            IGNORE,
            2027,
            1980,
            (),
            (2022, 2023, 2024, 2025, 2026),
            GapYears(gap_years=2, counted=(2025, 2026), unknown=()),
        ),
        # Years before birth never count: born 2026, nothing known → only 2026 could be a gap.
        (GAP, 2027, 2026, (), (), GapYears(gap_years=1, counted=(2026,), unknown=(2026,))),
        # A policy that counts from 2024, four years known uncovered.
        (
            WaitingPolicy(gaps_count_from_year=2024),
            2028,
            1990,
            (),
            (2024, 2025, 2026, 2027),
            GapYears(gap_years=4, counted=(2024, 2025, 2026, 2027), unknown=()),
        ),
        # The first year that counts is the coverage year: nothing before it.
        (IGNORE, 2025, 1980, (), (), GapYears(gap_years=0, counted=(), unknown=())),
    ],
)
def test_gap_years(
    policy: WaitingPolicy,
    coverage_year: int,
    birth_year: int,
    covered: tuple[int, ...],
    uncovered: tuple[int, ...],
    expected: GapYears,
) -> None:
    got = gap_years(policy, coverage_year=coverage_year, birth_year=birth_year, covered=covered, uncovered=uncovered)
    assert got == expected


WINDOW_2027 = EnrolmentWindow(start=date(2026, 9, 1), end=date(2026, 12, 31))


def decide(policy: WaitingPolicy, covered: tuple[int, ...], uncovered: tuple[int, ...], paid: date) -> tuple:  # type: ignore[type-arg]
    gaps = gap_years(policy, coverage_year=2027, birth_year=1980, covered=covered, uncovered=uncovered)
    decided = decide_coverage(
        coverage_year=2027,
        business_date=paid,
        window=WINDOW_2027,
        policy=policy,
        birth_date=date(1980, 5, 1),
        gap_years=gaps.gap_years,
        unknown_years=gaps.unknown,
    )
    return decided.coverage.start, decided.coverage.waiting_months, decided.facts.unknown_years


def test_no_history_at_all_paid_in_the_window_has_no_wait_and_is_flagged() -> None:
    assert decide(IGNORE, (), (), date(2026, 11, 20)) == (date(2027, 1, 1), 0, (2025, 2026))


def test_known_uncovered_years_wait_three_plus_two_months() -> None:
    assert decide(IGNORE, (), (2025, 2026), date(2026, 11, 20)) == (date(2027, 6, 1), 5, ())


def test_unknown_years_count_when_the_policy_says_gap() -> None:
    assert decide(GAP, (), (), date(2026, 11, 20)) == (date(2027, 6, 1), 5, (2025, 2026))


def test_a_newborn_is_not_flagged_the_gap_does_not_matter() -> None:
    gaps = gap_years(IGNORE, coverage_year=2027, birth_year=2026, covered=(), uncovered=())
    decided = decide_coverage(
        coverage_year=2027,
        business_date=date(2026, 12, 1),
        window=WINDOW_2027,
        policy=IGNORE,
        birth_date=date(2026, 10, 15),
        gap_years=gaps.gap_years,
        unknown_years=gaps.unknown,
    )
    assert (decided.facts.rule, decided.facts.unknown_years) == ("newborn", ())


def test_the_policy_decodes_unknown_years_and_refuses_other_words() -> None:
    assert msgspec.convert({"unknown_years": "gap"}, WaitingPolicy).unknown_years == "gap"
    assert msgspec.convert({}, WaitingPolicy).unknown_years == "ignore"
    with pytest.raises(msgspec.ValidationError, match="unknown_years"):
        msgspec.convert({"unknown_years": "maybe"}, WaitingPolicy)
