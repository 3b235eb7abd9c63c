"""Pull: a paged snapshot of the tablet's township, then only what changed, never skipping a
change that commits late; tombstones for what left the scope; resets past the horizon."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from backend.sync import pull as pull_service
from mobile_sync_protocol import messages as m
from tests.conftest import auth_headers
from tests.sync_world import (
    Client,
    enrol,
    household_create,
    payment,
    pull,
    pull_all,
    push,
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
    await push(client, tablet_b, [household_create(tablet_b, numbers=(6,), household_no="0201",
                                                   village_code="330106002201")])  # fmt: skip

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
    edited = await client.patch(f"/api/v1/households/{created.household_id}", json={"address": "新地址"},
                                headers={**staff, "If-Match": '"1"'})  # fmt: skip
    assert edited.status_code == 200, edited.text
    await conn.execute("UPDATE persons SET phone = '13700000000' WHERE id = $1", created.members[1].person_id)
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
    removal = m.MemberRemove(seq=tablet.seq(), mutation_id=uuid.uuid4(), household_id=created.household_id,
                             person_id=spouse, base_version=1, reason="deceased")  # fmt: skip
    await push(client, tablet, [removal])
    # The child moves to township B (accepted there): out of this tablet's scope.
    tablet_b = await world(client, "staff_b", publish=False)
    target = household_create(tablet_b, numbers=(6,), household_no="0201", village_code="330106002201")
    await push(client, tablet_b, [target])
    staff = await auth_headers(client, "staff_a")
    moved = await client.post(f"/api/v1/households/{created.household_id}/members/{child}/move",
                              json={"to_household_id": str(target.household_id), "relation": "other"},
                              headers={**staff, "If-Match": '"2"'})  # fmt: skip
    assert moved.status_code == 200, moved.text
    accepted = await client.post(f"/api/v1/moves/{moved.json()['id']}/accept", json={},
                                 headers=await auth_headers(client, "staff_b"))  # fmt: skip
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
    assert floor is not None and floor > int(old_cursor)
    first = await pull(client, tablet, cursor=old_cursor)
    assert first.reset is True
    assert upserts(first.changes, "household")[created.household_id].address == "后来"
    # Garbage is refused with a named field, not a 500.
    response = await client.post("/api/v1/sync/pull", json={"protocol_version": 1, "device_id": str(tablet.device_id),
                                                            "cursor": "x1"}, headers=tablet.headers)  # fmt: skip
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
