"""Users, devices and partners: the rules of who may create and change them, and their audit."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import msgspec

from backend import fields
from backend.actor import ROLE_LEVELS, Actor, Role, Scope, scope_args
from backend.audit.service import changes, record
from backend.auth.passwords import Passwords, check_password_strength
from backend.auth.service import revoke_device_sessions, revoke_user_sessions
from backend.db import Connection, from_row, load_queries
from backend.errors import Conflict, Forbidden, InvalidInput, NotFound
from backend.i18n import _
from backend.ids import uuid7
from backend.premiums.blocks import retire_device_blocks

Q = load_queries("backend.admin")

Username = Annotated[str, msgspec.Meta(pattern=fields.USERNAME)]
DivisionCode = Annotated[str, msgspec.Meta(pattern=fields.DIVISION_CODE)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=500)]


class UsernameTaken(Conflict):
    """That username is already taken"""

    code = "username_taken"


class User(msgspec.Struct, frozen=True):
    id: UUID
    username: str
    full_name: str
    role: Role
    division_code: str
    active: bool
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None


# What `check_password_strength` admits, for the API document (the check stays the service's).
NEW_PASSWORD = {"extra": {"min_length": 10, "pattern": r"^\S([\s\S]*\S)?$"}}


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=NEW_PASSWORD)]
    role: Role
    division_code: DivisionCode
    full_name: ShortText = ""


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | None = None
    division_code: DivisionCode | None = None
    full_name: ShortText | None = None
    active: bool | None = None


class UserPage(msgspec.Struct, frozen=True):
    items: list[User]
    next_cursor: UUID | None


def _user(row: asyncpg.Record) -> User:
    return from_row(row, User)


async def _check_division_for_role(conn: Connection, actor: Actor | None, role: Role, code: str) -> None:
    level = await conn.fetchval(Q["division_level"], code)
    if level is None or (actor is not None and not actor.in_scope(code)):
        raise InvalidInput("division_code", _("no such division in your scope"))
    if level not in ROLE_LEVELS[role]:
        allowed = _(" or ").join(sorted(ROLE_LEVELS[role]))
        raise InvalidInput(
            "division_code",
            _("a {role} works at {allowed} level, not {level}", role=role.value, allowed=allowed, level=level),
        )


async def create_user(conn: Connection, actor: Actor | None, passwords: Passwords, data: UserCreate) -> User:
    if (why := check_password_strength(data.password)) is not None:
        raise InvalidInput("password", why)
    await _check_division_for_role(conn, actor, data.role, data.division_code)
    password_hash = await passwords.hash(data.password)
    try:
        row = await conn.fetchrow(
            Q["insert_user"],
            uuid7(),
            data.username,
            data.full_name,
            password_hash,
            data.role.value,
            data.division_code,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "users_username_key":
            raise UsernameTaken() from exc
        raise
    assert row is not None
    user = _user(row)
    await record(
        conn,
        actor,
        "create",
        "user",
        user.id,
        division_code=user.division_code,
        summary={"username": user.username, "role": user.role.value},
    )
    return user


async def _user_in_scope(conn: Connection, actor: Actor, user_id: UUID, *, for_update: bool = False) -> User:
    row = await conn.fetchrow(Q["get_user_for_update" if for_update else "get_user"], user_id)
    if row is None or not actor.in_scope(row["division_code"]):
        raise NotFound()
    return _user(row)


async def get_user(conn: Connection, actor: Actor, user_id: UUID) -> User:
    return await _user_in_scope(conn, actor, user_id)


async def get_user_by_username(conn: Connection, username: str) -> User | None:
    """Any user, by username in any case: for the console and the demo, which act for no one in
    particular (an API caller reads users by id, within its scope)."""
    row = await conn.fetchrow(Q["get_user_by_username"], username)
    return None if row is None else _user(row)


async def list_users(
    conn: Connection,
    actor: Actor,
    *,
    role: Role | None,
    division_code: str | None,
    active: bool | None,
    after: UUID | None,
    limit: int,
) -> UserPage:
    low, high = scope_args(actor)
    sub_low = sub_high = None
    if division_code is not None:
        level = await conn.fetchval(Q["division_level"], division_code)
        if level is None:
            return UserPage(items=[], next_cursor=None)
        sub = Scope(division_code, level)
        sub_low, sub_high = sub.low, sub.high
    rows = await conn.fetch(
        Q["list_users"],
        low,
        high,
        role.value if role else None,
        sub_low,
        sub_high,
        active,
        after,
        limit + 1,
    )
    items = [_user(r) for r in rows[:limit]]
    return UserPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


def _audited(user: User) -> dict[str, Any]:
    """The fields whose changes a user's audit row shows."""
    return {
        "role": user.role.value,
        "division_code": user.division_code,
        "active": user.active,
        "full_name": user.full_name,
    }


