"""The world a simulation runs in: its tablets, the back office (REST as the district admin and the
township reviewers), what happens to tablets (suspension, revocation, reinstall, a user's move) and
the quiet final sync; with a database connection for checking."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import msgspec

from backend import clock as backend_clock
from backend.db import load_queries
from backend.tools.simulate.people import People
from backend.tools.simulate.tablet import YEAR, ReceiptBlock, Revocation, SimTablet
from mobile_sync_protocol import codec
from mobile_sync_protocol.client import SyncClient

Q = load_queries("backend.tools.simulate")


class SimulationError(Exception):
    """The simulation could not set itself up (not an invariant failure)."""


# The back office ----------------------------------------------------------------------------------


class Office:
    """REST calls as the district admin and the township reviewers (no faults: an office line)."""

    def __init__(self, http: httpx.AsyncClient, password: str) -> None:
        self.http, self.password = http, password
        self.tokens: dict[str, dict[str, str]] = {}

    async def login(self, username: str, **device: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": self.password, **device}
        )
        if response.status_code != 200:
            raise SimulationError(f"log-in of {username} failed: {response.status_code} {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    async def call(
        self, username: str, method: str, url: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        for _ in range(2):
            if username not in self.tokens:
                token = (await self.login(username))["access_token"]
                self.tokens[username] = {"Authorization": f"Bearer {token}"}
            response = await self.http.request(
                method, url, json=json, headers={**self.tokens[username], **(headers or {})}
            )
            if response.status_code != 401:
                return response
            self.tokens.pop(username, None)
        return response

    async def ok(self, username: str, method: str, url: str, *, json: Any = None) -> Any:
        response = await self.call(username, method, url, json=json)
        if response.status_code not in (200, 201):
            raise SimulationError(f"{method} {url} as {username}: {response.status_code} {response.text[:300]}")
        return response.json()


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
        self,
        *,
        inner: httpx.AsyncBaseTransport,
        base_url: str,
        db: asyncpg.Connection,
        rng: random.Random,
        password: str,
        tag: str = "S",
        clock: Callable[[], datetime] | None = None,
        timezone: tzinfo = UTC,
        pull_limit: int = 1000,
        faults: Counter[str] | None = None,
        stats: Counter[str] | None = None,
    ) -> None:
        self.inner, self.base_url, self.db, self.rng, self.tag = inner, base_url, db, rng, tag
        self.clock: Callable[[], datetime] = clock or backend_clock.now  # the server's, when in this process
        self.timezone = timezone  # the server's local time: business dates (a void is for the same one)
        self.pull_limit = pull_limit
        self.faults: Counter[str] = Counter() if faults is None else faults
        self.stats: Counter[str] = Counter() if stats is None else stats
        self.events: Counter[str] = Counter()
        self.server_errors: list[str] = []  # every 5xx answer, including those a fault threw away
        self.error_log = ServerErrorLog()  # their causes, when the server runs in this process
        logging.getLogger("canbao.errors").addHandler(self.error_log)
        self.plain = httpx.AsyncClient(
            transport=inner, base_url=base_url, timeout=60, event_hooks={"response": [self._watch_office]}
        )
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
        # Once the window has closed, the waiting period may push a payment's cover past the year's
        # end: the app warns and the resident's word is recorded (acknowledge_no_cover).
        self.window_end = date(YEAR - 1, 12, 31)
        self.prefixes = 0
        self.unfinished: list[str] = []  # what the quiet final sync could not finish
        # What the scenario set up to be refused (a family registered twice, a reinstalled app's
        # re-exported queue, the office's competing edits): household, person and mutation ids → the
        # cause. A refusal touching none of them is one the scenario did not mean (checker.refusals).
        self.on_purpose: dict[UUID, str] = {}

    def watch(self, request: httpx.Request, response: httpx.Response) -> None:
        if response.status_code >= 500:
            self.server_errors.append(
                f"{request.method} {request.url.path} → {response.status_code} {response.text[:120]}"
            )

    async def _watch_office(self, response: httpx.Response) -> None:
        if response.status_code >= 500:
            await response.aread()
            self.watch(response.request, response)

    def meant(self, cause: str, keys: Iterable[UUID]) -> None:
        """Marks what a deliberate event touched: a refusal of work on it is the event's doing."""
        for key in keys:
            self.on_purpose.setdefault(key, cause)

    def local_date(self, moment: datetime) -> date:
        """The business date of `moment` in the server's time zone."""
        return moment.astimezone(self.timezone).date()

    @property
    def all_tablets(self) -> list[SimTablet]:
        return [*self.tablets, *self.retired]

    async def prepare(self, specs: Iterable[TabletSpec], reviewers: dict[str, str]) -> None:
        """Looks the users and villages up, then registers a tablet per spec (log-in, receipt block)."""
        self.reviewers = dict(reviewers)
        for row in await self.db.fetch(Q["users"]):
            self.user_ids[row["username"]] = row["id"]
            self.townships[row["username"]] = row["division_code"]
        for township in {*self.reviewers, *(self.townships[s.username] for s in specs)}:
            rows = await self.db.fetch(Q["villages_of_township"], township)
            self.villages[township] = [r["code"] for r in rows]
        policy = await self.db.fetchrow(Q["policy_of_year"], YEAR)
        if policy is None:
            raise SimulationError(f"no policy published for {YEAR}")
        self.premium_fen, self.window_end = policy["premium_fen"], policy["window_end"]
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
        registered = await self.office.ok(
            username, "POST", "/api/v1/devices", json={"model": "SimTab", "app_version": "sim-1"}
        )
        device_id, secret = UUID(registered["device"]["id"]), registered["device_secret"]
        session = await self.office.login(username, device_id=str(device_id), device_secret=secret)
        prefix = self._prefix()
        township = self.townships[username]
        await self.office.ok(
            self.reviewers[township],
            "POST",
            "/api/v1/receipt-blocks",
            json={
                "collector_id": str(self.user_ids[username]),
                "device_id": str(device_id),
                "prefix": prefix,
                "first_no": 1,
                "last_no": 99_999,
            },
        )
        tablet = SimTablet(
            self,
            name=name,
            username=username,
            user_id=self.user_ids[username],
            device_id=device_id,
            secret=secret,
            token=session["access_token"],
            block=ReceiptBlock(prefix, 1, 99_999),
            fmt=fmt,
        )
        # Registered in the office, online: the tablet takes its store key there (and keeps it in
        # memory while it runs), before it goes out behind its faulty network.
        async with httpx.AsyncClient(transport=self.inner, base_url=self.base_url, timeout=60) as http:
            await SyncClient(http, tablet.store, device_id, session["access_token"], fmt).unlock()
        return tablet

    async def log_in(self, tablet: SimTablet) -> None:
        session = await self.office.login(tablet.username, device_id=str(tablet.device_id), device_secret=tablet.secret)
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
        original = first.register(rng)
        copy = second.register(rng, like=original)
        for mu in (original, copy):
            self.meant("duplicate_household", [mu.household_id, *(x.person_id for x in mu.members)])
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
        tablet.revocation = await self.holdings(tablet.device_id)
        self.events["revoke"] += 1
        return True

    async def holdings(self, device_id: UUID) -> Revocation:
        """What the server holds of a device: none of it may grow once the device is revoked."""
        row = await self.db.fetchrow(Q["device_holdings"], device_id)
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
                    copy = new.client.enqueue(msgspec.structs.replace(entry.mutation, mutation_id=self.people.uuid()))
                    self.meant("reinstall", [copy.mutation_id])
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
        await self.office.ok(
            self.admin, "PATCH", f"/api/v1/users/{self.user_ids[username]}", json={"division_code": township}
        )
        self.townships[username] = township
        for tablet in self.all_tablets:
            if tablet.username == username:
                tablet.scope_changed, tablet.pulled = True, False
        self.events["scope_change"] += 1
        return True

    async def office_edit(self, township: str, rng: random.Random) -> str | None:
        """A back-office edit through REST (If-Match on a fresh read): the competition tablets meet."""
        reviewer = self.reviewers[township]
        rows = await self.db.fetch(Q["households_for_office"], township, self.tag)
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
        person: str | None = None  # the member the edit is about, if any
        target: UUID | None = None  # the household a move goes to
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
            person = str(x.person_id)
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
            response = await self.office.call(
                reviewer,
                "POST",
                f"{url}/members/{person}/move",
                json={"to_household_id": str(target), "relation": "other"},
                headers=match,
            )
        if response is None:
            return None
        self.stats[f"office/{kind}/{response.status_code}"] += 1
        if response.status_code in (200, 201):
            touched = [household_id, *([UUID(str(person))] if person is not None else [])]
            self.meant("office_edit", [*touched, *([target] if target is not None else [])])
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
            response = await self.office.call(
                reviewer,
                "POST",
                f"/api/v1/sync/quarantine/{item['id']}/settle",
                json={"resolution": "apply" if apply else "dismiss", "note": "simulated review"},
            )
            outcome = f"settle/{'apply' if apply else 'dismiss'}/{response.status_code}"
        else:
            page = await self.office.ok(reviewer, "GET", "/api/v1/sync/conflicts?open=true&limit=50")
            if not page["items"]:
                return None
            item = rng.choice(page["items"])
            choices = {"field_overwritten": ("kept", "restored"), "update_after_remove": ("discarded",)}
            resolution = rng.choice(choices.get(item["kind"], ("applied", "discarded")))
            response = await self.office.call(
                reviewer,
                "POST",
                f"/api/v1/sync/conflicts/{item['id']}/resolve",
                json={"resolution": resolution, "note": "simulated review"},
            )
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
