"""Push: a batch of a tablet's mutations, each applied at most once, in its device order.

The push runs in the request's transaction; the device's row is locked NOWAIT (a concurrent push
of the same tablet is a 409), and every household it names is locked up front. Its ledger rows and
held audit rows are written in one statement each before it commits, with their effects. The
business rules are the REST services' own (households, enrolments, premiums): the mutation handlers
(handlers_households.py, handlers_money.py) only translate.

Mutations are applied in chunks of CHUNK, each under one savepoint (the fast path); when anything in
a chunk fails, the chunk is undone, the mutations before the failing one are applied again on the
fast path and the failing one alone under a savepoint of its own, so a failure is that mutation's
alone; the fast path resumes after it (after RESUMES of them, the rest of the chunk goes one mutation
per savepoint); a set (below) that fails is applied again with its mutations each on its own on the
fast path, which finds the one that fails. On the fast path, sets where the rules allow (issue 20):
consecutive enrolments of one household and year are one enrol(); a new household and the new
members added to it next are one read and one insert (written at the version the last addition
gives); new households in a row (a registration day: nobody in two of them, none known already) are
one read and one insert for up to HOUSEHOLDS_AT_ONCE of them; consecutive
new members of a household made earlier are one read, one insert and one bump by their number, each
change record stamped with the version its own bump would give; a household this push wrote is not
read again, by its handlers nor by the service that updates it (Context.households: the push holds
its lock and only its handlers write it), nor one it locked as it began (the lock reads the rows);
the changes others made to the households it names since the lowest base version its mutations
give each are read once as it begins (Context.changes: nobody else can add any while it holds the
locks); a rollback puts back the households known at its savepoint; what the server holds of the
chunk's payment ids is read in one go (Context.payments), and a payment needs no savepoint of its
own. Enrolments and payments of households in a row of visits (each household registered, enrolled
and paid for) are sets: an enrolment (or a run of them) of a household the push holds, and a payment
reported for the first time, a premium of such a household, are held back and the mutations after
them go on; before the first that names one of the held households or persons (or a void, a
cancellation, a new household or member, with payments held a removal or dissolution, anything out
of turn: `_after_held`), or at the chunk's end, or when ENROLMENTS_AT_ONCE households or
PAYMENTS_AT_ONCE payments are held, the enrolments held are written as one set
(`enrolment_service.enrol_many`: one read, one insert) and then the payments as one
(`premium_payments.record_payments`: one round of five statements for them all). Every answer and
ledger row is what one mutation at a time gives (tests/sync/test_push_sets.py); the audit rows of
what was held come after those of the mutations it was held past, in the order the server applied
them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

import asyncpg
import msgspec

from backend import metrics
from backend.actor import Actor
from backend.audit import service as audit
from backend.db import Connection, load_queries
from backend.enrollment import households as household_service
from backend.errors import Conflict, DomainError, Forbidden
from backend.i18n import N_, _
from backend.ids import uuid7
from backend.sync import handlers_households as households
from backend.sync import handlers_money as money
from backend.sync import sealed
from backend.sync.conflicts import service as conflicts
from backend.sync.context import Context, Handler, Quarantine, failure_text
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")

CLOCK_SKEW_FLAG = timedelta(minutes=10)
_json_mutation = msgspec.json.Decoder(m.AnyMutation)
_msgpack_mutation = msgspec.msgpack.Decoder(m.AnyMutation)
_canonical = msgspec.msgpack.Encoder()


class PushInProgress(Conflict):
    """Another push from this device is running; retry when it has answered"""

    code = "push_in_progress"


class DeviceRequired(Forbidden):
    """Sync needs a token bound to a registered tablet (log in with device_id and device_secret)"""

    code = "device_required"


class DeviceMismatch(Forbidden):
    """The body names another device than the token"""

    code = "device_mismatch"


async def push(
    conn: Connection, actor: Actor, request: m.PushRequest, fmt: codec.Format, ctx: Context
) -> m.PushResponse:
    if actor.device_id is None:
        raise DeviceRequired()
    if request.device_id != actor.device_id:
        raise DeviceMismatch()
    device = await conn.fetchrow(Q["device_for_sync"], request.device_id)
    if device is None or device["owner_id"] != actor.id or device["status"] == "revoked":
        raise DeviceRequired()
    households: dict[UUID, dict[str, Any]] = {}
    changes: dict[UUID, conflicts.Changes] = {}
    ctx = msgspec.structs.replace(
        ctx, device_status=device["status"], households=households, changes=changes, payments={}
    )
    try:
        last_seq: int = await conn.fetchval(Q["lock_sync_device"], request.device_id)
    except asyncpg.LockNotAvailableError as exc:
        raise PushInProgress() from exc
    bases = await _lock_households(conn, request.mutations, fmt, households)
    changes.update(await conflicts.changes_since_many(conn, bases, request.device_id))
    with audit.deferred(conn) as held:
        ledger = _Ledger(held)
        answers, last_seq = await _apply_chunks(conn, actor, request.mutations, fmt, ctx, last_seq, ledger)
        await ledger.write(conn, actor)
        await held.write()
    skew = None if request.device_time is None else round((request.device_time - ctx.now).total_seconds())
    await conn.execute(Q["finish_push"], request.device_id, last_seq, request.app_version, skew)
    flag: Literal["ahead", "behind"] | None = None
    if skew is not None and abs(skew) > CLOCK_SKEW_FLAG.total_seconds():
        flag = "ahead" if skew > 0 else "behind"
    return m.PushResponse(
        protocol_version=m.PROTOCOL_VERSION,
        device_id=request.device_id,
        last_seq=last_seq,
        answers=answers,
        server_time=ctx.now,
        clock_skew_s=skew,
        clock_flag=flag,
    )


class _Targets(msgspec.Struct, kw_only=True):
    household_id: UUID | None = None
    to_household_id: UUID | None = None
    base_version: Any = None


_json_targets = msgspec.json.Decoder(_Targets)
_msgpack_targets = msgspec.msgpack.Decoder(_Targets)


async def _lock_households(
    conn: Connection, mutations: list[msgspec.Raw], fmt: codec.Format, households: dict[UUID, dict[str, Any]]
) -> dict[UUID, int]:
    """Locks the households the push names, in id order, before applying anything (a mutation
    locks its household again as it goes: already held, that costs nothing), and adds them to
    `households` as locked: what the handlers start from (Context.households), nobody else can
    change them now. Answers the lowest base version the push gives each of them."""
    decoder = _msgpack_targets if fmt == "msgpack" else _json_targets
    ids: set[UUID] = set()
    bases: dict[UUID, int] = {}
    for raw in mutations:
        try:
            targets = decoder.decode(bytes(raw))
        except msgspec.DecodeError:
            continue  # answered on its own when its turn comes
        ids.update(x for x in (targets.household_id, targets.to_household_id) if x is not None)
        base = targets.base_version
        if targets.household_id is not None and type(base) is int and 0 <= base < 2**63:
            bases[targets.household_id] = min(base, bases.get(targets.household_id, base))
    if ids:
        households.update(await conflicts.lock_households(conn, ids))
    return {x: base for x, base in bases.items() if x in households}


CHUNK = 100  # mutations under one savepoint on the fast path (50 → 100: bench/sync_push.py 2.2 → 2.0 s)
# Failures in one chunk after which the rest of it is applied one by one (a chunk that fails often
# would otherwise pay for a fast attempt before every failing mutation).
RESUMES = 2


async def _apply_chunks(
    conn: Connection,
    actor: Actor,
    mutations: list[msgspec.Raw],
    fmt: codec.Format,
    ctx: Context,
    last_seq: int,
    ledger: _Ledger,
) -> tuple[list[m.Answer], int]:
    answers: list[m.Answer] = []
    reports = _payment_reports(mutations, fmt)
    for start in range(0, len(mutations), CHUNK):
        chunk = mutations[start : start + CHUNK]
        await _read_reports(conn, ctx, reports[start : start + CHUNK], last_seq)
        if ctx.dedup:
            await ledger.read_earlier(conn, actor.device_id, chunk, fmt, last_seq)
        done, last_seq = await _apply_chunk(conn, actor, chunk, fmt, ctx, last_seq, ledger)
        answers += done
    return answers, last_seq


async def _apply_chunk(
    conn: Connection,
    actor: Actor,
    chunk: list[msgspec.Raw],
    fmt: codec.Format,
    ctx: Context,
    last_seq: int,
    ledger: _Ledger,
) -> tuple[list[m.Answer], int]:
    """Fast path: the chunk under one savepoint. If a mutation fails, the chunk is undone; the
    mutations before it are applied again the same way, the failing one alone under a savepoint of
    its own (so the failure is its alone), and the fast path resumes after it — up to RESUMES
    failures, after which the rest of the chunk goes one by one. When a set fails (a run written
    together), the chunk is undone, the mutations before the set are applied again the same way and
    kept, and then the rest on the fast path with the set's mutations each on its own, which finds
    the one that fails (a set's failure counts for none) and undoes no more than from the set on."""
    answers: list[m.Answer] = []
    at, failing, failures, plain_until, plain_next = 0, -1, 0, 0, 0
    fast = msgspec.structs.replace(ctx, fast=True)
    while at < len(chunk):
        end = len(chunk)
        while ctx.device_status == "active" and failures <= RESUMES and at not in (end, failing):
            mark, before, reached = ledger.mark(), _households_now(ctx), [0, 1]
            try:
                async with conn.transaction():
                    done, seq_after = await _apply_all(
                        conn,
                        actor,
                        chunk[at:end],
                        fmt,
                        fast,
                        last_seq,
                        ledger,
                        savepoint=False,
                        reached=reached,
                        plain=plain_until - at,
                    )
            except _HANDLED:
                ledger.undo(mark)
                _households_back(ctx, before)
                position, length = at + reached[0], reached[1]
                if length > 1 and position > at:  # a set: what came before it again, as it was, kept
                    end, plain_next = position, position + length
                    continue
                if length > 1:  # a set where the attempt began: its mutations again, each on its own
                    plain_until = position + length
                    continue
                failing, failures, end = position, failures + 1, position
                continue
            answers += done
            at, last_seq = end, seq_after
            if at != failing:  # stopped before a set that failed: on with its mutations each on its own
                end, plain_until = failing if failing > at else len(chunk), max(plain_until, plain_next)
        if at == len(chunk):
            break
        # One by one: the failing mutation, or all that is left.
        alone = 1 if at == failing and failures <= RESUMES and ctx.device_status == "active" else len(chunk) - at
        one_by_one = chunk[at : at + alone]
        done, last_seq = await _apply_all(conn, actor, one_by_one, fmt, ctx, last_seq, ledger, savepoint=True)
        metrics.SYNC_ONE_BY_ONE.inc(alone)
        answers += done
        at += alone
    return answers, last_seq


class _PaymentId(msgspec.Struct):
    payment_id: Any = None


_json_payment_id = msgspec.json.Decoder(_PaymentId)
_msgpack_payment_id = msgspec.msgpack.Decoder(_PaymentId)


def _payment_reports(mutations: list[msgspec.Raw], fmt: codec.Format) -> list[tuple[int, UUID] | None]:
    """For each mutation, its seq and payment id when it is the push's only payment.record of that
    id (read as `_quarantine` reads one: any text that makes a UUID); else None."""
    decoder = _msgpack_payment_id if fmt == "msgpack" else _json_payment_id
    found: list[tuple[int, UUID] | None] = []
    for raw in mutations:
        head = _decode_head(raw, fmt)
        payment_id = None
        if head is not None and head.type == "payment.record":
            try:
                payment_id = UUID(str(decoder.decode(bytes(raw)).payment_id))
            except (msgspec.DecodeError, ValueError):
                payment_id = None
        found.append(None if head is None or head.seq is None or payment_id is None else (head.seq, payment_id))
    times = Counter(x[1] for x in found if x is not None)
    return [x if x is not None and times[x[1]] == 1 else None for x in found]


async def _read_reports(conn: Connection, ctx: Context, reports: list[tuple[int, UUID] | None], last_seq: int) -> None:
    """What the server holds of the payment ids the chunk reports for the first time, in one go."""
    ids = [payment_id for x in reports if x is not None for seq, payment_id in [x] if seq > last_seq]
    if ids and ctx.payments is not None:
        ctx.payments.clear()
        ctx.payments.update(await money.reported_before(conn, ids))


def _households_now(ctx: Context) -> dict[UUID, dict[str, Any]] | None:
    """The households known (Context.households) before a savepoint, to go back to if it rolls back."""
    return None if ctx.households is None else dict(ctx.households)


def _households_back(ctx: Context, known: dict[UUID, dict[str, Any]] | None) -> None:
    """After a rollback: the households as they were known when its savepoint began (the entries are
    replaced on a write, never changed in place)."""
    if ctx.households is not None and known is not None:
        ctx.households.clear()
        ctx.households.update(known)


class _Ledger:
    """This push's ledger rows, written in one statement before the push commits: in the same
    transaction as their effects, so they still commit (or vanish) together. It also marks and
    undoes the audit rows held back during the push (`held`), which are written the same way."""

    def __init__(self, held: audit.Deferred) -> None:
        self.held = held
        self.rows: list[tuple[int, UUID | None, str, bytes, str, str, datetime | None]] = []
        self.by_seq: dict[int, tuple[bytes, m.Answer]] = {}
        self.stored: dict[int, tuple[bytes, Any]] = {}  # rows of earlier pushes, read for a chunk at once

    def add(
        self,
        seq: int,
        mutation_id: UUID | None,
        kind: str,
        body_hash: bytes,
        answer: m.Answer,
        device_time: datetime | None,
    ) -> None:
        self.rows.append(
            (seq, mutation_id, kind[:64], body_hash, answer.status, msgspec.json.encode(answer).decode(), device_time)
        )
        self.by_seq[seq] = (body_hash, answer)

    def mark(self) -> tuple[int, int]:
        return len(self.rows), self.held.mark()

    def undo(self, mark: tuple[int, int]) -> None:
        rows, audit_rows = mark
        for row in self.rows[rows:]:
            del self.by_seq[row[0]]
        del self.rows[rows:]
        self.held.undo(audit_rows)

    async def read_earlier(
        self, conn: Connection, device_id: UUID | None, chunk: list[msgspec.Raw], fmt: codec.Format, last_seq: int
    ) -> None:
        """The stored rows of the seqs at or below last_seq the chunk sends again, in one round trip."""
        heads = (_decode_head(raw, fmt) for raw in chunk)
        seqs = [h.seq for h in heads if h is not None and h.seq is not None and 1 <= h.seq <= last_seq]
        self.stored.clear()
        if seqs:
            rows = await conn.fetch(Q["ledger_entries"], device_id, seqs)
            self.stored = {r["seq"]: (bytes(r["body_hash"]), r["answer"]) for r in rows}

    async def earlier(self, conn: Connection, device_id: UUID | None, seq: int) -> tuple[bytes, m.Answer]:
        if seq in self.by_seq:
            return self.by_seq[seq]
        if seq in self.stored:
            body_hash, answer = self.stored[seq]
            return body_hash, msgspec.convert(answer, m.Answer)
        stored = await conn.fetchrow(Q["ledger_entry"], device_id, seq)
        assert stored is not None, "every seq up to last_seq has its ledger row"
        return bytes(stored["body_hash"]), msgspec.convert(stored["answer"], m.Answer)

    async def write(self, conn: Connection, actor: Actor) -> None:
        if self.rows:
            self.rows.sort(key=lambda row: row[0])  # in seq order (a payment held back for a set came later)
            columns = list(zip(*self.rows, strict=True))
            await conn.execute(Q["insert_ledger_many"], actor.device_id, actor.id, *columns)


# A mutation's own failure, answered. The database's refusals of one row's data (a check or a
# foreign key the service did not foresee) belong here too: they must not fail the whole push and
# wedge the tablet's queue behind one record (SPEC §3).
_DATABASE_REFUSALS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)


