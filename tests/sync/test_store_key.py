"""A lost tablet: the reference client keeps its township's numbers sealed in its local store under
a key the server gives only to the device's own token while the device is active, so a tablet that
is revoked (or suspended) cannot be read with the app (issue 16, point 9; PROTOCOL.md §5)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import msgspec
import pytest

from backend.sync import store_key
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import StoreLocked, SyncClient, SyncFailed, TabletStore, WrongStoreKey
from tests.conftest import PASSWORD, auth_headers
from tests.factories import ID_NUMBERS
from tests.sync.at_rest import forms
from tests.sync_world import Client, Tablet, household_create, register_tablet, world

PHONE = "13912345678"


def client_of(http: Client, tablet: Tablet, path: Path) -> SyncClient:
    token = tablet.headers["Authorization"].removeprefix("Bearer ")
    return SyncClient(http, TabletStore(path), tablet.device_id, token)  # type: ignore[arg-type]


async def log_in_again(http: Client, tablet: Tablet) -> None:
    """The tablet's user logs in on it again (with its device credential): a new device-bound token."""
    response = await http.post(
        "/api/v1/auth/login",
        json={
            "username": "staff_a",
            "password": PASSWORD,
            "device_id": str(tablet.device_id),
            "device_secret": tablet.secret,
        },
    )
    assert response.status_code == 200, response.text
    tablet.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}


async def ask(http: Client, tablet: Tablet, device_id: uuid.UUID | None = None) -> tuple[int, dict[str, object]]:
    body = {"protocol_version": 1, "device_id": str(device_id or tablet.device_id)}
    response = await http.post("/api/v1/sync/store-key", json=body, headers=tablet.headers)
    return response.status_code, response.json()


async def test_the_local_store_holds_no_number_in_clear_and_opens_only_with_the_devices_key(
    client: Client, tmp_path: Path
) -> None:
    tablet = await world(client)
    sync = client_of(client, tablet, tmp_path / "tablet.db")
    with pytest.raises(StoreLocked):
        sync.enqueue(household_create(tablet))  # nothing personal is written before the key is held
    await sync.unlock()
    created = household_create(tablet, numbers=(1, 2))
    created = msgspec.structs.replace(created, phone=PHONE)
    sync.enqueue(created)
    await sync.sync()
    assert {r["id_number"] for r in sync.store.records("person").values()} == {ID_NUMBERS[1], ID_NUMBERS[2]}
    sync.store.db.close()

    raw = (tmp_path / "tablet.db").read_bytes()
    for number in (ID_NUMBERS[1], ID_NUMBERS[2], PHONE, "成员1"):
        assert not any(form.encode() in raw for form in forms(number)), number
    # The app started again: the store is sealed until the server gives the key again.
    again = client_of(client, tablet, tmp_path / "tablet.db")
    with pytest.raises(StoreLocked):
        again.store.records("person")
    with pytest.raises(StoreLocked):
        again.query_code_key()
    with pytest.raises(WrongStoreKey):
        again.store.unlock(store_key.store_key(uuid.uuid4()))  # another device's key
    await again.unlock()
    assert {r["id_number"] for r in again.store.records("person").values()} == {ID_NUMBERS[1], ID_NUMBERS[2]}
    assert [e.mutation.household_id for e in again.store.entries()] == [created.household_id]


async def test_a_revoked_or_suspended_tablet_is_refused_its_key_and_its_store_stays_sealed(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    tablet = await world(client)
    sync = client_of(client, tablet, tmp_path / "tablet.db")
    await sync.sync()
    status, first = await ask(client, tablet)
    assert status == 200 and first["device_id"] == str(tablet.device_id)
    assert (await ask(client, tablet))[1]["store_key"] == first["store_key"]  # the same for the device's life
    other = await register_tablet(client, "staff_a")
    assert (await ask(client, other))[1]["store_key"] != first["store_key"]
    # Only the device's own token: not another device's id, not a token without a device.
    assert (await ask(client, other, tablet.device_id))[1]["code"] == "device_mismatch"
    staff = await auth_headers(client, "staff_a")
    plain = await client.post(
        "/api/v1/sync/store-key", json={"protocol_version": 1, "device_id": str(tablet.device_id)}, headers=staff
    )
    assert (plain.status_code, plain.json()["code"]) == (403, "device_required")

    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{tablet.device_id}/suspend", headers=admin)).status_code == 200
    restarted = client_of(client, tablet, tmp_path / "tablet.db")
    with pytest.raises(SyncFailed) as refused:
        await restarted.unlock()
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")
    assert restarted.store.locked
    # A running app that held the key forgets it as soon as the server refuses it.
    with pytest.raises(SyncFailed):
        await sync.unlock()
    assert sync.store.locked
    assert (await client.post(f"/api/v1/devices/{tablet.device_id}/reactivate", headers=admin)).status_code == 200
    await log_in_again(client, tablet)
    restarted = client_of(client, tablet, tmp_path / "tablet.db")
    await restarted.unlock()  # reactivated: the same key opens the same store
    assert restarted.query_code_key() is not None
    assert (await client.delete(f"/api/v1/devices/{tablet.device_id}", headers=admin)).status_code == 200
    stolen = client_of(client, tablet, tmp_path / "tablet.db")
    with pytest.raises(SyncFailed):
        await stolen.unlock()
    with pytest.raises(StoreLocked):
        stolen.store.records("policy_version")
    with pytest.raises(StoreLocked):
        stolen.query_code_key()
    issued = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'issue_store_key' AND entity_id = $1", str(tablet.device_id)
    )
    assert issued >= 4  # every key handed out is on record


async def test_the_store_key_comes_in_the_requests_format(client: Client) -> None:
    tablet = await world(client)
    request = m.StoreKeyRequest(protocol_version=1, device_id=tablet.device_id)
    response = await client.post(
        "/api/v1/sync/store-key",
        content=msgspec.msgpack.encode(request),
        headers={**tablet.headers, "Content-Type": m.MSGPACK},
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = msgspec.msgpack.decode(response.content, type=m.StoreKeyResponse)
    assert answer.store_key == store_key.store_key(tablet.device_id) and len(answer.store_key) == 32
