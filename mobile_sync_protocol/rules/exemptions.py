"""Who is exempt from the waiting period, from the evidence the system holds (国办发〔2024〕38号 and
the year's local policy).

A policy names its exempt groups (`WaitingPolicy.exempt_groups`) and may set how each is recognised
(`WaitingPolicy.exemptions`, over the defaults below). Newborns are recognised from the birth date
by `coverage.decide_coverage` itself; the other groups from evidence — rows of civil-affairs lists
and claims civil affairs accepted — given here as `ExemptionEvidence`:

- `newly_recognised_assistance`: a row of an assistance list (特困, 低保, 防返贫监测 by default) in
  force on the business date whose own start (the day of recognition) lies at most `within_months`
  months before it (12 by default). A row without its own start date proves no recognition date.
- `medical_assistance` (医疗救助对象): a row of those lists in force on the business date, or an
  accepted claim of one of their categories; with `within_months` set, only recent recognition
  counts, as above (a claim then needs the date of the proof).
- `discharged_soldier`: a row of the veterans' affairs list (退役军人, `tuiyi_junren`) whose start
  (the day of discharge) lies in the coverage year, on or before the business date.
- `left_employee_insurance`: a row of employee insurance (职工医保: the list of persons whose
  employee insurance ended, `employee_insurance_ended`, or the employee-insurance list itself) or
  an accepted claim with the dates of a paper proof, that ended before the business date with a
  break of at most `max_break_months` (3) months (the days from the day after its end to the day
  before the business date), after at least `min_insured_years` (2) continuous
  years: its start at least that many years before the day after its end.

The first group of the policy (in the order above) with evidence wins, and within it the evidence
that shows it best: a list row before a claim, then the latest start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import msgspec

from mobile_sync_protocol.rules.coverage import ExemptGroup, ExemptionEvidence, WaitingPolicy, add_months

__all__ = ["ASSISTANCE_LISTS", "DEFAULT_GROUPS", "Exemption", "exemption_for", "group_rules"]

ASSISTANCE_LISTS = ("te_kun", "di_bao", "fangfan_jiance")

# How each group is recognised unless the policy says otherwise (every field set).
DEFAULT_GROUPS: dict[str, ExemptGroup] = {
    "newly_recognised_assistance": ExemptGroup(
        group="newly_recognised_assistance",
        list_types=ASSISTANCE_LISTS,
        claims=False,
        within_months=12,
        same_year=False,
        min_insured_years=0,
        max_break_months=0,
    ),
    "medical_assistance": ExemptGroup(
        group="medical_assistance",
        list_types=ASSISTANCE_LISTS,
        claims=True,
        within_months=None,
        same_year=False,
        min_insured_years=0,
        max_break_months=0,
    ),
    "discharged_soldier": ExemptGroup(
        group="discharged_soldier",
        list_types=("tuiyi_junren",),
        claims=False,
        within_months=None,
        same_year=True,
        min_insured_years=0,
        max_break_months=0,
    ),
    "left_employee_insurance": ExemptGroup(
        group="left_employee_insurance",
        list_types=("employee_insurance_ended", "employee_insurance"),
        claims=True,
        within_months=None,
        same_year=False,
        min_insured_years=2,
        max_break_months=3,
    ),
}
ORDER = tuple(DEFAULT_GROUPS)


class Exemption(msgspec.Struct, frozen=True, kw_only=True):
    group: str  # the group's code, as `decide_coverage` takes it
    evidence: ExemptionEvidence


def group_rules(policy: WaitingPolicy) -> list[ExemptGroup]:
    """The groups of `policy` recognised from evidence, in the order they are tried, each with the
    policy's parameters over the defaults (a field the policy leaves out keeps the default)."""
    given = {g.group: g for g in policy.exemptions}
    out = []
    for code in ORDER:
        if code not in policy.exempt_groups:
            continue
        rules = DEFAULT_GROUPS[code]
        if (mine := given.get(code)) is not None:
            changed = {f: v for f in mine.__struct_fields__ if f != "group" and (v := getattr(mine, f)) is not None}
            # within_months is the one parameter whose None means something (no limit): a policy
            # that wants no limit on a group that has one names another group (medical_assistance).
            rules = msgspec.structs.replace(rules, **changed)
        out.append(rules)
    return out


def exemption_for(
    policy: WaitingPolicy, evidence: Iterable[ExemptionEvidence], *, coverage_year: int, business_date: date
) -> Exemption | None:
    """The exempt group of a person enrolling on `business_date` for `coverage_year` that the
    `evidence` shows (list rows of any type, accepted claims for that year), or None. Only groups
    the policy names count (see the module's docstring for each)."""
    held = list(evidence)
    for rules in group_rules(policy):
        found = [e for e in held if _shows(rules, e, coverage_year, business_date)]
        if found:
            best = max(found, key=lambda e: (e.source == "list", e.valid_from or date.min, e.row or 0))
            return Exemption(group=rules.group, evidence=best)
    return None


def _shows(rules: ExemptGroup, e: ExemptionEvidence, coverage_year: int, business_date: date) -> bool:
    if e.list_type not in (rules.list_types or ()):
        return False
    if e.source == "claim" and not rules.claims:
        return False
    if rules.group == "left_employee_insurance":
        return _left_employee_insurance(rules, e, business_date)
    if e.valid_from is not None and e.valid_from > business_date:
        return False  # not recognised yet
    if e.valid_to is not None and e.valid_to < business_date:
        return False  # no longer on the list
    if rules.within_months is not None and (
        e.valid_from is None or e.valid_from < add_months(business_date, -rules.within_months)
    ):
        return False
    return not (rules.same_year and (e.valid_from is None or e.valid_from.year != coverage_year))


def _left_employee_insurance(rules: ExemptGroup, e: ExemptionEvidence, business_date: date) -> bool:
    """Employee insurance from valid_from to valid_to (both needed): ended before the business date,
    at most `max_break_months` before it, after at least `min_insured_years` continuous years."""
    if e.valid_from is None or e.valid_to is None or e.valid_to >= business_date:
        return False
    # The break is the days without cover, from the day after the end to the day before the business date.
    if business_date > add_months(e.valid_to + timedelta(days=1), rules.max_break_months or 0):
        return False
    return add_months(e.valid_from, 12 * (rules.min_insured_years or 0)) <= e.valid_to + timedelta(days=1)