class _OutOfTurn(Exception):
    """Held new households that would reuse someone known, to be written before enrolments or payments
    held from earlier seqs: the set is undone and its span applied one mutation at a time, in turn."""


_HANDLED = (Quarantine, DomainError, msgspec.ValidationError, *_DATABASE_REFUSALS, _OutOfTurn)


async def _apply_all(
    conn: Connection,
    actor: Actor,
    chunk: list[msgspec.Raw],
    fmt: codec.Format,
    ctx: Context,
    last_seq: int,
    ledger: _Ledger,
    *,
    savepoint: bool,
    reached: list[int] | None = None,
    plain: int = 0,
) -> tuple[list[m.Answer], int]:
    """The chunk's answers and the last seq after it. `reached` is kept at the chunk's position of
    the run or mutation being applied and how many it applies at once (where a failure raised out of
    the fast path happened; for a set of payments, from the first to the last of them). The first
    `plain` mutations are applied each on its own, in no set.

    On the fast path an enrolment (or a run of them) and a payment that may join a set
    (`_settable_enrolments`, `_settable`) are held back, their seqs taken, and the mutations after
    them go on; what is held is applied before the first mutation that may depend on it
    (`_after_held`), or at the chunk's end: the enrolments as one set, then the payments as one
    (`_apply_held`)."""
    slots: list[m.Answer | None] = []
    held = _Held()
    at = 0
    while at < len(chunk):
        run: list[tuple[m.Mutation, bytes]] = []
        if not savepoint and at >= plain:
            if len(held.enrolments) == ENROLMENTS_AT_ONCE or len(held.payments) == PAYMENTS_AT_ONCE:
                await _apply_held(conn, actor, chunk, fmt, ctx, ledger, held, slots, reached)  # full: a new set
            group = _settable_enrolments(chunk, at, fmt, last_seq, actor, ctx, held)
            if group:
                held.hold_enrolments([(at + i, mu, body_hash) for i, (mu, body_hash) in enumerate(group)])
                slots += [None] * len(group)
                last_seq += len(group)
                at += len(group)
                continue
            payment = _settable(chunk[at], fmt, last_seq, actor, ctx, held)
            if payment is not None:
                held.hold_payment(at, *payment)
                slots.append(None)
                last_seq += 1
                at += 1
                continue
            creation = _creation(chunk, at, fmt, last_seq, actor, ctx, held)
            if creation:
                if len(held.created) == HOUSEHOLDS_AT_ONCE:  # full: a new set (after what is held)
                    await _apply_held(conn, actor, chunk, fmt, ctx, ledger, held, slots, reached)
                held.hold_created([(at + i, mu, body_hash) for i, (mu, body_hash) in enumerate(creation)])
                slots += [None] * len(creation)
                last_seq += len(creation)
                at += len(creation)
                continue
            if held and (depends := _after_held(chunk[at], fmt, last_seq, held)):
                only = depends == "created"
                await _apply_held(conn, actor, chunk, fmt, ctx, ledger, held, slots, reached, created_only=only)
            run = [*_enrolment_run(chunk, at, fmt, last_seq)] or _household_run(chunk, at, fmt, last_seq)
            run = run or [*_households_run(chunk, at, fmt, last_seq)] or [*_member_run(chunk, at, fmt, last_seq)]
        if reached is not None:
            reached[:] = [at, max(len(run), 1)]
        if len(run) > 1:
            # Enrolments of one household in a row: one enrol() for them all; a new household and the
            # members added to it next (and its edit after them), new households in a row, or new
            # members of one household in a row: written as one set. Each answered and in the ledger
            # as if applied one after the other.
            enrolments = [mu for mu, _h in run if isinstance(mu, m.EnrollmentCreate)]
            members = [mu for mu, _h in run if isinstance(mu, m.MemberCreate)]
            created = [mu for mu, _h in run if isinstance(mu, m.HouseholdCreate)]
            edit = next((mu for mu, _h in run if isinstance(mu, m.HouseholdUpdate)), None)
            first = run[0][0]
            if enrolments:
                done = await households.enrollment_create_run(conn, actor, enrolments, ctx)
            elif len(created) > 1:
                runs: list[households.HouseholdSteps] = [(mu, [], None) for mu in created]
                created_many = await households.household_create_many(conn, actor, runs, ctx)
                assert created_many is not None  # (in turn: one by one when anyone is known)
                done = [a for answers in created_many for a in answers]
            elif isinstance(first, m.HouseholdCreate):
                done = await households.household_create_run(conn, actor, first, members, ctx, edit)
            else:
                done = await households.member_create_run(conn, actor, members, ctx)
            for (mu, body_hash), bare in zip(run, done, strict=True):
                answer = msgspec.structs.replace(bare, seq=mu.seq, mutation_id=mu.mutation_id)
                kind = mu.__struct_config__.tag
                assert isinstance(kind, str)
                ledger.add(mu.seq, mu.mutation_id, kind, body_hash, answer, mu.device_time)
                slots.append(answer)
            last_seq += len(run)
            at += len(run)
            continue
        answer = await _one(conn, actor, chunk[at], fmt, ctx, last_seq, ledger, savepoint=savepoint)
        # The next seq took its place in the ledger, whatever the answer — a payment reported again
        # under a new seq is answered `duplicate` and is in the ledger too (a replayed seq never
        # reaches here: its seq is at most last_seq).
        if answer.status != "not_applied" and answer.seq == last_seq + 1:
            last_seq += 1
        slots.append(answer)
        at += 1
    if held:
        await _apply_held(conn, actor, chunk, fmt, ctx, ledger, held, slots, reached)
    answers = [x for x in slots if x is not None]
    assert len(answers) == len(chunk)
    return answers, last_seq


