"""Clerk-facing commands speak the terminal's language (LANG), Chinese when it names none."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.cli import command_language
from tests.ops.test_cli import BAD_STATISTICAL_LAYOUT, CHAIN, env_for, statistical_layout
from tests.processes import run_cli


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
