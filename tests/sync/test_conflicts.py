"""Conflicts (SPEC §3, PROTOCOL.md §6): edits of different fields merge; the same descriptive field
resolves in arrival order and keeps the replaced value in a conflict; identity and membership never
change from a stale base; an edit after a removal never resurrects anyone; a household registered
twice is held, its payments never re-pointed; reviewers settle conflicts, audited."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from backend import crypto
from backend.sync import sealed
from mobile_sync_protocol import messages as m
from tests.conftest import KEYS, auth_headers
from tests.factories import ID_NUMBERS
from tests.sync_world import Client, Tablet, clear, enrol, household_create, payment, push, register_tablet, world

Conn = asyncpg.Connection  # type: ignore[type-arg]


def edit_household(tablet: Tablet, created: m.HouseholdCreate, base: int, **fields: Any) -> m.HouseholdUpdate:
    return m.HouseholdUpdate(
        seq=tablet.seq(), mutation_id=uuid.uuid4(), household_id=created.household_id, base_version=base, **fields
    )


def edit_member(tablet: Tablet, created: m.HouseholdCreate, who: int, base: int, **fields: Any) -> m.MemberUpdate:
    return m.MemberUpdate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=created.members[who].person_id,
        base_version=base,
        **fields,
    )


def remove(tablet: Tablet, created: m.HouseholdCreate, who: int, base: int) -> m.MemberRemove:
    return m.MemberRemove(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=created.members[who].person_id,
        base_version=base,
        reason="removed",
    )


async def two_tablets(client: Client, numbers: tuple[int, ...] = (1, 2)) -> tuple[Tablet, Tablet, m.HouseholdCreate]:
    """Tablets A and B of township A; A registered a household (version 1) that both have seen."""
    a = await world(client)
    b = await register_tablet(client, "staff_a")
    created = household_create(a, numbers=numbers)
    assert (await push(client, a, [created])).answers[0].status == "applied"
    return a, b, created


async def one(client: Client, tablet: Tablet, mutation: Any) -> m.Answer:
    return (await push(client, tablet, [mutation])).answers[0]


async def conflict_rows(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM sync_conflicts ORDER BY at, id")
    return [clear(r) for r in rows]


async def test_edits_of_different_fields_from_the_same_base_merge_without_a_conflict(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client)
    assert (await one(client, a, edit_household(a, created, 1, phone="13800000001"))).status == "applied"
    late = await one(client, b, edit_household(b, created, 1, address="南山村2组"))
    assert (late.status, late.code, late.household_version) == ("applied", None, 3)
    # A member's phone and a household's phone are different fields too; so is another member's name.
    assert (await one(client, b, edit_member(b, created, 1, 1, phone="13900000002", name="李四"))).status == "applied"
    row = await conn.fetchrow("SELECT address, phone_enc FROM households")
    assert clear(row) == {"address": "南山村2组", "phone": "13800000001"}
    assert await conflict_rows(conn) == []


async def test_the_same_descriptive_field_resolves_in_arrival_order_with_a_conflict_record(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_household(a, created, 1, address="北山村3组"))
    late = await one(client, b, edit_household(b, created, 1, address="南山村2组", phone="13800000009"))
    assert (late.status, late.code, late.conflict_fields) == ("applied_with_conflict", "field_conflict", ["address"])
    assert await conn.fetchval("SELECT address FROM households") == "南山村2组"  # arrival order
    [conflict] = await conflict_rows(conn)
    assert late.conflict_ids == [conflict["id"]]
    assert {k: conflict[k] for k in ("kind", "outcome", "status", "fields", "base_version", "server_version")} == {
        "kind": "field_overwritten",
        "outcome": "applied",
        "status": "open",
        "fields": ["address"],
        "base_version": 1,
        "server_version": 2,
    }
    assert (conflict["base_values"], conflict["server_values"], conflict["tablet_values"]) == (
        {"address": "北山村1组"},
        {"address": "北山村3组"},
        {"address": "南山村2组"},
    )
    assert conflict["township_code"] == "330106001000" and conflict["device_id"] == b.device_id
    # The audit names the conflict and its fields, never the values (personal data).
    summary = await conn.fetchval("SELECT summary FROM audit_log WHERE entity = 'sync_conflict'")
    assert "南山" not in str(summary) and summary["fields"] == ["address"]


async def test_an_edit_from_the_back_office_counts_as_much_as_another_tablets(client: Client, conn: Conn) -> None:
    _, b, created = await two_tablets(client)
    staff = await auth_headers(client, "staff_a")
    person = created.members[1].person_id
    rest = await client.patch(
        f"/api/v1/households/{created.household_id}/members/{person}",
        json={"phone": "13700000000"},
        headers={**staff, "If-Match": '"1"'},
    )
    assert rest.status_code == 200, rest.text
    late = await one(client, b, edit_member(b, created, 1, 1, phone="13900000002"))
    assert (late.status, late.conflict_fields) == ("applied_with_conflict", ["phone"])
    [conflict] = await conflict_rows(conn)
    assert (conflict["base_values"], conflict["server_values"], conflict["tablet_values"]) == (
        {"phone": None},
        {"phone": "13700000000"},
        {"phone": "13900000002"},
    )


async def test_a_stale_identity_edit_is_held_and_its_descriptive_part_applies(client: Client, conn: Conn) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_member(a, created, 0, 1, name="张三丰"))
    late = await one(client, b, edit_member(b, created, 0, 1, name="张山", phone="13900000001"))
    assert (late.status, late.code, late.conflict_fields) == ("applied_with_conflict", "identity_held", ["name"])
    person = await conn.fetchrow("SELECT name, phone_enc FROM persons WHERE id = $1", created.members[0].person_id)
    assert clear(person) == {"name": "张三丰", "phone": "13900000001"}  # the stale name never wins
    [conflict] = await conflict_rows(conn)
    assert (conflict["kind"], conflict["outcome"], conflict["status"]) == ("stale_identity", "held", "open")
    assert (conflict["base_values"], conflict["server_values"], conflict["tablet_values"]) == (
        {"name": "成员1"},
        {"name": "张三丰"},
        {"name": "张山"},
    )
    # Only the identity part waits for a reviewer: the phone is not held again.
    assert conflict["mutation"]["phone"] is None and conflict["mutation"]["name"] == "张山"
    # Nothing but identity: the whole edit is held (quarantined), the household untouched.
    version = await conn.fetchval("SELECT row_version FROM households")
    held = await one(client, b, edit_member(b, created, 0, 1, sex="female"))
    assert (held.status, held.code, held.conflict_fields) == ("quarantined", "stale_identity", ["sex"])
    assert await conn.fetchval("SELECT row_version FROM households") == version


async def test_an_identity_edit_applies_when_only_other_records_changed_since_its_base(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_household(a, created, 1, address="北山村3组"))
    await one(client, a, edit_member(a, created, 1, 2, name="李四"))  # another member's name
    late = await one(client, b, edit_member(b, created, 0, 1, name="张山"))
    assert (late.status, late.household_version) == ("applied", 4)
    assert await conn.fetchval("SELECT name FROM persons WHERE id = $1", created.members[0].person_id) == "张山"


async def test_an_edit_after_a_removal_never_brings_the_member_back(client: Client, conn: Conn) -> None:
    a, b, created = await two_tablets(client)
    assert (await one(client, a, remove(a, created, 1, 1))).status == "applied"
    late = await one(client, b, edit_member(b, created, 1, 1, phone="13900000002", name="李四"))
    assert (late.status, late.code, late.conflict_fields) == ("quarantined", "update_after_remove", ["name", "phone"])
    person = created.members[1].person_id
    assert await conn.fetchval("SELECT count(*) FROM memberships WHERE person_id = $1 AND left_at IS NULL", person) == 0
    assert await conn.fetchval("SELECT phone_enc FROM persons WHERE id = $1", person) is None
    [conflict] = await conflict_rows(conn)
    assert conflict["tablet_values"] == {"name": "李四", "phone": "13900000002"}  # nothing lost unrecorded
    # The same removal from the other tablet: already done, nothing to hold.
    again = await one(client, b, remove(b, created, 1, 1))
    assert (again.status, again.code) == ("applied", "already_removed")


async def test_a_registration_made_offline_before_a_death_never_brings_the_dead_back(
    client: Client, conn: Conn
) -> None:
    # Found by the fault suite: the same family registered offline on two tablets; A's copy synced, a
    # member died and the household was dissolved; B's copy, pushed later, reused the dead person's
    # record (in no household any more) and made them a member again.
    a, b, created = await two_tablets(client)
    dead = created.members[1].person_id
    died = m.MemberRemove(
        seq=a.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=dead,
        base_version=1,
        reason="deceased",
    )
    dissolved = m.HouseholdDissolve(
        seq=a.seq(), mutation_id=uuid.uuid4(), household_id=created.household_id, base_version=1, reason="data_error"
    )
    assert [x.status for x in (await push(client, a, [died, dissolved])).answers] == ["applied", "applied"]
    twice = household_create(b, numbers=(1, 2), household_no="0199")  # made before B heard of the death
    late = await one(client, b, twice)
    assert (late.status, late.code) == ("rejected", "person_deceased")
    assert await conn.fetchval("SELECT count(*) FROM households WHERE id = $1", twice.household_id) == 0
    # The head only left with the dissolved household: registered again, their record is reused.
    alone = household_create(b, numbers=(1,), household_no="0199")
    assert (await one(client, b, alone)).status == "applied"
    # The one who died joins no household: not through sync, not through REST.
    spouse = m.NewMember(person_id=uuid.uuid4(), name="成员2", relation="spouse", id_number=ID_NUMBERS[2])
    add = m.MemberCreate(
        seq=b.seq(), mutation_id=uuid.uuid4(), household_id=alone.household_id, base_version=1, member=spouse
    )
    added = await one(client, b, add)
    assert (added.status, added.code) == ("rejected", "person_deceased")
    rest = await client.post(
        f"/api/v1/households/{alone.household_id}/members",
        json={"name": "成员2", "relation": "spouse", "id_number": ID_NUMBERS[2]},
        headers={**await auth_headers(client, "staff_a"), "If-Match": '"1"'},
    )
    assert (rest.status_code, rest.json()["code"]) == (409, "person_deceased")
    assert await conn.fetchval("SELECT count(*) FROM memberships WHERE person_id = $1 AND left_at IS NULL", dead) == 0
    one_record = "SELECT count(*) FROM persons WHERE id_number_hash = $1"
    assert await conn.fetchval(one_record, KEYS.index(crypto.ID_NUMBER, ID_NUMBERS[2])) == 1


async def test_a_removal_after_an_update_applies_unless_the_members_identity_changed(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client, numbers=(1, 2, 3))
    await one(client, a, edit_member(a, created, 1, 1, phone="13900000002"))
    assert (await one(client, b, remove(b, created, 1, 1))).status == "applied"
    # The third member was renamed on A; B, not knowing, removes them: held for a reviewer.
    await one(client, a, edit_member(a, created, 2, 3, name="王五"))
    held = await one(client, b, remove(b, created, 2, 3))
    assert (held.status, held.code) == ("quarantined", "stale_membership")
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM memberships WHERE person_id = $1 AND left_at IS NULL", created.members[2].person_id
        )
        == 1
    )


async def test_a_member_moved_on_one_tablet_and_edited_on_another_is_held_then_applied_where_they_live(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client)
    target = household_create(a, numbers=(4,), household_no="0102")
    await push(client, a, [target])
    moved = m.MemberMove(
        seq=a.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        person_id=created.members[1].person_id,
        base_version=1,
        to_household_id=target.household_id,
        relation="spouse",
    )
    assert (await one(client, a, moved)).status == "applied"
    late = await one(client, b, edit_member(b, created, 1, 1, name="李思"))
    assert (late.status, late.code) == ("quarantined", "member_moved")
    removed = await one(client, b, remove(b, created, 1, 1))
    assert (removed.status, removed.code) == ("quarantined", "member_moved")
    # A reviewer applies the edit: to the person, in the household they live in now.
    reviewer = await auth_headers(client, "reviewer_a")
    settled = await client.post(
        f"/api/v1/sync/conflicts/{late.conflict_ids[0]}/resolve",
        json={"resolution": "applied", "note": "核实为李思"},
        headers=reviewer,
    )
    assert settled.status_code == 200, settled.text
    assert settled.json()["resolution"] == "applied"
    assert await conn.fetchval("SELECT name FROM persons WHERE id = $1", created.members[1].person_id) == "李思"
    # The removal is discarded: they stay in their new household.
    discarded = await client.post(
        f"/api/v1/sync/conflicts/{removed.conflict_ids[0]}/resolve",
        json={"resolution": "discarded", "note": "已迁出"},
        headers=reviewer,
    )
    assert discarded.status_code == 200, discarded.text
    in_target = await conn.fetchval(
        "SELECT household_id FROM memberships WHERE person_id = $1 AND left_at IS NULL", created.members[1].person_id
    )
    assert in_target == target.household_id


async def test_the_same_household_registered_twice_offline_is_held_and_its_payment_never_re_pointed(
    client: Client, conn: Conn
) -> None:
    a = await world(client)
    b = await register_tablet(client, "staff_a")
    first = household_create(a, numbers=(1, 2))
    await push(client, a, [first])
    twice = household_create(b, numbers=(1, 2), household_no="0199")  # the same head, another id
    answers = (await push(client, b, [twice, enrol(b, twice)])).answers
    answers += (await push(client, a, [payment(a, twice)])).answers  # collected on A's receipts
    assert [(x.status, x.code) for x in answers] == [
        ("quarantined", "duplicate_household"),
        ("rejected", "household_held"),
        ("quarantined", "household_held"),
    ]
    [conflict] = await conflict_rows(conn)
    assert (conflict["kind"], conflict["household_id"], conflict["other_household_id"]) == (
        "duplicate_household",
        twice.household_id,
        first.household_id,
    )
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0  # not re-pointed to the first household
    assert await conn.fetchval("SELECT count(*) FROM households") == 1
    # Applying it still clashes: the reviewer is told so, and discards it.
    reviewer = await auth_headers(client, "reviewer_a")
    url = f"/api/v1/sync/conflicts/{conflict['id']}/resolve"
    clash = await client.post(url, json={"resolution": "applied", "note": "再试"}, headers=reviewer)
    assert (clash.status_code, clash.json()["code"], clash.json()["reason"]) == (
        409,
        "not_resolvable",
        "person_already_registered",
    )
    done = await client.post(url, json={"resolution": "discarded", "note": "重复登记"}, headers=reviewer)
    assert done.status_code == 200, done.text
    assert await conn.fetchval("SELECT count(*) FROM households") == 1
    # The money is settled on its own, and only a reviewer who names the household moves it there.
    await push(client, a, [enrol(a, first)])
    settle = f"/api/v1/sync/quarantine/{answers[2].quarantine_id}/settle"
    people = [str(x.person_id) for x in first.members]
    half = await client.post(
        settle,
        json={"resolution": "apply", "note": "同一户", "household_id": str(first.household_id)},
        headers=reviewer,
    )
    assert (half.status_code, half.json()["errors"][0]["field"]) == (422, "person_ids")
    moved = await client.post(
        settle,
        json={"resolution": "apply", "note": "同一户", "household_id": str(first.household_id), "person_ids": people},
        headers=reviewer,
    )
    assert moved.status_code == 200, moved.text
    assert await conn.fetchval("SELECT household_id FROM payments") == first.household_id
    summary = await conn.fetchval("SELECT summary FROM audit_log WHERE action = 'settle_applied'")
    assert summary["repointed_to"] == str(first.household_id)


async def test_reviewers_list_and_settle_conflicts_in_their_scope_and_every_settlement_is_audited(
    client: Client, conn: Conn
) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_household(a, created, 1, address="北山村3组"))
    overwritten = await one(client, b, edit_household(b, created, 1, address="南山村2组"))
    await one(client, a, edit_member(a, created, 0, 3, name="张三丰"))
    held = await one(client, b, edit_member(b, created, 0, 3, name="张山"))
    reviewer = await auth_headers(client, "reviewer_a")
    listed = await client.get("/api/v1/sync/conflicts", headers=reviewer)
    assert listed.status_code == 200, listed.text
    assert [x["kind"] for x in listed.json()["items"]] == ["field_overwritten", "stale_identity"]
    only = await client.get("/api/v1/sync/conflicts?kind=stale_identity&township=330106001000", headers=reviewer)
    assert [x["id"] for x in only.json()["items"]] == [str(held.conflict_ids[0])]
    # Township B sees none of it and cannot settle it; staff cannot settle at all.
    other = await auth_headers(client, "reviewer_b")
    assert (await client.get("/api/v1/sync/conflicts", headers=other)).json()["items"] == []
    url = f"/api/v1/sync/conflicts/{overwritten.conflict_ids[0]}/resolve"
    body = {"resolution": "restored", "note": "以村委会登记为准"}
    assert (await client.post(url, json=body, headers=other)).status_code == 404
    assert (await client.post(url, json=body, headers=await auth_headers(client, "staff_a"))).status_code == 403
    wrong = await client.post(url, json={"resolution": "applied", "note": "x"}, headers=reviewer)
    assert (wrong.status_code, wrong.json()["errors"][0]["field"]) == (422, "resolution")
    restored = await client.post(url, json=body, headers=reviewer)
    assert restored.status_code == 200, restored.text
    assert (restored.json()["status"], restored.json()["resolution"]) == ("resolved", "restored")
    assert await conn.fetchval("SELECT address FROM households") == "北山村3组"
    assert (await client.post(url, json=body, headers=reviewer)).status_code == 409  # settled once
    body = {"resolution": "discarded", "note": "名字以户口簿为准"}
    kept = await client.post(f"/api/v1/sync/conflicts/{held.conflict_ids[0]}/resolve", json=body, headers=reviewer)
    assert kept.status_code == 200
    assert await conn.fetchval("SELECT name FROM persons WHERE id = $1", created.members[0].person_id) == "张三丰"
    actions = await conn.fetch(
        "SELECT action, actor_id FROM audit_log WHERE entity = 'sync_conflict' AND action LIKE 'resolve_%' ORDER BY id"
    )
    assert [r["action"] for r in actions] == ["resolve_restored", "resolve_discarded"]
    assert (await client.get("/api/v1/sync/conflicts?open=false", headers=reviewer)).json()["items"][0]["status"] == (
        "resolved"
    )


async def test_a_restore_is_refused_when_the_field_changed_again_since(client: Client, conn: Conn) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_household(a, created, 1, phone="13800000001"))
    late = await one(client, b, edit_household(b, created, 1, phone="13800000002"))
    await one(client, a, edit_household(a, created, 3, phone="13800000003"))
    reviewer = await auth_headers(client, "reviewer_a")
    refused = await client.post(
        f"/api/v1/sync/conflicts/{late.conflict_ids[0]}/resolve",
        json={"resolution": "restored", "note": "x"},
        headers=reviewer,
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_resolvable")
    assert KEYS.open(crypto.PHONE, await conn.fetchval("SELECT phone_enc FROM households")) == "13800000003"


async def test_every_write_path_stamps_its_field_changes_with_the_household_version(client: Client, conn: Conn) -> None:
    _, _, created = await two_tablets(client, numbers=(1, 2))
    staff = await auth_headers(client, "staff_a")
    head, spouse = created.members[0].person_id, created.members[1].person_id
    changed = await client.patch(
        f"/api/v1/households/{created.household_id}/members/{spouse}",
        json={"relation": "head", "former_head_relation": "spouse", "phone": "13700000000"},
        headers={**staff, "If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.text
    rows = await conn.fetch("SELECT person_id, field, old_value, new_value, version FROM record_changes ORDER BY id")
    values = [
        (sealed.open_change(r["field"], r["old_value"]), sealed.open_change(r["field"], r["new_value"])) for r in rows
    ]
    assert {(r["person_id"], r["field"], *v, r["version"]) for r, v in zip(rows, values, strict=True)} == {
        (spouse, "phone", None, "13700000000", 2),
        (head, "relation", "head", "spouse", 2),
        (spouse, "relation", "spouse", "head", 2),
        (None, "head", str(head), str(spouse), 2),
    }


async def test_the_same_identity_fix_made_on_two_tablets_is_no_conflict(client: Client, conn: Conn) -> None:
    a, b, created = await two_tablets(client)
    await one(client, a, edit_member(a, created, 0, 1, name="张三丰"))
    same = await one(client, b, edit_member(b, created, 0, 1, name="张三丰"))
    assert (same.status, same.code) == ("applied", None)
    assert await conflict_rows(conn) == []


async def test_a_tablets_own_earlier_edits_never_make_its_later_ones_stale(client: Client, conn: Conn) -> None:
    """Offline, a tablet's base stays the last version it pulled: its second fix of a name, or of an
    address, is no conflict with its first — in one push or the next. Another tablet's edit still is."""
    a, b, created = await two_tablets(client)
    answers = (
        await push(
            client,
            a,
            [
                edit_member(a, created, 0, 1, name="张三丰"),
                edit_member(a, created, 0, 1, name="张三峰"),
                edit_household(a, created, 1, address="北山村3组"),
                edit_household(a, created, 1, address="北山村4组"),
            ],
        )
    ).answers
    assert [(x.status, x.code) for x in answers] == [("applied", None)] * 4
    again = await one(client, a, edit_household(a, created, 1, address="北山村5组"))  # a later push, still base 1
    assert (again.status, again.code) == ("applied", None)
    row = await conn.fetchrow(
        "SELECT p.name, h.address FROM persons p, households h WHERE p.id = $1", created.members[0].person_id
    )
    assert dict(row.items()) == {"name": "张三峰", "address": "北山村5组"}
    assert await conflict_rows(conn) == []
    # Tablet B did not make those edits: from the same base, its name fix is held.
    late = await one(client, b, edit_member(b, created, 0, 1, name="张山"))
    assert (late.status, late.code) == ("quarantined", "stale_identity")