PAYMENTS_AT_ONCE = 25  # payments held back for one set at most


def _settable(
    raw: msgspec.Raw, fmt: codec.Format, last_seq: int, actor: Actor, ctx: Context, held: _Held
) -> tuple[m.PaymentRecord, bytes] | None:
    """The payment at hand with its body hash, when it may join the set held back: the next seq,
    readable, `money.settable`, and `held.may_join` it."""
    head = _decode_head(raw, fmt)
    if head is None or head.type != "payment.record" or head.seq != last_seq + 1:
        return None
    try:
        mu = (_msgpack_mutation if fmt == "msgpack" else _json_mutation).decode(bytes(raw))
    except msgspec.DecodeError:
        return None
    if (
        not isinstance(mu, m.PaymentRecord)
        or not money.settable(actor, mu, ctx, held.new_households)
        or _holds_nul(bytes(raw), mu, fmt)
    ):
        return None
    if not held.may_join(mu):
        return None
    return mu, sealed.mutation_digest(_canonical.encode(mu))


class _Names(msgspec.Struct, kw_only=True):
    household_id: UUID | None = None
    to_household_id: UUID | None = None
    person_id: UUID | None = None
    person_ids: list[UUID] = []


_json_names = msgspec.json.Decoder(_Names)
_msgpack_names = msgspec.msgpack.Decoder(_Names)


