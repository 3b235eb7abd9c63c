"""Reports from the lists: subsidised persons not enrolled, per township scope."""

from __future__ import annotations

import csv as csv_module
import io

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.eligibility.test_check import csv, enrol, heads
from tests.eligibility.test_lists import upload
from tests.factories import ID_NUMBERS, create_household, member, publish_policy


async def test_subsidised_persons_not_enrolled_are_listed_for_the_township_that_must_visit_them(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a, staff_b = await heads(client, "admin", "civil", "staff_a", "staff_b")
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    household = await create_household(
        client,
        staff_a,
        [
            member(ID_NUMBERS[1], "张三"),
            member(ID_NUMBERS[2], "李四", "spouse"),
            member(ID_NUMBERS[4], "张丽", "child"),
        ],
    )
    by_id = {m["id_number"]: m["person_id"] for m in household["members"]}
    await upload(
        client,
        civil,
        csv(
            f"{ID_NUMBERS[1]},张三,330106001001",
            f"{ID_NUMBERS[2]},李四,",
            f"{ID_NUMBERS[3]},王五,330106002201",
            f"{ID_NUMBERS[4]},张丽,",
            header="身份证号,姓名,所属村",
        ),
        list_type="di_bao",
        effective_from="2025-01-01",
    )
    await upload(
        client,
        civil,
        csv(f"{ID_NUMBERS[4]},张丽", header="身份证号,姓名"),
        list_type="deceased",
        effective_from="2025-01-01",
    )
    assert (await enrol(client, staff_a, household, [by_id[ID_NUMBERS[2]]])).status_code == 201

    def rows(body: dict[str, object]) -> list[tuple[object, ...]]:
        items = body["items"]
        assert isinstance(items, list)
        return [
            (i["id_number_masked"], i["name"], i["categories"], i["division_code"], i["household_id"]) for i in items
        ]

    url = "/api/v1/reports/subsidised-not-enrolled"
    mine = await client.get(url, params={"year": 2026, "as_of": "2025-10-01"}, headers=staff_a)
    assert mine.status_code == 200, mine.text
    assert rows(mine.json()) == [("110105********0016", "张三", ["di_bao"], "330106001001", household["id"])]
    theirs = await client.get(url, params={"year": 2026, "as_of": "2025-10-01"}, headers=staff_b)
    assert rows(theirs.json()) == [("110105********0017", "王五", ["di_bao"], "330106002201", None)]
    assert ID_NUMBERS[3] not in theirs.text and "张三" not in theirs.text
    everyone = await client.get(
        url,
        params={"year": 2026, "as_of": "2025-10-01", "format": "csv", "headers": "codes"},
        headers=civil,
    )
    header, *table = list(csv_module.reader(io.StringIO(everyone.content.decode("utf-8-sig"))))
    assert header[:6] == ["division_code", "township", "village", "name", "id_number", "categories"]
    # In the order of the numbers' blind index: arbitrary, so compared sorted.
    assert sorted(r[:6] for r in table) == [
        ["330106001001", "北山街道", "北山社区", "张三", "110105********0016", "di_bao"],
        ["330106002201", "双浦镇", "双浦村", "王五", "110105********0017", "di_bao"],
    ]


async def test_coverage_denominator_is_roster_and_registered_persons_minus_exclusions(
    client: AsyncTestClient[Litestar],
) -> None:
    admin, civil, staff_a = await heads(client, "admin", "civil", "staff_a")
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    household = await create_household(
        client, staff_a, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    head = next(m["person_id"] for m in household["members"] if m["id_number"] == ID_NUMBERS[1])
    assert (await enrol(client, staff_a, household, [head])).status_code == 201
    await upload(
        client,
        civil,
        csv(f"{ID_NUMBERS[2]},李四", header="身份证号,姓名"),
        list_type="deceased",
        effective_from="2025-01-01",
    )

    async def villages() -> tuple[dict[str, tuple[int, int]], bool, str]:
        response = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)
        assert response.status_code == 200, response.text
        body = response.json()
        counts = {r["division_code"]: (r["persons"], r["enrolled"]) for r in body["rows"] if r["persons"]}
        return counts, body["roster_loaded"], body["denominator"]

    assert await villages() == (
        {"330106001001": (1, 1)},
        False,
        "registered persons minus persons on exclusion lists; no household-registration roster is loaded",
    )
    roster = csv(
        f"{ID_NUMBERS[1]},张三,330106001001",
        f"{ID_NUMBERS[3]},王五,330106001001",
        f"{ID_NUMBERS[5]},孙八,330106001002",
        header="身份证号,姓名,所属村",
    )
    assert (await upload(client, civil, roster, list_type="huji", effective_from="2025-01-01")).status_code == 201
    assert await villages() == (
        {"330106001001": (2, 1), "330106001002": (1, 0)},
        True,
        "registered persons and the household-registration roster, minus persons on exclusion lists",
    )


async def test_coverage_denominator_takes_out_the_persons_of_the_exclusion_list_version_in_force(
    client: AsyncTestClient[Litestar],
) -> None:
    """Only the latest version of an exclusion list in force today counts: a newer version takes
    its place, one that comes into force later does not yet (the versions are read apart from the
    counts, issue 20)."""
    admin, civil, staff_a = await heads(client, "admin", "civil", "staff_a")
    await publish_policy(client, admin, effective_from="2025-01-01", window_start="2025-01-01")
    await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")])

    async def persons() -> int:
        response = await client.get("/api/v1/reports/coverage", params={"year": 2026}, headers=admin)
        assert response.status_code == 200, response.text
        return int(response.json()["total"]["persons"])

    async def deceased(number: str, name: str, effective_from: str) -> None:
        body = csv(f"{number},{name}", header="身份证号,姓名")
        response = await upload(client, civil, body, list_type="deceased", effective_from=effective_from)
        assert response.status_code == 201, response.text

    assert await persons() == 2
    await deceased(ID_NUMBERS[2], "李四", "2025-01-01")
    assert await persons() == 1
    await deceased(ID_NUMBERS[3], "王五", "2025-06-01")  # replaces 李四's version from before today
    assert await persons() == 2
    await deceased(ID_NUMBERS[1], "张三", "2099-01-01")  # in force only later
    assert await persons() == 2
