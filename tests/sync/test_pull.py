"""Pull: a paged snapshot of the tablet's township, then only what changed, never skipping a
change that commits late; tombstones for what left the scope; resets past the horizon."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from backend import clock
from backend.sync import pull as pull_service
from backend.sync import sealed
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS
from tests.sync_world import (
    Client,
    enrol,
    household_create,
    payment,
    pull,
    pull_all,
    push,
    sealed_set,
    tombstones,
    upserts,
    world,
)


async def test_the_first_pull_is_a_snapshot_of_the_township_and_resumes_after_a_cut(client: Client) -> None:
    tablet = await world(client)
    households = [household_create(tablet, numbers=(i,), household_no=f"01{i:02d}") for i in (1, 2, 3)]
    enrolled = enrol(tablet, households[0])
    paid = payment(tablet, households[0], amount_fen=40000)
    await push(client, tablet, [*households, enrolled, paid])
    tablet_b = await world(client, "staff_b", publish=False)
    await push(
        client, tablet_b, [household_create(tablet_b, numbers=(6,), household_no="0201", village_code="330106002201")]
    )

    whole, _, _ = await pull_all(client, tablet)
    assert set(upserts(whole, "household")) == {h.household_id for h in households}
    assert len(upserts(whole, "person")) == 3 and len(upserts(whole, "membership")) == 3
    assert len(upserts(whole, "enrollment")) == 1 and list(upserts(whole, "payment")) == [paid.payment_id]
    assert [p.coverage_year for p in upserts(whole, "policy_version").values()] == [2026]
    assert [b.prefix for b in upserts(whole, "receipt_block").values()] == ["T"]

    # Pages of 4; the answer to the second page is lost and the same token is asked again.
    first = await pull(client, tablet, limit=4)
    assert (len(first.changes), first.has_more, first.cursor) == (4, True, None)
    second = await pull(client, tablet, page_token=first.page_token, limit=4)
    again = await pull(client, tablet, page_token=first.page_token, limit=4)
    assert again.changes == second.changes and again.page_token == second.page_token
    pages = [first, second]
    while pages[-1].has_more:
        pages.append(await pull(client, tablet, page_token=pages[-1].page_token, limit=4))
    assert [c for p in pages for c in p.changes] == whole
    assert pages[-1].cursor is not None


async def test_later_pulls_bring_only_what_changed_from_every_write_path(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    await push(client, tablet, [created])
    _, cursor, _ = await pull_all(client, tablet)
    nothing, cursor, _ = await pull_all(client, tablet, cursor)
    assert nothing == []
    # A REST edit by a colleague in the office, then a direct SQL change (an import, the CLI).
    staff = await auth_headers(client, "staff_a")
    edited = await client.patch(
        f"/api/v1/households/{created.household_id}", json={"address": "新地址"}, headers={**staff, "If-Match": '"1"'}
    )
    assert edited.status_code == 200, edited.text
    await conn.execute(
        "UPDATE persons SET phone_hash = $2, phone_enc = $3 WHERE id = $1",
        created.members[1].person_id,
        *sealed_set("phone", "13700000000"),
    )
    changes, _, reset = await pull_all(client, tablet, cursor)
    assert reset is False
    assert [(type(c).__name__, c.row.__struct_config__.tag) for c in changes if isinstance(c, m.Upsert)] == [
        ("Upsert", "household"),
        ("Upsert", "person"),
    ]
    assert upserts(changes, "household")[created.household_id].address == "新地址"
    assert upserts(changes, "person")[created.members[1].person_id].phone == "13700000000"


async def test_a_change_that_commits_late_still_reaches_the_tablet(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    db_dsn: str,
) -> None:
    tablet = await world(client)
    slow, fast = household_create(tablet), household_create(tablet, numbers=(3,), household_no="0102")
    await push(client, tablet, [slow, fast])
    _, cursor, _ = await pull_all(client, tablet)
    late = await asyncpg.connect(db_dsn)
    try:
        held = late.transaction()
        await held.start()
        await late.execute(
            "UPDATE households SET address = '慢' WHERE id = $1", slow.household_id
        )  # takes its xid first
        await conn.execute("UPDATE households SET address = '快' WHERE id = $1", fast.household_id)  # commits first
        meanwhile, cursor, _ = await pull_all(client, tablet, cursor)
        assert slow.household_id not in upserts(meanwhile, "household")
        await held.commit()
    finally:
        await late.close()
    after, _, _ = await pull_all(client, tablet, cursor)
    seen = {**upserts(meanwhile, "household"), **upserts(after, "household")}
    assert {k: v.address for k, v in seen.items()} == {slow.household_id: "慢", fast.household_id: "快"}


async def test_removed_and_moved_out_records_travel_as_tombstones(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet, numbers=(1, 2, 3))
    await push(client, tablet, [created])
    _, cursor, _ = await pull_all(client, tablet)
    spouse, child = created.members[1].person_id, created.members[2].person_id
    removal = m.MemberRemove(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=spouse,
        base_version=1,
        reason="deceased",
    )
    await push(client, tablet, [removal])
    # The child moves to township B (accepted there): out of this tablet's scope.
    tablet_b = await world(client, "staff_b", publish=False)
    target = household_create(tablet_b, numbers=(6,), household_no="0201", village_code="330106002201")
    await push(client, tablet_b, [target])
    staff = await auth_headers(client, "staff_a")
    moved = await client.post(
        f"/api/v1/households/{created.household_id}/members/{child}/move",
        json={"to_household_id": str(target.household_id), "relation": "other"},
        headers={**staff, "If-Match": '"2"'},
    )
    assert moved.status_code == 200, moved.text
    accepted = await client.post(
        f"/api/v1/moves/{moved.json()['id']}/accept", json={}, headers=await auth_headers(client, "staff_b")
    )
    assert accepted.status_code == 200, accepted.text
    changes, _, _ = await pull_all(client, tablet, cursor)
    assert tombstones(changes, "person") == {spouse, child}
    assert len(tombstones(changes, "membership")) == 2
    assert set(upserts(changes, "household")) == {created.household_id}
    # Township B's tablet never saw A's household, and sees the child now.
    b_view, _, _ = await pull_all(client, tablet_b)
    assert set(upserts(b_view, "person")) == {target.members[0].person_id, child}
    assert created.household_id not in upserts(b_view, "household")


async def test_a_cursor_older_than_the_retention_horizon_gets_a_reset(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    await push(client, tablet, [created])
    _, old_cursor, _ = await pull_all(client, tablet)
    await conn.execute("UPDATE households SET address = '后来' WHERE id = $1", created.household_id)
    floor = await pull_service.prune(conn, datetime.now(UTC) + timedelta(seconds=1))
    assert floor is not None and floor > int(old_cursor.split(".")[0])
    first = await pull(client, tablet, cursor=old_cursor)
    assert first.reset is True
    assert upserts(first.changes, "household")[created.household_id].address == "后来"
    # Garbage is refused with a named field, not a 500.
    response = await client.post(
        "/api/v1/sync/pull",
        json={"protocol_version": 1, "device_id": str(tablet.device_id), "cursor": "x1"},
        headers=tablet.headers,
    )
    assert response.status_code == 422 and response.json()["errors"] == [
        {"field": "cursor", "message": "is not a cursor this server gave"}
    ]


async def test_a_forged_page_token_is_a_422_not_a_500(client: Client) -> None:
    import base64

    import msgspec

    from mobile_sync_protocol import codec

    tablet = await world(client)
    for forged in (["s", 5, 0, -100], ["c", -1, 0], ["x", 1]):
        token = base64.urlsafe_b64encode(msgspec.json.encode(forged)).decode().rstrip("=")
        request = m.PullRequest(protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, page_token=token)
        response = await client.post(
            "/api/v1/sync/pull",
            content=codec.encode(request, "json"),
            headers={**tablet.headers, "Content-Type": m.JSON},
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "page_token"


async def insert_conflict(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    township: str,
    household_id: uuid.UUID,
    **extra: object,
) -> uuid.UUID:
    """A conflict row as the push writes it (the push's own code is tested elsewhere)."""
    conflict_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO sync_conflicts (id, township_code, household_id, person_id, kind, outcome, fields,
                                       base_values, server_values, tablet_values, raised_by)
           VALUES ($1, $2, $3, $4, 'field_overwritten', 'applied', '{phone}', $5, $6, $7, $8)""",
        conflict_id,
        township,
        household_id,
        extra.get("person_id"),
        sealed.seal_values({"phone": "13800000001"}),
        sealed.seal_values({"phone": "13800000002"}),
        sealed.seal_values({"phone": "13800000003"}),
        uuid.uuid4(),
    )
    return conflict_id


async def test_conflicts_of_the_township_travel_in_the_snapshot_and_their_resolutions_in_later_pulls(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    await push(client, tablet, [created])
    ours = await insert_conflict(conn, "330106001000", created.household_id, person_id=created.members[0].person_id)
    theirs = await insert_conflict(conn, "330106002000", uuid.uuid4())

    whole, cursor, _ = await pull_all(client, tablet)
    conflicts = upserts(whole, "conflict")
    assert set(conflicts) == {ours}
    row = conflicts[ours]
    assert (row.household_id, row.person_id, row.kind, row.outcome, row.fields, row.status) == (
        created.household_id,
        created.members[0].person_id,
        "field_overwritten",
        "applied",
        ["phone"],
        "open",
    )
    assert (row.base_values, row.server_values, row.tablet_values) == (
        {"phone": "13800000001"},
        {"phone": "13800000002"},
        {"phone": "13800000003"},
    )
    # Whatever the conflict is resolved by, its new state travels; township B's never does.
    resolve = """UPDATE sync_conflicts SET status = 'resolved', resolution = 'kept', resolution_note = $2,
                 resolved_at = now(), row_version = row_version + 1 WHERE id = $1"""
    await conn.execute(resolve, ours, "电话已核实")
    await conn.execute(resolve, theirs, "")
    later = await insert_conflict(conn, "330106001000", created.household_id)
    changes, _, _ = await pull_all(client, tablet, cursor)
    assert set(upserts(changes, "conflict")) == {ours, later} and tombstones(changes, "conflict") == set()
    resolved = upserts(changes, "conflict")[ours]
    assert (resolved.status, resolved.resolution, resolved.resolution_note) == ("resolved", "kept", "电话已核实")
    assert resolved.resolved_at is not None


async def scope_records(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    tablet_user: uuid.UUID,
    device: uuid.UUID,
) -> set[tuple[str, uuid.UUID]]:
    """What township A's tablet must hold: the scope's records kind by kind (the `*_in_scope` queries)."""
    zero, scope, everything = uuid.UUID(int=0), ("330106001000", "330106001999"), 10**6
    since = pull_service.subsidy_horizon(clock.now())
    queries = {
        "policy_version": ("policies_all", (zero, everything)),
        "receipt_block": ("receipt_blocks_of_device", (tablet_user, device, zero, everything)),
        "household": ("households_in_scope", (*scope, zero, everything)),
        "person": ("persons_in_scope", (*scope, zero, everything)),
        "membership": ("memberships_in_scope", (*scope, zero, everything)),
        "enrollment": ("enrollments_in_scope", (*scope, zero, everything)),
        "payment": ("payments_in_scope", (*scope, zero, everything)),
        "payment_event": ("payment_events_in_scope", (*scope, zero, everything)),
        "subsidy": ("subsidies_in_scope", (*scope, zero, everything, since)),
        "conflict": ("conflicts_in_scope", (*scope, zero, everything)),
    }
    held = set()
    for entity, (name, args) in queries.items():
        held |= {(entity, r["id"]) for r in await conn.fetch(pull_service.Q[name], *args)}
    return held


def keys(changes: list[m.Change]) -> list[tuple[str, uuid.UUID]]:
    return [(c.row.__struct_config__.tag, c.row.id) for c in changes if isinstance(c, m.Upsert)]


async def test_the_snapshot_goes_household_by_household_and_any_page_size_gives_the_same_records(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    from tests.sync.test_subsidies import load

    tablet = await world(client)
    households = [household_create(tablet, numbers=(2 * i + 1, 2 * i + 2), household_no=f"01{i:02d}") for i in range(3)]
    enrolled = enrol(tablet, households[1])
    await push(client, tablet, [*households, enrolled, payment(tablet, households[1], amount_fen=80000)])
    await load(client, "di_bao", f"{ID_NUMBERS[3]},乙,,")
    await insert_conflict(conn, "330106001000", households[0].household_id)

    whole, _, _ = await pull_all(client, tablet)
    assert set(keys(whole)) == await scope_records(conn, tablet.user_id, tablet.device_id)
    # Policies and receipt blocks first, conflicts last; between them each household and its records.
    order = keys(whole)
    assert [e for e, _ in order[:2]] == ["policy_version", "receipt_block"] and order[-1][0] == "conflict"
    start = order.index(("household", households[1].household_id))
    assert [e for e, _ in order[start : start + 10]] == [
        "household",
        "person",
        "person",
        "membership",
        "membership",
        "enrollment",
        "enrollment",
        "payment",
        "subsidy",
        order[start + 9][0],
    ]
    assert order[start + 9][0] in ("household", "conflict")
    for limit in (1, 2, 3, 5, 8, 13):
        pages = [await pull(client, tablet, limit=limit)]
        while pages[-1].has_more:
            pages.append(await pull(client, tablet, page_token=pages[-1].page_token, limit=limit))
        assert all(len(p.changes) <= limit for p in pages)
        assert [c for p in pages for c in p.changes] == whole, limit


async def test_records_written_while_a_snapshot_is_paged_are_never_lost(client: Client) -> None:
    """A record that sorts before the page position (a tablet's UUIDs are random) is in the next
    change pull; no record that existed when the snapshot began is skipped."""
    tablet = await world(client)
    households = [household_create(tablet, numbers=(2 * i + 1, 2 * i + 2), household_no=f"01{i:02d}") for i in range(3)]
    await push(client, tablet, households)
    ordered = sorted(households, key=lambda h: h.household_id)
    seen: list[m.Change] = []
    page = await pull(client, tablet, limit=5)  # the policy, the block, the first household and a person
    seen += page.changes
    # Meanwhile: a member joins the first household with the smallest id there is, another household too.
    joining = m.MemberCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=ordered[0].household_id,
        base_version=1,
        member=m.NewMember(person_id=uuid.UUID(int=1), name="新成员", relation="child", id_number=ID_NUMBERS[9]),
    )
    another = household_create(tablet, numbers=(10,), household_no="0199")
    await push(client, tablet, [joining, another])
    while page.has_more:
        page = await pull(client, tablet, page_token=page.page_token, limit=5)
        seen += page.changes
    assert page.cursor is not None
    later, _, _ = await pull_all(client, tablet, page.cursor)
    held = {k for k in keys(seen)} | {k for k in keys(later)}
    for created in [*households, another]:
        assert ("household", created.household_id) in held
        assert {("person", x.person_id) for x in created.members} <= held
    assert ("person", uuid.UUID(int=1)) in held


async def test_a_page_token_of_the_older_layout_starts_the_snapshot_again(client: Client) -> None:
    """Tokens of the kind-by-kind snapshot (before households were grouped) name a kind by its old
    position: resuming from one could skip records, so the snapshot starts again at its cursor."""
    tablet = await world(client)
    await push(client, tablet, [household_create(tablet)])
    whole, _, _ = await pull_all(client, tablet)
    first = await pull(client, tablet, limit=2)
    assert first.page_token is not None
    current = pull_service._decode_token(first.page_token)
    old = pull_service.PageToken(mode="s", to_xid=current.to_xid, kind=3, after_id=uuid.UUID(int=0))  # layout 1
    again = await pull(client, tablet, page_token=pull_service._encode_token(old))
    assert again.changes == whole and again.reset is False and again.cursor == f"{current.to_xid}.330106001000"


async def test_a_pull_is_neither_held_up_nor_failed_by_a_push_of_the_same_tablet(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    db_dsn: str,
) -> None:
    import asyncio

    from backend.actor import Actor, Role, Scope

    tablet = await world(client)
    await push(client, tablet, [household_create(tablet)])
    # A push under way holds the tablet's row: the pull does not wait for it.
    pushing = await asyncpg.connect(db_dsn)
    try:
        held = pushing.transaction()
        await held.start()
        await pushing.execute("SELECT last_seq FROM sync_devices WHERE device_id = $1 FOR UPDATE", tablet.device_id)
        page = await asyncio.wait_for(pull(client, tablet, limit=2), timeout=10)
        assert page.last_seq == 1
        await held.rollback()
    finally:
        await pushing.close()
    # A push that committed after this pull's snapshot was taken: no serialization failure, no 500.
    actor = Actor(
        kind="user",
        id=tablet.user_id,
        role=Role.TOWNSHIP_STAFF,
        scope=Scope("330106001000", "township"),
        device_id=tablet.device_id,
    )
    reader = await asyncpg.connect(db_dsn)
    try:
        from backend.db import init_connection

        await init_connection(reader)
        async with reader.transaction(isolation="repeatable_read"):
            await reader.fetchval("SELECT 1")  # the snapshot starts here
            await conn.execute(
                "UPDATE sync_devices SET last_seq = 7, last_push_at = now() WHERE device_id = $1", tablet.device_id
            )
            request = m.PullRequest(protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id, limit=2)
            answer = await pull_service.pull(reader, actor, request, clock.now())
        assert answer.last_seq == 1  # as of the snapshot: older at worst, never wrong
        assert len(answer.changes) == 2
    finally:
        await reader.close()


def test_building_a_page_pauses_the_cycle_collector_and_always_turns_it_on_again() -> None:
    import gc

    import pytest

    assert gc.isenabled()
    with pull_service._collector_paused():
        assert not gc.isenabled()
        with pull_service._collector_paused():  # a page built meanwhile
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the page that paused it turns it on
    assert gc.isenabled()
    with pytest.raises(RuntimeError), pull_service._collector_paused():
        raise RuntimeError("a failing page")
    assert gc.isenabled()
    gc.disable()  # turned off by someone else: left off
    try:
        with pull_service._collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_a_pull_is_gzipped_when_the_tablet_accepts_it_and_only_then(client: Client) -> None:
    tablet = await world(client)
    await push(client, tablet, [household_create(tablet, numbers=(1, 2, 3))])
    request = m.PullRequest(protocol_version=m.PROTOCOL_VERSION, device_id=tablet.device_id)
    body = codec.encode(request, "msgpack")
    answers = {}
    for accept in ("gzip", "identity", "gzip;q=0"):
        response = await client.post(
            "/api/v1/sync/pull",
            content=body,
            headers={**tablet.headers, "Content-Type": m.MSGPACK, "Accept-Encoding": accept},
        )
        assert response.status_code == 200, response.text
        # (and Accept-Language, which every answer varies with since it speaks the caller's language)
        assert "Accept-Encoding" in [v.strip() for v in response.headers["vary"].split(",")]
        answers[accept] = (
            response.headers.get("content-encoding"),
            codec.decode(response.content, m.PullResponse, "msgpack"),
        )
    assert [answers[a][0] for a in ("gzip", "identity", "gzip;q=0")] == ["gzip", None, None]
    assert answers["gzip"][1].changes == answers["identity"][1].changes


async def test_a_cursor_names_the_scope_it_was_given_for_and_another_scope_starts_a_new_snapshot(
    client: Client,
) -> None:
    tablet = await world(client)
    await push(client, tablet, [household_create(tablet)])
    _, cursor, _ = await pull_all(client, tablet)
    assert cursor.endswith(".330106001000")
    later = await pull(client, tablet, cursor=cursor)
    assert (later.changes, later.reset) == ([], False)
    # The same xid under another township's name (the user was moved): a fresh snapshot, reset.
    moved = await pull(client, tablet, cursor=cursor.split(".")[0] + ".330106002000")
    assert moved.reset is True and upserts(moved.changes, "household")
    for bad in ("12.33", "x.330106001000", "1" * 20):
        response = await client.post(
            "/api/v1/sync/pull",
            json={"protocol_version": 1, "device_id": str(tablet.device_id), "cursor": bad},
            headers=tablet.headers,
        )
        assert (response.status_code, response.json()["errors"][0]["field"]) == (422, "cursor"), bad