class _Held:
    """What the fast path holds back for sets (`_apply_all`): runs of enrolments of households, and
    payments; each mutation with its position in the chunk and its body hash. What they name is kept
    as they are held (`hold_enrolments`, `hold_payment`), so that asking whether the next mutation
    may join them, or must wait for them, does not walk them all again for every mutation."""

    def __init__(self) -> None:
        # New households, each with the members added to it next and its edit after them (`_creation`).
        self.created: list[list[tuple[int, m.Mutation, bytes]]] = []
        self.new_households: dict[UUID, str] = {}  # of `created`: household → its village
        self.new_persons: set[UUID] = set()  # of `created`
        self.enrolments: list[list[tuple[int, m.EnrollmentCreate, bytes]]] = []
        self.payments: list[tuple[int, m.PaymentRecord, bytes]] = []
        self.households: set[UUID] = set()  # of everything held
        self.persons: set[UUID] = set()  # of everything held (`person_ids`)
        self._enrolled: dict[UUID, set[UUID]] = {}  # person of a held enrolment → its households
        self._paid_households: set[UUID] = set()
        self._paid_persons: set[UUID] = set()
        self._receipts: set[str] = set()
        self._channels: set[tuple[str, str]] = set()

    def __bool__(self) -> bool:
        return bool(self.created or self.enrolments or self.payments)

    def hold_created(self, group: list[tuple[int, m.Mutation, bytes]]) -> None:
        self.created.append(group)
        for _at, mu, _h in group:
            if isinstance(mu, m.HouseholdCreate):
                self.new_households[mu.household_id] = mu.village_code
                self.new_persons.update(x.person_id for x in mu.members)
            elif isinstance(mu, m.MemberCreate):
                self.new_persons.add(mu.member.person_id)

    def hold_enrolments(self, group: list[tuple[int, m.EnrollmentCreate, bytes]]) -> None:
        self.enrolments.append(group)
        for _at, mu, _h in group:
            self.households.add(mu.household_id)
            self.persons.update(mu.person_ids)
            for person in mu.person_ids:
                self._enrolled.setdefault(person, set()).add(mu.household_id)

    def hold_payment(self, at: int, mu: m.PaymentRecord, body_hash: bytes) -> None:
        self.payments.append((at, mu, body_hash))
        self.households.add(mu.household_id)
        self.persons.update(mu.person_ids)
        self._paid_households.add(mu.household_id)
        self._paid_persons.update(mu.person_ids)
        self._receipts.add(mu.receipt_no)
        if mu.channel_ref is not None:
            self._channels.add((mu.method, mu.channel_ref))

    def may_join(self, mu: m.PaymentRecord) -> bool:
        """Whether a payment may join the set: of the year of the enrolments held (applied before the
        payments: its own household's among them) and of the payments held, none of its persons
        enrolled here in another household, and of other households, persons, receipt numbers and
        channel references than the payments held."""
        if self.enrolments and self.enrolments[0][0][1].coverage_year != mu.coverage_year:
            return False  # (the enrolments held are all of one year)
        if any(h != mu.household_id for p in mu.person_ids for h in self._enrolled.get(p, ())):
            return False
        if self.payments and self.payments[0][1].coverage_year != mu.coverage_year:
            return False  # (the payments held are all of one year)
        return (
            mu.household_id not in self._paid_households
            and self._paid_persons.isdisjoint(mu.person_ids)
            and mu.receipt_no not in self._receipts
            and (mu.channel_ref is None or (mu.method, mu.channel_ref) not in self._channels)
        )

    def clear_created(self) -> None:
        for kept in (self.created, self.new_households, self.new_persons):
            kept.clear()

    def clear(self) -> None:
        self.clear_created()
        for kept in (self.enrolments, self.payments, self.households, self.persons, self._enrolled):
            kept.clear()
        for named in (self._paid_households, self._paid_persons, self._receipts, self._channels):
            named.clear()


