"""Nothing in clear on disk: people registered every way Canbao knows (REST, a sync push, a list
upload, a history import, a claim, a resident login, racing registrations that break a unique
index), then a checkpoint, a WAL switch and a log rotation — and no identity number anywhere under
the database's data folder (tables, WAL, server log) or in the application's log."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from backend import migrate
from backend.app import create_app
from backend.auth.passwords import Passwords
from backend.db import init_connection
from backend.embedded import EmbeddedPostgres
from backend.tools import demo
from tests.conftest import KEYS, auth_headers, make_settings
from tests.factories import ID_NUMBERS, member, publish_policy
from tests.processes import clean_env
from tests.sync_world import enrol, household_create, issue_block, push, register_tablet

# Who is registered how (ID_NUMBERS are valid numbers; each way gets its own).
REST = ID_NUMBERS[1], ID_NUMBERS[2]
PUSHED = ID_NUMBERS[3], ID_NUMBERS[4]
LISTED = ID_NUMBERS[5]
HISTORY = ID_NUMBERS[6]
RACED = ID_NUMBERS[7]
PHONE = "13912345678"
EVERY = (*REST, *PUSHED, LISTED, HISTORY, RACED, PHONE)
CANARY = "canary-in-clear-4e1f"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__!r}")


@pytest.fixture
def app_log() -> Iterator[Captured]:
    handler = Captured()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _hits(folder: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle in needles:
            if needle.encode() in data:
                found.setdefault(needle, []).append(str(path.relative_to(folder)))
    return found


async def _work(dsn: str, folder: Path) -> None:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    settings = make_settings(dsn)
    try:
        await demo.seed(conn, Passwords(settings.argon2_time_cost, settings.argon2_memory_kib))
        app = create_app(settings, configure_logs=False)
        async with AsyncTestClient(app) as client:
            admin, staff = await auth_headers(client, "admin"), await auth_headers(client, "staff_a")
            civil = await auth_headers(client, "civil")
            await publish_policy(client, admin)
            # REST, enrolled at once (a query code for the resident login below).
            created = await client.post(
                "/api/v1/households",
                json={
                    "village_code": "330106001001",
                    "household_no": "0001",
                    "phone": PHONE,
                    "enrol_year": 2026,
                    "members": [member(REST[0], "张三", phone=PHONE), member(REST[1], "李四", "spouse")],
                },
                headers={**staff, "Idempotency-Key": "register-0001-first"},
            )
            assert created.status_code == 201, created.text
            code = created.json()["query_code"]
            found = await client.post("/api/v1/households/search", json={"id_number": REST[0]}, headers=staff)
            assert found.status_code == 200
            # A resident's login.
            login = await client.post(
                "/api/v1/resident/login", json={"id_number": REST[1], "name": "李四", "query_code": code}
            )
            assert login.status_code == 200, login.text
            # A tablet's push (a household and its enrolment), and a pull of what it holds.
            tablet = await register_tablet(client)
            await issue_block(client, tablet)
            made = household_create(tablet, numbers=(3, 4), household_no="0102")
            answer = await push(client, tablet, [made, enrol(tablet, made)])
            assert all(r.status == "applied" for r in answer.answers), answer
            # A civil-affairs list naming someone, and a claim.
            listed = await client.post(
                "/api/v1/eligibility/lists",
                files={"file": ("list.csv", f"身份证号,姓名,所属村\n{LISTED},王五,330106001001\n".encode())},
                data={"type": "di_bao", "effective_from": "2025-09-01"},
                headers=civil,
            )
            assert listed.status_code == 201, listed.text
            claim = await client.post(
                "/api/v1/eligibility/claims",
                json={
                    "person_id": created.json()["members"][0]["person_id"],
                    "coverage_year": 2026,
                    "category": "te_kun",
                },
                headers=staff,
            )
            assert claim.status_code == 201, claim.text
            # Eight racing registrations of one number: one wins, the others break the unique index.
            raced = await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/households",
                        json={
                            "village_code": "330106001001",
                            "household_no": f"09{i:02d}",
                            "members": [member(RACED, "赵六")],
                        },
                        headers=staff,
                    )
                    for i in range(8)
                )
            )
            assert sorted(r.status_code for r in raced)[0] == 201
            assert {r.status_code for r in raced} <= {201, 409}
        # The old system's history, by the command line.
        history = folder.parent / "history.csv"
        history.write_text(f"身份证号,年度,状态\n{HISTORY},2025,paid\n", encoding="utf-8")
        imported = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backend.cli", "enrollments", "import", str(history)],
            env=clean_env(DATABASE_URL=dsn, CANBAO_ARGON2_TIME_COST="1", CANBAO_ARGON2_MEMORY_KIB="64"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert imported.returncode == 0, imported.stderr
        assert await conn.fetchval("SELECT count(*) FROM enrollment_history") == 1
        assert await conn.fetchval("SELECT count(*) FROM persons") == 5
        await conn.execute("CREATE TABLE canary (v text)")
        await conn.execute("INSERT INTO canary VALUES ($1)", CANARY)
        await conn.execute("CHECKPOINT")
        await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("SELECT pg_rotate_logfile()")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def test_no_identity_number_is_written_in_clear_anywhere(tmp_path: Path, app_log: Captured) -> None:
    folder = tmp_path / "pg"
    embedded = EmbeddedPostgres(folder)
    dsn = embedded.start()
    try:
        migrate.upgrade(dsn, keyring=KEYS)
        asyncio.run(_work(dsn, folder))
    finally:
        embedded.release()
    on_disk = _hits(folder, EVERY)
    assert on_disk == {}, f"in clear on disk: {on_disk}"
    in_log = [n for n in EVERY if any(n in line for line in app_log.lines)]
    assert in_log == [], f"in clear in the application's log: {in_log}"
    # The scan sees what is written: a value stored in clear on purpose is found in the same run.
    assert CANARY in _hits(folder, (CANARY,))
