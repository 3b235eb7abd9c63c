"""Prometheus metrics labelled by route template (never by raw path) and status, served on a
listener of their own (`serve`), never on the API's port.

With several workers, `canbao serve` sets PROMETHEUS_MULTIPROC_DIR so every worker's samples are
summed in the one `/metrics` answer, which its main process gives.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from backend.db import Pool

REQUESTS = Counter("canbao_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "canbao_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_IN_USE = Gauge(
    "canbao_db_pool_connections_in_use", "Database connections checked out", multiprocess_mode="livesum"
)
SYNC_ONE_BY_ONE = Counter(
    "canbao_sync_mutations_one_by_one_total",
    "Pushed mutations applied one by one, each under a savepoint of its own (a failure in their chunk,"
    " or a suspended tablet), instead of on the fast path",
)
REPLICA_READS_AGAIN = Counter(
    "canbao_replica_reads_again_total",
    "Requests whose read failed on a standby (its connection lost, a recovery conflict, or too slow) and"
    " were run again on the primary",
    ["route"],
)
REPLICA_PASSED_BY = Counter(
    "canbao_replica_reads_on_primary_total",
    "Reads that could go to a standby and were made on the primary instead: the standby taken in turn"
    " could not be reached, did not answer or had no connection free within a second (unreachable), or"
    " had not replayed what the read must see within the wait (behind)",
    ["reason"],
)
for _reason in ("unreachable", "behind"):  # both series from the start, for rate() alerts
    REPLICA_PASSED_BY.labels(_reason)
POOL_SIZE = Gauge("canbao_db_pool_connections", "Database connections open", multiprocess_mode="livesum")

PATH = "/metrics"
POOL_SAMPLE_S = 1.0  # how often a worker writes its pool's gauges


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


async def sample_pool(pool: Pool) -> None:
    """Writes the pool's gauges every POOL_SAMPLE_S until cancelled (the app's lifespan): the
    listener runs apart from the workers and cannot ask their pools."""
    while True:
        POOL_SIZE.set(pool.get_size())
        POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())
        await asyncio.sleep(POOL_SAMPLE_S)


class MetricsServer:
    """`GET /metrics` on HOST:PORT in a thread; every other path is 404."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingMixIn, WSGIServer):
            address_family = family
            daemon_threads = True

        self._httpd = make_server(host, port, _answer, server_class=Server, handler_class=_Quiet)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="canbao-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]
    body, content_type = render()
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


class _Quiet(WSGIRequestHandler):
    """No access log: a scrape every few seconds is not worth a line."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
