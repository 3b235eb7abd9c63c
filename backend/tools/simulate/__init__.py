"""Simulated tablets working offline against the real server, and the invariants that must hold once
they have all synced: shared by `canbao simulate` and the randomized fault suite (docs/fault-suite.md).

A `World` holds the tablets (the reference client, each with its own SQLite store, behind a
`FaultyTransport`), the back office (REST as admin and township reviewers) and a database
connection for checking. `check_invariants` runs after `World.quiesce`.
"""

# ruff: noqa: S311 (simulation dice, not secrets)
from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
import httpx
import msgspec

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import QueueEntry, SyncClient, SyncFailed, TabletStore
from mobile_sync_protocol.faults import FaultyTransport
from mobile_sync_protocol.rules.identity import check_character

YEAR = 2026
PUSH = "/api/v1/sync/push"

WorkAction = Literal[
    "register", "edit_household", "edit_member_phone", "edit_member_identity", "make_head", "add_member",
    "move_member", "remove_member", "dissolve", "enrol", "pay", "cancel_enrolment", "void",
]  # fmt: skip
WORK_ACTIONS: tuple[WorkAction, ...] = (
    "register", "edit_household", "edit_member_phone", "edit_member_identity", "make_head", "add_member",
    "move_member", "remove_member", "dissolve", "enrol", "pay", "cancel_enrolment", "void",
)  # fmt: skip
# How often a day's work does each thing (`canbao simulate`); registrations are counted separately.
DAY_MIX: dict[WorkAction, int] = {
    "edit_household": 8, "edit_member_phone": 6, "edit_member_identity": 4, "make_head": 1, "add_member": 3,
    "move_member": 1, "remove_member": 2, "dissolve": 1, "enrol": 14, "pay": 14, "cancel_enrolment": 1, "void": 1,
}  # fmt: skip
DESCRIPTIVE = {"household": ("household_no", "address", "phone"), "member": ("phone",)}
IDENTITY = ("name", "relation", "id_number", "birth_date", "sex")
HELD_KINDS = frozenset({"stale_identity", "stale_membership", "update_after_remove", "member_moved",
                        "duplicate_household"})  # fmt: skip

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
# Given names, one or two characters each (a separator keeps the list on two lines).
GIVEN = tuple("伟|芳|娜|敏|静|丽|强|磊|军|洋|勇|艳|杰|娟|涛|明|超|秀英|桂英|建华|玉兰|"  # noqa: SIM905
              "志强|海燕|小红|国平|春梅|晓东|丽华|建国|秀兰".split("|"))  # fmt: skip


# Identities ---------------------------------------------------------------------------------------


class People:
    """Fresh, valid resident ID numbers (area codes 330190–330199, which the demo population does not
    use), never the same twice in one world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def name(self) -> str:
        return self.rng.choice(SURNAMES) + self.rng.choice(GIVEN)

    def uuid(self) -> UUID:
        """From the world's dice, so that a run is repeated exactly from its seed."""
        return UUID(int=self.rng.getrandbits(128), version=4)

    def birth_date(self, adult: bool) -> date:
        first, last = (date(1940, 1, 1), date(2004, 12, 31)) if adult else (date(2005, 1, 1), date(2024, 12, 31))
        return first + timedelta(days=self.rng.randrange((last - first).days))

    def id_number(self, born: date, sex: str) -> str:
        while True:
            order = self.rng.randrange(500) * 2 + (1 if sex == "male" else 0)  # odd: male
            first17 = f"33019{self.rng.randrange(10)}{born:%Y%m%d}{order:03d}"
            number = first17 + check_character(first17)
            if number not in self.used:
                self.used.add(number)
                return number

    def member(self, relation: m.Relation, *, adult: bool = True, sex: str | None = None) -> m.NewMember:
        sex = sex or self.rng.choice(("male", "female"))
        born = self.birth_date(adult)
        phone = self.phone() if adult and self.rng.random() < 0.6 else None
        return m.NewMember(person_id=self.uuid(), name=self.name(), relation=relation,
                           id_number=self.id_number(born, sex), phone=phone)  # fmt: skip

    def phone(self) -> str:
        return "1" + self.rng.choice("3578") + "".join(self.rng.choice("0123456789") for _ in range(9))


# A tablet's working view: its synced copy with its own queued work on top --------------------------


@dataclass
class Member:
    person_id: UUID
    name: str
    relation: str
    phone: str | None


@dataclass
class House:
    id: UUID
    village_code: str
    household_no: str
    address: str
    phone: str | None
    status: str
    seen_version: int  # the row_version the tablet last saw: the base of its edits
    members: dict[UUID, Member] = field(default_factory=dict)
    enrolled: set[UUID] = field(default_factory=set)  # live enrolments of the year
    paid: set[UUID] = field(default_factory=set)


@dataclass
class View:
    houses: dict[UUID, House] = field(default_factory=dict)
    payments: dict[UUID, datetime] = field(default_factory=dict)  # this tablet's, not voided


def build_view(store: TabletStore, device_id: UUID, year: int = YEAR) -> View:
    view = View()
    for hid, r in store.records("household").items():
        view.houses[hid] = House(id=hid, village_code=r["village_code"], household_no=r["household_no"],
                                 address=r["address"], phone=r["phone"], status=r["status"],
                                 seen_version=r["row_version"])  # fmt: skip
    relations = {r["person_id"]: r["relation"] for r in store.records("membership").values() if r["left_at"] is None}
    for pid, r in store.records("person").items():
        house = view.houses.get(UUID(r["household_id"])) if r["household_id"] else None
        if house is not None:
            house.members[pid] = Member(pid, r["name"], relations.get(str(pid), "other"), r["phone"])
    for r in store.records("enrollment").values():
        house = view.houses.get(UUID(r["household_id"]))
        person = UUID(r["person_id"])
        if house is None or r["coverage_year"] != year or r["status"] == "cancelled" or person not in house.members:
            continue
        house.enrolled.add(person)
        if r["status"] != "registered":
            house.paid.add(person)
    voided = {UUID(r["payment_id"]) for r in store.records("payment_event").values() if r["kind"] == "void"}
    for pid, r in store.records("payment").items():
        if r["device_id"] == str(device_id) and pid not in voided:
            view.payments[pid] = datetime.fromisoformat(r["collected_at"])
    for entry in store.entries():
        if entry.state == "pending":
            apply_local(view, entry.mutation)
    return view


def apply_local(view: View, mu: m.AnyMutation) -> None:
    """What the tablet shows after a change it made offline (before the server has answered)."""
    if isinstance(mu, m.HouseholdCreate):
        view.houses[mu.household_id] = House(
            id=mu.household_id, village_code=mu.village_code, household_no=mu.household_no, address=mu.address,
            phone=mu.phone, status="active", seen_version=1,
            members={x.person_id: Member(x.person_id, x.name, x.relation, x.phone) for x in mu.members},
        )  # fmt: skip
        return
    if isinstance(mu, m.EnrollmentCancel):
        for house in view.houses.values():
            house.enrolled.discard(mu.person_id)
        return
    if isinstance(mu, m.PaymentVoid):
        view.payments.pop(mu.payment_id, None)
        return
    found = view.houses.get(mu.household_id)
    if found is None:
        return
    house = found
    if isinstance(mu, m.HouseholdUpdate):
        house.household_no = mu.household_no or house.household_no
        house.address = house.address if mu.address is None else mu.address
        house.phone = house.phone if mu.phone is None else mu.phone
    elif isinstance(mu, m.HouseholdDissolve):
        house.status, house.members = "dissolved", {}
    elif isinstance(mu, m.MemberCreate):
        x = mu.member
        house.members[x.person_id] = Member(x.person_id, x.name, x.relation, x.phone)
    elif isinstance(mu, m.MemberUpdate):
        member = house.members.get(mu.person_id)
        if member is not None:
            member.name = mu.name or member.name
            member.phone = mu.phone or member.phone
            if mu.relation == "head":
                for other in house.members.values():
                    if other.relation == "head":
                        other.relation = mu.former_head_relation or "other"
            member.relation = mu.relation or member.relation
    elif isinstance(mu, m.MemberMove):
        moving = house.members.pop(mu.person_id, None)
        target = view.houses.get(mu.to_household_id)
        if moving is not None and target is not None:
            target.members[mu.person_id] = Member(moving.person_id, moving.name, mu.relation, moving.phone)
    elif isinstance(mu, m.MemberRemove):
        house.members.pop(mu.person_id, None)
        if not house.members:
            house.status = "dissolved"
    elif isinstance(mu, m.EnrollmentCreate):
        house.enrolled.update(mu.person_ids)
    elif isinstance(mu, m.PaymentRecord):
        house.paid.update(mu.person_ids)
        view.payments[mu.payment_id] = mu.collected_at


# Tablets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptBlock:
    prefix: str
    first_no: int
    last_no: int
    digits: int = 8

    def number(self, n: int) -> str:
        return f"{self.prefix}{n:0{self.digits}d}"


@dataclass(frozen=True)
class Revocation:
    """What the server held of a tablet when it was revoked: none of it may grow afterwards."""

    last_seq: int
    ledger: int
    quarantined: int
    payments: int
    conflicts: int


