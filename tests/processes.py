"""Real `canbao` processes for the CLI and server tests: a clean environment, bounded waits, and a
clean-up that leaves no canbao or postgres process of ours behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import psutil

CANBAO = shutil.which("canbao", path=str(Path(sys.executable).parent)) or "canbao"

# Hashing at the production cost makes every created user cost ~0.3 s; the rules are the same.
FAST_HASHING = {"CANBAO_ARGON2_TIME_COST": "1", "CANBAO_ARGON2_MEMORY_KIB": "64"}
# A `canbao` process on the suite's day (tests/conftest.py's NOW, pinned in-process), whatever the calendar says.
PINNED_CLOCK = {"CANBAO_BUSINESS_CLOCK": "2026-12-02T02:00:00Z"}

POSTGRES_PROGRAMS = {"postgres", "pg_ctl", "initdb"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting Canbao or libpq would read, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL"
        and not key.startswith(("CANBAO_", "PG"))
        and key not in {"PROMETHEUS_MULTIPROC_DIR", "PYTHONASYNCIODEBUG"}
    }
    # The suite reads the source language, whatever the terminal's locale; tests of the Chinese ask for it.
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        env.pop(variable, None)
    env["CANBAO_LANGUAGE"] = "en"
    env.update(extra)
    if "DATABASE_URL" in extra and "CANBAO_KEY_FILE" not in extra:
        from tests.conftest import KEY_FILE

        env["CANBAO_KEY_FILE"] = KEY_FILE  # the test databases' keys
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`canbao ARGS`, to completion (killed after `timeout`)."""
    return subprocess.run(
        [CANBAO, *args], check=False, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def postgres_processes(mentioning: str | Path) -> list[psutil.Process]:
    """Running postgres, pg_ctl or initdb processes whose command line mentions `mentioning`."""
    needle = str(mentioning)
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or not cmdline:
            continue
        program = Path(cmdline[0]).name
        if (program in POSTGRES_PROGRAMS or proc.info["name"] in POSTGRES_PROGRAMS) and any(
            needle in part for part in cmdline
        ):
            found.append(proc)
    return found


def wait_for_no_postgres(mentioning: str | Path, timeout: float = 15) -> list[psutil.Process]:
    """Waits for every postgres process mentioning the path to end; returns those still running."""
    deadline = time.monotonic() + timeout
    while (left := postgres_processes(mentioning)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_postgres(mentioning: str | Path) -> None:
    """Clean-up only: ends the postgres processes that a test's own canbao started in its folder."""
    for proc in postgres_processes(mentioning):
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in wait_for_no_postgres(mentioning, timeout=5):
        with contextlib.suppress(psutil.Error):
            proc.kill()


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    """A short-named folder (the postgres socket path has a length limit), emptied of servers after."""
    folder = Path(tempfile.mkdtemp(prefix="cbt-"))
    try:
        yield folder
    finally:
        kill_postgres(folder)
        shutil.rmtree(folder, ignore_errors=True)


class Server:
    """A running `canbao serve`, in its own session so that a signal to its group is a Ctrl-C."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"canbao serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                response = httpx.get(self.url + "/ready", timeout=2)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s ({last}):\n{self.output()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, *, group: bool = False, timeout: float = 30) -> int:
        """Sends `sig` (to the whole process group when `group`, as a terminal's Ctrl-C does) and
        waits for the exit code."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"canbao serve ignored signal {sig}:\n{self.output()[-4000:]}") from None


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str], port: int | None = None, cwd: Path | None = None) -> Iterator[Server]:
    """`canbao ARGS serve --port PORT`; whatever is left of it is killed at the end."""
    port = port or free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [CANBAO, *args, "--port", str(port)],
        # A metrics port of its own: another canbao on this machine may hold the default.
        env={"CANBAO_METRICS_PORT": str(free_port()), **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(proc, port, log)
    try:
        yield server
    finally:
        _end(proc)
        log.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
