"""Who is calling, and the one helper that restricts rows to the caller's divisions."""

from __future__ import annotations

import enum
from typing import Literal
from uuid import UUID

import msgspec


class Role(enum.StrEnum):
    TOWNSHIP_STAFF = "township_staff"
    TOWNSHIP_REVIEWER = "township_reviewer"
    CIVIL_AFFAIRS = "civil_affairs"
    DISTRICT_ADMIN = "district_admin"


STAFF_ROLES = frozenset(Role)

# 12-digit statistical division codes are hierarchical: 2 province, 4 city, 6 district (GB/T 2260),
# 9 township, 12 village. A division's descendants are exactly the codes sharing its prefix.
LEVEL_PREFIX = {"province": 2, "city": 4, "district": 6, "township": 9, "village": 12}

# Which division levels a role's scope may be (SPEC §1).
ROLE_LEVELS: dict[Role, frozenset[str]] = {
    Role.TOWNSHIP_STAFF: frozenset({"township"}),
    Role.TOWNSHIP_REVIEWER: frozenset({"township"}),
    Role.CIVIL_AFFAIRS: frozenset({"district", "township"}),
    Role.DISTRICT_ADMIN: frozenset({"district"}),
}


class Scope(msgspec.Struct, frozen=True):
    """A division and everything under it, as an inclusive range of 12-digit codes."""

    division_code: str
    level: str

    @property
    def prefix(self) -> str:
        return self.division_code[: LEVEL_PREFIX[self.level]]

    @property
    def low(self) -> str:
        return self.prefix.ljust(12, "0")

    @property
    def high(self) -> str:
        return self.prefix.ljust(12, "9")

    def contains(self, code: str | None) -> bool:
        return code is not None and self.low <= code <= self.high


# A scope that contains no real division (statistical codes never end a village in 000 under 000000).
NO_DIVISION = Scope("000000000000", "village")


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["user", "partner", "resident"]
    id: UUID
    role: Role | None
    scope: Scope
    device_id: UUID | None = None
    session_id: UUID | None = None
    household_id: UUID | None = None  # a resident's own household, the only one they may see

    @classmethod
    def resident(cls, person_id: UUID, household_id: UUID, session_id: UUID | None = None) -> Actor:
        """A resident reaches one household by its id, never by division: their scope holds no village."""
        return cls(
            kind="resident",
            id=person_id,
            role=None,
            scope=NO_DIVISION,
            session_id=session_id,
            household_id=household_id,
        )

    def in_scope(self, code: str | None) -> bool:
        return self.scope.contains(code)


def scope_filter(column: str, first_param: int) -> str:
    """SQL that keeps rows whose division `column` lies in the caller's scope.

    Binds two parameters, `$first_param` and `$first_param+1`: pass `*scope_args(actor)`. A range
    (not LIKE) so a btree index on the column serves it.
    """
    return f"({column} BETWEEN ${first_param} AND ${first_param + 1})"


def scope_args(actor: Actor) -> tuple[str, str]:
    return actor.scope.low, actor.scope.high
