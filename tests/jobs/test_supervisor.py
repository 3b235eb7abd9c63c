"""`canbao serve`'s job workers are started again when they die, after a pause that doubles while
they keep dying and starts over once one has run steadily (backend/jobs/supervisor.py). The whole
server's case, a worker killed and a list imported by the one started after it, is in
tests/ops/test_serve.py."""

from __future__ import annotations

import sys
import time

from backend.jobs.supervisor import Supervisor

SLEEPS = [sys.executable, "-c", "import time; time.sleep(60)"]
DIES = [sys.executable, "-c", "import sys; sys.exit(3)"]


def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_worker_that_dies_is_started_again_and_stop_ends_them_all() -> None:
    supervisor = Supervisor(SLEEPS, 2, first_pause=0.1, tick=0.02).start()
    try:
        first, second = supervisor.processes
        first.kill()
        wait_until(lambda: supervisor.processes[0] is not first)
        assert supervisor.restarts == 1
        assert supervisor.processes[1] is second and second.poll() is None
    finally:
        supervisor.stop(timeout=5)
    assert all(p.poll() is not None for p in supervisor.processes)
    time.sleep(0.5)
    assert supervisor.restarts == 1  # none is started again once stopped


def test_a_worker_that_keeps_dying_waits_longer_each_time() -> None:
    supervisor = Supervisor(DIES, 1, first_pause=0.2, longest_pause=0.8, steady=30, tick=0.02).start()
    try:
        time.sleep(2.5)
    finally:
        supervisor.stop(timeout=5)
    # Pauses of 0.2, 0.4, 0.8, 0.8 … s (and a start takes a moment): at most 4 starts again in 2.5 s,
    # where a pause that never grew would have allowed about 10.
    assert 2 <= supervisor.restarts <= 4, supervisor.restarts


def test_a_worker_that_ran_steadily_is_started_again_after_the_first_pause() -> None:
    supervisor = Supervisor(SLEEPS, 1, first_pause=0.1, longest_pause=30, steady=0.3, tick=0.02).start()
    try:
        for restarts in (1, 2, 3, 4):
            time.sleep(0.4)  # it has run steadily
            process = supervisor.processes[0]
            process.kill()
            # After 0.1 s each time; the fourth would wait 0.8 s if the pause kept growing.
            wait_until(lambda process=process: supervisor.processes[0] is not process, timeout=0.6)  # type: ignore[misc]
            assert supervisor.restarts == restarts
    finally:
        supervisor.stop(timeout=5)