class SimTablet:
    """One tablet: the reference client and its SQLite store, behind its own faulty network."""

    def __init__(self, world: World, *, name: str, username: str, user_id: UUID, device_id: UUID, secret: str,
                 token: str, block: ReceiptBlock, fmt: codec.Format) -> None:  # fmt: skip
        self.world, self.name, self.username, self.user_id = world, name, username, user_id
        self.device_id, self.secret, self.block, self.fmt = device_id, secret, block, fmt
        self.transport = FaultyTransport(world.inner, rng=random.Random(world.rng.random()), counts=world.faults)
        self.http = httpx.AsyncClient(transport=self.transport, base_url=world.base_url, timeout=60)
        self.transport.on_response = world.watch
        self.store = TabletStore(":memory:")
        self.client = SyncClient(self.http, self.store, device_id, token, fmt)
        self.status: Literal["active", "suspended", "revoked"] = "active"
        self.revocation: Revocation | None = None
        self.scope_changed = False
        self.pulled = False  # a whole pull has completed since the last scope change
        self.next_receipt = block.first_no
        self.view = View()
        self.counter = 0

    def __repr__(self) -> str:
        return f"<tablet {self.name} {self.username} {self.status} {str(self.device_id)[:8]}>"

    # Local work -------------------------------------------------------------------------------

    def enqueue(self, mu: m.AnyMutation) -> m.AnyMutation:
        queued = self.client.enqueue(mu)
        apply_local(self.view, queued)
        self.world.stats[f"queued/{queued.__struct_config__.tag}"] += 1
        return queued

    def _stamp(self) -> dict[str, Any]:
        return {"seq": 1, "mutation_id": self.world.people.uuid(), "device_time": self.world.clock()}

    def _houses(self, rng: random.Random, *, need: Callable[[House], bool] | None = None) -> House | None:
        live = [
            h for h in self.view.houses.values() if h.status == "active" and h.members and (need is None or need(h))
        ]
        if not live:
            return None
        # Work concentrates on the households the simulation registered (shared by the tablets of a
        # township), and half of it on the oldest few of them: edits of the same household by several
        # tablets are what conflicts are made of.
        ours = sorted((h for h in live if h.household_no.startswith(self.world.tag)), key=lambda h: h.household_no)
        if ours and rng.random() < 0.5:
            return rng.choice(ours[:3])
        pool = ours if ours and rng.random() < 0.85 else live
        return rng.choice(sorted(pool, key=lambda h: h.id))

    def register(self, rng: random.Random, *, like: m.HouseholdCreate | None = None) -> m.HouseholdCreate:
        """A household registered on this tablet; `like`: the same family another tablet registered
        too (same people, new ids): the duplicate a reviewer must catch."""
        people = self.world.people
        villages = self.world.villages[self.world.townships[self.username]]
        self.counter += 1
        number = f"{self.world.tag}{self.name}{self.counter:04d}"
        if like is not None:
            members = [msgspec.structs.replace(x, person_id=people.uuid()) for x in like.members]
            village = like.village_code if like.village_code in villages else rng.choice(villages)
        else:
            head = people.member("head")
            members = [head]
            if rng.random() < 0.7:
                head_is_male = int((head.id_number or "0" * 17)[16]) % 2 == 1  # the 17th digit: odd for men
                members.append(people.member("spouse", sex="female" if head_is_male else "male"))
            members += [people.member("child", adult=False) for _ in range(rng.choice((0, 0, 1, 1, 2, 3)))]
            village = rng.choice(villages)
        phone = people.phone() if rng.random() < 0.5 else None
        mu = m.HouseholdCreate(
            **self._stamp(), household_id=people.uuid(), village_code=village, household_no=number,
            address=f"{rng.randint(1, 12)}组{rng.randint(1, 300)}号", phone=phone, members=members,
        )  # fmt: skip
        queued = self.enqueue(mu)
        assert isinstance(queued, m.HouseholdCreate)
        return queued

    def work(self, action: WorkAction, rng: random.Random) -> m.AnyMutation | None:
        """One piece of offline work; None when the tablet has nothing it could do it to."""
        people = self.world.people
        stamp = self._stamp()
        if action == "register":
            return self.register(rng)
        if action == "edit_household":
            h = self._houses(rng)
            if h is None:
                return None
            change: dict[str, Any] = {}
            if rng.random() < 0.6:
                change["address"] = f"{rng.randint(1, 12)}组{rng.randint(1, 300)}号"
            if rng.random() < 0.5 or not change:
                change["phone"] = people.phone()
            if rng.random() < 0.05:
                change["household_no"] = f"{h.household_no[:24]}-{rng.randint(1, 9)}"
            return self.enqueue(m.HouseholdUpdate(**stamp, household_id=h.id, base_version=h.seen_version, **change))
        if action in ("edit_member_phone", "edit_member_identity"):
            h = self._houses(rng)
            if h is None:
                return None
            person = rng.choice(sorted(h.members))
            edit: dict[str, Any] = {}
            if action == "edit_member_phone" or rng.random() < 0.3:
                edit["phone"] = people.phone()
            if action == "edit_member_identity":
                edit["name"] = people.name()
            return self.enqueue(m.MemberUpdate(**stamp, household_id=h.id, person_id=person,
                                               base_version=h.seen_version, **edit))  # fmt: skip
        if action == "make_head":
            h = self._houses(rng, need=lambda h: len(h.members) > 1)
            if h is None:
                return None
            person = rng.choice(sorted(p for p, x in h.members.items() if x.relation != "head") or sorted(h.members))
            return self.enqueue(
                m.MemberUpdate(
                    **stamp,
                    household_id=h.id,
                    person_id=person,
                    base_version=h.seen_version,
                    relation="head",
                    former_head_relation=rng.choice(("spouse", "parent", "other")),
                )
            )
        if action == "add_member":
            h = self._houses(rng)
            if h is None:
                return None
            newborn = people.member("child", adult=False)
            return self.enqueue(m.MemberCreate(**stamp, household_id=h.id, base_version=h.seen_version, member=newborn))
        if action in ("move_member", "remove_member"):
            h = self._houses(rng, need=lambda h: any(x.relation != "head" for x in h.members.values()))
            if h is None:
                return None
            person = rng.choice(sorted(p for p, x in h.members.items() if x.relation != "head"))
            if action == "remove_member":
                reason: Literal["removed", "deceased", "data_error"] = rng.choice(("removed", "deceased", "data_error"))
                return self.enqueue(m.MemberRemove(**stamp, household_id=h.id, person_id=person,
                                                   base_version=h.seen_version, reason=reason))  # fmt: skip
            targets = sorted(
                x.id
                for x in self.view.houses.values()
                if x.status == "active" and x.id != h.id and x.village_code[:9] == h.village_code[:9]
            )
            if not targets:
                return None
            return self.enqueue(m.MemberMove(**stamp, household_id=h.id, person_id=person, base_version=h.seen_version,
                                             to_household_id=rng.choice(targets), relation="other"))  # fmt: skip
        if action == "dissolve":
            h = self._houses(rng)
            if h is None:
                return None
            return self.enqueue(m.HouseholdDissolve(**stamp, household_id=h.id, base_version=h.seen_version,
                                                    reason=rng.choice(("removed", "data_error"))))  # fmt: skip
        if action == "enrol":
            h = self._houses(rng, need=lambda h: bool(set(h.members) - h.enrolled))
            if h is None:
                return None
            persons = sorted(set(h.members) - h.enrolled)
            code_hash = None
            if self.client.query_code_key() is not None and rng.random() < 0.5:
                _, code_hash = self.client.new_query_code(h.id, YEAR)
            return self.enqueue(m.EnrollmentCreate(**stamp, household_id=h.id, coverage_year=YEAR, person_ids=persons,
                                                   query_code_hash=code_hash))  # fmt: skip
        if action == "pay":
            h = self._houses(rng, need=lambda h: bool((h.enrolled & set(h.members)) - h.paid))
            if h is None or self.next_receipt > self.block.last_no:
                return None
            persons = sorted((h.enrolled & set(h.members)) - h.paid)
            due = self.world.premium_fen * len(persons)
            amount = due if rng.random() < 0.8 else max(100, due + rng.choice((-1, 1)) * rng.randrange(1, 200) * 100)
            receipt = self.block.number(self.next_receipt)
            self.next_receipt += 1
            return self.enqueue(m.PaymentRecord(
                **stamp, payment_id=people.uuid(), household_id=h.id, coverage_year=YEAR, person_ids=persons,
                amount_fen=amount, method=rng.choice(("cash", "cash", "cash", "qr")), receipt_no=receipt,
                collected_at=stamp["device_time"], due_fen=due,
            ))  # fmt: skip
        if action == "cancel_enrolment":
            h = self._houses(rng, need=lambda h: bool((h.enrolled & set(h.members)) - h.paid))
            if h is None:
                return None
            person = rng.choice(sorted((h.enrolled & set(h.members)) - h.paid))
            return self.enqueue(
                m.EnrollmentCancel(
                    **stamp,
                    person_id=person,
                    coverage_year=YEAR,
                    reason=rng.choice(("data_error", "duplicate", "employee_insurance")),
                )
            )
        assert action == "void"
        today = self.world.clock().date()
        mine = sorted(p for p, at in self.view.payments.items() if at.date() == today)
        if not mine:
            return None
        return self.enqueue(
            m.PaymentVoid(**stamp, payment_id=rng.choice(mine), reason="wrong amount", note="simulated")
        )

    # Sync -------------------------------------------------------------------------------------

    async def sync(self, *, pull: bool = True) -> bool:
        """Pushes until the queue is answered, then pulls every page. False when the network or the
        server cut it short (the tablet simply tries again later)."""
        for attempt in range(2):
            try:
                await self._push_queue()
                if pull:
                    self.world.stats["pulls"] += 1
                    resumed = self.store.get("page_token") is not None
                    await self.client.pull(limit=self.world.pull_limit)
                    if resumed:
                        # A resumed page sequence ends at the cursor it started from: pull again to
                        # catch up with what changed since.
                        await self.client.pull(limit=self.world.pull_limit)
                    self.pulled = True
                    self.view = build_view(self.store, self.device_id)
                return True
            except SyncFailed as exc:
                self.world.stats[f"refused/{exc.status} {exc.code}"] += 1
                if exc.status == 401 and self.status == "active" and attempt == 0:
                    await self.world.log_in(self)  # a new session (its old one ended, or expired)
                    continue
                return False
            except httpx.TransportError as exc:
                self.world.stats[f"network/{type(exc).__name__}"] += 1
                return False
        return False

    async def _push_queue(self) -> None:
        while True:
            before = len(self.store.queue("pending"))
            if before == 0 or await self.client.push() is None:
                return
            after = len(self.store.queue("pending"))
            if after >= before:
                self.world.stats["push/no_progress"] += 1
                return

    def pending(self) -> int:
        return len(self.store.queue("pending"))


# The back office ----------------------------------------------------------------------------------


