"""The key of a tablet's local store: a tablet carries its township's personal numbers, sealed under
a key only the server can give, and gives only to that device's token while the device is active —
so a stolen tablet, once revoked (or suspended), cannot be read with the app (PROTOCOL.md §5).

The key is derived, never stored: the keyed hash, under the key file's index key (which never
changes), of the device's id. A rotation of the data keys leaves it as it is, so a tablet's queue of
unsent work never becomes unreadable to its own app.
"""

from __future__ import annotations

from uuid import UUID

from backend import crypto
from backend.actor import Actor
from backend.audit.service import record
from backend.db import Connection, load_queries
from backend.errors import InvalidToken
from backend.i18n import _
from backend.sync.push import DeviceMismatch, DeviceRequired
from mobile_sync_protocol import messages as m

Q = load_queries("backend.sync")

STORE_KEY = "tablet_store_key"  # the kind (domain) of the derivation


def store_key(device_id: UUID) -> bytes:
    key = crypto.keys().index(STORE_KEY, str(device_id))
    assert key is not None and len(key) == 32
    return key


async def issue(conn: Connection, actor: Actor, request: m.StoreKeyRequest) -> m.StoreKeyResponse:
    """The store key of the caller's own tablet, while the tablet and its owner are active. (The
    bearer middleware refuses a suspended or revoked tablet's token already; this says so again.)"""
    if actor.device_id is None:
        raise DeviceRequired()
    if request.device_id != actor.device_id:
        raise DeviceMismatch()
    device = await conn.fetchrow(Q["device_for_sync"], actor.device_id)
    if device is None or device["owner_id"] != actor.id or device["status"] != "active":
        raise InvalidToken(_("this device is suspended or revoked"))
    await record(conn, actor, "issue_store_key", "device", actor.device_id, division_code=actor.scope.division_code)
    return m.StoreKeyResponse(
        protocol_version=m.PROTOCOL_VERSION, device_id=actor.device_id, store_key=store_key(actor.device_id)
    )
