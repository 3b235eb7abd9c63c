"""Coverage dates: the enrolment window, waiting periods (国办发〔2024〕38号), exemptions, newborns.

No database needed. Expected dates are written out by hand from the rules in the module docstring.
"""

from __future__ import annotations

from datetime import date, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobile_sync_protocol.rules.coverage import (
    Coverage,
    CoverageInputError,
    EnrolmentWindow,
    WaitingPeriod,
    WaitingPolicy,
    add_months,
    coverage_for,
    waiting_period,
)

NATIONAL = WaitingPolicy()


def window_for(year: int) -> EnrolmentWindow:
    """The typical window: 1 Sep - 31 Dec of the year before."""
    return EnrolmentWindow(start=date(year - 1, 9, 1), end=date(year - 1, 12, 31))


def test_national_defaults() -> None:
    assert NATIONAL.fixed_months == 3
    assert NATIONAL.months_per_gap_year == 1
    assert NATIONAL.months_removed_per_back_paid_year == 1
    assert NATIONAL.long_gap_years == 4
    assert NATIONAL.long_gap_min_months == 6
    assert NATIONAL.gaps_count_from_year == 2025
    assert NATIONAL.newborn_days == 90
    assert NATIONAL.exempt_groups == {"newborn", "newly_recognised_assistance", "left_employee_insurance"}


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28)),  # clamped to the month's end
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2024, 1, 29), 1, date(2024, 2, 29)),
        (date(2025, 1, 29), 1, date(2025, 2, 28)),
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
        (date(2024, 11, 30), 3, date(2025, 2, 28)),
        (date(2027, 11, 30), 3, date(2028, 2, 29)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2025, 10, 31), 4, date(2026, 2, 28)),
        (date(2025, 8, 31), 6, date(2026, 2, 28)),
        (date(2025, 12, 15), 1, date(2026, 1, 15)),
        (date(2025, 3, 15), 3, date(2025, 6, 15)),
        (date(2025, 3, 15), 0, date(2025, 3, 15)),
    ],
)
def test_n_months_later_is_the_same_day_clamped_to_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def _period(months: int, counted: int, gap_months: int, repaired: int, *, minimum: bool) -> WaitingPeriod:
    return WaitingPeriod(
        months=months,
        fixed_months=3,
        counted_gap_years=counted,
        gap_months=gap_months,
        repaired_months=repaired,
        minimum_applied=minimum,
    )


@pytest.mark.parametrize(
    ("year", "gaps", "back_paid", "expected"),
    [
        (2025, 0, 0, _period(3, 0, 0, 0, minimum=False)),
        # gaps before 2025 do not count
        (2025, 3, 0, _period(3, 0, 0, 0, minimum=False)),
        (2026, 1, 0, _period(4, 1, 1, 0, minimum=False)),
        (2026, 3, 0, _period(4, 1, 1, 0, minimum=False)),
        (2026, 1, 1, _period(3, 1, 1, 1, minimum=False)),
        # paying back more years than the gap repairs no more than the gap
        (2026, 1, 3, _period(3, 1, 1, 1, minimum=False)),
        (2028, 3, 3, _period(3, 3, 3, 3, minimum=False)),
        (2029, 4, 0, _period(7, 4, 4, 0, minimum=False)),
        (2029, 4, 1, _period(6, 4, 4, 1, minimum=False)),
        (2029, 4, 2, _period(6, 4, 4, 2, minimum=True)),
        (2029, 4, 4, _period(6, 4, 4, 4, minimum=True)),
        (2031, 6, 6, _period(6, 6, 6, 6, minimum=True)),
        (2031, 6, 0, _period(9, 6, 6, 0, minimum=False)),
    ],
)
def test_waiting_period_is_fixed_plus_gap_less_repair_with_long_gap_minimum(
    year: int, gaps: int, back_paid: int, expected: WaitingPeriod
) -> None:
    assert waiting_period(NATIONAL, coverage_year=year, gap_years=gaps, back_paid_years=back_paid) == expected


