"""A simulated tablet: the reference client with its own SQLite store behind its own faulty network,
the working view it keeps of its copy, and the offline work it does (registering, editing, enrolling,
collecting)."""

# ruff: noqa: S311 (simulation dice, not secrets)
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args
from uuid import UUID

import httpx
import msgspec

from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import SyncClient, SyncFailed, TabletStore
from mobile_sync_protocol.faults import FaultyTransport

if TYPE_CHECKING:  # the world makes its tablets; a tablet reaches back for the world's dice and office
    from backend.tools.simulate.world import World

YEAR = 2026  # the coverage year the tablets enrol and collect for

WorkAction = Literal[
    "register",
    "edit_household",
    "edit_member_phone",
    "edit_member_identity",
    "make_head",
    "add_member",
    "move_member",
    "remove_member",
    "dissolve",
    "enrol",
    "pay",
    "cancel_enrolment",
    "void",
]
WORK_ACTIONS: tuple[WorkAction, ...] = get_args(WorkAction)


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


@dataclass
class View:
    houses: dict[UUID, House] = field(default_factory=dict)
    # A person's live enrolment of the year is the person's, whichever household it was made in: the
    # server moves it with them (PROTOCOL.md, "A person's enrolment"); so the view keeps it by person.
    enrolled: set[UUID] = field(default_factory=set)  # persons with a live enrolment of the year
    paid: set[UUID] = field(default_factory=set)  # … no longer `registered` (paid, subsidised, confirmed)
    payments: dict[UUID, datetime] = field(default_factory=dict)  # this tablet's, not voided

    def unenrolled(self, house: House) -> set[UUID]:
        return set(house.members) - self.enrolled

    def unpaid(self, house: House) -> set[UUID]:
        """Members enrolled and still owing (registered): whom a payment or a cancellation is for."""
        return (set(house.members) & self.enrolled) - self.paid


def build_view(store: TabletStore, device_id: UUID, year: int = YEAR) -> View:
    view = View()
    for hid, r in store.records("household").items():
        view.houses[hid] = House(
            id=hid,
            village_code=r["village_code"],
            household_no=r["household_no"],
            address=r["address"],
            phone=r["phone"],
            status=r["status"],
            seen_version=r["row_version"],
        )
    relations = {r["person_id"]: r["relation"] for r in store.records("membership").values() if r["left_at"] is None}
    for pid, r in store.records("person").items():
        house = view.houses.get(UUID(r["household_id"])) if r["household_id"] else None
        if house is not None:
            house.members[pid] = Member(pid, r["name"], relations.get(str(pid), "other"), r["phone"])
    for person, r in store.live_enrolments(year).items():
        view.enrolled.add(person)
        if r["status"] != "registered":
            view.paid.add(person)
    voided = {UUID(r["payment_id"]) for r in store.records("payment_event").values() if r["kind"] == "void"}
    for pid, r in store.records("payment").items():
        if r["device_id"] == str(device_id) and pid not in voided:
            view.payments[pid] = datetime.fromisoformat(r["collected_at"])
    for entry in store.entries():
        if entry.state == "pending":
            apply_local(view, entry.mutation)
    return view


def _leaves(view: View, person: UUID, reason: str) -> None:
    """What a removal does to the person's enrolment (the server's rule, backend.enrollment.members):
    a death cancels it; any other removal cancels it while nothing is paid."""
    if reason == "deceased" or person not in view.paid:
        view.enrolled.discard(person)
        view.paid.discard(person)


