"""Push: a batch of a tablet's mutations, each applied at most once, in its device order.

The push runs in the request's transaction; the device's row is locked NOWAIT (a concurrent push
of the same tablet is a 409). Every mutation runs in its own savepoint and writes its ledger row
there too, so its effects and its answer commit together. The business rules are the REST
services' own (households, enrolments, premiums): the mutation handlers only translate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor
from backend.audit import service as audit
from backend.clock import local_date
from backend.db import Connection, load_queries
from backend.enrollment import enrollments as enrolment_service
from backend.enrollment import households as household_service
from backend.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, plain_validation_message
from backend.ids import uuid7
from backend.premiums import service as premium_service
from backend.premiums.service import CLOCK_AHEAD, CLOCK_TOO_OLD
from backend.sync import query_codes
from backend.sync.conflicts import service as conflicts
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


class Quarantine(Exception):
    """Raised by a handler: acknowledge the mutation, keep it aside for a reviewer."""

    def __init__(self, reason: str, detail: str | None = None, content_hash: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.content_hash = content_hash


class Context(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str
    code_key: bytes
    now: datetime
    device_status: str = "active"
    resolving: bool = False  # a reviewer applies a held edit: no staleness check (backend.sync.conflicts.review)
    dedup: bool = True  # False only in the test that proves the fault suite catches its absence

    @property
    def today(self) -> date:
        return local_date(self.now, self.timezone)


Handler = Callable[[Connection, Actor, Any, Context], Awaitable[m.Answer]]


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
    ctx = msgspec.structs.replace(ctx, device_status=device["status"])
    try:
        last_seq: int = await conn.fetchval(Q["lock_sync_device"], request.device_id)
    except asyncpg.LockNotAvailableError as exc:
        raise PushInProgress() from exc
    await _lock_households(conn, request.mutations, fmt)
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
        protocol_version=m.PROTOCOL_VERSION, device_id=request.device_id, last_seq=last_seq, answers=answers,
        server_time=ctx.now, clock_skew_s=skew, clock_flag=flag,
    )  # fmt: skip


class _Targets(msgspec.Struct, kw_only=True):
    household_id: UUID | None = None
    to_household_id: UUID | None = None


_json_targets = msgspec.json.Decoder(_Targets)
_msgpack_targets = msgspec.msgpack.Decoder(_Targets)


async def _lock_households(conn: Connection, mutations: list[msgspec.Raw], fmt: codec.Format) -> None:
    """Locks the households the push names, in id order, before applying anything (a mutation
    locks its household again as it goes: already held, that costs nothing)."""
    decoder = _msgpack_targets if fmt == "msgpack" else _json_targets
    ids: set[UUID] = set()
    for raw in mutations:
        try:
            targets = decoder.decode(bytes(raw))
        except msgspec.DecodeError:
            continue  # answered on its own when its turn comes
        ids.update(x for x in (targets.household_id, targets.to_household_id) if x is not None)
    if ids:
        await conn.execute(conflicts.Q["lock_households"], sorted(ids))


CHUNK = 50  # mutations under one savepoint on the fast path


async def _apply_chunks(
    conn: Connection, actor: Actor, mutations: list[msgspec.Raw], fmt: codec.Format, ctx: Context, last_seq: int,
    ledger: _Ledger,
) -> tuple[list[m.Answer], int]:  # fmt: skip
    answers: list[m.Answer] = []
    for start in range(0, len(mutations), CHUNK):
        chunk = mutations[start : start + CHUNK]
        done: list[m.Answer] | None = None
        if ctx.device_status == "active":
            # Fast path: the chunk under one savepoint. If any mutation fails, the chunk is undone and
            # applied again with a savepoint per mutation, so the failure is that mutation's alone.
            mark = ledger.mark()
            try:
                async with conn.transaction():
                    done, seq_after = await _apply_all(conn, actor, chunk, fmt, ctx, last_seq, ledger, savepoint=False)
            except _HANDLED:
                ledger.undo(mark)
                done = None
        if done is None:
            done, seq_after = await _apply_all(conn, actor, chunk, fmt, ctx, last_seq, ledger, savepoint=True)
        answers += done
        last_seq = seq_after
    return answers, last_seq


class _Ledger:
    """This push's ledger rows, written in one statement before the push commits: in the same
    transaction as their effects, so they still commit (or vanish) together. It also marks and
    undoes the audit rows held back during the push (`held`), which are written the same way."""

    def __init__(self, held: audit.Deferred) -> None:
        self.held = held
        self.rows: list[tuple[int, UUID | None, str, bytes, str, str, datetime | None]] = []
        self.by_seq: dict[int, tuple[bytes, m.Answer]] = {}

    def add(self, seq: int, mutation_id: UUID | None, kind: str, body_hash: bytes, answer: m.Answer,
            device_time: datetime | None) -> None:  # fmt: skip
        self.rows.append((seq, mutation_id, kind[:64], body_hash, answer.status,
                          msgspec.json.encode(answer).decode(), device_time))  # fmt: skip
        self.by_seq[seq] = (body_hash, answer)

    def mark(self) -> tuple[int, int]:
        return len(self.rows), self.held.mark()

    def undo(self, mark: tuple[int, int]) -> None:
        rows, audit_rows = mark
        for row in self.rows[rows:]:
            del self.by_seq[row[0]]
        del self.rows[rows:]
        self.held.undo(audit_rows)

    async def earlier(self, conn: Connection, device_id: UUID | None, seq: int) -> tuple[bytes, m.Answer]:
        if seq in self.by_seq:
            return self.by_seq[seq]
        stored = await conn.fetchrow(Q["ledger_entry"], device_id, seq)
        assert stored is not None, "every seq up to last_seq has its ledger row"
        return bytes(stored["body_hash"]), msgspec.convert(stored["answer"], m.Answer)

    async def write(self, conn: Connection, actor: Actor) -> None:
        if self.rows:
            columns = list(zip(*self.rows, strict=True))
            await conn.execute(Q["insert_ledger_many"], actor.device_id, actor.id, *columns)


# A mutation's own failure, answered. The database's refusals of one row's data (a check or a
# foreign key the service did not foresee) belong here too: they must not fail the whole push and
# wedge the tablet's queue behind one record (SPEC §3).
_DATABASE_REFUSALS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)
_HANDLED = (Quarantine, DomainError, msgspec.ValidationError, *_DATABASE_REFUSALS)


async def _apply_all(
    conn: Connection, actor: Actor, chunk: list[msgspec.Raw], fmt: codec.Format, ctx: Context, last_seq: int,
    ledger: _Ledger, *, savepoint: bool,
) -> tuple[list[m.Answer], int]:  # fmt: skip
    answers = []
    for raw in chunk:
        answer = await _one(conn, actor, raw, fmt, ctx, last_seq, ledger, savepoint=savepoint)
        # The next seq took its place in the ledger, whatever the answer — a payment reported again
        # under a new seq is answered `duplicate` and is in the ledger too (a replayed seq never
        # reaches here: its seq is at most last_seq).
        if answer.status != "not_applied" and answer.seq == last_seq + 1:
            last_seq += 1
        answers.append(answer)
    return answers, last_seq


def _decode_head(raw: msgspec.Raw, fmt: codec.Format) -> m.MutationHead | None:
    try:
        return codec.decode(bytes(raw), m.MutationHead, fmt)
    except msgspec.DecodeError:
        return None


async def _one(
    conn: Connection, actor: Actor, raw: msgspec.Raw, fmt: codec.Format, ctx: Context, last_seq: int,
    ledger: _Ledger, *, savepoint: bool = True,
) -> m.Answer:  # fmt: skip
    """Answers one mutation. Without `savepoint` (the fast path) a failing handler's exception is
    raised for the caller to undo the chunk; with it, the failure is answered and rolled back alone."""
    head = _decode_head(raw, fmt)
    if head is None or head.seq is None or head.seq < 1:
        # Without a sequence number the mutation cannot take a place in the ledger.
        return m.Answer(seq=None, status="rejected", code="malformed_mutation", detail="no readable `seq`")
    seq, mutation_id = head.seq, head.mutation_id
    try:
        decoder = _msgpack_mutation if fmt == "msgpack" else _json_mutation
        mutation: m.AnyMutation | None = decoder.decode(bytes(raw))
        body_hash = hashlib.sha256(_canonical.encode(mutation)).digest()
        failure = None
    except msgspec.DecodeError as exc:  # ValidationError included
        mutation, failure = None, exc
        body_hash = hashlib.sha256(bytes(raw)).digest()
    if seq <= last_seq and ctx.dedup:
        first_hash, first = await ledger.earlier(conn, actor.device_id, seq)
        if first_hash != body_hash:
            return m.Answer(
                seq=seq, mutation_id=mutation_id, status="not_applied", code="seq_reused",
                detail="this seq was already used for another mutation", expected_seq=last_seq + 1,
            )  # fmt: skip
        return m.Answer(seq=seq, mutation_id=mutation_id, status="duplicate", first=first)
    if seq > last_seq + 1:
        return m.Answer(
            seq=seq, mutation_id=mutation_id, status="not_applied", code="seq_gap",
            detail=f"the server holds this device up to seq {last_seq}", expected_seq=last_seq + 1,
        )  # fmt: skip
    kind = head.type or "?"
    device_time = mutation.device_time if mutation is not None else None
    answer: m.Answer
    if mutation is None:
        assert failure is not None
        if kind == "payment.record":
            answer = await _quarantine(conn, actor, seq, mutation_id, kind, raw, fmt, Quarantine(
                "malformed_payment", _message(failure)))  # fmt: skip
        else:
            code = "unknown_mutation" if kind not in m.MUTATION_TYPES else "malformed_mutation"
            answer = m.Answer(seq=seq, mutation_id=mutation_id, status="rejected", code=code, detail=_message(failure))
    elif not savepoint:
        answer = await HANDLERS[kind](conn, actor, mutation, ctx)
        answer = msgspec.structs.replace(answer, seq=seq, mutation_id=mutation_id)
    else:
        mark = ledger.mark()
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
            answer = await _failed(conn, actor, seq, mutation_id, kind, raw, fmt, exc)
    if seq > last_seq:  # (a seq at or below it reaches here only with dedup broken, for a test)
        ledger.add(seq, mutation_id, kind, body_hash, answer, device_time)
    return answer


async def _suspended(conn: Connection, mutation: m.AnyMutation) -> Quarantine | _Known:
    """What a suspended tablet's mutation becomes: kept for a reviewer — unless it is a payment the
    server already holds, which stays a duplicate (a reinstalled app may report it again)."""
    if not isinstance(mutation, m.PaymentRecord):
        return Quarantine("device_suspended", "the tablet is suspended: a reviewer decides")
    content = m.payment_content_hash(mutation)
    earlier = await _earlier_report(conn, mutation, content)  # raises for the same id with other facts
    if earlier is not None:
        return _Known(earlier)
    return Quarantine("device_suspended", "the tablet is suspended: a reviewer decides", content)


class _Known(Exception):
    """Raised out of a suspended tablet's savepoint with the answer of a report already held."""

    def __init__(self, answer: m.Answer) -> None:
        super().__init__(answer.code)
        self.answer = answer


