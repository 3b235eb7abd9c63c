"""A payment's receipt (参保缴费凭证) as a PDF, and the public check that a receipt is genuine.

Each receipt carries a verification code: a keyed digest (the keyring's index key, which never
changes, so a receipt stays checkable for as long as it is kept) of the receipt number, the amount,
the business date and the household. Anyone holding the paper can ask `check_receipt` whether the
number and code belong together; the answer names the amount, date and year, nothing personal.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec

from backend import crypto
from backend.actor import Actor
from backend.audit.service import persons, record
from backend.auth import limits
from backend.config import Settings
from backend.crypto import BIRTH_CERT, ID_NUMBER
from backend.db import Connection, load_queries
from backend.enrollment import enrollments
from backend.errors import NotFound, TooManyAttempts
from backend.printing.documents import ReceiptDocument, ReceiptMember, render_receipt
from mobile_sync_protocol.query_codes import QUERY_CODE_ALPHABET, normal_query_code
from mobile_sync_protocol.rules.identity import mask

Q = load_queries("backend.premiums", "receipts.sql")

CHECK_PATH = "/api/v1/receipts/verify"
CODE_KIND = "receipt_code"  # the keyed digest's purpose: never equal to a blind index of a number
CODE_LENGTH = 12  # 31^12, about 59 bits: far beyond guessing at the check's rate limit
CODE_GROUP = 4
_NO_RECEIPT = ("", 0, date(2000, 1, 1), UUID(int=0))


def verification_code(
    keyring: crypto.Keyring, receipt_no: str, amount_fen: int, business_date: date, household_id: UUID
) -> str:
    """The code printed on a receipt, in groups (`ABCD-EFGH-JKMN`), from the query codes' alphabet
    (no 0/O or 1/I/L to misread)."""
    digest = keyring.index(CODE_KIND, f"{receipt_no}|{amount_fen}|{business_date.isoformat()}|{household_id}")
    assert digest is not None
    number = int.from_bytes(digest[:16], "big")
    letters = []
    for _position in range(CODE_LENGTH):
        number, index = divmod(number, len(QUERY_CODE_ALPHABET))
        letters.append(QUERY_CODE_ALPHABET[index])
    code = "".join(letters)
    return "-".join(code[i : i + CODE_GROUP] for i in range(0, CODE_LENGTH, CODE_GROUP))


def _masked(keyring: crypto.Keyring, row: asyncpg.Record) -> str:
    return mask(keyring.open(ID_NUMBER, row["id_number_enc"]) or keyring.open(BIRTH_CERT, row["birth_cert_enc"]) or "")


async def _receipt(conn: Connection, actor: Actor, payment: asyncpg.Record, code_key: bytes) -> bytes:
    """The receipt of a payment already found and allowed: its members, and the read audited."""
    rows = await conn.fetch(Q["receipt_members"], payment["id"], payment["person_ids"], payment["coverage_year"])
    keyring = crypto.keys()
    premium = payment["kind"] == "premium"
    members = [
        ReceiptMember(
            name=r["name"],
            id_number_masked=_masked(keyring, r),
            premium_fen=(r["premium_fen"] or 0) if premium else None,
            subsidy_fen=min(r["subsidy_fen"] or 0, r["premium_fen"] or 0) if premium else None,
            paid_fen=r["paid_fen"],
        )
        for r in rows
    ]
    village = " ".join(n for n in (payment["township_name"], payment["village_name"]) if n)
    document = ReceiptDocument(
        receipt_no=payment["receipt_no"],
        verification_code=verification_code(
            keyring, payment["receipt_no"], payment["amount_fen"], payment["business_date"], payment["household_id"]
        ),
        coverage_year=payment["coverage_year"],
        kind=payment["kind"],
        back_years=list(payment["back_years"]),
        household_no=payment["household_no"],
        village=village,
        address=payment["address"],
        members=members,
        amount_fen=payment["amount_fen"],
        method=payment["method"],
        collector=payment["collector_name"] or payment["collector_username"],
        business_date=payment["business_date"],
        query_code=await enrollments.household_query_code(
            conn, code_key, payment["household_id"], payment["coverage_year"]
        ),
        voided=payment["voided"],
        refunded_fen=payment["refunded_fen"],
        check_path=CHECK_PATH,
    )
    await record(
        conn,
        actor,
        "read",
        "payment_receipt",
        payment["id"],
        division_code=payment["village_code"],
        summary={"receipt_no": payment["receipt_no"], **persons(r["person_id"] for r in rows)},
    )
    return render_receipt(document)


async def staff_receipt(conn: Connection, actor: Actor, payment_id: UUID, code_key: bytes) -> bytes:
    """A payment's receipt for staff whose divisions hold it (as `payments.get_payment`)."""
    payment = await conn.fetchrow(Q["receipt_payment"], payment_id)
    if payment is None or not actor.in_scope(payment["village_code"]):
        raise NotFound()
    return await _receipt(conn, actor, payment, code_key)