async def _write_user(
    conn: Connection, before: User, *, full_name: str, role: Role, division_code: str, active: bool
) -> User:
    """Every change to a user row, from the API or the console: disabling an active user ends
    every session of theirs at once."""
    row = await conn.fetchrow(Q["update_user"], before.id, full_name, role.value, division_code, active)
    assert row is not None
    after = _user(row)
    if before.active and not after.active:
        await revoke_user_sessions(conn, before.id, "user_disabled")
    return after


async def update_user(conn: Connection, actor: Actor, user_id: UUID, data: UserUpdate) -> User:
    before = await _user_in_scope(conn, actor, user_id, for_update=True)
    role = data.role or before.role
    division_code = data.division_code or before.division_code
    active = before.active if data.active is None else data.active
    if user_id == actor.id and (not active or role != before.role):
        raise Forbidden(_("you cannot disable yourself or change your own role"))
    if data.role is not None or data.division_code is not None:
        await _check_division_for_role(conn, actor, role, division_code)
    full_name = before.full_name if data.full_name is None else data.full_name
    after = await _write_user(conn, before, full_name=full_name, role=role, division_code=division_code, active=active)
    diff = changes(_audited(before), _audited(after))
    await record(conn, actor, "update", "user", user_id, division_code=after.division_code, summary=diff)
    return after


async def disable_user(conn: Connection, username: str) -> User | None:
    """`canbao user disable`: the operator at the console, unscoped and with no actor, disables a
    user the way the API does (their sessions end at once), recorded as `disable`. None when no
    user has that name."""
    found = await get_user_by_username(conn, username)
    if found is None:
        return None
    row = await conn.fetchrow(Q["get_user_for_update"], found.id)
    assert row is not None  # users are disabled, never deleted
    before = _user(row)
    after = await _write_user(
        conn,
        before,
        full_name=before.full_name,
        role=before.role,
        division_code=before.division_code,
        active=False,
    )
    await record(conn, None, "disable", "user", after.id, division_code=after.division_code)
    return after


async def set_password(
    conn: Connection, actor: Actor | None, passwords: Passwords, user_id: UUID, password: str
) -> None:
    if (why := check_password_strength(password)) is not None:
        raise InvalidInput("password", why)
    row = await conn.fetchrow(Q["get_user"], user_id)
    if row is None or (actor is not None and not actor.in_scope(row["division_code"])):
        raise NotFound()
    await conn.execute(Q["set_password"], user_id, await passwords.hash(password))
    # A new password ends every session that the old one opened.
    await revoke_user_sessions(conn, user_id, "password_changed")
    await record(conn, actor, "set_password", "user", user_id, division_code=row["division_code"])


# Devices ---------------------------------------------------------------------------------------


class Device(msgspec.Struct, frozen=True):
    id: UUID
    owner_id: UUID
    label: str
    model: str
    app_version: str
    status: str
    registered_at: datetime
    suspended_at: datetime | None
    revoked_at: datetime | None
    last_seen_at: datetime | None


class DeviceRegister(msgspec.Struct, forbid_unknown_fields=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    app_version: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    label: ShortText = ""


class DeviceRegistered(msgspec.Struct, frozen=True):
    device: Device
    device_secret: str  # shown once; log in with device_id and device_secret to bind tokens to the tablet


class DevicePage(msgspec.Struct, frozen=True):
    items: list[Device]
    next_cursor: UUID | None


def _device(row: asyncpg.Record) -> Device:
    return msgspec.convert({k: v for k, v in row.items() if k != "division_code"}, Device)


def secret_hash(secret: str) -> bytes:
    # Device and partner secrets are 256-bit random values, so a plain digest is enough.
    return hashlib.sha256(secret.encode()).digest()


async def register_device(conn: Connection, actor: Actor, data: DeviceRegister) -> DeviceRegistered:
    secret = secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        Q["insert_device"], uuid7(), actor.id, data.label, data.model, data.app_version, secret_hash(secret)
    )
    assert row is not None
    device = _device(row)
    await record(
        conn,
        actor,
        "register",
        "device",
        device.id,
        division_code=actor.scope.division_code,
        summary={"model": data.model, "app_version": data.app_version},
        device_id=device.id,
    )
    return DeviceRegistered(device=device, device_secret=secret)


