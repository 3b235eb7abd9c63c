"""A log line is one JSON object: its time to the millisecond in UTC, the request id when there is one,
and the record's extras (what JSON cannot say written as text)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import date

from backend.logs import JsonFormatter, request_id_var


def line(formatter: JsonFormatter, created: float, **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"msg": "request", "name": "canbao.access", "levelname": "INFO", **extra})
    record.created, record.msecs = created, (created - int(created)) * 1000
    parsed: dict[str, object] = json.loads(formatter.format(record))
    return parsed


def test_each_line_has_its_own_second_and_millisecond() -> None:
    formatter = JsonFormatter()
    # 1796000000 is 2026-11-30T00:53:20Z; back and forth across a second, as threads may log (times
    # in eighths of a second: exact in binary).
    stamps = [line(formatter, t)["ts"] for t in (1796000000.125, 1796000001.5, 1796000000.875, 1796000061.0)]
    assert stamps == [
        "2026-11-30T00:53:20.125Z",
        "2026-11-30T00:53:21.500Z",
        "2026-11-30T00:53:20.875Z",
        "2026-11-30T00:54:21.000Z",
    ]


def test_a_line_carries_the_request_id_and_the_extras() -> None:
    person, token = uuid.UUID(int=7), request_id_var.set("f3e700ee1f4c49f8bd04e85f1ef4e0bb")
    try:
        entry = line(JsonFormatter(), 1796000000.0, route="/api/v1/households/search", status=200, person=person,
                     day=date(2026, 12, 7), odd=complex(1, 2))  # fmt: skip
    finally:
        request_id_var.reset(token)
    assert entry == {
        "ts": "2026-11-30T00:53:20.000Z",
        "level": "info",
        "logger": "canbao.access",
        "msg": "request",
        "request_id": "f3e700ee1f4c49f8bd04e85f1ef4e0bb",
        "route": "/api/v1/households/search",
        "status": 200,
        "person": str(person),
        "day": "2026-12-07",
        "odd": "(1+2j)",
    }
