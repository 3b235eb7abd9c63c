"""Errors in the caller's language (issue 18, point 2): problem titles and details of logins, sync
pushes and list uploads, the messages of a push's rejected and quarantined mutations, the rows of
an import report — also when a worker imports the file, long after the request. Codes, field
names and the file's column names never change with the language."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.db import Pool, create_pool
from backend.eligibility.importer import ListReader
from backend.i18n import use_language
from backend.jobs import worker
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from tests.conftest import PASSWORD, auth_headers, make_settings
from tests.factories import ID_NUMBERS
from tests.jobs.test_jobs import list_file
from tests.sync_world import envelope, household_create, payment, push_raw, world

ZH = {"Accept-Language": "zh-CN"}
EN = {"Accept-Language": "en"}
# A resident ID number whose check character is wrong (the 17 digits of a valid one).
BAD_CHECK = ID_NUMBERS[1][:17] + ("X" if ID_NUMBERS[1][17] != "X" else "1")


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Pool]:
    created = await create_pool(db_dsn, 1, 4)
    yield created
    await created.close()


def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code  # a machine field: the same in every language
    return body


def bad_list() -> bytes:
    """A list whose third row (the second person) has a wrong check character."""
    return (
        f"公民身份号码,姓名,有效期起\r\n{ID_NUMBERS[2]},张三,2025-01-01\r\n{BAD_CHECK},李四,2025-01-01\r\n"
    ).encode()


async def upload(
    client: AsyncTestClient[Litestar], headers: dict[str, str], content: bytes, *, background: bool = False
) -> Any:
    return await client.post(
        f"/api/v1/eligibility/lists?background={'true' if background else 'false'}",
        files={"file": ("名单.csv", content)},
        data={"type": "di_bao", "effective_from": "2025-09-01"},
        headers=headers,
    )


# Logins ------------------------------------------------------------------------------------------


async def test_a_failed_login_is_titled_in_the_language_asked_for(client: AsyncTestClient[Litestar]) -> None:
    wrong = {"username": "civil", "password": PASSWORD + "x"}
    zh = problem_of(await client.post("/api/v1/auth/login", json=wrong, headers=ZH), 401, "invalid_credentials")
    assert zh["title"] == "用户名或密码错误"
    en = problem_of(await client.post("/api/v1/auth/login", json=wrong, headers=EN), 401, "invalid_credentials")
    assert en["title"] == "Username or password is wrong"


# Sync --------------------------------------------------------------------------------------------


async def test_a_malformed_push_body_is_explained_in_chinese(client: AsyncTestClient[Litestar]) -> None:
    tablet = await world(client)
    headers = {**tablet.headers, "Content-Type": m.JSON}
    problem = problem_of(
        await client.post("/api/v1/sync/push", content=b"{not json", headers={**headers, **ZH}), 400, "malformed_body"
    )
    assert problem["title"] == "无法读取同步请求体"
    assert problem["detail"] == "protocol_version: 不是有效的 JSON 或 MessagePack"
    gzip = {**headers, "Content-Encoding": "br", **ZH}
    refused = problem_of(
        await client.post("/api/v1/sync/push", content=b"{}", headers=gzip), 415, "unsupported_media_type"
    )
    assert refused["title"] == "不接受该请求体的媒体类型或编码"
    assert refused["detail"] == "请使用 gzip 或 identity 编码，而不是 br"
    assert refused["reason"] == "unsupported_content_encoding"
    # In English, the same answer in English.
    english = problem_of(
        await client.post("/api/v1/sync/push", content=b"{not json", headers={**headers, **EN}), 400, "malformed_body"
    )
    assert english["title"] == "The sync request body cannot be read"
    assert english["detail"] == "protocol_version: is not valid JSON or MessagePack"


async def test_a_pushed_mutation_that_is_rejected_or_quarantined_says_why_in_chinese(
    client: AsyncTestClient[Litestar],
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    tablet.headers.update(ZH)
    unknown_household = household_create(tablet)  # never pushed: no such household on the server
    tablet.next_seq = 1
    with_nul = msgspec.structs.replace(household_create(tablet), address="北山\x00村")
    paid = payment(tablet, unknown_household, receipt=1)
    response = await push_raw(client, tablet, envelope(tablet, [with_nul, paid]))
    assert response.status_code == 200, response.text
    answers = codec.decode(response.content, m.PushResponse, "json").answers
    assert [(a.status, a.code) for a in answers] == [
        ("rejected", "malformed_mutation"),
        ("quarantined", "out_of_scope"),
    ]
    assert answers[0].detail == "文本中含有 NUL 字符，任何记录都无法保存"
    assert answers[1].detail == "收费人员辖区内没有该户"
    # A push in English is answered in English.
    tablet.headers.update(EN)
    late = household_create(tablet, numbers=(3,), household_no="0102")
    skipped = msgspec.structs.replace(late, seq=late.seq + 5)
    response = await push_raw(client, tablet, envelope(tablet, [skipped]))
    (gap,) = codec.decode(response.content, m.PushResponse, "json").answers
    assert (gap.status, gap.code, gap.detail) == ("not_applied", "seq_gap", "the server holds this device up to seq 2")


# List imports ------------------------------------------------------------------------------------


async def test_a_list_row_with_a_bad_id_number_is_reported_in_chinese_with_its_row_and_column(
    client: AsyncTestClient[Litestar],
) -> None:
    civil = await auth_headers(client, "civil")
    problem = problem_of(await upload(client, {**civil, **ZH}, bad_list()), 422, "list_rejected")
    assert problem["title"] == "名单文件有错误，未导入任何数据"
    assert problem["detail"] == "共 2 行，其中 1 行有错误；未导入任何数据"
    assert problem["errors"] == [
        {
            "row": 3,
            "column": "公民身份号码",  # the column as the file names it, in any language
            "problem": "校验码不对，有一位数字错误。",
            "message": "第 3 行 公民身份号码：校验码不对，有一位数字错误。",
        }
    ]
    english = problem_of(await upload(client, {**civil, **EN}, bad_list()), 422, "list_rejected")
    assert english["title"] == "The list file has errors; nothing was loaded"
    assert english["errors"] == [
        {
            "row": 3,
            "column": "公民身份号码",
            "problem": "the check character does not match; a digit is wrong.",
            "message": "Row 3, 公民身份号码: the check character does not match; a digit is wrong.",
        }
    ]


async def test_a_list_imported_by_a_worker_reports_in_the_language_of_whoever_uploaded_it(
    client: AsyncTestClient[Litestar],
    pool: Pool,
    db_dsn: str,
) -> None:
    civil = await auth_headers(client, "civil")
    answer = await upload(client, {**civil, **ZH}, list_file(5, bad_row=True), background=True)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    # The worker has no request: it speaks the language recorded with the job, not its own (English here).
    await worker.run_one(pool, job_handlers(), make_settings(db_dsn, job_heartbeat_s=0.1))
    seen = (await client.get(job["href"], headers={**civil, **EN})).json()
    assert seen["state"] == "failed"
    assert seen["error"] == {
        "code": "list_rejected",
        "title": "名单文件有错误，未导入任何数据",
        "detail": "共 6 行，其中 1 行有错误；未导入任何数据",
    }
    assert [(e["row"], e["column"], e["problem"]) for e in seen["result"]["errors"]] == [
        (7, "身份证号", "只能包含数字，18 位号码的最后一位可以是 X")
    ]

    answer = await upload(client, {**civil, **EN}, list_file(5, bad_row=True), background=True)
    job = answer.json()
    await worker.run_one(pool, job_handlers(), make_settings(db_dsn, job_heartbeat_s=0.1))
    seen = (await client.get(job["href"], headers={**civil, **ZH})).json()
    assert seen["error"]["title"] == "The list file has errors; nothing was loaded"
    assert seen["result"]["errors"][0]["problem"] == (
        "may contain only digits, and X as the last character of an 18-character number"
    )


def test_a_problem_remembered_for_one_import_is_told_in_the_language_of_the_next() -> None:
    """Problems of dates are cached across imports: the cache keeps the message, not its words."""
    text = "身份证号,姓名,有效期起\r\n" + f"{ID_NUMBERS[2]},张三,2025-13-45\r\n"

    def problems() -> list[str]:
        reader = ListReader(io.BytesIO(text.encode()), today=date(2026, 1, 1))
        list(reader.entries())
        return [e.problem for e in reader.errors]

    with use_language("zh_CN"):
        assert problems() == ["不是真实存在的日期"]
    with use_language("en"):
        assert problems() == ["is not a real date"]