async def _failed(
    conn: Connection, actor: Actor, seq: int, mutation_id: UUID | None, kind: str, raw: msgspec.Raw,
    fmt: codec.Format, exc: Exception,
) -> m.Answer:  # fmt: skip
    """The answer to a mutation whose handler failed: quarantined, or rejected with the error's code."""
    if isinstance(exc, _DATABASE_REFUSALS):
        # Only the constraint's name: the database's message quotes the row, personal data included.
        where = getattr(exc, "constraint_name", None) or type(exc).__name__
        if kind == "payment.record":  # money is never dropped: kept for a reviewer
            exc = Quarantine("refused_by_database", f"the database refused the payment ({where})")
        else:
            return m.Answer(seq=seq, mutation_id=mutation_id, status="rejected", code="refused_by_database",
                            detail=f"the database refused the change ({where})")  # fmt: skip
    if isinstance(exc, Quarantine):
        return await _quarantine(conn, actor, seq, mutation_id, kind, raw, fmt, exc)
    if isinstance(exc, household_service.PersonAlreadyRegistered) and kind == "household.create":
        # Held here, after the savepoint undid the attempt, not in the handler: the clash may have
        # come from the database (a unique index), which leaves the transaction unusable until then.
        mu = codec.decode(bytes(raw), m.HouseholdCreate, fmt)
        answer = await _hold_duplicate(conn, actor, mu, exc)
        return msgspec.structs.replace(answer, seq=seq, mutation_id=mutation_id)
    if isinstance(exc, DomainError):
        return m.Answer(seq=seq, mutation_id=mutation_id, status="rejected", code=exc.code,
                        detail=exc.detail or exc.title())  # fmt: skip
    return m.Answer(seq=seq, mutation_id=mutation_id, status="rejected", code="validation_error",
                    detail=_message(exc))  # fmt: skip


