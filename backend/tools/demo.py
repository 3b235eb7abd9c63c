"""`canbao demo seed`: one district, two townships, villages, one user per role (`seed`), and a
realistic population of households with last year's and this year's enrolments (`seed_population`).

Both are idempotent: running them again changes nothing.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import msgspec

from backend import crypto
from backend.actor import Actor, Role, Scope
from backend.admin import service as admin
from backend.audit.service import record
from backend.auth.passwords import Passwords
from backend.db import Connection, load_queries
from backend.divisions import service as divisions
from backend.divisions.service import Division
from backend.enrollment.enrollments import household_query_code
from backend.policy import service as policies
from mobile_sync_protocol.query_codes import derive_query_code, query_code_hash
from mobile_sync_protocol.rules.coverage import decide_coverage
from mobile_sync_protocol.rules.identity import check_character
from mobile_sync_protocol.rules.premium import CategorySubsidy, FixedSubsidy, FullSubsidy, PercentSubsidy, premium_due

if TYPE_CHECKING:
    from faker import Faker

Q = load_queries("backend.tools", "demo.sql")

DEMO_PASSWORD = "canbao-demo-2026"  # noqa: S105 (demo data only; printed by the command)

DISTRICT = "330106000000"
TOWNSHIP_A = "330106001000"
TOWNSHIP_B = "330106002000"

DIVISIONS = [
    ("330000000000", None, "province", "浙江省"),
    ("330100000000", "330000000000", "city", "杭州市"),
    (DISTRICT, "330100000000", "district", "西湖区"),
    (TOWNSHIP_A, DISTRICT, "township", "北山街道"),
    (TOWNSHIP_B, DISTRICT, "township", "双浦镇"),
    ("330106001001", TOWNSHIP_A, "village", "北山社区"),
    ("330106001002", TOWNSHIP_A, "village", "曙光社区"),
    ("330106001201", TOWNSHIP_A, "village", "玉泉村"),
    ("330106002201", TOWNSHIP_B, "village", "双浦村"),
    ("330106002202", TOWNSHIP_B, "village", "袁浦村"),
    ("330106002203", TOWNSHIP_B, "village", "周浦村"),
]

USERS = [
    ("admin", Role.DISTRICT_ADMIN, DISTRICT, "区医保局管理员"),
    ("civil", Role.CIVIL_AFFAIRS, DISTRICT, "区民政局"),
    ("staff_a", Role.TOWNSHIP_STAFF, TOWNSHIP_A, "北山街道经办员"),
    ("reviewer_a", Role.TOWNSHIP_REVIEWER, TOWNSHIP_A, "北山街道审核员"),
    ("staff_b", Role.TOWNSHIP_STAFF, TOWNSHIP_B, "双浦镇经办员"),
    ("reviewer_b", Role.TOWNSHIP_REVIEWER, TOWNSHIP_B, "双浦镇审核员"),
]


class SeededUser(msgspec.Struct, frozen=True):
    username: str
    role: str
    division_code: str
    created: bool


async def seed(conn: Connection, passwords: Passwords) -> list[SeededUser]:
    async with conn.transaction():
        await divisions.import_divisions(
            conn,
            None,
            [Division(code=c, parent_code=p, level=lvl, name=n) for c, p, lvl, n in DIVISIONS],  # type: ignore[arg-type]
        )
        seeded = []
        for username, role, division_code, full_name in USERS:
            exists = await admin.get_user_by_username(conn, username) is not None
            if not exists:
                await admin.create_user(
                    conn,
                    None,
                    passwords,
                    admin.UserCreate(
                        username=username,
                        password=DEMO_PASSWORD,
                        role=role,
                        division_code=division_code,
                        full_name=full_name,
                    ),
                )
            seeded.append(SeededUser(username, role.value, division_code, created=not exists))
        return seeded


# The demo population ------------------------------------------------------------------------------

POPULATION_SEED = 20_260_101  # Faker and the dice: the same district every time
REFERENCE_DATE = date(2025, 8, 31)  # ages as of the eve of the 2026 enrolment window; nobody born later
PREMIUM_FEN = 40000
HISTORY_SOURCE = "demo: 2025 export of the old system"

# Households per village: the two communities (社区) are the larger ones. 3,000 in all.
VILLAGE_HOUSEHOLDS = {
    "330106001001": 620,
    "330106001002": 540,
    "330106001201": 450,
    "330106002201": 500,
    "330106002202": 470,
    "330106002203": 420,
}
# 北山街道 piloted Canbao in the 2025 campaign: its 2025 enrolments are records of ours. 双浦镇
# went live for 2026: its 2025 enrolments are rows of the old system's export (enrollment_history).
PILOT_TOWNSHIP = TOWNSHIP_A
PILOT_VILLAGE = "330106001001"  # 北山社区: where the demo's resident lives

# Subsidy categories, by the codes of the civil-affairs lists (backend.eligibility).
CATEGORIES = (
    CategorySubsidy(category="te_kun", rule=FullSubsidy()),  # 特困供养人员
    CategorySubsidy(category="gu_er", rule=FullSubsidy()),  # 孤儿
    CategorySubsidy(category="di_bao", rule=FullSubsidy()),  # 低保对象
    CategorySubsidy(category="zhongdu_canji", rule=FixedSubsidy(amount_fen=30000)),  # 重度残疾人
    CategorySubsidy(category="di_bao_bianyuan", rule=PercentSubsidy(basis_points=5000)),  # 低保边缘
)
# Share of residents in each category (a person holds at most one here).
CATEGORY_SHARES = (
    ("te_kun", 0.006),
    ("gu_er", 0.001),
    ("di_bao", 0.02),
    ("zhongdu_canji", 0.01),
    ("di_bao_bianyuan", 0.02),
)

# Where residents were born (the ID number's area code): mostly here, some elsewhere in Zhejiang
# (the first row), some from other provinces (the second). Area codes are not checked against
# today's list: old ones stay valid.
BIRTH_AREAS = (
    ("330106", 70), ("330102", 6), ("330105", 5), ("330127", 4), ("330182", 4),
    ("341221", 4), ("362330", 3), ("511324", 2), ("412726", 2),
)  # fmt: skip

# Kinds of household and how common each is.
HOUSEHOLD_KINDS = (
    ("single_elder", 8),
    ("single", 5),
    ("elder_couple", 14),
    ("young_couple", 6),
    ("nuclear", 38),
    ("with_parents", 15),
    ("with_grandchildren", 14),
)


class PopulationSummary(msgspec.Struct, frozen=True, kw_only=True):
    created: bool  # False: the demo villages already had households, nothing was written
    households: int
    persons: int
    enrollments: dict[int, dict[str, int]]  # coverage year → status → count
    history_rows: int  # rows of the old system's export that belong to residents


class _Person(NamedTuple):
    relation: str
    sex: str
    age: int
    surname: str


class _Enrollment(NamedTuple):
    status: str
    funding: str | None
    registered_on: date
    business_date: date | None
    subsidy_fen: int
    cancelled: bool


async def seed_population(conn: Connection) -> PopulationSummary:
    """A few thousand households in the six demo villages, with valid ID numbers that agree with
    each member's birth date and sex, the 2025 and 2026 policies, last year's enrolments (records
    of ours in the pilot township, the old system's history elsewhere) and this year's in every
    state. Written in bulk (COPY); skipped when the villages already have households."""
    villages = list(VILLAGE_HOUSEHOLDS)
    if await conn.fetchval(Q["demo_households_exist"], villages):
        return await _summary(conn, created=False)
    async with conn.transaction():
        users = {u: await admin.get_user_by_username(conn, u) for u, *_ in USERS}
        if any(row is None for row in users.values()):
            raise RuntimeError("seed the demo district and its users first")
        user_ids: dict[str, UUID] = {u: row.id for u, row in users.items() if row is not None}
        district_admin = Actor(
            kind="user", id=user_ids["admin"], role=Role.DISTRICT_ADMIN, scope=Scope(DISTRICT, "district")
        )
        policy_2025 = await _policy(conn, district_admin, 2025)
        policy_2026 = await _policy(conn, district_admin, 2026)
        tables = _Population(user_ids, {2025: policy_2025, 2026: policy_2026}).build()
        for table, (columns, records) in tables.items():
            sealed_columns, sealed_records = _sealed(columns, records)
            await conn.copy_records_to_table(table, columns=sealed_columns, records=sealed_records)
        summary = await _summary(conn, created=True)
        await record(
            conn,
            None,
            "seed",
            "demo_population",
            None,
            division_code=DISTRICT,
            summary={
                "households": summary.households,
                "persons": summary.persons,
                "enrollments": sum(sum(s.values()) for s in summary.enrollments.values()),
                "history_rows": summary.history_rows,
            },
        )
        return summary


class DemoResident(NamedTuple):
    id_number: str
    name: str
    query_code: str
    year: int


async def demo_resident(conn: Connection, key: bytes, year: int) -> DemoResident | None:
    """A resident of the pilot township who can log in to the residents' page (/r/): the head of a
    household with a funded enrolment for `year`, and the household's query code (the code the
    server derives with `key`, stored as an enrolment made here stores it when the household has
    none). None: no such household."""
    row = await conn.fetchrow(Q["demo_resident"], PILOT_VILLAGE, year)
    if row is None:
        return None
    household_id = row["household_id"]
    derived = derive_query_code(key, household_id, year)
    await conn.execute(Q["demo_resident_code"], household_id, year, query_code_hash(key, household_id, year, derived))
    code = await household_query_code(conn, key, household_id, year)
    number = crypto.keys().open(crypto.ID_NUMBER, row["id_number_enc"])
    if code is None or number is None:
        return None
    return DemoResident(id_number=number, name=row["name"], query_code=code, year=year)


async def _policy(conn: Connection, actor: Actor, year: int) -> policies.PolicyVersion:
    """The year's policy in force at the start of its window: the one published, else ours."""
    window_start = date(year - 1, 9, 1)
    existing = await policies.in_force(conn, year, window_start)
    if existing is not None:
        return existing
    data = policies.PolicyIn(
        effective_from=window_start,
        premium_fen=PREMIUM_FEN,
        window_start=window_start,
        window_end=date(year - 1, 12, 31),
        rules=policies.PolicyRules(categories=CATEGORIES, benefits=BENEFITS),
        note=f"{year} policy (demo)",
    )
    return await policies.create_version(conn, actor, year, data)


