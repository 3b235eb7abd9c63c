"""Continuous years of basic insurance and the serious-illness ceiling they raise
(mobile_sync_protocol/rules/continuity.py), with literal years and amounts. No database needed."""

from __future__ import annotations

import msgspec
import pytest

from mobile_sync_protocol.rules.continuity import (
    Ceiling,
    CeilingReason,
    Continuity,
    SeriousIllnessIncentive,
    continuity,
    continuity_as_of,
    serious_illness_ceiling,
)
from mobile_sync_protocol.rules.policy import PolicyRules


def years(first: int, last: int) -> set[int]:
    return set(range(first, last + 1))


@pytest.mark.parametrize(
    ("through", "covered", "uncovered", "birth_year", "count_from", "expected"),
    [
        # Five known covered years after a known uncovered one: five, nothing to look for.
        (2026, years(2022, 2026), {2021}, None, None, Continuity(years=5, through=2026, since=2022, unknown_year=None)),
        # The same run after an unknown year: five, and 2021 is the year whose history could add.
        (2026, years(2022, 2026), set(), None, None, Continuity(years=5, through=2026, since=2022, unknown_year=2021)),
        # The year counted to is not covered: no run.
        (2026, years(2020, 2025), {2026}, None, None, Continuity(years=0, through=2026, since=None, unknown_year=None)),
        (2026, years(2020, 2025), set(), None, None, Continuity(years=0, through=2026, since=None, unknown_year=2026)),
        # A known uncovered year in the middle breaks the run: only the years after it count.
        (
            2026,
            {2018, 2019, 2020, 2022, 2023, 2024, 2025, 2026},
            {2021},
            None,
            None,
            Continuity(years=5, through=2026, since=2022, unknown_year=None),
        ),
        # Covered and uncovered the same year: covered (cover is the stronger evidence).
        (
            2026,
            years(2024, 2026),
            {2024, 2023},
            None,
            None,
            Continuity(years=3, through=2026, since=2024, unknown_year=None),
        ),
        # Born in 2023 and covered every year since: four years, nothing unknown before birth.
        (2026, years(2023, 2026), set(), 2023, None, Continuity(years=4, through=2026, since=2023, unknown_year=None)),
        # A policy that counts from 2025: the years before never count, and are not asked about.
        (2026, years(2010, 2026), set(), 1980, 2025, Continuity(years=2, through=2026, since=2025, unknown_year=None)),
        # Thirty years covered, 1997 to 2026.
        (
            2026,
            years(1997, 2026),
            {1996},
            1970,
            None,
            Continuity(years=30, through=2026, since=1997, unknown_year=None),
        ),
    ],
)
def test_continuity(
    through: int,
    covered: set[int],
    uncovered: set[int],
    birth_year: int | None,
    count_from: int | None,
    expected: Continuity,
) -> None:
    got = continuity(
        through=through, covered=covered, uncovered=uncovered, birth_year=birth_year, count_from_year=count_from
    )
    assert got == expected


def test_continuity_as_of_counts_last_year_until_this_year_is_paid() -> None:
    # Covered 2022–2025, not yet paid for 2026: four years as of 2026 (last year's run stands).
    assert continuity_as_of(2026, covered=years(2022, 2025), uncovered={2021}) == Continuity(
        years=4, through=2025, since=2022, unknown_year=None
    )
    # Paid for 2026 too: five.
    assert continuity_as_of(2026, covered=years(2022, 2026), uncovered={2021}).years == 5
    # Neither 2026 nor 2025 covered: none.
    assert continuity_as_of(2026, covered=years(2020, 2024), uncovered={2025}).years == 0


# Fujian 2025 (research/fujian-2025-policy.md): original ceiling 400,000 yuan (an example figure),
# 3,000 yuan a continuous year after four years, 3,000 yuan after a zero-reimbursement year, both
# together at most 20 % of the original ceiling: 80,000 yuan.
FUJIAN = SeriousIllnessIncentive(
    original_ceiling_fen=40_000_000,
    continuity_after_years=4,
    continuity_raise_fen=300_000,
    zero_claim_raise_fen=300_000,
    cap_percent=20,
)
CAP = CeilingReason(code="cap", raise_fen=8_000_000, percent=20)


