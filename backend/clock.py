"""Business dates: the local date of the pooling area (SPEC §2), derived once from UTC times."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from zoneinfo import ZoneInfo


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(moment: datetime, timezone: str) -> date:
    if moment.tzinfo is None:
        raise ValueError("business dates come from timezone-aware times")
    return moment.astimezone(_zone(timezone)).date()


def local_today(timezone: str) -> date:
    return local_date(datetime.now(UTC), timezone)