def _message(exc: Exception) -> str:
    """A decoding failure in words, naming the field (as the REST API's validation errors do)."""
    if isinstance(exc, msgspec.ValidationError):
        field, words = plain_validation_message(str(exc), m.AnyMutation)
        return f"{field}: {words}" if field else words
    return f"the mutation cannot be read: {str(exc)[:200]}"


async def _quarantine(
    conn: Connection, actor: Actor, seq: int, mutation_id: UUID | None, kind: str, raw: msgspec.Raw,
    fmt: codec.Format, q: Quarantine,
) -> m.Answer:  # fmt: skip
    body: Any = codec.decode(bytes(raw), Any, fmt)  # type: ignore[arg-type,unused-ignore]
    payment_id = None
    if isinstance(body, dict):
        try:
            payment_id = UUID(str(body.get("payment_id")))
        except ValueError:
            payment_id = None
    quarantine_id = uuid7()
    await conn.execute(
        Q["insert_quarantine"], quarantine_id, actor.device_id, seq, actor.id, actor.scope.division_code,
        kind[:64], payment_id, q.content_hash, q.reason, q.detail, msgspec.to_builtins(body),
    )  # fmt: skip
    return m.Answer(
        seq=seq, mutation_id=mutation_id, status="quarantined", code=q.reason, detail=q.detail,
        quarantine_id=quarantine_id,
    )  # fmt: skip


