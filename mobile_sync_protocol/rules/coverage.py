"""Coverage dates of one person for one coverage year (参保年度): the enrolment window, waiting
periods for late enrolment and gaps (国办发〔2024〕38号), exemptions, newborns, and new university
students (whose cover may start in the year before the coverage year).

Every answer carries a reason code and a sentence in plain English saying why; `decide_coverage`
also gives the facts that sentence is made of (`CoverageFacts`), which a server stores and puts
into its reader's language when it shows them.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Annotated, Literal
from uuid import UUID

import msgspec

__all__ = [
    "Coverage",
    "CoverageDecision",
    "CoverageFacts",
    "CoverageInputError",
    "CoverageReason",
    "CoverageRule",
    "EnrolmentWindow",
    "ExemptGroup",
    "ExemptionEvidence",
    "ExtendedPeriod",
    "NewStudentRule",
    "UnknownYears",
    "WaitingPeriod",
    "WaitingPolicy",
    "add_months",
    "counted_gap_years",
    "coverage_for",
    "decide_coverage",
    "english_reason",
    "waiting_period",
]

CoverageReason = Literal[
    "in_window", "waiting_period", "newborn", "exempt", "extended_period", "new_student", "no_cover_this_year"
]
# The rule that set the start.
CoverageRule = Literal["in_window", "waiting_period", "newborn", "exempt", "extended_period", "new_student"]

# The groups 国办发〔2024〕38号 exempts from waiting: newborns; persons newly recognised as 特困, 低保
# or at risk of (re)poverty (防返贫监测); persons who left employee insurance (职工医保) within 3 months.
NATIONAL_EXEMPT_GROUPS = frozenset({"newborn", "newly_recognised_assistance", "left_employee_insurance"})
# Every group a policy may name (mobile_sync_protocol/rules/exemptions.py says how each is
# recognised): the national ones, every medical-assistance recipient (医疗救助对象, Fujian), and
# soldiers discharged from active service in the coverage year (退役军人).
EXEMPT_GROUP_CODES = frozenset({*NATIONAL_EXEMPT_GROUPS, "medical_assistance", "discharged_soldier"})


class CoverageInputError(ValueError):
    """Inputs that cannot describe a real enrolment (a programming or data error, not a rule)."""


# Months, years and days of the policy: never negative (the schema says so, and decoding refuses it).
Count = Annotated[int, msgspec.Meta(ge=0)]
# How a year before the coverage year that nothing known says was covered or not counts for the gap
# (mobile_sync_protocol/rules/gaps.py): "ignore" as covered pending review (an unknown year alone
# never lengthens a wait; the enrolment is flagged with it), "gap" as a year without cover.
UnknownYears = Literal["ignore", "gap"]


class ExemptGroup(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a policy recognises one exempt group from the evidence the system holds (list rows of
    `list_types`, accepted claims): parameters that override the group's defaults
    (`exemptions.DEFAULT_GROUPS`). A field left out keeps the default; a wire type, so a newer
    server may add fields a tablet ignores, and a group a tablet does not know exempts nobody there.
    """

    group: str  # one of EXEMPT_GROUP_CODES (the server refuses others)
    list_types: tuple[str, ...] | None = None  # the lists whose rows are the evidence
    claims: bool | None = None  # whether a claim civil affairs accepted counts as evidence
    # A row counts only when its start (valid_from: the day of recognition, of discharge) lies at
    # most this many months before the business date ("newly recognised"); None: no limit.
    within_months: Count | None = None
    same_year: bool | None = None  # the row's start lies in the coverage year (discharged that year)
    min_insured_years: Count | None = None  # left employee insurance: continuous years insured before it ended
    max_break_months: Count | None = None  # ... and at most this many months from its end to the business date


