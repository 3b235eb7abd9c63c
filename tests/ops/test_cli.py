"""The `canbao` command line, run as a real process against a fresh test database (DATABASE_URL),
and once on the embedded default."""

from __future__ import annotations

import asyncio
import codecs
import os
import pty
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from argon2 import PasswordHasher

from backend import migrate
from backend.db import init_connection
from backend.divisions.service import Division, import_divisions
from backend.tools import demo
from tests.conftest import JWT_SECRET, PgServer
from tests.processes import CANBAO, FAST_HASHING, clean_env, data_dir, free_port, run_cli, wait_for_no_postgres

T = TypeVar("T")


def env_for(db_dsn: str, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_dsn, **FAST_HASHING, **extra)


def on_db(db_dsn: str, work: Callable[[asyncpg.Connection[Any]], Awaitable[T]]) -> T:
    async def main() -> T:
        conn = await asyncpg.connect(db_dsn)
        try:
            await init_connection(conn)
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def fetch(db_dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    async def work(conn: asyncpg.Connection[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await conn.fetch(query, *args)]

    return on_db(db_dsn, work)


def seed_divisions(db_dsn: str) -> None:
    divisions = [Division(code=c, parent_code=p, level=lvl, name=n) for c, p, lvl, n in demo.DIVISIONS]  # type: ignore[arg-type]
    on_db(db_dsn, lambda conn: import_divisions(conn, None, divisions))


def snapshot(db_dsn: str) -> dict[str, list[str]]:
    """Every row of every table, as text, in a stable order (but the key fingerprints a command
    registers on its first connection: backend/crypto.py)."""

    async def work(conn: asyncpg.Connection[Any]) -> dict[str, list[str]]:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'crypto_keys'"
            " ORDER BY tablename"
        )
        return {
            t["tablename"]: sorted(r[0] for r in await conn.fetch(f'SELECT t::text FROM "{t["tablename"]}" AS t'))
            for t in tables
        }

    return on_db(db_dsn, work)


# --- migrate -------------------------------------------------------------------------------------


def test_migrate_prints_the_revision_and_goes_down_to_base_and_up_again(
    db_dsn: str, pg_server: PgServer, database_name: str
) -> None:
    env = env_for(db_dsn, CANBAO_OWNER_DATABASE_URL=pg_server.owner_dsn(database_name))
    head = migrate.head_revision()
    tables = "SELECT to_regclass('users') IS NOT NULL, to_regclass('audit_log') IS NOT NULL"

    up = run_cli("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"schema at revision {head} (head {head})"

    down = run_cli("migrate", "--downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == f"schema at revision base (head {head})"
    assert fetch(db_dsn, tables) == [(False, False)]

    again = run_cli("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"schema at revision {head} (head {head})"
    assert fetch(db_dsn, tables) == [(True, True)]


def test_a_command_alone_on_the_embedded_default_starts_and_stops_its_own_postgres() -> None:
    with data_dir() as folder:
        result = run_cli("--data-dir", str(folder), "migrate", env=clean_env())
        assert result.returncode == 0, result.stderr
        assert f"schema at revision {migrate.head_revision()}" in result.stdout
        assert (folder / "pgdata" / "PG_VERSION").exists()
        assert wait_for_no_postgres(folder) == []


# --- users ---------------------------------------------------------------------------------------


def test_user_add_takes_the_password_from_stdin_and_stores_an_argon2id_hash(db_dsn: str) -> None:
    seed_divisions(db_dsn)
    password = "li-si-password-2026"
    result = run_cli(
        "user",
        "add",
        "li_si",
        "--role",
        "township_reviewer",
        "--division",
        "330106002000",
        "--full-name",
        "李四",
        "--password-stdin",
        env=env_for(db_dsn),
        stdin=password + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created li_si (township_reviewer, 330106002000) id=")
    assert password not in result.stdout + result.stderr
    [(role, division, full_name, active, password_hash)] = fetch(
        db_dsn, "SELECT role, division_code, full_name, active, password_hash FROM users WHERE username = 'li_si'"
    )
    assert (role, division, full_name, active) == ("township_reviewer", "330106002000", "李四", True)
    assert password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(password_hash, password)
    assert fetch(db_dsn, "SELECT action, entity FROM audit_log ORDER BY at, id") == [
        ("import", "divisions"),
        ("create", "user"),
    ]


@pytest.mark.parametrize(
    ("args", "password", "named"),
    [
        (["weak_pw", "--division", "330106001000"], "short", "password must be at least 10 characters"),
        (["weak_pw", "--division", "330106001000"], " padded-password ", "password must not start or end with spaces"),
        (["no", "--division", "330106001000"], "long-enough-password", "username:"),
        (["nowhere", "--division", "330106009000"], "long-enough-password", "division_code: no such division"),
        (["too_high", "--division", "330106000000"], "long-enough-password", "division_code: a township_staff works"),
        (["staff_a", "--division", "330106001000"], "long-enough-password", "username is already taken"),
    ],
    ids=["weak-password", "spaces-around-password", "short-username", "unknown-division", "wrong-level", "taken"],
)
def test_user_add_refuses_bad_input_naming_it_and_writes_nothing(
    db_dsn: str, args: list[str], password: str, named: str
) -> None:
    seed_divisions(db_dsn)
    on_db(db_dsn, _add_staff_a)
    before = snapshot(db_dsn)
    username, *rest = args
    result = run_cli(
        "user",
        "add",
        username,
        "--role",
        "township_staff",
        *rest,
        "--password-stdin",
        env=env_for(db_dsn),
        stdin=password + "\n",
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert named in result.stderr
    assert "nothing written" in result.stderr
    assert "Traceback" not in result.stderr
    assert password.strip() not in result.stderr
    assert snapshot(db_dsn) == before


async def _add_staff_a(conn: asyncpg.Connection[Any]) -> None:
    from backend.actor import Role
    from backend.admin.service import UserCreate, create_user
    from backend.auth.passwords import Passwords

    data = UserCreate(
        username="staff_a", password=demo.DEMO_PASSWORD, role=Role.TOWNSHIP_STAFF, division_code="330106001000"
    )
    await create_user(conn, None, Passwords(1, 64), data)


def test_user_disable_deactivates_the_user_and_revokes_their_sessions(db_dsn: str) -> None:
    seed_divisions(db_dsn)
    on_db(db_dsn, _add_staff_a)
    [(user_id,)] = fetch(db_dsn, "SELECT id FROM users WHERE username = 'staff_a'")
    fetch(db_dsn, "INSERT INTO refresh_families (id, user_id) VALUES (gen_random_uuid(), $1)", user_id)

    result = run_cli("user", "disable", "staff_a", env=env_for(db_dsn))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "disabled staff_a; their sessions are revoked"
    [(active, disabled_at)] = fetch(db_dsn, "SELECT active, disabled_at FROM users WHERE id = $1", user_id)
    assert active is False
    assert disabled_at is not None
    assert fetch(db_dsn, "SELECT revoke_reason FROM refresh_families WHERE user_id = $1", user_id) == [
        ("user_disabled",)
    ]
    assert fetch(db_dsn, "SELECT action, entity_id FROM audit_log WHERE action = 'disable'") == [
        ("disable", str(user_id))
    ]

    missing = run_cli("user", "disable", "nobody", env=env_for(db_dsn))
    assert missing.returncode == 1
    assert "no user 'nobody'" in missing.stderr


# --- divisions -----------------------------------------------------------------------------------

CHAIN = [
    ("330000000000", None, "province", "浙江省"),
    ("330100000000", "330000000000", "city", "杭州市"),
    ("330106000000", "330100000000", "district", "西湖区"),
    ("330106001000", "330106000000", "township", "北山街道"),
    ("330106001001", "330106001000", "village", "北山社区居委会"),
    ("330106001201", "330106001000", "village", "玉泉村委会"),
]


def code_layout(rows: list[tuple[str, str | None, str, str]]) -> str:
    return "code,name,parent_code\r\n" + "".join(f"{c},{n},{p or ''}\r\n" for c, p, _, n in rows)


def statistical_layout(rows: list[tuple[str, str | None, str, str]]) -> str:
    return "统计用区划代码,名称\r\n" + "".join(f"{c},{n}\r\n" for c, _, _, n in rows)


@pytest.mark.parametrize("layout", [code_layout, statistical_layout], ids=["code-name-parent", "statistical"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "gbk"])
def test_divisions_import_reads_both_layouts_in_utf8_with_bom_and_in_gbk(
    db_dsn: str, tmp_path: Path, layout: Callable[[list[tuple[str, str | None, str, str]]], str], encoding: str
) -> None:
    data = layout(CHAIN).encode(encoding)
    if encoding == "gbk":
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
    else:
        assert data.startswith(codecs.BOM_UTF8)
    path = tmp_path / "divisions.csv"
    path.write_bytes(data)

    first = run_cli("divisions", "import", str(path), env=env_for(db_dsn))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "6 rows: 6 new, 0 updated, 0 unchanged"
    assert fetch(db_dsn, "SELECT code, parent_code, level, name FROM divisions ORDER BY code") == sorted(CHAIN)

    again = run_cli("divisions", "import", str(path), env=env_for(db_dsn))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "6 rows: 0 new, 0 updated, 6 unchanged"
    assert fetch(db_dsn, "SELECT count(*) FROM audit_log WHERE action = 'import'") == [(1,)]


BAD_CODE_LAYOUT = """code,name,parent_code
330000000000,浙江省,
33010000000,杭州市,330000000000
330100000000,,330000000000
330000000000,浙江省,

330106001000,北山街道,330106000000
330200000000,宁波市,330000000000
"""

BAD_STATISTICAL_LAYOUT = """统计用区划代码,名称
330000000000,浙江省
33010000000,杭州市
330100000000,
330000000000,浙江省

330106001000,北山街道
330200000000,宁波市
"""


@pytest.mark.parametrize(
    ("text", "code_column", "name_column", "parent_column"),
    [
        (BAD_CODE_LAYOUT, "code", "name", "parent_code"),
        (BAD_STATISTICAL_LAYOUT, "统计用区划代码", "名称", "统计用区划代码"),
    ],
    ids=["code-name-parent", "statistical"],
)
def test_divisions_import_with_bad_rows_names_every_row_and_writes_nothing(
    db_dsn: str, tmp_path: Path, text: str, code_column: str, name_column: str, parent_column: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode("gbk"))
    before = snapshot(db_dsn)
    result = run_cli("divisions", "import", str(path), env=env_for(db_dsn))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"row 3, {code_column}: must be a 12-digit statistical division code",
        f"row 4, {name_column}: must not be empty",
        f"row 5, {code_column}: duplicate of row 2",
        f"row 7, {parent_column}: parent 330106000000 is neither in the file nor in the database",
        "error: 4 bad rows; nothing imported",
    ]
    assert snapshot(db_dsn) == before
    assert before["divisions"] == []


# --- demo ----------------------------------------------------------------------------------------


def test_demo_seed_twice_changes_nothing_the_second_time(db_dsn: str) -> None:
    env = env_for(db_dsn)
    first = run_cli("demo", "seed", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("[created]") == len(demo.USERS)
    assert demo.DEMO_PASSWORD in first.stdout
    after_first = snapshot(db_dsn)
    assert len(after_first["divisions"]) == len(demo.DIVISIONS)
    assert len(after_first["users"]) == len(demo.USERS)

    second = run_cli("demo", "seed", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("[exists]") == len(demo.USERS)
    assert "[created]" not in second.stdout
    assert snapshot(db_dsn) == after_first


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "1"],
        ["migrate"],
        ["user", "add", "wang_wu", "--role", "township_staff", "--division", "330106001000", "--password-stdin"],
        ["user", "disable", "wang_wu"],
        ["divisions", "import", "FILE"],
        ["lists", "import", "FILE", "--type", "deceased", "--effective", "2025-09-01"],
        ["enrollments", "import", "FILE"],
        ["demo", "seed"],
        ["simulate", "--tablets", "1", "--households", "1"],
        ["backup", "FILE"],
        ["restore", "FILE"],
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_a_bad_setting_stops_every_command_naming_the_variable(tmp_path: Path, command: list[str]) -> None:
    csv_file = tmp_path / "divisions.csv"
    csv_file.write_text(code_layout(CHAIN), encoding="utf-8")
    args = [str(csv_file) if a == "FILE" else a for a in command]
    # No DATABASE_URL: a command that read its settings too late would start an embedded server.
    with data_dir() as folder:
        env = clean_env(CANBAO_ACCESS_TOKEN_TTL_S="abc")
        result = run_cli("--data-dir", str(folder), *args, env=env, stdin="long-enough-password\n")
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "CANBAO_ACCESS_TOKEN_TTL_S" in result.stderr
        assert "Traceback" not in result.stderr
        assert list(folder.iterdir()) == []


# --- a user's mistakes: one line on stderr, never a traceback --------------------------------------


def assert_told(result: subprocess.CompletedProcess[str], exit_code: int, *named: str) -> None:
    assert result.returncode == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for text in named:
        assert text in result.stderr, result.stderr


def run_without_terminal(*args: str, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    """`canbao ARGS` in a session of its own: no controlling terminal, so no /dev/tty to prompt on."""
    return subprocess.run(
        [CANBAO, *args],
        check=False,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


@pytest.mark.parametrize("stdin", ["", "long-enough-password\nlong-enough-password\n"], ids=["empty", "piped"])
def test_user_add_without_a_terminal_or_password_stdin_says_how_to_pass_the_password(db_dsn: str, stdin: str) -> None:
    seed_divisions(db_dsn)
    before = snapshot(db_dsn)
    result = run_without_terminal(
        "user",
        "add",
        "wang_wu",
        "--role",
        "township_staff",
        "--division",
        "330106001000",
        env=env_for(db_dsn),
        stdin=stdin,
    )
    assert_told(result, 2, "--password-stdin", "no terminal")
    assert "EOFError" not in result.stderr
    assert "long-enough-password" not in result.stderr
    assert snapshot(db_dsn) == before


def test_user_add_with_an_empty_password_on_stdin_writes_nothing(db_dsn: str) -> None:
    seed_divisions(db_dsn)
    before = snapshot(db_dsn)
    result = run_cli(
        "user",
        "add",
        "wang_wu",
        "--role",
        "township_staff",
        "--division",
        "330106001000",
        "--password-stdin",
        env=env_for(db_dsn),
        stdin="",
    )
    assert_told(result, 1, "standard input is empty", "nothing written")
    assert snapshot(db_dsn) == before


def _on_a_terminal(args: list[str], env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Runs `canbao ARGS` on a pseudo-terminal, typing each answer after its prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling one
        os.execve(CANBAO, [CANBAO, *args], env)  # noqa: S606 (our own entry point, no shell wanted)
    output = b""
    deadline = time.monotonic() + 60
    try:
        for prompt, answer in zip([b"Password: ", b"Repeat: "], answers, strict=True):
            while prompt not in output and time.monotonic() < deadline:
                output += os.read(fd, 1024)
            os.write(fd, answer.encode() + b"\n")
        while time.monotonic() < deadline:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            output += chunk
    except OSError:  # EIO: the child has closed the terminal
        pass
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.parametrize(
    ("repeat", "exit_code", "said"),
    [("long-enough-password", 0, "created wang_wu"), ("other-password-2026", 2, "the passwords differ")],
    ids=["same", "differ"],
)
def test_user_add_on_a_terminal_asks_for_the_password_twice(
    db_dsn: str, repeat: str, exit_code: int, said: str
) -> None:
    seed_divisions(db_dsn)
    code, output = _on_a_terminal(
        ["user", "add", "wang_wu", "--role", "township_staff", "--division", "330106001000"],
        env_for(db_dsn),
        ["long-enough-password", repeat],
    )
    assert code == exit_code, output
    assert said in output
    assert "Traceback" not in output
    assert "long-enough-password" not in output  # not echoed
    assert len(fetch(db_dsn, "SELECT 1 FROM users WHERE username = 'wang_wu'")) == (1 if exit_code == 0 else 0)


IMPORTS = {
    "divisions": ["divisions", "import", "FILE"],
    "lists": ["lists", "import", "FILE", "--type", "deceased", "--effective", "2025-09-01"],
    "enrollments": ["enrollments", "import", "FILE"],
}


@pytest.mark.parametrize("command", IMPORTS.values(), ids=IMPORTS.keys())
@pytest.mark.parametrize(("file", "why"), [("missing.csv", "No such file or directory"), (".", "Is a directory")])
def test_every_import_names_a_file_it_cannot_read_and_writes_nothing(
    db_dsn: str, tmp_path: Path, command: list[str], file: str, why: str
) -> None:
    path = str(tmp_path / file)
    before = snapshot(db_dsn)
    result = run_cli(*[path if a == "FILE" else a for a in command], env=env_for(db_dsn))
    assert_told(result, 1, f"error: cannot read {path}: {why}")
    assert snapshot(db_dsn) == before


@pytest.mark.parametrize("command", IMPORTS.values(), ids=IMPORTS.keys())
def test_every_import_refuses_a_file_that_is_not_text_or_a_spreadsheet(
    db_dsn: str, tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x81\x82\xfe")
    result = run_cli(*[str(path) if a == "FILE" else a for a in command], env=env_for(db_dsn))
    assert_told(result, 1, "nothing")
    assert "UnicodeDecodeError" not in result.stderr


LIST_IMPORT = ["lists", "import", "FILE", "--type", "deceased"]
SIMULATE = ["simulate", "--tablets", "2", "--households", "5"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*LIST_IMPORT, "--effective", "2025-13-01"], "argument --effective: must be a date such as 2025-09-01"),
        ([*LIST_IMPORT, "--effective", "1.9.2025"], "argument --effective: must be a date such as 2025-09-01"),
        (["serve", "--port", "99999"], "argument --port: must be a port from 1 to 65535"),
        (["serve", "--port", "http"], "argument --port: must be a whole number"),
        (["serve", "--workers", "0"], "argument --workers: must be at least 1"),
        (["simulate", "--tablets", "0", "--households", "5"], "argument --tablets: must be at least 1"),
        (["simulate", "--tablets", "2", "--households", "-1"], "argument --households: must be at least 0"),
        ([*SIMULATE, "--offline-days", "0"], "argument --offline-days: must be at least 1"),
        ([*SIMULATE, "--url", "localhost:8000"], "argument --url: must be an http:// or https:// address"),
        (["user", "add", "wang_wu", "--role", "boss", "--division", "330106001000"], "argument --role: invalid choice"),
        (["migrate", "--revision", "head", "--downgrade", "base"], "not allowed with argument --revision"),
        (["migrate", "--revision", "9999"], "Can't locate revision identified by '9999'"),
        (["migrate", "--downgrade", "nosuch"], "Can't locate revision identified by 'nosuch'"),
    ],
    ids=[
        "bad-date",
        "not-iso-date",
        "port-range",
        "port-word",
        "no-workers",
        "no-tablets",
        "negative-households",
        "no-days",
        "url-scheme",
        "role",
        "two-targets",
        "revision",
        "downgrade",
    ],
)
def test_a_bad_option_value_exits_2_naming_the_option_and_writes_nothing(
    db_dsn: str, pg_server: PgServer, database_name: str, tmp_path: Path, args: list[str], named: str
) -> None:
    list_file = tmp_path / "deceased.csv"
    list_file.write_text("身份证号,姓名\n110105198001010016,张三\n", encoding="utf-8")
    before = snapshot(db_dsn)
    owner = pg_server.owner_dsn(database_name)  # what `canbao migrate` needs to get as far as its options
    result = run_cli(
        *[str(list_file) if a == "FILE" else a for a in args],
        env=env_for(db_dsn, CANBAO_JWT_SECRET=JWT_SECRET, CANBAO_OWNER_DATABASE_URL=owner),
        stdin="long-enough-password\n",
    )
    assert_told(result, 2, named)
    assert snapshot(db_dsn) == before


def test_a_database_url_that_answers_nothing_is_one_line_for_every_command(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=f"postgresql://canbao@127.0.0.1:{free_port()}/canbao", CANBAO_JWT_SECRET=JWT_SECRET)
    csv_file = tmp_path / "divisions.csv"
    csv_file.write_text(code_layout(CHAIN), encoding="utf-8")
    for command in [
        ["migrate"],
        ["user", "disable", "wang_wu"],
        ["divisions", "import", str(csv_file)],
        ["demo", "seed"],
    ]:
        result = run_cli(*command, env=env)
        assert_told(result, 1, "error: cannot connect to DATABASE_URL")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_data_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "canbao-data"
    not_a_folder.write_text("")
    result = run_cli("--data-dir", str(not_a_folder), "migrate", env=clean_env())
    assert_told(result, 1, f"error: cannot use {not_a_folder} as the data folder: it is a file")


def test_user_disable_of_an_unknown_user_is_one_line(db_dsn: str) -> None:
    result = run_cli("user", "disable", "nobody", env=env_for(db_dsn))
    assert_told(result, 1, "error: no user 'nobody'")
    assert result.stderr.count("\n") == 1


def test_simulate_against_a_url_where_no_server_answers_writes_nothing(db_dsn: str) -> None:
    before = snapshot(db_dsn)
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        "simulate",
        "--tablets",
        "1",
        "--households",
        "1",
        "--url",
        url,
        env=env_for(db_dsn, CANBAO_JWT_SECRET=JWT_SECRET),
    )
    assert_told(result, 1, f"error: cannot reach {url}")
    assert snapshot(db_dsn) == before