# Households and members -------------------------------------------------------------------------
# Conflict rules (PROTOCOL.md §3, Conflicts). A tablet's base version is the household's row_version it last
# saw; `record_changes` says what changed after it. Descriptive fields merge field by field and
# resolve in arrival order, keeping the replaced value in a conflict; identity and membership never
# change from a stale base: the edit is held as an open conflict for a reviewer.


class HouseholdHeld(Conflict):
    """The household is held as a possible duplicate; a reviewer settles it first"""

    code = "household_held"


async def _household(conn: Connection, actor: Actor, household_id: UUID, base_version: int) -> asyncpg.Record:
    """The household, locked (edits of one household apply in arrival order), in scope, and the
    tablet's base version checked against it."""
    row = await conflicts.household_locked(conn, household_id)
    if row is None or not actor.in_scope(row["village_code"]):
        if row is None and await conflicts.held_household(conn, household_id) is not None:
            raise HouseholdHeld()
        raise NotFound()
    if base_version > row["row_version"]:
        raise InvalidInput("base_version", f"is ahead of the server's version {row['row_version']}")
    return row


def _set_fields(mu: msgspec.Struct, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(mu, k) for k in names if getattr(mu, k) is not None}


def _outcome(version: int, applied: bool, overwritten: list[str], held: list[str], ids: list[UUID],
             held_code: str) -> m.Answer:  # fmt: skip
    if held and not applied:
        return m.Answer(seq=None, status="quarantined", code=held_code, household_version=version,
                        conflict_fields=held, conflict_ids=ids)  # fmt: skip
    if held or overwritten:
        code = "identity_held" if held else "field_conflict"
        return m.Answer(seq=None, status="applied_with_conflict", code=code, household_version=version,
                        conflict_fields=sorted(overwritten + held), conflict_ids=ids)  # fmt: skip
    return m.Answer(seq=None, status="applied", household_version=version)