class ExemptionEvidence(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What shows a person is in an exempt group: a list row (type, version, row, its dates) or a
    claim civil affairs accepted (its id, and the dates of the paper proof when it gives them)."""

    source: Literal["list", "claim"]
    list_type: str  # a claim: the category claimed
    valid_from: date | None = None
    valid_to: date | None = None
    list_id: UUID | None = None  # list: the version's id, its number and the row
    version: int | None = None
    row: int | None = None
    claim_id: UUID | None = None  # claim


class WaitingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The waiting-period parameters of one year's policy; the defaults are the national rule."""

    fixed_months: Count = 3  # 固定待遇等待期: late enrolment, or any counted gap
    months_per_gap_year: Count = 1  # 变动待遇等待期: per full year of gap
    months_removed_per_back_paid_year: Count = 1  # each year paid back (补缴) repairs this much of the variable part
    long_gap_years: Count = 4  # a gap of this many counted years or more ...
    long_gap_min_months: Count = 6  # ... keeps the total at least this long, however much is paid back
    gaps_count_from_year: int = 2025  # years without cover before this one are not counted as gaps
    newborn_days: Count = 90  # a newborn enrolled at most this many days after birth is covered from birth
    exempt_groups: frozenset[str] = NATIONAL_EXEMPT_GROUPS
    unknown_years: UnknownYears = "ignore"  # how a year nobody knows the cover of counts (see above)
    # How the groups of `exempt_groups` are recognised, where the defaults do not fit
    # (`exemptions.DEFAULT_GROUPS`); a group named here but not in `exempt_groups` exempts nobody.
    exemptions: tuple[ExemptGroup, ...] = ()

    def __post_init__(self) -> None:
        numbers = (
            self.fixed_months,
            self.months_per_gap_year,
            self.months_removed_per_back_paid_year,
            self.long_gap_years,
            self.long_gap_min_months,
            self.newborn_days,
        )
        if any(n < 0 for n in numbers):
            raise ValueError("waiting-period parameters must not be negative")


class EnrolmentWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The centralised enrolment window (集中参保期), both days included; `end` as extended."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError("an enrolment window cannot end before it starts")


class ExtendedPeriod(msgspec.Struct, frozen=True, kw_only=True):
    """An extended payment period (延长缴费期) after the window, both days included: paying in it
    without a counted gap gives cover from the day of payment, with no waiting period. Fujian 2025
    (闽政办〔2025〕3号 §1): 1 January to the end of February of the coverage year."""

    start: date
    end: date  # not before start: checked when a version is published (backend/policy/service.py)


# A day of the year as MM-DD ("09-01"); 02-29 is refused (not every year has it).
MonthDay = Annotated[str, msgspec.Meta(pattern=r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]


class NewStudentRule(msgspec.Struct, frozen=True, kw_only=True):
    """New students of the province's universities (高校新生), Fujian 2025 (闽政办〔2025〕3号 §1): a
    person enrolled at the school as a new student (the enrolment's `new_student`), continuously
    insured (no counted gap), who pays inside the enrolment window is covered from this day of the
    year before the coverage year ("the current year", the year of the window) to 31 December of
    the coverage year: for 2025, from 2024-09-01 to 2025-12-31 (16 months)."""

    cover_from_month_day: MonthDay = "09-01"

    def __post_init__(self) -> None:
        month, day = (int(x) for x in self.cover_from_month_day.split("-"))
        if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2001, month)[1]:
            raise ValueError("cover_from_month_day must be a day every year has, as MM-DD")

    def cover_from(self, coverage_year: int) -> date:
        """The first day of a new student's cover for `coverage_year`: in the year before it."""
        month, day = (int(x) for x in self.cover_from_month_day.split("-"))
        return date(coverage_year - 1, month, day)


class WaitingPeriod(msgspec.Struct, frozen=True, kw_only=True):
    """How a waiting period of `months` was reached, for the explanation."""

    months: int
    fixed_months: int
    counted_gap_years: int
    gap_months: int  # variable part before repair
    repaired_months: int  # removed by years paid back, at most gap_months
    minimum_applied: bool  # raised to the long-gap minimum


class Coverage(msgspec.Struct, frozen=True, kw_only=True):
    """When a person is covered in a coverage year, and why. No cover: `start` and `end` are None."""

    coverage_year: int
    start: date | None
    end: date | None  # 31 Dec of the coverage year when covered
    waiting_months: int  # 0 unless the reason is waiting_period or a waiting period left no cover
    reason_code: CoverageReason
    reason: str


class CoverageFacts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a Coverage was reached, as facts without words: everything its `reason` says, for a
    reader's language to say again (a server stores them with the cover). Fields a rule does not
    use keep their defaults and are left out of the encoding."""

    rule: CoverageRule  # the rule that set the start (the reason code, unless that start left no cover)
    coverage_year: int
    business_date: date
    window_end: date
    late: bool = False  # enrolled after the window closed
    counted_gap_years: int = 0
    newborn_days: int | None = None  # newborn: the days after birth the policy allows
    born_before_year: bool = False  # newborn born in an earlier year: covered from 1 January
    exemption: str | None = None  # exempt: the group's code
    evidence: ExemptionEvidence | None = None  # exempt: what showed the group (list row or claim)
    waiting: WaitingPeriod | None = None  # waiting_period: how its months were reached
    long_gap_years: int | None = None  # when the long-gap minimum was applied: the policy's numbers
    long_gap_min_months: int | None = None
    start: date | None = None  # cover, both days included; None: no cover this year
    end: date | None = None
    would_start: date | None = None  # no cover: the start that fell after the year's end
    # Years before the coverage year whose cover is unknown and that could change the gap if they
    # were known (mobile_sync_protocol/rules/gaps.py): for a reviewer to check; the rule that set
    # the start did not depend on the gap when empty.
    unknown_years: tuple[int, ...] = ()
    extended_end: date | None = None  # extended_period: the last day of the extended payment period
    # Enrolled as a new university student under a policy with the new-student rule; the rule is
    # `new_student` when it applied, another one (paid outside the window, or after a gap) when not.
    new_student: bool = False
    window_start: date | None = None  # new_student: the first day of the window the payment fell in


class CoverageDecision(msgspec.Struct, frozen=True, kw_only=True):
    coverage: Coverage
    facts: CoverageFacts


def add_months(day: date, months: int) -> date:
    """The same day of the month `months` calendar months later, or that month's last day when it
    is shorter: 31 Jan + 1 month = 28 Feb (29 Feb in a leap year); 15 Mar + 3 months = 15 Jun."""
    index = day.year * 12 + day.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def counted_gap_years(policy: WaitingPolicy, *, coverage_year: int, gap_years: int) -> int:
    """How many of the `gap_years` uncovered years just before `coverage_year` count as gaps.

    The gap is the run of consecutive years without cover that ends the year before
    `coverage_year`; only those from `policy.gaps_count_from_year` on count.
    """
    if gap_years < 0:
        raise CoverageInputError("gap_years must not be negative")
    return max(0, min(gap_years, coverage_year - policy.gaps_count_from_year))


def waiting_period(
    policy: WaitingPolicy, *, coverage_year: int, gap_years: int = 0, back_paid_years: int = 0
) -> WaitingPeriod:
    """The waiting period of someone who enrols late or after a gap (exemptions aside).

    months = fixed + max(0, counted gap years × months per gap year − back-paid years × months
    removed per back-paid year); when the counted gap is `long_gap_years` or more, at least
    `long_gap_min_months`.
    """
    if back_paid_years < 0:
        raise CoverageInputError("back_paid_years must not be negative")
    counted = counted_gap_years(policy, coverage_year=coverage_year, gap_years=gap_years)
    gap_months = counted * policy.months_per_gap_year
    repaired = min(gap_months, back_paid_years * policy.months_removed_per_back_paid_year)
    months = policy.fixed_months + gap_months - repaired
    minimum_applied = counted >= policy.long_gap_years and months < policy.long_gap_min_months
    if minimum_applied:
        months = policy.long_gap_min_months
    return WaitingPeriod(
        months=months,
        fixed_months=policy.fixed_months,
        counted_gap_years=counted,
        gap_months=gap_months,
        repaired_months=repaired,
        minimum_applied=minimum_applied,
    )


def decide_coverage(
    *,
    coverage_year: int,
    business_date: date,
    window: EnrolmentWindow,
    policy: WaitingPolicy,
    exemption: str | None = None,
    birth_date: date | None = None,
    gap_years: int = 0,
    back_paid_years: int = 0,
    unknown_years: Sequence[int] = (),
    extended: ExtendedPeriod | None = None,
    evidence: ExemptionEvidence | None = None,
    new_student: bool = False,
    new_students: NewStudentRule | None = None,
) -> CoverageDecision:
    """Coverage dates of one person for `coverage_year`, and the facts of why (`coverage_for` gives the dates).

    `business_date` is the local date of payment, or of registration for a fully subsidised
    person. `gap_years` is the number of consecutive years without cover just before
    `coverage_year`; `back_paid_years` the years of it paid back (补缴). `exemption` is the code
    of an exempt group in `policy.exempt_groups`, or None. `unknown_years` are the years whose
    cover nobody knows that could have changed the gap (`gaps.gap_years`): they are kept in the
    facts, for a reviewer, when the rule that decided depends on the gap (in_window,
    extended_period, waiting_period). `extended` is the policy's extended payment period, if any.
    `evidence` is what showed the exemption (`exemptions.exemption_for`), kept in the facts.
    `new_student` says the person was enrolled as a new university student; `new_students` is the
    policy's rule for them, if any (without it the flag changes nothing).

    The first rule that applies decides:

    1. newborn: enrolled at most `policy.newborn_days` days after birth → covered from birth, or
       from 1 Jan if born in an earlier year; this holds even when paid after the year's end.
    1a. new_student: enrolled as a new student, paid inside the window (from its first to its
       last day) and no counted gap → covered from `new_students.cover_from(coverage_year)` (in the
       year before the coverage year, e.g. 1 September) to 31 Dec, as the policy says, even when
       that day is before the payment. Otherwise the rules below decide as for anyone.
    2. in_window: paid on or before the window's last day, and no counted gap → the whole year.
       Paying before the window opens counts as in time here; whether money may be taken that
       early is for the caller to decide.
    2a. extended_period: paid inside the policy's extended payment period (`extended`), and no
       counted gap → covered from the business date, no waiting period. With a counted gap the
       waiting period rules below still apply: the extended period is for those who were
       continuously insured (闽政办〔2025〕3号 §1 gives cover from the day of payment in it; the
       provincial waiting-period rule, 福州新闻网 2025-02-07, keeps the wait for anyone "not
       continuously enrolled").
    3. exempt: enrolled late or after a gap, but in an exempt group → covered from the business
       date, or from 1 Jan when that is later.
    4. waiting_period: enrolled late or after a gap → the waiting period (see `waiting_period`)
       runs from the business date, or from 1 Jan when that is later (someone with a gap who pays
       inside the window waits from 1 Jan). "Covered after N months" means covered from
       `add_months(that date, N)`, the same day of the month N calendar months later, clamped
       to the month's end: paid 15 Mar with 3 months → covered from 15 Jun; paid 30 Nov with 3
       months → covered from 28 or 29 Feb.
    5. no_cover_this_year: whichever rule applied, a start after 31 Dec (or before birth, moved
       to the birth date) leaves no cover in this year.

    Cover ends on 31 Dec of the coverage year and never starts before birth; it starts inside the
    coverage year, except a new student's (1a), which starts in the year before.
    """
    if birth_date is not None and birth_date > business_date:
        raise CoverageInputError("a person cannot be enrolled before birth")
    if exemption is not None and exemption not in policy.exempt_groups:
        raise CoverageInputError("the exemption is not one this policy grants")
    year_start, year_end = date(coverage_year, 1, 1), date(coverage_year, 12, 31)
    waiting = waiting_period(policy, coverage_year=coverage_year, gap_years=gap_years, back_paid_years=back_paid_years)
    late = business_date > window.end
    after_gap = waiting.counted_gap_years > 0
    facts = CoverageFacts(
        rule="in_window",
        coverage_year=coverage_year,
        business_date=business_date,
        window_end=window.end,
        late=late,
        counted_gap_years=waiting.counted_gap_years,
    )

    if new_student and new_students is not None:
        facts = msgspec.structs.replace(facts, new_student=True)
    start: date
    months = 0
    if (
        birth_date is not None
        and "newborn" in policy.exempt_groups  # an exempt group a policy may leave out (SPEC §2)
        and business_date - birth_date <= timedelta(days=policy.newborn_days)
    ):
        start = max(birth_date, year_start)
        facts = msgspec.structs.replace(
            facts, rule="newborn", newborn_days=policy.newborn_days, born_before_year=birth_date < year_start
        )
    elif new_student and new_students is not None and not after_gap and window.start <= business_date <= window.end:
        start = new_students.cover_from(coverage_year)
        facts = msgspec.structs.replace(facts, rule="new_student", window_start=window.start)
    elif not late and not after_gap:
        start = year_start
    elif extended is not None and not after_gap and extended.start <= business_date <= extended.end:
        # Without a counted gap only: with one, the waiting period applies (see 2a above).
        start = max(business_date, year_start)
        facts = msgspec.structs.replace(facts, rule="extended_period", extended_end=extended.end)
    elif exemption is not None:
        start = max(business_date, year_start)
        facts = msgspec.structs.replace(facts, rule="exempt", exemption=exemption, evidence=evidence)
    else:
        months = waiting.months
        start = add_months(max(business_date, year_start), months)
        minimum = waiting.minimum_applied
        facts = msgspec.structs.replace(
            facts,
            rule="waiting_period",
            waiting=waiting,
            long_gap_years=policy.long_gap_years if minimum else None,
            long_gap_min_months=policy.long_gap_min_months if minimum else None,
        )

    if birth_date is not None and start < birth_date:
        start = birth_date
    if unknown_years and facts.rule in ("in_window", "extended_period", "waiting_period", "new_student"):
        facts = msgspec.structs.replace(facts, unknown_years=tuple(sorted(set(unknown_years))))
    if start > year_end:
        facts = msgspec.structs.replace(facts, would_start=start)
        coverage = Coverage(
            coverage_year=coverage_year,
            start=None,
            end=None,
            waiting_months=months,
            reason_code="no_cover_this_year",
            reason=english_reason(facts),
        )
    else:
        facts = msgspec.structs.replace(facts, start=start, end=year_end)
        coverage = Coverage(
            coverage_year=coverage_year,
            start=start,
            end=year_end,
            waiting_months=months,
            reason_code=facts.rule,
            reason=english_reason(facts),
        )
    return CoverageDecision(coverage=coverage, facts=facts)


def coverage_for(
    *,
    coverage_year: int,
    business_date: date,
    window: EnrolmentWindow,
    policy: WaitingPolicy,
    exemption: str | None = None,
    birth_date: date | None = None,
    gap_years: int = 0,
    back_paid_years: int = 0,
    extended: ExtendedPeriod | None = None,
    evidence: ExemptionEvidence | None = None,
    new_student: bool = False,
    new_students: NewStudentRule | None = None,
) -> Coverage:
    """Coverage dates of one person for `coverage_year` (see `decide_coverage`)."""
    return decide_coverage(
        coverage_year=coverage_year,
        business_date=business_date,
        window=window,
        policy=policy,
        exemption=exemption,
        birth_date=birth_date,
        gap_years=gap_years,
        back_paid_years=back_paid_years,
        extended=extended,
        evidence=evidence,
        new_student=new_student,
        new_students=new_students,
    ).coverage


def english_reason(facts: CoverageFacts) -> str:
    """The facts as one plain English sentence (`Coverage.reason`, what the tablet shows)."""
    enrolled = f"Enrolled on {facts.business_date.isoformat()}"
    if facts.rule == "newborn":
        why = f"{enrolled}, within {facts.newborn_days} days of birth: no waiting, covered from birth"
        if facts.born_before_year:
            why += f", which in {facts.coverage_year} means from 1 January"
    elif facts.rule == "in_window":
        why = f"{enrolled}, before the enrolment window closed on {facts.window_end.isoformat()}: no waiting period"
    elif facts.rule == "extended_period":
        extended_end = facts.extended_end.isoformat() if facts.extended_end else "?"
        why = f"{enrolled}, in the extended payment period ending {extended_end}: no waiting period"
    elif facts.rule == "new_student":
        window_start = facts.window_start.isoformat() if facts.window_start else "?"
        why = (
            f"{enrolled} as a new university student, in the enrolment window from {window_start} to "
            f"{facts.window_end.isoformat()}, without a gap: covered from the start of the school year"
        )
    elif facts.rule == "exempt":
        why = f"{enrolled}, {_late_or_gap(facts)}; exempt from waiting ({facts.exemption}{_evidence_words(facts)})"
    else:
        why = f"{enrolled}, {_late_or_gap(facts)}; {_waiting_words(facts)}"
    if facts.new_student and facts.rule != "new_student":
        why += " (enrolled as a new university student, but the student rule needs payment in the window without a gap)"
    if facts.start is None or facts.end is None:
        would = facts.would_start.isoformat() if facts.would_start else "?"
        return f"{why}; cover would start on {would}, after the end of {facts.coverage_year}: no cover this year."
    return f"{why}; covered from {facts.start.isoformat()} to {facts.end.isoformat()}."


def _evidence_words(facts: CoverageFacts) -> str:
    e = facts.evidence
    if e is None:
        return ""
    if e.source == "claim":
        return f": accepted claim {e.claim_id}"
    return f": list {e.list_type} version {e.version} row {e.row}"


def _late_or_gap(facts: CoverageFacts) -> str:
    parts = []
    if facts.late:
        parts.append(f"after the enrolment window closed on {facts.window_end.isoformat()}")
    if facts.counted_gap_years:
        parts.append(f"after {_plural(facts.counted_gap_years, 'year')} without cover")
    return " and ".join(parts)


def _waiting_words(facts: CoverageFacts) -> str:
    waiting = facts.waiting
    if waiting is None:
        return "waiting period"
    words = f"waiting period of {_plural(waiting.months, 'month')}: {waiting.fixed_months} fixed"
    if waiting.gap_months:
        words += f" + {waiting.gap_months} for the gap"
    if waiting.repaired_months:
        words += f" - {waiting.repaired_months} repaired by paying back"
    if waiting.minimum_applied:
        words += (
            f", raised to the minimum of {facts.long_gap_min_months} after a gap of "
            f"{_plural(facts.long_gap_years or 0, 'year')} or more"
        )
    return words


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
