"""Business dates: the local date of the pooling area (SPEC §2), derived once from UTC times.

`now()` is the instant business dates are read from: which coverage year is open, the day a payment
or a registration counts for, and the time a tablet's clock is checked against. It is the system
clock unless `pin` set another: the test suite pins a fixed day, so its rules do not depend on the
day it runs. Timestamps that only record when something happened, and the expiry of tokens and
sessions, keep the system clock (and PostgreSQL's `now()`).

A process may pin its own clock at start-up: CANBAO_BUSINESS_CLOCK (`Settings.business_clock`), for
tests, demos and training that spawn `canbao serve` or `canbao simulate` on a day of their choosing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

log = logging.getLogger("canbao.clock")


class _Pinned:
    source: Callable[[], datetime] | None = None
    from_settings: datetime | None = None  # CANBAO_BUSINESS_CLOCK, once pinned in this process


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def now() -> datetime:
    """This instant, in UTC: the system clock's, or the pinned clock's."""
    source = _Pinned.source
    return datetime.now(UTC) if source is None else source()


def pin(start: datetime | None) -> None:
    """From now on `now()` starts at `start` and runs with the system's monotonic clock; None: the
    system clock again."""
    if start is None:
        _Pinned.source = None
        return
    if start.tzinfo is None:
        raise ValueError("the clock is pinned to a timezone-aware time")
    origin, at = time.monotonic(), start.astimezone(UTC)
    _Pinned.source = lambda: at + timedelta(seconds=time.monotonic() - origin)


def pin_from_settings(start: datetime | None) -> None:
    """A process's start-up: CANBAO_BUSINESS_CLOCK (None: unset) pins the clock, once per process
    however often the settings are read, and says so loudly: never set in production."""
    if start is None or _Pinned.from_settings == start:
        return
    pin(start)
    _Pinned.from_settings = start
    log.warning(
        "business clock pinned by CANBAO_BUSINESS_CLOCK: business dates start at %s and run on; "
        "never set it in production",
        start.astimezone(UTC).isoformat(),
        extra={"business_clock": start.astimezone(UTC).isoformat()},
    )


def local_date(moment: datetime, timezone: str) -> date:
    if moment.tzinfo is None:
        raise ValueError("business dates come from timezone-aware times")
    return moment.astimezone(_zone(timezone)).date()


def local_today(timezone: str) -> date:
    return local_date(now(), timezone)
