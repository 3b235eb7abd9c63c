"""Tablets for the sync tests: a registered device logged in for a staff member, its receipt
block, and helpers that push and pull through the real app."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.sync import sealed
from backend.sync.conflicts import service as conflicts
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from tests.conftest import KEYS, PASSWORD, auth_headers
from tests.factories import ID_NUMBERS, publish_policy

Client = AsyncTestClient[Litestar]
COLLECTED = datetime(2025, 10, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


@dataclass
class Tablet:
    device_id: uuid.UUID
    secret: str
    headers: dict[str, str]
    user_id: uuid.UUID
    next_seq: int = 1
    sent: list[Any] = field(default_factory=list)

    def seq(self) -> int:
        value = self.next_seq
        self.next_seq += 1
        return value


async def register_tablet(client: Client, username: str = "staff_a") -> Tablet:
    owner = await auth_headers(client, username)
    registered = await client.post("/api/v1/devices", json={"model": "Tab A8", "app_version": "1.0.0"}, headers=owner)
    assert registered.status_code == 201, registered.text
    device_id = registered.json()["device"]["id"]
    secret = registered.json()["device_secret"]
    login = await client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": PASSWORD, "device_id": device_id, "device_secret": secret},
    )
    assert login.status_code == 200, login.text
    user_id = uuid.UUID(registered.json()["device"]["owner_id"])
    return Tablet(uuid.UUID(device_id), secret, {"Authorization": f"Bearer {login.json()['access_token']}"}, user_id)


async def issue_block(
    client: Client, tablet: Tablet, reviewer: str = "reviewer_a", prefix: str = "T"
) -> dict[str, Any]:
    block = await client.post(
        "/api/v1/receipt-blocks",
        json={
            "collector_id": str(tablet.user_id),
            "device_id": str(tablet.device_id),
            "prefix": prefix,
            "first_no": 1,
            "last_no": 100,
        },
        headers=await auth_headers(client, reviewer),
    )
    assert block.status_code == 201, block.text
    body: dict[str, Any] = block.json()
    return body


async def world(client: Client, username: str = "staff_a", *, publish: bool = True) -> Tablet:
    """The 2026 policy (premium 40000 fen) and a tablet of `username` with receipts T00000001–T00000100
    (township A) or B00000001–B00000100 (township B)."""
    if publish:
        await publish_policy(client, await auth_headers(client, "admin"))
    tablet = await register_tablet(client, username)
    in_a = username.endswith("_a")
    await issue_block(client, tablet, "reviewer_a" if in_a else "reviewer_b", "T" if in_a else "B")
    return tablet


def envelope(
    tablet: Tablet, mutations: list[Any], fmt: codec.Format = "json", version: int = m.PROTOCOL_VERSION, **extra: Any
) -> bytes:
    raws = [msgspec.Raw(codec.encode(x, fmt)) for x in mutations]
    return codec.encode(
        m.PushRequest(protocol_version=version, device_id=tablet.device_id, mutations=raws, **extra), fmt
    )


async def push_raw(
    http: httpx.AsyncClient | Client, tablet: Tablet, body: bytes, fmt: codec.Format = "json", gzip: bool = False
) -> httpx.Response:
    headers = {**tablet.headers, "Content-Type": codec.media_type(fmt)}
    if gzip:
        body = codec.gzip_body(body)
        headers["Content-Encoding"] = "gzip"
    return await http.post("/api/v1/sync/push", content=body, headers=headers)


async def push(
    http: httpx.AsyncClient | Client, tablet: Tablet, mutations: list[Any], fmt: codec.Format = "json", **extra: Any
) -> m.PushResponse:
    response = await push_raw(http, tablet, envelope(tablet, mutations, fmt, **extra), fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(codec.media_type(fmt))
    return codec.decode(response.content, m.PushResponse, fmt)


async def pull(
    http: httpx.AsyncClient | Client,
    tablet: Tablet,
    cursor: str | None = None,
    page_token: str | None = None,
    limit: int = 1000,
) -> m.PullResponse:
    request = m.PullRequest(
        protocol_version=m.PROTOCOL_VERSION,
        device_id=tablet.device_id,
        cursor=cursor,
        page_token=page_token,
        limit=limit,
    )
    response = await http.post(
        "/api/v1/sync/pull", content=codec.encode(request, "json"), headers={**tablet.headers, "Content-Type": m.JSON}
    )
    assert response.status_code == 200, response.text
    return codec.decode(response.content, m.PullResponse, "json")


async def pull_all(
    http: httpx.AsyncClient | Client, tablet: Tablet, cursor: str | None = None
) -> tuple[list[m.Change], str, bool]:
    """Every page until the cursor: the changes, the new cursor, and whether a reset was asked."""
    changes: list[m.Change] = []
    token = None
    reset = False
    while True:
        page = await pull(http, tablet, cursor=cursor, page_token=token)
        reset = reset or page.reset
        changes.extend(page.changes)
        if not page.has_more:
            assert page.cursor is not None
            return changes, page.cursor, reset
        token = page.page_token


def clear(row: Any) -> dict[str, Any]:
    """A stored row as the app reads it: sealed numbers opened under their names (`phone_enc` →
    `phone`), a conflict's values and held mutation, a quarantined body."""
    values = conflicts.opened(sealed.opened_record(row))
    if "body_enc" in values:
        values["body"] = sealed.open_document(sealed.QUARANTINED_BODY, values.pop("body_enc"))
    return values