# Illustrative benefit facts for the residents' page (each pooling area publishes its own).
BENEFITS = policies.Benefits(
    levels=[
        policies.LevelBenefit(level="township", deductible_fen=10000, reimbursement_basis_points=9000),
        policies.LevelBenefit(level="county", deductible_fen=50000, reimbursement_basis_points=7500),
        policies.LevelBenefit(level="above_county", deductible_fen=100000, reimbursement_basis_points=6000),
    ],
    annual_ceiling_fen=20_000_000,
)


async def _summary(conn: Connection, *, created: bool) -> PopulationSummary:
    villages = list(VILLAGE_HOUSEHOLDS)
    counts = await conn.fetchrow(Q["population_counts"], villages)
    assert counts is not None
    by_year: dict[int, dict[str, int]] = {}
    for r in await conn.fetch(Q["enrollments_by_year_and_status"], villages):
        by_year.setdefault(r["coverage_year"], {})[r["status"]] = r["n"]
    return PopulationSummary(
        created=created,
        households=counts["households"],
        persons=counts["persons"],
        enrollments=by_year,
        history_rows=await conn.fetchval(Q["history_rows_of_residents"], villages),
    )


def _office_hours_utc(day: date, rng: random.Random) -> datetime:
    """A moment of office hours (09:00–17:00 in Asia/Shanghai, UTC+8) on `day`, in UTC."""
    return datetime.combine(day, time(1), UTC) + timedelta(minutes=rng.randrange(8 * 60))


