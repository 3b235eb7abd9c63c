"""Push handlers for households, members and enrolments: each mutation becomes the calls of the
REST services (backend.enrollment), whose rules apply unchanged; stale edits become conflicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import msgspec

from backend.actor import Actor
from backend.db import Connection, load_queries
from backend.enrollment import enrollments as enrolment_service
from backend.enrollment import households as household_service
from backend.enrollment import members as member_service
from backend.enrollment import moves as move_service
from backend.errors import Conflict, InvalidInput, NotFound
from backend.i18n import _
from backend.sync import query_codes
from backend.sync.conflicts import service as conflicts
from backend.sync.context import Context
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")
Row = dict[str, Any]  # a household or person as conflicts.household_locked / person_now read it (numbers in clear)


# Households and members -------------------------------------------------------------------------
# Conflict rules (PROTOCOL.md §3, Conflicts). A tablet's base version is the household's row_version it last
# saw; `record_changes` says what changed after it. Descriptive fields merge field by field and
# resolve in arrival order, keeping the replaced value in a conflict; identity and membership never
# change from a stale base: the edit is held as an open conflict for a reviewer.


class HouseholdHeld(Conflict):
    """The household is held as a possible duplicate; a reviewer settles it first"""

    code = "household_held"


def known_household(ctx: Context, household_id: UUID) -> Row | None:
    """The household as the push locked it or its own last write of it left it (locked since)."""
    return None if ctx.households is None else ctx.households.get(household_id)


_KNOWN = ("id", "village_code", "household_no", "address", "head_person_id", "status", "row_version", "phone")


def _remember(ctx: Context, household: household_service.Household | Row) -> None:
    """A household this push wrote, as the service answered it (with its members, or its row alone)."""
    if ctx.households is not None:
        if isinstance(household, dict):
            ctx.households[household["id"]] = {k: household[k] for k in _KNOWN}
        else:
            ctx.households[household.id] = {k: getattr(household, k) for k in _KNOWN}


def _forget(ctx: Context, *household_ids: UUID | None) -> None:
    """Before a write whose result is not remembered (a move: two households change)."""
    if ctx.households is not None:
        for household_id in household_ids:
            if household_id is not None:
                ctx.households.pop(household_id, None)


async def _household(conn: Connection, actor: Actor, household_id: UUID, base_version: int, ctx: Context) -> Row:
    """The household, locked (edits of one household apply in arrival order), in scope, and the
    tablet's base version checked against it."""
    row = known_household(ctx, household_id) or await conflicts.household_locked(conn, household_id)
    if row is None or not actor.in_scope(row["village_code"]):
        if row is None and await conflicts.held_household(conn, household_id) is not None:
            raise HouseholdHeld()
        raise NotFound()
    if base_version > row["row_version"]:
        raise InvalidInput("base_version", _("is ahead of the server's version {version}", version=row["row_version"]))
    return row


async def _since(conn: Connection, actor: Actor, row: Row, base_version: int, ctx: Context) -> conflicts.Since:
    """The household's changes by others after the tablet's base (as read when the push began)."""
    known = None if ctx.changes is None else ctx.changes.get(row["id"])
    return await conflicts.since(conn, row["id"], base_version, row["row_version"], actor.device_id, known)


def _set_fields(mu: msgspec.Struct, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(mu, k) for k in names if getattr(mu, k) is not None}


def _outcome(
    version: int, applied: bool, overwritten: list[str], held: list[str], ids: list[UUID], held_code: str
) -> m.Answer:
    if held and not applied:
        return m.Answer(
            seq=None,
            status="quarantined",
            code=held_code,
            household_version=version,
            conflict_fields=held,
            conflict_ids=ids,
        )
    if held or overwritten:
        code = "identity_held" if held else "field_conflict"
        return m.Answer(
            seq=None,
            status="applied_with_conflict",
            code=code,
            household_version=version,
            conflict_fields=sorted(overwritten + held),
            conflict_ids=ids,
        )
    return m.Answer(seq=None, status="applied", household_version=version)


