"""Idempotency keys in PostgreSQL: the first answer to a key is kept and replayed.

The key row is inserted inside the request's transaction. A concurrent request with the same key
waits on that row until the first commits (then replays its answer) or rolls back (then runs
itself). Errors roll the row back with everything else, so a retry after a refusal is judged
afresh; only answers that changed something are replayed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from litestar import Response

from backend.config import Settings
from backend.db import Connection, load_queries
from backend.errors import DomainError, InvalidInput

Q = load_queries("backend", "idempotency.sql")
_encoder = msgspec.json.Encoder(order="deterministic")


class IdempotencyKeyRequired(DomainError):
    """Send an Idempotency-Key header (8 to 200 printable ASCII characters)"""

    status, code = 428, "idempotency_key_required"


class IdempotencyKeyReused(DomainError):
    """This Idempotency-Key was already used for a different request"""

    status, code = 422, "idempotency_key_reused"


class Stored(msgspec.Struct, frozen=True):
    status: int
    body: bytes

    def replayed(self) -> Response[bytes]:
        """The first answer again, marked as a replay."""
        return Response(
            self.body, status_code=self.status, media_type="application/json", headers={"Idempotent-Replayed": "true"}
        )


def request_hash(route: str, body: Any) -> bytes:
    return hashlib.sha256(route.encode() + b"\0" + _encoder.encode(body)).digest()


# What `check_key` admits, for the API document (the header's parameter declares it, checks nothing).
KEY_SCHEMA: dict[str, Any] = {"min_length": 8, "max_length": 200, "pattern": "^[!-~]([ -~]*[!-~])?$"}


def check_key(key: str | None) -> str:
    if key is None:
        raise IdempotencyKeyRequired()
    if not 8 <= len(key) <= 200 or not key.isascii() or not key.isprintable():
        raise InvalidInput("Idempotency-Key", "must be 8 to 200 printable ASCII characters")
    return key


async def claim(conn: Connection, actor_id: UUID, key: str, route: str, digest: bytes) -> Stored | None:
    """None: this request is the first with the key and should run. Else the stored answer."""
    inserted = await conn.fetchval(
        "INSERT INTO idempotency_keys (actor_id, key, route, request_hash) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING RETURNING true",
        actor_id,
        key,
        route,
        digest,
    )
    if inserted:
        return None
    row = await conn.fetchrow(
        "SELECT route, request_hash, status, response FROM idempotency_keys WHERE actor_id = $1 AND key = $2",
        actor_id,
        key,
    )
    assert row is not None and row["status"] is not None
    if row["route"] != route or row["request_hash"] != digest:
        raise IdempotencyKeyReused()
    return Stored(status=row["status"], body=bytes(row["response"]))


async def store(conn: Connection, actor_id: UUID, key: str, status: int, body: bytes) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status = $3, response = $4 WHERE actor_id = $1 AND key = $2",
        actor_id,
        key,
        status,
        body,
    )


async def expire(conn: Connection, settings: Settings, now: datetime) -> int:
    """Housekeeping: keys past the retention are forgotten (a retry that late is judged afresh)."""
    gone: int = await conn.fetchval(
        Q["expire_idempotency_keys"], now - timedelta(days=settings.idempotency_retention_days)
    )
    return gone
