"""Which years before a coverage year were gaps in a person's cover (断保), from what is known of
each year — unknown is not a gap.

Each year from the policy's `gaps_count_from_year` (and never before the year of birth) up to the
year before the coverage year is one of:

- known covered: the person had cover that year (the server's evidence: a funded enrolment here,
  an imported history year marked paid, subsidised or confirmed, employee insurance on the lists);
- known uncovered: the rolls show the person that year and no cover (the server's evidence: a
  member of a household here on 1 January of the year, or an imported history year marked
  cancelled, and nothing that shows cover);
- unknown: nothing is known of the year (typically before go-live, for someone not in the
  imported history).

The gap is the run of years without cover that ends the year before the coverage year. A known
uncovered year is part of it; a known covered year ends it; an unknown year counts as the
policy's `unknown_years` says: "gap" makes it part of the run, "ignore" treats it as covered pending
review (it ends the run, so an unknown year alone never lengthens a wait). Either way the unknown
years that could have changed the gap are listed, for a reviewer.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from mobile_sync_protocol.rules.coverage import WaitingPolicy

__all__ = ["GapYears", "gap_years"]


class GapYears(msgspec.Struct, frozen=True, kw_only=True):
    gap_years: int  # the counted gap: what `waiting_period` and `decide_coverage` take as gap_years
    counted: tuple[int, ...]  # the years of that gap, ascending
    # Unknown years between the coverage year and the last year known covered (ascending): those
    # that, once known, could change the gap. Counted among `counted` when the policy says "gap".
    unknown: tuple[int, ...]


def gap_years(
    policy: WaitingPolicy,
    *,
    coverage_year: int,
    birth_year: int,
    covered: Collection[int],
    uncovered: Collection[int],
) -> GapYears:
    """The counted gap before `coverage_year` from the years known `covered` and known `uncovered`
    (every other year is unknown; a year in both is covered: cover is the stronger evidence).

    >>> p = WaitingPolicy(gaps_count_from_year=2025)
    >>> gap_years(p, coverage_year=2027, birth_year=1980, covered=(), uncovered=(2025, 2026)).gap_years
    2
    >>> gap_years(p, coverage_year=2027, birth_year=1980, covered=(), uncovered=()).unknown
    (2025, 2026)
    """
    first = max(policy.gaps_count_from_year, birth_year)
    counted: list[int] = []
    unknown: list[int] = []
    run_open = True  # still walking the run of years without cover, back from the coverage year
    for year in range(coverage_year - 1, first - 1, -1):
        if year in covered:
            break
        if year in uncovered:
            if run_open:
                counted.append(year)
            continue
        unknown.append(year)
        if run_open and policy.unknown_years == "gap":
            counted.append(year)
        else:
            run_open = False
    return GapYears(gap_years=len(counted), counted=tuple(sorted(counted)), unknown=tuple(sorted(unknown)))