async def _hold(
    conn: Connection,
    actor: Actor,
    mu: m.Mutation,
    row: Row,
    kind: conflicts.Kind,
    fields: list[str],
    *,
    person_id: UUID | None = None,
    server: dict[str, Any] | None = None,
    tablet: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> m.Answer:
    """Keeps the whole mutation aside as an open conflict: nothing of it is applied."""
    conflict_id = await conflicts.raise_conflict(
        conn,
        actor,
        conflicts.Raised(
            kind=kind,
            outcome="held",
            household_id=row["id"],
            village_code=row["village_code"],
            person_id=person_id,
            fields=fields,
            base_version=getattr(mu, "base_version", None),
            server_version=row["row_version"],
            base_values=base or {},
            server_values=server or {},
            tablet_values=tablet or {},
            mutation=msgspec.to_builtins(mu),
            seq=mu.seq,
        ),
    )
    return m.Answer(
        seq=None,
        status="quarantined",
        code=kind,
        household_version=row["row_version"],
        conflict_fields=sorted(fields),
        conflict_ids=[conflict_id],
    )


def _household_in(mu: m.HouseholdCreate) -> household_service.HouseholdCreate:
    return msgspec.convert(
        {
            "id": mu.household_id,
            "village_code": mu.village_code,
            "household_no": mu.household_no,
            "address": mu.address,
            "phone": mu.phone,
            "members": [_member_in(x) for x in mu.members],
        },
        household_service.HouseholdCreate,
    )


async def household_create(conn: Connection, actor: Actor, mu: m.HouseholdCreate, ctx: Context) -> m.Answer:
    household = await household_service.create_household(conn, actor, _household_in(mu), ctx.today)
    _remember(ctx, household)
    return m.Answer(seq=None, status="applied", household_version=household["row_version"])


async def household_create_run(
    conn: Connection,
    actor: Actor,
    mu: m.HouseholdCreate,
    run: list[m.MemberCreate],
    ctx: Context,
    edit: m.HouseholdUpdate | None = None,
) -> list[m.Answer]:
    """A new household, the new members of it that follow it (persons told apart) and an edit of it
    after them (`edit`, of its address or phone: not its number) in one set
    (`household_service.create_household_and_add`): what `household_create`, then `member_create` of
    each, then `household_update` do when every one applies (push.py's fast path: any failure undoes
    the lot, which is then applied one by one). Nobody else can have changed the household in
    between: the edit applies whole, and only what it changes is written."""
    shaped = _as_run(mu, run, edit)
    done = await household_service.create_household_and_add(
        conn, actor, shaped.data, shaped.added, ctx.today, shaped.edit
    )
    if done is None:  # someone added is known already: reused as the rules say, one by one
        return await _one_after_another(conn, actor, mu, run, ctx, edit)
    return _run_applied(ctx, done, edit is not None and shaped.edit is None)


def _as_run(
    mu: m.HouseholdCreate, run: list[m.MemberCreate], edit: m.HouseholdUpdate | None
) -> household_service.HouseholdRun:
    """The run as the service takes it: each step's base checked against the version the ones before
    it leave, the edit as what it changes of the household created (None: nothing)."""
    steps: list[m.MemberCreate | m.HouseholdUpdate] = [*run, *([edit] if edit else [])]
    assert all(x.household_id == mu.household_id for x in steps)
    for i, x in enumerate(steps):
        if x.base_version > 1 + i:  # each one's base against the version the ones before it leave
            raise InvalidInput("base_version", _("is ahead of the server's version {version}", version=1 + i))
    data = _household_in(mu)
    update = None
    if edit is not None:
        created = {"household_no": data.household_no, "address": data.address, "phone": data.phone}
        edits = _set_fields(edit, HOUSEHOLD_FIELDS)
        changed = {k: v for k, v in edits.items() if conflicts.as_text(v) != conflicts.as_text(created[k])}
        update = msgspec.convert(changed, household_service.HouseholdUpdate) if changed else None
    added = [msgspec.convert(_member_in(x.member), household_service.MemberIn) for x in run]
    return household_service.HouseholdRun(data=data, added=added, edit=update)


def _run_applied(ctx: Context, done: tuple[dict[str, Any], list[int]], unchanged_edit: bool) -> list[m.Answer]:
    household, versions = done
    _remember(ctx, household)
    if unchanged_edit:  # an edit that changes nothing: no new version
        versions = [*versions, versions[-1]]
    return [m.Answer(seq=None, status="applied", household_version=v) for v in versions]


async def _one_after_another(
    conn: Connection,
    actor: Actor,
    mu: m.HouseholdCreate,
    run: list[m.MemberCreate],
    ctx: Context,
    edit: m.HouseholdUpdate | None,
) -> list[m.Answer]:
    answers = [await household_create(conn, actor, mu, ctx)]
    answers += [await member_create(conn, actor, x, ctx) for x in run]
    return answers + ([await household_update(conn, actor, edit, ctx)] if edit else [])


HouseholdSteps = tuple[m.HouseholdCreate, list[m.MemberCreate], m.HouseholdUpdate | None]


async def household_create_many(
    conn: Connection, actor: Actor, runs: list[HouseholdSteps], ctx: Context, *, in_turn: bool = True
) -> list[list[m.Answer]] | None:
    """New households (nobody in two of them), each with the members added to it next and its edit
    after them (`household_create_run`'s), in one set (`household_service.create_households`): what
    `household_create_run` of each does when every one applies (push.py's fast path: any failure
    undoes the lot, which is then applied one by one). When someone in them is known already, or in
    two of them, they are applied one after the other as the rules say; not `in_turn` (written ahead
    of mutations before them), None instead: a reused person's enrolments would follow them early."""
    shaped = [_as_run(mu, added, edit) for mu, added, edit in runs]
    done = await household_service.create_households(conn, actor, shaped, ctx.today)
    if done is None and not in_turn:
        return None
    if done is None:  # someone is known already, or in two of them: as the rules say, one by one
        return [await _one_after_another(conn, actor, mu, added, ctx, edit) for mu, added, edit in runs]
    return [
        _run_applied(ctx, created, edit is not None and run.edit is None)
        for created, run, (_mu, _added, edit) in zip(done, shaped, runs, strict=True)
    ]


async def hold_duplicate(
    conn: Connection, actor: Actor, mu: m.HouseholdCreate, exc: household_service.PersonAlreadyRegistered
) -> m.Answer:
    """The same household registered twice offline (or anyone in it already in a household): the
    second copy is held as a possible duplicate; nothing is merged, no payment is re-pointed."""
    clashes: list[dict[str, Any]] = exc.extra.get("conflicts") or []
    other = next((c["household_id"] for c in clashes if c.get("household_id")), None)
    fields = sorted({str(c.get("field", "members")) for c in clashes}) or ["members"]
    conflict_id = await conflicts.raise_conflict(
        conn,
        actor,
        conflicts.Raised(
            kind="duplicate_household",
            outcome="held",
            household_id=mu.household_id,
            village_code=mu.village_code,
            fields=fields,
            tablet_values={"household_no": mu.household_no, "members": str(len(mu.members))},
            mutation=msgspec.to_builtins(mu),
            other_household_id=None if other is None else UUID(other),
            seq=mu.seq,
        ),
    )
    return m.Answer(
        seq=None, status="quarantined", code="duplicate_household", conflict_fields=fields, conflict_ids=[conflict_id]
    )


def _member_in(x: m.NewMember) -> dict[str, Any]:
    return {
        "id": x.person_id,
        "name": x.name,
        "relation": x.relation,
        "id_number": x.id_number,
        "birth_cert_no": x.birth_cert_no,
        "birth_date": x.birth_date,
        "sex": x.sex,
        "phone": x.phone,
    }


HOUSEHOLD_FIELDS = ("household_no", "address", "phone")


async def household_update(conn: Connection, actor: Actor, mu: m.HouseholdUpdate, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    edits = _set_fields(mu, HOUSEHOLD_FIELDS)
    changed = {k: v for k, v in edits.items() if conflicts.as_text(v) != conflicts.as_text(row[k])}
    since = await _since(conn, actor, row, mu.base_version, ctx)
    # Another's value replaced by this one: kept in a conflict record, never silently lost.
    overwritten = sorted(k for k in changed if since.changed(None, k))
    version = row["row_version"]
    if changed:
        data = msgspec.convert(changed, household_service.HouseholdUpdate)
        household = await household_service.update_household_row(conn, actor, row["id"], version, data, locked=row)
        _remember(ctx, household)
        version = household["row_version"]
    ids = []
    if overwritten:
        ids.append(
            await conflicts.raise_conflict(
                conn,
                actor,
                conflicts.Raised(
                    kind="field_overwritten",
                    outcome="applied",
                    household_id=row["id"],
                    village_code=row["village_code"],
                    fields=overwritten,
                    base_version=mu.base_version,
                    server_version=row["row_version"],
                    base_values={k: since.base_value(None, k, row[k]) for k in overwritten},
                    server_values=conflicts.values(overwritten, row),
                    tablet_values=conflicts.values(overwritten, edits),
                    seq=mu.seq,
                ),
            )
        )
    return _outcome(version, True, overwritten, [], ids, "")


async def household_dissolve(conn: Connection, actor: Actor, mu: m.HouseholdDissolve, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    if row["status"] != "active":
        return m.Answer(seq=None, status="applied", code="already_dissolved", household_version=row["row_version"])
    since = await _since(conn, actor, row, mu.base_version, ctx)
    if since.membership_changed() and not ctx.resolving:
        # Someone joined, left or became head since the tablet looked: dissolving would decide for them.
        return await _hold(
            conn,
            actor,
            mu,
            row,
            "stale_membership",
            ["membership"],
            server={"status": row["status"]},
            tablet={"status": "dissolved"},
        )
    household = await household_service.get_household(conn, actor, mu.household_id, None)
    # Everyone leaves, the head last: the household is dissolved when its last member goes.
    order = sorted(household.members, key=lambda x: x.relation == "head")
    version = household.row_version
    for member in order:
        household = await member_service.remove_member(
            conn,
            actor,
            mu.household_id,
            member.person_id,
            version,
            member_service.MemberRemove(reason=mu.reason),
            ctx.today,
            members=False,
        )
        version = household.row_version
        _remember(ctx, household)
    return m.Answer(seq=None, status="applied", household_version=version)


async def member_create(conn: Connection, actor: Actor, mu: m.MemberCreate, ctx: Context) -> m.Answer:
    # A new member touches nobody else's fields: it applies from any base.
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    data = msgspec.convert(_member_in(mu.member), household_service.MemberIn)
    household = await member_service.add_member(
        conn, actor, mu.household_id, row["row_version"], data, ctx.today, members=False
    )
    _remember(ctx, household)
    return m.Answer(seq=None, status="applied", household_version=household.row_version)


async def member_create_run(conn: Connection, actor: Actor, run: list[m.MemberCreate], ctx: Context) -> list[m.Answer]:
    """Consecutive new members of one household (persons told apart) added as one set
    (`member_service.add_members`): what `member_create` of each, one after the other, does when every
    one applies (push.py's fast path: any failure undoes the lot, which is then applied one by one)."""
    household_id = run[0].household_id
    assert all(x.household_id == household_id for x in run)
    row = await _household(conn, actor, household_id, run[0].base_version, ctx)
    for i, mu in enumerate(run):
        # Each one's base is checked against the version the ones before it leave.
        if mu.base_version > row["row_version"] + i:
            version = row["row_version"] + i
            raise InvalidInput("base_version", _("is ahead of the server's version {version}", version=version))
    members = [msgspec.convert(_member_in(mu.member), household_service.MemberIn) for mu in run]
    added = await member_service.add_members(conn, actor, household_id, row["row_version"], members, ctx.today)
    if added is None:  # someone already known: reused or refused, one by one as the rules say
        return [await member_create(conn, actor, mu, ctx) for mu in run]
    household, versions = added
    _remember(ctx, household)
    return [m.Answer(seq=None, status="applied", household_version=v) for v in versions]


IDENTITY_EDITS = ("name", "relation", "former_head_relation", "id_number", "birth_date", "sex")


async def _member(
    conn: Connection, mu: m.MemberUpdate | m.MemberMove | m.MemberRemove, *, for_edit: bool = False
) -> Row:
    person = await conflicts.person_now(conn, mu.person_id, mu.household_id, for_edit=for_edit)
    if person is None or person["relation"] is None:  # never a member of this household
        raise NotFound()
    return person


async def _gone(
    conn: Connection,
    actor: Actor,
    mu: m.MemberUpdate | m.MemberMove | m.MemberRemove,
    row: Row,
    person: Row,
    fields: list[str],
    tablet: dict[str, Any],
) -> m.Answer:
    """An edit, move or removal of someone who has left the household since: held, never applied
    to a closed membership (no resurrection)."""
    kind: conflicts.Kind = "member_moved" if person["left_reason"] == "moved" else "update_after_remove"
    return await _hold(
        conn,
        actor,
        mu,
        row,
        kind,
        fields,
        person_id=mu.person_id,
        server={"membership": person["left_reason"]},
        tablet=tablet,
    )


def _holds(person: Row, field: str, value: Any) -> bool:
    return field != "former_head_relation" and conflicts.as_text(value) == conflicts.as_text(person[field])


async def member_update(conn: Connection, actor: Actor, mu: m.MemberUpdate, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    person = await _member(conn, mu, for_edit=True)  # locked, read once: update_member does not again
    taken = person
    edits = _set_fields(mu, (*IDENTITY_EDITS, "phone"))
    if person["left_reason"] is not None:
        if not (ctx.resolving and person["current_household_id"] is not None):
            return await _gone(conn, actor, mu, row, person, sorted(edits), conflicts.values(edits, edits))
        # A reviewer applies the edit where the person lives now.
        mu = msgspec.structs.replace(mu, household_id=person["current_household_id"], base_version=0)
        _forget(ctx, mu.household_id)
        row = await _household(conn, actor, mu.household_id, 0, ctx)
        # Read again under that household's lock, for update_member only (the conflict rules keep
        # comparing with the person as the tablet's household knew them).
        taken = await _member(conn, mu, for_edit=True)
    since = await _since(conn, actor, row, mu.base_version, ctx)
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
        known = taken | {"birth_date": taken["born"]}  # as members' person_for_update reads it
        household = await member_service.update_member(
            conn, actor, row["id"], mu.person_id, version, data, ctx.today, locked=row, known=known, members=False
        )
        _remember(ctx, household)
        version = household.row_version
    for kind, outcome, fields in (("field_overwritten", "applied", overwritten), ("stale_identity", "held", held)):
        if not fields:
            continue
        server = conflicts.values(fields, person)
        kept = msgspec.to_builtins(msgspec.structs.replace(mu, phone=None)) if outcome == "held" else None
        ids.append(
            await conflicts.raise_conflict(
                conn,
                actor,
                conflicts.Raised(
                    kind=kind,  # type: ignore[arg-type]
                    outcome=outcome,  # type: ignore[arg-type]
                    household_id=row["id"],
                    village_code=row["village_code"],
                    person_id=mu.person_id,
                    fields=fields,
                    base_version=mu.base_version,
                    server_version=row["row_version"],
                    base_values={k: since.base_value(mu.person_id, k, server.get(k)) for k in fields},
                    server_values=server,
                    tablet_values=conflicts.values(fields, edits),
                    mutation=kept,
                    seq=mu.seq,
                ),
            )
        )
    return _outcome(version, bool(apply), overwritten, held, ids, "stale_identity")


async def member_move(conn: Connection, actor: Actor, mu: m.MemberMove, ctx: Context) -> m.Answer:
    _forget(ctx, mu.household_id, mu.to_household_id)
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    person = await _member(conn, mu)
    if person["left_reason"] is not None:
        if person["current_household_id"] == mu.to_household_id:
            return m.Answer(seq=None, status="applied", code="already_moved", household_version=row["row_version"])
        return await _gone(
            conn,
            actor,
            mu,
            row,
            person,
            ["membership"],
            {"membership": "moved", "to_household_id": str(mu.to_household_id)},
        )
    since = await _since(conn, actor, row, mu.base_version, ctx)
    stale = since.identity_changed(mu.person_id)
    if stale and not ctx.resolving:
        return await _hold(
            conn,
            actor,
            mu,
            row,
            "stale_membership",
            ["membership"],
            person_id=mu.person_id,
            server={"membership": "member", "changed": ",".join(stale)},
            tablet={"membership": "moved", "to_household_id": str(mu.to_household_id)},
        )
    data = msgspec.convert(
        {"to_household_id": mu.to_household_id, "relation": mu.relation, "note": mu.note}, move_service.MoveIn
    )
    move = await move_service.move_member(conn, actor, row["id"], mu.person_id, row["row_version"], data, ctx.today)
    after = await conflicts.household_locked(conn, row["id"])
    assert after is not None
    code = None if move.status == "accepted" else "move_pending"  # to another township: it decides
    return m.Answer(seq=None, status="applied", code=code, household_version=after["row_version"])


async def member_remove(conn: Connection, actor: Actor, mu: m.MemberRemove, ctx: Context) -> m.Answer:
    row = await _household(conn, actor, mu.household_id, mu.base_version, ctx)
    person = await _member(conn, mu)
    if person["left_reason"] is not None:
        if person["left_reason"] != "moved":  # removed already: what the tablet wanted
            return m.Answer(seq=None, status="applied", code="already_removed", household_version=row["row_version"])
        return await _gone(conn, actor, mu, row, person, ["membership"], {"membership": mu.reason})
    since = await _since(conn, actor, row, mu.base_version, ctx)
    stale = since.identity_changed(mu.person_id)
    if stale and not ctx.resolving:
        return await _hold(
            conn,
            actor,
            mu,
            row,
            "stale_membership",
            ["membership"],
            person_id=mu.person_id,
            server={"membership": "member", "changed": ",".join(stale)},
            tablet={"membership": mu.reason},
        )
    household = await member_service.remove_member(
        conn,
        actor,
        row["id"],
        mu.person_id,
        row["row_version"],
        member_service.MemberRemove(reason=mu.reason),
        ctx.today,
        locked=row,
        known=person,
        members=False,
    )
    _remember(ctx, household)
    return m.Answer(seq=None, status="applied", household_version=household.row_version)


# Enrolments -------------------------------------------------------------------------------------


async def enrollment_create(conn: Connection, actor: Actor, mu: m.EnrollmentCreate, ctx: Context) -> m.Answer:
    return (await enrollment_create_run(conn, actor, [mu], ctx))[0]


async def enrollment_create_run(
    conn: Connection, actor: Actor, run: list[m.EnrollmentCreate], ctx: Context
) -> list[m.Answer]:
    """Consecutive enrolments of one household and year (persons told apart, only the first with a
    query code) as one enrol() of all their persons: what they would do one after the other when
    every one applies (push.py's fast path; any failure undoes the lot, which is then applied one by
    one)."""
    mu = run[0]
    assert all(
        (x.household_id, x.coverage_year, x.new_student) == (mu.household_id, mu.coverage_year, mu.new_student)
        for x in run
    )
    assert all(x.query_code_hash is None for x in run[1:])
    data = msgspec.convert(
        {
            "household_id": mu.household_id,
            "coverage_year": mu.coverage_year,
            "person_ids": [p for x in run for p in x.person_ids],
            "new_student": mu.new_student,
        },
        enrolment_service.EnrollmentCreate,
    )
    try:
        enrolled = await enrolment_service.enrol(conn, actor, data, ctx.today, ctx.code_key)
    except NotFound:
        if await conflicts.held_household(conn, mu.household_id) is not None:
            raise HouseholdHeld() from None
        raise
    return await _run_answers(conn, actor, run, enrolled, ctx)


def enrolment_settable(
    actor: Actor, mu: m.EnrollmentCreate, ctx: Context, new_households: Mapping[UUID, str] | None = None
) -> bool:
    """Whether an enrolment (or a run of them) may join a set (`enrollment_create_set`) as the push
    reads it: of a household the push holds, active and in scope, or of one of `new_households` (held
    back to be written before the set: household → village). Whatever else could refuse it, the
    set's statements find, and it is then applied alone."""
    if new_households and mu.household_id in new_households:
        return ctx.device_status == "active" and actor.in_scope(new_households[mu.household_id])
    household = known_household(ctx, mu.household_id)
    return (
        ctx.device_status == "active"
        and household is not None
        and household["status"] == "active"
        and actor.in_scope(household["village_code"])
    )


async def enrollment_create_set(
    conn: Connection, actor: Actor, runs: list[list[m.EnrollmentCreate]], ctx: Context
) -> list[list[m.Answer]]:
    """Runs of enrolments (`enrollment_create_run`'s, of one mutation or more) of several households,
    one year and new-student flag, persons told apart, as one `enrol_many`: each answered as
    `enrollment_create_run` answers it. Only on the push's fast path: any refusal raises, and the push
    applies them one by one."""
    assert ctx.fast
    data = [
        msgspec.convert(
            {
                "household_id": run[0].household_id,
                "coverage_year": run[0].coverage_year,
                "person_ids": [p for x in run for p in x.person_ids],
                "new_student": run[0].new_student,
            },
            enrolment_service.EnrollmentCreate,
        )
        for run in runs
    ]
    enrolled = await enrolment_service.enrol_many(conn, actor, data, ctx.today, ctx.code_key)
    return [await _run_answers(conn, actor, run, e, ctx) for run, e in zip(runs, enrolled, strict=True)]


async def _run_answers(
    conn: Connection, actor: Actor, run: list[m.EnrollmentCreate], enrolled: enrolment_service.Enrolled, ctx: Context
) -> list[m.Answer]:
    mu = run[0]
    rest = [m.Answer(seq=None, status="applied") for _x in run[1:]]
    if mu.query_code_hash is None:
        return [m.Answer(seq=None, status="applied"), *rest]
    # A new code for the household and year only when it had none: enrol() just derived one (never
    # shown to anyone) in this transaction, and the tablet's takes its place.
    assert actor.device_id is not None
    stored = enrolled.query_code is not None and await query_codes.take_tablet_code(
        conn, ctx.code_key, mu.household_id, mu.coverage_year, actor.device_id, mu.query_code_hash
    )
    return [m.Answer(seq=None, status="applied", query_code_stored=stored), *rest]


async def enrollment_cancel(conn: Connection, actor: Actor, mu: m.EnrollmentCancel, ctx: Context) -> m.Answer:
    enrollment_id = await conn.fetchval(Q["live_enrollment_of"], mu.person_id, mu.coverage_year)
    if enrollment_id is None:
        raise NotFound(_("no live enrolment of this person for the year"))
    data = msgspec.convert({"reason": mu.reason, "note": mu.note}, enrolment_service.CancelRequest)
    await enrolment_service.cancel(conn, actor, enrollment_id, data)
    return m.Answer(seq=None, status="applied")
