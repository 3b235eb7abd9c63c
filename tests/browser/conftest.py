"""A real browser (Debian's chromium, driven by Playwright) against `canbao serve` on a test
database with the demo district and township A's records. One server and one browser per session.

Every page a test opens is watched: a request to another origin or a console error fails the test,
and one screenshot per page lands in test-output/screenshots/ (kept by CI in the workspace).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from backend.auth.passwords import Passwords
from backend.db import init_connection
from backend.tools import demo
from tests.conftest import JWT_SECRET, KEY_FILE, PASSWORD, PgServer
from tests.factories import ID_NUMBERS, POLICY_2026, member
from tests.processes import FAST_HASHING, PINNED_CLOCK, clean_env, serving

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
VILLAGE_A = "330106001001"


@dataclass
class World:
    url: str
    samples: dict[str, str] = field(default_factory=dict)
    dsn: str = ""  # the application role's, for a test that runs a job worker itself


def _api(client: httpx.Client, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def _token(client: httpx.Client, username: str, **extra: Any) -> str:
    body = _api(client, "POST", "/api/v1/auth/login", json={"username": username, "password": PASSWORD, **extra})
    return str(body["access_token"])


def township_a(url: str, admin_dsn: str) -> dict[str, str]:
    """Township A's day: a paid enrolment to confirm, a payment to void, a held sync conflict."""
    with httpx.Client(base_url=url, timeout=30) as client:
        admin = _token(client, "admin")
        _api(client, "POST", "/api/v1/policy-years/2026/versions", admin, json=POLICY_2026)
        _api(
            client,
            "POST",
            "/api/v1/users",
            admin,
            json={
                "username": "reviewer_a2",
                "password": PASSWORD,
                "role": "township_reviewer",
                "division_code": "330106001000",
            },
        )
        staff = _token(client, "staff_a")
        reviewer = _token(client, "reviewer_a")
        household = _api(
            client,
            "POST",
            "/api/v1/households",
            staff,
            json={"village_code": VILLAGE_A, "household_no": "0001", "members": [member(ID_NUMBERS[1], "张三")]},
        )
        person = household["members"][0]["person_id"]
        enrolled = _api(
            client,
            "POST",
            "/api/v1/enrollments",
            staff,
            json={"household_id": household["id"], "coverage_year": 2026, "person_ids": [person]},
        )

    async def registered_earlier() -> str:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(
                "UPDATE enrollments SET registered_on = '2025-09-01', registered_at = '2025-09-01'"
                " WHERE person_id = $1",
                uuid.UUID(person),
            )
            return str(await conn.fetchval("SELECT id FROM users WHERE username = 'staff_a'"))
        finally:
            await conn.close()

    staff_id = asyncio.run(registered_earlier())
    with httpx.Client(base_url=url, timeout=30) as client:
        _api(
            client,
            "POST",
            "/api/v1/receipt-blocks",
            reviewer,
            json={"collector_id": staff_id, "prefix": "A", "first_no": 1, "last_no": 50},
        )
        payment_id = str(uuid.uuid4())
        _api(
            client,
            "POST",
            "/api/v1/payments",
            reviewer,
            headers={"Idempotency-Key": "browser-payment-1"},
            json={
                "id": payment_id,
                "household_id": household["id"],
                "coverage_year": 2026,
                "person_ids": [person],
                "amount_fen": 50000,  # ¥100 over the premium: what a refund may take
                "method": "cash",
                "receipt_no": "A00000001",
                "collected_at": "2025-10-08T09:00:00+08:00",
                "collector_id": staff_id,
            },
        )
        # A tablet registers the same household again offline: a conflict held for the reviewers.
        device = _api(client, "POST", "/api/v1/devices", staff, json={"model": "Tab A8", "app_version": "1.0.0"})
        tablet = _token(client, "staff_a", device_id=device["device"]["id"], device_secret=device["device_secret"])
        again = {
            "type": "household.create",
            "seq": 1,
            "mutation_id": str(uuid.uuid4()),
            "household_id": str(uuid.uuid4()),
            "village_code": VILLAGE_A,
            "household_no": "0003",
            "members": [
                {"person_id": str(uuid.uuid4()), "name": "张三", "relation": "head", "id_number": ID_NUMBERS[1]}
            ],
        }
        pushed = _api(
            client,
            "POST",
            "/api/v1/sync/push",
            tablet,
            json={"protocol_version": 1, "device_id": device["device"]["id"], "mutations": [again]},
        )
        assert pushed["answers"][0]["code"] == "duplicate_household", pushed
    return {
        "household_id": household["id"],
        "enrollment_id": enrolled["items"][0]["id"],
        "payment_id": payment_id,
        "conflict_id": pushed["answers"][0]["conflict_ids"][0],
        "query_code": enrolled["query_code"],
    }


@pytest.fixture(scope="session")
def world(pg_server: PgServer) -> Iterator[World]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-noto-cjk (.ci/run does)")
    name = pg_server.create_database()

    async def seed() -> None:
        conn = await asyncpg.connect(pg_server.dsn(name))
        await init_connection(conn)
        try:
            await demo.seed(conn, Passwords(1, 64))
        finally:
            await conn.close()

    asyncio.run(seed())
    env = clean_env(
        DATABASE_URL=pg_server.app_dsn(name),
        CANBAO_JWT_SECRET=JWT_SECRET,
        CANBAO_KEY_FILE=KEY_FILE,
        CANBAO_JOB_WORKERS="0",
        CANBAO_MAINTENANCE_INTERVAL_S="0",
        CANBAO_LANGUAGE="zh-CN",
        **FAST_HASHING,
        **PINNED_CLOCK,
    )
    try:
        with serving("serve", env=env) as server:
            server.wait_ready()
            found = World(url=server.url, dsn=pg_server.app_dsn(name))
            found.samples = township_a(server.url, pg_server.dsn(name))
            yield found
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def playwright(world: World) -> Iterator[Playwright]:
    """After the world: Playwright's sync API keeps an event loop running, where asyncio.run cannot."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield launched
    finally:
        launched.close()


class Watched:
    """A page whose requests and console are watched; `shot(name)` saves its screenshot."""

    def __init__(self, page: Page, origin: str, test: str) -> None:
        self.page = page
        self.origin = origin
        self.test = test
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.test}-{name}.png"), full_page=True)

    def login(self, username: str) -> None:
        self.page.goto(self.origin + "/console/login")
        self.page.get_by_label("用户名").fill(username)
        self.page.get_by_label("密码").fill(PASSWORD)
        self.page.get_by_role("button", name="登录").click()
        self.page.wait_for_url(self.origin + "/console/")


@pytest.fixture
def watched(browser: Browser, world: World, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    watcher = Watched(page, world.url, request.node.name)
    try:
        yield watcher
    finally:
        context.close()
    assert not watcher.foreign, f"requests to another origin: {watcher.foreign}"
    assert not watcher.errors, f"console errors: {watcher.errors}"
