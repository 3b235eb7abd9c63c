"""What the invariants read once a world has quiesced (every tablet's queue with its answers, the
server's tables), the shape of an invariant and of its result, and the report of the results."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.db import load_queries
from backend.sync import sealed
from backend.sync.conflicts import service as conflicts
from backend.tools.simulate.tablet import SimTablet
from backend.tools.simulate.world import World
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import QueueEntry

Q = load_queries("backend.tools.simulate", "invariants.sql")


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
    depends: str | None = None  # the server fix it waits for (see invariants.PENDING)

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
        rows = await self.db.fetch(Q["ledger"], device_id)
        return {r["seq"]: msgspec.convert(r["answer"], m.Answer) for r in rows}

    def own_versions(self) -> dict[tuple[UUID, UUID], set[int]]:
        """(device, household) → the household versions that device's own applied edits produced."""
        own: dict[tuple[UUID, UUID], set[int]] = defaultdict(set)
        for tablet, entry in self.tablet_entries():
            hid = getattr(entry.mutation, "household_id", None)
            answer = final_answer(entry)
            if answer is None or hid is None or answer.household_version is None:
                continue
            # Only answers that changed the household made a version (a held edit names the current one).
            if answer.status in ("applied", "applied_with_conflict") and not (answer.code or "").startswith("already"):
                own[(tablet.device_id, hid)].add(answer.household_version)
        return own

    async def field_changes(self) -> dict[tuple[UUID, UUID | None, str], list[dict[str, Any]]]:
        """Every versioned field change, by (household, person, field), values in clear."""
        changes: dict[tuple[UUID, UUID | None, str], list[dict[str, Any]]] = defaultdict(list)
        for r in await self.db.fetch(Q["field_changes"]):
            change = dict(r.items())
            for name in ("old_value", "new_value"):
                change[name] = sealed.open_change(r["field"], r[name])
            changes[(r["household_id"], r["person_id"], r["field"])].append(change)
        return changes


def final_answer(entry: QueueEntry) -> m.Answer | None:
    """The answer a tablet keeps for a queued mutation; None while it is still pending."""
    return entry.answer if entry.state != "pending" else None


# Refusals: meant by the scenario, or not ---------------------------------------------------------


APPLIED = ("applied", "applied_with_conflict")


def mutation_keys(mu: m.AnyMutation) -> set[UUID]:
    """The households, persons and payment a mutation is about."""
    keys: set[UUID] = set()
    for name in ("household_id", "to_household_id", "person_id", "payment_id"):
        value = getattr(mu, name, None)
        if isinstance(value, UUID):
            keys.add(value)
    keys.update(getattr(mu, "person_ids", None) or ())
    if isinstance(mu, m.HouseholdCreate):
        keys.update(x.person_id for x in mu.members)
    return keys


class Refusals(msgspec.Struct, kw_only=True):
    """The tablets' mutations answered `rejected` or `quarantined`: those the scenario meant, by
    cause, and those it did not, by `kind status code` (a fault-free run must have none of these)."""

    meant: dict[str, int]
    unmeant: dict[str, int]