# (coverage year, business date, gap years, back-paid years, exemption, birth date) → (start, waiting months, reason)
CASES = [
    # in the window: the whole year
    (2025, date(2024, 11, 15), 0, 0, None, None, date(2025, 1, 1), 0, "in_window"),
    (2025, date(2024, 12, 31), 0, 0, None, None, date(2025, 1, 1), 0, "in_window"),  # the window's last day
    (2025, date(2024, 9, 1), 3, 0, None, None, date(2025, 1, 1), 0, "in_window"),  # gaps before 2025 don't count
    # late: 3 months from the business date
    (2025, date(2025, 1, 1), 0, 0, None, None, date(2025, 4, 1), 3, "waiting_period"),
    (2025, date(2025, 3, 15), 0, 0, None, None, date(2025, 6, 15), 3, "waiting_period"),
    (2025, date(2025, 9, 30), 0, 0, None, None, date(2025, 12, 30), 3, "waiting_period"),
    (2025, date(2025, 10, 1), 0, 0, None, None, None, 3, "no_cover_this_year"),  # would start 1 Jan 2026
    (2025, date(2025, 11, 30), 0, 0, None, None, None, 3, "no_cover_this_year"),
    # after a gap, paid in the window: the waiting period runs from 1 Jan
    (2026, date(2025, 10, 10), 1, 0, None, None, date(2026, 5, 1), 4, "waiting_period"),
    (2026, date(2025, 10, 10), 3, 0, None, None, date(2026, 5, 1), 4, "waiting_period"),  # only 2025 counts
    (2026, date(2025, 10, 10), 1, 1, None, None, date(2026, 4, 1), 3, "waiting_period"),
    # after a gap, late
    (2026, date(2026, 2, 10), 1, 0, None, None, date(2026, 6, 10), 4, "waiting_period"),
    (2026, date(2026, 2, 10), 1, 1, None, None, date(2026, 5, 10), 3, "waiting_period"),
    # a gap of 4 years or more: at least 6 months, however much is paid back
    (2029, date(2028, 10, 10), 4, 0, None, None, date(2029, 8, 1), 7, "waiting_period"),
    (2029, date(2028, 10, 10), 4, 1, None, None, date(2029, 7, 1), 6, "waiting_period"),
    (2029, date(2028, 10, 10), 4, 2, None, None, date(2029, 7, 1), 6, "waiting_period"),
    (2029, date(2028, 10, 10), 4, 4, None, None, date(2029, 7, 1), 6, "waiting_period"),
    (2030, date(2030, 3, 31), 5, 0, None, None, date(2030, 11, 30), 8, "waiting_period"),  # 31 Mar + 8 → 30 Nov
    (2030, date(2030, 5, 31), 5, 0, None, None, None, 8, "no_cover_this_year"),
    # exempt groups: no waiting, covered from the business date (or 1 Jan)
    (2025, date(2025, 7, 20), 0, 0, "newly_recognised_assistance", None, date(2025, 7, 20), 0, "exempt"),
    (2026, date(2025, 10, 10), 1, 0, "left_employee_insurance", None, date(2026, 1, 1), 0, "exempt"),
    (2025, date(2024, 11, 15), 0, 0, "left_employee_insurance", None, date(2025, 1, 1), 0, "in_window"),
    (2025, date(2026, 1, 5), 0, 0, "newly_recognised_assistance", None, None, 0, "no_cover_this_year"),
    # newborns: within 90 days of birth, covered from birth
    (2025, date(2025, 5, 29), 0, 0, None, date(2025, 3, 1), date(2025, 3, 1), 0, "newborn"),  # day 89
    (2025, date(2025, 5, 30), 0, 0, None, date(2025, 3, 1), date(2025, 3, 1), 0, "newborn"),  # day 90
    (2025, date(2025, 5, 31), 0, 0, None, date(2025, 3, 1), date(2025, 8, 31), 3, "waiting_period"),  # day 91
    (2025, date(2025, 5, 31), 0, 0, "newborn", date(2025, 3, 1), date(2025, 5, 31), 0, "exempt"),
    (2025, date(2025, 3, 1), 0, 0, None, date(2025, 3, 1), date(2025, 3, 1), 0, "newborn"),  # enrolled on the day
    (2025, date(2025, 2, 10), 0, 0, None, date(2024, 12, 20), date(2025, 1, 1), 0, "newborn"),  # born last year
    (2025, date(2026, 2, 10), 0, 0, None, date(2025, 12, 20), date(2025, 12, 20), 0, "newborn"),  # paid next year
    (2026, date(2026, 1, 10), 0, 0, None, date(2025, 12, 20), date(2026, 1, 1), 0, "newborn"),
    (2025, date(2026, 1, 10), 0, 0, None, date(2026, 1, 5), None, 0, "no_cover_this_year"),  # born after the year
]


@pytest.mark.parametrize(
    ("year", "business_date", "gaps", "back_paid", "exemption", "birth", "start", "waiting", "reason"), CASES
)
def test_coverage_start_follows_window_waiting_exemption_and_newborn_rules(
    year: int,
    business_date: date,
    gaps: int,
    back_paid: int,
    exemption: str | None,
    birth: date | None,
    start: date | None,
    waiting: int,
    reason: str,
) -> None:
    coverage = coverage_for(
        coverage_year=year,
        business_date=business_date,
        window=window_for(year),
        policy=NATIONAL,
        exemption=exemption,
        birth_date=birth,
        gap_years=gaps,
        back_paid_years=back_paid,
    )
    assert (coverage.start, coverage.waiting_months, coverage.reason_code) == (start, waiting, reason)
    assert coverage.end == (None if start is None else date(year, 12, 31))


