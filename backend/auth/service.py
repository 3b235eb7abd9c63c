"""Login, refresh-token rotation with reuse detection and a grace window, logout; the login-attempt
limits that partner tokens share; ending a user's or a tablet's sessions."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import msgspec

from backend.actor import Actor, Role, Scope
from backend.audit.service import record
from backend.auth.passwords import Passwords
from backend.auth.tokens import (
    AccessClaims,
    SigningKey,
    encode_access,
    epoch,
    new_refresh_token,
    next_refresh_token,
    refresh_token_hash,
)
from backend.config import Settings
from backend.db import Connection, Pool, load_queries
from backend.errors import InvalidCredentials, InvalidToken, TooManyAttempts
from backend.i18n import _
from backend.ids import uuid7

Q = load_queries("backend.auth")


class TokenPair(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 (a token type, not a secret)


class AuthContext(msgspec.Struct, frozen=True):
    """What the auth services need from the running app."""

    pool: Pool
    settings: Settings
    key: SigningKey
    passwords: Passwords


def _pair(
    ctx: AuthContext,
    user_id: UUID,
    family_id: UUID,
    device_id: UUID | None,
    token_id: UUID,
    issued_at: datetime,
    refresh_token: str,
) -> TokenPair:
    """The answer to a login or refresh. Deterministic in its inputs, so a replay is byte-identical."""
    iat = epoch(issued_at)
    ttl = ctx.settings.access_token_ttl_s
    claims = AccessClaims(sub=user_id, sid=family_id, dev=device_id, jti=token_id, iat=iat, exp=iat + ttl)
    return TokenPair(access_token=encode_access(ctx.key, claims), refresh_token=refresh_token, expires_in=ttl)


async def reserve_attempts(conn: Connection, ctx: AuthContext, keys: list[bytes]) -> None:
    """Counts an attempt against each key (the name tried, then the client's address) before the
    secret is checked; raises TooManyAttempts when either is over its limit. Call it outside a
    transaction, so that a failure is counted although the request fails."""
    limits = [ctx.settings.login_max_failures_per_user, ctx.settings.login_max_failures_per_address]
    worst: int | None = None
    for key, limit in zip(keys, limits, strict=True):
        row = await conn.fetchrow(Q["bump_failures"], key, float(ctx.settings.login_failure_window_s))
        assert row is not None
        if row["failures"] > limit:
            worst = max(worst or 0, row["retry_after_s"])
    if worst is not None:
        raise TooManyAttempts(retry_after_s=worst)


async def release_attempts(conn: Connection, keys: list[bytes]) -> None:
    """After a success: the name's failures are forgotten, and the address gets its attempt back."""
    await conn.execute(Q["clear_failures"], keys[0])
    await conn.execute(Q["forgive_attempt"], keys[1])


async def login(
    ctx: AuthContext,
    username: str,
    password: str,
    client_addr: str,
    device_id: UUID | None = None,
    device_secret: str | None = None,
) -> TokenPair:
    keys = [ctx.key.keyed_hash("login-user", username.lower()), ctx.key.keyed_hash("login-addr", client_addr)]
    async with ctx.pool.acquire() as conn:
        # Autocommit: a failure must be counted even though the request fails.
        await reserve_attempts(conn, ctx, keys)
        user = await conn.fetchrow(Q["user_by_username"], username)
        ok = await ctx.passwords.verify(user["password_hash"] if user else None, password)
        device_ok = True
        if ok and user is not None and device_id is not None:
            device = await conn.fetchrow(Q["device_for_login"], device_id)
            device_ok = (
                device is not None
                and device["owner_id"] == user["id"]
                and device["status"] == "active"
                and hmac.compare_digest(device["secret_hash"], hashlib.sha256((device_secret or "").encode()).digest())
            )
        if not (ok and user is not None and user["active"] and device_ok):
            await record(
                conn,
                None,
                "login_failed",
                "user",
                user["id"] if user else None,
                division_code=user["division_code"] if user else None,
                summary={"reason": "device" if ok and not device_ok else "credentials"},
                device_id=device_id if device_ok else None,
            )
            raise InvalidCredentials()
        async with conn.transaction():
            await release_attempts(conn, keys)
            family_id, token_id, now = uuid7(), uuid7(), datetime.now(UTC).replace(microsecond=0)
            refresh = new_refresh_token()
            await conn.execute(Q["insert_family"], family_id, user["id"], device_id)
            await conn.execute(
                Q["insert_refresh_token"],
                token_id,
                family_id,
                refresh_token_hash(refresh),
                now,
                now + timedelta(seconds=ctx.settings.refresh_token_ttl_s),
            )
            actor = Actor(
                kind="user",
                id=user["id"],
                role=Role(user["role"]),
                scope=Scope(user["division_code"], user["level"]),
                device_id=device_id,
            )
            await record(conn, actor, "login", "user", user["id"], division_code=user["division_code"])
        return _pair(ctx, user["id"], family_id, device_id, token_id, now, refresh)


def _may_refresh(row: asyncpg.Record) -> bool:
    """A live session, or a suspended tablet's: it may still hand in its queued work (its pushes go to
    quarantine, SPEC §3) after its access token expires. The middleware still refuses that tablet
    every other route; a revoked tablet, a logout or a reused token end the session for good."""
    if row["device_id"] is not None and row["device_status"] == "suspended":
        return row["family_revoked_at"] is None or row["revoke_reason"] == "device_suspended"
    return row["family_revoked_at"] is None and (row["device_id"] is None or row["device_status"] == "active")


async def refresh(ctx: AuthContext, token: str) -> TokenPair:
    reuse_detected = False
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q["refresh_token_for_update"], refresh_token_hash(token))
        moment = datetime.now(UTC)
        now = moment.replace(microsecond=0)  # whole seconds, as in the JWT, so a replay rebuilds the same answer
        if row is None or row["expires_at"] <= now or not row["user_active"] or not _may_refresh(row):
            raise InvalidToken()
        child = next_refresh_token(ctx.key, token)
        if row["used_at"] is None:
            child_id = uuid7()
            await conn.execute(
                Q["insert_refresh_token"],
                child_id,
                row["family_id"],
                refresh_token_hash(child),
                now,
                now + timedelta(seconds=ctx.settings.refresh_token_ttl_s),
            )
            await conn.execute(Q["mark_used"], row["id"], child_id, moment)
            return _pair(ctx, row["user_id"], row["family_id"], row["device_id"], child_id, now, child)
        # The exact moment, not the whole second: with a grace of 0 s a reuse in the same second is still reuse.
        within_grace = moment - row["used_at"] < timedelta(seconds=ctx.settings.refresh_grace_s)
        # A statement of its own: when a concurrent rotation of this token held the lock, the row
        # above was re-read after it committed, but its replacement is newer than that query's snapshot.
        replacement = await conn.fetchrow(Q["refresh_replacement"], row["replaced_by"])
        if within_grace and replacement is not None and replacement["used_at"] is None:
            # The answer to the first presentation was lost on the way: give it again, unchanged.
            return _pair(
                ctx,
                row["user_id"],
                row["family_id"],
                row["device_id"],
                row["replaced_by"],
                replacement["issued_at"],
                child,
            )
        # Also over a suspension: the thief of a suspended tablet's token must not hand in work with it.
        await conn.execute(Q["revoke_family_reused"], row["family_id"])
        await record(
            conn,
            None,
            "refresh_token_reused",
            "refresh_family",
            row["family_id"],
            summary={"user_id": str(row["user_id"])},
            device_id=row["device_id"],
        )
        reuse_detected = True
    if reuse_detected:
        raise InvalidToken(_("refresh token was already used; the session is revoked"))
    raise AssertionError("unreachable")


async def logout(conn: Connection, actor: Actor) -> None:
    if actor.session_id is not None:
        await conn.execute(Q["revoke_family"], actor.session_id, "logout")
    await record(conn, actor, "logout", "user", actor.id)


async def revoke_user_sessions(conn: Connection, user_id: UUID, reason: str) -> None:
    """Ends every session of a user at once, also those of their suspended tablets (a disabled user
    or a changed password ends even the handing-in of work)."""
    await conn.execute(Q["revoke_user_families"], user_id, reason)


async def revoke_device_sessions(conn: Connection, device_id: UUID, reason: str) -> None:
    """Ends every session opened on a tablet: refresh tokens die now, access tokens at their next
    request (the middleware checks the tablet's status)."""
    await conn.execute(Q["revoke_device_families"], device_id, reason)


async def expire_login_windows(conn: Connection, settings: Settings, now: datetime) -> int:
    """Housekeeping: login-failure windows that can no longer limit anyone."""
    gone: int = await conn.fetchval(
        Q["expire_login_failures"], now - timedelta(seconds=settings.login_failure_window_s)
    )
    return gone
