"""Households and members: atomic creation, identity rules, one current household per person,
optimistic concurrency, search with identity numbers in the body, moves that keep history."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.enrollment import households
from backend.enrollment.households import HouseholdCreate, MemberIn
from tests.conftest import JWT_SECRET, auth_headers
from tests.factories import ID_NUMBERS, create_household, insert_person, member, publish_policy
from tests.premiums.test_payments import actor_of

Client = AsyncTestClient[Litestar]


def if_match(household: dict[str, Any]) -> dict[str, str]:
    return {"If-Match": f'"{household["row_version"]}"'}


async def test_household_is_created_with_its_members_and_an_etag(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff,
        json={
            "village_code": "330106001001",
            "household_no": "0001",
            "address": "北山路 1 号",
            "members": [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse", phone="13800000000")],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["etag"] == '"1"'
    assert [(m["relation"], m["id_number"], m["sex"], m["birth_date"]) for m in body["members"]] == [
        ("head", "110105198001010016", "male", "1980-01-01"),
        ("spouse", "110105198202020026", "female", "1982-02-02"),
    ]
    assert body["head_person_id"] == body["members"][0]["person_id"]
    audit = await conn.fetchrow("SELECT action, division_code, summary FROM audit_log WHERE entity = 'household'")
    assert (audit["action"], audit["division_code"], audit["summary"]["members"]) == ("create", "330106001001", 2)


async def test_one_bad_member_writes_nothing_and_names_the_field(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff,
        json={
            "village_code": "330106001001",
            "household_no": "0001",
            "members": [member(ID_NUMBERS[1], "张三"), member("110105198202020027", "李四", "spouse")],
        },
    )
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "members[1].id_number"
    assert body["reason"] == "bad_checksum"
    assert "110105198202020027" not in response.text
    assert await conn.fetchval("SELECT count(*) FROM households") == 0
    assert await conn.fetchval("SELECT count(*) FROM persons") == 0


@pytest.mark.parametrize(
    ("entered", "field", "reason"),
    [
        ({"id_number": "4.40524188001E+17"}, "id_number", "scientific_notation"),
        ({"id_number": "11010519800101001"}, "id_number", "bad_length"),
        ({"id_number": "110105198013010013"}, "id_number", "bad_birth_date"),
        ({"id_number": ID_NUMBERS[1], "birth_date": "1980-01-02"}, "birth_date", "birth_date_mismatch"),
        ({"id_number": ID_NUMBERS[1], "sex": "female"}, "sex", "sex_mismatch"),
        ({"birth_cert_no": "O12345678"}, "birth_cert_no", "bad_length"),
        ({"birth_cert_no": "O123456789"}, "birth_date", None),
    ],
)
async def test_identity_rules_name_the_field(
    client: Client, entered: dict[str, Any], field: str, reason: str | None
) -> None:
    staff = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff,
        json={
            "village_code": "330106001001",
            "household_no": "9",
            "members": [{"name": "王五", "relation": "head", **entered}],
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == f"members[0].{field}"
    assert response.json().get("reason") == reason


async def test_full_width_and_15_digit_numbers_are_normalised(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client,
        staff,
        [
            member("１１０１０５１９４９１２３１００２ｘ", "赵一"),  # full-width digits and a small x
            member("110105800101001", "赵二", "child"),  # first-generation, 15 digits
        ],
    )
    numbers = [(m["id_number"], m["id_converted_from_15"]) for m in household["members"]]
    assert numbers == [("11010519491231002X", False), ("110105198001010016", True)]


async def test_newborn_is_registered_with_a_birth_certificate_and_completed_later(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client,
        staff,
        [
            member(ID_NUMBERS[1], "张三"),
            {
                "name": "张宝宝",
                "relation": "child",
                "birth_cert_no": "o123456789",
                "birth_date": "2024-06-01",
                "sex": "male",
            },
        ],
    )
    baby = household["members"][1]
    assert (baby["id_number"], baby["birth_cert_no"]) == (None, "O123456789")
    response = await client.patch(
        f"/api/v1/households/{household['id']}/members/{baby['person_id']}",
        json={"id_number": "330106202406010010"},
        headers={**staff, **if_match(household)},
    )
    assert response.status_code == 200, response.text
    completed = response.json()["members"][1]
    assert (completed["id_number"], completed["birth_cert_no"]) == ("330106202406010010", "O123456789")
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize(
    ("recorded", "reason"),
    [
        ({"birth_date": "2024-06-02", "sex": "male"}, "birth_date_mismatch"),
        ({"birth_date": "2024-06-01", "sex": "female"}, "sex_mismatch"),
    ],
)
async def test_a_newborns_number_must_agree_with_the_birth_date_and_sex_on_record(
    client: Client, recorded: dict[str, str], reason: str
) -> None:
    """The number alone (no birth date or sex sent with it) is checked against what the clerk
    entered at registration; sent with the corrected values, it is accepted and corrects them."""
    staff = await auth_headers(client, "staff_a")
    baby = {"name": "张宝宝", "relation": "child", "birth_cert_no": "O123456789", **recorded}
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三"), baby])
    person = household["members"][1]["person_id"]
    url = f"/api/v1/households/{household['id']}/members/{person}"
    chinese = {**staff, **if_match(household), "Accept-Language": "zh-CN"}
    response = await client.patch(url, json={"id_number": "330106202406010010"}, headers=chinese)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["id_number"]
    assert response.json()["reason"] == reason
    what = {"birth_date_mismatch": "出生日期", "sex_mismatch": "性别"}[reason]
    assert response.json()["errors"][0]["message"].startswith(f"与登记的{what}不一致")
    kept = (await client.get(f"/api/v1/households/{household['id']}", headers=staff)).json()["members"][1]
    assert (kept["id_number"], kept["birth_date"], kept["sex"]) == (None, recorded["birth_date"], recorded["sex"])
    corrected = {"id_number": "330106202406010010", "birth_date": "2024-06-01", "sex": "male"}
    response = await client.patch(url, json=corrected, headers={**staff, **if_match(household)})
    assert response.status_code == 200, response.text
    done = response.json()["members"][1]
    assert (done["id_number"], done["birth_date"], done["sex"]) == ("330106202406010010", "2024-06-01", "male")


async def test_completing_a_newborn_with_a_number_of_another_birth_date_is_refused(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client,
        staff,
        [
            member(ID_NUMBERS[1], "张三"),
            {
                "name": "张宝宝",
                "relation": "child",
                "birth_cert_no": "O123456789",
                "birth_date": "2024-06-02",
                "sex": "male",
            },
        ],
    )
    baby = household["members"][1]
    response = await client.patch(
        f"/api/v1/households/{household['id']}/members/{baby['person_id']}",
        json={"id_number": "330106202406010010", "birth_date": "2024-06-02"},
        headers={**staff, **if_match(household)},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "birth_date"


async def test_person_in_another_household_is_a_409_that_names_it_only_within_scope(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    staff_b = await auth_headers(client, "staff_b")
    first = await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    same_township = await client.post(
        "/api/v1/households",
        headers=staff_a,
        json={"village_code": "330106001002", "household_no": "7", "members": [member(ID_NUMBERS[1], "张三")]},
    )
    assert same_township.status_code == 409
    assert same_township.json()["code"] == "person_already_registered"
    assert same_township.json()["conflicts"] == [{"field": "members[0].id_number", "household_id": first["id"]}]
    other_township = await client.post(
        "/api/v1/households",
        headers=staff_b,
        json={"village_code": "330106002201", "household_no": "7", "members": [member(ID_NUMBERS[1], "张三")]},
    )
    assert other_township.status_code == 409
    assert other_township.json()["conflicts"] == [{"field": "members[0].id_number"}]
    assert first["id"] not in other_township.text


async def test_database_keeps_one_current_household_per_person(conn: asyncpg.Connection, seeded: None) -> None:  # type: ignore[type-arg]
    person = await insert_person(conn, ID_NUMBERS[1], "张三")
    homes = [
        await conn.fetchval(
            "INSERT INTO households (id, village_code, household_no) VALUES (gen_random_uuid(), '330106001001', $1) "
            "RETURNING id",
            str(n),
        )
        for n in (1, 2)
    ]
    await conn.execute(
        "INSERT INTO memberships (id, person_id, household_id, relation) VALUES (gen_random_uuid(), $1, $2, 'head')",
        person,
        homes[0],
    )
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        await conn.execute(
            "INSERT INTO memberships (id, person_id, household_id, relation) "
            "VALUES (gen_random_uuid(), $1, $2, 'head')",
            person,
            homes[1],
        )
    assert caught.value.constraint_name == "memberships_one_current_household"


async def test_village_outside_scope_is_refused(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff_a,
        json={"village_code": "330106002201", "household_no": "1", "members": [member(ID_NUMBERS[1], "张三")]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "village_code"


async def test_exactly_one_head(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff_a,
        json={
            "village_code": "330106001001",
            "household_no": "1",
            "members": [member(ID_NUMBERS[1], "张三", "spouse")],
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "members"


async def test_stale_if_match_gets_412_and_missing_gets_428(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    url = f"/api/v1/households/{household['id']}"
    first = await client.patch(url, json={"address": "新地址 1"}, headers={**staff, **if_match(household)})
    assert first.status_code == 200
    assert first.headers["etag"] == '"2"'
    stale = await client.patch(url, json={"address": "新地址 2"}, headers={**staff, **if_match(household)})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 2
    missing = await client.patch(url, json={"address": "新地址 3"}, headers=staff)
    assert missing.status_code == 428
    current = await client.get(url, headers=staff)
    assert current.json()["address"] == "新地址 1"


async def test_search_takes_the_identity_number_in_the_body_and_pages(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    homes = [
        await create_household(client, staff, [member(n, f"张{i}")], household_no=str(i))
        for i, n in enumerate(ID_NUMBERS[1:5])
    ]
    by_id = await client.post("/api/v1/households/search", json={"id_number": ID_NUMBERS[2]}, headers=staff)
    assert [h["id"] for h in by_id.json()["items"]] == [homes[1]["id"]]
    by_no = await client.post("/api/v1/households/search", json={"household_no": "3"}, headers=staff)
    assert [h["id"] for h in by_no.json()["items"]] == [homes[3]["id"]]
    by_name = await client.post("/api/v1/households/search", json={"head_name": "张2"}, headers=staff)
    assert [h["head_name"] for h in by_name.json()["items"]] == ["张2"]
    page1 = await client.post("/api/v1/households/search", json={"limit": 3}, headers=staff)
    page2 = await client.post(
        "/api/v1/households/search", json={"limit": 3, "after": page1.json()["next_cursor"]}, headers=staff
    )
    ids = [h["id"] for h in page1.json()["items"] + page2.json()["items"]]
    assert sorted(ids) == sorted(h["id"] for h in homes)
    assert page2.json()["next_cursor"] is None
    # A number and a household number it does not live under: nothing answered, and the audit row
    # still names whom the number found.
    elsewhere = await client.post(
        "/api/v1/households/search", json={"id_number": ID_NUMBERS[2], "household_no": "3"}, headers=staff
    )
    assert elsewhere.json() == {"items": [], "next_cursor": None}
    rows = await conn.fetch("SELECT summary FROM audit_log WHERE action = 'search' ORDER BY id")
    summaries = [r["summary"] for r in rows]
    person = homes[1]["members"][0]["person_id"]  # whom it found, by id (tests/access/test_audit_whom.py)
    assert summaries == [
        {"criteria": ["id_number"], "results": 1, "person_ids": [person]},
        {"criteria": ["household_no"], "results": 1},
        {"criteria": ["head_name"], "results": 1},
        {"criteria": [], "results": 3},  # a page: what it answered, not the one more read to see a next page
        {"criteria": [], "results": 1},
        {"criteria": ["household_no", "id_number"], "results": 0, "person_ids": [person]},
    ]
    assert ID_NUMBERS[2] not in str(summaries)


async def test_a_search_whose_audit_row_fails_answers_nothing(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    # The API's search runs outside a transaction, its read and its audit row one statement
    # (search.sql): a row the audit trail refuses takes the answer with it.
    staff = await auth_headers(client, "staff_a")
    home = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")], household_no="SEARCH-NO-HIT")
    await conn.execute(
        """CREATE FUNCTION refuse_search_audit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'the audit trail refuses this row'; END $$;
           CREATE TRIGGER refuse_search_audit BEFORE INSERT ON audit_log
           FOR EACH ROW WHEN (NEW.action = 'search') EXECUTE FUNCTION refuse_search_audit()"""
    )
    refused = await client.post("/api/v1/households/search", json={"id_number": ID_NUMBERS[1]}, headers=staff)
    assert refused.status_code >= 500
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert home["id"] not in refused.text and "张三" not in refused.text and home["household_no"] not in refused.text
    await conn.execute("DROP TRIGGER refuse_search_audit ON audit_log")
    found = await client.post("/api/v1/households/search", json={"id_number": ID_NUMBERS[1]}, headers=staff)
    assert [h["id"] for h in found.json()["items"]] == [home["id"]]
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'search'") == 1


async def test_reading_a_household_is_audited(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    await client.get(f"/api/v1/households/{household['id']}", headers=staff)
    reads = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'read' AND entity_id = $1", household["id"]
    )
    assert reads == 1


async def test_move_within_a_township_is_immediate_and_keeps_history(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    source = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    target = await create_household(client, staff, [member(ID_NUMBERS[3], "王五")], village_code="330106001201")
    person = source["members"][1]["person_id"]
    moved = await client.post(
        f"/api/v1/households/{source['id']}/members/{person}/move",
        json={"to_household_id": target["id"], "relation": "spouse"},
        headers={**staff, **if_match(source)},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "accepted"
    after = await client.get(f"/api/v1/households/{target['id']}", headers=staff)
    assert [m["person_id"] for m in after.json()["members"]] == [target["members"][0]["person_id"], person]
    history = await conn.fetch(
        "SELECT household_id, left_reason FROM memberships WHERE person_id = $1 ORDER BY joined_at", person
    )
    assert [(str(h["household_id"]), h["left_reason"]) for h in history] == [
        (source["id"], "moved"),
        (target["id"], None),
    ]


async def test_move_to_another_township_waits_for_the_receiver(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    staff_b = await auth_headers(client, "staff_b")
    source = await create_household(
        client, staff_a, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    target = await create_household(client, staff_b, [member(ID_NUMBERS[3], "王五")], village_code="330106002201")
    person = source["members"][1]["person_id"]
    requested = await client.post(
        f"/api/v1/households/{source['id']}/members/{person}/move",
        json={"to_household_id": target["id"], "relation": "spouse"},
        headers={**staff_a, **if_match(source)},
    )
    assert requested.json()["status"] == "pending"
    still_here = await client.get(f"/api/v1/households/{source['id']}", headers=staff_a)
    assert len(still_here.json()["members"]) == 2
    # The sender cannot decide; the receiver can.
    move_id = requested.json()["id"]
    by_sender = await client.post(f"/api/v1/moves/{move_id}/accept", json={}, headers=staff_a)
    assert by_sender.status_code == 400
    incoming = await client.get("/api/v1/moves", params={"status": "pending"}, headers=staff_b)
    assert [m["id"] for m in incoming.json()["items"]] == [move_id]
    accepted = await client.post(f"/api/v1/moves/{move_id}/accept", json={}, headers=staff_b)
    assert accepted.json()["status"] == "accepted"
    arrived = await client.get(f"/api/v1/households/{target['id']}", headers=staff_b)
    assert person in [m["person_id"] for m in arrived.json()["members"]]
    gone = await client.get(f"/api/v1/households/{source['id']}", headers=staff_a)
    assert person not in [m["person_id"] for m in gone.json()["members"]]
    again = await client.post(f"/api/v1/moves/{move_id}/reject", json={}, headers=staff_b)
    assert again.status_code == 409


async def test_removed_member_can_be_registered_again_elsewhere(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    person = household["members"][1]["person_id"]
    removed = await client.post(
        f"/api/v1/households/{household['id']}/members/{person}/remove",
        json={"reason": "data_error"},
        headers={**staff, **if_match(household)},
    )
    assert removed.status_code == 200
    again = await create_household(client, staff, [member(ID_NUMBERS[2], "李四")], household_no="0002")
    assert again["members"][0]["person_id"] == person


async def test_head_changes_hands_explicitly(client: Client) -> None:
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    spouse = household["members"][1]["person_id"]
    url = f"/api/v1/households/{household['id']}/members/{spouse}"
    without = await client.patch(url, json={"relation": "head"}, headers={**staff, **if_match(household)})
    assert without.status_code == 422
    assert without.json()["errors"][0]["field"] == "former_head_relation"
    changed = await client.patch(
        url, json={"relation": "head", "former_head_relation": "spouse"}, headers={**staff, **if_match(household)}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["head_person_id"] == spouse
    assert [(m["person_id"], m["relation"]) for m in changed.json()["members"]] == [
        (spouse, "head"),
        (household["members"][0]["person_id"], "spouse"),
    ]


@pytest.mark.parametrize("name", ["   ", "张\x00三"])
async def test_blank_or_nul_names_are_refused_not_a_500(client: Client, name: str) -> None:
    staff = await auth_headers(client, "staff_a")
    response = await client.post(
        "/api/v1/households",
        headers=staff,
        json={"village_code": "330106001001", "household_no": "1", "members": [member(ID_NUMBERS[1], name)]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "members[0].name"


async def test_household_edit_audit_names_fields_not_values(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    await client.patch(
        f"/api/v1/households/{household['id']}",
        json={"phone": "13800138000", "address": "北山路 9 号"},
        headers={**staff, **if_match(household)},
    )
    summary = await conn.fetchval("SELECT summary FROM audit_log WHERE action = 'update' AND entity = 'household'")
    assert summary == {"changed": ["address", "phone"]}


async def test_every_write_answers_the_household_as_it_is_read_back(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """Writes answer from the statement that wrote (reused persons as stored, members in order,
    the new ETag); each answer is the household a read gives right after, and each write is audited."""
    staff = await auth_headers(client, "staff_a")
    earlier = await create_household(client, staff, [member(ID_NUMBERS[3], "王五")], household_no="0009")
    gone = await client.post(
        f"/api/v1/households/{earlier['id']}/members/{earlier['members'][0]['person_id']}/remove",
        json={"reason": "removed"},
        headers={**staff, **if_match(earlier)},
    )
    assert gone.status_code == 200, gone.text
    assert (gone.json()["members"], gone.json()["status"]) == ([], "dissolved")

    async def same_as_read(response: Any, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.text
        read = await client.get(f"/api/v1/households/{response.json()['id']}", headers=staff)
        assert (response.json(), response.headers["etag"]) == (read.json(), read.headers["etag"])
        body: dict[str, Any] = response.json()
        return body

    created = await same_as_read(
        await client.post(
            "/api/v1/households",
            headers=staff,
            json={
                "village_code": "330106001001",
                "household_no": "0001",
                "address": "北山路 1 号",
                "members": [
                    member(ID_NUMBERS[2], "李四", "spouse", phone="13800000000"),
                    member(ID_NUMBERS[1], "张三"),
                    member(ID_NUMBERS[3], "王五改", "child"),
                ],
            },
        ),
        201,
    )
    # The head first; 王五 was reused as stored (a person in no household keeps their record).
    assert [(m["relation"], m["name"]) for m in created["members"]] == [
        ("head", "张三"),
        ("spouse", "李四"),
        ("child", "王五"),
    ]
    url = f"/api/v1/households/{created['id']}"
    added = await same_as_read(
        await client.post(
            f"{url}/members", json=member(ID_NUMBERS[4], "赵六", "child"), headers={**staff, **if_match(created)}
        ),
        201,
    )
    edited = await same_as_read(
        await client.patch(
            f"{url}/members/{added['members'][3]['person_id']}",
            json={"phone": "13900000000"},
            headers={**staff, **if_match(added)},
        )
    )
    renamed = await same_as_read(
        await client.patch(url, json={"address": "南山路 2 号"}, headers={**staff, **if_match(edited)})
    )
    left = await same_as_read(
        await client.post(
            f"{url}/members/{renamed['members'][2]['person_id']}/remove",
            json={"reason": "removed"},
            headers={**staff, **if_match(renamed)},
        )
    )
    assert [h["row_version"] for h in (created, added, edited, renamed, left)] == [1, 2, 3, 4, 5]
    audited = await conn.fetch(
        "SELECT action, division_code FROM audit_log WHERE entity = 'household' AND entity_id = $1 "
        "AND action <> 'read' ORDER BY id",
        created["id"],
    )
    assert [(r["action"], r["division_code"]) for r in audited] == [
        (action, "330106001001") for action in ("create", "add_member", "update_member", "update", "remove_member")
    ]


async def test_a_household_registered_and_enrolled_at_the_door_is_five_statements(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    """New people: the village and whoever is known already, the household with its persons and
    memberships, the household for the enrolment, the enrolments with the query code, and the
    members' continuity with the policy in force (one read for both). They are planned
    generically until the transaction ends; the connection is as it was after it."""
    await publish_policy(client, await auth_headers(client, "admin"))
    actor, today = await actor_of(conn, "staff_a"), date(2025, 10, 8)

    async def register(household_no: str, numbers: list[str]) -> households.HouseholdCreated:
        heads = ["head"] + ["child"] * (len(numbers) - 1)
        members = [MemberIn(name="张三", relation=r, id_number=n) for r, n in zip(heads, numbers, strict=True)]
        data = HouseholdCreate(village_code="330106001001", household_no=household_no, members=members, enrol_year=2026)
        created = await households.register_household(conn, actor, data, today, JWT_SECRET.encode())
        return await households.with_continuity(conn, created, today)

    async with conn.transaction():  # (asyncpg reads the types of the statements' columns once)
        await register("0002", [ID_NUMBERS[3]])
    statements: list[str] = []
    conn.add_query_logger(lambda q: statements.append(q.query))
    async with conn.transaction():
        created = await register("0001", [ID_NUMBERS[1], ID_NUMBERS[2]])
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    await asyncio.sleep(0)  # (asyncpg calls query loggers soon after, not at once)
    written = statements[1 : statements.index("SHOW plan_cache_mode")]  # between BEGIN and the SHOW
    assert [m.enrollment.status for m in created.members if m.enrollment] == ["registered", "registered"]
    assert created.query_code and all(m.continuity is not None for m in created.members)
    assert len(written) == 5, written
    assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
    # The first statement comes before the transaction's generic plans: its lookup is the function
    # of migration 0033, which plans it generically on its own (once per connection).
    assert "village_and_people_by_identity(" in written[0]
    config = "SELECT proconfig FROM pg_proc WHERE proname = 'village_and_people_by_identity'"
    assert await conn.fetchval(config) == ["plan_cache_mode=force_generic_plan"]