def sealed_set(column: str, value: str | None) -> tuple[bytes | None, bytes | None]:
    """The (…_hash, …_enc) pair a number column's value is stored as: `column` is its clear name."""
    kind = sealed.SEALED_FIELDS[column]
    return KEYS.index(kind, value), KEYS.seal(kind, value)


def upserts(changes: list[m.Change], entity: str) -> dict[uuid.UUID, Any]:
    return {c.row.id: c.row for c in changes if isinstance(c, m.Upsert) and c.row.__struct_config__.tag == entity}


def tombstones(changes: list[m.Change], entity: str) -> set[uuid.UUID]:
    return {c.id for c in changes if isinstance(c, m.Tombstone) and c.entity == entity}


def household_create(
    tablet: Tablet,
    *,
    numbers: tuple[int, ...] = (1, 2),
    household_no: str = "0101",
    village_code: str = "330106001001",
) -> m.HouseholdCreate:
    relations = ["head", "spouse", "child", "child"]
    return m.HouseholdCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=uuid.uuid4(),
        village_code=village_code,
        household_no=household_no,
        address="北山村1组",
        members=[
            m.NewMember(person_id=uuid.uuid4(), name=f"成员{i}", relation=relations[k], id_number=ID_NUMBERS[i])  # type: ignore[arg-type]
            for k, i in enumerate(numbers)
        ],
    )


def enrol(tablet: Tablet, created: m.HouseholdCreate) -> m.EnrollmentCreate:
    return m.EnrollmentCreate(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        household_id=created.household_id,
        coverage_year=2026,
        person_ids=[x.person_id for x in created.members],
    )


def payment(
    tablet: Tablet, created: m.HouseholdCreate, *, receipt: int = 1, amount_fen: int | None = None, **extra: Any
) -> m.PaymentRecord:
    people = [x.person_id for x in created.members]
    return m.PaymentRecord(
        seq=tablet.seq(),
        mutation_id=uuid.uuid4(),
        payment_id=extra.pop("payment_id", uuid.uuid4()),
        household_id=created.household_id,
        coverage_year=2026,
        person_ids=people,
        amount_fen=amount_fen if amount_fen is not None else 40000 * len(people),
        method="cash",
        receipt_no=f"T{receipt:08d}",
        collected_at=extra.pop("collected_at", COLLECTED),
        **extra,
    )