def refusals(world: World) -> Refusals:
    """Sorts every refusal by its cause. The scenario means one when the work touched what one of its
    deliberate events touched (`World.on_purpose`: a family registered twice, a reinstalled app's
    re-exported queue, an office edit), when another tablet worked on the same household or person
    (the competition the township's tablets are given), when the tablet was suspended, or when it
    follows from an earlier refusal it meant (a payment for an enrolment so refused), or when
    another tablet dissolved a household the person it names was in (as the tablets last saw it):
    the dissolution cancelled their enrolments, and a cancellation names only the person."""
    cause_of: dict[UUID, str] = dict(world.on_purpose)
    workers: dict[UUID, set[UUID]] = defaultdict(set)  # key → the tablets (device ids) that worked on it
    households_of: dict[UUID, set[UUID]] = defaultdict(set)  # person → the households they were in
    dissolved: dict[UUID, set[UUID]] = defaultdict(set)  # household → the tablets that dissolved it
    for tablet in world.all_tablets:
        for entry in tablet.store.entries():
            for key in mutation_keys(entry.mutation):
                workers[key].add(tablet.device_id)
            answer = final_answer(entry)
            if isinstance(entry.mutation, m.HouseholdDissolve) and answer is not None and answer.status in APPLIED:
                dissolved[entry.mutation.household_id].add(tablet.device_id)
        for entity in ("membership", "enrollment"):
            for row in tablet.store.records(entity).values():
                households_of[UUID(row["person_id"])].add(UUID(row["household_id"]))
    meant: Counter[str] = Counter()
    unmeant: Counter[str] = Counter()
    for tablet in world.all_tablets:
        for entry in tablet.store.entries():
            answer = final_answer(entry)
            if answer is None or answer.status not in ("rejected", "quarantined"):
                continue
            keys = mutation_keys(entry.mutation)
            cause = cause_of.get(entry.mutation.mutation_id)
            if cause is None and answer.code == "device_suspended":
                cause = "suspension"
            cause = cause or next((cause_of[k] for k in sorted(keys) if k in cause_of), None)
            if cause is None and any(len(workers[k]) > 1 for k in keys):
                cause = "other_tablet"
            homes = {h for k in keys for h in households_of.get(k, ())}
            if cause is None and any(dissolved[h] - {tablet.device_id} for h in homes):
                cause = "other_tablet"
            if cause is None:
                unmeant[f"{entry.mutation.__struct_config__.tag} {answer.status} {answer.code}"] += 1
                continue
            meant[cause] += 1
            for key in keys:  # what follows from it is meant too
                cause_of.setdefault(key, cause)
    return Refusals(meant=dict(meant), unmeant=dict(unmeant))


# Images of the server and of tablets, for the checks to compare ----------------------------------

# Every table a push may write (not the audit log or device clocks).
FINGERPRINTED = (
    "households",
    "persons",
    "memberships",
    "person_moves",
    "enrollments",
    "household_query_codes",
    "payments",
    "payment_allocations",
    "payment_events",
    "receipt_blocks",
    "receipt_retirements",
    "sync_mutations",
    "sync_quarantine",
    "sync_conflicts",
    "record_changes",
    "sync_changes",
)


async def fingerprint(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every table a push may write (not the audit log or device clocks)."""
    out = {}
    for table in FINGERPRINTED:
        row = await db.fetchrow(Q["table_digest"].format(table=table))
        assert row is not None
        out[table] = (row["n"], row["d"])
    return out


# The row types of a pull, each with a `scope_<entity>` query of its own (invariants.sql).
SCOPE_ENTITIES = (
    "household",
    "person",
    "membership",
    "enrollment",
    "payment",
    "payment_event",
    "policy_version",
    "receipt_block",
    "conflict",
)
ROW_TYPES: dict[str, type[Any]] = {t.__struct_config__.tag: t for t in m.Row.__args__}
# Conflict rows are compared by a check of their own.
CORE_ENTITIES = tuple(e for e in SCOPE_ENTITIES if e != "conflict")


async def scope_images(db: asyncpg.Connection, tablet: SimTablet, township: str, entity: str) -> dict[str, Any]:
    """A fresh query of the tablet's scope (not the pull's own SQL), as the rows a pull sends."""
    args: list[Any] = [township[:9]]
    if entity == "receipt_block":
        args += [tablet.user_id, tablet.device_id]
    rows = await db.fetch(Q[f"scope_{entity}"], *args)
    row_type = ROW_TYPES[entity]
    opened = conflicts.opened if entity == "conflict" else dict
    return {str(r["id"]): _image(msgspec.convert(opened(sealed.opened_record(r)), row_type)) for r in rows}


def copy_images(tablet: SimTablet, entity: str) -> dict[str, Any]:
    row_type = ROW_TYPES[entity]
    return {str(k): _image(msgspec.convert(v, row_type)) for k, v in tablet.store.records(entity).items()}


def _image(row: Any) -> Any:
    """A row as plain values to compare; sets (a policy's categories) sorted, since two equal
    frozensets built in different orders may iterate differently."""
    return msgspec.to_builtins(row, order="deterministic")


def report(results: list[InvariantResult], limit: int = 12) -> str:
    lines = []
    for r in results:
        mark = "skipped" if not r.checked else ("FAILED" if r.problems else "ok")
        lines.append(f"  {r.name:<34} {mark}" + (f" (waits for {r.depends})" if not r.checked else ""))
        lines += [f"      {p}" for p in r.problems[:limit]]
        if len(r.problems) > limit:
            lines.append(f"      … {len(r.problems) - limit} more")
    return "\n".join(lines)