ENROLMENTS_AT_ONCE = 25  # households whose enrolments are held back for one set at most


def _settable_enrolments(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int, actor: Actor, ctx: Context, held: _Held
) -> list[tuple[m.EnrollmentCreate, bytes]]:
    """The enrolment at hand, or the run of them from it (`_enrolment_run`), with their body hashes,
    when they may join the set held back: the next seqs, readable, `households.enrolment_settable`,
    of the year and new-student flag of the others, and of a household and persons nothing held
    names (a payment held for their household came first: they go after it). Else none."""
    head = _decode_head(chunk[at], fmt)
    if head is None or head.type != "enrollment.create" or head.seq != last_seq + 1:
        return []
    group = [*_enrolment_run(chunk, at, fmt, last_seq)]  # (of one, or none: not for a set either)
    if not group:
        return []
    first = group[0][0]
    persons = [p for mu, _h in group for p in mu.person_ids]
    kind = held.enrolments[0][0][1] if held.enrolments else first  # the groups held are all of one kind
    if (
        len(set(persons)) < len(persons)
        or first.household_id in held.households
        or not held.persons.isdisjoint(persons)
        or (kind.coverage_year, kind.new_student) != (first.coverage_year, first.new_student)
        or not households.enrolment_settable(actor, first, ctx, held.new_households)
    ):
        return []
    return group


# Mutations that may cancel enrolments of households they do not name (members who moved there with
# an enrolment another household paid for): `_after_held`.
_CANCELLING = ("member.remove", "household.dissolve")


def _after_held(raw: msgspec.Raw, fmt: codec.Format, last_seq: int, held: _Held) -> Literal["all", "created"] | None:
    """Whether the mutation at hand may depend on what is held back, which is then applied first
    ("all"): anything but the next seq; a void or a cancellation (they name a payment or a person,
    not a household); a new household or member (not held: it may reuse a person known by identity
    number, whose live enrolments then follow them out of a held household, unnamed); with payments
    held, a removal or a dissolution (`_CANCELLING`: the enrolments it cancels may have been paid by a
    held payment's household and taken away by a member who moved, so their share of that payment
    becomes its household's credit, which the payment's answer counts); or a mutation
    naming one of the held households or persons (`person_ids` included). Else, with new households
    held, anything ("created": they alone are applied first). A new household is refused, held as a
    duplicate or reuses someone by who holds each identity number and household number when it is
    written, which another household's or member's change can alter without naming it (a member
    removed or renumbered, a household renumbered or dissolved)."""
    head = _decode_head(raw, fmt)
    if (
        head is None
        or head.seq != last_seq + 1
        or head.type in ("payment.void", "enrollment.cancel", "household.create", "member.create")
        or (held.payments and head.type in _CANCELLING)
    ):
        return "all"
    numbers: Literal["created"] | None = "created" if held.created else None
    try:
        names = (_msgpack_names if fmt == "msgpack" else _json_names).decode(bytes(raw))
    except msgspec.DecodeError:
        return "all"
    households = {x for x in (names.household_id, names.to_household_id) if x is not None}
    persons = {*names.person_ids, *([names.person_id] if names.person_id is not None else [])}
    # Persons too: cover reads a person's other years and households (a payment of another year, an
    # enrolment in the household they moved to).
    named = households | persons
    if not named or not (
        named.isdisjoint(held.households)
        and named.isdisjoint(held.persons)
        and named.isdisjoint(held.new_households)
        and named.isdisjoint(held.new_persons)
    ):
        return "all"
    return numbers


async def _apply_held(
    conn: Connection,
    actor: Actor,
    chunk: list[msgspec.Raw],
    fmt: codec.Format,
    ctx: Context,
    ledger: _Ledger,
    held: _Held,
    slots: list[m.Answer | None],
    reached: list[int] | None,
    *,
    created_only: bool = False,
) -> None:
    """What is held back, applied in its seqs' place (`slots`): the new households, then the
    enrolments, then the payments (an enrolment may need a household held with it, a payment an
    enrolment; nothing held needs a payment), each as one set (`households.household_create_many`,
    `households.enrollment_create_set`, `money.payment_record_set`), or alone as any mutation; each
    answered and in the ledger as if applied in its turn. `reached` spans them all: if a set fails,
    everything from the first of them to the last is applied again each on its own. `created_only`:
    the new households alone (what the mutation at hand may change without naming them, `_after_held`);
    the enrolments and payments stay held, as nothing they name is touched."""
    positions = [at for g in held.created for at, _mu, _h in g]
    others = [at for g in held.enrolments for at, _mu, _h in g] + [at for at, _mu, _h in held.payments]
    # New households written before enrolments or payments held from earlier seqs: only if they reuse
    # nobody (a reused person's live enrolments would follow them out of a held household first).
    ahead = bool(positions) and bool(others) and min(others) < max(positions)
    if not created_only:
        positions += others
    if reached is not None:
        reached[:] = [min(positions), max(positions) - min(positions) + 1]
    sets: list[tuple[list[m.Answer], list[tuple[int, m.Mutation, bytes]]]] = []
    if held.created and (ahead or len(held.created) > 1):
        steps = [_steps(g) for g in held.created]
        created = await households.household_create_many(conn, actor, steps, ctx, in_turn=not ahead)
        if created is None:
            raise _OutOfTurn()
        sets += [(answers, [*g]) for answers, g in zip(created, held.created, strict=True)]
    elif held.created and len(held.created[0]) == 1:
        at, household, _h = held.created[0][0]
        slots[at] = await _one(conn, actor, chunk[at], fmt, ctx, household.seq - 1, ledger, savepoint=False)
    elif held.created:
        first, members, edit = _steps(held.created[0])
        sets.append((await households.household_create_run(conn, actor, first, members, ctx, edit), [*held.created[0]]))
    if not created_only:
        sets += await _apply_held_money(conn, actor, chunk, fmt, ctx, ledger, held, slots)
    for answers, applied in sets:
        for bare, (position, done, body_hash) in zip(answers, applied, strict=True):
            answer = msgspec.structs.replace(bare, seq=done.seq, mutation_id=done.mutation_id)
            kind = done.__struct_config__.tag
            assert isinstance(kind, str)
            ledger.add(done.seq, done.mutation_id, kind, body_hash, answer, done.device_time)
            slots[position] = answer
    if created_only:
        held.clear_created()
    else:
        held.clear()


