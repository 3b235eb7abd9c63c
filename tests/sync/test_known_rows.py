"""A push's handlers hand the services the rows they read already (the household locked, the person
locked with their membership; whether a payment's enrolments were registered in this push) instead
of the services reading them again: the answers, rows and audit must be those of reading them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from backend import clock
from backend.actor import Actor, Role, Scope
from backend.enrollment import households as household_service
from backend.enrollment import members as member_service
from backend.errors import NotFound
from backend.sync.conflicts import service as conflicts
from backend.tools import demo
from mobile_sync_protocol import messages as m
from tests.sync.test_conflicts import edit_member, remove
from tests.sync.test_push_sets import _one_by_one, _seen
from tests.sync_world import Client, enrol, household_create, payment, push, world

Conn = asyncpg.Connection  # type: ignore[type-arg]
TODAY = date(2026, 3, 2)


async def _admin(conn: Conn) -> Actor:
    admin_id = await conn.fetchval("SELECT id FROM users WHERE username = 'admin'")
    return Actor(kind="user", id=admin_id, role=Role.DISTRICT_ADMIN, scope=Scope(demo.DISTRICT, "district"))


async def _kept(conn: Conn, household_id: uuid.UUID) -> list[Any]:
    """The household, its people and memberships and its audit, as a write leaves them."""
    household = await conn.fetchrow(
        "SELECT head_person_id, status, row_version, phone_hash FROM households WHERE id = $1", household_id
    )
    people = await conn.fetch(
        "SELECT p.name, p.sex, p.birth_date, p.id_number_hash, p.phone_hash, p.row_version, m.relation, m.left_reason"
        " FROM memberships m JOIN persons p ON p.id = m.person_id WHERE m.household_id = $1 ORDER BY p.name",
        household_id,
    )
    audit = await conn.fetch(
        "SELECT action, entity, summary FROM audit_log WHERE entity_id = $1 OR entity = 'enrollment'"
        " ORDER BY id DESC LIMIT 5",
        str(household_id),
    )
    return [dict(household or {}), [dict(r) for r in people], [dict(r) for r in audit]]


def _answer(household: household_service.Household) -> Any:
    as_built = msgspec.to_builtins(household)
    return {k: v for k, v in as_built.items() if k not in ("created_at", "updated_at")} | {
        "members": [{k: v for k, v in x.items() if k not in ("created_at", "updated_at")} for x in as_built["members"]]
    }


async def _read_and_known(
    conn: Conn, call: Callable[[dict[str, Any] | None, dict[str, Any] | None], Awaitable[Any]], ids: tuple[Any, Any]
) -> tuple[Any, Any]:
    """The call reading its rows, then (that undone) given the rows a push's handler reads."""
    outcomes = []
    for given in (False, True):
        transaction = conn.transaction()
        await transaction.start()
        try:
            locked = await conflicts.household_locked(conn, ids[0]) if given else None
            person = await conflicts.person_now(conn, ids[1], ids[0], for_edit=True) if given else None
            known = None if person is None else person | {"birth_date": person["born"]}
            outcomes.append((_answer(await call(locked, known)), await _kept(conn, ids[0])))
        finally:
            await transaction.rollback()
    return outcomes[0], outcomes[1]


async def test_a_member_edit_given_the_rows_read_writes_what_reading_them_writes(client: Client, conn: Conn) -> None:
    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2, 3))
    assert (await push(client, tablet, [created])).answers[0].status == "applied"
    actor = await _admin(conn)
    ids = (created.household_id, created.members[1].person_id)
    # Made head (the head becomes a spouse's relation), renamed, a phone: every part update_member writes.
    data = member_service.MemberUpdate(
        name="新名字", phone="13900000002", relation="head", former_head_relation="parent"
    )

    async def call(locked: dict[str, Any] | None, known: dict[str, Any] | None) -> Any:
        return await member_service.update_member(
            conn, actor, ids[0], ids[1], 1, data, TODAY, locked=locked, known=known
        )

    reading, given = await _read_and_known(conn, call, ids)
    assert given == reading
    assert reading[0]["head_person_id"] == str(ids[1]) and reading[0]["row_version"] == 2


async def test_a_member_removal_given_the_rows_read_writes_what_reading_them_writes(client: Client, conn: Conn) -> None:
    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2, 3))
    assert (await push(client, tablet, [created])).answers[0].status == "applied"
    assert (await push(client, tablet, [enrol(tablet, created)])).answers[0].status == "applied"
    actor = await _admin(conn)
    ids = (created.household_id, created.members[2].person_id)
    data = member_service.MemberRemove(reason="deceased")

    async def call(locked: dict[str, Any] | None, known: dict[str, Any] | None) -> Any:
        return await member_service.remove_member(
            conn, actor, ids[0], ids[1], 1, data, TODAY, locked=locked, known=known
        )

    reading, given = await _read_and_known(conn, call, ids)
    assert given == reading
    assert len(reading[0]["members"]) == 2 and reading[1][2][0]["action"] in ("remove_member", "cancel")


