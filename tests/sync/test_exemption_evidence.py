"""Pull: the evidence that can exempt the township's people from the waiting period (issue 17 point 1)
travels on their `subsidy` rows — in the snapshot and again when a list version or a claim changes;
never another township's people — and the tablet's offline rule reads it to the cover the server
gives the payment (`exemption_for` over `SubsidyRow.evidence_on`, then `coverage_for`)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from mobile_sync_protocol import messages as m
from mobile_sync_protocol.rules.coverage import EnrolmentWindow, ExemptionEvidence, coverage_for
from mobile_sync_protocol.rules.exemptions import exemption_for
from tests.conftest import NOW, TODAY, auth_headers
from tests.eligibility.test_check import csv
from tests.factories import ID_NUMBERS, POLICY_2026, publish_policy
from tests.sync.test_subsidies import B_VILLAGE, load, person_of
from tests.sync_world import Client, household_create, pull_all, push, tombstones, upserts, world

# Cover is decided on the server's local date: the suite's pinned day, 2 December 2026 (NOW, TODAY).
YEAR = 2026
SOLDIERS = ["newborn", "newly_recognised_assistance", "left_employee_insurance", "discharged_soldier"]


async def publish_this_year(client: Client) -> None:
    """This year's policy (its window closed last 31 December), naming discharged soldiers."""
    rules = {**POLICY_2026["rules"], "waiting": {"exempt_groups": SOLDIERS}}
    await publish_policy(
        client,
        await auth_headers(client, "admin"),
        year=YEAR,
        effective_from=f"{YEAR - 1}-09-01",
        window_start=f"{YEAR - 1}-09-01",
        window_end=f"{YEAR - 1}-12-31",
        rules=rules,
    )


def enrol_this_year(tablet: Any, created: m.HouseholdCreate) -> m.EnrollmentCreate:
    return m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        coverage_year=YEAR,
        person_ids=[x.person_id for x in created.members],
    )


async def test_a_veteran_list_reaches_the_townships_tablets_and_no_other(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2))
    await push(client, tablet, [ours])
    tablet_b = await world(client, "staff_b", publish=False)
    theirs = household_create(tablet_b, numbers=(6,), household_no="0201", village_code=B_VILLAGE)
    await push(client, tablet_b, [theirs])
    _, cursor_a, _ = await pull_all(client, tablet)
    _, cursor_b, _ = await pull_all(client, tablet_b)

    # 退役军人 from the veterans' affairs office: [1] in township A, [6] in B, [9] registered nowhere.
    veterans = await load(
        client,
        "tuiyi_junren",
        f"{ID_NUMBERS[1]},甲,2026-06-20,",
        f"{ID_NUMBERS[6]},乙,2026-03-01,",
        f"{ID_NUMBERS[9]},丙,2026-01-10,",
        effective_from="2026-06-25",
    )
    veteran = person_of(ours, ID_NUMBERS[1])
    expected = m.HeldEvidence(
        source="list",
        list_type="tuiyi_junren",
        valid_from=date(2026, 6, 20),
        list_id=uuid.UUID(veterans["id"]),
        version=1,
        row=2,
        in_force_from=date(2026, 6, 25),
    )
    changes, cursor_a, _ = await pull_all(client, tablet, cursor_a)
    (row,) = upserts(changes, "subsidy").values()
    assert (row.id, row.person_id, row.household_id, row.grants) == (veteran, veteran, ours.household_id, [])
    assert row.evidence == [expected]
    # A fresh snapshot holds the same row; the other member, on no list, has none.
    whole, _, _ = await pull_all(client, tablet)
    assert upserts(whole, "subsidy") == {veteran: row}
    # Read as the server reads it: the version is in force from 25 June, the row's own dates are the rule's.
    assert row.evidence_on(date(2026, 6, 24), 2026) == []
    assert row.evidence_on(date(2026, 7, 10), 2026) == [
        ExemptionEvidence(
            source="list",
            list_type="tuiyi_junren",
            valid_from=date(2026, 6, 20),
            list_id=uuid.UUID(veterans["id"]),
            version=1,
            row=2,
        )
    ]
    # Township B's tablet gets its own veteran only, never township A's.
    b_changes, _, _ = await pull_all(client, tablet_b, cursor_b)
    assert set(upserts(b_changes, "subsidy")) == {theirs.members[0].person_id}
    b_whole, _, _ = await pull_all(client, tablet_b)
    assert set(upserts(b_whole, "subsidy")) == {theirs.members[0].person_id}

    # A newer version that leaves [1] out in 30 days cuts his row's window; one from 25 June (the
    # same day) shadows version 1 altogether: his row goes. (A window that closed more than 90 days
    # ago is left out like an old subsidy grant.)
    switch = date(2027, 1, 1)  # TODAY + 30 days
    await load(client, "tuiyi_junren", f"{ID_NUMBERS[6]},乙,2026-03-01,", effective_from=str(switch))
    changes, cursor_a, _ = await pull_all(client, tablet, cursor_a)
    (cut,) = upserts(changes, "subsidy")[veteran].evidence
    assert (cut.in_force_from, cut.in_force_to) == (date(2026, 6, 25), date(2026, 12, 31))
    assert upserts(changes, "subsidy")[veteran].evidence_on(switch, 2026) == []
    shadowing = await client.post(
        "/api/v1/eligibility/lists",
        files={"file": ("list.csv", csv(f"{ID_NUMBERS[6]},乙,2026-03-01,"))},
        data={"type": "tuiyi_junren", "effective_from": "2026-06-25", "supersedes": "true"},
        headers=await auth_headers(client, "civil"),
    )
    assert shadowing.status_code == 201, shadowing.text
    changes, cursor_a, _ = await pull_all(client, tablet, cursor_a)
    assert tombstones(changes, "subsidy") == {veteran}


