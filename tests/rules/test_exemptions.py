"""Exemptions from the waiting period, recognised from evidence (国办发〔2024〕38号; the year's policy
names the groups and their parameters). No database needed; dates are literal."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import msgspec
import pytest

from mobile_sync_protocol.rules.coverage import (
    EnrolmentWindow,
    ExemptGroup,
    ExemptionEvidence,
    WaitingPolicy,
    decide_coverage,
)
from mobile_sync_protocol.rules.exemptions import Exemption, exemption_for, group_rules

LIST = UUID("01890000-0000-7000-8000-000000000001")
CLAIM = UUID("01890000-0000-7000-8000-000000000002")
NATIONAL = WaitingPolicy()
FUJIAN = WaitingPolicy(exempt_groups=frozenset({"newborn", "medical_assistance", "discharged_soldier"}))
WINDOW_2026 = EnrolmentWindow(start=date(2025, 9, 1), end=date(2025, 12, 31))


def row(list_type: str, valid_from: date | None, valid_to: date | None = None, n: int = 7) -> ExemptionEvidence:
    return ExemptionEvidence(
        source="list", list_type=list_type, valid_from=valid_from, valid_to=valid_to, list_id=LIST, version=3, row=n
    )


def claim(category: str, valid_from: date | None = None, valid_to: date | None = None) -> ExemptionEvidence:
    return ExemptionEvidence(
        source="claim", list_type=category, valid_from=valid_from, valid_to=valid_to, claim_id=CLAIM
    )


# (policy, evidence, coverage year, business date) → the group that exempts, or None
CASES = [
    # Newly recognised as 特困 on 2026-11-15, enrolled 2026-12-02: within the 12 months.
    (NATIONAL, [row("te_kun", date(2026, 11, 15))], 2026, date(2026, 12, 2), "newly_recognised_assistance"),
    # 低保 since 2024-03-01: not newly recognised (more than 12 months before).
    (NATIONAL, [row("di_bao", date(2024, 3, 1))], 2026, date(2026, 12, 2), None),
    # A row without its own start proves no recognition date.
    (NATIONAL, [row("di_bao", None)], 2026, date(2026, 12, 2), None),
    # Recognised after the business date: not yet.
    (NATIONAL, [row("te_kun", date(2026, 12, 3))], 2026, date(2026, 12, 2), None),
    # The row ended before the business date: no longer on the list.
    (NATIONAL, [row("fangfan_jiance", date(2026, 5, 1), date(2026, 10, 31))], 2026, date(2026, 12, 2), None),
    # 孤儿 is not an assistance list of the default groups.
    (NATIONAL, [row("gu_er", date(2026, 11, 15))], 2026, date(2026, 12, 2), None),
    # Fujian: every medical-assistance recipient, however long ago recognised, or by accepted claim.
    (FUJIAN, [row("di_bao", date(2020, 1, 1))], 2026, date(2026, 12, 2), "medical_assistance"),
    (FUJIAN, [row("di_bao", None)], 2026, date(2026, 12, 2), "medical_assistance"),
    (FUJIAN, [claim("te_kun")], 2026, date(2026, 12, 2), "medical_assistance"),
    (NATIONAL, [claim("te_kun", date(2026, 11, 15))], 2026, date(2026, 12, 2), None),  # national: no claims
    # A soldier discharged 2026-06-20 who enrols 2026-07-10.
    (FUJIAN, [row("tuiyi_junren", date(2026, 6, 20))], 2026, date(2026, 7, 10), "discharged_soldier"),
    # ... discharged in 2025: not discharged in the coverage year.
    (FUJIAN, [row("tuiyi_junren", date(2025, 6, 20))], 2026, date(2026, 7, 10), None),
    # ... the national policy names no soldiers.
    (NATIONAL, [row("tuiyi_junren", date(2026, 6, 20))], 2026, date(2026, 7, 10), None),
    # Employee insurance 2024-03-01 … 2026-04-30 (2 years 2 months), enrolled 2026-06-30: break of 2 months.
    (
        NATIONAL,
        [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))],
        2026,
        date(2026, 6, 30),
        "left_employee_insurance",
    ),
    # ... enrolled 2026-08-31: a break of 4 months.
    (NATIONAL, [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))], 2026, date(2026, 8, 31), None),
    # ... enrolled 2026-08-01: a break of exactly 3 months (1 May to 31 July), still exempt; a day later not.
    (
        NATIONAL,
        [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))],
        2026,
        date(2026, 8, 1),
        "left_employee_insurance",
    ),
    (NATIONAL, [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))], 2026, date(2026, 8, 2), None),
    # Exactly two years (2024-05-01 … 2026-04-30) count; one day less does not.
    (
        NATIONAL,
        [row("employee_insurance", date(2024, 5, 1), date(2026, 4, 30))],
        2026,
        date(2026, 6, 30),
        "left_employee_insurance",
    ),
    (NATIONAL, [row("employee_insurance", date(2024, 5, 2), date(2026, 4, 30))], 2026, date(2026, 6, 30), None),
    # Still insured on the business date: no switch.
    (NATIONAL, [row("employee_insurance", date(2020, 1, 1), date(2026, 6, 30))], 2026, date(2026, 6, 30), None),
    # A paper proof accepted as a claim, with its dates.
    (
        NATIONAL,
        [claim("employee_insurance_ended", date(2023, 1, 1), date(2026, 5, 15))],
        2026,
        date(2026, 6, 1),
        "left_employee_insurance",
    ),
    (
        NATIONAL,
        [claim("employee_insurance_ended")],
        2026,
        date(2026, 6, 1),
        None,
    ),  # a claim without dates proves nothing
    # Fujian names no employee-insurance leavers.
    (FUJIAN, [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))], 2026, date(2026, 6, 30), None),
]


@pytest.mark.parametrize(("policy", "evidence", "year", "business_date", "group"), CASES)
def test_exemption_is_recognised_from_evidence(
    policy: WaitingPolicy, evidence: list[ExemptionEvidence], year: int, business_date: date, group: str | None
) -> None:
    found = exemption_for(policy, evidence, coverage_year=year, business_date=business_date)
    assert (found.group if found else None) == group
    if found is not None:
        assert found.evidence in evidence


def test_newly_recognised_te_kun_enrolling_in_december_is_covered_without_waiting() -> None:
    evidence = [row("te_kun", date(2026, 11, 15), n=12)]
    found = exemption_for(NATIONAL, evidence, coverage_year=2026, business_date=date(2026, 12, 2))
    assert found == Exemption(group="newly_recognised_assistance", evidence=evidence[0])
    decided = decide_coverage(
        coverage_year=2026,
        business_date=date(2026, 12, 2),
        window=WINDOW_2026,
        policy=NATIONAL,
        exemption=found.group,
        evidence=found.evidence,
    )
    assert (decided.coverage.start, decided.coverage.end) == (date(2026, 12, 2), date(2026, 12, 31))
    assert decided.coverage.reason_code == "exempt"
    assert decided.coverage.waiting_months == 0
    assert decided.facts.evidence == evidence[0]
    assert decided.coverage.reason == (
        "Enrolled on 2026-12-02, after the enrolment window closed on 2025-12-31; exempt from waiting "
        "(newly_recognised_assistance: list te_kun version 3 row 12); covered from 2026-12-02 to 2026-12-31."
    )
    # Without the exemption: 3 months' wait from 2026-12-02, past the year's end.
    plain = decide_coverage(coverage_year=2026, business_date=date(2026, 12, 2), window=WINDOW_2026, policy=NATIONAL)
    assert plain.coverage.reason_code == "no_cover_this_year"
    assert plain.facts.would_start == date(2027, 3, 2)


def test_discharged_soldier_is_covered_from_the_day_of_enrolment() -> None:
    found = exemption_for(
        FUJIAN, [row("tuiyi_junren", date(2026, 6, 20))], coverage_year=2026, business_date=date(2026, 7, 10)
    )
    assert found is not None
    decided = decide_coverage(
        coverage_year=2026,
        business_date=date(2026, 7, 10),
        window=WINDOW_2026,
        policy=FUJIAN,
        exemption=found.group,
        evidence=found.evidence,
    )
    assert (decided.coverage.start, decided.coverage.reason_code) == (date(2026, 7, 10), "exempt")


def test_a_policy_changes_the_groups_parameters_without_code() -> None:
    local = WaitingPolicy(
        exempt_groups=frozenset({"newly_recognised_assistance", "left_employee_insurance"}),
        exemptions=(
            ExemptGroup(group="newly_recognised_assistance", within_months=3, list_types=("te_kun", "gu_er")),
            ExemptGroup(group="left_employee_insurance", max_break_months=6),
        ),
    )
    rules = {g.group: g for g in group_rules(local)}
    assert rules["newly_recognised_assistance"].within_months == 3
    assert rules["newly_recognised_assistance"].claims is False  # the default kept
    assert rules["left_employee_insurance"].min_insured_years == 2
    recognised = [row("gu_er", date(2026, 9, 10))]
    assert exemption_for(local, recognised, coverage_year=2026, business_date=date(2026, 12, 2)) is not None
    late = [row("te_kun", date(2026, 8, 10))]  # more than 3 months before
    assert exemption_for(local, late, coverage_year=2026, business_date=date(2026, 12, 2)) is None
    leaver = [row("employee_insurance_ended", date(2024, 3, 1), date(2026, 4, 30))]
    found = exemption_for(local, leaver, coverage_year=2026, business_date=date(2026, 8, 31))  # 4 months: allowed here
    assert found is not None and found.group == "left_employee_insurance"


def test_a_policy_without_the_group_does_not_exempt() -> None:
    none = WaitingPolicy(exempt_groups=frozenset({"newborn"}))
    evidence = [
        row("te_kun", date(2026, 11, 15)),
        row("tuiyi_junren", date(2026, 6, 20)),
        row("employee_insurance_ended", date(2024, 3, 1), date(2026, 10, 31)),
    ]
    assert exemption_for(none, evidence, coverage_year=2026, business_date=date(2026, 12, 2)) is None
    # Parameters for a group the policy does not name exempt nobody either.
    params_only = WaitingPolicy(
        exempt_groups=frozenset({"newborn"}), exemptions=(ExemptGroup(group="discharged_soldier"),)
    )
    assert exemption_for(params_only, evidence, coverage_year=2026, business_date=date(2026, 12, 2)) is None


def test_a_list_row_is_preferred_to_a_claim_and_the_latest_row_wins() -> None:
    older, newer = row("di_bao", date(2021, 1, 1), n=3), row("te_kun", date(2026, 2, 1), n=9)
    found = exemption_for(FUJIAN, [claim("di_bao"), older, newer], coverage_year=2026, business_date=date(2026, 12, 2))
    assert found is not None and found.evidence == newer


def test_the_policy_document_round_trips_and_keeps_defaults_out() -> None:
    policy = WaitingPolicy(exemptions=(ExemptGroup(group="medical_assistance", within_months=6),))
    encoded = msgspec.json.decode(msgspec.json.encode(policy))
    assert encoded["exemptions"] == [{"group": "medical_assistance", "within_months": 6}]
    assert msgspec.convert(encoded, WaitingPolicy) == policy
