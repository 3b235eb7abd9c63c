"""The language Canbao speaks to people: gettext catalogs through Babel, chosen per request.

English is the source language (msgids are English, so a developer reads the code); Chinese
(`zh_CN`) is the catalog in `locale/zh_CN/LC_MESSAGES/canbao.po` and the default for people. A
request's `Accept-Language` picks among the catalogs (`negotiated`); a command or job picks with
`use_language`. Only human-readable text follows the language: codes, field names, enums and
amounts in fen never change.

    raise NotFound(_("No enrolment {year} for this person", year=year))
    ngettext("{n} month", "{n} months", months)          # CLDR plural rules of the language
    N_("Person in extreme poverty")                      # marked for extraction, translated later

Messages use `str.format` fields (`{year}`), filled after translation so the translator may move
them. The catalogs are compiled from the `.po` files when first used (no generated `.mo` is kept
in the repository); `python -m backend.tools.i18n` extracts, updates and checks them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Iterator
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import NullTranslations, Translations

__all__ = [
    "DOMAIN",
    "LANGUAGES",
    "LOCALE_DIR",
    "N_",
    "_",
    "current_language",
    "language_tag",
    "ngettext",
    "number",
    "parse_language",
    "percent",
    "pick_language",
    "set_default_language",
    "translations",
    "use_language",
    "yuan",
]

DOMAIN = "canbao"
LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LANGUAGE = "en"
# The languages Canbao speaks: the source language and every catalog in LOCALE_DIR.
LANGUAGES: tuple[str, ...] = (SOURCE_LANGUAGE, *sorted(p.name for p in LOCALE_DIR.iterdir() if p.is_dir()))

_default = ["zh_CN"]
_language: ContextVar[str | None] = ContextVar("canbao_language", default=None)


def parse_language(tag: str) -> str:
    """A setting's or header's language tag (`zh-CN`, `zh_CN`, `en`) as one Canbao speaks;
    ValueError when it speaks none like it."""
    picked = negotiate_locale([tag.strip().replace("_", "-")], [lang.replace("_", "-") for lang in LANGUAGES], sep="-")
    if picked is None:
        # `zh` and `zh-Hans` mean the Chinese we have; `en-GB` the English.
        base = tag.strip().replace("_", "-").split("-")[0].lower()
        picked = next((lang for lang in LANGUAGES if lang.split("_")[0].lower() == base), None)
    if picked is None:
        raise ValueError(f"no catalog for {tag!r}; Canbao speaks {', '.join(LANGUAGES)}")
    return picked.replace("-", "_")


def set_default_language(tag: str) -> None:
    """The language of a request that asks for none, and of commands (`CANBAO_LANGUAGE`)."""
    _default[0] = parse_language(tag)


def current_language() -> str:
    return _language.get() or _default[0]


def language_tag(language: str | None = None) -> str:
    """BCP 47 form for `Content-Language`: zh_CN → zh-CN."""
    return (language or current_language()).replace("_", "-")


@contextlib.contextmanager
def use_language(language: str | None) -> Iterator[str]:
    """Speak `language` (one of LANGUAGES, or None for the default) within the block."""
    token = _language.set(language)
    try:
        yield current_language()
    finally:
        _language.reset(token)


_Q = re.compile(r"^\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


def pick_language(accept_language: str | None) -> str | None:
    """The language an `Accept-Language` header prefers among LANGUAGES (RFC 9110 §12.5.4), or
    None when it names none of them (the default then applies). Bad parts are ignored."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language[:512].split(",")):
        match = _Q.match(part)
        if match is None or match.group(1) == "*":
            continue
        q = float(match.group(2)) if match.group(2) else 1.0
        if q > 0:
            ranked.append((-q, position, match.group(1)))
    for _q, _position, tag in sorted(ranked):
        with contextlib.suppress(ValueError):
            return parse_language(tag)
    return None


@functools.cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of `language` (NullTranslations for the source language)."""
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    po = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po.open("rb") as fp:
        catalog = read_po(fp, locale=language, domain=DOMAIN)
    mo = io.BytesIO()
    write_mo(mo, catalog, use_fuzzy=False)
    mo.seek(0)
    return Translations(fp=mo, domain=DOMAIN)


@functools.cache
def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(SOURCE_LANGUAGE)


def _(msgid: str, /, **params: Any) -> str:
    """`msgid` in the current language, its `{fields}` filled from `params`."""
    text = translations(current_language()).gettext(msgid)
    return text.format(**params) if params else text


def ngettext(singular: str, plural: str, n: int, /, **params: Any) -> str:
    """The form of `n` in the current language (`{n}` is filled too)."""
    text = translations(current_language()).ngettext(singular, plural, n)
    return text.format(n=n, **params)


def N_(msgid: str, /) -> str:  # gettext's name for "mark, translate later"
    """Marks `msgid` for extraction; `_(msgid)` translates it where it is shown."""
    return msgid


def yuan(fen: int, language: str | None = None) -> str:
    """An amount in fen as the language writes money in yuan: ¥420.00 (zh_CN), CN¥420.00 (en)."""
    return _yuan(fen, language or current_language())


# Babel takes 50 µs an amount, and a resident's coverage page writes some forty (issue 20); the
# same few premiums, subsidies and balances come back, so the text of the latest thousands is kept.
@functools.lru_cache(maxsize=4096)
def _yuan(fen: int, language: str) -> str:
    return format_currency(Decimal(fen) / 100, "CNY", locale=_locale(language))


def number(value: int | float | Decimal, language: str | None = None) -> str:
    return format_decimal(value, locale=_locale(language or current_language()))


def percent(value: float | Decimal, language: str | None = None, digits: int = 1) -> str:
    """A share (0.925) as the language writes a percentage: 92.5%."""
    return _percent(value, language or current_language(), digits)


# As `_yuan`: a resident's coverage writes each member's reimbursement rates, the same few shares.
@functools.lru_cache(maxsize=4096)
def _percent(value: float | Decimal, language: str, digits: int) -> str:
    pattern = "#,##0." + "0" * digits + "%" if digits else "#,##0%"
    return format_percent(value, format=pattern, locale=_locale(language))
