"""Bearer-token authentication for every route that does not opt out, and role guards."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from backend.actor import Actor, Role, Scope
from backend.auth.tokens import (
    ACT_PARTNER,
    ACT_RESIDENT,
    ACT_USER,
    SCOPE_FHIR,
    SCOPE_RESIDENT,
    AccessClaims,
    decode_access,
)
from backend.db import load_queries
from backend.errors import Forbidden, InvalidToken, NotAuthenticated
from backend.i18n import _

Q = load_queries("backend.auth")

# The public receipt check answers anyone holding a receipt (backend/premiums/receipts.py).
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/schema", "^/api/v1/receipts/verify$"]
SUSPENDED_DEVICE_PATH = "/api/v1/sync/push"  # the one route a suspended tablet may call
# The only part of the API a resident's or a partner's token opens, whatever guards a route has.
RESIDENT_PATHS = "/api/v1/resident/"
PARTNER_PATHS = "/fhir/"


def partner_credential_id(secret_hash: bytes) -> UUID:
    """What a partner's token carries as its session: derived from the current secret's hash, so
    rotating the secret ends every token issued under the old one at its next request."""
    return UUID(bytes=hashlib.sha256(b"canbao-partner-credential:" + secret_hash).digest()[:16])


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _space, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated()
        claims = decode_access(connection.app.state.key, token.strip())
        path: str = connection.scope["path"]
        if claims.act == ACT_RESIDENT:
            actor = await resident_actor(connection, claims)
            if not path.startswith(RESIDENT_PATHS):
                raise Forbidden(_("a resident's token opens only /api/v1/resident"))
        elif claims.act == ACT_PARTNER:
            actor = await _partner(connection, claims, path)
        elif claims.act == ACT_USER and claims.scope is None:
            actor = await user_actor(connection, claims, path)
        else:
            raise InvalidToken()
        return AuthenticationResult(user=actor, auth=claims)


async def user_actor(connection: ASGIConnection[Any, Any, Any, Any], claims: AccessClaims, path: str) -> Actor:
    """A staff member's token: checked against the database on every request (the API's bearer
    header and the web console's session cookie alike)."""
    state = connection.app.state
    row = await state.pool.fetchrow(Q["actor_for_token"], claims.sub, claims.sid, claims.dev)
    if row is None or not row["active"]:
        raise InvalidToken()
    # A suspended tablet may still push its queued work, which lands in quarantine (SPEC §3).
    handing_in = (
        path == SUSPENDED_DEVICE_PATH
        and row["device_status"] == "suspended"
        and row["device_owner"] == claims.sub
        and (row["session_live"] or row["session_suspended"])
    )
    if not (row["session_live"] or handing_in):
        raise InvalidToken()
    if (
        claims.dev is not None
        and not handing_in
        and (row["device_status"] != "active" or row["device_owner"] != claims.sub)
    ):
        raise InvalidToken(_("this device is suspended or revoked"))
    return Actor(
        kind="user",
        id=claims.sub,
        role=Role(row["role"]),
        scope=Scope(row["division_code"], row["level"]),
        device_id=claims.dev,
        session_id=claims.sid,
    )


async def resident_actor(connection: ASGIConnection[Any, Any, Any, Any], claims: AccessClaims) -> Actor:
    """A resident's token: its session must be live and the person still a member of that household
    (the API's bearer header, limited to /api/v1/resident, and the residents' page's cookie alike)."""
    if claims.act != ACT_RESIDENT or claims.scope != SCOPE_RESIDENT or claims.dev is not None:
        raise InvalidToken()
    row = await connection.app.state.pool.fetchrow(Q["resident_for_token"], claims.sub, claims.sid)
    if row is None or not row["live"]:
        raise InvalidToken()
    return Actor.resident(claims.sub, row["household_id"], claims.sid)


async def _partner(connection: ASGIConnection[Any, Any, Any, Any], claims: AccessClaims, path: str) -> Actor:
    """A partner's token: the partner must be active and its secret the one the token was issued under."""
    if claims.scope != SCOPE_FHIR or claims.dev is not None:
        raise InvalidToken()
    row = await connection.app.state.pool.fetchrow(Q["partner_for_token"], claims.sub)
    if (
        row is None
        or not row["active"]
        or not hmac.compare_digest(partner_credential_id(row["secret_hash"]).bytes, claims.sid.bytes)
    ):
        raise InvalidToken()
    if not path.startswith(PARTNER_PATHS):
        raise Forbidden(_("a partner's token opens only /fhir"))
    return Actor(
        kind="partner", id=claims.sub, role=None, scope=Scope(row["division_code"], row["level"]), session_id=claims.sid
    )