class Office:
    """REST calls as the district admin and the township reviewers (no faults: an office line)."""

    def __init__(self, http: httpx.AsyncClient, password: str) -> None:
        self.http, self.password = http, password
        self.tokens: dict[str, dict[str, str]] = {}

    async def login(self, username: str, **device: Any) -> dict[str, Any]:
        response = await self.http.post("/api/v1/auth/login",
                                        json={"username": username, "password": self.password, **device})  # fmt: skip
        if response.status_code != 200:
            raise SimulationError(f"log-in of {username} failed: {response.status_code} {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    async def call(self, username: str, method: str, url: str, *, json: Any = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
        for _ in range(2):
            if username not in self.tokens:
                token = (await self.login(username))["access_token"]
                self.tokens[username] = {"Authorization": f"Bearer {token}"}
            response = await self.http.request(method, url, json=json,
                                               headers={**self.tokens[username], **(headers or {})})  # fmt: skip
            if response.status_code != 401:
                return response
            self.tokens.pop(username, None)
        return response

    async def ok(self, username: str, method: str, url: str, *, json: Any = None) -> Any:
        response = await self.call(username, method, url, json=json)
        if response.status_code not in (200, 201):
            raise SimulationError(f"{method} {url} as {username}: {response.status_code} {response.text[:300]}")
        return response.json()


class SimulationError(Exception):
    """The simulation could not set itself up (not an invariant failure)."""


# A failure of concurrent transactions (serialization failure, deadlock): the database refused one
# of two; a server should retry it or answer "try again", never fail the request with a 500.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})


class ServerErrorLog(logging.Handler):
    """What the in-process server logged for each unhandled error (its type, SQLSTATE and where)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[tuple[str, str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        where = getattr(record, "where", None) or []
        origin = next((w for w in where if not w.startswith(("connection.py", "protocol.pyx", "pool.py"))), "?")
        self.errors.append((str(getattr(record, "error", "?")), getattr(record, "sqlstate", None), origin))


# The world ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TabletSpec:
    username: str
    fmt: codec.Format = "msgpack"


class World:
    """Tablets, back office and a connection for checking, against one server."""

    def __init__(
        self, *, inner: httpx.AsyncBaseTransport, base_url: str, db: asyncpg.Connection, rng: random.Random,
        password: str, tag: str = "S", clock: Callable[[], datetime] | None = None, pull_limit: int = 1000,
        faults: Counter[str] | None = None, stats: Counter[str] | None = None,
    ) -> None:  # fmt: skip
        self.inner, self.base_url, self.db, self.rng, self.tag = inner, base_url, db, rng, tag
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.pull_limit = pull_limit
        self.faults: Counter[str] = Counter() if faults is None else faults
        self.stats: Counter[str] = Counter() if stats is None else stats
        self.events: Counter[str] = Counter()
        self.server_errors: list[str] = []  # every 5xx answer, including those a fault threw away
        self.error_log = ServerErrorLog()  # their causes, when the server runs in this process
        logging.getLogger("canbao.errors").addHandler(self.error_log)
        self.plain = httpx.AsyncClient(transport=inner, base_url=base_url, timeout=60,
                                       event_hooks={"response": [self._watch_office]})  # fmt: skip
        self.office = Office(self.plain, password)
        self.people = People(rng)
        self.tablets: list[SimTablet] = []  # one per slot; a reinstall puts a new one in its place
        self.retired: list[SimTablet] = []  # reinstalled away: their queues stay with them
        self.townships: dict[str, str] = {}  # username → township code (12 digits), as the server has it now
        self.user_ids: dict[str, UUID] = {}
        self.villages: dict[str, list[str]] = {}
        self.reviewers: dict[str, str] = {}  # township → a reviewer username
        self.admin = "admin"
        self.premium_fen = 40000
        self.prefixes = 0
        self.unfinished: list[str] = []  # what the quiet final sync could not finish

    def watch(self, request: httpx.Request, response: httpx.Response) -> None:
        if response.status_code >= 500:
            self.server_errors.append(f"{request.method} {request.url.path} → {response.status_code} "
                                      f"{response.text[:120]}")  # fmt: skip

    async def _watch_office(self, response: httpx.Response) -> None:
        if response.status_code >= 500:
            await response.aread()
            self.watch(response.request, response)

    @property
    def all_tablets(self) -> list[SimTablet]:
        return [*self.tablets, *self.retired]

    async def prepare(self, specs: Iterable[TabletSpec], reviewers: dict[str, str]) -> None:
        """Looks the users and villages up, then registers a tablet per spec (log-in, receipt block)."""
        self.reviewers = dict(reviewers)
        for row in await self.db.fetch("SELECT username, id, division_code FROM users"):
            self.user_ids[row["username"]] = row["id"]
            self.townships[row["username"]] = row["division_code"]
        for township in {*self.reviewers, *(self.townships[s.username] for s in specs)}:
            rows = await self.db.fetch(
                "SELECT code FROM divisions WHERE level = 'village' AND parent_code = $1 ORDER BY code", township
            )
            self.villages[township] = [r["code"] for r in rows]
        premium = await self.db.fetchval(
            "SELECT premium_fen FROM policy_versions WHERE coverage_year = $1 ORDER BY version DESC LIMIT 1", YEAR
        )
        if premium is None:
            raise SimulationError(f"no policy published for {YEAR}")
        self.premium_fen = premium
        for spec in specs:
            self.tablets.append(await self.new_tablet(spec.username, spec.fmt, name=f"T{len(self.tablets)}"))

    def _prefix(self) -> str:
        n, letters = self.prefixes, ""
        self.prefixes += 1
        while True:
            n, r = divmod(n, 26)
            letters = chr(65 + r) + letters
            if n == 0:
                break
            n -= 1
        return (self.tag + letters)[:8]

    async def new_tablet(self, username: str, fmt: codec.Format, *, name: str) -> SimTablet:
        registered = await self.office.ok(username, "POST", "/api/v1/devices",
                                          json={"model": "SimTab", "app_version": "sim-1"})  # fmt: skip
        device_id, secret = UUID(registered["device"]["id"]), registered["device_secret"]
        session = await self.office.login(username, device_id=str(device_id), device_secret=secret)
        prefix = self._prefix()
        township = self.townships[username]
        await self.office.ok(self.reviewers[township], "POST", "/api/v1/receipt-blocks", json={
            "collector_id": str(self.user_ids[username]), "device_id": str(device_id), "prefix": prefix,
            "first_no": 1, "last_no": 99_999,
        })  # fmt: skip
        return SimTablet(self, name=name, username=username, user_id=self.user_ids[username], device_id=device_id,
                         secret=secret, token=session["access_token"], block=ReceiptBlock(prefix, 1, 99_999),
                         fmt=fmt)  # fmt: skip

    async def log_in(self, tablet: SimTablet) -> None:
        session = await self.office.login(tablet.username, device_id=str(tablet.device_id),
                                          device_secret=tablet.secret)  # fmt: skip
        tablet.client.token = session["access_token"]

    # Things that happen to tablets --------------------------------------------------------------

    async def sync_together(self, tablets: list[SimTablet]) -> list[bool]:
        """Several tablets syncing at the same moment (their transactions interleave on the server)."""
        if len(tablets) > 1:
            self.events["concurrent_sync"] += 1
        return list(await asyncio.gather(*(t.sync() for t in tablets)))

    async def register_twice(self, first: SimTablet, second: SimTablet, rng: random.Random) -> bool:
        """The same family registered offline on two tablets (same ID numbers, different ids)."""
        if first is second or self.townships[first.username] != self.townships[second.username]:
            return False
        second.register(rng, like=first.register(rng))
        self.events["duplicate_household"] += 1
        return True

    async def suspend(self, tablet: SimTablet) -> bool:
        if tablet.status != "active":
            return False
        await self.office.ok(self.admin, "POST", f"/api/v1/devices/{tablet.device_id}/suspend")
        tablet.status = "suspended"
        self.events["suspend"] += 1
        return True

    async def reactivate(self, tablet: SimTablet) -> bool:
        if tablet.status != "suspended":
            return False
        await self.office.ok(self.admin, "POST", f"/api/v1/devices/{tablet.device_id}/reactivate")
        tablet.status = "active"
        await self.log_in(tablet)  # the suspension ended its session
        self.events["reactivate"] += 1
        return True

    async def revoke(self, tablet: SimTablet) -> bool:
        if tablet.status == "revoked":
            return False
        await self.office.ok(self.admin, "DELETE", f"/api/v1/devices/{tablet.device_id}")
        tablet.status = "revoked"
        tablet.revocation = await self._holdings(tablet.device_id)
        self.events["revoke"] += 1
        return True

    async def _holdings(self, device_id: UUID) -> Revocation:
        row = await self.db.fetchrow(
            """SELECT (SELECT last_seq FROM sync_devices WHERE device_id = $1) AS last_seq,
                      (SELECT count(*) FROM sync_mutations WHERE device_id = $1) AS ledger,
                      (SELECT count(*) FROM sync_quarantine WHERE device_id = $1) AS quarantined,
                      (SELECT count(*) FROM payments p WHERE p.device_id = $1 AND NOT EXISTS (
                           SELECT 1 FROM sync_quarantine q WHERE q.payment_id = p.id AND q.status = 'applied'))
                          AS payments,
                      (SELECT count(*) FROM sync_conflicts WHERE device_id = $1) AS conflicts""",
            device_id,
        )
        assert row is not None
        return Revocation(**dict(row.items()))

    async def reinstall(self, slot: int, *, reexport: bool) -> bool:
        """The app is reinstalled: a new device id for the same user. The old device is revoked (its
        unused receipts are retired and its follow-up sheet lists what it may still hold); with
        `reexport` the old app's unsynced queue was exported and is pushed again by the new one."""
        old = self.tablets[slot]
        if old.status != "active":
            return False
        new = await self.new_tablet(old.username, old.fmt, name=f"{old.name}r")
        if reexport:
            for entry in old.store.entries():
                if entry.state == "pending":
                    new.client.enqueue(msgspec.structs.replace(entry.mutation, mutation_id=self.people.uuid()))
            self.events["reexport"] += 1
        await self.revoke(old)
        self.tablets[slot] = new
        self.retired.append(old)
        self.events["reinstall"] += 1
        return True

    async def move_user(self, username: str, township: str) -> bool:
        """The user is moved to another township (their tablets keep their synced copy and queue)."""
        if self.townships.get(username) == township:
            return False
        await self.office.ok(self.admin, "PATCH", f"/api/v1/users/{self.user_ids[username]}",
                             json={"division_code": township})  # fmt: skip
        self.townships[username] = township
        for tablet in self.all_tablets:
            if tablet.username == username:
                tablet.scope_changed, tablet.pulled = True, False
        self.events["scope_change"] += 1
        return True

    async def office_edit(self, township: str, rng: random.Random) -> str | None:
        """A back-office edit through REST (If-Match on a fresh read): the competition tablets meet."""
        reviewer = self.reviewers[township]
        rows = await self.db.fetch(
            "SELECT id FROM households WHERE status = 'active' AND left(village_code, 9) = left($1, 9) "
            "ORDER BY (household_no LIKE $2 || '%') DESC, household_no LIMIT 200",
            township, self.tag,
        )  # fmt: skip
        if not rows:
            return None
        # The households the tablets work on most (the oldest few of the simulation's), half the time.
        household_id = rng.choice([r["id"] for r in rows[: 3 if rng.random() < 0.5 else max(1, len(rows) // 2)]])
        read = await self.office.call(reviewer, "GET", f"/api/v1/households/{household_id}")
        if read.status_code != 200:
            return None
        h = read.json()
        url = f"/api/v1/households/{household_id}"
        match = {"If-Match": read.headers["etag"]}
        members = [x for x in h["members"]]
        others = [x for x in members if x["relation"] != "head"]
        kind = rng.choice(("address", "phone", "member_phone", "member_name", "add_member", "remove", "move"))
        response: httpx.Response | None = None
        if kind in ("address", "phone"):
            value = f"办公室{rng.randint(1, 99)}号" if kind == "address" else self.people.phone()
            response = await self.office.call(reviewer, "PATCH", url, json={kind: value}, headers=match)
        elif kind in ("member_phone", "member_name") and members:
            person = rng.choice(members)["person_id"]
            change = {"phone": self.people.phone()} if kind == "member_phone" else {"name": self.people.name()}
            response = await self.office.call(reviewer, "PATCH", f"{url}/members/{person}", json=change, headers=match)
        elif kind == "add_member":
            x = self.people.member("child", adult=False)
            body = {"id": str(x.person_id), "name": x.name, "relation": "child", "id_number": x.id_number}
            response = await self.office.call(reviewer, "POST", f"{url}/members", json=body, headers=match)
        elif kind == "remove" and others:
            person = rng.choice(others)["person_id"]
            response = await self.office.call(
                reviewer,
                "POST",
                f"{url}/members/{person}/remove",
                json={"reason": rng.choice(("removed", "deceased"))},
                headers=match,
            )
        elif kind == "move" and others and len(rows) > 1:
            person = rng.choice(others)["person_id"]
            target = rng.choice([r["id"] for r in rows if r["id"] != household_id])
            response = await self.office.call(reviewer, "POST", f"{url}/members/{person}/move",
                                              json={"to_household_id": str(target), "relation": "other"},
                                              headers=match)  # fmt: skip
        if response is None:
            return None
        self.stats[f"office/{kind}/{response.status_code}"] += 1
        if response.status_code in (200, 201):
            self.events["office_edit"] += 1
            return kind
        return None

    async def review(self, township: str, rng: random.Random) -> str | None:
        """A reviewer settles one open quarantined item or conflict of the township."""
        reviewer = self.reviewers[township]
        if rng.random() < 0.5:
            page = await self.office.ok(reviewer, "GET", "/api/v1/sync/quarantine?status=open&limit=50")
            if not page["items"]:
                return None
            item = rng.choice(page["items"])
            apply = item["kind"] == "payment.record" and rng.random() < 0.6
            response = await self.office.call(reviewer, "POST", f"/api/v1/sync/quarantine/{item['id']}/settle",
                                              json={"resolution": "apply" if apply else "dismiss",
                                                    "note": "simulated review"})  # fmt: skip
            outcome = f"settle/{'apply' if apply else 'dismiss'}/{response.status_code}"
        else:
            page = await self.office.ok(reviewer, "GET", "/api/v1/sync/conflicts?open=true&limit=50")
            if not page["items"]:
                return None
            item = rng.choice(page["items"])
            choices = {"field_overwritten": ("kept", "restored"), "update_after_remove": ("discarded",)}
            resolution = rng.choice(choices.get(item["kind"], ("applied", "discarded")))
            response = await self.office.call(reviewer, "POST", f"/api/v1/sync/conflicts/{item['id']}/resolve",
                                              json={"resolution": resolution, "note": "simulated review"})  # fmt: skip
            outcome = f"resolve/{item['kind']}/{resolution}/{response.status_code}"
        self.stats[outcome] += 1
        if response.status_code == 200:
            self.events["review"] += 1
            return outcome
        return None

    # The end ------------------------------------------------------------------------------------

    async def quiesce(self, rounds: int = 5) -> None:
        """The final sync on a quiet network: delayed requests land, every tablet that still may pushes
        until its queue is empty, then every active tablet pulls."""
        for tablet in self.all_tablets:
            tablet.transport.disarm()
            tablet.transport.rate = 0.0
            await tablet.transport.flush()
        self.unfinished = []
        for tablet in self.all_tablets:
            if tablet.status == "revoked":
                continue
            for _ in range(rounds):
                if await tablet.sync(pull=False) and tablet.pending() == 0:
                    break
            else:
                self.unfinished.append(f"{tablet}: {tablet.pending()} mutations still queued after {rounds} pushes")
        for tablet in self.tablets:
            if tablet.status == "active":
                tablet.pulled = False
                for _ in range(rounds):
                    if await tablet.sync():
                        break
                else:
                    self.unfinished.append(f"{tablet}: no pull completed in {rounds} tries")

    async def close(self) -> None:
        logging.getLogger("canbao.errors").removeHandler(self.error_log)
        for tablet in self.all_tablets:
            await tablet.http.aclose()
            tablet.store.db.close()
        await self.plain.aclose()


# Invariants ---------------------------------------------------------------------------------------


class InvariantResult(msgspec.Struct, kw_only=True):
    name: str
    depends: str | None  # the fix this check waits for, when the server does not have it yet
    checked: bool
    problems: list[str]
    items: int = 0  # records, answers or tablets it looked at
    details: dict[str, int] = {}  # finer counts, e.g. how many overwrites the no-loss check met

    @property
    def failed(self) -> bool:
        return self.checked and bool(self.problems)


Check = Callable[["Checker"], Awaitable[list[str]]]


@dataclass(frozen=True)
class Invariant:
    name: str
    check: Check
    depends: str | None = None  # the server fix it waits for (see PENDING)

    @property
    def doc(self) -> str:
        return " ".join((self.check.__doc__ or "").split())


class Checker:
    """What the invariants read: every tablet's queue (with answers), the server's tables."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.db = world.db
        self.entries: dict[UUID, list[QueueEntry]] = {t.device_id: t.store.entries() for t in world.all_tablets}
        self.items: Counter[str] = Counter()  # what each check looked at: a check over nothing proves nothing
        self.late: dict[str, list[str]] = defaultdict(list)  # problems one check finds for another

    def tablet_entries(self) -> Iterable[tuple[SimTablet, QueueEntry]]:
        for tablet in self.world.all_tablets:
            for entry in self.entries[tablet.device_id]:
                yield tablet, entry

    async def ledger(self, device_id: UUID) -> dict[int, m.Answer]:
        rows = await self.db.fetch(
            "SELECT seq, answer FROM sync_mutations WHERE device_id = $1 ORDER BY seq", device_id
        )
        return {r["seq"]: msgspec.convert(r["answer"], m.Answer) for r in rows}

    def own_versions(self) -> dict[tuple[UUID, UUID], set[int]]:
        """(device, household) → the household versions that device's own applied edits produced."""
        own: dict[tuple[UUID, UUID], set[int]] = defaultdict(set)
        for tablet, entry in self.tablet_entries():
            hid = getattr(entry.mutation, "household_id", None)
            answer = _final(entry)
            if answer is None or hid is None or answer.household_version is None:
                continue
            # Only answers that changed the household made a version (a held edit names the current one).
            if answer.status in ("applied", "applied_with_conflict") and not (answer.code or "").startswith("already"):
                own[(tablet.device_id, hid)].add(answer.household_version)
        return own

    async def field_changes(self) -> dict[tuple[UUID, UUID | None, str], list[asyncpg.Record]]:
        changes: dict[tuple[UUID, UUID | None, str], list[asyncpg.Record]] = defaultdict(list)
        for r in await self.db.fetch(
            "SELECT household_id, person_id, field, old_value, new_value, version, device_id FROM record_changes "
            "WHERE version IS NOT NULL ORDER BY id"
        ):
            changes[(r["household_id"], r["person_id"], r["field"])].append(r)
        return changes


def _final(entry: QueueEntry) -> m.Answer | None:
    return entry.answer if entry.state != "pending" else None


async def fingerprint(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every table a push may write (not the audit log or device clocks)."""
    tables = ("households", "persons", "memberships", "person_moves", "enrollments", "household_query_codes",
              "payments", "payment_allocations", "payment_events", "receipt_blocks", "receipt_retirements",
              "sync_mutations", "sync_quarantine", "sync_conflicts", "record_changes", "sync_changes")  # fmt: skip
    out = {}
    for table in tables:
        row = await db.fetchrow(
            f"SELECT count(*) AS n, coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') AS d "
            f"FROM {table} t"
        )
        assert row is not None
        out[table] = (row["n"], row["d"])
    return out


async def check_final_sync(c: Checker) -> list[str]:
    """On a quiet network every tablet that may still sync empties its queue, and every active one
    completes a pull (else the checks below would judge a copy left behind)."""
    c.items["final_sync_completes"] = len(c.world.all_tablets)
    return list(c.world.unfinished)


async def check_replay(c: Checker) -> list[str]:
    """Replaying every push of every tablet changes nothing: each mutation is answered `duplicate`
    with its first answer, and no table changes. A revoked tablet's replay is refused."""
    problems = []
    before = await fingerprint(c.db)
    for tablet in c.world.all_tablets:
        entries = c.entries[tablet.device_id]
        ledger = await c.ledger(tablet.device_id)
        for start in range(0, len(entries), 500):
            batch = entries[start : start + 500]
            raws = [msgspec.Raw(codec.encode(e.mutation, tablet.fmt)) for e in batch]
            request = m.PushRequest(protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, mutations=raws)
            response = await c.world.plain.post(
                PUSH,
                content=codec.encode(request, tablet.fmt),
                headers={
                    "Authorization": f"Bearer {tablet.client.token}",
                    "Content-Type": codec.media_type(tablet.fmt),
                },
            )
            if tablet.status == "revoked":
                if response.status_code != 401:
                    problems.append(f"{tablet}: a revoked tablet's replay was answered {response.status_code}")
                continue
            if response.status_code != 200:
                problems.append(f"{tablet}: replay refused {response.status_code} {response.text[:200]}")
                continue
            answer = codec.decode(response.content, m.PushResponse, tablet.fmt)
            c.items["replay_changes_nothing"] += len(batch)
            for entry, got in zip(batch, answer.answers, strict=True):
                first = ledger.get(entry.seq)
                if got.status != "duplicate" or got.first != first:
                    problems.append(
                        f"{tablet} seq {entry.seq} ({entry.mutation.__struct_config__.tag}) replayed: "
                        f"{got.status}/{got.code}, first answer {first and (first.status, first.code)}"
                    )
    after = await fingerprint(c.db)
    for table, value in before.items():
        if after[table] != value:
            problems.append(f"replay changed {table}: {value[0]} → {after[table][0]} rows")
    return problems


async def check_sequences(c: Checker) -> list[str]:
    """Each device's ledger holds seq 1…last_seq without a gap; every queued mutation of a tablet that
    may still sync reached it; the answer each tablet keeps is the server's first answer."""
    problems = []
    for tablet in c.world.all_tablets:
        ledger = await c.ledger(tablet.device_id)
        last = await c.db.fetchval("SELECT last_seq FROM sync_devices WHERE device_id = $1", tablet.device_id)
        if sorted(ledger) != list(range(1, len(ledger) + 1)) or last != len(ledger):
            problems.append(f"{tablet}: ledger seqs {_ranges(sorted(ledger))} but last_seq {last}")
        for entry in c.entries[tablet.device_id]:
            c.items["sequences_without_gaps"] += 1
            first = ledger.get(entry.seq)
            if first is None:
                if tablet.status != "revoked":
                    problems.append(f"{tablet} seq {entry.seq}: never reached the server ({entry.state})")
            elif entry.state == "pending":
                if tablet.status != "revoked":
                    problems.append(f"{tablet} seq {entry.seq}: answered on the server, still pending on the tablet")
            elif entry.answer != first:
                problems.append(f"{tablet} seq {entry.seq}: the tablet keeps {_brief(entry.answer)}, "
                                f"the server answered {_brief(first)}")  # fmt: skip
            elif entry.state != (first.status if first.status != "duplicate" else "applied"):
                problems.append(f"{tablet} seq {entry.seq}: marked {entry.state}, answered {first.status}")
    return problems


async def check_payments(c: Checker) -> list[str]:
    """Every payment made on any tablet exists exactly once on the server — recorded, or kept in
    quarantine (open or dismissed) — or, only when its tablet was revoked before it synced, is listed
    by that tablet's follow-up sheet: its seq after `last_seq`, its receipt number retired."""
    problems = []
    made: dict[UUID, list[tuple[SimTablet, QueueEntry]]] = defaultdict(list)
    for tablet, entry in c.tablet_entries():
        if isinstance(entry.mutation, m.PaymentRecord):
            made[entry.mutation.payment_id].append((tablet, entry))
    if not made:
        return []
    ids = list(made)
    recorded = {
        r["id"]: r
        for r in await c.db.fetch(
            "SELECT id, household_id, amount_fen, receipt_no, person_ids FROM payments WHERE id = ANY($1)", ids
        )
    }
    held: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for r in await c.db.fetch(
        "SELECT id, payment_id, status, reason FROM sync_quarantine WHERE kind = 'payment.record' "
        "AND payment_id = ANY($1) AND reason <> 'payment_id_reused'", ids,
    ):  # fmt: skip
        held[r["payment_id"]].append(r)
    sheets: dict[UUID, dict[str, Any]] = {}
    for tablet in c.world.all_tablets:
        if tablet.status == "revoked":
            sheets[tablet.device_id] = await c.world.office.ok(c.world.admin, "GET",
                                                               f"/api/v1/sync/devices/{tablet.device_id}")  # fmt: skip
    for payment_id, holders in made.items():
        c.items["payments_exactly_once"] += 1
        mu = holders[0][1].mutation
        assert isinstance(mu, m.PaymentRecord)
        row = recorded.get(payment_id)
        kept = [q for q in held[payment_id] if q["status"] in ("open", "dismissed")]
        if any(q["status"] == "applied" for q in held[payment_id]) and row is None:
            problems.append(f"payment {payment_id}: settled as applied but not recorded")
        if row is not None and (row["amount_fen"], row["receipt_no"], row["household_id"]) != (
            mu.amount_fen,
            mu.receipt_no,
            mu.household_id,
        ):
            problems.append(f"payment {payment_id}: recorded with other facts than the tablet's")
        count = (row is not None) + len(kept)
        c.items["payments_exactly_once/in_quarantine"] += bool(kept)
        suspended = [q for q in kept if q["reason"] == "device_suspended"]
        if count > 1 and count - len(suspended) == 1:
            # A payment the server holds already, reported again by a suspended tablet (a reinstalled
            # app's re-exported queue): quarantined a second time instead of answered `duplicate`.
            c.late["suspended_reports_deduplicated"].append(
                f"payment {payment_id} ({mu.receipt_no}): held again as device_suspended although "
                f"{'recorded' if row is not None else 'in quarantine'}"
            )
        elif count > 1:
            problems.append(f"payment {payment_id} ({mu.receipt_no}): {count} times on the server "
                            f"(recorded: {row is not None}, quarantined: {[q['reason'] for q in kept]})")  # fmt: skip
        elif count == 0:
            accounted = False
            for tablet, entry in holders:
                sheet = sheets.get(tablet.device_id)
                if sheet is not None and entry.seq > sheet["last_seq"] and _retired(sheet, mu.receipt_no):
                    accounted = True
            c.items["payments_exactly_once/on_revoked_sheets"] += accounted
            if not accounted:
                where = ", ".join(f"{t.name}({t.status}) seq {e.seq} {e.state}" for t, e in holders)
                problems.append(f"payment {payment_id} ({mu.receipt_no}, {mu.amount_fen} fen) lost: {where}")
        for tablet, entry in holders:
            answer = _final(entry)
            if answer is None:
                continue
            first = answer.first or answer
            if first.status in ("applied", "applied_with_conflict") and row is None:
                problems.append(f"payment {payment_id}: {tablet.name} was told {first.status}, not recorded")
            if first.status == "quarantined" and not any(q["id"] == first.quarantine_id for q in held[payment_id]):
                problems.append(f"payment {payment_id}: {tablet.name} was told quarantined, no such quarantine item")
    return problems


def _retired(sheet: dict[str, Any], receipt_no: str) -> bool:
    for block in sheet["receipt_blocks"]:
        rest = receipt_no[len(block["prefix"]) :]
        if receipt_no.startswith(block["prefix"]) and len(rest) == block["digits"] and rest.isdigit():
            n = int(rest)
            return any(lo <= n <= hi for lo, hi in block["retired"])
    return False


SCOPE_SQL: dict[str, str] = {
    "household": "SELECT id, village_code, household_no, address, phone, head_person_id, status, row_version "
                 "FROM households WHERE left(village_code, 9) = $1",
    "person": "SELECT p.id, ms.household_id, p.id_number, p.birth_cert_no, p.name, p.sex, p.birth_date, p.phone, "
              "p.row_version FROM persons p JOIN memberships ms ON ms.person_id = p.id AND ms.left_at IS NULL "
              "JOIN households h ON h.id = ms.household_id WHERE left(h.village_code, 9) = $1",
    "membership": "SELECT ms.id, ms.person_id, ms.household_id, ms.relation, ms.joined_at, ms.left_at, ms.left_reason "
                  "FROM memberships ms JOIN households h ON h.id = ms.household_id "
                  "WHERE ms.left_at IS NULL AND left(h.village_code, 9) = $1",
    "enrollment": "SELECT id, person_id, household_id, village_code, coverage_year, status, premium_fen, subsidy_fen, "
                  "coverage_start, coverage_end, cancel_reason, row_version FROM enrollments "
                  "WHERE left(village_code, 9) = $1",
    "payment": "SELECT id, household_id, village_code, coverage_year, person_ids, amount_fen, method, kind, "
               "receipt_no, collector_id, device_id, collected_at, business_date FROM payments "
               "WHERE left(village_code, 9) = $1",
    "payment_event": "SELECT e.id, e.payment_id, e.kind, e.request_id, e.amount_fen, e.reason, e.at "
                     "FROM payment_events e JOIN payments p ON p.id = e.payment_id WHERE left(p.village_code, 9) = $1",
    "policy_version": "SELECT id, coverage_year, version, effective_from, premium_fen, window_start, window_end, rules "
                      "FROM policy_versions WHERE $1::text IS NOT NULL",
    "receipt_block": "SELECT b.id, b.prefix, b.first_no, b.last_no, b.digits, b.collector_id, b.device_id, "
                     "coalesce((SELECT array_agg(ARRAY[r.first_no, r.last_no] ORDER BY r.first_no) "
                     "FROM receipt_retirements r WHERE r.block_id = b.id), '{}') AS retired "
                     "FROM receipt_blocks b WHERE b.collector_id = $2 AND (b.device_id IS NULL OR b.device_id = $3) "
                     "AND $1::text IS NOT NULL",
    "conflict": "SELECT id, household_id, person_id, kind, outcome, fields, base_values, server_values, "
                "tablet_values, other_household_id, device_id, seq, at, status, resolution, resolution_note, "
                "resolved_at FROM sync_conflicts WHERE left(township_code, 9) = $1",
}  # fmt: skip
_ROW_TYPES: dict[str, type[Any]] = {t.__struct_config__.tag: t for t in m.Row.__args__}
# Conflict rows are compared by a check of their own.
CORE_ENTITIES = tuple(e for e in SCOPE_SQL if e != "conflict")


async def scope_images(db: asyncpg.Connection, tablet: SimTablet, township: str, entity: str) -> dict[str, Any]:
    """A fresh query of the tablet's scope (not the pull's own SQL), as the rows a pull sends."""
    sql = SCOPE_SQL[entity]
    args: list[Any] = [township[:9]]
    if entity == "receipt_block":
        args += [tablet.user_id, tablet.device_id]
    rows = await db.fetch(sql, *args)
    row_type = _ROW_TYPES[entity]
    return {str(r["id"]): msgspec.to_builtins(msgspec.convert(dict(r.items()), row_type)) for r in rows}


def copy_images(tablet: SimTablet, entity: str) -> dict[str, Any]:
    row_type = _ROW_TYPES[entity]
    return {str(k): msgspec.to_builtins(msgspec.convert(v, row_type)) for k, v in tablet.store.records(entity).items()}


def _diff(label: str, mine: dict[str, Any], server: dict[str, Any], limit: int = 6) -> list[str]:
    out = []
    for key in sorted(set(mine) | set(server)):
        if key not in mine:
            out.append(f"{label} {key}: on the server, missing on the tablet")
        elif key not in server:
            out.append(f"{label} {key}: on the tablet, not in the server's scope")
        elif mine[key] != server[key]:
            fields = sorted(k for k in set(mine[key]) | set(server[key]) if mine[key].get(k) != server[key].get(k))
            out.append(f"{label} {key}: differs in {fields}")
        if len(out) >= limit:
            out.append(f"{label}: …")
            break
    return out


def _synced(tablet: SimTablet) -> bool:
    return tablet.status == "active" and tablet.pulled


async def _copies_equal(c: Checker, name: str, *, entities: tuple[str, ...], changed_scope: bool) -> list[str]:
    problems = []
    for tablet in c.world.tablets:
        if not _synced(tablet) or tablet.scope_changed != changed_scope:
            continue
        township = c.world.townships[tablet.username]
        for entity in entities:
            server = await scope_images(c.db, tablet, township, entity)
            c.items[name] += len(server)
            problems += _diff(f"{tablet.name} {entity}", copy_images(tablet, entity), server)
    return problems


async def check_copies(c: Checker) -> list[str]:
    """Each synced tablet's copy equals a fresh query of its scope, record by record."""
    return await _copies_equal(c, "copy_equals_scope", entities=CORE_ENTITIES, changed_scope=False)


async def check_copies_after_scope_change(c: Checker) -> list[str]:
    """The same for a tablet whose user was moved to another township: its copy is the new scope."""
    return await _copies_equal(c, "copy_equals_scope_after_move", entities=CORE_ENTITIES, changed_scope=True)


async def check_conflict_rows(c: Checker) -> list[str]:
    """The township's conflicts (open and resolved) reach every synced tablet as `conflict` rows."""
    return await _copies_equal(c, "conflicts_reach_tablets", entities=("conflict",), changed_scope=False)


async def check_convergence(c: Checker) -> list[str]:
    """Synced tablets of the same township hold the same records (receipt blocks are each their own)."""
    problems = []
    by_scope: dict[str, list[SimTablet]] = defaultdict(list)
    for tablet in c.world.tablets:
        if _synced(tablet) and not tablet.scope_changed:
            by_scope[c.world.townships[tablet.username]].append(tablet)
    for tablets in by_scope.values():
        for other in tablets[1:]:
            for entity in CORE_ENTITIES:
                if entity != "receipt_block":
                    c.items["same_scope_converges"] += len(tablets[0].store.records(entity))
                    problems += _diff(f"{tablets[0].name}≠{other.name} {entity}",
                                      copy_images(tablets[0], entity), copy_images(other, entity))  # fmt: skip
    return problems


def _descriptive(mu: m.AnyMutation) -> tuple[UUID | None, tuple[str, ...]] | None:
    if isinstance(mu, m.HouseholdUpdate):
        return None, DESCRIPTIVE["household"]
    if isinstance(mu, m.MemberUpdate):
        return mu.person_id, DESCRIPTIVE["member"]
    return None


async def check_no_value_lost(c: Checker) -> list[str]:
    """A descriptive value another writer set after a tablet's base, then replaced by the tablet's
    edit, is kept in a `field_overwritten` conflict of that edit (with the replaced value)."""
    problems = []
    changes = await c.field_changes()
    own = c.own_versions()
    conflicts: dict[tuple[UUID, int], list[asyncpg.Record]] = defaultdict(list)
    for r in await c.db.fetch("SELECT device_id, seq, kind, fields, server_values, tablet_values FROM sync_conflicts"):
        conflicts[(r["device_id"], r["seq"])].append(r)
    for tablet, entry in c.tablet_entries():
        mu, answer = entry.mutation, _final(entry)
        found = _descriptive(mu)
        if found is None or answer is None or answer.status not in ("applied", "applied_with_conflict"):
            continue
        person, names = found
        version = answer.household_version
        hid: UUID = mu.household_id  # type: ignore[union-attr]
        base: int = mu.base_version  # type: ignore[union-attr]
        if version is None:
            continue
        for name in names:
            value = getattr(mu, name)
            if value is None:
                continue
            c.items["no_value_lost_without_conflict"] += 1
            between = [r for r in changes.get((hid, person, name), []) if base < r["version"] < version]
            if (
                not between
                or between[-1]["version"] in own[(tablet.device_id, hid)]
                or between[-1]["device_id"] == tablet.device_id  # its own, even with the answer lost
            ):
                continue
            c.items["no_value_lost_without_conflict/overwrites"] += 1
            replaced = between[-1]["new_value"]
            if replaced == str(value):
                continue
            kept = [r for r in conflicts[(tablet.device_id, entry.seq)]
                    if r["kind"] == "field_overwritten" and name in r["fields"]
                    and (r["server_values"] or {}).get(name) == replaced]  # fmt: skip
            if not kept:
                problems.append(
                    f"{tablet.name} seq {entry.seq} {mu.__struct_config__.tag}: replaced {name} set at "
                    f"version {between[-1]['version']} (base {base}) without a conflict record"
                )
    return problems


async def check_stale_identity(c: Checker) -> list[str]:
    """An identity or membership edit never applies over a change of that person's identity or
    membership (or, for headship, the household's head) that another party (not this device) made
    after the tablet's base."""
    problems = []
    changes = await c.field_changes()
    own = c.own_versions()
    identity_fields = ("name", "id_number", "birth_cert_no", "birth_date", "sex", "relation", "membership")
    for tablet, entry in c.tablet_entries():
        mu, answer = entry.mutation, _final(entry)
        if (
            answer is None
            or answer.status not in ("applied", "applied_with_conflict")
            or answer.code in ("identity_held", "already_removed", "already_moved")
        ):
            continue
        version = answer.household_version
        if version is None:
            continue
        if isinstance(mu, m.MemberUpdate):
            edited = [
                k
                for k in IDENTITY
                if getattr(mu, k) is not None
                and _applied_here(changes, mu.household_id, mu.person_id, k, getattr(mu, k), version)
            ]
            if not edited:
                continue  # no identity value of it was written (held, or the server held it already)
            watch = [(mu.person_id, f) for f in identity_fields] + ([(None, "head")] if "relation" in edited else [])
        elif isinstance(mu, (m.MemberMove, m.MemberRemove)):
            left = "moved" if isinstance(mu, m.MemberMove) else mu.reason
            if not _applied_here(changes, mu.household_id, mu.person_id, "membership", left, version):
                continue
            watch = [(mu.person_id, f) for f in identity_fields]
        else:
            continue
        c.items["stale_identity_never_wins"] += 1
        mine = own[(tablet.device_id, mu.household_id)]
        for person, name in watch:
            for r in changes.get((mu.household_id, person, name), []):
                # Its own edits are no conflict (PROTOCOL.md §3), answered or not: a lost answer leaves
                # the version out of `mine`, but the change carries the device that pushed it.
                if (
                    mu.base_version < r["version"] < version
                    and r["version"] not in mine
                    and r["device_id"] != tablet.device_id
                ):
                    problems.append(f"{tablet.name} seq {entry.seq} {mu.__struct_config__.tag} applied from base "
                                    f"{mu.base_version} over {name} changed at version {r['version']}")  # fmt: skip
    return problems


def _applied_here(changes: dict[tuple[UUID, UUID | None, str], list[asyncpg.Record]], hid: UUID, person: UUID,
                  name: str, value: Any, version: int) -> bool:  # fmt: skip
    """True when this edit's own transaction (the version its answer names) wrote `value` into the
    field: a value the server held already (the same fix made twice) changes nothing and is no win."""
    text = str(value)
    if name == "relation" and value == "head":
        heads = changes.get((hid, None, "head"), [])
        if any(r["version"] == version and r["new_value"] == str(person) for r in heads):
            return True
    return any(r["version"] == version and r["new_value"] == text for r in changes.get((hid, person, name), []))


async def check_held_conflicts(c: Checker) -> list[str]:
    """Every answer naming conflicts has them on record, raised by that tablet's mutation, of the kind
    the answer says; every held edit is an open or resolved `held` conflict."""
    problems = []
    rows = {r["id"]: r for r in await c.db.fetch("SELECT id, device_id, seq, kind, outcome FROM sync_conflicts")}
    for tablet, entry in c.tablet_entries():
        answer = _final(entry)
        if answer is None:
            continue
        answer = answer.first or answer
        c.items["conflicts_on_record"] += len(answer.conflict_ids)
        for conflict_id in answer.conflict_ids:
            row = rows.get(conflict_id)
            if row is None or (row["device_id"], row["seq"]) != (tablet.device_id, entry.seq):
                problems.append(f"{tablet.name} seq {entry.seq}: conflict {conflict_id} not on record for it")
        kinds = {rows[i]["kind"] for i in answer.conflict_ids if i in rows}
        if answer.status == "quarantined" and answer.code in HELD_KINDS and answer.code not in kinds:
            problems.append(f"{tablet.name} seq {entry.seq}: held as {answer.code} without such a conflict")
        if answer.code == "field_conflict" and "field_overwritten" not in kinds:
            problems.append(f"{tablet.name} seq {entry.seq}: field_conflict without a field_overwritten conflict")
        if answer.code == "identity_held" and "stale_identity" not in kinds:
            problems.append(f"{tablet.name} seq {entry.seq}: identity_held without a stale_identity conflict")
    return problems


async def check_no_resurrection(c: Checker) -> list[str]:
    """A dissolved household never becomes active again nor keeps members; nobody who died rejoins a
    household; a household whose registration was held (or refused) has no enrolment or payment."""
    problems = []
    for r in await c.db.fetch(
        "SELECT household_id FROM record_changes WHERE person_id IS NULL AND field = 'status' "
        "AND old_value = 'dissolved' AND new_value <> 'dissolved'"
    ):
        problems.append(f"household {r['household_id']}: dissolved, then active again")
    for r in await c.db.fetch(
        "SELECT DISTINCT h.id FROM households h JOIN memberships ms ON ms.household_id = h.id AND ms.left_at IS NULL "
        "WHERE h.status = 'dissolved'"
    ):
        problems.append(f"household {r['id']}: dissolved but has current members")
    for r in await c.db.fetch(
        "SELECT DISTINCT a.person_id FROM memberships a JOIN memberships b ON b.person_id = a.person_id "
        "AND b.joined_at > a.left_at WHERE a.left_reason = 'deceased'"
    ):
        problems.append(f"person {r['person_id']}: deceased, then a member again")
    never: set[UUID] = set()
    created: set[UUID] = set()
    for tablet in c.world.all_tablets:
        ledger = await c.ledger(tablet.device_id)
        for entry in c.entries[tablet.device_id]:
            answer = ledger.get(entry.seq)
            if isinstance(entry.mutation, m.HouseholdCreate) and answer is not None:
                c.items["tombstones_never_resurrect"] += 1
                if answer.status in ("rejected", "quarantined"):
                    never.add(entry.mutation.household_id)
                elif answer.status == "applied":
                    created.add(entry.mutation.household_id)
    # The same registration reported again (a reinstalled app's re-exported queue) is held as a
    # duplicate of the household its first report created: that one stands.
    never -= created
    if never:
        for r in await c.db.fetch(
            "SELECT household_id, 'payment' AS what FROM payments WHERE household_id = ANY($1) UNION ALL "
            "SELECT household_id, 'enrolment' FROM enrollments WHERE household_id = ANY($1) UNION ALL "
            "SELECT id, 'household' FROM households WHERE id = ANY($1)",
            list(never),
        ):
            # A reviewer may apply a held registration; then it exists, by a person's decision.
            settled = await c.db.fetchval(
                "SELECT count(*) FROM sync_conflicts WHERE household_id = $1 AND resolution = 'applied'",
                r["household_id"],
            )
            if not settled:
                problems.append(f"household {r['household_id']}: registration held or refused, yet has a {r['what']}")
    return problems


async def check_revoked(c: Checker) -> list[str]:
    """A revoked tablet changes nothing after its revocation: its ledger, quarantine, payments and
    conflicts stay as they were (late deliveries and replays are refused)."""
    problems = []
    for tablet in c.world.all_tablets:
        if tablet.revocation is None:
            continue
        c.items["revoked_devices_change_nothing"] += 1
        now = await c.world._holdings(tablet.device_id)
        if now != tablet.revocation:
            problems.append(f"{tablet}: held {tablet.revocation} when revoked, {now} now")
    return problems


async def check_suspended_reports(c: Checker) -> list[str]:
    """A payment the server holds already is answered `duplicate` even from a suspended tablet, never
    quarantined a second time (found by `payments_exactly_once`, which runs before)."""
    c.items["suspended_reports_deduplicated"] = c.items["payments_exactly_once"]
    return c.late["suspended_reports_deduplicated"]


async def check_server_errors(c: Checker) -> list[str]:
    """The server never fails a request with a 5xx (apart from concurrency failures: next check)."""
    c.items["server_never_fails"] = len(c.world.server_errors)
    logged = c.world.error_log.errors
    if not logged:  # a server elsewhere: only its answers are known
        return list(c.world.server_errors)
    return [f"{error} ({sqlstate}) at {where}" for error, sqlstate, where in logged
            if sqlstate not in TRANSIENT_SQLSTATES]  # fmt: skip


async def check_concurrency_errors(c: Checker) -> list[str]:
    """Two transactions that collide (a serialization failure, a deadlock: two pulls of one tablet
    at once, a pull beside its push, pushes of two tablets locking the same households in another
    order) are retried or answered "try again": never a 500."""
    found = Counter(f"{error} ({sqlstate}) at {where}" for error, sqlstate, where in c.world.error_log.errors
                    if sqlstate in TRANSIENT_SQLSTATES)  # fmt: skip
    c.items["concurrency_failures_retried"] = len(c.world.server_errors)
    return [f"{n}× {what}" for what, n in sorted(found.items())]


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("final_sync_completes", check_final_sync),
    Invariant("sequences_without_gaps", check_sequences),
    Invariant("payments_exactly_once", check_payments),
    Invariant("suspended_reports_deduplicated", check_suspended_reports, depends="suspended_dedup"),
    Invariant("copy_equals_scope", check_copies),
    Invariant("copy_equals_scope_after_move", check_copies_after_scope_change, depends="scope_reset"),
    Invariant("same_scope_converges", check_convergence),
    Invariant("stale_identity_never_wins", check_stale_identity),
    Invariant("no_value_lost_without_conflict", check_no_value_lost),
    Invariant("conflicts_on_record", check_held_conflicts),
    Invariant("conflicts_reach_tablets", check_conflict_rows),
    Invariant("tombstones_never_resurrect", check_no_resurrection),
    Invariant("revoked_devices_change_nothing", check_revoked),
    Invariant("server_never_fails", check_server_errors),
    Invariant("concurrency_failures_retried", check_concurrency_errors, depends="retry_on_conflict"),
    # Last: with a broken server, a replay changes what the checks above read.
    Invariant("replay_changes_nothing", check_replay),
)
# Fixes some checks wait for (docs/fault-suite.md): skipped by default until they land.
# `CANBAO_FAULTS_PENDING` overrides the list (`none`: check everything).
#   scope_reset        a tablet whose user moved to another township gets that township (a reset)
#   retry_on_conflict  a serialization failure or deadlock between requests is retried, never a 500
#   suspended_dedup    a suspended tablet's report of a payment the server holds is a `duplicate`
PENDING: frozenset[str] = frozenset()


async def check_invariants(world: World, skip: Iterable[str] = PENDING) -> list[InvariantResult]:
    skipped = set(skip)
    checker = Checker(world)
    results = []
    for inv in INVARIANTS:
        if inv.depends is not None and inv.depends in skipped:
            results.append(InvariantResult(name=inv.name, depends=inv.depends, checked=False, problems=[]))
            continue
        problems = await inv.check(checker)
        details = {k: v for k, v in checker.items.items() if k.startswith(inv.name + "/")}
        results.append(InvariantResult(name=inv.name, depends=inv.depends, checked=True, problems=problems,
                                       items=checker.items[inv.name], details=details))  # fmt: skip
    return results


def pending_from_env(env: dict[str, str] | None = None) -> frozenset[str]:
    """`CANBAO_FAULTS_PENDING=scope_reset,conflicts` (or `none`): which dependent checks to skip."""
    raw = (env if env is not None else dict(os.environ)).get("CANBAO_FAULTS_PENDING")
    if raw is None:
        return PENDING
    return frozenset(x.strip() for x in raw.split(",") if x.strip() and x.strip() != "none")


def report(results: list[InvariantResult], limit: int = 12) -> str:
    lines = []
    for r in results:
        mark = "skipped" if not r.checked else ("FAILED" if r.problems else "ok")
        lines.append(f"  {r.name:<34} {mark}" + (f" (waits for {r.depends})" if not r.checked else ""))
        lines += [f"      {p}" for p in r.problems[:limit]]
        if len(r.problems) > limit:
            lines.append(f"      … {len(r.problems) - limit} more")
    return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    out, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)


def _brief(answer: m.Answer | None) -> str:
    if answer is None:
        return "nothing"
    return f"{answer.status}/{answer.code}" + (f" first {answer.first.status}" if answer.first else "")


# `canbao simulate` --------------------------------------------------------------------------------


class Options(msgspec.Struct, frozen=True, kw_only=True):
    tablets: int
    households: int  # registered by the tablets, over all days
    offline_days: int = 1
    faults: bool = False  # a faulty network, a suspension, a reinstall, duplicate registrations
    fault_rate: float = 0.25  # of requests, with --faults
    seed: int | None = None
    url: str | None = None  # a server already running; None: the app in this process
    check_pending: bool = False  # also run the checks that wait for fixes


DEMO_REVIEWERS = {"330106001000": "reviewer_a", "330106002000": "reviewer_b"}


class Progress:
    """A counter on standard error, redrawn in place when standard error is a terminal."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total, self.done_steps = max(total, 1), 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def step(self, what: str, n: int = 1) -> None:
        self.done_steps = min(self.total, self.done_steps + n)
        if self.enabled:
            width = 28
            filled = width * self.done_steps // self.total
            print(f"\r[{'#' * filled:<{width}}] {self.done_steps}/{self.total} {what:<40.40}", end="", file=sys.stderr,
                  flush=True)  # fmt: skip

    def finish(self) -> None:
        if self.enabled:
            print(f"\r{' ' * 80}\r", end="", file=sys.stderr, flush=True)


class Summary(msgspec.Struct, kw_only=True):
    options: Options
    seed: int
    seconds: float
    answers: dict[str, int]  # final answer status → count
    queued: int
    conflicts: dict[str, int]  # kind → raised during the run
    quarantined: dict[str, int]  # reason → count (this run's tablets)
    payments_made: tuple[int, int]  # count, fen: made on the tablets
    payments_recorded: tuple[int, int]
    payments_quarantined: tuple[int, int]
    payments_on_revoked: tuple[int, int]
    faults: dict[str, int]
    events: dict[str, int]
    results: list[InvariantResult]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    def text(self) -> str:
        o = self.options
        checked = [r for r in self.results if r.checked]
        failed = [r for r in checked if r.problems]
        waiting = sorted({r.depends for r in self.results if not r.checked and r.depends})

        def money(pair: tuple[int, int]) -> str:
            return f"{pair[0]} ({pair[1] / 100:,.2f} yuan)"

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"

        lines = [
            f"canbao simulate: {o.tablets} tablets, {o.households} households, {o.offline_days} offline day(s), "
            f"faults {'on' if o.faults else 'off'}, seed {self.seed} — {self.seconds:.1f} s",
            f"  mutations:   {self.queued} made offline; answers: {counts(self.answers)}",
            f"  conflicts:   {sum(self.conflicts.values())} raised ({counts(self.conflicts)})",
            f"  quarantine:  {sum(self.quarantined.values())} items for reviewers ({counts(self.quarantined)})",
            f"  payments in: {money(self.payments_made)} collected on the tablets",
            f"  payments out: {money(self.payments_recorded)} recorded, {money(self.payments_quarantined)} in "
            f"quarantine, {money(self.payments_on_revoked)} listed on revoked tablets' follow-up sheets",
            f"  faults:      {counts(self.faults)}",
            f"  events:      {counts(self.events)}",
            f"  invariants:  {len(checked)} checked, {len(failed)} failed"
            + (f"; waiting for fixes: {', '.join(waiting)}" if waiting else ""),
            report(self.results),
        ]
        return "\n".join(lines)


async def ensure_demo(db: asyncpg.Connection, passwords: Any, tablets: int, tag: str) -> list[TabletSpec]:
    """The demo district and its users (`canbao demo seed`), the year's policy, and one staff member
    per tablet (`sim_…`, the demo password), the tablets spread over the two townships."""
    from backend.actor import Actor, Role, Scope
    from backend.admin import service as admin
    from backend.policy import service as policies
    from backend.tools import demo

    await demo.seed(db, passwords)
    if not await policies.in_force(db, YEAR, date(YEAR - 1, 9, 1)):
        admin_id = await db.fetchval("SELECT id FROM users WHERE username = 'admin'")
        actor = Actor(kind="user", id=admin_id, role=Role.DISTRICT_ADMIN, scope=Scope(demo.DISTRICT, "district"))
        await policies.create_version(db, actor, YEAR, policies.PolicyIn(
            effective_from=date(YEAR - 1, 9, 1), premium_fen=demo.PREMIUM_FEN, window_start=date(YEAR - 1, 9, 1),
            window_end=date(YEAR - 1, 12, 31), note=f"{YEAR} policy (canbao simulate)",
        ))  # fmt: skip
    specs = []
    townships = sorted(DEMO_REVIEWERS)
    for i in range(tablets):
        township = townships[i % len(townships)]
        username = f"sim_{tag.lower()}_{i}"
        if not await db.fetchval("SELECT 1 FROM users WHERE username = $1", username):
            await admin.create_user(db, None, passwords, admin.UserCreate(
                username=username, password=demo.DEMO_PASSWORD, role=Role.TOWNSHIP_STAFF, division_code=township,
                full_name=f"模拟经办员 {i}",
            ))  # fmt: skip
        specs.append(TabletSpec(username, fmt="json" if i % 3 == 2 else "msgpack"))
    return specs


async def refuse_real_data(db: asyncpg.Connection) -> None:
    """The simulation writes made-up people into the database: never next to real ones."""
    from backend.tools import demo

    real = await db.fetchval(
        "SELECT count(*) FROM households WHERE NOT (village_code = ANY($1::text[]))", list(demo.VILLAGE_HOUSEHOLDS)
    )
    if real:
        raise SimulationError(f"the database holds {real} households outside the demo villages: "
                              "simulate only on a demo or test database")  # fmt: skip


def _day_plan(options: Options, rng: random.Random) -> list[list[int]]:
    """Households each tablet registers on each day: M spread over D days and N tablets."""
    plan = [[0] * options.tablets for _ in range(options.offline_days)]
    for _ in range(options.households):
        plan[rng.randrange(options.offline_days)][rng.randrange(options.tablets)] += 1
    return plan


async def run(options: Options, dsn: str, *, app_settings: Any = None, passwords: Any = None,
              progress: Progress | None = None) -> Summary:  # fmt: skip
    """Tablets work offline for `offline_days` days, syncing now and then where they find signal, then
    all sync at once; after a quiet sync every invariant is checked."""
    from backend.db import init_connection

    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    tag = "S" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
    started = time.monotonic()
    db = await asyncpg.connect(dsn, server_settings={"application_name": "canbao-simulate", "timezone": "UTC"})
    await init_connection(db)
    app_stack: Any = None
    try:
        await refuse_real_data(db)
        specs = await ensure_demo(db, passwords, options.tablets, tag)
        if options.url is not None:
            inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            base_url = options.url.rstrip("/")
        else:
            from backend.app import create_app

            app = create_app(app_settings, configure_logs=False)
            app_stack = app.lifespan()
            await app_stack.__aenter__()
            inner, base_url = httpx.ASGITransport(app=app), "http://canbao.simulate"  # type: ignore[arg-type]
        first_day = datetime.now(UTC) - timedelta(days=options.offline_days)
        day = [0]

        def clock() -> datetime:
            # Office hours of the simulated day (payments and device times): 08:30 to 17:30 local.
            return first_day + timedelta(days=day[0], hours=rng.uniform(0.5, 9.5))

        world = World(inner=inner, base_url=base_url, db=db, rng=rng, password=_demo_password(), tag=tag,
                      clock=clock)  # fmt: skip
        try:
            summary = await _simulate(world, options, specs, rng, day, progress or Progress(1, enabled=False))
        finally:
            await world.close()
    finally:
        if app_stack is not None:
            await app_stack.__aexit__(None, None, None)
        await db.close()
    summary.seed, summary.seconds = seed, time.monotonic() - started
    return summary


def _demo_password() -> str:
    from backend.tools import demo

    return demo.DEMO_PASSWORD


async def _simulate(world: World, options: Options, specs: list[TabletSpec], rng: random.Random, day: list[int],
                    progress: Progress) -> Summary:  # fmt: skip
    plan = _day_plan(options, rng)
    progress.total = options.tablets * (options.offline_days + 3) + 2
    await world.prepare(specs, DEMO_REVIEWERS)
    progress.step("tablets registered", options.tablets)
    if options.faults:
        for tablet in world.tablets:
            tablet.transport.rate = options.fault_rate
    # Morning of the first day, in the office: every tablet takes its first snapshot.
    await world.sync_together(list(world.tablets))
    progress.step("first snapshots", options.tablets)
    actions = list(DAY_MIX)
    weights = [DAY_MIX[a] for a in actions]
    for d in range(options.offline_days):
        day[0] = d
        for slot, tablet in enumerate(list(world.tablets)):
            for _ in range(plan[d][slot]):
                peers = [t for t in world.tablets if t is not tablet and
                         world.townships[t.username] == world.townships[tablet.username]]  # fmt: skip
                if options.faults and peers and rng.random() < 0.05:
                    await world.register_twice(tablet, rng.choice(peers), rng)  # the same family, twice
                else:
                    tablet.register(rng)
            for action in rng.choices(actions, weights, k=3 + 3 * plan[d][slot]):
                tablet.work(action, rng)
            if rng.random() < 0.3:  # found signal
                await tablet.sync()
            progress.step(f"day {d + 1}: {tablet.name}")
        for township in DEMO_REVIEWERS:  # the office works too
            for _ in range(rng.randint(0, 2)):
                await world.office_edit(township, rng)
            if rng.random() < 0.5:
                await world.review(township, rng)
        if options.faults and options.tablets >= 2:
            await _device_events(world, options, d, rng)
    day[0] = options.offline_days
    # Back in signal: everyone syncs at once, and again where the network (or the server) cut it
    # short; then a quiet final sync.
    for _ in range(3):
        waiting = [t for t in world.tablets if t.status != "revoked" and (t.pending() or not t.pulled)]
        if not waiting:
            break
        await world.sync_together(waiting)
    progress.step("everyone syncs", options.tablets)
    await world.quiesce()
    progress.step("quiet sync")
    results = await check_invariants(world, () if options.check_pending else PENDING)
    progress.step("invariants")
    progress.finish()
    return await _summary(world, options, results)


async def _device_events(world: World, options: Options, d: int, rng: random.Random) -> None:
    """With --faults: one tablet is suspended for a day, one app is reinstalled mid-way (its unsynced
    queue exported and pushed again by the new install)."""
    if d == 0:
        await world.suspend(world.tablets[-1])
    elif world.tablets[-1].status == "suspended":
        await world.reactivate(world.tablets[-1])
    if d == options.offline_days // 2 and not world.retired:
        await world.reinstall(rng.randrange(len(world.tablets) - 1), reexport=True)


async def _summary(world: World, options: Options, results: list[InvariantResult]) -> Summary:
    answers: Counter[str] = Counter()
    queued = 0
    made: dict[UUID, int] = {}
    revoked_payments: dict[UUID, int] = {}
    for tablet in world.all_tablets:
        for entry in tablet.store.entries():
            queued += 1
            answer = _final(entry)
            answers[(answer.first or answer).status if answer is not None else "left on a revoked tablet"] += 1
            if isinstance(entry.mutation, m.PaymentRecord):
                made[entry.mutation.payment_id] = entry.mutation.amount_fen
                if answer is None and tablet.status == "revoked":
                    revoked_payments[entry.mutation.payment_id] = entry.mutation.amount_fen
    devices = [t.device_id for t in world.all_tablets]
    conflicts = {r["kind"]: r["n"] for r in await world.db.fetch(
        "SELECT kind, count(*) AS n FROM sync_conflicts WHERE device_id = ANY($1) GROUP BY kind", devices)}  # fmt: skip
    quarantined = {
        r["reason"]: r["n"]
        for r in await world.db.fetch(
            "SELECT reason, count(*) AS n FROM sync_quarantine WHERE device_id = ANY($1) GROUP BY reason", devices
        )
    }
    ids = list(made)
    recorded = await world.db.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(amount_fen), 0) AS fen FROM payments WHERE id = ANY($1)", ids
    )
    held_ids = {r["payment_id"] for r in await world.db.fetch(
        "SELECT payment_id FROM sync_quarantine WHERE payment_id = ANY($1) AND kind = 'payment.record' "
        "AND status <> 'applied' AND reason <> 'payment_id_reused'", ids)}  # fmt: skip
    recorded_ids = {r["id"] for r in await world.db.fetch("SELECT id FROM payments WHERE id = ANY($1)", ids)}
    outstanding = {p: f for p, f in revoked_payments.items() if p not in held_ids and p not in recorded_ids}
    assert recorded is not None
    return Summary(
        options=options, seed=0, seconds=0.0, answers=dict(answers), queued=queued, conflicts=conflicts,
        quarantined=quarantined, payments_made=(len(made), sum(made.values())),
        payments_recorded=(recorded["n"], recorded["fen"]),
        payments_quarantined=(len(held_ids), sum(made[p] for p in held_ids)),
        payments_on_revoked=(len(outstanding), sum(outstanding.values())),
        faults={k: v for k, v in world.faults.items() if "/" not in k}, events=dict(world.events), results=results,
    )  # fmt: skip
