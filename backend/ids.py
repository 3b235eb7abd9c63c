"""UUIDv7 (RFC 9562): time-ordered identifiers, so new rows land at the right end of an index.

Monotonic within a process (RFC 9562 §6.2, method 1): ids made in the same millisecond carry a
12-bit counter, so rows created together (a household's members) sort in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID


class _Clock:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0

    def tick(self) -> tuple[int, int]:
        with self.lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self.last_ms:
                self.counter += 1
                if self.counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                    self.last_ms += 1
                    self.counter = 0
            else:
                self.last_ms, self.counter = ms, 0
            return self.last_ms, self.counter


_clock = _Clock()


def uuid7() -> UUID:
    ms, counter = _clock.tick()
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0x2 << 62 | rand_b
    return UUID(int=value)
