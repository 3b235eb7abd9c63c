"""`canbao serve`'s job workers are started again when they die, after a pause that doubles while
they keep dying and starts over once one has run steadily, and not when they were asked to stop
(backend/jobs/supervisor.py). The whole server's case, a worker killed and a list imported by the
one started after it, is in tests/ops/test_serve.py."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

from backend.jobs.supervisor import Supervisor

# Not Python: a signal during an interpreter's start-up may end it with 1 rather than with the signal.
SLEEPS = ["sleep", "60"]
DIES = ["sh", "-c", "exit 3"]


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_a_worker_that_dies_is_started_again_and_stop_ends_them_all() -> None:
    supervisor = Supervisor(SLEEPS, 2, first_pause=0.1, tick=0.02).start()
    try:
        first, second = supervisor.processes
        first.kill()
        wait_until(lambda: supervisor.restarts == 1)
        assert supervisor.processes[0] is not first and supervisor.processes[0].poll() is None
        assert supervisor.processes[1] is second and second.poll() is None
    finally:
        supervisor.stop(timeout=5)
    assert all(p.poll() is not None for p in supervisor.processes)
    time.sleep(0.3)
    assert supervisor.restarts == 1  # none is started again once stopped


def test_a_worker_asked_to_stop_is_not_started_again() -> None:
    supervisor = Supervisor(SLEEPS, 2, first_pause=0.05, tick=0.02).start()
    try:
        supervisor.processes[0].send_signal(signal.SIGTERM)  # a service manager's stop, Ctrl-C
        supervisor.processes[1].send_signal(signal.SIGINT)
        wait_until(lambda: all(p.poll() is not None for p in supervisor.processes))
        time.sleep(0.3)
        assert supervisor.restarts == 0
    finally:
        supervisor.stop(timeout=5)


def test_a_worker_that_keeps_dying_waits_longer_each_time() -> None:
    supervisor = Supervisor(DIES, 1, first_pause=0.05, longest_pause=0.2, steady=30, tick=0.01).start()
    try:
        wait_until(lambda: len(supervisor.pauses) >= 5)
    finally:
        supervisor.stop(timeout=5)
    assert supervisor.pauses[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_a_worker_that_ran_steadily_is_started_again_after_the_first_pause() -> None:
    supervisor = Supervisor(SLEEPS, 1, first_pause=0.05, longest_pause=30, steady=0.2, tick=0.01).start()
    try:
        for restarts in (1, 2, 3):
            time.sleep(0.3)  # it has run steadily
            supervisor.processes[0].kill()
            wait_until(lambda restarts=restarts: supervisor.restarts == restarts)  # type: ignore[misc]
    finally:
        supervisor.stop(timeout=5)
    assert supervisor.pauses == [0.05, 0.05, 0.05]


def test_a_start_that_fails_is_tried_again_after_a_pause() -> None:
    class Failing(Supervisor):
        failures = 2

        def _spawn(self) -> subprocess.Popen[bytes]:
            if self.processes and self.failures:  # (the first start succeeds)
                self.failures -= 1
                raise OSError(12, "Cannot allocate memory")
            return super()._spawn()

    supervisor = Failing(SLEEPS, 1, first_pause=0.05, longest_pause=1, steady=30, tick=0.01).start()
    try:
        supervisor.processes[0].kill()
        wait_until(lambda: supervisor.restarts == 1)
        assert supervisor.processes[0].poll() is None
    finally:
        supervisor.stop(timeout=5)
    assert supervisor.pauses == [0.05, 0.1, 0.2]  # the death, then each failed start