async def _apply_held_money(
    conn: Connection,
    actor: Actor,
    chunk: list[msgspec.Raw],
    fmt: codec.Format,
    ctx: Context,
    ledger: _Ledger,
    held: _Held,
    slots: list[m.Answer | None],
) -> list[tuple[list[m.Answer], list[tuple[int, m.Mutation, bytes]]]]:
    """`_apply_held`'s enrolments, then payments: the sets written, with what they answer (a lone one
    is answered in its slot)."""
    sets: list[tuple[list[m.Answer], list[tuple[int, m.Mutation, bytes]]]] = []
    if len(held.enrolments) == 1 and len(held.enrolments[0]) == 1:
        at, enrolment, _h = held.enrolments[0][0]
        slots[at] = await _one(conn, actor, chunk[at], fmt, ctx, enrolment.seq - 1, ledger, savepoint=False)
    elif len(held.enrolments) == 1:
        group = held.enrolments[0]
        sets.append((await households.enrollment_create_run(conn, actor, [mu for _at, mu, _h in group], ctx), [*group]))
    elif held.enrolments:
        answered = await households.enrollment_create_set(
            conn, actor, [[mu for _at, mu, _h in g] for g in held.enrolments], ctx
        )
        sets += [(answers, [*g]) for answers, g in zip(answered, held.enrolments, strict=True)]
    if len(held.payments) == 1:
        at, paid, _h = held.payments[0]
        slots[at] = await _one(conn, actor, chunk[at], fmt, ctx, paid.seq - 1, ledger, savepoint=False)
    elif held.payments:
        sets.append(
            (await money.payment_record_set(conn, actor, [mu for _at, mu, _h in held.payments], ctx), [*held.payments])
        )
    return sets


def _steps(group: list[tuple[int, m.Mutation, bytes]]) -> households.HouseholdSteps:
    """A new household held back, the members added to it next and its edit after them."""
    first = group[0][1]
    assert isinstance(first, m.HouseholdCreate)
    members = [mu for _at, mu, _h in group if isinstance(mu, m.MemberCreate)]
    edit = next((mu for _at, mu, _h in group if isinstance(mu, m.HouseholdUpdate)), None)
    return first, members, edit


def _creation(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int, actor: Actor, ctx: Context, held: _Held
) -> list[tuple[m.Mutation, bytes]]:
    """The new household at hand, with the members added to it next and its edit after them
    (`_household_run`) or alone, with their body hashes, when it may be held back for a set: the
    next seqs, readable, on an active tablet, in the actor's scope, of a household the push does not
    hold and nothing held names, and of persons nothing held names (each once). Else none. Held, it
    is written before the enrolments and payments held (they may be its own), in its seqs' place."""
    head = _decode_head(chunk[at], fmt)
    if head is None or head.type != "household.create" or head.seq != last_seq + 1 or ctx.device_status != "active":
        return []
    run = _household_run(chunk, at, fmt, last_seq)
    if not run:
        raw = chunk[at]
        try:
            alone = (_msgpack_mutation if fmt == "msgpack" else _json_mutation).decode(bytes(raw))
        except msgspec.DecodeError:
            return []
        if not isinstance(alone, m.HouseholdCreate) or _holds_nul(bytes(raw), alone, fmt):
            return []
        run = [(alone, sealed.mutation_digest(_canonical.encode(alone)))]
    first = run[0][0]
    assert isinstance(first, m.HouseholdCreate)
    persons = [x.person_id for x in first.members] + [
        mu.member.person_id for mu, _h in run if isinstance(mu, m.MemberCreate)
    ]
    if (
        first.household_id in held.households
        or first.household_id in held.new_households
        or households.known_household(ctx, first.household_id) is not None
        or len(set(persons)) < len(persons)
        or not held.persons.isdisjoint(persons)
        or not held.new_persons.isdisjoint(persons)
        or not actor.in_scope(first.village_code)
    ):
        return []
    return run


def _enrolment_run(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int
) -> list[tuple[m.EnrollmentCreate, bytes]]:
    """The enrolments from `at` on that `households.enrollment_create_run` may apply together: new
    seqs in a row, readable, of one household and year (and new-student flag), persons told apart (at most 30), only the
    first with a query code. With their body hashes; one alone is applied alone (no run), none when
    the first is not one of them."""
    decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
    run: list[tuple[m.EnrollmentCreate, bytes]] = []
    persons: set[UUID] = set()
    for raw in chunk[at:]:
        head = _decode_head(raw, fmt)
        if head is None or head.type != "enrollment.create" or head.seq != last_seq + 1 + len(run):
            break
        try:
            mu = decoder.decode(bytes(raw))
        except msgspec.DecodeError:
            break
        if not isinstance(mu, m.EnrollmentCreate) or not mu.person_ids:
            break
        if run and (
            (mu.household_id, mu.coverage_year, mu.new_student)
            != (run[0][0].household_id, run[0][0].coverage_year, run[0][0].new_student)
            or mu.query_code_hash is not None
        ):
            break
        if (
            persons.intersection(mu.person_ids)
            or len(persons) + len(mu.person_ids) > 30
            or _holds_nul(bytes(raw), mu, fmt)
        ):
            break
        persons.update(mu.person_ids)
        run.append((mu, sealed.mutation_digest(_canonical.encode(mu))))
    return run


