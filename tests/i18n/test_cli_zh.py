"""Clerk-facing commands speak the terminal's language (LANG), Chinese when it names none."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.cli import ARGPARSE_WORDS, argparse_speaks, columns, command_language, parser, wrap
from backend.i18n import use_language
from tests.ops.test_cli import BAD_STATISTICAL_LAYOUT, CHAIN, env_for, statistical_layout
from tests.processes import clean_env, run_cli


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_CN.GB18030"}, "zh_CN"),
        ({"LANG": "C.UTF-8"}, "zh_CN"),
        ({"LANG": "C.UTF-8", "CANBAO_LANGUAGE": "en"}, "en"),
        ({"LANG": "fr_FR.UTF-8", "CANBAO_LANGUAGE": "en"}, "en"),
        ({}, "zh_CN"),
    ],
)
def test_the_language_of_a_command(env: dict[str, str], expected: str) -> None:
    assert command_language(env) == expected


def test_divisions_import_reports_bad_rows_in_chinese(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(BAD_STATISTICAL_LAYOUT.encode("gbk"))
    result = run_cli("divisions", "import", str(path), env=env_for(db_dsn, LANG="zh_CN.UTF-8"))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split("：")[0] for line in lines[:4]] == [
        "第 3 行 统计用区划代码",
        "第 4 行 名称",
        "第 5 行 统计用区划代码",
        "第 7 行 统计用区划代码",
    ]
    assert all(not line.split("：", 1)[1].isascii() for line in lines[:4]), lines
    assert lines[4] == "错误：4 行有误，未导入任何数据"


def test_divisions_import_counts_in_chinese(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "divisions.csv"
    path.write_bytes(statistical_layout(CHAIN).encode("utf-8-sig"))
    result = run_cli("divisions", "import", str(path), env=env_for(db_dsn, LANG="zh_CN.UTF-8"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "共 6 行：新增 6，更新 0，未变 0"


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """`parser` and every subcommand's parser under it, with the command that reaches it."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _explained(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The parser's options and arguments, and the lines that explain its subcommands."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            yield from action._choices_actions


def test_every_command_and_option_is_explained_in_chinese_by_default() -> None:
    """Operators read the help too: every command's and option's help, the descriptions and
    argparse's own words (usage, sections, -h) are in Chinese where the terminal names no language."""
    language = command_language({})
    with use_language(language), argparse_speaks(language):
        root = parser()
        untranslated = [
            f"{prog} {'/'.join(action.option_strings) or action.dest}: {action.help}"
            for prog, p in _parsers(root)
            for action in _explained(p)
            if action.help not in (None, argparse.SUPPRESS) and not _cjk(action.help)
        ]
        helps = {prog: p.format_help() for prog, p in _parsers(root)}
    assert untranslated == []
    assert len(helps) > 20  # every subcommand was walked
    for prog, text in helps.items():
        assert text.startswith("用法："), prog
        assert "\n选项：\n" in text, prog  # a Chinese heading ends with a full-width colon
        assert ":\n" not in text, prog
    assert _cjk(root.description or "")
    # Built and used inside the block only: argparse speaks English to everything else.
    assert argparse._("usage: ") == "usage: "  # type: ignore[attr-defined]


def test_chinese_help_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help by characters; a Chinese one is two columns wide, so its lines came out
    twice as wide as an 80-column terminal. Every line of every command's help fits it now (but
    `user add`'s list of roles, one word longer than a line in any language)."""
    monkeypatch.setenv("COLUMNS", "80")
    language = command_language({})
    with use_language(language), argparse_speaks(language):
        helps = {prog: p.format_help() for prog, p in _parsers(parser())}
    too_wide = [
        f"{prog}: {line}"
        for prog, text in helps.items()
        for line in text.splitlines()
        if columns(line) > 80 and len(wrap(line, 1)) > 1  # but a word longer than a line, as in English
    ]
    assert too_wide == []
    assert max(columns(line) for text in helps.values() for line in text.splitlines()) > 70  # the lines are full
    # Marks stay with their neighbours, and nothing is lost.
    assert wrap("abcd，例如", 4) == ["abcd，", "例如"]
    assert wrap("区划（code,name", 6) == ["区划", "（code,name"]
    text = "te_kun（特困）, gu_er（孤儿）；auto：混合文件，按“类别”列中的 每种  类别各导入"
    for width in range(1, 40):
        assert "".join(wrap(text, width)).replace(" ", "") == text.replace(" ", ""), width


def test_a_bad_option_is_refused_in_chinese() -> None:
    result = run_cli("serve", "--port", "99999", env=clean_env(LANG="zh_CN.UTF-8"))
    assert result.returncode == 2
    assert "参数 --port：必须是 1 到 65535 之间的端口号，不能是 99999" in result.stderr
    assert result.stderr.startswith("用法：")
    missing = run_cli("user", "add", "wang_wu", env=clean_env(LANG="zh_CN.UTF-8"))
    assert "缺少必需的参数：--role, --division" in missing.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "缺少必需的参数：命令"),
        (("sevre",), "参数 命令：无效的选项值：'sevre'（可选：'serve', "),
        (("user", "ad"), "canbao user：错误：参数 命令：无效的选项值：'ad'（可选：'add', 'disable'）"),
    ],
)
def test_a_missing_or_mistyped_command_is_named_in_chinese(args: tuple[str, ...], expected: str) -> None:
    result = run_cli(*args, env=clean_env(LANG="zh_CN.UTF-8"))
    assert result.returncode == 2
    assert expected in result.stderr


def test_argparse_still_says_the_words_translated_for_it() -> None:
    """A Python whose argparse words a message differently would show it in English: each of
    ARGPARSE_WORDS must be one that this Python's argparse says."""
    source = inspect.getsource(argparse)
    assert [word for word in ARGPARSE_WORDS if repr(word)[1:-1] not in source] == []
