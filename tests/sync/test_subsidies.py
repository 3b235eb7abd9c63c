"""Pull: the subsidy categories of the township's people (SPEC §3) — in the snapshot, and again
whenever a list version, a claim decision, an identity number or a move changes them; never
another township's people; read offline by the same rule as the server's eligibility check."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import asyncpg

from mobile_sync_protocol import messages as m
from mobile_sync_protocol.rules.premium import SubsidyPolicy, premium_due
from tests.conftest import TODAY, auth_headers
from tests.eligibility.test_check import check, csv
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS
from tests.sync_world import Client, enrol, household_create, pull_all, push, sealed_set, tombstones, upserts, world

B_VILLAGE = "330106002201"
# Grants that ended more than 90 days ago are left out of the rows: the tests' dates follow the
# server's today, the suite's pinned 2 December 2026 (TODAY).
DAY = timedelta(days=1)
YEAR = 2027  # claims for years before the horizon's are left out too


async def load(client: Client, list_type: str, *rows: str, effective_from: str = "2025-09-01") -> dict[str, Any]:
    """A civil-affairs list (district-wide upload) with rows `id_number,name,valid_from,valid_to`."""
    response = await upload(
        client, await auth_headers(client, "civil"), csv(*rows), list_type=list_type, effective_from=effective_from
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "loaded", response.text
    body: dict[str, Any] = response.json()
    return body


def person_of(created: m.HouseholdCreate, id_number: str) -> uuid.UUID:
    return next(x.person_id for x in created.members if x.id_number == id_number)


async def server_categories(client: Client, id_number: str, day: date) -> list[str]:
    """What the eligibility check says the person holds on `day` for 2026."""
    answer = await check(client, await auth_headers(client, "staff_a"), [id_number], as_of=day.isoformat())
    return sorted({c["category"] for c in answer["items"][0]["categories"]})


async def test_the_snapshot_carries_the_categories_of_the_townships_people_and_no_one_elses(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2, 3))
    await push(client, tablet, [ours])
    tablet_b = await world(client, "staff_b", publish=False)
    theirs = household_create(tablet_b, numbers=(6,), household_no="0201", village_code=B_VILLAGE)
    await push(client, tablet_b, [theirs])
    await load(client, "di_bao", f"{ID_NUMBERS[1]},甲,,", f"{ID_NUMBERS[6]},乙,,", f"{ID_NUMBERS[9]},丙,,")
    await load(
        client,
        "te_kun",
        f"{ID_NUMBERS[2]},丁,{TODAY - DAY * 30},{TODAY + DAY * 300}",
        f"{ID_NUMBERS[1]},甲,,{TODAY - DAY * 200}",
    )

    whole, _, _ = await pull_all(client, tablet)
    rows = upserts(whole, "subsidy")
    # [3] holds nothing; [6] lives in township B; [9] is on the list but registered nowhere.
    assert set(rows) == {person_of(ours, ID_NUMBERS[1]), person_of(ours, ID_NUMBERS[2])}
    first = rows[person_of(ours, ID_NUMBERS[1])]
    assert (first.person_id, first.household_id) == (person_of(ours, ID_NUMBERS[1]), ours.household_id)
    # Its te_kun row ended more than 90 days ago: left out (a tablet prices today's visits).
    assert [(g.category, g.source, g.valid_from, g.valid_to) for g in first.grants] == [
        ("di_bao", "list", date(2025, 9, 1), None)
    ]
    second = rows[person_of(ours, ID_NUMBERS[2])]
    assert [(g.category, g.valid_from, g.valid_to, g.row_no) for g in second.grants] == [
        ("te_kun", TODAY - DAY * 30, TODAY + DAY * 300, 2)
    ]
    # Township B's tablet gets its own person only.
    b_view, _, _ = await pull_all(client, tablet_b)
    assert set(upserts(b_view, "subsidy")) == {theirs.members[0].person_id}


async def test_the_tablet_reads_the_rows_as_the_eligibility_check_does_on_any_day(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2, 3, 4))
    await push(client, tablet, [ours])
    switch = TODAY + DAY * 60
    await load(client, "di_bao", f"{ID_NUMBERS[1]},甲,,", f"{ID_NUMBERS[2]},乙,{TODAY - DAY * 10},{TODAY + DAY * 100}")
    # Version 2 of di_bao from `switch`: [1] leaves, [3] joins; a same-day version 3 replaces
    # version 2 altogether ([4] instead of [3]). te_kun for [1] in a window of its own.
    await load(client, "di_bao", f"{ID_NUMBERS[2]},乙,,", f"{ID_NUMBERS[3]},丙,,", effective_from=str(switch))
    await load(client, "di_bao", f"{ID_NUMBERS[4]},丁,,", f"{ID_NUMBERS[2]},乙,,", effective_from=str(switch))
    await load(client, "te_kun", f"{ID_NUMBERS[1]},甲,{TODAY + DAY * 30},{TODAY + DAY * 200}")

    whole, _, _ = await pull_all(client, tablet)
    rows = {r.person_id: r for r in upserts(whole, "subsidy").values()}
    assert person_of(ours, ID_NUMBERS[3]) not in rows  # only on the shadowed version 2
    days = [TODAY + DAY * n for n in (0, 29, 30, 59, 60, 100, 101, 200, 201)]
    for number in ID_NUMBERS[1:5]:
        row = rows.get(person_of(ours, number))
        for day in days:
            offline = row.categories_on(day, 2026) if row else []
            assert offline == await server_categories(client, number, day), (number, day)


async def test_list_versions_claim_decisions_and_identity_changes_reach_the_tablet_in_later_pulls(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2, 3))
    await push(client, tablet, [ours])
    await load(client, "di_bao", f"{ID_NUMBERS[1]},甲,,")
    _, cursor, _ = await pull_all(client, tablet)
    one, two, three = (person_of(ours, n) for n in ID_NUMBERS[1:4])

    # A new version from `switch`: [1] leaves the list then, [2] joins it.
    switch = TODAY + DAY * 30
    await load(client, "di_bao", f"{ID_NUMBERS[2]},乙,,", effective_from=str(switch))
    changes, cursor, _ = await pull_all(client, tablet, cursor)
    rows = upserts(changes, "subsidy")
    assert set(rows) == {one, two}
    assert [(g.valid_from, g.valid_to) for g in rows[one].grants] == [(date(2025, 9, 1), switch - DAY)]
    assert [(g.valid_from, g.valid_to) for g in rows[two].grants] == [(switch, None)]

    # A claim: nothing travels while it is pending; its acceptance does.
    staff, civil = await auth_headers(client, "staff_a"), await auth_headers(client, "civil")
    raised = await client.post(
        "/api/v1/eligibility/claims",
        headers=staff,
        json={"person_id": str(three), "coverage_year": YEAR, "category": "te_kun"},
    )
    assert raised.status_code == 201, raised.text
    pending, cursor, _ = await pull_all(client, tablet, cursor)
    assert upserts(pending, "subsidy") == {}
    accepted = await client.post(f"/api/v1/eligibility/claims/{raised.json()['id']}/accept", json={}, headers=civil)
    assert accepted.status_code == 200, accepted.text
    changes, cursor, _ = await pull_all(client, tablet, cursor)
    (claimed,) = upserts(changes, "subsidy")[three].grants
    assert (claimed.category, claimed.source, claimed.coverage_year, str(claimed.claim_id)) == (
        "te_kun",
        "claim",
        YEAR,
        raised.json()["id"],
    )
    assert upserts(changes, "subsidy")[three].categories_on(TODAY, YEAR + 1) == []

    # A same-day replacement of the newest version shadows it: [2] loses di_bao, [3] gains it.
    await load(client, "di_bao", f"{ID_NUMBERS[3]},丙,,", effective_from=str(switch))
    changes, cursor, _ = await pull_all(client, tablet, cursor)
    assert tombstones(changes, "subsidy") == {two}
    assert upserts(changes, "subsidy")[three].categories_on(switch, YEAR) == ["di_bao", "te_kun"]
    # An identity number corrected to one that no list or claim names: the person's row goes.
    await conn.execute(
        "UPDATE persons SET id_number_hash = $2, id_number_enc = $3 WHERE id = $1",
        three,
        *sealed_set("id_number", ID_NUMBERS[7]),
    )
    changes, _, _ = await pull_all(client, tablet, cursor)
    assert tombstones(changes, "subsidy") == {three}


async def test_a_subsidised_person_who_moves_to_another_township_goes_with_their_row(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2))
    await push(client, tablet, [ours])
    tablet_b = await world(client, "staff_b", publish=False)
    target = household_create(tablet_b, numbers=(6,), household_no="0201", village_code=B_VILLAGE)
    await push(client, tablet_b, [target])
    await load(client, "di_bao", f"{ID_NUMBERS[2]},乙,,")
    _, cursor_a, _ = await pull_all(client, tablet)
    _, cursor_b, _ = await pull_all(client, tablet_b)
    spouse = person_of(ours, ID_NUMBERS[2])

    moved = await client.post(
        f"/api/v1/households/{ours.household_id}/members/{spouse}/move",
        json={"to_household_id": str(target.household_id), "relation": "spouse"},
        headers={**await auth_headers(client, "staff_a"), "If-Match": '"1"'},
    )
    assert moved.status_code == 200, moved.text
    accepted = await client.post(
        f"/api/v1/moves/{moved.json()['id']}/accept", json={}, headers=await auth_headers(client, "staff_b")
    )
    assert accepted.status_code == 200, accepted.text

    a_changes, _, _ = await pull_all(client, tablet, cursor_a)
    assert tombstones(a_changes, "subsidy") == {spouse}
    b_changes, _, _ = await pull_all(client, tablet_b, cursor_b)
    assert upserts(b_changes, "subsidy")[spouse].household_id == target.household_id


async def test_the_subsidy_a_tablet_computes_offline_is_the_one_the_server_records(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2, 3))
    await push(client, tablet, [ours])
    await load(client, "di_bao", f"{ID_NUMBERS[1]},甲,,")
    await load(client, "te_kun", f"{ID_NUMBERS[2]},乙,,")
    snapshot, cursor, _ = await pull_all(client, tablet)
    (policy,) = upserts(snapshot, "policy_version").values()
    rules = policy.rules  # typed on the wire: the same Struct the rules take
    pricing = SubsidyPolicy(
        premium_fen=policy.premium_fen,
        categories=rules.categories,
        categories_stack=rules.categories_stack,
        top_ups=rules.top_ups,
    )
    held = upserts(snapshot, "subsidy")
    # The server prices on its local date; the tablet on its own: either day gives the same here.
    today = TODAY + DAY
    offline = {
        x.person_id: premium_due(pricing, held[x.person_id].categories_on(today, 2026) if x.person_id in held else [])
        for x in ours.members
    }
    await push(client, tablet, [enrol(tablet, ours)])
    changes, _, _ = await pull_all(client, tablet, cursor)
    enrolled = {e.person_id: e.subsidy_fen for e in upserts(changes, "enrollment").values()}
    assert enrolled == {p: due.subsidy_fen for p, due in offline.items()}
    assert sorted(enrolled.values()) == [0, 20000, 40000]