# Columns the population holds in clear, stored as a blind index and a sealed value (backend/crypto.py).
SEALED_COLUMNS = {"id_number": crypto.ID_NUMBER, "phone": crypto.PHONE}


def _sealed(columns: tuple[str, ...], records: list[tuple[Any, ...]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The population's rows as stored: each clear number becomes its `_hash` and `_enc` columns.
    Sealing happens here, at the copy, so that the population itself stays the same run after run."""
    sealed = [(i, SEALED_COLUMNS[c]) for i, c in enumerate(columns) if c in SEALED_COLUMNS]
    if not sealed:
        return list(columns), records
    keyring = crypto.keys()
    names = [c for c in columns if c not in SEALED_COLUMNS]
    names += [f"{columns[i]}_{suffix}" for i, _ in sealed for suffix in ("hash", "enc")]
    out = []
    for clear in records:
        row = [v for i, v in enumerate(clear) if columns[i] not in SEALED_COLUMNS]
        for i, kind in sealed:
            row += [keyring.index(kind, clear[i]), keyring.seal(kind, clear[i])]
        out.append(tuple(row))
    return names, out


class _Population:
    """Builds every row in memory, deterministically, as records for COPY."""

    def __init__(self, user_ids: dict[str, UUID], policies_by_year: dict[int, policies.PolicyVersion]) -> None:
        # Faker loads its locale providers on import: only when a population is built.
        from faker import Faker  # noqa: PLC0415
        from faker.providers.person.zh_CN import Provider as ZhPerson  # noqa: PLC0415

        # Demo data, meant to repeat (S311). Names have dice of their own, so that who lives where
        # and enrols when stays the same whatever Faker's name lists hold in its next version.
        self.rng = random.Random(POPULATION_SEED)  # noqa: S311
        self.name_rng = random.Random(POPULATION_SEED + 1)  # noqa: S311
        self.fake: Faker = Faker("zh_CN")
        self.fake.seed_instance(POPULATION_SEED)
        self.users = user_ids
        self.policies = policies_by_year
        self.id_numbers: set[str] = set()
        self.id_counter = 0
        self.rows: dict[str, list[tuple[Any, ...]]] = {
            "persons": [],
            "households": [],
            "memberships": [],
            "enrollments": [],
            "enrollment_history": [],
        }
        self.names = {d[0]: d[3] for d in DIVISIONS}
        # Faker's zh_CN given names, one character at a time (its two-character ones are whole
        # names, some filed under the wrong sex); surnames are Faker's, weighted by frequency.
        self.male_characters = sorted({n for n in ZhPerson.first_names_male if len(n) == 1})
        self.female_characters = sorted({n for n in ZhPerson.first_names_female if len(n) == 1})

    COLUMNS = {
        "persons": ("id", "id_number", "name", "sex", "birth_date", "phone"),
        "households": ("id", "village_code", "household_no", "address", "phone", "head_person_id", "created_by"),
        "memberships": ("id", "person_id", "household_id", "relation"),
        "enrollments": (
            "id",
            "person_id",
            "household_id",
            "village_code",
            "coverage_year",
            "status",
            "funding",
            "source",
            "policy_version_id",
            "registered_at",
            "registered_on",
            "business_date",
            "premium_fen",
            "subsidy_fen",
            "coverage_start",
            "coverage_end",
            "coverage_reason",
            "coverage_note",
            "coverage_facts",
            "waiting_months",
            "confirmed_at",
            "confirmed_by",
            "cancelled_at",
            "cancelled_by",
            "cancel_reason",
            "cancel_note",
        ),
        "enrollment_history": ("id_number", "coverage_year", "status", "source_file"),
    }

    def build(self) -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
        for village, count in VILLAGE_HOUSEHOLDS.items():
            for number in range(1, count + 1):
                self.household(village, number)
        # Persons before the households that name their heads, memberships and enrolments after.
        return {table: (self.COLUMNS[table], self.rows[table]) for table in self.COLUMNS}

    # People --------------------------------------------------------------------------------------

    def new_id(self) -> UUID:
        """UUIDv7-shaped and time-ordered, from a fixed clock and the seeded dice."""
        self.id_counter += 1
        ms = int(datetime.combine(REFERENCE_DATE, time(), UTC).timestamp() * 1000) + self.id_counter
        value = ms << 80 | self.rng.getrandbits(80)
        value = (value & ~(0xF << 76)) | (0x7 << 76)
        value = (value & ~(0x3 << 62)) | (0x2 << 62)
        return UUID(int=value)

    def birth_date(self, age: int) -> date:
        return REFERENCE_DATE - timedelta(days=age * 365 + self.rng.randrange(365))

    def id_number(self, birth: date, sex: str) -> str:
        areas, weights = zip(*BIRTH_AREAS, strict=True)
        while True:
            sex_digit = self.rng.choice("13579" if sex == "male" else "02468")
            first_17 = f"{self.rng.choices(areas, weights)[0]}{birth:%Y%m%d}{self.rng.randrange(100):02d}{sex_digit}"
            number = first_17 + check_character(first_17)
            if number not in self.id_numbers:
                self.id_numbers.add(number)
                return number

    def given_name(self, sex: str) -> str:
        """One or two characters: most given names today have two."""
        pool = self.male_characters if sex == "male" else self.female_characters
        first = self.name_rng.choice(pool)
        if self.name_rng.random() < 0.35:
            return first
        return first + self.name_rng.choice([c for c in pool if c != first])

    def members(self) -> list[_Person]:
        """Who lives together: relations to the head, sexes, ages and surnames that fit."""
        rng = self.rng
        kind = rng.choices([k for k, _ in HOUSEHOLD_KINDS], [w for _, w in HOUSEHOLD_KINDS])[0]
        surname = self.fake.last_name
        if kind == "single_elder":
            return [_Person("head", rng.choice(("female", "female", "male")), rng.randint(62, 92), surname())]
        if kind == "single":
            return [_Person("head", rng.choice(("female", "male")), rng.randint(22, 60), surname())]
        head_sex = "male" if rng.random() < 0.82 else "female"
        head_age = {
            "elder_couple": (60, 86),
            "young_couple": (23, 34),
            "nuclear": (27, 52),
            "with_parents": (28, 46),
            "with_grandchildren": (52, 70),
        }[kind]
        age = rng.randint(*head_age)
        spouse_age = max(20, age + (rng.randint(-6, 2) if head_sex == "male" else rng.randint(-2, 6)))
        head = _Person("head", head_sex, age, surname())
        spouse = _Person("spouse", _other(head_sex), spouse_age, surname())
        family = head.surname if head_sex == "male" else spouse.surname  # children take the father's
        mother_age = age if head_sex == "female" else spouse_age
        people = [head, spouse]
        if kind in {"nuclear", "with_parents"}:
            for _ in range(rng.choices((1, 2, 3), (55, 40, 5))[0]):
                child_age = mother_age - rng.randint(21, 38)
                if child_age >= 0:
                    people.append(_Person("child", rng.choice(("male", "female")), child_age, family))
        if kind == "nuclear" and rng.random() < 0.05:
            people.append(
                _Person("sibling", rng.choice(("male", "female")), max(18, age + rng.randint(-8, 8)), head.surname)
            )
        if kind == "with_parents":
            father_age = age + rng.randint(24, 34)
            if rng.random() < 0.7:
                people.append(_Person("parent", "male", min(father_age, 96), head.surname))
            people.append(_Person("parent", "female", min(father_age - rng.randint(0, 5), 96), surname()))
            if age <= 34 and rng.random() < 0.15:
                people.append(_Person("grandparent", "female", min(father_age + rng.randint(22, 30), 98), surname()))
        if kind == "with_grandchildren":
            son_age = mother_age - rng.randint(22, 32)
            if son_age >= 22:
                in_law_age = max(20, son_age + rng.randint(-4, 2))
                people.append(_Person("child", "male", son_age, family))
                people.append(_Person("child_in_law", "female", in_law_age, surname()))
                for _ in range(rng.choices((1, 2), (65, 35))[0]):
                    grandchild_age = in_law_age - rng.randint(22, 34)
                    if grandchild_age >= 0:
                        people.append(_Person("grandchild", rng.choice(("male", "female")), grandchild_age, family))
        return people[:6]

    def address(self, village: str) -> str:
        name = self.names[village]
        if name.endswith("社区"):
            building, unit, floor, door = (self.rng.randint(1, n) for n in (40, 4, 18, 4))
            return f"{name}{building}幢{unit}单元{floor}0{door}室"
        return f"{name}{self.rng.randint(1, 12)}组{self.rng.randint(1, 160)}号"

    # A household, its members and their enrolments ------------------------------------------------

    def household(self, village: str, number: int) -> None:
        rng = self.rng
        household_id = self.new_id()
        township = village[:9] + "000"
        staff, reviewer = ("staff_a", "reviewer_a") if township == TOWNSHIP_A else ("staff_b", "reviewer_b")
        people = []
        for person in self.members():
            birth = self.birth_date(person.age)
            phone = self.fake.phone_number() if 18 <= person.age <= 75 and rng.random() < 0.75 else None
            person_id = self.new_id()
            number_ = self.id_number(birth, person.sex)
            self.rows["persons"].append(
                (person_id, number_, person.surname + self.given_name(person.sex), person.sex, birth, phone)
            )
            self.rows["memberships"].append((self.new_id(), person_id, household_id, person.relation))
            categories = [c for c, share in CATEGORY_SHARES if rng.random() < share][:1]
            people.append((person_id, number_, birth, phone, categories))
        head_id, _, _, head_phone, _ = people[0]
        self.rows["households"].append(
            (household_id, village, f"{number:04d}", self.address(village), head_phone, head_id, self.users[staff])
        )
        covered_2025 = {}
        for person_id, number_, birth, _, categories in people:
            covered_2025[person_id] = self.last_year(
                household_id, village, person_id, number_, birth, categories, reviewer
            )
        self.this_year(household_id, village, people, covered_2025, staff, reviewer)

    def last_year(
        self,
        household_id: UUID,
        village: str,
        person_id: UUID,
        id_number: str,
        birth: date,
        categories: list[str],
        reviewer: str,
    ) -> bool:
        """2025: most residents were covered. Returns whether this one was."""
        rng = self.rng
        if rng.random() >= 0.9:
            return False
        subsidised = self.subsidy(2025, categories) == self.policies[2025].premium_fen
        if village[:9] + "000" != PILOT_TOWNSHIP:
            status = "subsidised" if subsidised else rng.choices(("confirmed", "paid", "cancelled"), (93, 5, 2))[0]
            self.rows["enrollment_history"].append((id_number, 2025, status, HISTORY_SOURCE))
            return status != "cancelled"
        if birth > date(2024, 8, 31):  # a newborn, registered within weeks of birth
            registered = birth + timedelta(days=rng.randint(7, 80))
            paid_on = registered
        else:
            registered = date(2024, 9, 2) + timedelta(days=rng.randrange(110))
            paid_on = registered + timedelta(days=rng.randrange(8))
        cancelled = rng.random() < 0.02
        self.enrollment(
            household_id,
            village,
            person_id,
            birth,
            2025,
            _Enrollment(
                status="cancelled" if cancelled else "confirmed",
                funding=None if cancelled else ("subsidised" if subsidised else "paid"),
                registered_on=registered,
                business_date=None if cancelled else (registered if subsidised else paid_on),
                subsidy_fen=0 if cancelled else self.subsidy(2025, categories),
                cancelled=cancelled,
            ),
            gap_years=0,
            reviewer=reviewer,
            staff=None,
        )
        return not cancelled

    def this_year(
        self,
        household_id: UUID,
        village: str,
        people: list[tuple[UUID, str, date, str | None, list[str]]],
        covered_2025: dict[UUID, bool],
        staff: str,
        reviewer: str,
    ) -> None:
        """2026: most households have enrolled; some wait to pay, some are paid, some confirmed."""
        rng = self.rng
        if rng.random() >= (0.72 if any(covered_2025.values()) else 0.3):
            return
        stage = rng.choices(("registered", "paid", "confirmed"), (22, 40, 38))[0]
        late = rng.random() < 0.08
        if late:  # after the window: a waiting period follows
            registered = date(2026, 1, 5) + timedelta(days=rng.randrange(170))
            paid_on = registered + timedelta(days=rng.randrange(6))
        else:
            registered = date(2025, 9, 1) + timedelta(days=rng.randrange(110))
            paid_on = min(registered + timedelta(days=rng.randrange(11)), date(2025, 12, 31))
        for person_id, _, birth, _, categories in people:
            if rng.random() >= 0.94:
                continue  # e.g. on employee insurance, or enrolled where they work
            subsidy = self.subsidy(2026, categories)
            subsidised = subsidy == self.policies[2026].premium_fen
            cancelled = rng.random() < 0.02
            if cancelled:
                status, funding, business = "cancelled", None, None
            elif subsidised:  # nothing to pay: funded at registration
                status, funding, business = (
                    ("confirmed" if stage == "confirmed" else "subsidised"),
                    "subsidised",
                    registered,
                )
            elif stage == "registered":
                status, funding, business = "registered", None, None
            else:
                status, funding, business = stage, "paid", paid_on
            gap = 0 if covered_2025[person_id] else 2026 - birth.year
            self.enrollment(
                household_id,
                village,
                person_id,
                birth,
                2026,
                _Enrollment(
                    status=status,
                    funding=funding,
                    registered_on=registered,
                    business_date=business,
                    subsidy_fen=subsidy if funding else 0,
                    cancelled=cancelled,
                ),
                gap_years=gap,
                reviewer=reviewer if status == "confirmed" else None,
                staff=staff,
            )

    def subsidy(self, year: int, categories: list[str]) -> int:
        return premium_due(self.policies[year].subsidy_policy(), categories).subsidy_fen

    def enrollment(
        self,
        household_id: UUID,
        village: str,
        person_id: UUID,
        birth: date,
        year: int,
        e: _Enrollment,
        *,
        gap_years: int,
        reviewer: str | None,
        staff: str | None,
    ) -> None:
        rng = self.rng
        policy = self.policies[year]
        decided = None
        if e.business_date is not None:
            # As a payment or a subsidy stores it: the cover, its English note and the facts a reader's
            # language puts into words (a resident's page, FHIR), not the note alone.
            decided = decide_coverage(
                coverage_year=year,
                business_date=e.business_date,
                window=policy.window,
                policy=policy.rules.waiting,
                birth_date=birth,
                gap_years=gap_years,
            )
        cover = decided.coverage if decided else None
        confirmed_at = confirmed_by = cancelled_at = cancelled_by = None
        if e.status == "confirmed":
            assert e.business_date is not None and reviewer is not None
            confirmed_at = _office_hours_utc(e.business_date + timedelta(days=rng.randint(2, 25)), rng)
            confirmed_by = self.users[reviewer]
        if e.cancelled:
            cancelled_at = _office_hours_utc(e.registered_on + timedelta(days=rng.randint(1, 30)), rng)
            cancelled_by = self.users[reviewer or staff or "admin"]
        self.rows["enrollments"].append(
            (
                self.new_id(),
                person_id,
                household_id,
                village,
                year,
                e.status,
                e.funding,
                "live",
                policy.id,
                _office_hours_utc(e.registered_on, rng),
                e.registered_on,
                e.business_date,
                policy.premium_fen,
                e.subsidy_fen,
                cover.start if cover else None,
                cover.end if cover else None,
                cover.reason_code if cover else None,
                cover.reason if cover else None,
                decided.facts if decided else None,
                cover.waiting_months if cover else None,
                confirmed_at,
                confirmed_by,
                cancelled_at,
                cancelled_by,
                rng.choice(("employee_insurance", "duplicate", "moved_away")) if e.cancelled else None,
                "" if e.cancelled else None,
            )
        )


def _other(sex: str) -> str:
    return "female" if sex == "male" else "male"
