"""Structured JSON logs with the request id; nothing personal goes in.

Log calls pass identifiers of records (UUIDs, division codes), never ID numbers, names or phones;
the access log names the route template, not the path, and drops query strings.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Every request writes one (the access log), so each costs little:
    msgspec encodes it (extras it cannot encode are written as `str` of them) and a second's
    timestamp is formatted once."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder(enc_hook=str)
        self._stamped: tuple[int, str] = (-1, "")  # a second and its text, replaced as one

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        stamped_second, stamp = self._stamped
        if second != stamped_second:  # (threads racing here each make their own)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamped = (second, stamp)
        entry: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (rid := request_id_var.get()) is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry).decode()


def configure_logging(level: str = "INFO") -> None:
    # What no line of ours shows is not collected for each record: the caller's file and line
    # (the logging HOWTO's "Optimization"), thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Uvicorn's access log prints raw paths; ours prints route templates instead.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