async def _device_visible(
    conn: Connection, actor: Actor, device_id: UUID, *, for_update: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(Q["get_device_for_update" if for_update else "get_device"], device_id)
    visible = row is not None and (
        (actor.role == Role.DISTRICT_ADMIN and actor.in_scope(row["division_code"])) or row["owner_id"] == actor.id
    )
    if not visible:
        raise NotFound()
    assert row is not None
    return row


async def get_device(conn: Connection, actor: Actor, device_id: UUID) -> Device:
    return _device(await _device_visible(conn, actor, device_id))


async def list_devices(
    conn: Connection,
    actor: Actor,
    *,
    owner_id: UUID | None,
    status: str | None,
    after: UUID | None,
    limit: int,
) -> DevicePage:
    if actor.role != Role.DISTRICT_ADMIN:
        owner_id = actor.id  # staff see their own tablets only
    rows = await conn.fetch(Q["list_devices"], *scope_args(actor), owner_id, status, after, limit + 1)
    items = [_device(r) for r in rows[:limit]]
    return DevicePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


# Allowed status changes: revoked is final.
_DEVICE_MOVES = {
    "suspend": ({"active"}, "suspended"),
    "reactivate": ({"suspended"}, "active"),
    "revoke": ({"active", "suspended"}, "revoked"),
}


async def change_device_status(conn: Connection, actor: Actor, device_id: UUID, move: str) -> Device:
    row = await _device_visible(conn, actor, device_id, for_update=True)
    if actor.role != Role.DISTRICT_ADMIN and not (move == "revoke" and row["owner_id"] == actor.id):
        raise Forbidden()
    allowed_from, to = _DEVICE_MOVES[move]
    if row["status"] not in allowed_from:
        raise Conflict(_("a {status} device cannot be {to}", status=row["status"], to=to), current_status=row["status"])
    updated = await conn.fetchrow(Q["set_device_status"], device_id, to)
    assert updated is not None
    if to != "active":
        # Refresh tokens die now; access tokens die at their next request (the per-request check).
        await revoke_device_sessions(conn, device_id, f"device_{to}")
    if to == "revoked":
        # A revoked tablet's unused receipt numbers can never be used again.
        await retire_device_blocks(conn, actor, device_id, "device revoked")
    await record(
        conn,
        actor,
        move,
        "device",
        device_id,
        division_code=row["division_code"],
        summary={"status": {"before": row["status"], "after": to}},
    )
    return _device(updated)


# Partners --------------------------------------------------------------------------------------


class Partner(msgspec.Struct, frozen=True):
    id: UUID
    name: str
    division_code: str
    client_id: str
    active: bool
    created_at: datetime
    rotated_at: datetime | None
    disabled_at: datetime | None


class PartnerCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PartnerCredential(msgspec.Struct, frozen=True):
    partner: Partner
    client_secret: str  # shown once


class PartnerPage(msgspec.Struct, frozen=True):
    items: list[Partner]
    next_cursor: UUID | None


class PartnerNameTaken(Conflict):
    """A partner with that name exists"""

    code = "partner_name_taken"


def _partner(row: asyncpg.Record | None) -> Partner:
    if row is None:
        raise NotFound()
    return from_row(row, Partner)


async def create_partner(conn: Connection, actor: Actor, data: PartnerCreate) -> PartnerCredential:
    if not data.name.strip():
        raise InvalidInput("name", _("must not be empty"))
    secret = secrets.token_urlsafe(32)
    try:
        row = await conn.fetchrow(
            Q["insert_partner"],
            uuid7(),
            data.name.strip(),
            actor.scope.division_code,
            "partner-" + secrets.token_hex(8),
            secret_hash(secret),
        )
    except asyncpg.UniqueViolationError as exc:
        raise PartnerNameTaken() from exc
    partner = _partner(row)
    await record(
        conn,
        actor,
        "create",
        "partner",
        partner.id,
        division_code=partner.division_code,
        summary={"name": partner.name},
    )
    return PartnerCredential(partner=partner, client_secret=secret)


async def get_partner(conn: Connection, actor: Actor, partner_id: UUID) -> Partner:
    partner = _partner(await conn.fetchrow(Q["get_partner"], partner_id))
    if not actor.in_scope(partner.division_code):
        raise NotFound()
    return partner


async def list_partners(conn: Connection, actor: Actor, after: UUID | None, limit: int) -> PartnerPage:
    rows = await conn.fetch(Q["list_partners"], *scope_args(actor), after, limit + 1)
    items = [_partner(r) for r in rows[:limit]]
    return PartnerPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def rotate_partner(conn: Connection, actor: Actor, partner_id: UUID) -> PartnerCredential:
    await get_partner(conn, actor, partner_id)
    secret = secrets.token_urlsafe(32)
    partner = _partner(await conn.fetchrow(Q["rotate_partner"], partner_id, secret_hash(secret)))
    await record(conn, actor, "rotate_credential", "partner", partner_id, division_code=partner.division_code)
    return PartnerCredential(partner=partner, client_secret=secret)


async def disable_partner(conn: Connection, actor: Actor, partner_id: UUID) -> Partner:
    await get_partner(conn, actor, partner_id)
    partner = _partner(await conn.fetchrow(Q["disable_partner"], partner_id))
    await record(conn, actor, "disable", "partner", partner_id, division_code=partner.division_code)
    return partner
