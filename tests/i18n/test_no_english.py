"""No English left behind: a sample of routes asked in Chinese answers no English sentence in any
human-readable field, whatever the field is called. Codes, field names and enum values have no
spaces, so a pure-ASCII text of three words or more is a message somebody forgot to translate."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS
from tests.residents.test_residents import COVERAGE, make_home, resident_headers

ZH = {"Accept-Language": "zh-CN"}
SENTENCE = re.compile(r"[A-Za-z]{2,}[,;:]? [A-Za-z]{2,}[,;:]? [A-Za-z]{2,}")


def english_sentences(value: Any, path: str = "$") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from english_sentences(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from english_sentences(item, f"{path}[{i}]")
    elif isinstance(value, str) and value.isascii() and SENTENCE.search(value) and not value.startswith("http"):
        yield f"{path}: {value}"


def test_the_detector_finds_english_and_spares_codes_and_chinese() -> None:
    body = {
        "code": "already_enrolled",
        "title": "该人员本年度已参保",
        "errors": [{"field": "members[0].id_number", "message": "Person already has a live enrolment"}],
        "type": "https://canbao.dev/problems/not_found",
        "premium_yuan": "¥420.00",
    }
    assert list(english_sentences(body)) == ["$.errors[0].message: Person already has a live enrolment"]


async def test_a_sample_of_answers_in_chinese_has_no_english_sentence(client: AsyncTestClient[Litestar]) -> None:
    home = await make_home(client)
    staff = {**await auth_headers(client, "staff_a"), **ZH}
    answers = {
        "unknown route": await client.get("/api/v1/nothing-here", headers=ZH),
        "wrong password": await client.post(
            "/api/v1/auth/login", json={"username": "staff_a", "password": "wrong-password"}, headers=ZH
        ),
        "empty household": await client.post("/api/v1/households", json={}, headers=staff),
        "bad household member": await client.post(
            "/api/v1/households",
            json={"village_code": "330106001001", "members": [{"id_number": "123", "name": "王五"}]},
            headers=staff,
        ),
        "unknown household": await client.get(f"/api/v1/households/{uuid.uuid4()}", headers=staff),
        "enrolled twice": await client.post(
            "/api/v1/enrollments",
            json={
                "household_id": home.h1["id"],
                "coverage_year": 2026,
                "person_ids": [m["person_id"] for m in home.h1["members"]],
            },
            headers=staff,
        ),
        "resident without token": await client.get(COVERAGE, headers=ZH),
        "resident coverage": await client.get(
            COVERAGE, headers={**await resident_headers(client, ID_NUMBERS[1], "张三", home.code1), **ZH}
        ),
    }
    found = {name: list(english_sentences(r.json())) for name, r in answers.items()}
    assert {name: sentences for name, sentences in found.items() if sentences} == {}
    assert answers["resident coverage"].status_code == 200
    assert answers["enrolled twice"].status_code == 409
