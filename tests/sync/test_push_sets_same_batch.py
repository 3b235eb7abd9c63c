"""The same push applied with its sets and one mutation at a time must leave the same world (issue 20:
"keep every per-mutation answer and the ledger exactly as today").

One batch, built the same way twice with the same ids: a tablet's row of 30 clean visits (subsidised
persons from a 低保 and a 特困 list, split enrolments, edits) that the sets take whole — one set of 25
households' enrolments (the cap) with their payments, then sets cut short by the end of the push's
chunk of 100 — then one visit for each rule a set must answer as one at a time does: a payment
naming a stranger, a receipt number used twice, a clashing channel reference, an underpayment, an
enrolment naming another household's member; a void, a cancellation and a new member after the
payment they follow; a payment collected on a day the collector has closed. (A set holding one of
these fails and its mutations are applied again one at a time, so those visits test that path.) It
is pushed into two fresh databases: into one as the server does (sets), into the other with every
mutation on its own under its own savepoint (the push's one-by-one path, `RESUMES = -1`). Then every
answer, every ledger row and every row it left — households, persons, memberships, enrolments,
query codes, payments, allocations, events, quarantine, change records, the summary, the tablets'
change log and the audit rows — must be the same, the ids the server made itself named by where they
first appear. Audit rows and change-log rows are compared as sets: a held mutation's rows are
written when its set is (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from backend import crypto
from backend.app import create_app
from backend.auth.passwords import Passwords
from backend.db import init_connection
from backend.enrollment import enrollments as enrolment_service
from backend.enrollment import households as household_service
from backend.premiums import payments as premium_payments
from backend.sync import push as push_module
from backend.sync import sealed
from backend.tools import demo
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.rules.identity import check_character
from tests.conftest import NOW, PgServer, make_settings
from tests.sync.test_subsidies import load
from tests.sync_world import Client, Tablet, push, world

CLEAN = 30  # visits with nothing refused, then one visit per rule below
VISITS = CLEAN + 10
VILLAGES = ("330106001001", "330106001002")
COLLECTED = datetime(2025, 10, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
CLOSED = datetime(2025, 10, 5, 1, 0, tzinfo=UTC)  # the collector's day closed before the push
_SEED = uuid.UUID("6f1c2a52-3b0e-4c55-9a7e-2d4f8e1b0c20")
PREMIUM, DI_BAO, TE_KUN = 40000, 20000, 0  # what a member owes: no list, half (di_bao), nothing (te_kun)


def _id_number(visit: int, member: int) -> str:
    born = (f"{1960 + visit % 30}0115", f"{1962 + visit % 30}0620", f"{2012 + visit % 10}0301")[member]
    first_17 = f"330106{born}{visit:02d}{member}"
    return first_17 + check_character(first_17)


class _Batch:
    """The visits as mutations, their ids derived from a count: the same batch however often it is built."""

    def __init__(self, tablet: Tablet) -> None:
        self.made = 0
        self.tablet = tablet
        self.mutations: list[Any] = []
        self.di_bao: list[str] = []
        self.te_kun: list[str] = []
        self.stranger = self.uuid()

    def uuid(self) -> uuid.UUID:
        self.made += 1
        return uuid.uuid5(_SEED, str(self.made))

    def add(self, kind: type[Any], **fields: Any) -> Any:
        mutation = kind(seq=self.tablet.seq(), mutation_id=self.uuid(), **fields)
        self.mutations.append(mutation)
        return mutation

    def visits(self) -> list[Any]:
        """CLEAN visits that sets take whole (caps reached, chunk boundary crossed), then one visit
        for each rule a set must answer as one at a time does."""
        households: list[m.HouseholdCreate] = []
        for visit in range(VISITS):
            members = [
                m.NewMember(
                    person_id=self.uuid(),
                    name=f"成员{visit}-{k}",
                    relation=("head", "spouse", "child")[k],
                    id_number=_id_number(visit, k),
                )
                for k in range(3 if visit % 3 == 0 else 2)
            ]
            owed = [PREMIUM] * len(members)
            if visit % 4 == 1:
                self.di_bao.append(_id_number(visit, 1))
                owed[1] = DI_BAO
            if visit % 5 == 2:
                self.te_kun.append(_id_number(visit, 0))
                owed[0] = TE_KUN
            created = self.add(
                m.HouseholdCreate,
                household_id=self.uuid(),
                village_code=VILLAGES[visit % 2],
                household_no=f"{visit + 1:04d}",
                address=f"北山村{visit % 5 + 1}组",
                members=members,
            )
            households.append(created)
            version = 1
            household = created.household_id
            if visit % 2 == 0:
                self.add(m.HouseholdUpdate, household_id=household, base_version=version, phone=f"1380000{visit:04d}")
                version += 1
            people = [x.person_id for x in members]
            if visit == CLEAN + 6:  # a member of the last household too: refused, and its payment with it
                people = [*people, households[-2].members[0].person_id]
            if visit % 6 == 5:  # a run of two enrolments of one household
                self.add(m.EnrollmentCreate, household_id=household, coverage_year=2026, person_ids=people[:1])
                self.add(m.EnrollmentCreate, household_id=household, coverage_year=2026, person_ids=people[1:])
            else:
                self.add(m.EnrollmentCreate, household_id=household, coverage_year=2026, person_ids=people)
            paid = self.payment(visit, created, sum(owed))
            if visit == CLEAN + 7:  # collected today: the tablet may void it
                self.add(m.PaymentVoid, payment_id=paid.payment_id, reason="录错金额")
            if visit == CLEAN + 8:  # the enrolment the payment paid, cancelled after it
                self.add(m.EnrollmentCancel, person_id=people[0], coverage_year=2026, reason="data_error")
            if visit == CLEAN + 9:
                number = f"33010620261120{visit:02d}9"
                newborn = m.NewMember(
                    person_id=self.uuid(), name="新生儿", relation="child", id_number=number + check_character(number)
                )
                self.add(m.MemberCreate, household_id=household, base_version=version, member=newborn)
        return self.mutations

    def payment(self, visit: int, created: m.HouseholdCreate, owed: int) -> m.PaymentRecord:
        people = [x.person_id for x in created.members]
        fields: dict[str, Any] = {"method": "cash", "collected_at": COLLECTED, "receipt_no": f"T{visit + 1:08d}"}
        if visit == CLEAN:
            people = [*people, self.stranger]
        if visit == CLEAN + 1:
            fields["receipt_no"] = f"T{visit - 1:08d}"  # the receipt of the last clean visit
        if visit == CLEAN + 2:
            fields["collected_at"] = CLOSED
        if visit in (CLEAN + 3, CLEAN + 4):
            fields |= {"method": "qr", "channel_ref": "WX-4200017"}
        if visit == CLEAN + 5:
            owed -= 100
        if visit == CLEAN + 7:
            fields |= {"collected_at": NOW, "acknowledge_no_cover": True}
        return self.add(  # type: ignore[no-any-return]
            m.PaymentRecord,
            payment_id=self.uuid(),
            household_id=created.household_id,
            coverage_year=2026,
            person_ids=people,
            amount_fen=owed,
            due_fen=owed,
            **fields,
        )


class _Names:
    """UUIDs as the same words in both worlds: the batch's as themselves, the world's own by role,
    and those the server made by where they first appear."""

    def __init__(self, batch: _Batch, world_ids: dict[uuid.UUID, str]) -> None:
        self.batch_ids = {str(x) for x in _uuids(msgspec.to_builtins(batch.mutations))} | {str(batch.stranger)}
        self.names: dict[str, str] = {str(k): v for k, v in world_ids.items()}

    def __call__(self, value: Any, *, name_new: bool = True) -> Any:
        if isinstance(value, uuid.UUID):
            value = str(value)
        if isinstance(value, str) and _is_uuid(value):
            if value in self.batch_ids:
                return value
            if value not in self.names:
                if not name_new:
                    return "(made)"
                self.names[value] = f"made-{len(self.names)}"
            return self.names[value]
        if isinstance(value, dict):
            return {k: self(v, name_new=name_new) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            return [self(v, name_new=name_new) for v in value]
        return value


def _is_uuid(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _uuids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if _is_uuid(value) else []
    if isinstance(value, dict):
        return [x for v in value.values() for x in _uuids(v)]
    if isinstance(value, list):
        return [x for v in value for x in _uuids(v)]
    return []


# Per table: the rows in an order of what the batch decides (so the server's own ids are named the
# same in both worlds), less what differs by nature (`_kept`): when (timestamps the server takes),
# serial numbers and transaction ids.
_ROWS = {
    "households": "SELECT * FROM households ORDER BY id",
    "persons": "SELECT * FROM persons ORDER BY id",
    "memberships": "SELECT * FROM memberships ORDER BY person_id, household_id, left_at NULLS LAST",
    "enrollments": "SELECT * FROM enrollments ORDER BY person_id, coverage_year, status",
    "household_query_codes": "SELECT * FROM household_query_codes ORDER BY household_id, coverage_year",
    "payments": "SELECT * FROM payments ORDER BY id",
    "payment_allocations": "SELECT * FROM payment_allocations ORDER BY payment_id, person_id",
    "payment_events": "SELECT * FROM payment_events ORDER BY payment_id, kind",
    "sync_quarantine": "SELECT * FROM sync_quarantine ORDER BY seq",
    "sync_conflicts": "SELECT * FROM sync_conflicts ORDER BY seq",
    "sync_mutations": "SELECT * FROM sync_mutations ORDER BY seq",
    "record_changes": "SELECT * FROM record_changes ORDER BY household_id, version, person_id, field",
    "coverage_persons": "SELECT * FROM coverage_persons ORDER BY person_id",
    "coverage_tallies": "SELECT coverage_year, village_code, sum(persons) AS persons, sum(funded) AS funded,"
    " sum(registered_unpaid) AS registered_unpaid, sum(confirmed) AS confirmed FROM coverage_tallies"
    " GROUP BY coverage_year, village_code ORDER BY coverage_year, village_code",
}
# Compared as sets of rows (see the module): their order follows when a set was written.
_UNORDERED = {
    "audit_log": "SELECT * FROM audit_log WHERE device_id IS NOT NULL AND action <> 'login'",
    "sync_changes": "SELECT * FROM sync_changes",
}
_KEPT_TIMES = {"collected_at", "device_time"}  # the batch's own
_DROPPED = {"xid", "xact"}
_SEALED_DOCUMENTS = {"body_enc": sealed.QUARANTINED_BODY, "mutation_enc": sealed.HELD_MUTATION}


def _kept(row: asyncpg.Record) -> dict[str, Any]:
    """A row less what differs by nature, its sealed values opened (their nonces differ)."""
    kept = {}
    for column, value in row.items():
        if column in _DROPPED or (column == "id" and isinstance(value, int)):  # serial
            continue
        if column == "request_id" and isinstance(value, str):  # the audit row's HTTP request
            continue
        if isinstance(value, datetime) and column not in _KEPT_TIMES:
            continue
        clear = _clear(column, value, row)
        kept[column] = bytes(clear).hex() if isinstance(clear, bytes | memoryview) else clear
    return kept


def _clear(column: str, value: Any, row: asyncpg.Record) -> Any:
    if value is None:
        return None
    if column in sealed.SEALED_COLUMNS:
        return crypto.keys().open(sealed.SEALED_COLUMNS[column][1], value)
    if column in _SEALED_DOCUMENTS:
        return sealed.open_document(_SEALED_DOCUMENTS[column], value)
    if column in ("old_value", "new_value"):  # record_changes
        return sealed.open_change(row["field"], value)
    if column in ("answer", "summary", "coverage_facts", "base_values", "server_values", "tablet_values"):
        document = msgspec.json.decode(value) if isinstance(value, str) else value
        return sealed.open_values(document) if isinstance(document, dict) else document
    return value


async def _world_state(
    conn: asyncpg.Connection,
    names: _Names,
    answers: list[m.Answer],
) -> dict[str, Any]:
    state: dict[str, Any] = {"answers": [names(msgspec.to_builtins(a)) for a in answers]}
    for table, query in _ROWS.items():
        state[table] = [names(_kept(r)) for r in await conn.fetch(query)]
    for table, query in _UNORDERED.items():
        rows = [names(_kept(r), name_new=False) for r in await conn.fetch(query)]
        state[table] = sorted(rows, key=repr)
    return state


@asynccontextmanager
async def _fresh_world(pg_server: PgServer, passwords: Passwords) -> AsyncIterator[tuple[Client, Any]]:
    """A database of its own with the demo district, and an app serving it."""
    name = await asyncio.to_thread(pg_server.create_database)
    try:
        conn = await asyncpg.connect(pg_server.dsn(name), server_settings={"timezone": "UTC"})
        await init_connection(conn)
        try:
            await demo.seed(conn, passwords)
            app = create_app(make_settings(pg_server.app_dsn(name)), configure_logs=False)
            async with AsyncTestClient(app) as client:
                yield client, conn
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg_server.drop_database, name)


async def _pushed(pg_server: PgServer, passwords: Passwords) -> dict[str, Any]:
    """The batch pushed into a world of its own, and what it left there."""
    async with _fresh_world(pg_server, passwords) as (client, conn):
        tablet = await world(client)
        batch = _Batch(tablet)
        mutations = batch.visits()
        await load(client, "di_bao", *(f"{n},低保户,," for n in batch.di_bao))
        await load(client, "te_kun", *(f"{n},特困人员,," for n in batch.te_kun))
        reviewer = await conn.fetchval("SELECT id FROM users WHERE username = 'reviewer_a'")
        await conn.execute(
            "INSERT INTO collector_days (collector_id, business_date, expected_fen, remitted_fen, closed_by)"
            " VALUES ($1, '2025-10-05', 0, 0, $2)",
            tablet.user_id,
            reviewer,
        )
        answers = (await push(client, tablet, mutations)).answers
        world_ids: dict[uuid.UUID, str] = {tablet.device_id: "device"}
        for query in (  # the world's own ids, by what names them in both worlds
            "SELECT id, 'user:' || username AS name FROM users",
            "SELECT id, 'block:' || prefix || first_no AS name FROM receipt_blocks",
            "SELECT id, 'policy:' || coverage_year || '.' || version AS name FROM policy_versions",
            "SELECT id, 'list:' || list_type || '.' || version AS name FROM list_versions",
        ):
            world_ids |= {r["id"]: r["name"] for r in await conn.fetch(query)}
        return await _world_state(conn, _Names(batch, world_ids), answers)


async def test_a_row_of_visits_leaves_the_same_world_with_sets_as_one_at_a_time(
    pg_server: PgServer,
    passwords: Passwords,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: dict[str, list[int]] = {"create_households": [], "enrol_many": [], "record_payments": []}

    def spy(name: str, call: Any) -> Any:
        async def spied(conn: Any, actor: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
            done = await call(conn, actor, items, *args, **kwargs)
            sizes[name].append(len(items))  # a set that raised was undone: not counted
            return done

        return spied

    monkeypatch.setattr(
        household_service, "create_households", spy("create_households", household_service.create_households)
    )
    monkeypatch.setattr(enrolment_service, "enrol_many", spy("enrol_many", enrolment_service.enrol_many))
    monkeypatch.setattr(premium_payments, "record_payments", spy("record_payments", premium_payments.record_payments))
    with_sets = await _pushed(pg_server, passwords)
    # Sets taken and written (one of 25 households' enrolments: the cap; its visits' payments with it;
    # the visits' new households, with their edits, held back and written as one set before them).
    assert max(sizes["enrol_many"]) == 25 and max(sizes["record_payments"]) >= 20, sizes
    assert max(sizes["create_households"]) >= 20, sizes
    sizes = {"create_households": [], "enrol_many": [], "record_payments": []}
    with monkeypatch.context() as one_by_one:
        one_by_one.setattr(push_module, "RESUMES", -1)  # no fast path: each mutation under its own savepoint
        alone = await _pushed(pg_server, passwords)
    assert not sizes["record_payments"] and not sizes["create_households"], sizes  # no set at all
    assert set(sizes["enrol_many"]) == {1}, sizes

    # The visits' refusals, answered by position (the rest applied): the stranger's payment, the
    # receipt used twice, the clashing reference, the underpayment, the enrolment naming another
    # household's member and the payment for it.
    statuses = [(a["status"], a.get("code")) for a in with_sets["answers"]]
    assert len(statuses) == 149
    assert [(i, s) for i, s in enumerate(statuses) if s != ("applied", None)] == [
        (113, ("quarantined", "not_applicable")),
        (116, ("quarantined", "receipt_clash")),
        (127, ("quarantined", "channel_ref_clash")),
        (131, ("applied_with_conflict", "due_differs")),
        (134, ("rejected", "validation_error")),
        (135, ("quarantined", "not_applicable")),
    ]
    for table in with_sets:
        assert with_sets[table] == alone[table], table
