"""Idempotency keys in PostgreSQL: the first answer to a key is kept and replayed.

The key row is inserted inside the request's transaction. A concurrent request with the same key
waits on that row until the first commits (then replays its answer) or rolls back (then runs
itself). Errors roll the row back with everything else, so a retry after a refusal is judged
afresh; only answers that changed something are replayed.

A request and its answer hold personal numbers (a household's members): the stored answer is sealed
(backend/crypto.py), bound to its actor and key, and the request is remembered by a keyed hash, since
a plain one of a body whose other fields are known gives a number away to a few thousand guesses.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from litestar import Response

from backend import crypto
from backend.config import Settings
from backend.db import Connection, load_queries
from backend.errors import DomainError, InvalidInput
from backend.i18n import _

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


# The kinds (associated data) of the keyed request hash and of the sealed answer.
REQUEST_DIGEST = "idempotent_request"
ANSWER = "idempotent_answer"


def request_hash(route: str, body: Any) -> bytes:
    return keyed_request_hash(hashlib.sha256(route.encode() + b"\0" + _encoder.encode(body)).digest())


def keyed_request_hash(sha256: bytes) -> bytes:
    """The blind index of a request's SHA-256 (migration 0017 converted the plain ones kept before)."""
    digest = crypto.keys().index(REQUEST_DIGEST, sha256.hex())
    assert digest is not None
    return digest


def answer_kind(actor_id: UUID, key: str) -> str:
    """A stored answer opens only as the answer to its own actor and key."""
    return f"{ANSWER}:{actor_id}:{key}"


# What `check_key` admits, for the API document (the header's parameter declares it, checks nothing).
KEY_SCHEMA: dict[str, Any] = {"min_length": 8, "max_length": 200, "pattern": "^[!-~]([ -~]*[!-~])?$"}


def check_key(key: str | None) -> str:
    if key is None:
        raise IdempotencyKeyRequired()
    if not 8 <= len(key) <= 200 or not key.isascii() or not key.isprintable():
        raise InvalidInput("Idempotency-Key", _("must be 8 to 200 printable ASCII characters"))
    return key


class Claim(msgspec.Struct, frozen=True):
    """A request's claim of its key, for a service to make in its own first statement (as
    `payments.record_payment` does: one round trip fewer); `stored` answers when it was not made."""

    actor_id: UUID
    key: str
    route: str
    digest: bytes


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
    return await stored(conn, Claim(actor_id, key, route, digest))


async def stored(conn: Connection, claim: Claim) -> Stored:
    """The answer stored for a key whose claim found it taken (the claim waited until the request
    that took it committed): the first answer, or `IdempotencyKeyReused` for another request."""
    row = await conn.fetchrow(
        "SELECT route, request_hash, status, response FROM idempotency_keys WHERE actor_id = $1 AND key = $2",
        claim.actor_id,
        claim.key,
    )
    assert row is not None and row["status"] is not None
    if row["route"] != claim.route or row["request_hash"] != claim.digest:
        raise IdempotencyKeyReused()
    return Stored(
        status=row["status"], body=crypto.keys().open_bytes(answer_kind(claim.actor_id, claim.key), row["response"])
    )


async def store(conn: Connection, actor_id: UUID, key: str, status: int, body: bytes) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET status = $3, response = $4 WHERE actor_id = $1 AND key = $2",
        actor_id,
        key,
        status,
        crypto.keys().seal_bytes(answer_kind(actor_id, key), body),
    )


def sealed_answer(claim: Claim, body: bytes) -> tuple[bytes, UUID, str]:
    """`store`'s parameters for a statement of the service's own that stores the answer (sealed,
    actor, key): one round trip fewer."""
    return crypto.keys().seal_bytes(answer_kind(claim.actor_id, claim.key), body), claim.actor_id, claim.key


async def expire(conn: Connection, settings: Settings, now: datetime) -> int:
    """Housekeeping: keys past the retention are forgotten (a retry that late is judged afresh)."""
    gone: int = await conn.fetchval(
        Q["expire_idempotency_keys"], now - timedelta(days=settings.idempotency_retention_days)
    )
    return gone
