"""`canbao serve`'s job workers: processes of their own, so that imports never run on the API's
event loop, each started again when it dies.

A worker that exits while the server runs (killed by the kernel for memory, a crash, an operator's
`kill`) would otherwise leave imports queued and the audit chain unsealed until someone restarted
the whole service. Its job is not lost: the job's lease runs out and another worker takes it again
(backend/jobs/worker.py). The supervisor waits before each start again, a pause that doubles while
the worker keeps dying soon after starting (FIRST_PAUSE up to LONGEST_PAUSE) and starts over once it
has run for STEADY, so a worker that cannot start (a database down) is not started a thousand times.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from backend.i18n import _

FIRST_PAUSE = 1.0  # seconds before a dead worker is started again
LONGEST_PAUSE = 60.0
STEADY = 60.0  # a worker that ran this long before dying is started again after FIRST_PAUSE


class Supervisor:
    """Runs `count` processes of `command`, each started again when it exits, until `stop`."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        first_pause: float = FIRST_PAUSE,
        longest_pause: float = LONGEST_PAUSE,
        steady: float = STEADY,
        tick: float = 0.2,  # seconds between looks at the workers
    ) -> None:
        self.command = list(command)
        self.first_pause, self.longest_pause, self.steady, self.tick = first_pause, longest_pause, steady, tick
        self.processes: list[subprocess.Popen[bytes]] = []
        self.restarts = 0  # how many times a dead worker was started again
        self._started_at: list[float] = []
        self._pauses: list[float] = []
        self._count = count
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the processes, between the watcher and `stop`
        self._watcher = threading.Thread(target=self._watch, name="job-worker-supervisor", daemon=True)

    def start(self) -> Supervisor:
        with self._lock:
            for _worker in range(self._count):
                self.processes.append(self._spawn())
                self._started_at.append(time.monotonic())
                self._pauses.append(self.first_pause)
        if self._count:
            self._watcher.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command)  # noqa: S603 (the server's own command: `python -m backend.cli worker`)

    def _watch(self) -> None:
        due: dict[int, float] = {}  # worker → when it is started again
        while not self._stopping.wait(self.tick):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for i, process in enumerate(self.processes):
                    if i not in due and process.poll() is not None:
                        ran = now - self._started_at[i]
                        pause = self.first_pause if ran >= self.steady else self._pauses[i]
                        self._pauses[i] = min(pause * 2, self.longest_pause)
                        due[i] = now + pause
                        print(
                            _(
                                "job worker {pid} exited with {code} after {seconds} s; starting it again in {pause} s",
                                pid=process.pid,
                                code=process.returncode,
                                seconds=round(ran),
                                pause=round(pause),
                            ),
                            file=sys.stderr,
                            flush=True,
                        )
                    elif due.get(i, now + 1) <= now:
                        del due[i]
                        self.processes[i] = self._spawn()
                        self._started_at[i] = now
                        self.restarts += 1

    def stop(self, timeout: float = 30) -> None:
        """Stops the workers (SIGTERM: a job under way goes back to the queue), killing any that has
        not ended after `timeout` seconds; none is started again from here on."""
        with self._lock:
            self._stopping.set()
            processes = list(self.processes)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watcher.is_alive():
            self._watcher.join()
