"""The printed receipt (参保缴费凭证) and query-code slip: rendered as PDF, read back as text (pypdf);
the receipt's verification code checked by the public endpoint; staff and residents see only theirs."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pypdf import PdfReader

from backend import crypto
from backend.app import create_app
from backend.i18n import use_language
from backend.premiums import receipts
from backend.printing.documents import ReceiptDocument, ReceiptMember, render_receipt
from mobile_sync_protocol.query_codes import derive_query_code, query_code_hash
from mobile_sync_protocol.rules.identity import mask
from tests.conftest import JWT_SECRET, auth_headers, make_settings
from tests.factories import ID_NUMBERS, create_household, member, publish_policy

Client = AsyncTestClient[Litestar]
KEY = JWT_SECRET.encode()
ZH = {"Accept-Language": "zh-CN"}
VERIFY = "/api/v1/receipts/verify"


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def enrol(client: Client, staff: dict[str, str], household: dict[str, Any]) -> dict[str, Any]:
    enrolled = await client.post(
        "/api/v1/enrollments",
        json={
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
        },
        headers=staff,
    )
    assert enrolled.status_code == 201, enrolled.text
    body: dict[str, Any] = enrolled.json()
    return body


async def pay(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    household: dict[str, Any],
    receipt_no: str,
    fen: int,
) -> str:
    """Collected by staff_a on 2025-10-08 from a household registered on 2025-09-01: a date that far
    back is recorded by a reviewer for the collector."""
    await conn.execute(
        "UPDATE enrollments SET registered_on = '2025-09-01', registered_at = '2025-09-01' WHERE household_id = $1",
        uuid.UUID(household["id"]),
    )
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    reviewer = await auth_headers(client, "reviewer_a")
    payment_id = str(uuid.uuid4())
    paid = await client.post(
        "/api/v1/payments",
        json={
            "id": payment_id,
            "household_id": household["id"],
            "coverage_year": 2026,
            "person_ids": [m["person_id"] for m in household["members"]],
            "amount_fen": fen,
            "method": "cash",
            "receipt_no": receipt_no,
            "collected_at": "2025-10-08T09:00:00+08:00",
            "collector_id": staff_a,
        },
        headers={**reviewer, "Idempotency-Key": f"receipt-test-{receipt_no}"},
    )
    assert paid.status_code == 201, paid.text
    return payment_id


class Paid:
    def __init__(self, household: dict[str, Any], other: dict[str, Any], code: str, ids: tuple[str, str]) -> None:
        self.household, self.other, self.query_code = household, other, code
        self.payment_id, self.other_payment_id = ids


@pytest.fixture(name="paid")
async def paid_fixture(client: Client, conn: asyncpg.Connection) -> Paid:  # type: ignore[type-arg]
    """Two households of township A enrolled for 2026 (premium 40000 fen each), each with a cash
    payment collected by staff_a (北山街道经办员): A00000001 of ¥800.00, A00000002 of ¥400.00."""
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    other = await create_household(client, staff, [member(ID_NUMBERS[3], "王五")], household_no="0002")
    code = (await enrol(client, staff, household))["query_code"]
    await enrol(client, staff, other)
    staff_a = await conn.fetchval("SELECT id::text FROM users WHERE username = 'staff_a'")
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={"collector_id": staff_a, "prefix": "A", "first_no": 1, "last_no": 100},
        headers=await auth_headers(client, "reviewer_a"),
    )
    assert block.status_code == 201, block.text
    ids = (await pay(client, conn, household, "A00000001", 80000), await pay(client, conn, other, "A00000002", 40000))
    return Paid(household, other, code, ids)


def printed_code(text: str) -> str:
    """The verification code as the receipt prints it (after 验证码：)."""
    line = next(line for line in text.splitlines() if "验证码" in line)
    return line.split("：", 1)[1].strip()


async def test_staff_receipt_is_a_chinese_pdf_with_the_payments_fields(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    paid: Paid,
) -> None:
    staff = await auth_headers(client, "staff_a")
    response = await client.get(f"/api/v1/payments/{paid.payment_id}/receipt.pdf", headers={**staff, **ZH})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    text = text_of(response.content)
    assert "城乡居民基本医疗保险参保缴费凭证" in text
    assert "A00000001" in text
    assert "¥800.00" in text and "¥400.00" in text  # paid; each member's premium
    assert "参保年度：2026" in text
    assert "北山街道经办员" in text  # the collector
    assert "缴费日期：2025-10-08" in text
    assert "张三" in text and "李四" in text
    assert mask(ID_NUMBERS[1]) in text and mask(ID_NUMBERS[2]) in text
    assert ID_NUMBERS[1] not in text and ID_NUMBERS[2] not in text  # never the full number
    assert paid.query_code in text  # the household's query code, printed on every receipt
    household_id = UUID(paid.household["id"])
    expected = receipts.verification_code(crypto.keys(), "A00000001", 80000, date(2025, 10, 8), household_id)
    assert printed_code(text) == expected
    # Printing a receipt is a read of personal data: audited, with whom it named.
    audited = await conn.fetchrow(
        "SELECT summary FROM audit_log WHERE action = 'read' AND entity = 'payment_receipt' AND entity_id = $1",
        paid.payment_id,
    )
    assert audited is not None and audited["summary"]["receipt_no"] == "A00000001"
    assert len(audited["summary"]["person_ids"]) == 2


async def test_the_same_payment_prints_the_same_bytes(client: Client, paid: Paid) -> None:
    staff = await auth_headers(client, "staff_a")
    url = f"/api/v1/payments/{paid.payment_id}/receipt.pdf"
    first = await client.get(url, headers={**staff, **ZH})
    second = await client.get(url, headers={**staff, **ZH})
    assert first.content == second.content
    english = await client.get(url, headers=staff)  # the suite's language: the words change, not the fields
    assert english.content != first.content and "A00000001" in text_of(english.content)


def test_a_voided_receipt_says_so() -> None:
    doc = ReceiptDocument(
        receipt_no="A00000009",
        verification_code="ABCD-EFGH-JKMN",
        coverage_year=2026,
        kind="premium",
        back_years=[],
        household_no="0001",
        village="北山街道 北山社区",
        address="",
        members=[
            ReceiptMember(
                name="张三", id_number_masked="110105********0014", premium_fen=40000, subsidy_fen=0, paid_fen=40000
            )
        ],
        amount_fen=40000,
        method="cash",
        collector="北山街道经办员",
        business_date=date(2025, 10, 8),
        query_code=None,
        voided=True,
        refunded_fen=0,
        check_path=receipts.CHECK_PATH,
    )
    with use_language("zh_CN"):
        text = text_of(render_receipt(doc))
    assert "作废" in text and "验证码：ABCD-EFGH-JKMN" in text
    with use_language("zh_CN"):
        assert "作废" not in text_of(render_receipt(msgspec_replace(doc, voided=False)))


def msgspec_replace(doc: ReceiptDocument, **changes: Any) -> ReceiptDocument:

    return msgspec.structs.replace(doc, **changes)


async def test_verification_says_genuine_only_for_the_receipts_own_code(client: Client, paid: Paid) -> None:
    household_id = UUID(paid.household["id"])
    keyring = crypto.keys()
    code = receipts.verification_code(keyring, "A00000001", 80000, date(2025, 10, 8), household_id)
    genuine = await client.get(VERIFY, params={"receipt_no": "A00000001", "code": code})  # no token: public
    assert genuine.status_code == 200, genuine.text
    assert genuine.json() == {
        "genuine": True,
        "coverage_year": 2026,
        "amount_fen": 80000,
        "business_date": "2025-10-08",
        "status": "valid",
    }
    # As a person types it off the paper: lower case, no hyphens, full-width characters.
    typed = code.replace("-", "").lower()
    assert (await client.get(VERIFY, params={"receipt_no": "A00000001", "code": typed})).json()["genuine"] is True
    # A receipt whose amount (or date, or household) was altered has another code.
    forged = receipts.verification_code(keyring, "A00000001", 90000, date(2025, 10, 8), household_id)
    other_day = receipts.verification_code(keyring, "A00000001", 80000, date(2025, 10, 9), household_id)
    another_number = receipts.verification_code(keyring, "A00000002", 80000, date(2025, 10, 8), household_id)
    for wrong in (forged, other_day, code[:-1] + ("2" if code[-1] != "2" else "3")):
        answer = await client.get(VERIFY, params={"receipt_no": "A00000001", "code": wrong})
        assert answer.json() == {
            "genuine": False,
            "coverage_year": None,
            "amount_fen": None,
            "business_date": None,
            "status": None,
        }
    assert (await client.get(VERIFY, params={"receipt_no": "A00000002", "code": another_number})).json()[
        "genuine"
    ] is False
    assert (await client.get(VERIFY, params={"receipt_no": "A00000099", "code": code})).json()["genuine"] is False
    # Nothing personal in an answer, genuine or not.
    assert paid.household["id"] not in genuine.text and "张三" not in genuine.text
    bad = await client.get(VERIFY, params={"receipt_no": "a-1", "code": code})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


@pytest.fixture(name="strict")
async def strict_client(seeded: None, db_dsn: str) -> AsyncIterator[Client]:
    """Three failures per address in a window, a lockout of 60 s."""
    settings = make_settings(db_dsn, resident_max_failures_per_address=3, resident_lockout_s=60)
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as test_client:
        yield test_client


async def test_wrong_codes_lock_the_caller_out(strict: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    answers = [
        (await strict.get(VERIFY, params={"receipt_no": "A00000001", "code": f"WRONG{i}"})).status_code
        for i in range(5)
    ]
    assert answers == [200, 200, 200, 429, 429]
    locked = await strict.get(VERIFY, params={"receipt_no": "A00000001", "code": "WRONG"})
    assert locked.json()["code"] == "too_many_attempts" and 1 <= int(locked.headers["retry-after"]) <= 60
    keys = await conn.fetch("SELECT key FROM resident_login_limits")
    assert len(keys) == 1 and len(keys[0]["key"]) == 32  # a keyed hash of the address, nothing in clear


async def test_other_townships_staff_get_404(client: Client, paid: Paid) -> None:
    for username in ("staff_b", "reviewer_b"):
        headers = await auth_headers(client, username)
        response = await client.get(f"/api/v1/payments/{paid.payment_id}/receipt.pdf", headers=headers)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    reviewer = await auth_headers(client, "reviewer_a")  # the same township's reviewer may print it
    assert (await client.get(f"/api/v1/payments/{paid.payment_id}/receipt.pdf", headers=reviewer)).status_code == 200


async def test_a_resident_gets_their_own_receipts_and_no_other(client: Client, paid: Paid) -> None:
    login = await client.post(
        "/api/v1/resident/login", json={"id_number": ID_NUMBERS[2], "name": "李四", "query_code": paid.query_code}
    )
    assert login.status_code == 200, login.text
    resident = {"Authorization": f"Bearer {login.json()['access_token']}", **ZH}
    listed = await client.get("/api/v1/resident/payments", headers=resident)
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["items"]] == [paid.payment_id]
    own = await client.get(f"/api/v1/resident/payments/{paid.payment_id}/receipt.pdf", headers=resident)
    assert own.status_code == 200 and own.headers["content-type"] == "application/pdf"
    text = text_of(own.content)
    assert "参保缴费凭证" in text and "A00000001" in text and mask(ID_NUMBERS[2]) in text
    other = await client.get(f"/api/v1/resident/payments/{paid.other_payment_id}/receipt.pdf", headers=resident)
    assert other.status_code == 404
    missing = await client.get(f"/api/v1/resident/payments/{uuid.uuid4()}/receipt.pdf", headers=resident)
    assert missing.status_code == 404
    staff_route = await client.get(f"/api/v1/payments/{paid.payment_id}/receipt.pdf", headers=resident)
    assert staff_route.status_code == 403  # a resident's token opens only /api/v1/resident


async def test_the_query_code_slip_prints_the_code_it_issues_and_stores_only_its_hash(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    await publish_policy(client, await auth_headers(client, "admin"))
    staff = await auth_headers(client, "staff_a")
    household = await create_household(
        client, staff, [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2], "李四", "spouse")]
    )
    head, spouse = (m["person_id"] for m in household["members"])
    body = {"household_id": household["id"], "coverage_year": 2026, "person_ids": [head]}
    slip = await client.post("/api/v1/enrollments/query-code.pdf", json=body, headers={**staff, **ZH})
    assert slip.status_code == 201, slip.text
    assert slip.headers["content-type"] == "application/pdf"
    text = text_of(slip.content)
    code = derive_query_code(KEY, UUID(household["id"]), 2026)
    assert "参保登记回执" in text and f"查询码：{code}" in text
    assert "张三" in text and mask(ID_NUMBERS[1]) in text and ID_NUMBERS[1] not in text
    # Stored: only the code's keyed hash, nowhere the code itself.
    stored = await conn.fetchrow(
        "SELECT code_hash, device_id FROM household_query_codes WHERE household_id = $1 AND coverage_year = 2026",
        UUID(household["id"]),
    )
    assert bytes(stored["code_hash"]) == query_code_hash(KEY, UUID(household["id"]), 2026, code)
    assert code.encode() not in bytes(stored["code_hash"])
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE summary::text LIKE '%' || $1 || '%'", code) == 0
    # The code opens the resident's door.
    login = await client.post(
        "/api/v1/resident/login", json={"id_number": ID_NUMBERS[1], "name": "张三", "query_code": code}
    )
    assert login.status_code == 200, login.text
    # A later enrolment of the household's spouse does not show the code again.
    later = await client.post(
        "/api/v1/enrollments/query-code.pdf", json={**body, "person_ids": [spouse]}, headers={**staff, **ZH}
    )
    assert later.status_code == 201, later.text
    later_text = text_of(later.content)
    assert code not in later_text and "李四" in later_text and "已于此前发放" in later_text
    # Another township's staff cannot enrol (or print) for it.
    outsider = await client.post(
        "/api/v1/enrollments/query-code.pdf", json=body, headers=await auth_headers(client, "staff_b")
    )
    assert outsider.status_code == 404