def _household_run(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int
) -> list[tuple[m.Mutation, bytes]]:
    """A new household at `at`, the new members of it that follow (`_member_run`, here from one on,
    persons told apart from its own) and an edit of it next that keeps its number (the phone noted
    at the end of the visit), which `households.household_create_run` writes together. With their
    body hashes; neither members nor an edit is no run."""
    head = _decode_head(chunk[at], fmt)
    if head is None or head.type != "household.create" or head.seq != last_seq + 1 or at + 1 == len(chunk):
        return []
    decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
    raw = chunk[at]
    try:
        mu = decoder.decode(bytes(raw))
    except msgspec.DecodeError:
        return []
    if not isinstance(mu, m.HouseholdCreate) or _holds_nul(bytes(raw), mu, fmt):
        return []
    own = {x.person_id for x in mu.members}
    run: list[tuple[m.Mutation, bytes]] = [(mu, sealed.mutation_digest(_canonical.encode(mu)))]
    for added, body_hash in _member_run(chunk, at + 1, fmt, last_seq + 1, at_least=1):
        if added.household_id != mu.household_id or added.member.person_id in own or len(own) + len(run) == 31:
            break
        run.append((added, body_hash))
    after = at + len(run)
    head = _decode_head(chunk[after], fmt) if after < len(chunk) else None
    if head is not None and head.type == "household.update" and head.seq == last_seq + 1 + len(run):
        with contextlib.suppress(msgspec.DecodeError):
            edit = decoder.decode(bytes(chunk[after]))
            if (
                isinstance(edit, m.HouseholdUpdate)
                and edit.household_id == mu.household_id
                and edit.household_no in (None, mu.household_no)
                and not _holds_nul(bytes(chunk[after]), edit, fmt)
            ):
                run.append((edit, sealed.mutation_digest(_canonical.encode(edit))))
    return run if len(run) > 1 else []


HOUSEHOLDS_AT_ONCE = 25  # new households in a row written as one set


def _households_run(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int
) -> list[tuple[m.HouseholdCreate, bytes]]:
    """The new households from `at` on that `households.household_create_many` may write together:
    new seqs in a row, readable, households and persons told apart by id (by number: the service),
    at most HOUSEHOLDS_AT_ONCE. With their body hashes; fewer than two is no run."""
    decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
    run: list[tuple[m.HouseholdCreate, bytes]] = []
    seen: set[UUID] = set()
    for raw in chunk[at:]:
        head = _decode_head(raw, fmt)
        if (
            head is None
            or head.type != "household.create"
            or head.seq != last_seq + 1 + len(run)
            or len(run) == HOUSEHOLDS_AT_ONCE
        ):
            break
        try:
            mu = decoder.decode(bytes(raw))
        except msgspec.DecodeError:
            break
        if not isinstance(mu, m.HouseholdCreate):
            break
        ids = {mu.household_id, *(x.person_id for x in mu.members)}
        if seen.intersection(ids) or len(ids) != 1 + len(mu.members) or _holds_nul(bytes(raw), mu, fmt):
            break
        seen.update(ids)
        run.append((mu, sealed.mutation_digest(_canonical.encode(mu))))
    return run if len(run) >= 2 else []


def _member_run(
    chunk: list[msgspec.Raw], at: int, fmt: codec.Format, last_seq: int, *, at_least: int = 2
) -> list[tuple[m.MemberCreate, bytes]]:
    """The new members from `at` on that `households.member_create_run` may add together: new seqs
    in a row, readable, of one household, persons told apart (by id and by number, at most 30). With
    their body hashes; fewer than `at_least` is no run."""
    decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
    run: list[tuple[m.MemberCreate, bytes]] = []
    seen: set[Any] = set()
    for raw in chunk[at:]:
        head = _decode_head(raw, fmt)
        if head is None or head.type != "member.create" or head.seq != last_seq + 1 + len(run) or len(run) == 30:
            break
        try:
            mu = decoder.decode(bytes(raw))
        except msgspec.DecodeError:
            break
        if not isinstance(mu, m.MemberCreate) or (run and mu.household_id != run[0][0].household_id):
            break
        person = mu.member
        keys = {("id", person.person_id)} | {
            (k, v) for k in ("id_number", "birth_cert_no") if (v := getattr(person, k))
        }
        if seen.intersection(keys) or _holds_nul(bytes(raw), mu, fmt):
            break
        seen.update(keys)
        run.append((mu, sealed.mutation_digest(_canonical.encode(mu))))
    return run if len(run) >= at_least else []


def _decode_head(raw: msgspec.Raw, fmt: codec.Format) -> m.MutationHead | None:
    try:
        return codec.decode(bytes(raw), m.MutationHead, fmt)
    except msgspec.DecodeError:
        return None


# PostgreSQL's text holds no NUL character: a mutation with one in any text is refused as it is
# decoded (a payment is quarantined), before it reaches a handler, and text of the tablet's that is
# kept or answered anyway (its type, its body in quarantine) shows U+FFFD in its place.
HOLDS_NUL = N_("a text value contains a NUL character, which no record can hold")  # answered as _(HOLDS_NUL)
_json_text = msgspec.json.Encoder()


