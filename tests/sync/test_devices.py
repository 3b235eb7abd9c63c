"""Devices: suspended tablets hand in work to quarantine and cannot pull; revoked ones are
refused and listed for follow-up; device clocks are information only."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import jwt

from backend import clock
from backend.auth.tokens import SigningKey
from tests.conftest import JWT_SECRET, PASSWORD, auth_headers
from tests.sync_world import Client, Tablet, enrol, envelope, household_create, payment, pull, push, push_raw, world


async def tablet_session(client: Client, tablet: Tablet) -> dict[str, Any]:
    """The tablet logs in again with its credential: a token pair whose refresh token it keeps."""
    response = await client.post(
        "/api/v1/auth/login",
        json={
            "username": "staff_a",
            "password": PASSWORD,
            "device_id": str(tablet.device_id),
            "device_secret": tablet.secret,
        },
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    tablet.headers = {"Authorization": f"Bearer {pair['access_token']}"}
    return pair


def expired(access_token: str) -> dict[str, str]:
    """The same token as it is once its lifetime has passed (re-signed with the test key)."""
    claims = jwt.decode(access_token, options={"verify_signature": False})
    now = int(time.time())
    kid = SigningKey.from_secret(JWT_SECRET.encode()).kid
    token = jwt.encode(dict(claims, iat=now - 1000, exp=now - 10), JWT_SECRET, algorithm="HS256", headers={"kid": kid})
    return {"Authorization": f"Bearer {token}"}


async def renew(client: Client, pair: dict[str, Any]) -> Any:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})


async def test_a_suspended_tablets_push_goes_to_quarantine_and_its_pull_is_refused(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    await push(client, tablet, [created, enrolled])
    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{tablet.device_id}/suspend", headers=admin)).status_code == 200
    paid = payment(tablet, created)
    edit = household_create(tablet, numbers=(3,), household_no="0102")
    answer = await push(client, tablet, [paid, edit])
    assert [(a.status, a.code) for a in answer.answers] == [
        ("quarantined", "device_suspended"),
        ("quarantined", "device_suspended"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    assert await conn.fetchval("SELECT count(*) FROM sync_quarantine WHERE device_id = $1", tablet.device_id) == 2
    refused = await client.post(
        "/api/v1/sync/pull", json={"protocol_version": 1, "device_id": str(tablet.device_id)}, headers=tablet.headers
    )
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    # Every other route stays closed to the suspended tablet.
    assert (await client.get("/api/v1/devices", headers=tablet.headers)).status_code == 401


async def test_a_revoked_tablet_is_refused_and_listed_for_follow_up(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    created = household_create(tablet)
    enrolled = enrol(tablet, created)
    await push(client, tablet, [created, enrolled, payment(tablet, created, receipt=1)])
    admin = await auth_headers(client, "admin")
    assert (await client.delete(f"/api/v1/devices/{tablet.device_id}", headers=admin)).status_code == 200
    body = envelope(tablet, [payment(tablet, created, receipt=2)])
    refused = await push_raw(client, tablet, body)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    assert await conn.fetchval("SELECT count(*) FROM sync_quarantine") == 0
    sheet = await client.get(
        f"/api/v1/sync/devices/{tablet.device_id}", headers=await auth_headers(client, "reviewer_a")
    )
    assert sheet.status_code == 200, sheet.text
    body_json = sheet.json()
    assert (body_json["status"], body_json["last_seq"], body_json["open_quarantine"]) == ("revoked", 3, 0)
    (block,) = body_json["receipt_blocks"]
    # T00000001 was used; the rest was retired when the tablet was revoked: receipts written on it
    # offline from those numbers are the ones to chase.
    assert (block["prefix"], block["used"], block["retired"]) == ("T", 1, [[2, 100]])
    hidden = await client.get(
        f"/api/v1/sync/devices/{tablet.device_id}", headers=await auth_headers(client, "reviewer_b")
    )
    assert hidden.status_code == 404


async def test_a_tablet_clock_far_off_is_flagged_but_changes_nothing(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    wrong_clock = clock.now() - timedelta(days=3)
    created = household_create(tablet)
    answer = await push(client, tablet, [created], device_time=wrong_clock)
    assert answer.answers[0].status == "applied"
    assert answer.clock_flag == "behind"
    assert answer.clock_skew_s is not None and -3 * 86400 - 60 < answer.clock_skew_s < -3 * 86400 + 60
    skew = await conn.fetchval("SELECT last_clock_skew_s FROM sync_devices WHERE device_id = $1", tablet.device_id)
    assert skew == answer.clock_skew_s
    fine = await push(
        client, tablet, [household_create(tablet, numbers=(3,), household_no="0102")], device_time=clock.now()
    )
    assert fine.clock_flag is None
    assert uuid.UUID(str(fine.device_id)) == tablet.device_id
    first = await pull(client, tablet, limit=1)
    assert first.last_seq == 2


async def test_a_suspended_tablet_renews_its_expired_token_to_hand_in_work_and_still_cannot_pull(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    created = household_create(tablet)
    await push(client, tablet, [created, enrol(tablet, created)])
    pair = await tablet_session(client, tablet)
    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{tablet.device_id}/suspend", headers=admin)).status_code == 200
    # Days offline: the access token has expired by the time the tablet is back in signal.
    tablet.headers = expired(pair["access_token"])
    late = await push_raw(client, tablet, envelope(tablet, [payment(tablet, created)]))
    assert late.status_code == 401, late.text
    renewed = await renew(client, pair)
    assert renewed.status_code == 200, renewed.text
    tablet.headers = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
    tablet.next_seq = 3  # the refused push applied nothing: the same seq again
    answer = await push(client, tablet, [payment(tablet, created)])
    assert [(a.status, a.code) for a in answer.answers] == [("quarantined", "device_suspended")]
    assert await conn.fetchval("SELECT count(*) FROM sync_quarantine WHERE device_id = $1", tablet.device_id) == 1
    refused = await client.post(
        "/api/v1/sync/pull", json={"protocol_version": 1, "device_id": str(tablet.device_id)}, headers=tablet.headers
    )
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    assert (await client.get("/api/v1/devices", headers=tablet.headers)).status_code == 401
    # Renewing again works while it stays suspended (the refresh token rotates as always).
    assert (await renew(client, renewed.json())).status_code == 200


async def test_a_revoked_tablet_cannot_renew_its_token(client: Client) -> None:
    tablet = await world(client)
    pair = await tablet_session(client, tablet)
    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{tablet.device_id}/suspend", headers=admin)).status_code == 200
    assert (await client.delete(f"/api/v1/devices/{tablet.device_id}", headers=admin)).status_code == 200
    refused = await renew(client, pair)
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"
    response = await push_raw(client, tablet, envelope(tablet, [household_create(tablet)]))
    assert response.status_code == 401
