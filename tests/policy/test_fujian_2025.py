"""Fujian 2025, end to end: the shipped policy file (docs/policies/fujian-2025.json) loaded into the
database, a dozen residents walked through the year with the premium quote, enrolment and payment
the routes call, on the days they happen (literal dates and amounts).

Facts (research note fujian-2025-policy.md): window 2024-09-01 … 2024-12-31 with cover from
1 January; extended payment period 2025-01-01 … 2025-02-28 with cover from the day of payment
(闽政办〔2025〕3号 §1); otherwise 3 months' wait, +1 month per gap year (福州新闻网 2025-02-07, a
secondary report). The subsidy amounts are the file's illustrative ones (docs/policies/README.md):
低保 20000 fen; 低保边缘 10000 fen aged 60+ or under 18; 5000 fen off for everyone aged 70+; the
premium is 40000 fen. Ages are taken on 2025-01-01.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.actor import Actor
from backend.enrollment import continuity, enrollments, quotes
from backend.enrollment.enrollments import EnrollmentCreate
from backend.policy import service as policy
from backend.premiums import payments
from backend.premiums.payments import PaymentIn
from backend.residents import service as resident_service
from mobile_sync_protocol.rules.coverage import ExtendedPeriod
from mobile_sync_protocol.rules.policy import PolicyRules as TabletPolicyRules
from mobile_sync_protocol.rules.premium import SubsidyPolicy, age_on_1_january, premium_due
from tests.conftest import JWT_SECRET, auth_headers
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.factories import add_history, create_household, member
from tests.fhir.test_fhir import ELIGIBILITY, FHIR_JSON, partner_headers, register_partner, request_for, state_of
from tests.ops.test_cli import env_for
from tests.premiums.test_payments import actor_of
from tests.processes import run_cli

Client = AsyncTestClient[Litestar]
KEY = JWT_SECRET.encode()
TZ = "Asia/Shanghai"
FILE = Path(__file__).resolve().parents[2] / "docs" / "policies" / "fujian-2025.json"

# Fujian (福州 鼓楼区 350102) numbers, check characters by GB 11643; the birth date is in the number.
LIN = "350102198005010115"  # 1980-05-01
CHEN = "35010219850310013X"  # 1985-03-10
HUANG = "350102199007070159"  # 1990-07-07
ZHANG = "350102197509090177"  # 1975-09-09
WANG = "350102195906010194"  # 1959-06-01: 65 on 2025-01-01
LI = "350102198408080214"  # 1984-08-08: 40
ZHAO_17 = "350102200701020237"  # 2007-01-02: 17 on 2025-01-01, under 18
ZHAO_18 = "350102200701010258"  # 2007-01-01: 18 on 2025-01-01 (that very day)
ZHAO_18B = "350102200612310275"  # 2006-12-31: 18
QIAN_60 = "350102196501010297"  # 1965-01-01: 60 on 2025-01-01
QIAN_59 = "350102196501020313"  # 1965-01-02: 59
LIU_70 = "350102195412310330"  # 1954-12-31: 70
LIU_69 = "350102195501020351"  # 1955-01-02: 69
SUN = "350102195002020373"  # 1950-02-02: 74, 特困
ZHOU = "350102197001010391"  # 1970-01-01: 55, 低保
BABY = "350102202503010416"  # born 2025-03-01
WU = "350102198806060438"  # 1988-06-06
STUDENT = "350102200605050479"  # 2006-05-05: a new university student, insured in 2024
STUDENT_GAP = "350102200606060492"  # 2006-06-06: a new student without cover in 2024 (a gap year)
ZHENG = "350102199202020456"  # 1992-02-02


class Fujian:
    """The Fujian 2025 policy loaded from its file, the civil-affairs lists, a receipt block for
    staff_a; households are made through the API, and the walk goes through the services the
    routes call, on the day given."""

    def __init__(self, client: Client, conn: asyncpg.Connection[Any]) -> None:
        self.client, self.conn = client, conn
        self.households = 0
        self.receipts = 0

    async def household(self, *people: tuple[str, str]) -> tuple[UUID, list[UUID]]:
        self.households += 1
        staff = await auth_headers(self.client, "staff_a")
        members = [member(number, name, "head" if i == 0 else "sibling") for i, (number, name) in enumerate(people)]
        body = await create_household(self.client, staff, members, household_no=f"F{self.households:03d}")
        return UUID(body["id"]), [UUID(m["person_id"]) for m in body["members"]]

    async def enrol(
        self, household: UUID, persons: list[UUID], on: date, *, new_student: bool = False
    ) -> list[enrollments.Enrollment]:
        actor = await actor_of(self.conn, "staff_a")
        async with self.conn.transaction():
            data = EnrollmentCreate(
                household_id=household, coverage_year=2025, person_ids=persons, new_student=new_student
            )
            return (await enrollments.enrol(self.conn, actor, data, on, KEY)).items

    async def quote(self, household: UUID, on: date) -> quotes.PremiumQuote:
        actor = await actor_of(self.conn, "staff_a")
        return await quotes.premium_quote(self.conn, actor, household, 2025, on)

    async def pay(self, household: UUID, persons: list[UUID], amount_fen: int, on: date) -> None:
        self.receipts += 1
        collected = datetime.combine(on, time(2, 0), tzinfo=UTC)  # 10:00 in Fujian
        data = PaymentIn(
            id=uuid.uuid4(),
            household_id=household,
            coverage_year=2025,
            person_ids=persons,
            amount_fen=amount_fen,
            method="cash",
            receipt_no=f"F{self.receipts:08d}",
            collected_at=collected,
        )
        actor = await actor_of(self.conn, "staff_a")
        async with self.conn.transaction():
            await payments.record_payment(
                self.conn, actor, data, timezone=TZ, code_key=KEY, now=collected + timedelta(minutes=5)
            )

    async def cover(self, person: UUID) -> tuple[str, date | None, date | None, str | None, int | None, int]:
        row = await self.conn.fetchrow(
            "SELECT status, coverage_start, coverage_end, coverage_reason, waiting_months, subsidy_fen"
            " FROM enrollments WHERE person_id = $1 AND coverage_year = 2025",
            person,
        )
        assert row is not None
        return (
            row["status"],
            row["coverage_start"],
            row["coverage_end"],
            row["coverage_reason"],
            row["waiting_months"],
            row["subsidy_fen"],
        )

    async def walk(
        self, household: UUID, person: UUID, on: date
    ) -> tuple[quotes.MemberQuote, tuple[str, date | None, date | None, str | None, int | None, int]]:
        """Registered, quoted and paid what is due, all on `on`: the quote and the cover paid."""
        await self.enrol(household, [person], on)
        (quoted,) = (await self.quote(household, on)).members
        await self.pay(household, [person], quoted.due_fen, on)
        return quoted, await self.cover(person)


@pytest.fixture
async def fujian(client: Client, conn: asyncpg.Connection[Any]) -> Fujian:
    async with conn.transaction():
        loaded = await policy.load_document(conn, policy.parse_document(FILE.read_bytes()))
    assert (loaded.coverage_year, loaded.version, loaded.premium_fen) == (2025, 1, 40000)
    civil = await auth_headers(client, "civil")
    for list_type, numbers in (
        ("di_bao_bianyuan", [WANG, LI, ZHAO_17, ZHAO_18, ZHAO_18B, QIAN_60, QIAN_59]),
        ("te_kun", [SUN]),
        ("di_bao", [ZHOU]),
    ):
        rows = [f"{n},某人,," for n in numbers]
        loaded_list = await upload(client, civil, csv(*rows), list_type=list_type, effective_from="2024-09-01")
        assert loaded_list.status_code in (201, 202), loaded_list.text
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "F", "first_no": 1, "last_no": 100},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    # Covered in 2024 (the old system's rolls), except 张四, who was not (a gap year).
    for number in (LIN, CHEN, HUANG, WANG, WU, ZHENG):
        await add_history(conn, number, 2024)
    await add_history(conn, ZHANG, 2024, status="cancelled")
    return Fujian(client, conn)


async def test_the_window_the_extended_period_and_after_it(fujian: Fujian) -> None:
    # 林一 pays in the window: the whole year.
    household, (lin,) = await fujian.household((LIN, "林一"))
    quoted, cover = await fujian.walk(household, lin, date(2024, 11, 20))
    assert (quoted.due_fen, quoted.cover_reason_if_paid_today) == (40000, "in_window")
    assert quoted.cover_if_paid_today == "Paid today (2024-11-20), covered from 2025-01-01 to 2025-12-31."
    assert cover == ("paid", date(2025, 1, 1), date(2025, 12, 31), "in_window", 0, 0)

    # 陈二, insured in 2024, pays on 2025-02-10, in the extended period: covered from that day.
    household, (chen,) = await fujian.household((CHEN, "陈二"))
    quoted, cover = await fujian.walk(household, chen, date(2025, 2, 10))
    assert (quoted.cover_reason_if_paid_today, quoted.cover_start_if_paid_today) == (
        "extended_period",
        date(2025, 2, 10),
    )
    assert cover == ("paid", date(2025, 2, 10), date(2025, 12, 31), "extended_period", 0, 0)
    facts = await fujian.conn.fetchval("SELECT coverage_facts FROM enrollments WHERE person_id = $1", chen)
    assert (facts["rule"], facts["extended_end"], facts["late"]) == ("extended_period", "2025-02-28", True)
    enrolment = await fujian.conn.fetchrow("SELECT * FROM enrollments WHERE person_id = $1", chen)
    assert enrollments._enrollment(enrolment).coverage_note == (
        "Enrolled on 2025-02-10, in the extended payment period ending 2025-02-28: no waiting period; "
        "covered from 2025-02-10 to 2025-12-31."
    )

    # 吴某 pays on the extended period's last day; 郑某 the day after: the 3-month wait.
    household, (wu,) = await fujian.household((WU, "吴某"))
    _quoted, cover = await fujian.walk(household, wu, date(2025, 2, 28))
    assert cover == ("paid", date(2025, 2, 28), date(2025, 12, 31), "extended_period", 0, 0)
    household, (zheng,) = await fujian.household((ZHENG, "郑某"))
    _quoted, cover = await fujian.walk(household, zheng, date(2025, 3, 1))
    assert cover == ("paid", date(2025, 6, 1), date(2025, 12, 31), "waiting_period", 3, 0)

    # 黄三, insured in 2024, pays on 2025-03-15: after the extended period, 3 months' wait.
    household, (huang,) = await fujian.household((HUANG, "黄三"))
    quoted, cover = await fujian.walk(household, huang, date(2025, 3, 15))
    assert quoted.cover_if_paid_today == "Paid today (2025-03-15), covered from 2025-06-15 to 2025-12-31."
    assert cover == ("paid", date(2025, 6, 15), date(2025, 12, 31), "waiting_period", 3, 0)


async def test_a_gap_year_keeps_the_wait_inside_the_extended_period(fujian: Fujian) -> None:
    """张四 was not insured in 2024: paying on 2025-01-20, inside the extended period, he waits
    3 + 1 months (the extended period's cover from the day of payment is for the continuously
    insured)."""
    household, (zhang,) = await fujian.household((ZHANG, "张四"))
    quoted, cover = await fujian.walk(household, zhang, date(2025, 1, 20))
    assert (quoted.cover_reason_if_paid_today, quoted.cover_start_if_paid_today) == (
        "waiting_period",
        date(2025, 5, 20),
    )
    assert cover == ("paid", date(2025, 5, 20), date(2025, 12, 31), "waiting_period", 4, 0)


async def test_subsidies_that_depend_on_the_list_and_on_age(fujian: Fujian) -> None:
    # 王五, 低保边缘, 65 on 2025-01-01: 10000 fen off; pays 30000 in the window.
    household, (wang,) = await fujian.household((WANG, "王五"))
    quoted, cover = await fujian.walk(household, wang, date(2024, 12, 1))
    assert (quoted.subsidy_fen, quoted.due_fen) == (10000, 30000)
    assert cover == ("paid", date(2025, 1, 1), date(2025, 12, 31), "in_window", 0, 10000)

    # 李六, 低保边缘 but 40: no subsidy; the eligibility check says why.
    household, (li,) = await fujian.household((LI, "李六"))
    check = await fujian.client.post(
        "/api/v1/eligibility/check",
        json={"id_numbers": [LI], "coverage_year": 2025, "as_of": "2024-10-08"},
        headers=await auth_headers(fujian.client, "staff_a"),
    )
    assert check.status_code == 200, check.text
    assert check.json()["items"][0]["explanation"] == [
        "di_bao_bianyuan: list di_bao_bianyuan version 1 row 3",
        "di_bao_bianyuan not applied: aged 40 on 1 January 2025, an age the year's policy does not subsidise",
        "due 40000 fen of a premium of 40000 fen",
    ]
    (registered,) = await fujian.enrol(household, [li], date(2024, 10, 8))
    assert registered.subsidy_fen == 0
    (quoted,) = (await fujian.quote(household, date(2024, 10, 8))).members
    assert (quoted.subsidy_fen, quoted.due_fen) == (0, 40000)

    # The boundaries, ages on 2025-01-01: under 18 and 60 or over.
    household, people = await fujian.household(
        (ZHAO_17, "赵七"), (ZHAO_18, "赵八"), (ZHAO_18B, "赵九"), (QIAN_60, "钱十"), (QIAN_59, "钱十一")
    )
    registered_all = await fujian.enrol(household, people, date(2024, 9, 2))
    assert [e.subsidy_fen for e in registered_all] == [10000, 0, 0, 10000, 0]
    quote = await fujian.quote(household, date(2024, 9, 2))
    assert [(m.subsidy_fen, m.due_fen) for m in quote.members] == [
        (10000, 30000),  # born 2007-01-02: 17
        (0, 40000),  # born 2007-01-01: 18 that day
        (0, 40000),  # born 2006-12-31: 18
        (10000, 30000),  # born 1965-01-01: 60 that day
        (0, 40000),  # born 1965-01-02: 59
    ]
    assert (quote.premium_fen, quote.subsidy_fen, quote.due_fen) == (200000, 20000, 180000)

    # Everyone aged 70 or over: 5000 fen off, whatever the lists say.
    household, (liu_70, liu_69) = await fujian.household((LIU_70, "刘十二"), (LIU_69, "刘十三"))
    await fujian.enrol(household, [liu_70, liu_69], date(2024, 9, 2))
    quote = await fujian.quote(household, date(2024, 9, 2))
    assert [(m.subsidy_fen, m.due_fen) for m in quote.members] == [(5000, 35000), (0, 40000)]

    # 孙某, 特困 and 74: the whole premium (the 70+ top-up adds nothing past the cap), subsidised
    # at registration in the window: covered the whole year without paying.
    household, (sun,) = await fujian.household((SUN, "孙某"))
    (registered,) = await fujian.enrol(household, [sun], date(2024, 10, 15))
    assert (registered.status, registered.subsidy_fen) == ("subsidised", 40000)
    assert await fujian.cover(sun) == ("subsidised", date(2025, 1, 1), date(2025, 12, 31), "in_window", 0, 40000)

    # 周某, 低保, 55: 20000 fen off.
    household, (zhou,) = await fujian.household((ZHOU, "周某"))
    quoted, cover = await fujian.walk(household, zhou, date(2024, 11, 5))
    assert (quoted.subsidy_fen, quoted.due_fen) == (20000, 20000)
    assert cover == ("paid", date(2025, 1, 1), date(2025, 12, 31), "in_window", 0, 20000)


async def test_the_tablet_computes_the_same_from_what_it_pulls(fujian: Fujian) -> None:
    """A tablet pulls the version's rules (`policy_version` rows: the stored document) and the
    person's birth date: the tablet's wire type reads the ages and the extended period, and
    `premium_due` gives what the server gave 王五 and the boundary household."""
    stored = await fujian.conn.fetchval("SELECT rules FROM policy_versions WHERE coverage_year = 2025")
    pulled = msgspec.convert(stored, TabletPolicyRules)
    assert pulled.extended_payment == ExtendedPeriod(start=date(2025, 1, 1), end=date(2025, 2, 28))
    subsidy = SubsidyPolicy(premium_fen=40000, categories=pulled.categories, top_ups=pulled.top_ups)
    due = [
        premium_due(subsidy, ["di_bao_bianyuan"], age=age_on_1_january(born, 2025)).due_fen
        for born in (date(1959, 6, 1), date(2007, 1, 2), date(2007, 1, 1), date(2006, 12, 31), date(1965, 1, 1))
    ]
    assert due == [30000, 30000, 40000, 40000, 30000]


async def test_a_newborn_is_covered_from_birth(fujian: Fujian) -> None:
    """Born 2025-03-01, enrolled and paid on 2025-04-10 (40 days): covered from birth, no wait."""
    household, (baby,) = await fujian.household((BABY, "宝宝"))
    quoted, cover = await fujian.walk(household, baby, date(2025, 4, 10))
    assert (quoted.cover_reason_if_paid_today, quoted.due_fen) == ("newborn", 40000)
    assert cover == ("paid", date(2025, 3, 1), date(2025, 12, 31), "newborn", 0, 0)


async def test_medical_assistance_and_discharged_soldiers_wait_for_nothing(fujian: Fujian) -> None:
    """The file's exempt groups (newborns, medical-assistance recipients, soldiers discharged in the
    year): 周某, on the 低保 list, pays on 2025-04-10, after the extended period, and is covered from
    that day; 黄三, discharged on 2025-06-20 (the 退役军人 list), pays on 2025-07-10: covered from
    that day; 郑某, on no list, paying the same day waits 3 months."""
    household, (zhou,) = await fujian.household((ZHOU, "周某"))
    quoted, cover = await fujian.walk(household, zhou, date(2025, 4, 10))
    assert (quoted.subsidy_fen, quoted.due_fen, quoted.cover_reason_if_paid_today) == (20000, 20000, "exempt")
    assert cover == ("paid", date(2025, 4, 10), date(2025, 12, 31), "exempt", 0, 20000)
    facts = await fujian.conn.fetchval("SELECT coverage_facts FROM enrollments WHERE person_id = $1", zhou)
    assert (facts["exemption"], facts["evidence"]["list_type"], facts["evidence"]["row"]) == (
        "medical_assistance",
        "di_bao",
        2,  # the file's row: the header is row 1
    )

    civil = await auth_headers(fujian.client, "civil")
    veterans = await upload(
        fujian.client, civil, csv(f"{HUANG},黄三,2025-06-20,"), list_type="tuiyi_junren", effective_from="2025-06-20"
    )
    assert veterans.status_code in (201, 202), veterans.text
    household, (huang,) = await fujian.household((HUANG, "黄三"))
    _quoted, cover = await fujian.walk(household, huang, date(2025, 7, 10))
    assert cover == ("paid", date(2025, 7, 10), date(2025, 12, 31), "exempt", 0, 0)

    household, (zheng,) = await fujian.household((ZHENG, "郑某"))
    _quoted, cover = await fujian.walk(household, zheng, date(2025, 7, 10))
    assert cover == ("paid", date(2025, 10, 10), date(2025, 12, 31), "waiting_period", 3, 0)


async def test_the_serious_illness_ceiling_rises_after_four_continuous_years(fujian: Fujian) -> None:
    """3,000 yuan per continuous year after four (the file's original ceiling, 400,000 yuan, is
    illustrative): 林一, insured 2021–2024 and paying for 2025, has 5 years: 403,000 yuan; 陈二,
    insured in 2024 only, 2 years: 400,000 yuan."""
    for year in (2021, 2022, 2023):
        await add_history(fujian.conn, LIN, year)
    household, (lin, chen) = await fujian.household((LIN, "林一"), (CHEN, "陈二"))
    await fujian.enrol(household, [lin, chen], date(2024, 11, 20))
    await fujian.pay(household, [lin, chen], 80000, date(2024, 11, 20))
    found = await continuity.ceilings(fujian.conn, [lin, chen], 2025, date(2025, 3, 1))
    assert (found[lin].ceiling_fen, found[lin].continuous_years, found[lin].raise_fen) == (40_300_000, 5, 300_000)
    assert (found[chen].ceiling_fen, found[chen].continuous_years, found[chen].raise_fen) == (40_000_000, 2, 0)


def test_canbao_policy_load_publishes_the_file_and_refuses_a_bad_one_naming_the_field(
    db_dsn: str, tmp_path: Path
) -> None:
    env = env_for(db_dsn)
    checked = run_cli("policy", "load", "--check", str(FILE), env=env)
    assert (checked.returncode, checked.stdout.strip()) == (0, "2025 policy file is valid; nothing written")
    loaded = run_cli("policy", "load", str(FILE), env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "published the 2025 policy as version 1, in force from 2024-09-01"

    bad = tmp_path / "bad.json"
    bad.write_text(FILE.read_text(encoding="utf-8").replace('"2025-01-01"', '"2024-12-31"'), encoding="utf-8")
    refused = run_cli("policy", "load", str(bad), env=env_for(db_dsn, LANG="zh_CN.UTF-8"))
    assert refused.returncode == 1
    assert refused.stderr.strip() == "错误：rules.extended_payment.start: 须晚于 window_end；未写入任何数据"


async def test_the_api_refuses_bad_ages_and_extended_periods_naming_the_field(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    body: dict[str, Any] = {
        "effective_from": "2024-09-01",
        "premium_fen": 40000,
        "window_start": "2024-09-01",
        "window_end": "2024-12-31",
    }
    cases = [
        (
            {"categories": [{"category": "x", "rule": {"type": "full"}, "ages": [{"from_age": -1}]}]},
            "rules.categories[0].ages[0].from_age",
        ),
        (
            {"categories": [{"category": "x", "rule": {"type": "full"}, "ages": [{"from_age": 60, "below_age": 18}]}]},
            "rules.categories[0].ages[0]",
        ),
        ({"top_ups": [{"code": "old", "rule": {"type": "full"}, "ages": [{}]}]}, "rules.top_ups[0].ages[0]"),
        ({"extended_payment": {"start": "2025-03-01", "end": "2025-02-28"}}, "rules.extended_payment.end"),
        ({"extended_payment": {"start": "2025-01-01", "end": "2026-01-31"}}, "rules.extended_payment.end"),
    ]
    for rules, field in cases:
        response = await client.post("/api/v1/policy-years/2025/versions", json={**body, "rules": rules}, headers=admin)
        assert response.status_code in (400, 422), response.text
        assert [e["field"] for e in response.json()["errors"]] == [field], response.text
    assert (await client.get("/api/v1/policy-years/2025", headers=admin)).status_code == 404


async def test_a_new_university_student_is_covered_from_1_september_of_the_window_year(fujian: Fujian) -> None:
    # 许同学, insured in 2024 (continuously), registered at the school as a new student on
    # 2024-10-15 and paying the same day for 2025: covered 2024-09-01 … 2025-12-31 (16 months).
    await add_history(fujian.conn, STUDENT, 2024)
    household, (student,) = await fujian.household((STUDENT, "许同学"))
    (enrolled,) = await fujian.enrol(household, [student], date(2024, 10, 15), new_student=True)
    assert enrolled.new_student is True
    (quoted,) = (await fujian.quote(household, date(2024, 10, 15))).members
    assert (quoted.due_fen, quoted.cover_reason_if_paid_today, quoted.cover_start_if_paid_today) == (
        40000,
        "new_student",
        date(2024, 9, 1),
    )
    await fujian.pay(household, [student], 40000, date(2024, 10, 15))
    assert await fujian.cover(student) == ("paid", date(2024, 9, 1), date(2025, 12, 31), "new_student", 0, 0)
    row = await fujian.conn.fetchrow("SELECT * FROM enrollments WHERE person_id = $1", student)
    assert enrollments._enrollment(row).coverage_note == (
        "Enrolled on 2024-10-15 as a new university student, in the enrolment window from 2024-09-01 to "
        "2024-12-31, without a gap: covered from the start of the school year; covered from 2024-09-01 to "
        "2025-12-31."
    )
    # 2025 counts as a year of cover for continuity, like anyone's: 2024 (history) and 2025.
    runs = await continuity.continuity_of(fujian.conn, [student], 2025, date(2024, 10, 15))
    assert runs[student].years == 2

    # 何同学 had no cover in 2024: not continuously insured, so the student rule does not apply;
    # paying in the window after a gap year waits 3 + 1 months from 1 January.
    await add_history(fujian.conn, STUDENT_GAP, 2024, status="cancelled")
    household, (gap,) = await fujian.household((STUDENT_GAP, "何同学"))
    await fujian.enrol(household, [gap], date(2024, 10, 15), new_student=True)
    (quoted,) = (await fujian.quote(household, date(2024, 10, 15))).members
    assert (quoted.cover_reason_if_paid_today, quoted.cover_start_if_paid_today) == ("waiting_period", date(2025, 5, 1))
    await fujian.pay(household, [gap], 40000, date(2024, 10, 15))
    assert await fujian.cover(gap) == ("paid", date(2025, 5, 1), date(2025, 12, 31), "waiting_period", 4, 0)
    row = await fujian.conn.fetchrow("SELECT * FROM enrollments WHERE person_id = $1", gap)
    assert enrollments._enrollment(row).coverage_note == (
        "Enrolled on 2024-10-15, after 1 year without cover; waiting period of 4 months: 3 fixed + 1 for the gap "
        "(enrolled as a new university student, but the student rule needs payment in the window without a gap); "
        "waiting until 2025-04-30, covered from 2025-05-01 to 2025-12-31."
    )


async def test_a_new_student_paying_after_the_window_gets_the_rules_anyone_gets(fujian: Fujian) -> None:
    # Insured in 2024, registered as a new student but paying on 2025-01-10 (the extended period):
    # covered from the day of payment, not from 2024-09-01.
    await add_history(fujian.conn, STUDENT, 2024)
    household, (student,) = await fujian.household((STUDENT, "许同学"))
    await fujian.enrol(household, [student], date(2025, 1, 10), new_student=True)
    await fujian.pay(household, [student], 40000, date(2025, 1, 10))
    assert await fujian.cover(student) == ("paid", date(2025, 1, 10), date(2025, 12, 31), "extended_period", 0, 0)


async def test_the_school_registers_its_new_students_through_the_api(fujian: Fujian) -> None:
    household, (student,) = await fujian.household((STUDENT, "许同学"))
    staff = await auth_headers(fujian.client, "staff_a")
    body = {"household_id": str(household), "coverage_year": 2025, "person_ids": [str(student)], "new_student": True}
    response = await fujian.client.post("/api/v1/enrollments", json=body, headers=staff)
    assert response.status_code == 201, response.text
    (item,) = response.json()["items"]
    assert (item["new_student"], item["status"]) == (True, "registered")


async def test_on_a_day_in_2024_the_student_is_covered_by_the_2025_enrolment(fujian: Fujian) -> None:
    # Insured in 2024 at home in another city: nothing here knows that year, which is not a gap
    # (the enrolment lists it for the reviewer); no 2024 cover here either.
    household, (student,) = await fujian.household((STUDENT, "许同学"))
    await fujian.enrol(household, [student], date(2024, 10, 15), new_student=True)
    await fujian.pay(household, [student], 40000, date(2024, 10, 15))
    row = await fujian.conn.fetchrow("SELECT * FROM enrollments WHERE person_id = $1", student)
    assert (row["coverage_reason"], enrollments._enrollment(row).unknown_years) == ("new_student", [2024])

    # A hospital asks on 2024-10-20: no 2024 enrolment here, but the 2025 one covers the day.
    partner = await register_partner(fujian.client)
    headers = {**await partner_headers(fujian.client, partner), **FHIR_JSON}
    body = msgspec.json.encode(request_for(STUDENT, "2024-10-20"))
    answer = (await fujian.client.post(ELIGIBILITY, content=body, headers=headers)).json()
    assert state_of(answer) == (True, "in_force", None)
    assert answer["insurance"][0]["benefitPeriod"] == {"start": "2024-09-01", "end": "2025-12-31"}
    # On 2024-08-31, before it: nothing in force.
    body = msgspec.json.encode(request_for(STUDENT, "2024-08-31"))
    answer = (await fujian.client.post(ELIGIBILITY, content=body, headers=headers)).json()
    assert state_of(answer)[0] is False

    # The resident's view of 2024 on 2024-10-20 says the same; its view of 2025 gives the dates.
    resident = Actor.resident(student, household)
    seen = await resident_service.coverage(fujian.conn, resident, 2024, date(2024, 10, 20))
    (me,) = seen.members
    assert (me.in_force_today, me.in_force_by_year, me.coverage_state) == (True, 2025, "not_enrolled")
    assert me.explanation == (
        "Not enrolled for 2024. Covered today by the enrolment for 2025, from 2024-09-01 to 2025-12-31."
    )
    (me,) = (await resident_service.coverage(fujian.conn, resident, 2025, date(2024, 10, 20))).members
    assert (me.in_force_today, me.coverage_start, me.coverage_end, me.coverage_reason_code) == (
        True,
        date(2024, 9, 1),
        date(2025, 12, 31),
        "new_student",
    )
    assert me.in_force_by_year is None