@pytest.mark.parametrize(
    ("continuous", "zero_claim", "ceiling_fen", "reasons"),
    [
        # Three years: no raise.
        (3, False, 40_000_000, ()),
        # Four years: still none (the raise is for each year *after* four).
        (4, False, 40_000_000, ()),
        # Three years and a year without reimbursement: 403,000 yuan.
        (
            3,
            True,
            40_300_000,
            (CeilingReason(code="zero_claim", raise_fen=300_000, year=2029), CAP),
        ),
        # Five years: one step, 403,000 yuan.
        (5, False, 40_300_000, (CeilingReason(code="continuity", raise_fen=300_000, years=5), CAP)),
        # Five years and a year without reimbursement: 406,000 yuan.
        (
            5,
            True,
            40_600_000,
            (
                CeilingReason(code="continuity", raise_fen=300_000, years=5),
                CeilingReason(code="zero_claim", raise_fen=300_000, year=2029),
                CAP,
            ),
        ),
        # Eight years: four steps, 412,000 yuan.
        (8, False, 41_200_000, (CeilingReason(code="continuity", raise_fen=1_200_000, years=8), CAP)),
        # Thirty years: 26 steps = 78,000 yuan, under the 80,000 cap: 478,000 yuan.
        (30, False, 47_800_000, (CeilingReason(code="continuity", raise_fen=7_800_000, years=30), CAP)),
        # ... and a year without reimbursement: 81,000 yuan of raises, capped at 80,000: 480,000 yuan.
        (
            30,
            True,
            48_000_000,
            (
                CeilingReason(code="continuity", raise_fen=7_800_000, years=30),
                CeilingReason(code="zero_claim", raise_fen=300_000, year=2029),
                CeilingReason(code="cap", raise_fen=8_000_000, percent=20, capped=True),
            ),
        ),
    ],
)
def test_fujian_ceiling(
    continuous: int, zero_claim: bool, ceiling_fen: int, reasons: tuple[CeilingReason, ...]
) -> None:
    got = serious_illness_ceiling(
        FUJIAN, coverage_year=2030, continuous_years=continuous, zero_claim_last_year=zero_claim
    )
    assert got.ceiling_fen == ceiling_fen
    assert got.reasons == reasons
    assert got.original_fen == 40_000_000
    assert got.cap_fen == 8_000_000


def test_ceiling_in_full() -> None:
    assert serious_illness_ceiling(
        FUJIAN, coverage_year=2030, continuous_years=30, zero_claim_last_year=True
    ) == Ceiling(
        coverage_year=2030,
        original_fen=40_000_000,
        continuous_years=30,
        continuity_raise_fen=7_800_000,
        zero_claim_year=2029,
        zero_claim_raise_fen=300_000,
        cap_fen=8_000_000,
        raise_fen=8_000_000,
        ceiling_fen=48_000_000,
        reasons=(
            CeilingReason(code="continuity", raise_fen=7_800_000, years=30),
            CeilingReason(code="zero_claim", raise_fen=300_000, year=2029),
            CeilingReason(code="cap", raise_fen=8_000_000, percent=20, capped=True),
        ),
    )


def test_national_floor_with_a_tenth_cap() -> None:
    # The national floor (1,000 yuan each) with a 10 % cap of a 300,000-yuan ceiling (30,000 yuan):
    # 40 years → 36 steps = 36,000 yuan, capped at 30,000: 330,000 yuan.
    national = SeriousIllnessIncentive(
        original_ceiling_fen=30_000_000, continuity_raise_fen=100_000, zero_claim_raise_fen=100_000, cap_percent=10
    )
    got = serious_illness_ceiling(national, coverage_year=2040, continuous_years=40, zero_claim_last_year=False)
    assert (got.raise_fen, got.ceiling_fen) == (3_000_000, 33_000_000)


def test_policy_document_carries_the_incentive_and_a_tablet_ignores_what_it_does_not_know() -> None:
    doc = {
        "serious_illness": {
            "original_ceiling_fen": 40_000_000,
            "continuity_raise_fen": 300_000,
            "zero_claim_raise_fen": 300_000,
            "a_field_of_a_newer_server": 1,
        }
    }
    rules = msgspec.convert(doc, PolicyRules)
    assert rules.serious_illness == SeriousIllnessIncentive(
        original_ceiling_fen=40_000_000, continuity_raise_fen=300_000, zero_claim_raise_fen=300_000
    )
    assert rules.serious_illness.cap_percent == 20
    assert rules.serious_illness.continuity_after_years == 4
    assert msgspec.convert({}, PolicyRules).serious_illness is None
    with pytest.raises(msgspec.ValidationError, match=r"serious_illness.cap_percent"):
        msgspec.convert({"serious_illness": {"original_ceiling_fen": 1, "cap_percent": 101}}, PolicyRules)
