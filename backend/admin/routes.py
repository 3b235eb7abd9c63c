"""`/api/v1/users`, `/api/v1/devices`, `/api/v1/partners`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from backend import fields
from backend.actor import Role
from backend.admin import service
from backend.admin.service import (
    Device,
    DevicePage,
    DeviceRegister,
    DeviceRegistered,
    Partner,
    PartnerCreate,
    PartnerCredential,
    PartnerPage,
    User,
    UserCreate,
    UserPage,
    UserUpdate,
)
from backend.deps import CurrentActor, Tx
from backend.guards import require_roles

LimitParam = Annotated[int, QueryParameter(ge=1, le=500, description="page size")]


class PasswordSet(msgspec.Struct, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256, extra_json_schema=service.NEW_PASSWORD)]


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["administration"]
    guards = [require_roles(Role.DISTRICT_ADMIN)]

    @post("/", summary="Create a user")
    async def create(self, data: JSONBody[UserCreate], tx: Tx, actor: CurrentActor, state: State) -> User:
        return await service.create_user(tx, actor, state.passwords, data)

    @get("/", summary="List users in your scope (keyset pagination by `after`)")
    async def list_users(
        self,
        tx: Tx,
        actor: CurrentActor,
        role: FromQuery[Role | None] = None,
        division_code: Annotated[str | None, QueryParameter(pattern=fields.DIVISION_CODE)] = None,
        active: FromQuery[bool | None] = None,
        after: FromQuery[UUID | None] = None,
        limit: LimitParam = 100,
    ) -> UserPage:
        return await service.list_users(
            tx, actor, role=role, division_code=division_code, active=active, after=after, limit=limit
        )

    @get("/{user_id:uuid}", summary="A user")
    async def get_user(self, user_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> User:
        return await service.get_user(tx, actor, user_id)

    @patch("/{user_id:uuid}", summary="Change a user's role, scope, name or active flag")
    async def update(self, user_id: FromPath[UUID], data: JSONBody[UserUpdate], tx: Tx, actor: CurrentActor) -> User:
        return await service.update_user(tx, actor, user_id, data)

    @post("/{user_id:uuid}/disable", status_code=200, summary="Disable a user; their sessions end at once")
    async def disable(self, user_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> User:
        return await service.update_user(tx, actor, user_id, UserUpdate(active=False))

    @post("/{user_id:uuid}/password", status_code=204, summary="Set a user's password; their sessions end")
    async def set_password(
        self, user_id: FromPath[UUID], data: JSONBody[PasswordSet], tx: Tx, actor: CurrentActor, state: State
    ) -> None:
        await service.set_password(tx, actor, state.passwords, user_id, data.password)


class DeviceController(Controller):
    path = "/api/v1/devices"
    tags = ["devices"]

    @post("/", summary="Register a tablet for yourself; returns its credential once")
    async def register(self, data: JSONBody[DeviceRegister], tx: Tx, actor: CurrentActor) -> DeviceRegistered:
        return await service.register_device(tx, actor, data)

    @get("/", summary="Devices: all in scope for district_admin, your own otherwise")
    async def list_devices(
        self,
        tx: Tx,
        actor: CurrentActor,
        owner_id: FromQuery[UUID | None] = None,
        status: FromQuery[Literal["active", "suspended", "revoked"] | None] = None,
        after: FromQuery[UUID | None] = None,
        limit: LimitParam = 100,
    ) -> DevicePage:
        return await service.list_devices(tx, actor, owner_id=owner_id, status=status, after=after, limit=limit)

    @get("/{device_id:uuid}", summary="A device")
    async def get_device(self, device_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Device:
        return await service.get_device(tx, actor, device_id)

    @post("/{device_id:uuid}/suspend", status_code=200, summary="Suspend a device (district_admin)")
    async def suspend(self, device_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Device:
        return await service.change_device_status(tx, actor, device_id, "suspend")

    @post("/{device_id:uuid}/reactivate", status_code=200, summary="Reactivate a suspended device")
    async def reactivate(self, device_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Device:
        return await service.change_device_status(tx, actor, device_id, "reactivate")

    @delete("/{device_id:uuid}", status_code=200, summary="Revoke a device for good")
    async def revoke(self, device_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Device:
        return await service.change_device_status(tx, actor, device_id, "revoke")


class PartnerController(Controller):
    path = "/api/v1/partners"
    tags = ["administration"]
    guards = [require_roles(Role.DISTRICT_ADMIN)]

    @post("/", summary="Register a partner (hospital system); returns its client secret once")
    async def create(self, data: JSONBody[PartnerCreate], tx: Tx, actor: CurrentActor) -> PartnerCredential:
        return await service.create_partner(tx, actor, data)

    @get("/", summary="Partners")
    async def list_partners(
        self, tx: Tx, actor: CurrentActor, after: FromQuery[UUID | None] = None, limit: LimitParam = 100
    ) -> PartnerPage:
        return await service.list_partners(tx, actor, after, limit)

    @get("/{partner_id:uuid}", summary="A partner")
    async def get_partner(self, partner_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Partner:
        return await service.get_partner(tx, actor, partner_id)

    @post("/{partner_id:uuid}/rotate-credential", status_code=200, summary="Issue a new client secret")
    async def rotate(self, partner_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> PartnerCredential:
        return await service.rotate_partner(tx, actor, partner_id)

    @post("/{partner_id:uuid}/disable", status_code=200, summary="Disable a partner")
    async def disable(self, partner_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> Partner:
        return await service.disable_partner(tx, actor, partner_id)
