"""The residents' page on a phone, civil affairs' list upload, and the district dashboard in a real
browser: each page watched for requests to another origin and console errors, one screenshot each."""

from __future__ import annotations

import asyncio
import re
import threading

from playwright.sync_api import Browser

from backend.app import job_handlers
from backend.db import create_pool
from backend.jobs import worker
from backend.jobs.service import Job
from tests.browser.conftest import Watched, World
from tests.conftest import make_settings
from tests.factories import ID_NUMBERS

PHONE = {"width": 360, "height": 740}


def run_a_job(dsn: str) -> Job | None:
    """One job run to its end by a worker of this process (the test server starts none), in a
    thread of its own: Playwright's event loop holds this one."""

    async def once() -> Job | None:
        pool = await create_pool(dsn, 1, 2)
        try:
            return await worker.run_one(pool, job_handlers(), make_settings(dsn))
        finally:
            await pool.close()

    ended: list[Job | None] = []
    thread = threading.Thread(target=lambda: ended.append(asyncio.run(once())))
    thread.start()
    thread.join(120)
    assert ended, "the worker did not finish"
    return ended[0]


def test_a_resident_reads_the_cover_and_the_money_on_a_phone(browser: Browser, world: World) -> None:
    context = browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    page = context.new_page()
    watched = Watched(page, world.url, "resident-phone")
    try:
        page.goto(world.url + "/r/")
        assert page.url.endswith("/r/login")
        watched.shot("login")
        page.get_by_label("公民身份号码").fill(ID_NUMBERS[1])
        page.get_by_label("姓名").fill("张三")
        page.get_by_label("查询码").fill(world.samples["query_code"])
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(world.url + "/r/")
        assert page.get_by_role("heading", name="我家的居民医保").is_visible()
        year = page.locator("section#y2026")
        assert year.get_by_role("heading", name="张三").is_visible()
        money = year.locator(".money")
        assert money.get_by_role("rowheader", name="应缴保费").is_visible()
        assert "¥400.00" in money.inner_text()
        assert money.locator("tr.total").count() == 1
        assert page.get_by_role("heading", name="最近一张缴费凭证").is_visible()
        assert "A00000001" in page.content()
        # Nothing wider than the phone: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        watched.shot("home")
        page.get_by_role("button", name="退出登录").click()
        page.wait_for_url("**/r/login")
    finally:
        context.close()
    assert not watched.foreign, f"requests to another origin: {watched.foreign}"
    assert not watched.errors, f"console errors: {watched.errors}"


def test_civil_affairs_drops_a_list_with_bad_rows_and_reads_its_row_report(watched: Watched, world: World) -> None:
    page = watched.page
    watched.login("civil")
    page.get_by_role("link", name="民政名单").click()
    assert page.get_by_role("heading", name="上传名单").is_visible()
    page.wait_for_load_state("load")  # upload.js (deferred) listens on the drop zone
    # The file dropped on the drop zone, as a clerk drags it from the desktop.
    content = (
        f"身份证号,姓名,有效期起\n{ID_NUMBERS[4]},钱七,2025-01-01\n123,坏号码,2025-01-01\n{ID_NUMBERS[5]},,2025-01-01\n"
    )
    transfer = page.evaluate_handle(
        """text => { const t = new DataTransfer();
                     t.items.add(new File([text], "低保名单.csv", {type: "text/csv"})); return t; }""",
        content,
    )
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": transfer})
    assert page.locator(".dropped").inner_text() == "低保名单.csv"
    page.get_by_label("名单类型").select_option("di_bao")
    watched.shot("upload")
    page.get_by_role("button", name="上传").click()
    page.wait_for_url(re.compile(r".*/console/jobs/[0-9a-f-]{36}$"))
    assert "排队等待处理" in page.locator("#job-status").inner_text()
    watched.shot("job-waiting")
    ended = run_a_job(world.dsn)
    assert ended is not None and ended.state == "failed"
    # htmx polls the job's status: the row report replaces the progress without a reload.
    page.get_by_role("heading", name="逐行检查结果").wait_for(timeout=10_000)
    rows = page.locator("table.report tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(0).inner_text() == "3"
    assert rows.nth(0).locator("td").nth(1).inner_text() == "身份证号"
    assert rows.nth(1).locator("td").nth(1).inner_text() == "姓名"
    assert "3行中有2行有错误" in page.locator("#job-status").inner_text()
    watched.shot("row-report")


def test_the_administrator_opens_the_district_dashboard(watched: Watched, world: World) -> None:
    page = watched.page
    watched.login("admin")
    page.get_by_role("link", name="全区概况").click()
    assert page.get_by_role("heading", name="全区概况").is_visible()
    # The days of township A's payment (2025-10-08): the rate by township and the collections.
    page.get_by_label("收缴日期自").fill("2025-10-01")
    page.get_by_label("至", exact=True).fill("2025-10-31")
    page.get_by_role("button", name="显示").click()
    page.wait_for_url("**/console/district?*")
    assert page.locator("svg.chart").count() >= 2
    assert page.locator("svg.chart rect.chart-s0").count() == 1, "one day of cash"
    assert page.get_by_role("img", name=re.compile("参保率|缴费率|资助")).count() >= 1
    watched.shot("district")
    page.get_by_role("link", name="年度政策").click()
    form = page.locator("form.edit").last
    form.get_by_label("集中参保期止").fill("2025-01-01")
    form.get_by_role("button", name="发布").click()
    alert = page.get_by_role("alert").inner_text()
    assert re.search(r"[\u4e00-\u9fff]", alert) and "must" not in alert, alert
    watched.shot("policy-error")
