"""The reference client against the real app: queue, push, pull into SQLite; killed between push
and acknowledgement; resets keep the queue; rejections keep local records. (It replays the golden
vectors in test_sync_vectors.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from litestar import Litestar

import mobile_sync_protocol
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.client import SyncClient, TabletStore
from tests.conftest import make_settings
from tests.sync_world import Tablet, household_create, world

VECTORS = Path(mobile_sync_protocol.__file__).parent / "vectors"


def token_of(tablet: Tablet) -> str:
    return tablet.headers["Authorization"].removeprefix("Bearer ")


async def test_the_client_survives_a_kill_between_push_and_acknowledgement(
    client: Any,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    db_dsn: str,
    tmp_path: Path,
) -> None:
    tablet = await world(client)
    from backend.app import create_app

    app: Litestar = create_app(make_settings(db_dsn), configure_logs=False)
    async with app.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        store = TabletStore(tmp_path / "tablet.db")
        sync = SyncClient(http, store, tablet.device_id, token_of(tablet))
        await sync.unlock()  # the key the server gives the registered tablet, kept in memory
        created = sync.enqueue(household_create(tablet))
        bad = sync.enqueue(household_create(tablet, numbers=(3,), household_no="0102", village_code="330106002201"))
        # Killed after the server committed, before the answers were written locally.
        raws = [msgspec.Raw(codec.encode(x, "msgpack")) for x in (created, bad)]
        request = m.PushRequest(protocol_version=1, device_id=tablet.device_id, mutations=raws)
        lost = await http.post(
            "/api/v1/sync/push",
            content=codec.encode(request, "msgpack"),
            headers={**tablet.headers, "Content-Type": m.MSGPACK},
        )
        assert lost.status_code == 200
        restarted = SyncClient(http, TabletStore(tmp_path / "tablet.db"), tablet.device_id, token_of(tablet))
        assert [s for _, s, _ in restarted.store.queue()] == ["pending", "pending"]
        await restarted.sync()
        states = [(seq, state, a.code if a else None) for seq, state, a in restarted.store.queue()]
        assert states == [(1, "applied", None), (2, "rejected", "validation_error")]  # kept, marked, never deleted
        assert await conn.fetchval("SELECT count(*) FROM households") == 1
        assert set(restarted.store.records("household")) == {created.household_id}
        # A reset drops the synced copy, never the queue.
        pending = restarted.enqueue(household_create(tablet, numbers=(4,), household_no="0103"))
        await conn.execute("UPDATE sync_horizon SET floor_xid = '999999999'")
        await restarted.pull()
        assert set(restarted.store.records("household")) == {created.household_id}
        assert [seq for seq, state, _ in restarted.store.queue() if state == "pending"] == [pending.seq]
