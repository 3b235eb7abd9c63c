"""The business clock (backend/clock.py): a pinned start runs on from there, and business dates are
the pooling area's local dates of it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from backend import clock


def test_a_pinned_clock_runs_on_from_its_start_and_dates_are_local() -> None:
    start = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 07:30 on 1 January 2027 in Shanghai
    clock.pin(start)
    first, second = clock.now(), clock.now()
    assert start <= first <= second < start + timedelta(minutes=1)
    assert clock.local_today("Asia/Shanghai") == date(2027, 1, 1)
    assert clock.local_today("UTC") == date(2026, 12, 31)


def test_unpinned_it_is_the_system_clock() -> None:
    clock.pin(None)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.pin(datetime(2026, 12, 2, 10, 0))
