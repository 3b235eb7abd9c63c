"""The eligibility check: categories with their source, precedence, stacking, cap, rounding,
exclusions, validity dates, and what eligibility does to enrolment and the premium quote."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, POLICY_2026, create_household, member, publish_policy


def csv(*rows: str, header: str = "身份证号,姓名,有效期起,有效期止") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def heads(client: AsyncTestClient[Litestar], *users: str) -> list[dict[str, str]]:
    return [await auth_headers(client, u) for u in users]


async def enrol(
    client: AsyncTestClient[Litestar], headers: dict[str, str], household: dict[str, Any], person_ids: list[str]
) -> Any:
    body = {"household_id": household["id"], "coverage_year": 2026, "person_ids": person_ids}
    return await client.post("/api/v1/enrollments", json=body, headers=headers)


async def check(
    client: AsyncTestClient[Litestar], headers: dict[str, str], ids: list[str], as_of: str = "2025-10-01"
) -> Any:
    response = await client.post(
        "/api/v1/eligibility/check", json={"id_numbers": ids, "coverage_year": 2026, "as_of": as_of}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_most_favourable_category_wins_and_every_answer_names_its_list_row(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin)  # te_kun full, di_bao 50 %, not stacking
    te_kun = (await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="te_kun")).json()
    di_bao = (
        await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四,,", f"{ID_NUMBERS[1]},张三,,"), list_type="di_bao")
    ).json()
    body = await check(client, staff_a, [ID_NUMBERS[1], ID_NUMBERS[2], ID_NUMBERS[3], "4.40524188001E+17"])
    assert (body["coverage_year"], body["as_of"], body["policy_version"]) == (2026, "2025-10-01", 1)
    first, second, third, fourth = body["items"]
    assert (first["may_enrol"], first["premium_fen"], first["subsidy_fen"], first["due_fen"]) == (True, 40000, 40000, 0)
    assert first["chosen_categories"] == ["te_kun"]
    sources = [
        (c["category"], c["source"]["list_id"], c["source"]["version"], c["source"]["row"]) for c in first["categories"]
    ]
    assert sources == [("di_bao", di_bao["id"], 1, 3), ("te_kun", te_kun["id"], 1, 2)]
    assert first["explanation"] == [
        "di_bao: list di_bao version 1 row 3",
        "te_kun: list te_kun version 1 row 2",
        "subsidy 40000 fen from category te_kun",
        "di_bao not applied: a more favourable category won",
        "due 0 fen of a premium of 40000 fen",
    ]
    assert (second["subsidy_fen"], second["due_fen"], second["chosen_categories"]) == (20000, 20000, ["di_bao"])
    assert (third["categories"], third["subsidy_fen"], third["due_fen"]) == ([], 0, 40000)
    assert (fourth["id_number"], fourth["error"]["code"], fourth["may_enrol"]) == (None, "scientific_notation", False)


async def test_a_long_check_in_chinese_names_each_persons_own_list_row(client: AsyncTestClient[Litestar]) -> None:
    # The sentences' templates and the categories' names are looked up once per check; each person's
    # rows still come out in their words, with their own row numbers.
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin)
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="te_kun")
    await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四,,", f"{ID_NUMBERS[1]},张三,,"), list_type="di_bao")
    body = await check(client, {**staff_a, "Accept-Language": "zh-CN"}, [ID_NUMBERS[2], ID_NUMBERS[1]])
    first, second = body["items"]
    assert first["explanation"][0] == "低保对象：低保对象名单第1版第2行"
    assert second["explanation"][:2] == ["低保对象：低保对象名单第1版第3行", "特困人员：特困人员名单第1版第2行"]


async def test_stacking_is_capped_at_the_premium_and_percentages_round_half_up(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    rules = {
        "categories": [
            {"category": "di_bao", "rule": {"type": "percent", "basis_points": 5000}},
            {"category": "zhongdu_canji", "rule": {"type": "percent", "basis_points": 100}},
        ],
        "categories_stack": True,
        "top_ups": [{"code": "district_top_up", "rule": {"type": "fixed", "amount_fen": 20000}}],
    }
    await publish_policy(client, admin, premium_fen=38050, rules=rules)
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,", f"{ID_NUMBERS[2]},李四,,"), list_type="di_bao")
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,", f"{ID_NUMBERS[3]},王五,,"), list_type="zhongdu_canji")
    body = await check(client, staff_a, [ID_NUMBERS[1], ID_NUMBERS[3]])
    both, disabled_only = body["items"]
    # 38050 × 50 % = 19025; × 1 % = 380.5 → 381; the 20000 top-up fills only the 18644 left.
    assert [(line["code"], line["amount_fen"], line["applied_fen"]) for line in both["lines"]] == [
        ("di_bao", 19025, 19025),
        ("zhongdu_canji", 381, 381),
        ("district_top_up", 20000, 18644),
    ]
    assert (both["subsidy_fen"], both["due_fen"], both["capped"]) == (38050, 0, True)
    assert "subsidies capped at the premium of 38050 fen" in both["explanation"]
    assert (disabled_only["subsidy_fen"], disabled_only["due_fen"], disabled_only["capped"]) == (20381, 17669, False)


async def test_each_person_of_a_long_check_is_answered_for_their_own_age_and_obstacles(
    client: AsyncTestClient[Litestar],
) -> None:
    """A check works out what is due once per categories and age, and the explanation of persons who
    hold nothing and meet no obstacle once per age: persons sharing one of these and not the other
    still get their own answers."""
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    elderly = {"code": "elderly", "rule": {"type": "fixed", "amount_fen": 10000}, "ages": [{"from_age": 60}]}
    await publish_policy(client, admin, rules={**POLICY_2026["rules"], "top_ups": [elderly]})
    await upload(client, civil, csv(f"{ID_NUMBERS[6]},孙七,,"), list_type="di_bao")
    await upload(client, civil, csv(f"{ID_NUMBERS[5]},赵五,,"), list_type="deceased")
    # Ages on 1 January 2026: 46 (di_bao), 46 (deceased), 76, 46, 76.
    ids = [ID_NUMBERS[6], ID_NUMBERS[5], ID_NUMBERS[0], ID_NUMBERS[1], ID_NUMBERS[0]]
    items = (await check(client, staff_a, ids))["items"]
    answers = [(i["may_enrol"], i["subsidy_fen"], i["due_fen"], i["explanation"]) for i in items]
    plain_76 = (
        True,
        10000,
        30000,
        ["subsidy 10000 fen from top_up elderly", "due 30000 fen of a premium of 40000 fen"],
    )
    assert answers == [
        (
            True,
            20000,
            20000,
            [
                "di_bao: list di_bao version 1 row 2",
                "subsidy 20000 fen from category di_bao",
                "due 20000 fen of a premium of 40000 fen",
            ],
        ),
        (
            False,
            0,
            40000,
            ["not eligible, deceased: list deceased version 1 row 2", "due 40000 fen of a premium of 40000 fen"],
        ),
        plain_76,
        (True, 0, 40000, ["due 40000 fen of a premium of 40000 fen"]),
        plain_76,
    ]


async def test_validity_dates_and_version_effective_dates_decide_what_applies_on_the_date(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin)
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,2025-01-01,2025-12-31", f"{ID_NUMBERS[2]},李四,,"))
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), effective_from="2026-03-01")  # 李四 leaves
    on = {
        as_of: [i["subsidy_fen"] for i in (await check(client, staff_a, ID_NUMBERS[1:3], as_of))["items"]]
        for as_of in ("2025-10-01", "2026-01-15", "2026-03-01")
    }
    assert on == {"2025-10-01": [20000, 20000], "2026-01-15": [0, 20000], "2026-03-01": [20000, 0]}


async def test_exclusion_lists_and_live_enrolments_say_why_a_person_may_not_enrol(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a, staff_b = await heads(client, *("admin", "civil", "staff_a", "staff_b"))
    await publish_policy(client, admin)
    deceased = (await upload(client, civil, csv(f"{ID_NUMBERS[4]},钱六,,"), list_type="deceased")).json()
    household = await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    enrolled = await enrol(client, staff_a, household, [household["members"][0]["person_id"]])
    assert enrolled.status_code == 201, enrolled.text
    mine = (await check(client, staff_a, [ID_NUMBERS[4], ID_NUMBERS[1]]))["items"]
    assert (mine[0]["may_enrol"], mine[0]["obstacles"]) == (
        False,
        [
            {
                "code": "deceased",
                "enrollment_id": None,
                "source": {
                    "kind": "list",
                    "list_id": deceased["id"],
                    "list_type": "deceased",
                    "version": 1,
                    "row": 2,
                    "effective_from": "2025-09-01",
                    "claim_id": None,
                    "decided_by": None,
                    "decided_at": None,
                },
            }
        ],
    )
    assert mine[1]["obstacles"] == [
        {"code": "already_enrolled", "source": None, "enrollment_id": enrolled.json()["items"][0]["id"]}
    ]
    # Another township learns that the person is a member and enrolled there, not where.
    theirs = (await check(client, staff_b, [ID_NUMBERS[1]]))["items"][0]
    assert theirs["obstacles"] == [
        {"code": "member_elsewhere", "source": None, "enrollment_id": None},
        {"code": "already_enrolled", "source": None, "enrollment_id": None},
    ]
    assert household["id"] not in str(theirs)


async def test_another_townships_member_is_answered_without_what_the_lists_hold_of_them(
    client: AsyncTestClient[Litestar],
) -> None:
    """A township's staff read no list rows (their lists' pages are civil affairs'), nor through the
    check: a member of another township's household is answered `member_elsewhere`, without the
    categories, exclusions and sources the lists hold of them; the same township sees them all, and
    a person of no household is answered whole (staff register new persons)."""
    admin, civil, staff_a, staff_b = await heads(client, *("admin", "civil", "staff_a", "staff_b"))
    await publish_policy(client, admin)  # te_kun full, di_bao 50 %
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,", f"{ID_NUMBERS[2]},李四,,"), list_type="te_kun")
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="employee_insurance")
    await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    (ours,) = (await check(client, staff_a, [ID_NUMBERS[1]]))["items"]
    assert ([c["category"] for c in ours["categories"]], [o["code"] for o in ours["obstacles"]]) == (
        ["te_kun"],
        ["employee_insurance"],
    )
    response = await client.post(
        "/api/v1/eligibility/check",
        json={"id_numbers": [ID_NUMBERS[1], ID_NUMBERS[2]], "coverage_year": 2026, "as_of": "2025-10-01"},
        headers={**staff_b, "Accept-Language": "zh-CN"},
    )
    assert response.status_code == 200, response.text
    theirs, stranger = response.json()["items"]
    assert (theirs["may_enrol"], theirs["categories"], theirs["chosen_categories"]) == (False, [], [])
    assert theirs["obstacles"] == [{"code": "member_elsewhere", "source": None, "enrollment_id": None}]
    assert (theirs["subsidy_fen"], theirs["due_fen"]) == (0, 40000)
    assert theirs["explanation"][0] == "其他乡镇的户内成员：请由该乡镇核查、登记，或先将其迁入本乡镇"
    assert "te_kun" not in str(theirs) and "特困" not in str(theirs) and "employee" not in str(theirs)
    assert ([c["category"] for c in stranger["categories"]], stranger["due_fen"]) == (["te_kun"], 0)


async def test_a_person_on_an_exclusion_list_cannot_be_enrolled(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin)
    await upload(client, civil, csv(f"{ID_NUMBERS[2]},李四,,"), list_type="employee_insurance")
    household = await create_household(
        client, staff_a, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    person_ids = [m["person_id"] for m in household["members"]]
    response = await enrol(client, staff_a, household, person_ids)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "on_exclusion_list"
    assert body["errors"] == [
        {
            "field": "person_ids[1]",
            "message": "is on the employee_insurance list (list employee_insurance version 1 row 2)",
            "reason": "employee_insurance",
        }
    ]
    assert ID_NUMBERS[2] not in response.text
    assert await conn.fetchval("SELECT count(*) FROM enrollments") == 0


async def test_enrolment_uses_eligibility_full_subsidy_is_subsidised_partial_lowers_the_amount_due(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    for list_type, row in (("te_kun", f"{ID_NUMBERS[1]},张三,,"), ("di_bao", f"{ID_NUMBERS[2]},李四,,")):
        loaded = await upload(client, civil, csv(row), list_type=list_type, effective_from="2025-01-01")
        assert loaded.status_code == 201, loaded.text
    household = await create_household(
        client,
        staff_a,
        [
            member(ID_NUMBERS[1], "张三"),
            member(ID_NUMBERS[2], "李四", "spouse"),
            member(ID_NUMBERS[4], "张丽", "child"),
        ],
    )
    person_ids = [
        next(m["person_id"] for m in household["members"] if m["id_number"] == n)
        for n in (ID_NUMBERS[1], ID_NUMBERS[2], ID_NUMBERS[4])
    ]
    response = await enrol(client, staff_a, household, person_ids)
    assert response.status_code == 201, response.text
    by_person = {e["person_id"]: e for e in response.json()["items"]}
    assert [(by_person[p]["status"], by_person[p]["subsidy_fen"]) for p in person_ids] == [
        ("subsidised", 40000),
        ("registered", 20000),
        ("registered", 0),
    ]
    quote = await client.get(f"/api/v1/households/{household['id']}/premium", params={"year": 2026}, headers=staff_a)
    assert quote.status_code == 200, quote.text
    body = quote.json()
    members = {m["person_id"]: (m["subsidy_fen"], m["due_fen"]) for m in body["members"]}
    assert [members[p] for p in person_ids] == [(40000, 0), (20000, 20000), (0, 40000)]
    assert (body["premium_fen"], body["subsidy_fen"], body["due_fen"]) == (120000, 60000, 60000)


async def test_a_new_list_version_after_enrolment_shows_in_the_amount_due(client: AsyncTestClient[Litestar]) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    household = await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    enrolled = await enrol(client, staff_a, household, [household["members"][0]["person_id"]])
    assert enrolled.json()["items"][0]["subsidy_fen"] == 0
    await upload(client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="di_bao", effective_from="2025-01-01")
    quote = (
        await client.get(f"/api/v1/households/{household['id']}/premium", params={"year": 2026}, headers=staff_a)
    ).json()
    assert (quote["subsidy_fen"], quote["due_fen"], quote["balance_fen"]) == (20000, 20000, 20000)


async def test_exclusion_list_after_enrolment_opens_a_review_and_cancels_nothing_by_itself(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, *("admin", "civil", "staff_a"))
    reviewer_a, reviewer_b = await heads(client, *("reviewer_a", "reviewer_b"))
    await publish_policy(client, admin)
    household = await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    enrolled = await enrol(client, staff_a, household, [household["members"][0]["person_id"]])
    enrollment_id = enrolled.json()["items"][0]["id"]
    deceased = await upload(
        client, civil, csv(f"{ID_NUMBERS[1]},张三,,"), list_type="deceased", effective_from="2026-02-01"
    )
    assert deceased.status_code == 201, deceased.text
    still = await client.get(f"/api/v1/enrollments/{enrollment_id}", headers=staff_a)
    assert still.json()["status"] == "registered"
    queue = (
        await client.get("/api/v1/eligibility/exclusion-reviews", params={"status": "open"}, headers=reviewer_a)
    ).json()
    assert [(r["enrollment_id"], r["list_type"], r["row_no"], r["list_version_id"]) for r in queue["items"]] == [
        (enrollment_id, "deceased", 2, deceased.json()["id"])
    ]
    review_id = queue["items"][0]["id"]
    assert (await client.get("/api/v1/eligibility/exclusion-reviews", headers=reviewer_b)).json()["items"] == []
    outsider = await client.post(
        f"/api/v1/eligibility/exclusion-reviews/{review_id}/decide", json={"decision": "cancel"}, headers=reviewer_b
    )
    assert outsider.status_code == 404
    decision = {"decision": "cancel", "note": "death certificate seen"}
    decided = await client.post(
        f"/api/v1/eligibility/exclusion-reviews/{review_id}/decide", json=decision, headers=reviewer_a
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "cancelled"
    cancelled = (await client.get(f"/api/v1/enrollments/{enrollment_id}", headers=staff_a)).json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "deceased")


async def test_check_takes_at_most_10000_numbers_in_the_body(client: AsyncTestClient[Litestar]) -> None:
    admin, staff_a = await heads(client, *("admin", "staff_a"))
    await publish_policy(client, admin)
    response = await client.post(
        "/api/v1/eligibility/check",
        json={"id_numbers": [ID_NUMBERS[1]] * 10_001, "coverage_year": 2026},
        headers=staff_a,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "id_numbers"
