"""Civil affairs' screens: a list uploaded through the page becomes a job whose progress the page
polls, then its row report (row, column, problem); a version's diff against the one before; claims
decided; exclusion reviews; the subsidised persons not enrolled per village, downloaded."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import job_handlers
from backend.db import Pool, create_pool
from backend.jobs import worker
from tests.conftest import auth_headers
from tests.eligibility.test_check import csv
from tests.factories import ID_NUMBERS, create_household, member, publish_policy
from tests.jobs.test_jobs import fast, list_file, person
from tests.web.helpers import console_login

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Pool]:
    created = await create_pool(db_dsn, 1, 2)
    yield created
    await created.close()


async def page_upload(client: Client, csrf: str, content: bytes, *, effective_from: str = "2025-09-01") -> str:
    """Uploads through the page's form; the job's page it leads to."""
    answer = await client.post(
        "/console/lists",
        files={"file": ("低保名单.csv", content)},
        data={"type": "di_bao", "effective_from": effective_from, "_csrf": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    location: str = answer.headers["location"]
    assert re.fullmatch(r"/console/jobs/[0-9a-f-]{36}", location), location
    return location


async def test_an_upload_with_bad_rows_shows_its_progress_then_its_row_report(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    pool: Pool,
    db_dsn: str,
) -> None:
    csrf = await console_login(client, "civil")
    form = await client.get("/console/lists")
    assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
    assert 'src="/static/upload.js"' in form.text and "data-dropzone" in form.text
    refused = await client.post(
        "/console/lists", files={"file": ("x.csv", b"a")}, data={"type": "di_bao"}, follow_redirects=False
    )
    assert refused.status_code == 403, "no CSRF token, no upload"
    bad = list_file(3, bad_row=True) + f"{person(9)},,2025-01-01,330106001001\r\n".encode()
    job_page = await page_upload(client, csrf, bad)
    waiting = await client.get(job_page)
    assert waiting.status_code == 200
    assert f'hx-get="{job_page}/status"' in waiting.text and 'hx-trigger="every 1s"' in waiting.text
    assert await worker.run_one(pool, job_handlers(), fast(db_dsn)) is not None
    done = await client.get(f"{job_page}/status")
    assert done.status_code == 200 and "hx-trigger" not in done.text, "the polling stops when the job ends"
    assert "<html" not in done.text, "a fragment for htmx"
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>', done.text)
    assert [(row, column) for row, column, _problem in rows] == [("5", "身份证号"), ("6", "姓名")], done.text
    assert all(problem for _r, _c, problem in rows)
    assert "2 of 5 rows have errors" in done.text
    assert await conn.fetchval("SELECT count(*) FROM list_entries") == 0


async def test_a_new_version_shows_who_was_added_removed_and_changed(
    client: Client,
    pool: Pool,
    db_dsn: str,
) -> None:
    csrf = await console_login(client, "civil")
    first = csv(f"{ID_NUMBERS[1]},张三,2025-01-01,", f"{ID_NUMBERS[2]},李四,2025-01-01,")
    second = csv(f"{ID_NUMBERS[1]},张三,2025-03-01,", f"{ID_NUMBERS[3]},王五,2025-01-01,")
    for content, day in ((first, "2025-09-01"), (second, "2025-10-01")):
        job_page = await page_upload(client, csrf, content, effective_from=day)
        await worker.run_one(pool, job_handlers(), fast(db_dsn))
        done = await client.get(job_page)
        assert "loaded" in done.text, done.text
    link = re.search(r'href="(/console/lists/[0-9a-f-]{36})">See what changed', done.text)
    assert link, done.text
    version = await client.get(link.group(1))
    assert version.status_code == 200
    assert "Added 1, removed 1, changed 1." in version.text
    changes = re.findall(r'<tr class="change-(\w+)"><td>[^<]*</td><td>(\d+X?)</td>', version.text)
    assert sorted(changes) == sorted([("changed", ID_NUMBERS[1]), ("removed", ID_NUMBERS[2]), ("added", ID_NUMBERS[3])])


async def test_claims_are_decided_and_the_unenrolled_are_listed_per_village(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    household = await create_household(client, staff, [member(ID_NUMBERS[1], "张三")])
    claim = await client.post(
        "/api/v1/eligibility/claims",
        json={"person_id": household["members"][0]["person_id"], "coverage_year": 2026, "category": "di_bao"},
        headers=staff,
    )
    assert claim.status_code == 201, claim.text
    csrf = await console_login(client, "civil")
    queue = await client.get("/console/claims")
    assert f"/console/claims/{claim.json()['id']}/decide" in queue.text
    no_reason = await client.post(
        f"/console/claims/{claim.json()['id']}/decide", data={"decision": "reject", "_csrf": csrf}
    )
    assert "Give the reason" in no_reason.text
    accepted = await client.post(
        f"/console/claims/{claim.json()['id']}/decide", data={"decision": "accept", "reason": "", "_csrf": csrf}
    )
    assert accepted.status_code == 200 and "Claim accepted." in accepted.text
    assert await conn.fetchval("SELECT status FROM eligibility_claims") == "accepted"
    again = await client.post(
        f"/console/claims/{claim.json()['id']}/decide", data={"decision": "accept", "_csrf": csrf}
    )
    assert again.status_code == 200 and 'class="flash error"' in again.text, "a refusal is a message, not a 500"
    # 张三 is now subsidised (an accepted claim) and not enrolled: on the list of his village.
    unenrolled = await client.get("/console/unenrolled", params={"year": 2026})
    assert unenrolled.status_code == 200 and "1 subsidised persons are not enrolled for 2026." in unenrolled.text
    village = await client.get("/console/unenrolled", params={"year": 2026, "village": "330106001001"})
    assert "张三" in village.text and ID_NUMBERS[1] not in village.text, "numbers masked, as the API's report"
    file = await client.get(
        "/console/unenrolled/file", params={"year": 2026, "village": "330106001001", "format": "csv"}
    )
    assert file.status_code == 200 and "attachment" in file.headers["content-disposition"]
    assert "张三" in file.text
    xlsx = await client.get("/console/unenrolled/file", params={"year": 2026, "format": "xlsx"})
    assert xlsx.status_code == 200 and xlsx.content.startswith(b"PK")
    reviews = await client.get("/console/exclusion-reviews")
    assert reviews.status_code == 200 and "No reviews." in reviews.text