async def test_a_known_person_who_is_no_longer_a_member_here_is_not_found(client: Client, conn: Conn) -> None:
    """A stale known row (the person left, or another person's) is refused as reading it refuses."""
    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2))
    assert (await push(client, tablet, [created])).answers[0].status == "applied"
    actor = await _admin(conn)
    household_id, person_id = created.household_id, created.members[1].person_id
    async with conn.transaction():
        locked = await conflicts.household_locked(conn, household_id)
        person = await conflicts.person_now(conn, person_id, household_id, for_edit=True)
        assert locked is not None and person is not None
        elsewhere = person | {"birth_date": person["born"], "current_household_id": uuid.uuid4()}
        with pytest.raises(NotFound):
            await member_service.update_member(
                conn, actor, household_id, person_id, 1, member_service.MemberUpdate(name="某"), TODAY,
                locked=locked, known=elsewhere,
            )  # fmt: skip
        other = person | {"id": created.members[0].person_id}
        with pytest.raises(NotFound):
            await member_service.remove_member(
                conn, actor, household_id, person_id, 1, member_service.MemberRemove(reason="removed"), TODAY,
                locked=locked, known=other,
            )  # fmt: skip


async def test_member_edits_and_removals_in_a_chunk_undone_answer_as_one_by_one(client: Client, conn: Conn) -> None:
    """A head changed, a rename and a removal after it, with a refused mutation among them: the chunk
    is undone and applied again one by one; the person and household the handlers pass on must be
    those of before the chunk, not what its undone writes left."""
    tablet = await world(client)
    together = household_create(tablet, numbers=(1, 2, 3))
    apart = household_create(tablet, numbers=(4, 5, 6), household_no="0102")
    assert [a.status for a in (await push(client, tablet, [together, apart])).answers] == ["applied"] * 2

    def batch(created: m.HouseholdCreate, refused: bool) -> list[Any]:
        out: list[Any] = [edit_member(tablet, created, 1, 1, relation="head", former_head_relation="spouse")]
        if refused:  # nobody of the household: rejected, after the head changed in the chunk
            out.append(
                m.MemberUpdate(
                    seq=tablet.seq(),
                    mutation_id=uuid.uuid4(),
                    household_id=created.household_id,
                    person_id=uuid.uuid4(),
                    base_version=2,
                    phone="13900000001",
                )
            )
        out.append(edit_member(tablet, created, 0, 2, name="改名", phone="13900000003"))
        return [*out, remove(tablet, created, 2, 3)]

    at_once = (await push(client, tablet, batch(together, True))).answers
    singly = await _one_by_one(client, tablet, batch(apart, False))
    assert (at_once[1].status, at_once[1].code) == ("rejected", "not_found"), at_once
    assert _seen(at_once[:1] + at_once[2:]) == _seen(singly)
    assert [a.status for a in singly] == ["applied"] * 3
    kept_together, kept_apart = await _kept(conn, together.household_id), await _kept(conn, apart.household_id)
    assert kept_together[0]["row_version"] == kept_apart[0]["row_version"] == 4
    names = {"成员2": "成员5", "成员3": "成员6", "改名": "改名"}
    assert [(names[x["name"]], x["relation"], x["left_reason"]) for x in kept_together[1]] == [
        (x["name"], x["relation"], x["left_reason"]) for x in kept_apart[1]
    ]


async def test_a_payment_in_the_push_that_registered_its_enrolment_stands_without_a_read(
    client: Client, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolled and paid (dated three days ago) in one push: the order of the tablet's work stands for
    the registration, known without reading the ledger; one registered by an earlier push is read."""
    from backend.sync import handlers_money

    asked: list[list[uuid.UUID]] = []
    fetch = asyncpg.Connection.fetch

    async def counted(self: Conn, query: str, *args: Any, **kwargs: Any) -> Any:
        if query == handlers_money.Q["registered_by_tablet"]:
            asked.append(list(args[1]))
        return await fetch(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", counted)
    tablet = await world(client)
    now = clock.now()
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    paid = payment(tablet, created, collected_at=now - timedelta(days=3), acknowledge_no_cover=True)
    answers = (await push(client, tablet, [created, enrolled, paid])).answers
    assert [(a.status, a.code) for a in answers] == [("applied", None)] * 3
    assert asked == []
    later = household_create(tablet, numbers=(3, 4), household_no="0102")
    early = msgspec.structs.replace(enrol(tablet, later), device_time=now - timedelta(days=2))
    assert [a.status for a in (await push(client, tablet, [later, early])).answers] == ["applied"] * 2
    before = payment(tablet, later, receipt=2, collected_at=now - timedelta(days=3), acknowledge_no_cover=True)
    answer = (await push(client, tablet, [before])).answers[0]
    assert (answer.status, answer.code) == ("quarantined", "collected_before_registration")
    # Read (again when the chunk is applied one by one after the fast path's failure) for both persons.
    assert asked and all(sorted(x) == sorted(p.person_id for p in later.members) for x in asked)