async def resident_receipt(conn: Connection, actor: Actor, payment_id: UUID, code_key: bytes) -> bytes:
    """A payment's receipt for a resident: only a payment of their own household."""
    payment = await conn.fetchrow(Q["receipt_payment"], payment_id)
    if (
        actor.kind != "resident"
        or actor.household_id is None
        or payment is None
        or payment["household_id"] != actor.household_id
    ):
        raise NotFound()
    return await _receipt(conn, actor, payment, code_key)


class HouseholdPayment(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID  # for its receipt: GET /api/v1/resident/payments/{id}/receipt.pdf
    receipt_no: str
    coverage_year: int
    amount_fen: int
    method: str
    kind: str
    business_date: date
    voided: bool
    refunded_fen: int


class HouseholdPayments(msgspec.Struct, frozen=True):
    items: list[HouseholdPayment]


async def resident_payments(conn: Connection, actor: Actor, year: int | None) -> HouseholdPayments:
    """A resident's own household's payments, each with the id its receipt is fetched by."""
    if actor.kind != "resident" or actor.household_id is None:
        raise NotFound()
    rows = await conn.fetch(Q["household_payments"], actor.household_id, year)
    await record(
        conn,
        actor,
        "read",
        "resident_payments",
        actor.household_id,
        division_code=rows[0]["village_code"] if rows else None,
        summary={"year": year, "payments": len(rows)},
        flushed=False,  # the only write: a resident's read of their own household
    )
    return HouseholdPayments(
        [msgspec.convert({k: v for k, v in r.items() if k != "village_code"}, HouseholdPayment) for r in rows]
    )


# The public check ------------------------------------------------------------------------------


class ReceiptCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a receipt number and verification code belong together; if they do, what was paid."""

    genuine: bool
    coverage_year: int | None = None
    amount_fen: int | None = None
    business_date: date | None = None
    status: Literal["valid", "voided", "refunded"] | None = None  # a genuine receipt of a voided payment is void


async def _reserve(conn: Connection, key: bytes, settings: Settings) -> None:
    """Counts a check against the caller; raises TooManyAttempts while the caller is locked out
    (the resident log-in's limits per address: a code cannot be guessed faster than a query code)."""
    locked = await limits.reserve(
        conn,
        key,
        window_s=settings.resident_failure_window_s,
        max_failures=settings.resident_max_failures_per_address,
        lockout_s=settings.resident_lockout_s,
    )
    if locked is not None:
        raise TooManyAttempts(retry_after_s=locked)


async def check_receipt(
    conn: Connection, settings: Settings, caller_key: bytes, receipt_no: str, code: str
) -> ReceiptCheck:
    """Whether `code` is the verification code of receipt `receipt_no`. `conn` is not in a
    transaction, so a wrong code counts against `caller_key` (a keyed hash of the caller's address)
    although the answer is a refusal; a genuine receipt gives the attempt back."""
    await _reserve(conn, caller_key, settings)
    row = await conn.fetchrow(Q["receipt_to_check"], receipt_no)
    # A number nobody holds is answered after the same work, with a code nobody can match.
    parts = (
        _NO_RECEIPT
        if row is None
        else (row["receipt_no"], row["amount_fen"], row["business_date"], row["household_id"])
    )
    expected = normal_query_code(verification_code(crypto.keys(), *parts))
    genuine = hmac.compare_digest(expected.encode(), normal_query_code(code).encode()) and row is not None
    if not genuine or row is None:
        return ReceiptCheck(genuine=False)
    await limits.forgive(conn, caller_key)
    status: Literal["valid", "voided", "refunded"] = (
        "voided" if row["voided"] else "refunded" if row["refunded_fen"] else "valid"
    )
    return ReceiptCheck(
        genuine=True,
        coverage_year=row["coverage_year"],
        amount_fen=row["amount_fen"],
        business_date=row["business_date"],
        status=status,
    )
