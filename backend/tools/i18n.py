"""The translation catalogs: extract the messages from the code, update the `.po` files, check them.

    python -m backend.tools.i18n update    # new messages into every catalog, gone ones out
    python -m backend.tools.i18n check     # every message translated, its {fields} kept
    python -m backend.tools.i18n merge OURS THEIRS   # after a git conflict in a .po: both sides' entries

Messages are the first argument of `_()`, `N_()` and the two of `ngettext()` in `backend/` and
`mobile_sync_protocol/` (the web pages' templates included), and the title of every error class
(the first line of the docstring of a class that sets a `code`). The `.po` files are sorted by
message and carry no source locations, so two branches adding messages rarely touch the same lines.
"""

from __future__ import annotations

import ast
import io
import re
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_python
from babel.messages.pofile import read_po, write_po

from backend.i18n import DOMAIN, LANGUAGES, LOCALE_DIR, SOURCE_LANGUAGE

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("backend", "mobile_sync_protocol")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2), "rule": (2,)}
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)[^{}]*\}")


def extract_canbao(
    fileobj: IO[bytes], keywords: Mapping[str, Any], comment_tags: Collection[str], options: dict[str, Any]
) -> Iterator[tuple[int, str | None, Any, list[str]]]:
    """Babel's Python extractor, plus the titles of error classes (their docstring's first line)."""
    source = fileobj.read()
    fileobj.seek(0)
    yield from extract_python(fileobj, keywords, comment_tags, options)  # type: ignore[arg-type,misc]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and _sets_code(node) and (doc := ast.get_docstring(node)):
            yield node.lineno, None, doc.strip().splitlines()[0], []


def _sets_code(node: ast.ClassDef) -> bool:
    """Whether the class gives `code` a text value (`code = "x"`, `status, code = 404, "x"`)."""
    for statement in node.body:
        pairs: list[tuple[ast.expr, ast.expr | None]] = []
        if isinstance(statement, ast.Assign):
            pairs = [(target, statement.value) for target in statement.targets]
        elif isinstance(statement, ast.AnnAssign):
            pairs = [(statement.target, statement.value)]
        for target, value in pairs:
            if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                pairs.extend(zip(target.elts, value.elts, strict=False))
            elif isinstance(target, ast.Name) and target.id == "code" and isinstance(value, ast.Constant):
                return isinstance(value.value, str)
    return False


def template() -> Catalog:
    """Every message the code holds."""
    catalog = Catalog(domain=DOMAIN)
    for source in SOURCES:
        for _filename, _lineno, message, _comments, _context in extract_from_dir(
            ROOT / source,
            method_map=[
                ("**/tools/i18n.py", "ignore"),
                ("**.py", extract_canbao),  # type: ignore[list-item]
                ("**/templates/**.html", "jinja2.ext:babel_extract"),  # the web pages' `_()`
            ],
            keywords=KEYWORDS,
        ):
            if not message or (isinstance(message, tuple) and not message[0]):
                continue
            catalog.add(message, flags=("python-brace-format",) if _has_fields(message) else ())
    return catalog


def _has_fields(message: str | tuple[str, ...]) -> bool:
    return any(_FIELD.search(m) for m in (message if isinstance(message, tuple) else (message,)))


def catalog_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(path: Path, language: str) -> Catalog:
    with path.open("rb") as fp:
        return read_po(fp, locale=language, domain=DOMAIN)


def write(catalog: Catalog, path: Path) -> None:
    """The catalog with a header of our own: nothing in it changes with the day or Babel's version."""
    out = io.BytesIO()
    write_po(out, catalog, width=0, no_location=True, omit_header=True, sort_output=True, ignore_obsolete=True)
    header = _HEADER.format(language=path.parents[1].name, plural=catalog.plural_forms)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + b"\n" + out.getvalue().lstrip(b"\n"))


_HEADER = """\
# Canbao's messages: edit the msgstr lines, then run `python -m backend.tools.i18n check`;
# `python -m backend.tools.i18n update` brings in the code's new messages (README: Translations).
msgid ""
msgstr ""
"Project-Id-Version: Canbao\\n"
"Language: {language}\\n"
"Plural-Forms: {plural}\\n"
"MIME-Version: 1.0\\n"
"Content-Type: text/plain; charset=utf-8\\n"
"Content-Transfer-Encoding: 8bit\\n"
"""


def update() -> None:
    pot = template()
    for language in LANGUAGES:
        if language == SOURCE_LANGUAGE:
            continue
        path = catalog_path(language)
        catalog = read(path, language) if path.exists() else Catalog(locale=language, domain=DOMAIN)
        catalog.update(pot, no_fuzzy_matching=True, update_header_comment=False)
        write(catalog, path)


def problems(language: str) -> list[str]:
    """What is wrong with `language`'s catalog: messages of the code it lacks or leaves
    untranslated, translations whose {fields} differ from the message's."""
    catalog = read(catalog_path(language), language)
    found: list[str] = []
    for message in template():
        if not message.id:
            continue  # the header
        entry = catalog.get(message.id)
        if entry is None or entry.fuzzy:
            found.append(f"not in the catalog: {message.id!r}")
            continue
        ids = [str(m) for m in (message.id if isinstance(message.id, tuple | list) else (message.id,))]
        strings = [str(s or "") for s in (entry.string if isinstance(entry.string, tuple | list) else (entry.string,))]
        if not all(strings):
            found.append(f"not translated: {message.id!r}")
            continue
        wanted = set().union(*(_FIELD.findall(m) for m in ids))
        for string in strings:
            if set(_FIELD.findall(string)) != wanted:
                found.append(f"fields differ: {message.id!r} → {string!r}")
    return found


def merge(ours: Path, theirs: Path, language: str = "zh_CN") -> None:
    """Both sides' translations in the catalog (ours wins where both translate a message)."""
    mine, other = read(ours, language), read(theirs, language)
    for message in other:
        if not message.id or not message.string:
            continue
        if message.id not in mine:
            mine[message.id] = message
        elif not mine[message.id].string:
            mine[message.id].string = message.string  # setting the message again would keep the empty one
    write(mine, catalog_path(language))
    update()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "update":
        update()
        return 0
    if command == "merge" and len(argv) == 3:
        merge(Path(argv[1]), Path(argv[2]))
        return 0
    if command == "check":
        others = [language for language in LANGUAGES if language != SOURCE_LANGUAGE]
        failures = [f"{language}: {p}" for language in others for p in problems(language)]
        print("\n".join(failures) or "all messages translated")
        return 1 if failures else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
