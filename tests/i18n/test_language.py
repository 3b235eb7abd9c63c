"""The language of people-facing text: negotiated per request, Chinese by default, English for
developers; codes and field names never change with it; every message of the code translated."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import errors, i18n
from backend.app import create_app
from backend.config import Settings, SettingsError
from backend.i18n import terms
from backend.tools import i18n as catalogs
from tests.conftest import make_settings

ZH = {"Accept-Language": "zh-CN"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN", "zh_CN"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"),
        ("zh", "zh_CN"),
        ("zh-Hans-CN", "zh_CN"),
        ("en-US,en;q=0.9", "en"),
        ("en-GB", "en"),
        ("fr-FR, en;q=0.5, zh;q=0.4", "en"),
        ("en;q=0.2, zh-CN;q=0.8", "zh_CN"),
        ("en;q=0, zh-CN", "zh_CN"),
        ("fr-FR, de", None),
        ("*", None),
        ("", None),
        ("zh-CN;q=nonsense, en", "en"),
    ],
)
def test_accept_language_picks_among_the_catalogs(header: str, expected: str | None) -> None:
    assert i18n.pick_language(header) == expected


def test_chinese_is_the_default_and_a_language_without_catalog_is_refused() -> None:
    assert Settings().language == "zh-CN"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CANBAO_LANGUAGE": "fr"})
    assert caught.value.variable == "CANBAO_LANGUAGE"


@pytest.mark.parametrize(
    ("fen", "language", "expected"),
    [
        (42000, "zh_CN", "¥420.00"),
        (5, "zh_CN", "¥0.05"),
        (123456789, "zh_CN", "¥1,234,567.89"),
        (42000, "en", "CN¥420.00"),
    ],
)
def test_money_is_written_in_yuan(fen: int, language: str, expected: str) -> None:
    assert i18n.yuan(fen, language) == expected


def test_percent_and_plurals_follow_the_language() -> None:
    assert i18n.percent(0.925, "zh_CN") == "92.5%"
    assert i18n.percent(0.925, "zh_CN", digits=0) == "92%"  # (half to even: Babel's rounding)
    with i18n.use_language("en"):
        assert i18n.percent(0.925) == "92.5%"
    with i18n.use_language("en"):
        assert i18n.ngettext("{n} month", "{n} months", 1) == "1 month"
        assert i18n.ngettext("{n} month", "{n} months", 3) == "3 months"


def test_money_and_percent_texts_are_kept_per_language() -> None:
    """Babel takes tens of µs a figure, and a resident's coverage writes dozens: the texts are kept,
    per language (the same share reads differently elsewhere)."""
    for kept in (i18n._yuan, i18n._percent):
        kept.cache_clear()
    for _round in range(2):
        assert (i18n.yuan(42000, "zh_CN"), i18n.percent(0.7, "zh_CN")) == ("¥420.00", "70.0%")
        assert i18n.yuan(42000, "en") == "CN¥420.00"
    assert (i18n._yuan.cache_info().hits, i18n._percent.cache_info().hits) == (2, 1)


@pytest.fixture
async def chinese_client(db_dsn: str, seeded: None) -> Any:
    """A server left at the out-of-the-box default language."""
    settings = make_settings(db_dsn, language="zh-CN")
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as client:
        yield client


async def test_a_request_that_names_no_language_gets_the_default(chinese_client: AsyncTestClient[Litestar]) -> None:
    response = await chinese_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-language"] == "zh-CN"
    assert "Accept-Language" in response.headers.get_list("vary")
    assert response.json()["title"] == "未找到"
    assert response.json()["code"] == "not_found"


async def test_english_stays_available_for_developers(chinese_client: AsyncTestClient[Litestar]) -> None:
    response = await chinese_client.get("/api/v1/nothing-here", headers={"Accept-Language": "en-US"})
    assert response.headers["content-language"] == "en"
    assert response.json()["title"] == "Not Found"


async def test_validation_errors_speak_chinese_and_keep_their_fields(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/api/v1/auth/login", json={"password": "x"}, headers=ZH)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["title"] == "请求内容不符合要求"
    assert body["errors"] == [{"field": "username", "message": "为必填项"}]
    english = (await client.post("/api/v1/auth/login", json={"password": "x"})).json()
    assert english["errors"] == [{"field": "username", "message": "is required"}]


async def test_type_errors_are_worded_in_chinese(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post("/api/v1/auth/login", json={"username": 5, "password": "x"}, headers=ZH)
    assert response.json()["errors"] == [{"field": "username", "message": "必须是文本，而不是整数"}]


def test_every_message_of_the_code_has_a_chinese_translation() -> None:
    """Extraction from the code against the catalog: a message added without its translation, or a
    translation that drops one of the message's {fields}, fails here (`python -m backend.tools.i18n check`)."""
    assert catalogs.problems("zh_CN") == []


def _error_classes(cls: type[errors.DomainError]) -> list[type[errors.DomainError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _error_classes(sub)
    return found


def test_every_error_code_has_a_chinese_title() -> None:
    create_app(make_settings("postgresql://unused/unused"), configure_logs=False)  # imports every route module
    chinese = i18n.translations("zh_CN")
    classes = _error_classes(errors.DomainError)
    assert len(classes) > 40
    untranslated = [f"{c.code}: {c.title()}" for c in classes if chinese.gettext(c.title()) == c.title()]
    assert untranslated == []


def test_every_code_people_read_has_a_chinese_name() -> None:
    from typing import get_args

    from backend.eligibility.importer import LIST_TYPES
    from backend.enrollment.enrollments import CancelReason, Status
    from backend.enrollment.households import Relation
    from mobile_sync_protocol.rules.coverage import CoverageReason

    assert set(terms.LIST_TYPES) == set(LIST_TYPES)
    assert set(terms.ENROLLMENT_STATUSES) == set(get_args(Status))
    assert set(terms.CANCEL_REASONS) == set(get_args(CancelReason))
    assert set(terms.COVERAGE_REASONS) == set(get_args(CoverageReason))
    assert set(terms.RELATIONS) == set(get_args(Relation))
    chinese = i18n.translations("zh_CN")
    for vocabulary in terms.VOCABULARIES.values():
        for code, words in vocabulary.items():
            assert chinese.gettext(words) != words, code
            assert not chinese.gettext(words).isascii(), code
    with i18n.use_language("zh_CN"):
        assert terms.name("list_type", "te_kun") == "特困人员"
        assert terms.name("list_type", "district_own") == "district_own"
