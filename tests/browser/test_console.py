"""The township reviewer's day in a real browser: log in, confirm an enrolment, two reviewers void a
payment (the one who asked cannot approve), settle a sync conflict, download the XLSX report."""

from __future__ import annotations

import io

import openpyxl

from tests.browser.conftest import Watched, World


def test_a_reviewer_logs_in_and_confirms_an_enrolment(watched: Watched, world: World) -> None:
    page = watched.page
    watched.page.goto(world.url + "/")  # the root leads to the login
    assert page.url.endswith("/console/login")
    watched.shot("login")
    watched.login("reviewer_a")
    assert page.get_by_role("heading", name="工作台").is_visible()
    assert page.locator("svg.chart").count() == 2, "the villages' rate, and the same over the weeks"
    assert page.locator('svg.chart[aria-label$="各村（社区）逐周参保率"]').count() == 1
    watched.shot("dashboard")
    page.get_by_role("link", name="参保审核").click()
    page.locator(f'input[name="ids"][value="{world.samples["enrollment_id"]}"]').check()
    watched.shot("enrollments")
    page.get_by_role("button", name="审核通过所选参保").click()
    assert page.get_by_role("status").inner_text() == "已审核 1 条参保记录。"
    watched.shot("enrollments-confirmed")


def test_two_reviewers_void_a_payment_and_the_one_who_asked_cannot_approve(watched: Watched, world: World) -> None:
    page = watched.page
    watched.login("reviewer_a")
    page.goto(world.url + f"/console/households/{world.samples['household_id']}")
    assert "A00000001" in page.content()
    watched.shot("household")
    page.get_by_label("类型").select_option("refund")
    page.get_by_label("原因").select_option("overpayment")
    page.get_by_role("button", name="提出申请").click()
    assert "另一名审核员" in page.locator("p.flash").first.inner_text()
    page.get_by_role("link", name="作废退费审批").click()
    page.get_by_role("button", name="同意", exact=True).click()
    refusal = page.get_by_role("alert").inner_text()
    assert refusal, "approving one's own request must be refused"
    watched.shot("adjustments-own")
    # The other reviewer of the township approves it.
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_url("**/console/login")
    watched.login("reviewer_a2")
    page.get_by_role("link", name="作废退费审批").click()
    page.get_by_role("button", name="同意", exact=True).click()
    assert page.get_by_role("status").inner_text() == "已同意。"
    assert "没有待审批的申请" in page.content()
    watched.shot("adjustments-approved")


def test_a_reviewer_settles_a_sync_conflict_seeing_the_three_values(watched: Watched, world: World) -> None:
    page = watched.page
    watched.login("reviewer_a")
    page.get_by_role("link", name="同步冲突与隔离").click()
    conflict = page.locator("section.item").filter(has=page.locator(f'form[action*="{world.samples["conflict_id"]}"]'))
    assert conflict.locator(".values > div").count() == 3
    assert "平板上报" in conflict.inner_text()
    watched.shot("sync")
    conflict.get_by_label("处理").select_option("discarded")
    conflict.get_by_label("说明").fill("同一户，已在服务器登记")
    conflict.get_by_role("button", name="处理").click()
    assert page.get_by_role("status").inner_text() == "冲突已处理。"
    watched.shot("sync-settled")


def test_the_xlsx_coverage_report_downloads_and_opens(watched: Watched, world: World) -> None:
    page = watched.page
    watched.login("reviewer_a")
    page.get_by_role("link", name="报表下载").click()
    watched.shot("reports")
    with page.expect_download() as info:
        page.locator("#download-coverage").click()
    download = info.value
    assert download.suggested_filename == "coverage-2026-village.xlsx"
    path = download.path()
    assert path is not None
    with open(path, "rb") as handle:
        book = openpyxl.load_workbook(io.BytesIO(handle.read()), read_only=True)
    rows = list(book.active.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert any("北山社区" in [str(c) for c in row] for row in rows), rows[:5]