def _holds_nul(raw: bytes, mutation: m.AnyMutation, fmt: codec.Format) -> bool:
    """Whether any text of a decoded mutation holds a NUL. Cheap first, at C speed: the JSON escape
    `\\u0000` in the mutation as JSON (as sent, or encoded again when it came as MessagePack)."""
    if fmt == "msgpack":
        raw = _json_text.encode(mutation) if b"\x00" in raw else b""
    return b"\\u0000" in raw and _has_nul(msgspec.to_builtins(mutation))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _without_nul(value: Any) -> Any:
    """A decoded body with U+FFFD for each NUL of its text (keys included)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


async def _one(
    conn: Connection,
    actor: Actor,
    raw: msgspec.Raw,
    fmt: codec.Format,
    ctx: Context,
    last_seq: int,
    ledger: _Ledger,
    *,
    savepoint: bool = True,
) -> m.Answer:
    """Answers one mutation. Without `savepoint` (the fast path) a failing handler's exception is
    raised for the caller to undo the chunk; with it, the failure is answered and rolled back alone."""
    head = _decode_head(raw, fmt)
    if head is None or head.seq is None or head.seq < 1:
        # Without a sequence number the mutation cannot take a place in the ledger.
        return m.Answer(seq=None, status="rejected", code="malformed_mutation", detail=_("no readable `seq`"))
    seq, mutation_id = head.seq, head.mutation_id
    failure: str | None = None
    try:
        decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
        mutation: m.AnyMutation | None = decoder.decode(bytes(raw))
        body_hash = sealed.mutation_digest(_canonical.encode(mutation))
        if mutation is not None and _holds_nul(bytes(raw), mutation, fmt):
            mutation, failure = None, _(HOLDS_NUL)
    except msgspec.DecodeError as exc:  # ValidationError included
        mutation, failure = None, failure_text(exc).replace("\x00", "\ufffd")
        body_hash = sealed.mutation_digest(bytes(raw))
    if seq <= last_seq and ctx.dedup:
        first_hash, first = await ledger.earlier(conn, actor.device_id, seq)
        if first_hash != body_hash:
            return m.Answer(
                seq=seq,
                mutation_id=mutation_id,
                status="not_applied",
                code="seq_reused",
                detail=_("this seq was already used for another mutation"),
                expected_seq=last_seq + 1,
            )
        return m.Answer(seq=seq, mutation_id=mutation_id, status="duplicate", first=first)
    if seq > last_seq + 1:
        return m.Answer(
            seq=seq,
            mutation_id=mutation_id,
            status="not_applied",
            code="seq_gap",
            detail=_("the server holds this device up to seq {seq}", seq=last_seq),
            expected_seq=last_seq + 1,
        )
    kind = (head.type or "?").replace("\x00", "\ufffd")
    device_time = mutation.device_time if mutation is not None else None
    answer: m.Answer
    if mutation is None:
        assert failure is not None
        if kind == "payment.record":
            answer = await _quarantine(
                conn, actor, seq, mutation_id, kind, raw, fmt, Quarantine("malformed_payment", failure)
            )
        else:
            code = "unknown_mutation" if kind not in m.MUTATION_TYPES else "malformed_mutation"
            answer = m.Answer(seq=seq, mutation_id=mutation_id, status="rejected", code=code, detail=failure)
    elif not savepoint:
        answer = await HANDLERS[kind](conn, actor, mutation, ctx)
        answer = msgspec.structs.replace(answer, seq=seq, mutation_id=mutation_id)
    else:
        mark, before = ledger.mark(), _households_now(ctx)
        try:
            async with conn.transaction():
                if ctx.device_status == "suspended":
                    raise await _suspended(conn, mutation)
                answer = await HANDLERS[kind](conn, actor, mutation, ctx)
                answer = msgspec.structs.replace(answer, seq=seq, mutation_id=mutation_id)
        except _Known as known:
            answer = msgspec.structs.replace(known.answer, seq=seq, mutation_id=mutation_id)
        except _HANDLED as exc:
            ledger.undo(mark)  # the savepoint rolled its effects back: its audit rows go too
            _households_back(ctx, before)
            answer = await _failed(conn, actor, seq, mutation_id, kind, raw, fmt, exc)
    if seq > last_seq:  # (a seq at or below it reaches here only with dedup broken, for a test)
        ledger.add(seq, mutation_id, kind, body_hash, answer, device_time)
    return answer


async def _suspended(conn: Connection, mutation: m.AnyMutation) -> Quarantine | _Known:
    """What a suspended tablet's mutation becomes: kept for a reviewer — unless it is a payment the
    server already holds, which stays a duplicate (a reinstalled app may report it again)."""
    if not isinstance(mutation, m.PaymentRecord):
        return Quarantine("device_suspended", _("the tablet is suspended: a reviewer decides"))
    content = m.payment_content_hash(mutation)
    earlier = await money.earlier_report(conn, mutation, content)  # raises for the same id with other facts
    if earlier is not None:
        return _Known(earlier)
    return Quarantine("device_suspended", _("the tablet is suspended: a reviewer decides"), content)


class _Known(Exception):
    """Raised out of a suspended tablet's savepoint with the answer of a report already held."""

    def __init__(self, answer: m.Answer) -> None:
        super().__init__(answer.code)
        self.answer = answer


async def _failed(
    conn: Connection,
    actor: Actor,
    seq: int,
    mutation_id: UUID | None,
    kind: str,
    raw: msgspec.Raw,
    fmt: codec.Format,
    exc: Exception,
) -> m.Answer:
    """The answer to a mutation whose handler failed: quarantined, or rejected with the error's code."""
    if isinstance(exc, _DATABASE_REFUSALS):
        # Only the constraint's name: the database's message quotes the row, personal data included.
        where = getattr(exc, "constraint_name", None) or type(exc).__name__
        if kind == "payment.record":  # money is never dropped: kept for a reviewer
            exc = Quarantine("refused_by_database", _("the database refused the payment ({where})", where=where))
        else:
            return m.Answer(
                seq=seq,
                mutation_id=mutation_id,
                status="rejected",
                code="refused_by_database",
                detail=_("the database refused the change ({where})", where=where),
            )
    if isinstance(exc, Quarantine):
        return await _quarantine(conn, actor, seq, mutation_id, kind, raw, fmt, exc)
    if isinstance(exc, household_service.PersonAlreadyRegistered) and kind == "household.create":
        # Held here, after the savepoint undid the attempt, not in the handler: the clash may have
        # come from the database (a unique index), which leaves the transaction unusable until then.
        mu = codec.decode(bytes(raw), m.HouseholdCreate, fmt)
        answer = await households.hold_duplicate(conn, actor, mu, exc)
        return msgspec.structs.replace(answer, seq=seq, mutation_id=mutation_id)
    if isinstance(exc, DomainError):
        return m.Answer(
            seq=seq, mutation_id=mutation_id, status="rejected", code=exc.code, detail=exc.detail or _(exc.title())
        )
    return m.Answer(
        seq=seq, mutation_id=mutation_id, status="rejected", code="validation_error", detail=failure_text(exc)
    )


async def _quarantine(
    conn: Connection,
    actor: Actor,
    seq: int,
    mutation_id: UUID | None,
    kind: str,
    raw: msgspec.Raw,
    fmt: codec.Format,
    q: Quarantine,
) -> m.Answer:
    body: Any = _without_nul(codec.decode(bytes(raw), Any, fmt))  # type: ignore[arg-type,unused-ignore]
    payment_id = None
    if isinstance(body, dict):
        try:
            payment_id = UUID(str(body.get("payment_id")))
        except ValueError:
            payment_id = None
    quarantine_id = uuid7()
    await conn.execute(
        Q["insert_quarantine"],
        quarantine_id,
        actor.device_id,
        seq,
        actor.id,
        actor.scope.division_code,
        kind[:64],
        payment_id,
        q.content_hash,
        q.reason,
        q.detail,
        sealed.seal_document(sealed.QUARANTINED_BODY, body),  # the tablet's text: it may hold numbers anywhere
    )
    return m.Answer(
        seq=seq,
        mutation_id=mutation_id,
        status="quarantined",
        code=q.reason,
        detail=q.detail,
        quarantine_id=quarantine_id,
    )


# Which handler answers each mutation type (handlers_households.py, handlers_money.py).
HANDLERS: dict[str, Handler] = cast(
    dict[str, Handler],
    {
        "household.create": households.household_create,
        "household.update": households.household_update,
        "household.dissolve": households.household_dissolve,
        "member.create": households.member_create,
        "member.update": households.member_update,
        "member.move": households.member_move,
        "member.remove": households.member_remove,
        "enrollment.create": households.enrollment_create,
        "enrollment.cancel": households.enrollment_cancel,
        "payment.record": money.payment_record,
        "payment.void": money.payment_void,
    },
)
assert set(HANDLERS) == set(m.MUTATION_TYPES)
