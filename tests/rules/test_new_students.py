"""New university students (高校新生, 闽政办〔2025〕3号 §1): enrolled at their school as new students,
continuously insured, paying in the concentrated window for the next year → covered from 1 September
of the window's year to 31 December of the coverage year (16 months). Literal dates, no database.
"""

from __future__ import annotations

from datetime import date

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobile_sync_protocol.rules.coverage import (
    EnrolmentWindow,
    ExtendedPeriod,
    NewStudentRule,
    WaitingPolicy,
    decide_coverage,
)
from mobile_sync_protocol.rules.policy import PolicyRules

FUJIAN = WaitingPolicy(gaps_count_from_year=2024, exempt_groups=frozenset({"newborn", "medical_assistance"}))
WINDOW = EnrolmentWindow(start=date(2024, 9, 1), end=date(2024, 12, 31))
EXTENDED = ExtendedPeriod(start=date(2025, 1, 1), end=date(2025, 2, 28))
RULE = NewStudentRule()  # 09-01

# (business date, new student?, rule in the policy?, gap years, start, waiting months, reason)
CASES = [
    # a new student, continuously insured, paid in the window: from 1 September 2024
    (date(2024, 9, 1), True, True, 0, date(2024, 9, 1), 0, "new_student"),  # the window's first day
    (date(2024, 10, 15), True, True, 0, date(2024, 9, 1), 0, "new_student"),
    (date(2024, 12, 31), True, True, 0, date(2024, 9, 1), 0, "new_student"),  # the window's last day
    # not a new student, or no such rule in the policy: the whole coverage year, as anyone
    (date(2024, 10, 15), False, True, 0, date(2025, 1, 1), 0, "in_window"),
    (date(2024, 10, 15), True, False, 0, date(2025, 1, 1), 0, "in_window"),
    # a gap year (2024 uncovered): not continuously insured, the normal rules (1 Jan + 3 + 1 months)
    (date(2024, 10, 15), True, True, 1, date(2025, 5, 1), 4, "waiting_period"),
    # paid before the window opened: in time, but not "in the window at school"
    (date(2024, 8, 31), True, True, 0, date(2025, 1, 1), 0, "in_window"),
    # paid after the window: the extended period, then the waiting period, as for anyone
    (date(2025, 1, 10), True, True, 0, date(2025, 1, 10), 0, "extended_period"),
    (date(2025, 3, 1), True, True, 0, date(2025, 6, 1), 3, "waiting_period"),
]


@pytest.mark.parametrize(("business_date", "student", "with_rule", "gaps", "start", "waiting", "reason"), CASES)
def test_new_student_cover_starts_1_september_of_the_window_year(
    business_date: date, student: bool, with_rule: bool, gaps: int, start: date, waiting: int, reason: str
) -> None:
    decided = decide_coverage(
        coverage_year=2025,
        business_date=business_date,
        window=WINDOW,
        policy=FUJIAN,
        gap_years=gaps,
        extended=EXTENDED,
        new_student=student,
        new_students=RULE if with_rule else None,
    )
    c = decided.coverage
    assert (c.start, c.end, c.waiting_months, c.reason_code) == (start, date(2025, 12, 31), waiting, reason)
    assert decided.facts.new_student == (student and with_rule)


def test_the_reason_and_facts_say_new_student() -> None:
    decided = decide_coverage(
        coverage_year=2025,
        business_date=date(2024, 10, 15),
        window=WINDOW,
        policy=FUJIAN,
        new_student=True,
        new_students=RULE,
        unknown_years=[2023],
    )
    assert decided.coverage.reason == (
        "Enrolled on 2024-10-15 as a new university student, in the enrolment window from 2024-09-01 to "
        "2024-12-31, without a gap: covered from the start of the school year; covered from 2024-09-01 to 2025-12-31."
    )
    facts = msgspec.json.decode(msgspec.json.encode(decided.facts))
    assert facts == {
        "rule": "new_student",
        "coverage_year": 2025,
        "business_date": "2024-10-15",
        "window_end": "2024-12-31",
        "start": "2024-09-01",
        "end": "2025-12-31",
        "unknown_years": [2023],  # the rule depends on the gap: a reviewer checks the unknown year
        "new_student": True,
        "window_start": "2024-09-01",
    }


def test_a_student_refused_the_rule_is_told_why() -> None:
    c = decide_coverage(
        coverage_year=2025,
        business_date=date(2024, 10, 15),
        window=WINDOW,
        policy=FUJIAN,
        gap_years=1,
        new_student=True,
        new_students=RULE,
    ).coverage
    assert c.reason == (
        "Enrolled on 2024-10-15, after 1 year without cover; waiting period of 4 months: 3 fixed + 1 for the gap "
        "(enrolled as a new university student, but the student rule needs payment in the window without a gap); "
        "covered from 2025-05-01 to 2025-12-31."
    )


def test_the_day_is_a_policy_parameter() -> None:
    rule = NewStudentRule(cover_from_month_day="08-15")
    c = decide_coverage(
        coverage_year=2026,
        business_date=date(2025, 9, 20),
        window=EnrolmentWindow(start=date(2025, 9, 1), end=date(2025, 12, 31)),
        policy=FUJIAN,
        new_student=True,
        new_students=rule,
    ).coverage
    assert (c.start, c.end) == (date(2025, 8, 15), date(2026, 12, 31))


@pytest.mark.parametrize("day", ["02-29", "09-31", "13-01", "9-1", "00-10", "09-00", ""])
def test_a_day_not_every_year_has_is_refused(day: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"new_students": {"cover_from_month_day": day}}, PolicyRules)


def test_the_policy_document_carries_the_rule() -> None:
    rules = msgspec.convert({"new_students": {"cover_from_month_day": "09-01"}}, PolicyRules)
    assert rules.new_students == NewStudentRule(cover_from_month_day="09-01")
    assert msgspec.convert({}, PolicyRules).new_students is None  # absent: no such rule


@given(st.dates(min_value=date(2024, 9, 1), max_value=date(2024, 12, 31)))
def test_sixteen_months_whenever_paid_in_the_window(business_date: date) -> None:
    c = decide_coverage(
        coverage_year=2025,
        business_date=business_date,
        window=WINDOW,
        policy=FUJIAN,
        new_student=True,
        new_students=RULE,
    ).coverage
    assert (c.start, c.end, c.reason_code) == (date(2024, 9, 1), date(2025, 12, 31), "new_student")
