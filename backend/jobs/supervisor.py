"""`canbao serve`'s job workers: processes of their own, so that imports never run on the API's
event loop, each started again when it dies.

A worker that dies while the server runs (killed by the kernel for memory, a crash) would otherwise
leave imports queued and the audit chain unsealed until someone restarted the whole service. Its job
is not lost: the job's lease runs out and another worker takes it again (backend/jobs/worker.py). A
worker asked to stop (ASKED_TO_STOP) is not started again. The supervisor waits before each start
again, a pause that doubles while the worker keeps dying soon after starting (FIRST_PAUSE up to
LONGEST_PAUSE) and starts over once it has run for STEADY, so a worker that cannot start (a database
down) is not started a thousand times; a start that fails (no memory to fork) is tried again so too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from backend.i18n import _

FIRST_PAUSE = 1.0  # seconds before a dead worker is started again
LONGEST_PAUSE = 60.0
STEADY = 60.0  # a worker that ran this long before dying is started again after FIRST_PAUSE
# A worker that exits cleanly or on SIGTERM/SIGINT was asked to stop (`canbao worker` exits 0 on
# either; a signal before its handlers are in place ends it with the signal): Ctrl-C in the terminal
# and a service manager's stop reach the whole group, and the server is going down with them.
ASKED_TO_STOP = frozenset({0, -signal.SIGTERM, -signal.SIGINT})


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
        self.pauses: list[float] = []  # each pause before a start again, in order
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
            said: list[str] = []
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for i, process in enumerate(self.processes):
                    if i in due:
                        if due[i] <= now:
                            del due[i]
                            self._start_again(i, now, due, said)
                    elif process.poll() is not None and process.returncode not in ASKED_TO_STOP:
                        ran = now - self._started_at[i]
                        pause = self._pause(i, ran)
                        due[i] = now + pause
                        said.append(
                            _(
                                "job worker {pid} exited with {code} after {seconds} s; starting it again in {pause} s",
                                pid=process.pid,
                                code=process.returncode,
                                seconds=round(ran),
                                pause=round(pause),
                            )
                        )
            for line in said:  # (not under the lock: a blocked stderr must not hold up `stop`)
                print(line, file=sys.stderr, flush=True)

    def _pause(self, i: int, ran: float) -> float:
        """The pause before worker `i` is started again: the first after a steady run, else the
        last one doubled (up to the longest)."""
        pause = self.first_pause if ran >= self.steady else self._pauses[i]
        self._pauses[i] = min(pause * 2, self.longest_pause)
        self.pauses.append(pause)
        return pause

    def _start_again(self, i: int, now: float, due: dict[int, float], said: list[str]) -> None:
        try:
            process = self._spawn()
        except OSError as exc:  # no memory or process left to fork, the program gone: later
            due[i] = now + self._pause(i, 0)
            said.append(_("job worker could not be started ({error}); trying again", error=type(exc).__name__))
            return
        self.restarts += 1
        self.processes[i] = process
        self._started_at[i] = now

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
