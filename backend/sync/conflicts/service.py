"""Telling a clean merge from a conflict, and writing the conflict down.

A tablet's edit carries the household version it was based on. `record_changes` (migration 0008,
written by triggers on every write path) says which field of which record changed after that
version, and what it was before: enough to merge edits of different fields, to resolve the same
descriptive field in arrival order while keeping the replaced value, and to hold an identity edit
made from a stale base (PROTOCOL.md §3, Conflicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.ids import uuid7
from backend.sync import sealed

Q = load_queries("backend.sync.conflicts")

# SPEC §3: ID number, name, birth date, sex, head of household and membership. A member's relation
# is part of who heads the household; the birth certificate number stands in for a missing ID number.
IDENTITY_FIELDS = frozenset({"name", "id_number", "birth_cert_no", "birth_date", "sex", "relation", "membership"})

Kind = Literal[
    "field_overwritten",
    "stale_identity",
    "stale_membership",
    "update_after_remove",
    "member_moved",
    "duplicate_household",
]


class Since(msgspec.Struct, frozen=True):
    """A household's changes after a base version, oldest first."""

    rows: list[tuple[UUID | None, str, str | None]]  # (person_id or None, field, old value)

    def changed(self, person_id: UUID | None, field: str) -> bool:
        return any(p == person_id and f == field for p, f, _ in self.rows)

    def base_value(self, person_id: UUID | None, field: str, current: Any) -> Any:
        """The value the tablet's base held: the old value of the first change after it."""
        for p, f, old in self.rows:
            if p == person_id and f == field:
                return old
        return current

    def identity_changed(self, person_id: UUID) -> list[str]:
        return sorted({f for p, f, _ in self.rows if p == person_id and f in IDENTITY_FIELDS})

    def head_changed(self) -> bool:
        return self.changed(None, "head")

    def membership_changed(self) -> bool:
        return any(f in ("membership", "head") for _, f, _ in self.rows)


# A household's changes by others after a base version, as read (`changes_since_many`): the base,
# and (person_id or None, field, old value in clear, version) oldest first.
Changes = tuple[int, list[tuple[UUID | None, str, str | None, int]]]


async def since(
    conn: Connection,
    household_id: UUID,
    base_version: int,
    current_version: int,
    device_id: UUID | None,
    known: Changes | None = None,
) -> Since:
    """The changes after `base_version` that `device_id` did not push itself. `known`: read
    already after a base at most this one (`changes_since_many`), and nobody else's since."""
    if base_version >= current_version:  # nothing can have changed: no round trip
        return Since([])
    if known is not None and known[0] <= base_version:
        return Since([(p, f, old) for p, f, old, version in known[1] if version > base_version])
    rows = await conn.fetch(Q["changes_since"], household_id, base_version, device_id)
    # A number's old value is kept sealed; the base a conflict shows is the clear one.
    return Since([(r["person_id"], r["field"], sealed.open_change(r["field"], r["old_value"])) for r in rows])


async def changes_since_many(conn: Connection, bases: dict[UUID, int], device_id: UUID | None) -> dict[UUID, Changes]:
    """`since`'s changes of many households, each after its base, in one round trip."""
    found: dict[UUID, Changes] = {x: (base, []) for x, base in bases.items()}
    if bases:
        rows = await conn.fetch(Q["changes_since_many"], list(bases), list(bases.values()), device_id)
        for r in rows:
            old = sealed.open_change(r["field"], r["old_value"])
            found[r["household_id"]][1].append((r["person_id"], r["field"], old, r["version"]))
    return found


async def lock_households(conn: Connection, household_ids: Iterable[UUID]) -> dict[UUID, dict[str, Any]]:
    """Locks the households in one order (by id): two pushes touching the same households in
    opposite orders wait for each other instead of deadlocking. Answers those that exist, as
    `household_locked` reads them."""
    rows = await conn.fetch(Q["lock_households"], sorted(household_ids))
    return {r["id"]: sealed.opened_record(r) for r in rows}


async def household_locked(conn: Connection, household_id: UUID) -> dict[str, Any] | None:
    """The household, locked, with its phone in clear (the fields an edit compares)."""
    row = await conn.fetchrow(Q["household_locked"], household_id)
    return None if row is None else sealed.opened_record(row)


async def person_now(
    conn: Connection, person_id: UUID, household_id: UUID, *, for_edit: bool = False
) -> dict[str, Any] | None:
    """The person's values in clear and their membership of the household. `for_edit`: locked, with
    what `members.update_member` reads of them besides (`person_for_edit`)."""
    row = await conn.fetchrow(Q["person_for_edit" if for_edit else "person_now"], person_id, household_id)
    return None if row is None else sealed.opened_record(row)


async def held_household(conn: Connection, household_id: UUID) -> UUID | None:
    """The open duplicate_household conflict holding this (never created) household, if any."""
    value: UUID | None = await conn.fetchval(Q["held_household"], household_id)
    return value


def as_text(value: Any) -> str | None:
    """Values as record_changes keeps them (text), so base, server and tablet values compare."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def values(fields: Iterable[str], source: Mapping[str, Any]) -> dict[str, str | None]:
    return {f: as_text(source.get(f)) for f in fields}


class Raised(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    outcome: Literal["applied", "held"]
    household_id: UUID
    village_code: str
    person_id: UUID | None = None
    fields: list[str] = []
    base_version: int | None = None
    server_version: int | None = None
    base_values: dict[str, Any] = {}
    server_values: dict[str, Any] = {}
    tablet_values: dict[str, Any] = {}
    mutation: dict[str, Any] | None = None
    other_household_id: UUID | None = None
    seq: int | None = None


def opened(row: Mapping[str, Any] | asyncpg.Record) -> dict[str, Any]:
    """A stored conflict with its values' numbers in clear and its held mutation opened (`mutation`)."""
    out = dict(row.items())
    for name in ("base_values", "server_values", "tablet_values"):
        if name in out:
            out[name] = sealed.open_values(out[name])
    if "mutation_enc" in out:
        out["mutation"] = sealed.open_document(sealed.HELD_MUTATION, out.pop("mutation_enc"))
    return out


async def raise_conflict(conn: Connection, actor: Actor, c: Raised) -> UUID:
    conflict_id = uuid7()
    await conn.execute(
        Q["insert_conflict"],
        conflict_id,
        c.village_code,
        c.household_id,
        c.person_id,
        c.kind,
        c.outcome,
        sorted(c.fields),
        c.base_version,
        c.server_version,
        sealed.seal_values(c.base_values),
        sealed.seal_values(c.server_values),
        sealed.seal_values(c.tablet_values),
        None if c.mutation is None else sealed.seal_document(sealed.HELD_MUTATION, c.mutation),
        c.other_household_id,
        actor.device_id,
        c.seq,
        actor.id,
    )
    # Field names and ids only: the values are personal data and stay in the conflict row.
    await record(
        conn,
        actor,
        "raise",
        "sync_conflict",
        conflict_id,
        division_code=c.village_code,
        summary={"kind": c.kind, "outcome": c.outcome, "household_id": str(c.household_id), "fields": sorted(c.fields)},
    )
    return conflict_id