def test_enrolled_inside_the_window_is_covered_1_jan_to_31_dec() -> None:
    coverage = coverage_for(
        coverage_year=2025, business_date=date(2024, 11, 15), window=window_for(2025), policy=NATIONAL
    )
    assert coverage == Coverage(
        coverage_year=2025,
        start=date(2025, 1, 1),
        end=date(2025, 12, 31),
        waiting_months=0,
        reason_code="in_window",
        reason="Enrolled on 2024-11-15, before the enrolment window closed on 2024-12-31: no waiting period; "
        "covered from 2025-01-01 to 2025-12-31.",
    )


def test_a_policy_without_the_newborn_group_covers_a_newborn_as_anyone_late() -> None:
    """Newborns are an exempt group a policy may leave out (SPEC §2): without it, a baby enrolled 23
    days after birth, after the window, waits as anyone late does."""
    args = {"coverage_year": 2025, "business_date": date(2025, 3, 15), "window": window_for(2025)}
    born = date(2025, 2, 20)
    without = msgspec.structs.replace(NATIONAL, exempt_groups=NATIONAL.exempt_groups - {"newborn"})
    newborn = coverage_for(**args, policy=NATIONAL, birth_date=born)
    waits = coverage_for(**args, policy=without, birth_date=born)
    assert (newborn.start, newborn.waiting_months, newborn.reason_code) == (date(2025, 2, 20), 0, "newborn")
    assert (waits.start, waits.waiting_months, waits.reason_code) == (date(2025, 6, 15), 3, "waiting_period")


def test_newborn_enrolled_within_90_days_is_covered_from_birth() -> None:
    coverage = coverage_for(
        coverage_year=2025,
        business_date=date(2025, 5, 30),
        window=window_for(2025),
        policy=NATIONAL,
        birth_date=date(2025, 3, 1),
    )
    assert (coverage.start, coverage.end, coverage.reason_code) == (date(2025, 3, 1), date(2025, 12, 31), "newborn")


def test_extended_window_still_counts_as_in_the_window() -> None:
    extended = EnrolmentWindow(start=date(2024, 9, 1), end=date(2025, 2, 28))
    coverage = coverage_for(coverage_year=2025, business_date=date(2025, 2, 28), window=extended, policy=NATIONAL)
    assert (coverage.start, coverage.reason_code) == (date(2025, 1, 1), "in_window")


def test_reason_explains_the_waiting_period_in_plain_words() -> None:
    coverage = coverage_for(
        coverage_year=2029,
        business_date=date(2028, 10, 10),
        window=window_for(2029),
        policy=NATIONAL,
        gap_years=4,
        back_paid_years=4,
    )
    assert coverage.reason == (
        "Enrolled on 2028-10-10, after 4 years without cover; waiting period of 6 months: 3 fixed + 4 for the gap"
        " - 4 repaired by paying back, raised to the minimum of 6 after a gap of 4 years or more;"
        " covered from 2029-07-01 to 2029-12-31."
    )


def test_reason_says_when_a_late_waiting_period_leaves_no_cover_this_year() -> None:
    coverage = coverage_for(
        coverage_year=2025, business_date=date(2025, 11, 30), window=window_for(2025), policy=NATIONAL
    )
    assert coverage.reason == (
        "Enrolled on 2025-11-30, after the enrolment window closed on 2024-12-31; waiting period of 3 months:"
        " 3 fixed; cover would start on 2026-02-28, after the end of 2025: no cover this year."
    )


def test_waiting_numbers_and_the_year_gaps_count_from_are_policy_parameters() -> None:
    local = WaitingPolicy(fixed_months=2, months_per_gap_year=2, gaps_count_from_year=2020)
    coverage = coverage_for(
        coverage_year=2025,
        business_date=date(2024, 10, 1),
        window=window_for(2025),
        policy=local,
        gap_years=2,
    )
    assert (coverage.start, coverage.waiting_months) == (date(2025, 7, 1), 6)


def test_newborn_days_are_a_policy_parameter() -> None:
    coverage = coverage_for(
        coverage_year=2025,
        business_date=date(2025, 5, 30),
        window=window_for(2025),
        policy=WaitingPolicy(newborn_days=60),
        birth_date=date(2025, 3, 1),
    )
    assert (coverage.start, coverage.reason_code) == (date(2025, 8, 30), "waiting_period")


def test_exemption_must_be_one_the_policy_grants() -> None:
    with pytest.raises(CoverageInputError):
        coverage_for(
            coverage_year=2025,
            business_date=date(2025, 5, 1),
            window=window_for(2025),
            policy=WaitingPolicy(exempt_groups=frozenset({"newborn"})),
            exemption="left_employee_insurance",
        )


