"""Attempt limits with lockouts for the doors residents and the public knock on without an account:
the resident log-in and the receipt check count their attempts per key in `resident_login_limits`.

A key is a keyed hash (of an ID number, of a client address), never the value in clear. Past the
limit in a window the key is locked out, for twice as long each time it happens again.
"""

from __future__ import annotations

from datetime import datetime

from backend.db import Connection, load_queries

Q = load_queries("backend.auth", "limits.sql")


async def reserve(conn: Connection, key: bytes, *, window_s: int, max_failures: int, lockout_s: int) -> int | None:
    """Counts an attempt for `key` before anything is checked; the seconds it stays locked, or None
    when it may go ahead. The attempt past `max_failures` in `window_s` locks the key for
    `lockout_s`, doubled for each earlier lockout, at most a day. `conn` should not be in a
    transaction, so that a refused attempt is counted although its request fails."""
    row = await conn.fetchrow(Q["bump_attempt"], key, float(window_s))
    assert row is not None
    locked: int | None = row["locked_for_s"]
    if locked is not None:
        return locked
    if row["failures"] <= max_failures:
        return None
    locked = await conn.fetchval(Q["lock_out"], key, float(lockout_s))
    if locked is None:  # a racing attempt locked the key first: its lockout is what is left
        locked = await conn.fetchval(Q["locked_for"], key)
    return locked or lockout_s


async def forgive(conn: Connection, key: bytes) -> None:
    """Gives back the attempt a success reserved, leaving the key's other failures counted."""
    await conn.execute(Q["forgive"], key)


async def clear(conn: Connection, key: bytes) -> None:
    """Forgets the key: its failures and its lockouts (the next lockout is the shortest again)."""
    await conn.execute(Q["clear"], key)


async def expire(conn: Connection, before: datetime) -> int:
    """Housekeeping: the keys whose window began before `before` and that are not locked out."""
    gone: int = await conn.fetchval(Q["expire"], before)
    return gone
