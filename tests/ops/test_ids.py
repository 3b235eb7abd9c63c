"""Identifiers made by the server are UUIDv7 and keep the order they were made in."""

from __future__ import annotations

from backend.ids import uuid7


def test_uuid7_is_version_7_and_monotonic_within_a_millisecond() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert {u.version for u in ids} == {7}
    assert ids == sorted(ids)
    assert len(set(ids)) == 5000
