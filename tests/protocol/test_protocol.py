"""The protocol package: versions, JSON and MessagePack, gzip, malformed bodies, the JSON Schema
kept in the repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

import mobile_sync_protocol
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from mobile_sync_protocol.schema import schema_document
from tests.sync_world import Client, envelope, household_create, push, push_raw, world

SCHEMA = Path(mobile_sync_protocol.__file__).parent / "schema.json"


def test_the_committed_json_schema_matches_the_code() -> None:
    committed = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(schema_document())), (
        "regenerate: python -m mobile_sync_protocol.schema > mobile_sync_protocol/schema.json"
    )
    assert sorted(committed["mutation_types"]) == sorted(m.MUTATION_TYPES)
    assert len(m.MUTATION_TYPES) == 11


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_the_schema_is_the_same_whatever_the_string_hashing(seed: str) -> None:
    """A frozenset default (a policy's exempt groups) iterates in an order string hashing decides."""
    done = subprocess.run(
        [sys.executable, "-m", "mobile_sync_protocol.schema"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )
    assert json.loads(done.stdout) == json.loads(SCHEMA.read_text(encoding="utf-8"))


def _rendered_like_older_msgspec(node: Any) -> Any:
    """msgspec up to 0.22 kept a docstring's indentation in descriptions (0.23 dedents them),
    0.19-0.21 put an optional field's `null` first in its `anyOf` (0.22 last), and 0.19 did not
    mark a set's array `uniqueItems`."""
    if isinstance(node, dict):
        return {key: _rendered_value(key, value) for key, value in node.items() if key != "uniqueItems"}
    if isinstance(node, list | tuple):
        return type(node)(_rendered_like_older_msgspec(item) for item in node)
    return node


def _rendered_value(key: str, value: Any) -> Any:
    if key == "description" and isinstance(value, str):
        return value.replace("\n", "\n    ")
    if key == "anyOf" and isinstance(value, list):
        return [_rendered_like_older_msgspec(item) for item in reversed(value)]
    return _rendered_like_older_msgspec(value)


def test_the_schema_text_does_not_depend_on_how_msgspec_renders_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = msgspec.json.schema_components

    def as_older_msgspec(*args: Any, **kwargs: Any) -> Any:
        return _rendered_like_older_msgspec(real(*args, **kwargs))

    monkeypatch.setattr(msgspec.json, "schema_components", as_older_msgspec)
    committed = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert json.loads(json.dumps(schema_document())) == committed
    descriptions = re.findall(r'"description": "((?:[^"\\]|\\.)*)"', SCHEMA.read_text(encoding="utf-8"))
    assert descriptions and not [d for d in descriptions if "\\n " in d], "no description keeps an indent"


async def test_an_unsupported_protocol_version_is_426_with_the_supported_ones(
    client: Client, conn: asyncpg.Connection
) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    response = await push_raw(client, tablet, envelope(tablet, [household_create(tablet)], version=0))
    assert response.status_code == 426, response.text
    assert (response.json()["code"], response.json()["supported_versions"]) == ("unsupported_protocol_version", [1])
    assert await conn.fetchval("SELECT count(*) FROM households") == 0


async def test_messagepack_and_gzip_bodies_give_the_same_answers(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    tablet = await world(client)
    packed = await push(client, tablet, [household_create(tablet)], fmt="msgpack")
    assert [a.status for a in packed.answers] == ["applied"]
    second = household_create(tablet, numbers=(3,), household_no="0102")
    zipped = await push_raw(client, tablet, envelope(tablet, [second]), gzip=True)
    assert zipped.status_code == 200, zipped.text
    assert [a["status"] for a in zipped.json()["answers"]] == ["applied"]
    assert await conn.fetchval("SELECT count(*) FROM households") == 2


async def test_malformed_bodies_fail_the_whole_request(client: Client) -> None:
    tablet = await world(client)
    cases = [
        (b"{not json", "application/json", None, 400, "malformed_body"),
        (b'{"protocol_version": 1}', "application/json", None, 400, "malformed_body"),  # no device_id, no mutations
        (b"<xml/>", "text/xml", None, 415, "unsupported_media_type"),
        (b"not gzip", "application/json", "gzip", 415, "unsupported_media_type"),
    ]
    for body, media, encoding, status, code in cases:
        headers = {**tablet.headers, "Content-Type": media}
        if encoding:
            headers["Content-Encoding"] = encoding
        response = await client.post("/api/v1/sync/push", content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), response.text


def test_a_gzip_bomb_is_stopped_at_the_limit() -> None:
    bomb = codec.gzip_body(b"0" * 2_000_000)
    try:
        codec.unwrap(bomb, "gzip", max_bytes=1_000_000)
    except codec.BodyError as exc:
        assert exc.code == "body_too_large"
    else:
        raise AssertionError("a body over the limit was accepted")
    assert codec.unwrap(bomb, "gzip", max_bytes=2_000_000) == b"0" * 2_000_000


def test_a_newer_message_with_unknown_fields_still_decodes() -> None:
    newer = (
        b'{"seq": 4, "mutation_id": "0195a2b0-0000-7000-8000-000000000001", "type": "payment.void", '
        b'"payment_id": "0195a2b0-0000-7000-8000-000000000002", "reason": "x", "added_in_v2": true}'
    )
    decoded = msgspec.json.decode(newer, type=m.AnyMutation)
    assert isinstance(decoded, m.PaymentVoid) and decoded.seq == 4
