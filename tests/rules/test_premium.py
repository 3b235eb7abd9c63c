"""Subsidies and amounts due, in integer fen; no database needed.

Examples use the 2025 national individual premium, 400 CNY = 40000 fen; the category codes and
amounts are illustrations, set by each year's policy.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobile_sync_protocol.rules.premium import (
    CategorySubsidy,
    FixedSubsidy,
    FullSubsidy,
    HouseholdDue,
    PercentSubsidy,
    PremiumDue,
    SubsidyLine,
    SubsidyPolicy,
    SubsidyRule,
    TopUp,
    household_due,
    percent_of,
    premium_due,
)

PREMIUM_2025 = 40000

CATEGORIES = (
    CategorySubsidy(category="tekun", rule=FullSubsidy()),  # 特困供养人员
    CategorySubsidy(category="dibao", rule=FixedSubsidy(amount_fen=30000)),  # 低保对象
    CategorySubsidy(category="dibao_edge", rule=PercentSubsidy(basis_points=5000)),  # 低保边缘, 50 %
    CategorySubsidy(category="at_risk", rule=FixedSubsidy(amount_fen=12000)),  # 防返贫监测对象
)
HIGHEST_WINS = SubsidyPolicy(premium_fen=PREMIUM_2025, categories=CATEGORIES)
STACKING = SubsidyPolicy(premium_fen=PREMIUM_2025, categories=CATEGORIES, categories_stack=True)


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [
        (40000, 5000, 20000),
        (40000, 3333, 13332),  # 13332.0
        (38000, 3333, 12665),  # 12665.4 → down
        (12345, 5000, 6173),  # 6172.5 → half up
        (15000, 1, 2),  # 1.5 → half up
        (5000, 1, 1),  # 0.5 → half up
        (4999, 1, 0),  # 0.4999 → down
        (40000, 10000, 40000),
        (40000, 0, 0),
        (0, 7000, 0),
    ],
)
def test_percentages_round_half_up_to_the_fen(amount: int, basis_points: int, expected: int) -> None:
    assert percent_of(amount, basis_points) == expected


@pytest.mark.parametrize(
    ("held", "subsidy", "due", "chosen"),
    [
        (set(), 0, 40000, ()),
        ({"tekun"}, 40000, 0, ("tekun",)),
        ({"dibao"}, 30000, 10000, ("dibao",)),
        ({"dibao_edge"}, 20000, 20000, ("dibao_edge",)),
        ({"at_risk"}, 12000, 28000, ("at_risk",)),
        ({"dibao", "dibao_edge"}, 30000, 10000, ("dibao",)),
        ({"tekun", "dibao", "at_risk"}, 40000, 0, ("tekun",)),
        ({"dibao_edge", "at_risk"}, 20000, 20000, ("dibao_edge",)),
        ({"unknown"}, 0, 40000, ()),
    ],
)
def test_most_favourable_category_wins_when_categories_do_not_stack(
    held: set[str], subsidy: int, due: int, chosen: tuple[str, ...]
) -> None:
    result = premium_due(HIGHEST_WINS, held)
    assert (result.subsidy_fen, result.due_fen, result.chosen_categories) == (subsidy, due, chosen)


@pytest.mark.parametrize(
    ("held", "subsidy", "due", "capped"),
    [
        ({"dibao_edge", "at_risk"}, 32000, 8000, False),
        ({"dibao", "dibao_edge"}, 40000, 0, True),  # 30000 + 20000, capped at the premium
        ({"dibao"}, 30000, 10000, False),
    ],
)
def test_stacking_categories_add_up_to_at_most_the_premium(
    held: set[str], subsidy: int, due: int, capped: bool
) -> None:
    result = premium_due(STACKING, held)
    assert (result.subsidy_fen, result.due_fen, result.capped) == (subsidy, due, capped)


def test_breakdown_shows_where_the_cap_bit() -> None:
    result = premium_due(STACKING, {"dibao", "dibao_edge"})
    assert result.lines == (
        SubsidyLine(
            source="category",
            code="dibao",
            rule=FixedSubsidy(amount_fen=30000),
            amount_fen=30000,
            applied_fen=30000,
            chosen=True,
        ),
        SubsidyLine(
            source="category",
            code="dibao_edge",
            rule=PercentSubsidy(basis_points=5000),
            amount_fen=20000,
            applied_fen=10000,
            chosen=True,
        ),
    )


def test_breakdown_lists_the_categories_that_lost() -> None:
    result = premium_due(HIGHEST_WINS, {"dibao_edge", "dibao", "other_list"})
    assert result == PremiumDue(
        premium_fen=40000,
        subsidy_fen=30000,
        due_fen=10000,
        chosen_categories=("dibao",),
        lines=(
            SubsidyLine(
                source="category",
                code="dibao",
                rule=FixedSubsidy(amount_fen=30000),
                amount_fen=30000,
                applied_fen=30000,
                chosen=True,
            ),
            SubsidyLine(
                source="category",
                code="dibao_edge",
                rule=PercentSubsidy(basis_points=5000),
                amount_fen=20000,
                applied_fen=0,
                chosen=False,
            ),
        ),
        capped=False,
        unmatched_categories=("other_list",),
    )


def test_equally_favourable_categories_are_decided_by_policy_order() -> None:
    policy = SubsidyPolicy(
        premium_fen=PREMIUM_2025,
        categories=(
            CategorySubsidy(category="orphan", rule=PercentSubsidy(basis_points=5000)),
            CategorySubsidy(category="dibao", rule=FixedSubsidy(amount_fen=20000)),
        ),
    )
    assert premium_due(policy, {"dibao", "orphan"}).chosen_categories == ("orphan",)


def test_fixed_subsidy_above_the_premium_gives_the_premium() -> None:
    policy = SubsidyPolicy(
        premium_fen=PREMIUM_2025, categories=(CategorySubsidy(category="tekun", rule=FixedSubsidy(amount_fen=50000)),)
    )
    result = premium_due(policy, {"tekun"})
    assert (result.subsidy_fen, result.due_fen, result.lines[0].amount_fen) == (40000, 0, 40000)


@pytest.mark.parametrize(
    ("top_up", "held", "subsidy", "due"),
    [
        (TopUp(code="district_all", rule=FixedSubsidy(amount_fen=5000)), set(), 5000, 35000),
        (TopUp(code="district_all", rule=FixedSubsidy(amount_fen=5000)), {"dibao"}, 35000, 5000),
        (TopUp(code="district_all", rule=FixedSubsidy(amount_fen=5000)), {"tekun"}, 40000, 0),  # capped
        (TopUp(code="district_all", rule=PercentSubsidy(basis_points=1000)), {"at_risk"}, 16000, 24000),
        # a top-up for a category follows holding it, even when another category won
        (
            TopUp(code="edge_extra", rule=FixedSubsidy(amount_fen=5000), categories=frozenset({"dibao_edge"})),
            {"dibao", "dibao_edge"},
            35000,
            5000,
        ),
        (
            TopUp(code="edge_extra", rule=FixedSubsidy(amount_fen=5000), categories=frozenset({"dibao_edge"})),
            {"dibao"},
            30000,
            10000,
        ),
        # a district may subsidise a group the pooling area's policy does not list
        (
            TopUp(code="disability", rule=FixedSubsidy(amount_fen=10000), categories=frozenset({"severe_disability"})),
            {"severe_disability"},
            10000,
            30000,
        ),
    ],
)
def test_district_top_ups_add_on_top_of_the_category_subsidy(
    top_up: TopUp, held: set[str], subsidy: int, due: int
) -> None:
    policy = SubsidyPolicy(premium_fen=PREMIUM_2025, categories=CATEGORIES, top_ups=(top_up,))
    result = premium_due(policy, held)
    assert (result.subsidy_fen, result.due_fen) == (subsidy, due)


def test_top_up_cut_by_the_cap_shows_zero_applied() -> None:
    policy = SubsidyPolicy(
        premium_fen=PREMIUM_2025,
        categories=CATEGORIES,
        top_ups=(TopUp(code="district_all", rule=FixedSubsidy(amount_fen=5000)),),
    )
    result = premium_due(policy, {"tekun"})
    assert [(line.code, line.amount_fen, line.applied_fen) for line in result.lines] == [
        ("tekun", 40000, 40000),
        ("district_all", 5000, 0),
    ]
    assert result.capped


def test_household_due_is_the_sum_over_members() -> None:
    members = [premium_due(HIGHEST_WINS, held) for held in ({"tekun"}, {"dibao"}, set(), {"dibao_edge"})]
    assert household_due(members) == HouseholdDue(member_count=4, premium_fen=160000, subsidy_fen=90000, due_fen=70000)


def test_empty_household_owes_nothing() -> None:
    assert household_due([]) == HouseholdDue(member_count=0, premium_fen=0, subsidy_fen=0, due_fen=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: FixedSubsidy(amount_fen=-1),
        lambda: PercentSubsidy(basis_points=-1),
        lambda: PercentSubsidy(basis_points=10001),
        lambda: SubsidyPolicy(premium_fen=-1),
        lambda: SubsidyPolicy(
            premium_fen=PREMIUM_2025,
            categories=(
                CategorySubsidy(category="dibao", rule=FullSubsidy()),
                CategorySubsidy(category="dibao", rule=FixedSubsidy(amount_fen=100)),
            ),
        ),
    ],
)
def test_negative_or_contradictory_subsidy_rules_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


def test_policy_decodes_from_json_with_tagged_rules() -> None:
    raw = (
        b'{"premium_fen":40000,"categories_stack":false,"categories":['
        b'{"category":"tekun","rule":{"type":"full"}},'
        b'{"category":"dibao","rule":{"type":"fixed","amount_fen":30000}},'
        b'{"category":"dibao_edge","rule":{"type":"percent","basis_points":5000}},'
        b'{"category":"at_risk","rule":{"type":"fixed","amount_fen":12000}}]}'
    )
    assert msgspec.json.decode(raw, type=SubsidyPolicy) == HIGHEST_WINS


def test_policy_with_a_negative_amount_fails_to_decode() -> None:
    raw = b'{"premium_fen":40000,"categories":[{"category":"x","rule":{"type":"fixed","amount_fen":-5}}]}'
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=SubsidyPolicy)


def test_float_amounts_are_refused_on_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"premium_fen":400.5}', type=SubsidyPolicy)


# ---- properties -------------------------------------------------------------------------------

codes = st.sampled_from(["tekun", "orphan", "dibao", "dibao_edge", "at_risk", "severe_disability"])
rules: st.SearchStrategy[SubsidyRule] = st.one_of(
    st.just(FullSubsidy()),
    st.builds(FixedSubsidy, amount_fen=st.integers(min_value=0, max_value=100_000)),
    st.builds(PercentSubsidy, basis_points=st.integers(min_value=0, max_value=10_000)),
)


@st.composite
def policies(draw: st.DrawFn) -> SubsidyPolicy:
    category_codes = draw(st.lists(codes, unique=True, max_size=6))
    top_ups = draw(
        st.lists(
            st.builds(
                TopUp,
                code=st.sampled_from(["district_all", "district_extra"]),
                rule=rules,
                categories=st.one_of(st.none(), st.frozensets(codes, min_size=1)),
            ),
            max_size=3,
        )
    )
    return SubsidyPolicy(
        premium_fen=draw(st.integers(min_value=0, max_value=200_000)),
        categories=tuple(CategorySubsidy(category=code, rule=draw(rules)) for code in category_codes),
        categories_stack=draw(st.booleans()),
        top_ups=tuple(top_ups),
    )


held_categories = st.frozensets(codes)


@given(policies(), held_categories)
def test_subsidy_and_due_are_ints_within_zero_and_the_premium(policy: SubsidyPolicy, held: frozenset[str]) -> None:
    result = premium_due(policy, held)
    for amount in (result.subsidy_fen, result.due_fen, *(line.applied_fen for line in result.lines)):
        assert type(amount) is int
    assert 0 <= result.subsidy_fen <= policy.premium_fen
    assert 0 <= result.due_fen <= policy.premium_fen
    assert result.subsidy_fen + result.due_fen == policy.premium_fen
    assert sum(line.applied_fen for line in result.lines) == result.subsidy_fen
    assert all(0 <= line.applied_fen <= line.amount_fen <= policy.premium_fen for line in result.lines)


@given(policies(), held_categories)
def test_without_stacking_at_most_one_category_is_chosen_and_it_is_the_largest(
    policy: SubsidyPolicy, held: frozenset[str]
) -> None:
    policy = msgspec.structs.replace(policy, categories_stack=False)
    result = premium_due(policy, held)
    category_lines = [line for line in result.lines if line.source == "category"]
    assert len(result.chosen_categories) == (1 if category_lines else 0)
    if category_lines:
        chosen = next(line for line in category_lines if line.chosen)
        assert chosen.amount_fen == max(line.amount_fen for line in category_lines)


@given(policies(), held_categories)
def test_stacking_never_gives_less_than_the_single_best_category(policy: SubsidyPolicy, held: frozenset[str]) -> None:
    stacked = premium_due(msgspec.structs.replace(policy, categories_stack=True), held)
    best = premium_due(msgspec.structs.replace(policy, categories_stack=False), held)
    assert stacked.subsidy_fen >= best.subsidy_fen


@given(policies(), held_categories, codes)
def test_holding_one_more_category_never_raises_the_amount_due(
    policy: SubsidyPolicy, held: frozenset[str], extra: str
) -> None:
    assert premium_due(policy, held | {extra}).due_fen <= premium_due(policy, held).due_fen


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10_000))
def test_percent_of_is_the_exact_share_rounded_half_up(amount: int, basis_points: int) -> None:
    exact = Fraction(amount * basis_points, 10_000)
    assert percent_of(amount, basis_points) == math.floor(exact + Fraction(1, 2))


@given(st.lists(st.tuples(policies(), held_categories), max_size=8))
def test_household_totals_are_sums_of_member_totals(members: list[tuple[SubsidyPolicy, frozenset[str]]]) -> None:
    dues = [premium_due(policy, held) for policy, held in members]
    total = household_due(dues)
    assert total.member_count == len(dues)
    assert total.due_fen == sum(d.due_fen for d in dues)
    assert total.subsidy_fen + total.due_fen == total.premium_fen


def test_rules_import_nothing_but_the_standard_library_and_msgspec() -> None:
    # Run apart: this test session has imported litestar and asyncpg already. Whatever msgspec
    # itself needs is allowed; the rules must add only standard-library modules.
    script = (
        "import sys\n"
        "import msgspec\n"
        "before = set(sys.modules)\n"
        "from mobile_sync_protocol.rules import coverage, identity, premium\n"
        "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(added - set(sys.stdlib_module_names) - {'mobile_sync_protocol'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
