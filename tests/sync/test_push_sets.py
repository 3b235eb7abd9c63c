"""A push applies its mutations in sets where the rules allow (issue 20): enrolments of a household in
a row as one enrol(), the households it wrote not read again, a chunk's payment ids read at once. Each
mutation's answer and ledger row must be what the same mutations pushed one at a time give."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from backend import clock, crypto
from backend.crypto import ID_NUMBER
from backend.enrollment import enrollments
from backend.enrollment import enrollments as enrolment_service
from backend.enrollment import households as household_service
from backend.enrollment import members as member_service
from backend.premiums import payments as premium_payments
from backend.sync import handlers_households, query_codes
from backend.sync import push as push_module
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.query_codes import derive_query_code
from tests.conftest import JWT_SECRET
from tests.factories import ID_NUMBERS
from tests.sync_world import Client, Tablet, enrol, household_create, payment, push, register_tablet, world


def _enrolment(tablet: Tablet, household: m.HouseholdCreate, *person_ids: uuid.UUID) -> m.EnrollmentCreate:
    return m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=household.household_id,
        coverage_year=2026,
        person_ids=list(person_ids),
    )


def _seen(answers: list[m.Answer]) -> list[tuple[Any, ...]]:
    return [
        (a.status, a.code, a.household_version, a.query_code_stored, a.due_fen, a.paid_fen, a.balance_fen)
        for a in answers
    ]


async def _one_by_one(client: Client, tablet: Tablet, mutations: list[Any]) -> list[m.Answer]:
    answers = []
    for mutation in mutations:
        answers += (await push(client, tablet, [mutation])).answers
    return answers


async def _ledger(conn: asyncpg.Connection, seqs: list[int]) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    rows = await conn.fetch("SELECT kind, status FROM sync_mutations WHERE seq = ANY($1::bigint[]) ORDER BY seq", seqs)
    return [(r["kind"], r["status"]) for r in rows]


async def test_enrolments_of_a_household_in_a_row_are_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    together = household_create(tablet, numbers=(1, 2, 3))
    batch = [together, *(_enrolment(tablet, together, x.person_id) for x in together.members)]
    at_once = (await push(client, tablet, batch)).answers
    apart = household_create(tablet, numbers=(4, 5, 6), household_no="0102")
    singly = [apart, *(_enrolment(tablet, apart, x.person_id) for x in apart.members)]
    one_by_one = await _one_by_one(client, tablet, singly)
    assert (
        _seen(at_once)
        == _seen(one_by_one)
        == [("applied", None, 1, None, None, None, None)] + [("applied", None, None, None, None, None, None)] * 3
    )
    assert await _ledger(conn, [x.seq for x in batch]) == await _ledger(conn, [x.seq for x in singly])
    for household in (together, apart):
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM enrollments WHERE household_id = $1 AND status = 'registered') AS enrolled,"
            " (SELECT count(*) FROM household_query_codes WHERE household_id = $1) AS codes,"
            " (SELECT count(*) FROM audit_log a JOIN enrollments e ON a.entity_id = e.id::text"
            "  WHERE e.household_id = $1 AND a.action = 'enrol') AS audited",
            household.household_id,
        )
        assert row is not None and (row["enrolled"], row["codes"], row["audited"]) == (3, 1, 3)


async def test_a_run_of_enrolments_with_one_refused_is_answered_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    answers = []
    for numbers, no in (((1, 2), "0101"), ((3, 4), "0102")):
        household = household_create(tablet, numbers=numbers, household_no=no)
        first, second = (x.person_id for x in household.members)
        batch = [
            household,
            _enrolment(tablet, household, first),
            _enrolment(tablet, household, uuid.uuid4()),  # nobody of this household: refused alone
            _enrolment(tablet, household, second),
        ]
        answers.append(
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
    together, apart = answers
    assert _seen(together) == _seen(apart)
    assert [a.status for a in together] == ["applied", "applied", "rejected", "applied"]
    assert await conn.fetchval("SELECT count(*) FROM enrollments") == 4


async def test_edits_of_one_household_in_a_push_answer_the_versions_one_by_one_gives(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    answers, versions = [], []
    for head, spouse, child, no in ((1, 8, 3, "0101"), (2, 9, 4, "0102")):
        household = household_create(tablet, numbers=(head,), household_no=no)
        other = m.NewMember(person_id=uuid.uuid4(), name="配偶", relation="spouse", id_number=ID_NUMBERS[spouse])
        newborn = m.NewMember(person_id=uuid.uuid4(), name="孩子", relation="child", id_number=ID_NUMBERS[child])
        people = [household.members[0].person_id, other.person_id]

        def ids(household_id: uuid.UUID = household.household_id) -> dict[str, Any]:
            return {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": household_id}

        batch: list[Any] = [
            household,
            m.MemberCreate(**ids(), base_version=1, member=other),
            m.HouseholdUpdate(**ids(), base_version=2, phone="13800000001"),
            m.MemberCreate(**ids(), base_version=3, member=newborn),
            m.MemberRemove(**ids(), base_version=4, person_id=newborn.person_id, reason="data_error"),
            m.HouseholdUpdate(**ids(), base_version=5, address="北山村2组"),
            _enrolment(tablet, household, *people),
        ]
        paid = payment(tablet, household, receipt=len(answers) + 1, amount_fen=80000)
        batch.append(msgspec.structs.replace(paid, person_ids=people))
        answers.append(
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
        versions.append(await conn.fetchval("SELECT row_version FROM households WHERE id = $1", household.household_id))
    together, apart = answers
    assert _seen(together) == _seen(apart)
    assert [a.status for a in together] == ["applied"] * 8
    assert [a.household_version for a in together[:6]] == [1, 2, 3, 4, 5, 6]
    assert versions == [6, 6]


async def test_a_payment_reported_twice_in_one_push_is_recorded_once(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    household = household_create(tablet)
    paid = payment(tablet, household)
    again = msgspec.structs.replace(paid, seq=tablet.seq(), mutation_id=uuid.uuid4())
    enrolled = _enrolment(tablet, household, *(x.person_id for x in household.members))
    # The enrolment must come first: renumber so the push runs household, enrolment, payment, payment.
    batch = [
        household,
        msgspec.structs.replace(enrolled, seq=paid.seq),
        msgspec.structs.replace(paid, seq=again.seq),
        msgspec.structs.replace(again, seq=enrolled.seq),
    ]
    answers = (await push(client, tablet, batch)).answers
    assert [(a.seq, a.status, a.code) for a in answers] == [
        (1, "applied", None),
        (2, "applied", None),
        (3, "applied", None),
        (4, "duplicate", "payment_already_recorded"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 1


def _member(
    tablet: Tablet, household: m.HouseholdCreate, base_version: int, number: int, **fields: Any
) -> m.MemberCreate:
    person = {"person_id": uuid.uuid4(), "name": f"成员{number}", "relation": "child", "id_number": ID_NUMBERS[number]}
    return m.MemberCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=household.household_id,
        base_version=base_version,
        member=m.NewMember(**(person | fields)),
    )


def _sets_applied(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The set paths the push takes, by name, as it takes them (a set that falls back to one by one
    answers the same, so the tests below check that the set was used)."""
    taken: list[str] = []

    def spy(name: str, call: Any) -> Any:
        async def spied(*args: Any) -> Any:
            taken.append(name)
            return await call(*args)

        return spied

    for module, name in (
        (household_service, "create_household_and_add"),
        (household_service, "create_households"),
        (member_service, "add_members"),
    ):
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    return taken


