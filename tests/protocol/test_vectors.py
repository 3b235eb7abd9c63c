"""The golden vectors of mobile_sync_protocol/vectors, replayed as a Kotlin or Swift client would:
the rule cases through the pure rules, the sync ones through the reference client (JSON and
MessagePack) against the real app, each in a fresh database set up as PROTOCOL.md §9 describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobile_sync_protocol.client import SyncClient, TabletStore
from mobile_sync_protocol.replay import load, replay_rules, replay_sync, vector_files
from tests.conftest import auth_headers
from tests.eligibility.test_check import csv
from tests.eligibility.test_lists import upload
from tests.sync_world import Client, Tablet, register_tablet, world

RULES = vector_files("rules_")
SYNC = vector_files("push_") + vector_files("pull_")


def test_every_vector_file_is_replayed() -> None:
    every = {p.name for p in vector_files()}
    assert every == {p.name for p in RULES + SYNC}
    assert len(RULES) == 2 and len(SYNC) >= 6


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_the_rules_still_give_the_literal_answers_of_the_vectors(path: Path) -> None:
    vector = load(path)
    assert vector["cases"]
    assert replay_rules(vector) == []


# The worlds a sync vector names (PROTOCOL.md §9): township_a_2026, and the same with a 退役军人 list.
VETERANS = csv(
    "110105198001010016,王一,2025-11-20,",
    "110105200503030017,王三,2026-03-01,",
    header="身份证号,姓名,退役日期,有效期止",
)


async def set_up(client: Client, name: str) -> Tablet:
    assert name in ("township_a_2026", "township_a_2026_veterans"), name
    tablet = await world(client)
    if name == "township_a_2026_veterans":
        civil = await auth_headers(client, "civil")
        loaded = await upload(client, civil, VETERANS, list_type="tuiyi_junren", effective_from="2025-12-01")
        assert loaded.status_code == 201 and loaded.json()["status"] == "loaded", loaded.text
    return tablet


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("path", SYNC, ids=lambda p: p.stem)
async def test_the_reference_client_replays_the_sync_vectors(
    client: Client, tmp_path: Path, path: Path, fmt: str
) -> None:
    vector = load(path)
    tablet = await set_up(client, vector["world"])
    token = tablet.headers["Authorization"].removeprefix("Bearer ")
    sync = SyncClient(client, TabletStore(tmp_path / "tablet.db"), tablet.device_id, token, fmt)  # type: ignore[arg-type]
    second = await register_tablet(client, "staff_a")  # the world's other tablet (`"by": "other"`)
    other = SyncClient(
        client,  # type: ignore[arg-type]
        TabletStore(tmp_path / "other.db"),
        second.device_id,
        second.headers["Authorization"].removeprefix("Bearer "),
        fmt,  # type: ignore[arg-type]
    )
    assert await replay_sync(sync, vector, other=other) == []
