"""Argon2id password hashing, off the event loop."""

from __future__ import annotations

import anyio.to_thread
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from backend.i18n import _


class Passwords:
    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID)
        # Verified for unknown users so that a miss costs what a hit costs.
        self._dummy = self._hasher.hash("canbao-dummy-password")

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        return await anyio.to_thread.run_sync(check)


def check_password_strength(password: str) -> str | None:
    """Returns why a new password is refused, or None."""
    if len(password) < 10:
        return _("must be at least 10 characters")
    if len(password) > 256:
        return _("must be at most 256 characters")
    if password.strip() != password:
        return _("must not start or end with spaces")
    return None