@pytest.mark.parametrize(
    ("birth", "gaps", "back_paid"),
    [
        (date(2025, 5, 2), 0, 0),  # enrolled before birth
        (None, -1, 0),
        (None, 0, -1),
    ],
)
def test_impossible_inputs_are_refused(birth: date | None, gaps: int, back_paid: int) -> None:
    with pytest.raises(CoverageInputError):
        coverage_for(
            coverage_year=2025,
            business_date=date(2025, 5, 1),
            window=window_for(2025),
            policy=NATIONAL,
            birth_date=birth,
            gap_years=gaps,
            back_paid_years=back_paid,
        )


def test_window_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="window"):
        EnrolmentWindow(start=date(2025, 1, 1), end=date(2024, 12, 31))


def test_negative_waiting_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        WaitingPolicy(fixed_months=-1)


# ---- properties -------------------------------------------------------------------------------

years = st.integers(min_value=2025, max_value=2035)
counts = st.integers(min_value=0, max_value=12)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.integers(min_value=0, max_value=240))
def test_add_months_moves_exactly_n_calendar_months_and_never_past_the_day(start: date, months: int) -> None:
    later = add_months(start, months)
    assert (later.year * 12 + later.month) - (start.year * 12 + start.month) == months
    assert later.day <= start.day
    if start.day <= 28:
        assert later.day == start.day
    else:
        assert later.day == start.day or (later + timedelta(days=1)).day == 1  # clamped to the month's last day


@given(
    years,
    st.dates(min_value=date(2024, 6, 1), max_value=date(2036, 12, 31)),
    counts,
    counts,
    st.sampled_from([None, "newborn", "newly_recognised_assistance", "left_employee_insurance"]),
    st.one_of(st.none(), st.dates(min_value=date(1930, 1, 1), max_value=date(2036, 12, 31))),
)
def test_cover_lies_inside_the_year_and_after_birth(
    year: int, business_date: date, gaps: int, back_paid: int, exemption: str | None, birth: date | None
) -> None:
    if birth is not None and birth > business_date:
        birth = business_date
    coverage = coverage_for(
        coverage_year=year,
        business_date=business_date,
        window=window_for(year),
        policy=NATIONAL,
        exemption=exemption,
        birth_date=birth,
        gap_years=gaps,
        back_paid_years=back_paid,
    )
    if coverage.start is None:
        assert coverage.end is None
        assert coverage.reason_code == "no_cover_this_year"
    else:
        assert date(year, 1, 1) <= coverage.start <= date(year, 12, 31)
        assert coverage.end == date(year, 12, 31)
        assert birth is None or coverage.start >= birth
        if coverage.reason_code in {"waiting_period", "exempt"}:
            assert coverage.start >= business_date
    assert coverage.waiting_months >= 0
    assert coverage.reason


@given(years, counts, counts)
def test_more_gap_years_never_shorten_the_wait(year: int, gaps: int, back_paid: int) -> None:
    shorter = waiting_period(NATIONAL, coverage_year=year, gap_years=gaps, back_paid_years=back_paid)
    longer = waiting_period(NATIONAL, coverage_year=year, gap_years=gaps + 1, back_paid_years=back_paid)
    assert longer.months >= shorter.months


@given(years, counts, counts)
def test_paying_back_a_year_never_lengthens_the_wait(year: int, gaps: int, back_paid: int) -> None:
    before = waiting_period(NATIONAL, coverage_year=year, gap_years=gaps, back_paid_years=back_paid)
    after = waiting_period(NATIONAL, coverage_year=year, gap_years=gaps, back_paid_years=back_paid + 1)
    assert after.months <= before.months
    assert after.months >= NATIONAL.fixed_months


@given(years, counts, counts)
def test_after_a_gap_of_4_years_the_wait_stays_at_least_6_months(year: int, gaps: int, back_paid: int) -> None:
    period = waiting_period(NATIONAL, coverage_year=year, gap_years=gaps, back_paid_years=back_paid)
    if period.counted_gap_years >= 4:
        assert period.months >= 6
    assert period.months <= 3 + period.counted_gap_years


@given(years, st.dates(min_value=date(2024, 6, 1), max_value=date(2034, 12, 31)))
def test_in_window_without_a_gap_is_the_whole_year(year: int, business_date: date) -> None:
    window = window_for(year)
    coverage = coverage_for(coverage_year=year, business_date=business_date, window=window, policy=NATIONAL)
    if business_date <= window.end:
        assert (coverage.start, coverage.end, coverage.reason_code) == (
            date(year, 1, 1),
            date(year, 12, 31),
            "in_window",
        )
    else:
        assert coverage.reason_code in {"waiting_period", "no_cover_this_year"}
        assert coverage.waiting_months == 3