def apply_local(view: View, mu: m.AnyMutation) -> None:
    """What the tablet shows after a change it made offline (before the server has answered)."""
    if isinstance(mu, m.HouseholdCreate):
        view.houses[mu.household_id] = House(
            id=mu.household_id,
            village_code=mu.village_code,
            household_no=mu.household_no,
            address=mu.address,
            phone=mu.phone,
            status="active",
            seen_version=1,
            members={x.person_id: Member(x.person_id, x.name, x.relation, x.phone) for x in mu.members},
        )
        return
    if isinstance(mu, m.EnrollmentCancel):
        view.enrolled.discard(mu.person_id)
        view.paid.discard(mu.person_id)
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
        for person in house.members:
            _leaves(view, person, mu.reason)
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
        # The person's enrolment goes with them (it is kept by person).
        moving = house.members.pop(mu.person_id, None)
        target = view.houses.get(mu.to_household_id)
        if moving is not None and target is not None:
            target.members[mu.person_id] = Member(moving.person_id, moving.name, mu.relation, moving.phone)
    elif isinstance(mu, m.MemberRemove):
        if house.members.pop(mu.person_id, None) is not None:
            _leaves(view, mu.person_id, mu.reason)
        if not house.members:
            house.status = "dissolved"
    elif isinstance(mu, m.EnrollmentCreate):
        view.enrolled.update(mu.person_ids)
    elif isinstance(mu, m.PaymentRecord):
        view.paid.update(mu.person_ids)
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

    def __init__(
        self,
        world: World,
        *,
        name: str,
        username: str,
        user_id: UUID,
        device_id: UUID,
        secret: str,
        token: str,
        block: ReceiptBlock,
        fmt: codec.Format,
    ) -> None:
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
            **self._stamp(),
            household_id=people.uuid(),
            village_code=village,
            household_no=number,
            address=f"{rng.randint(1, 12)}组{rng.randint(1, 300)}号",
            phone=phone,
            members=members,
        )
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
            return self.enqueue(
                m.MemberUpdate(**stamp, household_id=h.id, person_id=person, base_version=h.seen_version, **edit)
            )
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
                return self.enqueue(
                    m.MemberRemove(
                        **stamp, household_id=h.id, person_id=person, base_version=h.seen_version, reason=reason
                    )
                )
            targets = sorted(
                x.id
                for x in self.view.houses.values()
                if x.status == "active" and x.id != h.id and x.village_code[:9] == h.village_code[:9]
            )
            if not targets:
                return None
            return self.enqueue(
                m.MemberMove(
                    **stamp,
                    household_id=h.id,
                    person_id=person,
                    base_version=h.seen_version,
                    to_household_id=rng.choice(targets),
                    relation="other",
                )
            )
        if action == "dissolve":
            h = self._houses(rng)
            if h is None:
                return None
            return self.enqueue(
                m.HouseholdDissolve(
                    **stamp,
                    household_id=h.id,
                    base_version=h.seen_version,
                    reason=rng.choice(("removed", "data_error")),
                )
            )
        if action == "enrol":
            h = self._houses(rng, need=lambda h: bool(self.view.unenrolled(h)))
            if h is None:
                return None
            persons = sorted(self.view.unenrolled(h))
            code_hash = None
            if self.client.query_code_key() is not None and rng.random() < 0.5:
                _, code_hash = self.client.new_query_code(h.id, YEAR)
            return self.enqueue(
                m.EnrollmentCreate(
                    **stamp, household_id=h.id, coverage_year=YEAR, person_ids=persons, query_code_hash=code_hash
                )
            )
        if action == "pay":
            h = self._houses(rng, need=lambda h: bool(self.view.unpaid(h)))
            if h is None or self.next_receipt > self.block.last_no:
                return None
            persons = sorted(self.view.unpaid(h))
            due = self.world.premium_fen * len(persons)
            amount = due if rng.random() < 0.8 else max(100, due + rng.choice((-1, 1)) * rng.randrange(1, 200) * 100)
            receipt = self.block.number(self.next_receipt)
            self.next_receipt += 1
            return self.enqueue(
                m.PaymentRecord(
                    **stamp,
                    payment_id=people.uuid(),
                    household_id=h.id,
                    coverage_year=YEAR,
                    person_ids=persons,
                    amount_fen=amount,
                    method=rng.choice(("cash", "cash", "cash", "qr")),
                    receipt_no=receipt,
                    collected_at=stamp["device_time"],
                    due_fen=due,
                    # After the window, the app shows the quote's warning and the resident says yes.
                    acknowledge_no_cover=self.world.local_date(stamp["device_time"]) > self.world.window_end,
                )
            )
        if action == "cancel_enrolment":
            h = self._houses(rng, need=lambda h: bool(self.view.unpaid(h)))
            if h is None:
                return None
            person = rng.choice(sorted(self.view.unpaid(h)))
            return self.enqueue(
                m.EnrollmentCancel(
                    **stamp,
                    person_id=person,
                    coverage_year=YEAR,
                    reason=rng.choice(("data_error", "duplicate", "employee_insurance")),
                )
            )
        assert action == "void"
        # A void is for a payment of the same business day: the local date, as the server counts it.
        tz = self.world.timezone
        today = self.world.clock().astimezone(tz).date()
        mine = sorted(p for p, at in self.view.payments.items() if at.astimezone(tz).date() == today)
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