async def _kept(conn: asyncpg.Connection, household: m.HouseholdCreate, people: list[uuid.UUID]) -> list[Any]:  # type: ignore[type-arg]
    """What a household's new members left: its version, each one's change records (field, value,
    version), membership and add_member audit row, in the members' order."""
    version = await conn.fetchval("SELECT row_version FROM households WHERE id = $1", household.household_id)
    changes = await conn.fetch(
        "SELECT person_id, field, new_value, version FROM record_changes WHERE household_id = $1",
        household.household_id,
    )
    audited = await conn.fetch(
        "SELECT summary->>'person_id' AS person_id FROM audit_log WHERE action = 'add_member' AND entity_id = $1"
        " ORDER BY id",
        str(household.household_id),
    )
    members = await conn.fetch(
        "SELECT person_id, relation FROM memberships WHERE household_id = $1 AND left_at IS NULL",
        household.household_id,
    )
    order = {p: i for i, p in enumerate(people)}
    return [
        version,
        sorted((order[r["person_id"]], r["field"], r["new_value"], r["version"]) for r in changes),
        [order[uuid.UUID(r["person_id"])] for r in audited],
        sorted((order[r["person_id"]], r["relation"]) for r in members if r["person_id"] in order),
    ]


async def test_new_members_of_a_household_in_a_row_are_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = _sets_applied(monkeypatch)
    tablet = await world(client)
    other = await register_tablet(client)  # another tablet of the township: it did not add them
    seen, kept, edits = [], [], []
    for head, numbers, no in ((0, (1, 2, 3), "0101"), (4, (5, 6, 7), "0102")):
        # The household from an earlier push: a member joining it is a change others must be told of.
        household = household_create(tablet, numbers=(head,), household_no=no)
        assert [a.status for a in (await push(client, tablet, [household])).answers] == ["applied"]
        batch = [_member(tablet, household, 1 + i, n) for i, n in enumerate(numbers)]
        answers = (
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
        seen.append(_seen(answers))
        people = [household.members[0].person_id, *(x.member.person_id for x in batch)]
        kept.append(await _kept(conn, household, people))
        # The other tablet saw version 2 (the first new member): renaming them is no stale edit.
        rename = m.MemberUpdate(
            seq=other.seq(),
            mutation_id=uuid.uuid4(),
            household_id=household.household_id,
            base_version=2,
            person_id=people[1],
            name="改名",
        )
        edits.append(_seen((await push(client, other, [rename])).answers))
    assert seen[0] == seen[1] == [("applied", None, v, None, None, None, None) for v in (2, 3, 4)]
    assert kept[0] == kept[1]
    assert kept[0][:2] == [
        4,
        [(1, "membership", "member", 2), (2, "membership", "member", 3), (3, "membership", "member", 4)],
    ]
    assert edits[0] == edits[1] == [("applied", None, 5, None, None, None, None)]
    assert taken == ["add_members"]  # the first household's three, as one set


async def test_new_members_in_a_row_with_one_refused_or_known_are_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    answers = []
    for head, numbers, no in ((0, (1, 2, 3), "0101"), (4, (5, 6, 7), "0102")):
        household = household_create(tablet, numbers=(head,), household_no=no)
        batch: list[Any] = [
            household,
            _member(tablet, household, 1, numbers[0]),
            _member(tablet, household, 2, numbers[1], relation="head"),  # the household has a head: refused
            _member(tablet, household, 2, numbers[2]),
            _member(tablet, household, 3, 8 if no == "0101" else 9, id_number="110105198001010017"),  # a bad number
            _member(tablet, household, 3, numbers[0]),  # already a member: refused
        ]
        answers.append(
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
    together, apart = answers
    assert _seen(together) == _seen(apart)
    assert [a.status for a in together] == ["applied", "applied", "rejected", "applied", "rejected", "rejected"]
    assert [a.code for a in together][4:] == ["validation_error", "person_already_registered"]
    assert await conn.fetchval("SELECT count(*) FROM memberships") == 6


async def test_new_members_in_a_row_reusing_a_known_person_are_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    answers, follows = [], []
    for head, numbers, no in ((0, (1, 2), "0101"), (4, (5, 6), "0102")):
        # Someone registered once and removed: known, in no household, reused when added again.
        household = household_create(tablet, numbers=(head, numbers[0]), household_no=no)
        leaving = household.members[1]
        gone = m.MemberRemove(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=household.household_id,
            base_version=1,
            person_id=leaving.person_id,
            reason="removed",
        )
        assert [a.status for a in (await push(client, tablet, [household, gone])).answers] == ["applied"] * 2
        batch = [_member(tablet, household, 2, numbers[0]), _member(tablet, household, 3, numbers[1])]
        answers.append(
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
        follows.append(
            await conn.fetchval(
                "SELECT count(*) FROM memberships WHERE person_id = $1 AND left_at IS NULL", leaving.person_id
            )
        )
    assert _seen(answers[0]) == _seen(answers[1]) == [("applied", None, v, None, None, None, None) for v in (3, 4)]
    assert follows == [1, 1]


async def test_a_new_household_and_the_members_added_next_are_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = _sets_applied(monkeypatch)
    tablet = await world(client)
    seen, kept, created = [], [], []
    for head, numbers, no in ((0, (1, 2, 3), "0101"), (4, (5, 6, 7), "0102")):
        household = household_create(tablet, numbers=(head,), household_no=no)
        batch: list[Any] = [household, *(_member(tablet, household, 1 + i, n) for i, n in enumerate(numbers))]
        if no == "0102":  # one by one in one push as well: nobody can have seen the household before its members
            monkeypatch.setattr(push_module, "_household_run", lambda *_a: [])
            monkeypatch.setattr(push_module, "_member_run", lambda *_a, **_k: [])
        answers = (await push(client, tablet, batch)).answers
        seen.append(_seen(answers))
        people = [household.members[0].person_id, *(x.member.person_id for x in batch[1:])]
        kept.append(await _kept(conn, household, people))
        created.append(
            await conn.fetchval(
                "SELECT summary FROM audit_log WHERE action = 'create' AND entity_id = $1", str(household.household_id)
            )
        )
    assert seen[0] == seen[1] == [("applied", None, v, None, None, None, None) for v in (1, 2, 3, 4)]
    assert kept[0] == kept[1] == [4, [], [1, 2, 3], [(0, "head"), (1, "child"), (2, "child"), (3, "child")]]
    assert created[0] == created[1] == {"members": 1, "reused_persons": 0}
    assert taken == ["create_household_and_add"]  # the first household and its three, as one set


@pytest.mark.parametrize(
    ("edit", "members", "in_set", "versions"),
    [
        # The phone and address noted at the end of the visit: written with the household, one version more.
        ({"phone": "13800000001", "address": "北山村2组"}, 1, True, [1, 2, 3]),
        ({"phone": "13800000001"}, 0, True, [1, 2]),  # no members added: the household and its edit
        ({"address": "北山村1组"}, 1, True, [1, 2, 2]),  # the address it has: nothing changes, no version
        # A new number is not for the set (refused at creation, taken after it would differ): on its own.
        ({"household_no": "9", "phone": "13800000001"}, 1, False, [1, 2, 3]),  # (9 for the first digit)
        # A phone the service refuses fails the set, which is applied again one by one.
        ({"phone": "不详"}, 1, True, [1, 2, None]),
    ],
)
async def test_a_new_household_edited_next_in_its_push_is_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
    edit: dict[str, Any],
    members: int,
    in_set: bool,
    versions: list[int | None],
) -> None:
    edited: list[bool] = []  # the runs of a new household: with its edit or not
    run = handlers_households.household_create_run

    async def spied(*args: Any) -> Any:
        edited.append(len(args) > 5 and args[5] is not None)
        return await run(*args)

    monkeypatch.setattr(handlers_households, "household_create_run", spied)
    tablet = await world(client)
    keyring = crypto.keys()
    seen, kept = [], []
    for head, numbers, no in ((0, (1,), "0101"), (4, (5,), "0102")):
        household = household_create(tablet, numbers=(head,), household_no=no)
        batch: list[Any] = [household, *(_member(tablet, household, 1 + i, n) for i, n in enumerate(numbers[:members]))]
        batch.append(
            m.HouseholdUpdate(
                seq=tablet.seq(),
                mutation_id=uuid.uuid4(),
                household_id=household.household_id,
                base_version=1 + members,
                **(edit | ({"household_no": edit["household_no"] + no[1:]} if "household_no" in edit else {})),
            )
        )
        if no == "0102":  # one by one in one push: the household, each member, the edit
            monkeypatch.setattr(push_module, "_household_run", lambda *_a: [])
            monkeypatch.setattr(push_module, "_member_run", lambda *_a, **_k: [])
        answers = (await push(client, tablet, batch)).answers
        seen.append(_seen(answers))
        row = await conn.fetchrow(
            "SELECT household_no, address, phone_enc, row_version FROM households WHERE id = $1", household.household_id
        )
        assert row is not None
        audited = await conn.fetch(
            "SELECT action, summary FROM audit_log WHERE entity_id = $1 ORDER BY id", str(household.household_id)
        )
        kept.append(
            [
                row["household_no"][0] + row["household_no"][1:].replace(no[1:], "#"),
                row["address"],
                None if row["phone_enc"] is None else keyring.open(crypto.PHONE, row["phone_enc"]),
                row["row_version"],
                [(r["action"], r["summary"].get("changed"), r["summary"].get("relation")) for r in audited],
                await _ledger(conn, [x.seq for x in batch]),
                # What others' conflicts and tablets' pulls are told of the household (migration 0037).
                await conn.fetchval(
                    "SELECT count(*) FROM record_changes WHERE household_id = $1", household.household_id
                ),
                await conn.fetchval(
                    "SELECT count(*) FROM sync_changes WHERE entity = 'household' AND entity_id = $1",
                    household.household_id,
                ),
            ]
        )
    assert [x[2] for x in seen[0]] == [x[2] for x in seen[1]] == versions
    assert seen[0] == seen[1]
    assert kept[0] == kept[1]
    assert edited[:1] == [in_set]  # the first household's run took its edit, or not


async def _registered(conn: asyncpg.Connection, households: list[m.HouseholdCreate]) -> list[Any]:  # type: ignore[type-arg]
    """What new households left, each: its row, its members (index in its body, relation, name, the
    number opened), the change records for tablets and its audit row."""
    keyring = crypto.keys()
    kept = []
    for household in households:
        row = await conn.fetchrow(
            "SELECT village_code, household_no, address, status, row_version, created_by,"
            " head_person_id = $2 AS head_first FROM households WHERE id = $1",
            household.household_id,
            household.members[0].person_id,
        )
        order = {x.person_id: i for i, x in enumerate(household.members)}
        members = await conn.fetch(
            "SELECT m.person_id, m.relation, p.name, p.id_number_enc FROM memberships m"
            " JOIN persons p ON p.id = m.person_id WHERE m.household_id = $1 AND m.left_at IS NULL",
            household.household_id,
        )
        ids = [str(household.household_id), *(str(p) for p in order)]
        changes = await conn.fetch(
            "SELECT entity, count(*) AS n FROM sync_changes c WHERE c.entity_id::text = ANY($1::text[])"
            " GROUP BY entity ORDER BY entity",
            ids,
        )
        audited = await conn.fetch(
            "SELECT action, summary FROM audit_log WHERE entity_id = $1 ORDER BY id", str(household.household_id)
        )
        kept.append(
            [
                dict(row) if row else None,
                sorted(
                    (order[r["person_id"]], r["relation"], r["name"], keyring.open(ID_NUMBER, r["id_number_enc"]))
                    for r in members
                ),
                [(r["entity"], r["n"]) for r in changes],
                [(r["action"], r["summary"]) for r in audited],
            ]
        )
    return kept


async def test_new_households_in_a_row_are_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = _sets_applied(monkeypatch)
    tablet = await world(client)
    seen, kept = [], []
    for first, no in ((0, "02"), (5, "03")):
        batch = [
            household_create(tablet, numbers=(first, first + 1), household_no=f"{no}01"),
            household_create(tablet, numbers=(first + 2,), household_no=f"{no}02", village_code="330106001002"),
            household_create(tablet, numbers=(first + 3, first + 4), household_no=f"{no}03"),
        ]
        if no == "03":  # one by one, in one push as well
            monkeypatch.setattr(push_module, "_households_run", lambda *_a: [])
            monkeypatch.setattr(push_module, "_creation", lambda *_a: [])
        seen.append(_seen((await push(client, tablet, batch)).answers))
        kept.append(await _registered(conn, batch))
    assert seen[0] == seen[1] == [("applied", None, 1, None, None, None, None)] * 3
    members = [[(i, r, name, n) for i, r, name, n in household[1]] for household in kept[0]]
    assert members == [
        [(0, "head", "成员0", ID_NUMBERS[0]), (1, "spouse", "成员1", ID_NUMBERS[1])],
        [(0, "head", "成员2", ID_NUMBERS[2])],
        [(0, "head", "成员3", ID_NUMBERS[3]), (1, "spouse", "成员4", ID_NUMBERS[4])],
    ]
    # The same rows but for the names, numbers and household numbers each was given.
    for ours, theirs in zip(kept[0], kept[1], strict=True):
        assert {**ours[0], "household_no": None} == {**theirs[0], "household_no": None}
        assert [(i, r) for i, r, *_x in ours[1]] == [(i, r) for i, r, *_x in theirs[1]]
        assert ours[2:] == theirs[2:]
    assert taken == ["create_households"]  # the three as one set; none after it


def _freeing(change: str, tablet: Tablet, older: m.HouseholdCreate, number: str, household_no: str) -> Any:
    """A change of `older` that frees its spouse's identity number or its household number."""
    ids: dict[str, Any] = {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": older.household_id}
    spouse = older.members[1].person_id
    if change == "member.remove":
        return m.MemberRemove(**ids, person_id=spouse, base_version=1, reason="removed")
    if change == "member.update":
        return m.MemberUpdate(**ids, person_id=spouse, base_version=1, id_number=number)
    if change == "household.dissolve":
        return m.HouseholdDissolve(**ids, base_version=1, reason="removed")
    return m.HouseholdUpdate(**ids, base_version=1, household_no=household_no)


@pytest.mark.parametrize("change", ["member.remove", "member.update", "household.dissolve", "household.update"])
async def test_a_change_that_frees_a_number_after_a_new_household_is_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    change: str,
) -> None:
    """A new household is refused, or held as a duplicate, by who holds each identity number and
    household number when it is written. The change after it in the push frees the number without
    naming the new household (a member removed or given another number, a household dissolved or
    renumbered): the held household must be written before it, as one by one writes it."""
    tablet = await world(client)
    seen, rows = [], []
    for side, (head, spouse, other) in enumerate(((0, 1, 4), (2, 3, 5))):
        older = household_create(tablet, numbers=(head, spouse), household_no=f"010{side + 1}")
        assert [a.status for a in (await push(client, tablet, [older])).answers] == ["applied"]
        if change == "household.update":  # the new household takes the older one's household number
            new = household_create(tablet, numbers=(other,), household_no=older.household_no)
        else:  # the new household's head is the older one's spouse, by identity number
            new = household_create(tablet, numbers=(spouse,), household_no=f"020{side + 1}")
        frees = _freeing(change, tablet, older, ID_NUMBERS[other], f"090{side + 1}")
        batch = [new, frees]
        answers = (await push(client, tablet, batch)).answers if side == 0 else await _one_by_one(client, tablet, batch)
        seen.append(_seen(answers))
        rows.append(await conn.fetchval("SELECT count(*) FROM households WHERE id = $1", new.household_id))
    assert seen[0] == seen[1] and rows[0] == rows[1] == 0, (seen, rows)
    assert seen[0][0][0] in ("rejected", "quarantined")  # refused (its number) or held (a member's)


async def _left_with_a_paid_enrolment(client: Client, tablet: Tablet, numbers: tuple[int, int], side: int) -> Any:
    """A household of two, both enrolled, the second paid for and then removed: their paid enrolment
    stays live in the household, and follows them into any household that takes them again."""
    household = household_create(tablet, numbers=numbers, household_no=f"010{side + 1}")
    enrolled = enrol(tablet, household)
    paid = payment(tablet, household, receipt=10 * side + 1)
    paid = msgspec.structs.replace(paid, person_ids=[household.members[1].person_id], amount_fen=40000)
    assert [a.status for a in (await push(client, tablet, [household, enrolled, paid])).answers] == ["applied"] * 3
    removed = m.MemberRemove(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=household.household_id,
        person_id=household.members[1].person_id,
        base_version=1,
        reason="removed",
    )
    assert [a.status for a in (await push(client, tablet, [removed])).answers] == ["applied"]
    return household


@pytest.mark.parametrize("how", ["held", "partial", "member.create", "unsettable"])
async def test_a_person_taken_again_after_a_payment_of_their_old_household_is_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    how: str,
) -> None:
    """A payment of a household, then a new household or member that takes its removed member again
    (by identity number): their paid enrolment, live in the old household, follows them, and what the
    old household owes and has paid changes. Neither names the other, yet the payment must be applied
    first, as one by one applies it: held with a new household behind it, with the new household
    written alone before another household's edit, with a new member of another household, and a
    payment that cannot join a set (sent twice) behind a new household held back."""
    tablet = await world(client)
    seen = []
    for side, (kept, taken, other) in enumerate(((1, 2, 7), (5, 6, 8))):
        old = await _left_with_a_paid_enrolment(client, tablet, (kept, taken), side)
        elsewhere = household_create(tablet, numbers=(other,), household_no=f"040{side + 1}")
        assert [a.status for a in (await push(client, tablet, [elsewhere])).answers] == ["applied"]
        batch: list[Any] = []
        if how == "unsettable":
            batch.append(household_create(tablet, numbers=(taken,), household_no=f"020{side + 1}"))
        paid = payment(tablet, old, receipt=10 * side + 2)
        batch.append(msgspec.structs.replace(paid, person_ids=[old.members[0].person_id], amount_fen=40000))
        if how == "unsettable":  # the same payment reported again: not for a set
            batch.append(msgspec.structs.replace(batch[-1], seq=tablet.seq(), mutation_id=uuid.uuid4()))
        if how == "partial":  # a visit's new household, then another household's edit
            batch.append(household_create(tablet, numbers=(9 + side,), household_no=f"030{side + 1}"))
            batch.append(
                m.HouseholdUpdate(
                    seq=tablet.seq(),
                    mutation_id=uuid.uuid4(),
                    household_id=elsewhere.household_id,
                    base_version=1,
                    phone="13800000001",
                )
            )
        if how == "member.create":
            person = {"person_id": uuid.uuid4(), "name": "成员", "relation": "spouse", "id_number": ID_NUMBERS[taken]}
            ids = {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": elsewhere.household_id}
            batch.append(m.MemberCreate(**ids, base_version=1, member=m.NewMember(**person)))
        elif how != "unsettable":
            batch.append(household_create(tablet, numbers=(taken,), household_no=f"020{side + 1}"))
        answers = (await push(client, tablet, batch)).answers if side == 0 else await _one_by_one(client, tablet, batch)
        seen.append(_seen(answers))
    assert seen[0] == seen[1], seen


@pytest.mark.parametrize("how", ["member.remove", "household.dissolve"])
async def test_a_removal_elsewhere_that_frees_a_held_payments_credit_is_answered_as_one_by_one(
    client: Client, how: str
) -> None:
    """A household paid for one member and part of a second, who then moved away with their enrolment
    (the money follows it). Their removal from the new household, or its dissolution, cancels that
    enrolment (still `registered`),
    and its share of the old household's payment becomes the old household's credit: what the old
    household has paid changes, though neither mutation names the other. So a payment of the old
    household held for a set is applied before such a removal, as one by one applies it (found by
    tests/sync/test_push_sets_simulated.py with seed 213: the answer said a refund was due)."""
    tablet = await world(client)
    seen = []
    for side, (kept, moving, unpaid, other) in enumerate(((1, 2, 3, 7), (4, 5, 6, 8))):
        old = household_create(tablet, numbers=(kept, moving, unpaid), household_no=f"050{side + 1}")
        enrolled = enrol(tablet, old)
        paid = msgspec.structs.replace(
            payment(tablet, old, receipt=10 * side + 1),
            person_ids=[x.person_id for x in old.members[:2]],
            amount_fen=60000,  # the first member's 40,000, then 20,000 of the second's
        )
        elsewhere = household_create(tablet, numbers=(other,), household_no=f"060{side + 1}")
        setup_answers = (await push(client, tablet, [old, enrolled, paid, elsewhere])).answers
        assert [a.status for a in setup_answers] == ["applied"] * 4, setup_answers
        moved = old.members[1].person_id
        ids = {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": old.household_id}
        move = m.MemberMove(
            **ids, person_id=moved, base_version=1, to_household_id=elsewhere.household_id, relation="other"
        )
        (moved_answer,) = (await push(client, tablet, [move])).answers
        assert moved_answer.status == "applied", moved_answer
        last = msgspec.structs.replace(
            payment(tablet, old, receipt=10 * side + 2), person_ids=[old.members[2].person_id], amount_fen=40000
        )
        ids = {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": elsewhere.household_id}
        if how == "member.remove":
            gone: Any = m.MemberRemove(**ids, person_id=moved, base_version=2, reason="removed")
        else:
            gone = m.HouseholdDissolve(**ids, base_version=2, reason="removed")
        batch = [last, gone]
        answers = (await push(client, tablet, batch)).answers if side == 0 else await _one_by_one(client, tablet, batch)
        seen.append(_seen(answers))
    assert seen[0] == seen[1], seen
    assert seen[1][0][4:] == (80000, 80000, 0), seen  # due, paid, balance: the moved member's share is theirs
    assert [a[0] for a in seen[1]] == ["applied", "applied"], seen


async def test_new_households_in_a_row_with_one_refused_known_or_twice_are_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = _sets_applied(monkeypatch)
    tablet = await world(client)
    known = household_create(tablet, numbers=(0,), household_no="0900")
    assert [a.status for a in (await push(client, tablet, [known])).answers] == ["applied"]
    answers = []
    for sets in (True, False):
        tag = "1" if sets else "2"
        batch = [
            household_create(tablet, numbers=(1 if sets else 6,), household_no=f"{tag}01"),
            household_create(tablet, numbers=(2 if sets else 7,), household_no="0900"),  # its number is taken
            household_create(tablet, numbers=(3 if sets else 8,), household_no=f"{tag}03", village_code="330106002001"),
            household_create(tablet, numbers=(4 if sets else 9,), household_no=f"{tag}04"),
            household_create(tablet, numbers=(0,), household_no=f"{tag}05"),  # someone in a household already
            household_create(tablet, numbers=(5 if sets else 10, 5 if sets else 10), household_no=f"{tag}06"),
            household_create(tablet, numbers=(4 if sets else 9,), household_no=f"{tag}07"),  # in two of them
        ]
        if not sets:
            monkeypatch.setattr(push_module, "_households_run", lambda *_a: [])
            monkeypatch.setattr(push_module, "_creation", lambda *_a: [])
        answers.append(_seen((await push(client, tablet, batch)).answers))
    assert answers[0] == answers[1]
    statuses = ["applied", "rejected", "rejected", "applied", "quarantined", "rejected", "quarantined"]
    assert [a[0] for a in answers[0]] == statuses
    assert "create_households" in taken


class _OneByOne:
    """Counts the mutations a push applies one by one under savepoints (metrics.SYNC_ONE_BY_ONE)."""

    def __init__(self) -> None:
        self.count = 0

    def inc(self, amount: int = 1) -> None:
        self.count += amount


async def test_a_set_that_fails_sends_only_its_failing_mutation_one_by_one(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A set is undone whole when one of its mutations fails; the push then finds that one by applying
    the set's mutations each on its own on the fast path, and only the failing one goes under a
    savepoint of its own (before, the set was formed again from the next one, failed again, and
    after RESUMES failures the rest of the chunk went one by one)."""
    one_by_one = _OneByOne()
    monkeypatch.setattr(push_module.metrics, "SYNC_ONE_BY_ONE", one_by_one)
    tablet = await world(client)
    known = household_create(tablet, numbers=(0,), household_no="0900")
    assert [a.status for a in (await push(client, tablet, [known])).answers] == ["applied"]
    batch: list[Any] = [
        household_create(tablet, numbers=(n,), household_no="0900" if n == 4 else f"010{n}") for n in (1, 2, 3, 4, 5)
    ]
    head = batch[0]  # then new members of the first, the third of them refused (a second head)
    for i, (base, n) in enumerate(zip((1, 2, 3, 3, 4), (6, 7, 8, 9, 10), strict=True)):
        batch.append(_member(tablet, head, base, n, **({"relation": "head"} if i == 2 else {})))
    answers = (await push(client, tablet, batch)).answers
    statuses = [a.status for a in answers]
    assert statuses == [*["applied"] * 3, "rejected", *["applied"] * 3, "rejected", *["applied"] * 2]
    assert [a.household_version for a in answers[5:]] == [2, 3, None, 4, 5]
    assert one_by_one.count == 2  # the refused household and the refused member, nothing else


async def test_a_set_that_fails_keeps_what_came_before_it_in_its_sets(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a set fails, the mutations before it are applied again as they were (here five new
    households, as one set) and kept; only then are the set's mutations tried each on its own, so
    finding the failing one undoes no more than from the set on. Before, the chunk was applied again
    from its start with everything up to the set's end each on its own, and undone again at the
    failing one: 29 mutations handed to the fast path against 24, the households twice one by one."""
    one_by_one = _OneByOne()
    monkeypatch.setattr(push_module.metrics, "SYNC_ONE_BY_ONE", one_by_one)
    taken = _sets_applied(monkeypatch)
    handed: list[int] = []
    apply_all = push_module._apply_all

    async def counted(conn: Any, actor: Any, chunk: list[Any], *args: Any, savepoint: bool, **kwargs: Any) -> Any:
        if not savepoint:
            handed.append(len(chunk))
        return await apply_all(conn, actor, chunk, *args, savepoint=savepoint, **kwargs)

    monkeypatch.setattr(push_module, "_apply_all", counted)
    tablet = await world(client)
    known = household_create(tablet, numbers=(0,), household_no="0900")
    assert [a.status for a in (await push(client, tablet, [known])).answers] == ["applied"]
    taken.clear()
    handed.clear()
    batch: list[Any] = [household_create(tablet, numbers=(n,), household_no=f"010{n}") for n in (1, 2, 3, 4, 5)]
    for i, (base, n) in enumerate(zip((1, 2, 3, 3, 4), (6, 7, 8, 9, 10), strict=True)):
        batch.append(_member(tablet, known, base, n, **({"relation": "head"} if i == 2 else {})))
    answers = (await push(client, tablet, batch)).answers
    assert [a.status for a in answers] == [*["applied"] * 7, "rejected", *["applied"] * 2]
    assert [a.household_version for a in answers[5:]] == [2, 3, None, 4, 5]
    assert taken == ["create_households", "add_members", "create_households"]  # the second one kept
    assert handed == [
        10,
        5,
        5,
        2,
        2,
    ]  # all; the households; the members, to the refused one; its two before it; the last two
    assert one_by_one.count == 1  # the refused member


async def test_a_new_household_and_a_known_person_added_next_are_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    answers = []
    for head, number, no in ((0, 1, "0101"), (4, 5, "0102")):
        # Someone registered once and removed: known, in no household, reused when added again.
        earlier = household_create(tablet, numbers=(8 if no == "0101" else 9, number), household_no=f"9{no}")
        gone = m.MemberRemove(
            seq=tablet.seq(),
            mutation_id=uuid.uuid4(),
            household_id=earlier.household_id,
            base_version=1,
            person_id=earlier.members[1].person_id,
            reason="removed",
        )
        assert [a.status for a in (await push(client, tablet, [earlier, gone])).answers] == ["applied"] * 2
        household = household_create(tablet, numbers=(head,), household_no=no)
        batch: list[Any] = [household, _member(tablet, household, 1, number), _member(tablet, household, 2, 2 + head)]
        answers.append(
            (await push(client, tablet, batch)).answers if no == "0101" else await _one_by_one(client, tablet, batch)
        )
    assert _seen(answers[0]) == _seen(answers[1]) == [("applied", None, v, None, None, None, None) for v in (1, 2, 3)]
    assert await conn.fetchval("SELECT count(*) FROM memberships WHERE left_at IS NULL") == 8


async def test_a_push_reads_the_changes_of_others_once_and_answers_as_when_read_each_time(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The changes others made after the tablet's base are read for the whole push as it begins
    (`changes_since_many`): the conflicts and answers are those of reading them at each edit."""
    from backend.sync.conflicts import service as conflicts
    from tests.sync.test_conflicts import conflict_rows, edit_household, edit_member, remove

    a = await world(client)
    b = await register_tablet(client, "staff_a")
    seen: list[Any] = []
    for numbers, no in (((1, 2, 3), "0101"), ((4, 5, 6), "0102")):
        created = household_create(a, numbers=numbers, household_no=no)
        assert (await push(client, a, [created])).answers[0].status == "applied"
        # Tablet A changes the address, a name and a phone (version 4); B edits from version 1.
        done = await push(
            client,
            a,
            [
                edit_household(a, created, 1, address="北山村3组"),
                edit_member(a, created, 0, 2, name="张三丰"),
                edit_member(a, created, 1, 3, phone="13700000001"),
            ],
        )
        assert [x.household_version for x in done.answers] == [2, 3, 4]
        late = [
            edit_household(b, created, 1, address="南山村2组", phone="13800000009"),
            edit_member(b, created, 0, 1, name="张山", phone="13900000001"),
            edit_member(b, created, 1, 1, phone="13900000002"),
            edit_member(b, created, 2, 1, phone="13900000003"),
            remove(b, created, 2, 1),
            edit_member(b, created, 1, 4, phone="13900000004"),  # from after A's phone: no conflict
        ]
        if no == "0101":
            # Read once for the push: reading them at an edit would fail.
            monkeypatch.setitem(conflicts.Q, "changes_since", "SELECT 1 / 0")
            answers = (await push(client, b, late)).answers
            monkeypatch.undo()
        else:
            # Read at each edit, as before the push read them at once.
            async def nothing_read(*_args: Any) -> dict[Any, Any]:
                return {}

            monkeypatch.setattr(conflicts, "changes_since_many", nothing_read)
            answers = (await push(client, b, late)).answers
            monkeypatch.undo()
        seen.append([(x.status, x.code, x.household_version, x.conflict_fields) for x in answers])
    assert (
        seen[0]
        == seen[1]
        == [
            ("applied_with_conflict", "field_conflict", 5, ["address"]),
            ("applied_with_conflict", "identity_held", 6, ["name"]),
            ("applied_with_conflict", "field_conflict", 7, ["phone"]),
            ("applied", None, 8, []),
            ("applied", None, 9, []),
            ("applied", None, 10, []),
        ]
    )
    kept = [
        (r["kind"], r["outcome"], r["fields"], r["base_values"], r["server_values"], r["tablet_values"])
        for r in await conflict_rows(conn)
    ]
    # The held name's base is each household's own first name (成员1, 成员4); the rest is the same.
    assert [x[3] for x in kept if x[0] == "stale_identity"] == [{"name": "成员1"}, {"name": "成员4"}]
    kept = [x[:3] + x[4:] if x[0] == "stale_identity" else x for x in kept]
    assert len(kept) == 6 and kept[:3] == kept[3:]


async def test_a_chunk_undone_forgets_the_household_versions_it_wrote(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """A failure in a chunk undoes it and applies it again one by one: the households known to the
    push are then as they were before the chunk, not as its undone writes left them."""
    from tests.sync.test_conflicts import edit_household

    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2))
    assert (await push(client, tablet, [created])).answers[0].status == "applied"
    nobody = m.MemberUpdate(
        seq=0,
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=uuid.uuid4(),
        base_version=2,
        phone="13900000001",
    )
    batch = [
        edit_household(tablet, created, 1, address="北山村3组"),
        msgspec.structs.replace(nobody, seq=tablet.seq()),
        edit_household(tablet, created, 2, phone="13800000009"),
    ]
    answers = (await push(client, tablet, batch)).answers
    assert [(x.status, x.code, x.household_version) for x in answers] == [
        ("applied", None, 2),
        ("rejected", "not_found", None),
        ("applied", None, 3),
    ]
    row = await conn.fetchrow("SELECT address, row_version FROM households WHERE id = $1", created.household_id)
    assert row is not None and (row["address"], row["row_version"]) == ("北山村3组", 3)


async def test_a_push_opens_the_numbers_of_the_members_it_edits_and_no_others(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push keeps the households it writes as their rows (household_service.household_summary,
    `members=False` of the member services): registering one, adding, editing and removing members
    and editing the household open the identity numbers of the persons edited or removed, for the
    conflict rules, and nobody else's, which answering the household with its members would."""
    tablet = await world(client)
    household = household_create(tablet, numbers=(1, 2))
    head, spouse = household.members

    def ids() -> dict[str, Any]:
        return {"seq": tablet.seq(), "mutation_id": uuid.uuid4(), "household_id": household.household_id}

    newborn = m.NewMember(person_id=uuid.uuid4(), name="孩子", relation="child", id_number=ID_NUMBERS[3])
    batch: list[Any] = [
        household,
        m.MemberCreate(**ids(), base_version=1, member=newborn),
        m.HouseholdUpdate(**ids(), base_version=2, phone="13800000001"),
        m.MemberUpdate(**ids(), base_version=3, person_id=spouse.person_id, phone="13900000002"),
        m.MemberRemove(**ids(), base_version=4, person_id=newborn.person_id, reason="data_error"),
        m.MemberCreate(
            **ids(),
            base_version=5,
            member=m.NewMember(person_id=uuid.uuid4(), name="老人", relation="parent", id_number=ID_NUMBERS[4]),
        ),
    ]
    opened: list[str] = []
    open_bytes = crypto.Keyring.open_bytes

    def counted(keyring: crypto.Keyring, kind: str, sealed: bytes) -> bytes:
        clear = open_bytes(keyring, kind, sealed)
        if kind == crypto.ID_NUMBER:
            opened.append(clear.decode())
        return clear

    monkeypatch.setattr(crypto.Keyring, "open_bytes", counted)
    answers = (await push(client, tablet, batch)).answers
    assert [(a.status, a.household_version) for a in answers] == [("applied", v) for v in range(1, 7)]
    assert head.id_number == ID_NUMBERS[1] and ID_NUMBERS[1] not in opened
    assert set(opened) <= {ID_NUMBERS[2], ID_NUMBERS[3]}  # the spouse edited, the newborn removed


def _payment_sets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many payments each set the push records holds, as it records them (a set that fails and
    is applied one by one instead is counted negative)."""
    sizes: list[int] = []
    record = premium_payments.record_payments

    async def spied(conn: Any, actor: Any, payments: Any, **options: Any) -> Any:
        try:
            done = await record(conn, actor, payments, **options)
        except Exception:
            sizes.append(-len(payments))
            raise
        sizes.append(len(payments))
        return done

    monkeypatch.setattr(premium_payments, "record_payments", spied)
    return sizes


def _enrolment_sets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many households each set of enrolments the push writes holds (negative: it failed); one
    household's enrolment (`enrol`) is no set."""
    sizes: list[int] = []
    enrol_many = enrolment_service.enrol_many

    async def spied(conn: Any, actor: Any, enrolments: Any, *args: Any) -> Any:
        try:
            done = await enrol_many(conn, actor, enrolments, *args)
        except Exception:
            sizes.extend([-len(enrolments)] if len(enrolments) > 1 else [])
            raise
        sizes.extend([len(enrolments)] if len(enrolments) > 1 else [])
        return done

    monkeypatch.setattr(enrolment_service, "enrol_many", spied)
    return sizes


async def test_a_change_between_visits_writes_the_new_households_first_and_keeps_the_rest_held(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A change of another household between two visits may alter what a new household depends on
    (who holds a number): the new households held are written before it, while the enrolments and
    payments held stay held (it names none of theirs) and go with the next visit's as one set each.
    Every answer and what each visit leaves are as one by one."""
    payments, enrolments = _payment_sets(monkeypatch), _enrolment_sets(monkeypatch)
    tablet = await world(client)
    older = [household_create(tablet, numbers=(n,), household_no=f"01{n:02d}") for n in (0, 5)]
    assert [a.status for a in (await push(client, tablet, older)).answers] == ["applied"] * 2
    seen, kept = [], []
    for side, (first, second) in enumerate(((1, 2), (3, 4))):
        batch: list[Any] = []
        visits = []
        for n in (first, second):
            if n == second:  # the older household's phone, noted between the two visits
                edited = older[side].household_id
                batch.append(
                    m.HouseholdUpdate(
                        seq=tablet.seq(),
                        mutation_id=uuid.uuid4(),
                        household_id=edited,
                        base_version=1,
                        phone=f"1380000000{side}",
                    )
                )
            visit = household_create(tablet, numbers=(n,), household_no=f"0{side + 2}0{n}")
            batch += [visit, enrol(tablet, visit), payment(tablet, visit, receipt=n)]
            visits.append(visit)
        answers = (await push(client, tablet, batch)).answers if side == 0 else await _one_by_one(client, tablet, batch)
        seen.append(_seen(answers))
        kept.append(await _money(conn, visits))
        if side == 0:
            assert (enrolments, payments) == ([2], [2])  # both visits' enrolments, and payments, as one set
    assert seen[0] == seen[1] and kept[0] == kept[1]
    assert [a[0] for a in seen[0]] == ["applied"] * 7


async def _money(conn: asyncpg.Connection, households: list[m.HouseholdCreate]) -> list[Any]:  # type: ignore[type-arg]
    """What each household's payment left, in the households' order: the payment's dates, flag,
    amount and persons, its allocations, its enrolments' funding and cover, its audit row."""
    kept = []
    for household in households:
        paid = await conn.fetchrow(
            "SELECT business_date, remittance_date, clock_flag, amount_fen, cardinality(person_ids) AS persons,"
            " receipt_no FROM payments WHERE household_id = $1",
            household.household_id,
        )
        allocations = await conn.fetch(
            "SELECT a.amount_fen, e.status FROM payment_allocations a JOIN payments p ON p.id = a.payment_id"
            " JOIN enrollments e ON e.id = a.enrollment_id AND e.person_id = a.person_id"
            " WHERE p.household_id = $1 ORDER BY a.amount_fen",
            household.household_id,
        )
        funded = await conn.fetch(
            "SELECT status, funding, business_date, coverage_start, coverage_end, coverage_reason, waiting_months,"
            " subsidy_fen FROM enrollments WHERE household_id = $1 ORDER BY coverage_start, status",
            household.household_id,
        )
        audited = await conn.fetch(
            "SELECT a.summary - 'receipt_no' AS summary FROM audit_log a JOIN payments p ON a.entity_id = p.id::text"
            " WHERE p.household_id = $1 AND a.action = 'record'",
            household.household_id,
        )
        kept.append(
            (
                None if paid is None else {k: v for k, v in paid.items() if k != "receipt_no"},
                [tuple(r) for r in allocations],
                [tuple(r) for r in funded],
                [r["summary"] for r in audited],
            )
        )
    return kept


def _visits(tablet: Tablet, numbers: list[tuple[int, ...]], first_receipt: int) -> tuple[list[Any], list[Any]]:
    """Households registered, enrolled and paid for one after the other (a day of visits): the
    mutations, and the households."""
    created = [
        household_create(tablet, numbers=n, household_no=f"02{first_receipt:02d}{i}") for i, n in enumerate(numbers)
    ]
    tablet.next_seq -= len(created)  # numbered again in the order of the visits
    batch: list[Any] = []
    for i, household in enumerate(created):
        batch.append(msgspec.structs.replace(household, seq=tablet.seq()))
        batch.append(enrol(tablet, household))
        batch.append(payment(tablet, household, receipt=first_receipt + i))
    return batch, created


async def test_payments_of_households_in_a_row_of_visits_are_one_set_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes, enrolled = _payment_sets(monkeypatch), _enrolment_sets(monkeypatch)
    tablet = await world(client)
    together, households = _visits(tablet, [(0, 1), (2,), (3, 4)], 1)
    at_once = (await push(client, tablet, together)).answers
    # The three households' enrolments as one set, then their payments as one, the others' mutations
    # between them: the payments after the enrolments they pay.
    assert (enrolled, sizes) == ([3], [3])
    apart, others = _visits(tablet, [(5, 6), (7,), (8, 9)], 11)
    one_by_one = await _one_by_one(client, tablet, apart)
    assert (enrolled, sizes) == ([3], [3])
    assert (
        _seen(at_once)
        == _seen(one_by_one)
        == [
            row
            for due in (80000, 40000, 80000)
            for row in (
                ("applied", None, 1, None, None, None, None),
                ("applied", None, None, None, None, None, None),
                ("applied", None, None, None, due, due, 0),
            )
        ]
    )
    assert await _ledger(conn, [x.seq for x in together]) == await _ledger(conn, [x.seq for x in apart])
    kept = await _money(conn, households)
    assert kept == await _money(conn, others)
    assert [k[0]["business_date"].isoformat() for k in kept] == ["2025-10-08"] * 3
    assert [[a[0] for a in k[1]] for k in kept] == [[40000, 40000], [40000], [40000, 40000]]
    assert {e[0] for k in kept for e in k[2]} == {"paid"}


async def test_a_set_with_a_refused_payment_is_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set is undone whole; its mutations are applied again each on its own on the fast path,
    and only the refused payment goes under a savepoint of its own (kept aside: money is never
    dropped); the others are recorded."""
    one_by_one = _OneByOne()
    monkeypatch.setattr(push_module.metrics, "SYNC_ONE_BY_ONE", one_by_one)
    sizes = _payment_sets(monkeypatch)
    tablet = await world(client)
    first, _households = _visits(tablet, [(0,)], 5)
    assert [a.status for a in (await push(client, tablet, first)).answers] == ["applied"] * 3
    batch, households = _visits(tablet, [(1, 2), (3,), (4,)], 1)
    batch[5] = msgspec.structs.replace(batch[5], receipt_no="T00000005")  # the second's: a number used already
    answers = (await push(client, tablet, batch)).answers
    assert [(a.status, a.code) for a in answers] == [
        *[("applied", None)] * 5,
        ("quarantined", "receipt_clash"),
        *[("applied", None)] * 3,
    ]
    assert sizes == [-3]  # tried as one set, then each on its own
    assert one_by_one.count == 1
    kept = await _money(conn, households)
    assert [k[0] and k[0]["amount_fen"] for k in kept] == [80000, None, 40000]
    assert await conn.fetchval("SELECT count(*) FROM sync_quarantine WHERE reason = 'receipt_clash'") == 1


async def test_a_void_right_after_its_payment_finds_it_recorded(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Payments held back for a set are applied before a mutation that may depend on them: here a
    void of the last of them, which would find no payment (and fail) if it came first."""
    one_by_one = _OneByOne()
    monkeypatch.setattr(push_module.metrics, "SYNC_ONE_BY_ONE", one_by_one)
    sizes = _payment_sets(monkeypatch)
    tablet = await world(client)
    batch, _households = _visits(tablet, [(0,), (1,), (2,)], 1)
    now = clock.now()
    batch = [
        msgspec.structs.replace(x, collected_at=now, acknowledge_no_cover=True) if isinstance(x, m.PaymentRecord) else x
        for x in batch
    ]
    void = m.PaymentVoid(
        seq=tablet.seq(), mutation_id=uuid.uuid4(), payment_id=batch[-1].payment_id, reason="wrong_household"
    )
    answers = (await push(client, tablet, [*batch, void])).answers
    assert [a.status for a in answers] == ["applied"] * 10
    assert sizes == [3] and one_by_one.count == 0
    requested = await conn.fetchval("SELECT payment_id FROM payment_events WHERE kind = 'void_requested'")
    assert requested == batch[-1].payment_id


def test_what_comes_after_enrolments_and_payments_held_back_for_sets() -> None:
    """A mutation that names a held enrolment's or payment's household or person, a void, a
    cancellation, a new household or member not held (it may take a person known by number, whose
    live enrolments follow them out of a held household), a removal or dissolution with a payment
    held, or an unreadable or out-of-turn one is applied only after what is held; others go on."""
    tablet = Tablet(device_id=uuid.uuid4(), secret="", headers={}, user_id=uuid.uuid4())
    household = household_create(tablet, numbers=(0, 1))
    other = household_create(tablet, numbers=(2,))
    third = household_create(tablet, numbers=(3,))
    held_payment = payment(tablet, household)
    held = push_module._Held()
    held.hold_payment(0, held_payment, b"")
    held_enrolment = enrol(tablet, third)
    held.hold_enrolments([(1, held_enrolment, b"")])
    last = held_enrolment.seq

    def after(mutation: Any, *, seq: int | None = None) -> bool:
        raw = msgspec.Raw(msgspec.msgpack.encode(msgspec.structs.replace(mutation, seq=seq or last + 1)))
        return push_module._after_held(raw, "msgpack", last, held)

    person = household.members[1].person_id
    assert after(other)
    newcomer = m.NewMember(person_id=uuid.uuid4(), name="成员", relation="child", id_number=ID_NUMBERS[5])
    assert after(
        m.MemberCreate(
            seq=1, mutation_id=uuid.uuid4(), household_id=other.household_id, base_version=1, member=newcomer
        )
    )
    assert not after(enrol(tablet, other))
    assert not after(payment(tablet, other, receipt=2))
    assert after(enrol(tablet, household))
    # A held person named in another household (moved there) or year: cover reads their other years.
    assert after(msgspec.structs.replace(payment(tablet, other, receipt=3), person_ids=[person]))
    assert after(msgspec.structs.replace(enrol(tablet, other), person_ids=[person], coverage_year=2027))
    assert after(m.HouseholdUpdate(seq=1, mutation_id=uuid.uuid4(), household_id=third.household_id, base_version=1))
    assert after(
        m.MemberRemove(
            seq=1,
            mutation_id=uuid.uuid4(),
            household_id=third.household_id,
            person_id=third.members[0].person_id,
            base_version=1,
            reason="removed",
        )
    )
    assert after(
        m.HouseholdUpdate(
            seq=1, mutation_id=uuid.uuid4(), household_id=household.household_id, base_version=1, phone="13800000000"
        )
    )
    assert after(
        m.MemberMove(
            seq=1,
            mutation_id=uuid.uuid4(),
            household_id=other.household_id,
            person_id=other.members[0].person_id,
            base_version=1,
            to_household_id=household.household_id,
            relation="other",
        )
    )
    assert after(
        m.MemberUpdate(
            seq=1, mutation_id=uuid.uuid4(), household_id=other.household_id, person_id=person, base_version=1
        )
    )
    assert after(
        m.EnrollmentCancel(
            seq=1, mutation_id=uuid.uuid4(), person_id=other.members[0].person_id, coverage_year=2026, reason="x"
        )
    )
    assert after(m.PaymentVoid(seq=1, mutation_id=uuid.uuid4(), payment_id=uuid.uuid4(), reason="x"))
    # A removal or a dissolution anywhere, while a payment is held: it may cancel an enrolment the
    # held payment's household paid for, which a member took away (its share becomes their credit).
    ids = {"seq": 1, "mutation_id": uuid.uuid4(), "household_id": other.household_id, "base_version": 1}
    removal = m.MemberRemove(**ids, person_id=other.members[0].person_id, reason="removed")
    dissolution = m.HouseholdDissolve(**ids, reason="removed")
    assert after(removal) == "all" and after(dissolution) == "all"
    enrolments_only = push_module._Held()
    enrolments_only.hold_enrolments([(1, held_enrolment, b"")])
    for mutation in (removal, dissolution):
        raw = msgspec.Raw(msgspec.msgpack.encode(msgspec.structs.replace(mutation, seq=last + 1)))
        assert push_module._after_held(raw, "msgpack", last, enrolments_only) is None
    assert after(other, seq=last + 2)  # out of turn
    assert push_module._after_held(msgspec.Raw(b"\xc1"), "msgpack", last, held)
    # With a new household held too, anything else writes it first (who holds a number may change),
    # and what names none of the held enrolments and payments leaves them held.
    held.hold_created([(2, third, b"")])
    edit = m.HouseholdUpdate(seq=1, mutation_id=uuid.uuid4(), household_id=other.household_id, base_version=1)
    assert [after(x) for x in (edit, enrol(tablet, other), payment(tablet, other, receipt=4))] == ["created"] * 3
    assert after(enrol(tablet, household)) == "all"


async def test_a_set_of_enrolments_with_a_refused_one_is_answered_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Enrolments of households visited one after the other are one set; when one of them is refused
    (here a household enrolled already) the set is undone, applied again each on its own, and only
    the refused one is answered so."""
    one_by_one = _OneByOne()
    monkeypatch.setattr(push_module.metrics, "SYNC_ONE_BY_ONE", one_by_one)
    enrolled = _enrolment_sets(monkeypatch)
    tablet = await world(client)
    known, (first,) = _visits(tablet, [(0,)], 1)
    assert [a.status for a in (await push(client, tablet, known)).answers] == ["applied"] * 3
    assert enrolled == []  # one household's enrolment: no set
    one, two = household_create(tablet, numbers=(1, 2), household_no="0301"), household_create(tablet, numbers=(3,))
    tablet.next_seq -= 2
    batch = [msgspec.structs.replace(one, seq=tablet.seq()), enrol(tablet, one), enrol(tablet, first)]
    batch += [msgspec.structs.replace(two, seq=tablet.seq()), enrol(tablet, two)]
    answers = (await push(client, tablet, batch)).answers
    assert [(a.status, a.code) for a in answers] == [
        ("applied", None),
        ("applied", None),
        ("rejected", "already_enrolled"),
        ("applied", None),
        ("applied", None),
    ]
    assert enrolled == [-3]  # tried as one set, then each on its own
    assert one_by_one.count == 1
    rows = await conn.fetch("SELECT household_id, count(*) AS n FROM enrollments GROUP BY household_id")
    assert {r["household_id"]: r["n"] for r in rows} == {
        first.household_id: 1,
        one.household_id: 2,
        two.household_id: 1,
    }


async def test_enrolments_with_tablet_query_codes_in_a_set_are_answered_and_kept_as_one_by_one(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each household of a set gets its own query code as `enrol` gives it: the tablet's where it
    sent one (stored), the server's where it did not (printed on receipts)."""
    enrolled = _enrolment_sets(monkeypatch)
    tablet = await world(client)
    device_key = query_codes.device_key(JWT_SECRET.encode(), tablet.device_id)

    def with_codes(batch: list[Any], coded: tuple[bool, ...]) -> list[Any]:
        enrolments = iter(coded)
        return [
            msgspec.structs.replace(x, query_code_hash=m.query_code_hash(device_key, x.household_id, 2026, "ABCD2345"))
            if isinstance(x, m.EnrollmentCreate) and next(enrolments)
            else x
            for x in batch
        ]

    # A household with a code already (its first member enrolled before): the tablet's is not taken.
    coded = household_create(tablet, numbers=(6, 7), household_no="0400")
    first = msgspec.structs.replace(enrol(tablet, coded), person_ids=[coded.members[0].person_id])
    assert [a.status for a in (await push(client, tablet, [coded, first])).answers] == ["applied"] * 2
    assert enrolled == []
    together, households = _visits(tablet, [(0,), (1,), (2,)], 1)
    second = msgspec.structs.replace(
        enrol(tablet, coded),
        person_ids=[coded.members[1].person_id],
        query_code_hash=m.query_code_hash(device_key, coded.household_id, 2026, "ABCD2345"),
    )
    answers = (await push(client, tablet, [*with_codes(together, (True, False, True)), second])).answers
    at_once, late = answers[:-1], answers[-1]
    assert enrolled == [4]
    assert (late.status, late.query_code_stored) == ("applied", False)
    apart, others = _visits(tablet, [(3,), (4,), (5,)], 11)
    one_by_one = await _one_by_one(client, tablet, with_codes(apart, (True, False, True)))
    assert _seen(at_once) == _seen(one_by_one)
    assert [a.query_code_stored for a in at_once[1::3]] == [True, None, True]
    for batch in (households, others):
        rows = await conn.fetch(
            "SELECT household_id, device_id IS NOT NULL AS tablets FROM household_query_codes"
            " WHERE household_id = ANY($1::uuid[])",
            [h.household_id for h in batch],
        )
        by_household = {r["household_id"]: r["tablets"] for r in rows}
        assert [by_household[h.household_id] for h in batch] == [True, False, True]
        printed = await enrollments.household_query_code(conn, JWT_SECRET.encode(), batch[1].household_id, 2026)
        assert printed == derive_query_code(JWT_SECRET.encode(), batch[1].household_id, 2026)