async def _hold(conn: Connection, actor: Actor, mu: m.Mutation, row: asyncpg.Record, kind: conflicts.Kind,
                fields: list[str], *, person_id: UUID | None = None, server: dict[str, Any] | None = None,
                tablet: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> m.Answer:  # fmt: skip
    """Keeps the whole mutation aside as an open conflict: nothing of it is applied."""
    conflict_id = await conflicts.raise_conflict(conn, actor, conflicts.Raised(
        kind=kind, outcome="held", household_id=row["id"], village_code=row["village_code"], person_id=person_id,
        fields=fields, base_version=getattr(mu, "base_version", None), server_version=row["row_version"],
        base_values=base or {}, server_values=server or {}, tablet_values=tablet or {},
        mutation=msgspec.to_builtins(mu), seq=mu.seq,
    ))  # fmt: skip
    return m.Answer(seq=None, status="quarantined", code=kind, household_version=row["row_version"],
                    conflict_fields=sorted(fields), conflict_ids=[conflict_id])  # fmt: skip


async def household_create(conn: Connection, actor: Actor, mu: m.HouseholdCreate, ctx: Context) -> m.Answer:
    data = msgspec.convert(
        {
            "id": mu.household_id, "village_code": mu.village_code, "household_no": mu.household_no,
            "address": mu.address, "phone": mu.phone,
            "members": [_member_in(x) for x in mu.members],
        },
        household_service.HouseholdCreate,
    )  # fmt: skip
    household = await household_service.create_household(conn, actor, data, ctx.today)
    return m.Answer(seq=None, status="applied", household_version=household.row_version)


async def _hold_duplicate(conn: Connection, actor: Actor, mu: m.HouseholdCreate,
                          exc: household_service.PersonAlreadyRegistered) -> m.Answer:  # fmt: skip
    """The same household registered twice offline (or anyone in it already in a household): the
    second copy is held as a possible duplicate; nothing is merged, no payment is re-pointed."""
    clashes: list[dict[str, Any]] = exc.extra.get("conflicts") or []
    other = next((c["household_id"] for c in clashes if c.get("household_id")), None)
    fields = sorted({str(c.get("field", "members")) for c in clashes}) or ["members"]
    conflict_id = await conflicts.raise_conflict(conn, actor, conflicts.Raised(
        kind="duplicate_household", outcome="held", household_id=mu.household_id, village_code=mu.village_code,
        fields=fields, tablet_values={"household_no": mu.household_no, "members": str(len(mu.members))},
        mutation=msgspec.to_builtins(mu), other_household_id=None if other is None else UUID(other), seq=mu.seq,
    ))  # fmt: skip
    return m.Answer(seq=None, status="quarantined", code="duplicate_household", conflict_fields=fields,
                    conflict_ids=[conflict_id])  # fmt: skip


def _member_in(x: m.NewMember) -> dict[str, Any]:
    return {
        "id": x.person_id, "name": x.name, "relation": x.relation, "id_number": x.id_number,
        "birth_cert_no": x.birth_cert_no, "birth_date": x.birth_date, "sex": x.sex, "phone": x.phone,
    }  # fmt: skip


HOUSEHOLD_FIELDS = ("household_no", "address", "phone")


async def household_update(conn: Connection, actor: Actor, mu: m.HouseholdUpdate, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    edits = _set_fields(mu, HOUSEHOLD_FIELDS)
    changed = {k: v for k, v in edits.items() if conflicts.as_text(v) != conflicts.as_text(row[k])}
    since = await conflicts.since(conn, row["id"], mu.base_version, row["row_version"], actor.device_id)
    # Another's value replaced by this one: kept in a conflict record, never silently lost.
    overwritten = sorted(k for k in changed if since.changed(None, k))
    version = row["row_version"]
    if changed:
        data = msgspec.convert(changed, household_service.HouseholdUpdate)
        version = (await household_service.update_household(conn, actor, row["id"], version, data)).row_version
    ids = []
    if overwritten:
        ids.append(await conflicts.raise_conflict(conn, actor, conflicts.Raised(
            kind="field_overwritten", outcome="applied", household_id=row["id"], village_code=row["village_code"],
            fields=overwritten, base_version=mu.base_version, server_version=row["row_version"],
            base_values={k: since.base_value(None, k, row[k]) for k in overwritten},
            server_values=conflicts.values(overwritten, row), tablet_values=conflicts.values(overwritten, edits),
            seq=mu.seq,
        )))  # fmt: skip
    return _outcome(version, True, overwritten, [], ids, "")


async def household_dissolve(conn: Connection, actor: Actor, mu: m.HouseholdDissolve, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    if row["status"] != "active":
        return m.Answer(seq=None, status="applied", code="already_dissolved", household_version=row["row_version"])
    since = await conflicts.since(conn, row["id"], mu.base_version, row["row_version"], actor.device_id)
    if since.membership_changed() and not ctx.resolving:
        # Someone joined, left or became head since the tablet looked: dissolving would decide for them.
        return await _hold(conn, actor, mu, row, "stale_membership", ["membership"],
                           server={"status": row["status"]}, tablet={"status": "dissolved"})  # fmt: skip
    household = await household_service.get_household(conn, actor, mu.household_id, None)
    # Everyone leaves, the head last: the household is dissolved when its last member goes.
    order = sorted(household.members, key=lambda x: x.relation == "head")
    version = household.row_version
    for member in order:
        household = await household_service.remove_member(
            conn, actor, mu.household_id, member.person_id, version,
            household_service.MemberRemove(reason=mu.reason),
        )  # fmt: skip
        version = household.row_version
    return m.Answer(seq=None, status="applied", household_version=version)


async def member_create(conn: Connection, actor: Actor, mu: m.MemberCreate, ctx: Context) -> m.Answer:
    # A new member touches nobody else's fields: it applies from any base.
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    data = msgspec.convert(_member_in(mu.member), household_service.MemberIn)
    household = await household_service.add_member(conn, actor, mu.household_id, row["row_version"], data, ctx.today)
    return m.Answer(seq=None, status="applied", household_version=household.row_version)


IDENTITY_EDITS = ("name", "relation", "former_head_relation", "id_number", "birth_date", "sex")


async def _member(conn: Connection, mu: m.MemberUpdate | m.MemberMove | m.MemberRemove) -> asyncpg.Record:
    person = await conflicts.person_now(conn, mu.person_id, mu.household_id)
    if person is None or person["relation"] is None:  # never a member of this household
        raise NotFound()
    return person


async def _gone(
    conn: Connection, actor: Actor, mu: m.MemberUpdate | m.MemberMove | m.MemberRemove, row: asyncpg.Record,
    person: asyncpg.Record, fields: list[str], tablet: dict[str, Any],
) -> m.Answer:  # fmt: skip
    """An edit, move or removal of someone who has left the household since: held, never applied
    to a closed membership (no resurrection)."""
    kind: conflicts.Kind = "member_moved" if person["left_reason"] == "moved" else "update_after_remove"
    return await _hold(conn, actor, mu, row, kind, fields, person_id=mu.person_id,
                       server={"membership": person["left_reason"]}, tablet=tablet)  # fmt: skip


def _holds(person: asyncpg.Record, field: str, value: Any) -> bool:
    return field != "former_head_relation" and conflicts.as_text(value) == conflicts.as_text(person[field])


async def member_update(conn: Connection, actor: Actor, mu: m.MemberUpdate, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    person = await _member(conn, mu)
    edits = _set_fields(mu, (*IDENTITY_EDITS, "phone"))
    if person["left_reason"] is not None:
        if not (ctx.resolving and person["current_household_id"] is not None):
            return await _gone(conn, actor, mu, row, person, sorted(edits), conflicts.values(edits, edits))
        # A reviewer applies the edit where the person lives now.
        mu = msgspec.structs.replace(mu, household_id=person["current_household_id"], base_version=0)
        row = await _household(conn, actor, mu.household_id, 0)
    since = await conflicts.since(conn, row["id"], mu.base_version, row["row_version"], actor.device_id)
    # An identity value the server already holds is no change (two tablets made the same fix).
    identity = {k: v for k, v in edits.items() if k in IDENTITY_EDITS and not _holds(person, k, v)}
    if "relation" not in identity:
        identity.pop("former_head_relation", None)
    edits = {k: v for k, v in edits.items() if k not in IDENTITY_EDITS or k in identity}
    stale = since.identity_changed(mu.person_id) + (["head"] if "relation" in identity and since.head_changed() else [])
    held = sorted(identity) if identity and stale and not ctx.resolving else []
    apply = {k: v for k, v in edits.items() if k not in held}
    changed_phone = "phone" in apply and conflicts.as_text(apply["phone"]) != person["phone"]
    overwritten = ["phone"] if changed_phone and since.changed(mu.person_id, "phone") else []
    version, ids = row["row_version"], []
    if apply:
        data = msgspec.convert(apply, household_service.MemberUpdate)
        household = await household_service.update_member(
            conn, actor, row["id"], mu.person_id, version, data, ctx.today
        )
        version = household.row_version
    for kind, outcome, fields in (("field_overwritten", "applied", overwritten), ("stale_identity", "held", held)):
        if not fields:
            continue
        server = conflicts.values(fields, person)
        ids.append(await conflicts.raise_conflict(conn, actor, conflicts.Raised(
            kind=kind, outcome=outcome, household_id=row["id"], village_code=row["village_code"],  # type: ignore[arg-type]
            person_id=mu.person_id, fields=fields, base_version=mu.base_version, server_version=row["row_version"],
            base_values={k: since.base_value(mu.person_id, k, server.get(k)) for k in fields},
            server_values=server, tablet_values=conflicts.values(fields, edits),
            mutation=msgspec.to_builtins(msgspec.structs.replace(mu, phone=None)) if outcome == "held" else None,
            seq=mu.seq,
        )))  # fmt: skip
    return _outcome(version, bool(apply), overwritten, held, ids, "stale_identity")


async def member_move(conn: Connection, actor: Actor, mu: m.MemberMove, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    person = await _member(conn, mu)
    if person["left_reason"] is not None:
        if person["current_household_id"] == mu.to_household_id:
            return m.Answer(seq=None, status="applied", code="already_moved", household_version=row["row_version"])
        return await _gone(conn, actor, mu, row, person, ["membership"],
                           {"membership": "moved", "to_household_id": str(mu.to_household_id)})  # fmt: skip
    since = await conflicts.since(conn, row["id"], mu.base_version, row["row_version"], actor.device_id)
    stale = since.identity_changed(mu.person_id)
    if stale and not ctx.resolving:
        return await _hold(conn, actor, mu, row, "stale_membership", ["membership"], person_id=mu.person_id,
                           server={"membership": "member", "changed": ",".join(stale)},
                           tablet={"membership": "moved", "to_household_id": str(mu.to_household_id)})  # fmt: skip
    data = msgspec.convert({"to_household_id": mu.to_household_id, "relation": mu.relation, "note": mu.note},
                           household_service.MoveIn)  # fmt: skip
    move = await household_service.move_member(conn, actor, row["id"], mu.person_id, row["row_version"], data)
    after = await conflicts.household_locked(conn, row["id"])
    assert after is not None
    code = None if move.status == "accepted" else "move_pending"  # to another township: it decides
    return m.Answer(seq=None, status="applied", code=code, household_version=after["row_version"])


async def member_remove(conn: Connection, actor: Actor, mu: m.MemberRemove, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version)
    person = await _member(conn, mu)
    if person["left_reason"] is not None:
        if person["left_reason"] != "moved":  # removed already: what the tablet wanted
            return m.Answer(seq=None, status="applied", code="already_removed", household_version=row["row_version"])
        return await _gone(conn, actor, mu, row, person, ["membership"], {"membership": mu.reason})
    since = await conflicts.since(conn, row["id"], mu.base_version, row["row_version"], actor.device_id)
    stale = since.identity_changed(mu.person_id)
    if stale and not ctx.resolving:
        return await _hold(conn, actor, mu, row, "stale_membership", ["membership"], person_id=mu.person_id,
                           server={"membership": "member", "changed": ",".join(stale)},
                           tablet={"membership": mu.reason})  # fmt: skip
    household = await household_service.remove_member(
        conn, actor, row["id"], mu.person_id, row["row_version"], household_service.MemberRemove(reason=mu.reason),
    )  # fmt: skip
    return m.Answer(seq=None, status="applied", household_version=household.row_version)


# Enrolments -------------------------------------------------------------------------------------


async def enrollment_create(conn: Connection, actor: Actor, mu: m.EnrollmentCreate, ctx: Context) -> m.Answer:
    data = msgspec.convert(
        {"household_id": mu.household_id, "coverage_year": mu.coverage_year, "person_ids": mu.person_ids},
        enrolment_service.EnrollmentCreate,
    )
    try:
        enrolled = await enrolment_service.enrol(conn, actor, data, ctx.today, ctx.code_key)
    except NotFound:
        if await conflicts.held_household(conn, mu.household_id) is not None:
            raise HouseholdHeld() from None
        raise
    if mu.query_code_hash is None:
        return m.Answer(seq=None, status="applied")
    # A new code for the household and year only when it had none: enrol() just derived one (never
    # shown to anyone) in this transaction, and the tablet's takes its place.
    assert actor.device_id is not None
    stored = enrolled.query_code is not None and await query_codes.take_tablet_code(
        conn, ctx.code_key, mu.household_id, mu.coverage_year, actor.device_id, mu.query_code_hash
    )
    return m.Answer(seq=None, status="applied", query_code_stored=stored)


async def enrollment_cancel(conn: Connection, actor: Actor, mu: m.EnrollmentCancel, ctx: Context) -> m.Answer:
    enrollment_id = await conn.fetchval(Q["live_enrollment_of"], mu.person_id, mu.coverage_year)
    if enrollment_id is None:
        raise NotFound("no live enrolment of this person for the year")
    data = msgspec.convert({"reason": mu.reason, "note": mu.note}, enrolment_service.CancelRequest)
    await enrolment_service.cancel(conn, actor, enrollment_id, data)
    return m.Answer(seq=None, status="applied")


# Money ------------------------------------------------------------------------------------------


def _payment_hash_of_row(row: asyncpg.Record) -> bytes:
    as_reported = m.PaymentRecord(
        seq=1, mutation_id=row["id"], payment_id=row["id"], household_id=row["household_id"],
        coverage_year=row["coverage_year"], person_ids=list(row["person_ids"]), amount_fen=row["amount_fen"],
        method=row["method"], kind=row["kind"], back_years=list(row["back_years"]), receipt_no=row["receipt_no"],
        collected_at=row["collected_at"], channel_ref=row["channel_ref"],
    )  # fmt: skip
    return m.payment_content_hash(as_reported)


async def _earlier_report(conn: Connection, mu: m.PaymentRecord, content: bytes) -> m.Answer | None:
    """The answer when this payment id was reported before: the same facts are a duplicate; other
    facts under the same id are kept aside, never applied over the first."""
    recorded = await conn.fetchrow(premium_service.Q["payment"], mu.payment_id)
    if recorded is not None:
        if _payment_hash_of_row(recorded) == content:
            return m.Answer(seq=None, status="duplicate", code="payment_already_recorded")
        raise Quarantine("payment_id_reused", "another payment was recorded under this id", content)
    held = await conn.fetchrow(Q["quarantined_payment"], mu.payment_id)
    if held is not None:
        if held["content_hash"] == content:
            return m.Answer(seq=None, status="duplicate", code="payment_already_quarantined", quarantine_id=held["id"])
        raise Quarantine("payment_id_reused", "another payment was reported under this id", content)
    return None


_RECEIPT_PROBLEMS = {"receipt_number_used": "receipt_clash"}


async def payment_record(conn: Connection, actor: Actor, mu: m.PaymentRecord, ctx: Context) -> m.Answer:
    content = m.payment_content_hash(mu)
    earlier = await _earlier_report(conn, mu, content)
    if earlier is not None:
        return earlier
    household = await conn.fetchrow(Q["household_state"], mu.household_id)
    if household is None and await conflicts.held_household(conn, mu.household_id) is not None:
        # Never re-pointed to the household it may duplicate: a reviewer settles both.
        raise Quarantine("household_held", "the household is held as a possible duplicate", content)
    if household is None or not actor.in_scope(household["village_code"]):
        raise Quarantine("out_of_scope", "no such household in the collector's scope", content)
    if household["status"] != "active":
        raise Quarantine("household_dissolved", "the household is dissolved", content)
    try:
        data = msgspec.convert(
            {
                "id": mu.payment_id, "household_id": mu.household_id, "coverage_year": mu.coverage_year,
                "person_ids": mu.person_ids, "amount_fen": mu.amount_fen, "method": mu.method, "kind": mu.kind,
                "back_years": mu.back_years, "receipt_no": mu.receipt_no, "collected_at": mu.collected_at,
                "channel_ref": mu.channel_ref,
            },
            premium_service.PaymentIn,
        )  # fmt: skip
    except msgspec.ValidationError as exc:
        raise Quarantine("malformed_payment", _message(exc), content) from exc
    held = audit.held(conn)
    mark = held.mark() if held is not None else 0
    try:
        async with conn.transaction():
            receipt = await premium_service.record_payment(
                conn, actor, data, timezone=ctx.timezone, code_key=ctx.code_key, now=ctx.now
            )
    except premium_service.PaymentAlreadyRecorded:
        if held is not None:
            held.undo(mark)  # the savepoint rolled back whatever it had recorded
        # Another tablet reported the same payment a moment ago, and it has committed now.
        earlier = await _earlier_report(conn, mu, content)
        assert earlier is not None
        return earlier
    except premium_service.ReceiptNumberUsed as exc:
        raise Quarantine("receipt_clash", "the receipt number is already used", content) from exc
    except premium_service.ChannelReferenceUsed as exc:
        raise Quarantine("channel_ref_clash", "a payment with this transaction reference is recorded", content) from exc
    except InvalidInput as exc:
        field = (exc.extra.get("errors") or [{}])[0].get("field", "")
        reason = "receipt_not_issued" if field == "receipt_no" else "not_applicable"
        raise Quarantine(reason, exc.detail, content) from exc
    except DomainError as exc:
        raise Quarantine("not_applicable", f"{exc.code}: {exc.detail or exc.title()}", content) from exc
    money = receipt.household
    differs = mu.due_fen is not None and mu.due_fen != money.due_fen
    return m.Answer(
        seq=None, status="applied_with_conflict" if differs else "applied", code="due_differs" if differs else None,
        due_fen=money.due_fen, paid_fen=money.paid_fen, balance_fen=money.balance_fen,
    )  # fmt: skip


def _void_day(mu: m.PaymentVoid, ctx: Context) -> date:
    """The local day the void was made on the tablet, when its clock is plausible; else today."""
    if mu.device_time is None or mu.device_time.tzinfo is None:
        return ctx.today
    if mu.device_time - ctx.now > CLOCK_AHEAD or ctx.now - mu.device_time > CLOCK_TOO_OLD:
        return ctx.today
    return local_date(mu.device_time, ctx.timezone)


async def payment_void(conn: Connection, actor: Actor, mu: m.PaymentVoid, ctx: Context) -> m.Answer:
    if await conn.fetchval(premium_service.Q["payment"], mu.payment_id) is None:
        held = await conn.fetchrow(Q["quarantined_payment"], mu.payment_id)
        reason = "payment_quarantined" if held is not None else "unknown_payment"
        raise Quarantine(reason, "the payment to void is not recorded")
    try:
        data = msgspec.convert({"kind": "void", "reason": mu.reason, "note": mu.note},
                               premium_service.AdjustmentRequest)  # fmt: skip
        async with conn.transaction():
            event = await premium_service.request_adjustment(conn, actor, mu.payment_id, data, _void_day(mu, ctx))
    except msgspec.ValidationError as exc:
        raise Quarantine("malformed_void", _message(exc)) from exc
    except DomainError as exc:
        raise Quarantine("void_not_possible", f"{exc.code}: {exc.detail or exc.title()}") from exc
    return m.Answer(seq=None, status="applied", void_request_id=event.id)


HANDLERS: dict[str, Handler] = cast(
    dict[str, Handler],
    {
        "household.create": household_create,
        "household.update": household_update,
        "household.dissolve": household_dissolve,
        "member.create": member_create,
        "member.update": member_update,
        "member.move": member_move,
        "member.remove": member_remove,
        "enrollment.create": enrollment_create,
        "enrollment.cancel": enrollment_cancel,
        "payment.record": payment_record,
        "payment.void": payment_void,
    },
)
assert set(HANDLERS) == set(m.MUTATION_TYPES)


def now_utc() -> datetime:
    return datetime.now(UTC)
