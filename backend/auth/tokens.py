"""JWT access tokens (HS256 with a key id) and opaque rotating refresh tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt
import msgspec

from backend.config import Settings, SettingsError
from backend.errors import InvalidToken

ALGORITHM = "HS256"
ISSUER = "canbao"
AUDIENCE = "canbao-api"
KEY_FILE = "jwt-signing.key"

# Who a token speaks for (`act`), and the one part of the API each kind may call (`scope`).
ACT_USER = "user"
ACT_RESIDENT = "resident"
ACT_PARTNER = "partner"
SCOPE_RESIDENT = "resident"  # /api/v1/resident/…: one household
SCOPE_FHIR = "fhir"  # /fhir/…: one person per answer


class SigningKey(msgspec.Struct, frozen=True):
    secret: bytes
    kid: str

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKey:
        return cls(secret=secret, kid=hashlib.sha256(secret).hexdigest()[:16])

    def keyed_hash(self, purpose: str, value: str) -> bytes:
        """A stable pseudonym for `value` (rate-limit keys): nothing personal is stored in clear."""
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()


def load_signing_key(settings: Settings) -> SigningKey:
    """The key from CANBAO_JWT_SECRET; in embedded mode, one generated once into the data folder."""
    if settings.jwt_secret is not None:
        return SigningKey.from_secret(settings.jwt_secret.encode())
    if not settings.embedded:
        raise SettingsError(
            "CANBAO_JWT_SECRET", "required with DATABASE_URL, so every instance signs with the same key"
        )
    path = Path(settings.data_dir).expanduser() / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    secret = path.read_text().strip().encode()
    if len(secret) < 32:
        raise SettingsError("CANBAO_DATA_DIR", f"{path} holds a signing key shorter than 32 bytes")
    return SigningKey.from_secret(secret)


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    sub: UUID
    sid: UUID  # the session (refresh-token family): logout, reuse or a disabled device revoke the access token too
    dev: UUID | None = None
    act: str = ACT_USER
    scope: str | None = None  # staff tokens carry none: their reach is their role and division
    jti: UUID
    iat: int
    exp: int


def encode_access(key: SigningKey, claims: AccessClaims) -> str:
    payload: dict[str, Any] = msgspec.to_builtins(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    payload.update(iss=ISSUER, aud=AUDIENCE)
    return jwt.encode(payload, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


# Access tokens verified lately, by the key and the token (a keyed digest of it): a client sends the
# same token with every request of its 15 minutes, and PyJWT's parse (base64 checked character by
# character, the standard library's JSON, the key prepared again) cost 0.1 ms of every request. A
# token found here is checked for expiry again; revocation is the session check's, which runs on
# every request whatever this says. The oldest go first beyond VERIFIED_MAX.
_verified: dict[bytes, AccessClaims] = {}
VERIFIED_MAX = 10_000


def decode_access(key: SigningKey, token: str) -> AccessClaims:
    digest = hmac.digest(key.secret, token.encode(), "sha256")
    claims = _verified.get(digest)
    if claims is not None and claims.exp > time.time():
        return claims
    claims = _verify_access(key, token)
    if len(_verified) >= VERIFIED_MAX:
        del _verified[next(iter(_verified))]
    _verified[digest] = claims
    return claims


def _verify_access(key: SigningKey, token: str) -> AccessClaims:
    try:
        # One parse of the token (PyJWT checks its base64 character by character: parsing the header
        # apart first cost as much again, on every request).
        decoded = jwt.decode_complete(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )
        header = decoded["header"]
        if header.get("alg") != ALGORITHM or header.get("kid") != key.kid:
            raise InvalidToken()
        return msgspec.convert(decoded["payload"], AccessClaims, strict=False)
    except (jwt.PyJWTError, msgspec.ValidationError, ValueError) as exc:
        raise InvalidToken() from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def next_refresh_token(key: SigningKey, parent: str) -> str:
    """The token that replaces `parent`: derived, so a retry within the grace window gets it again."""
    digest = hmac.new(key.secret, b"canbao-refresh:" + parent.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())