async def test_an_accepted_exemption_claim_travels_with_the_dates_of_its_proof(client: Client) -> None:
    tablet = await world(client)
    ours = household_create(tablet, numbers=(1, 2))
    await push(client, tablet, [ours])
    _, cursor, _ = await pull_all(client, tablet)
    leaver = person_of(ours, ID_NUMBERS[2])
    raised = await client.post(
        "/api/v1/eligibility/claims",
        headers=await auth_headers(client, "staff_a"),
        json={
            "person_id": str(leaver),
            "coverage_year": YEAR,
            "category": "employee_insurance_ended",
            "valid_from": "2019-03-01",
            "valid_to": str(TODAY - timedelta(days=20)),
        },
    )
    assert raised.status_code == 201, raised.text
    pending, cursor, _ = await pull_all(client, tablet, cursor)
    assert upserts(pending, "subsidy") == {}
    accepted = await client.post(
        f"/api/v1/eligibility/claims/{raised.json()['id']}/accept", json={}, headers=await auth_headers(client, "civil")
    )
    assert accepted.status_code == 200, accepted.text
    changes, _, _ = await pull_all(client, tablet, cursor)
    row = upserts(changes, "subsidy")[leaver]
    assert row.grants == []  # an exemption claim gives no subsidy category
    claim = ExemptionEvidence(
        source="claim",
        list_type="employee_insurance_ended",
        valid_from=date(2019, 3, 1),
        valid_to=TODAY - timedelta(days=20),
        claim_id=uuid.UUID(raised.json()["id"]),
    )
    assert row.evidence_on(TODAY, YEAR) == [claim]
    assert row.evidence_on(TODAY, YEAR + 1) == []  # accepted for this year only


async def test_the_cover_a_tablet_computes_offline_with_the_pulled_evidence_is_the_one_the_server_gives(
    client: Client,
) -> None:
    tablet = await world(client, publish=False)
    await publish_this_year(client)
    # [1] was discharged this year; [2] is on no list; [3]'s employee insurance ended 20 days ago
    # after years, shown by the 职工医保停保 list.
    ours = household_create(tablet, numbers=(1, 2, 3))
    await push(client, tablet, [ours])
    await push(client, tablet, [enrol_this_year(tablet, ours)])
    await load(client, "tuiyi_junren", f"{ID_NUMBERS[1]},甲,{YEAR}-01-01,", effective_from=f"{YEAR}-01-01")
    ended = TODAY - timedelta(days=20)
    await load(client, "employee_insurance_ended", f"{ID_NUMBERS[3]},丙,2015-07-01,{ended}", effective_from=str(ended))
    snapshot, cursor, _ = await pull_all(client, tablet)

    # Offline, as PROTOCOL.md §4 says: the policy in force, the person's evidence on the day, the rule.
    (policy,) = upserts(snapshot, "policy_version").values()
    waiting = policy.rules.waiting
    held = upserts(snapshot, "subsidy")
    people = upserts(snapshot, "person")
    offline = {}
    for x in ours.members:
        evidence = held[x.person_id].evidence_on(TODAY, YEAR) if x.person_id in held else []
        exempt = exemption_for(waiting, evidence, coverage_year=YEAR, business_date=TODAY)
        offline[x.person_id] = coverage_for(
            coverage_year=YEAR,
            business_date=TODAY,
            window=EnrolmentWindow(start=policy.window_start, end=policy.window_end),
            policy=waiting,
            exemption=None if exempt is None else exempt.group,
            evidence=None if exempt is None else exempt.evidence,
            birth_date=people[x.person_id].birth_date,
            extended=policy.rules.extended_payment,
        )
    veteran, other, leaver = (x.person_id for x in ours.members)
    assert (offline[veteran].start, offline[veteran].reason_code) == (TODAY, "exempt")
    assert (offline[leaver].start, offline[leaver].reason_code) == (TODAY, "exempt")
    # Three months' wait from 2 December ends in 2027: no cover this year.
    assert (offline[other].start, offline[other].reason_code) == (None, "no_cover_this_year")

    # The tablet takes the money today; the server decides the cover from what it holds.
    paid = m.PaymentRecord(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        payment_id=uuid.uuid4(),
        household_id=ours.household_id,
        coverage_year=YEAR,
        person_ids=[x.person_id for x in ours.members],
        amount_fen=3 * 40000,
        method="cash",
        receipt_no="T00000001",
        collected_at=NOW,
        acknowledge_no_cover=True,  # the resident was told about [2]
    )
    (answer,) = (await push(client, tablet, [paid])).answers
    assert answer.status == "applied", answer
    changes, _, _ = await pull_all(client, tablet, cursor)
    server = {e.person_id: e for e in upserts(changes, "enrollment").values()}
    assert {p: (e.coverage_start, e.coverage_end) for p, e in server.items()} == {
        p: (c.start, c.end) for p, c in offline.items()
    }
    reviewer = await auth_headers(client, "reviewer_a")
    for person, enrolment in server.items():
        got = await client.get(f"/api/v1/enrollments/{enrolment.id}", headers=reviewer)
        assert got.status_code == 200, got.text
        assert got.json()["coverage_reason"] == offline[person].reason_code
