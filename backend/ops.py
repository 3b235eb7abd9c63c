"""Operator endpoints: liveness and readiness (metrics have a listener of their own: `backend.metrics`),
and the observer that records every request."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi import ResponseSpec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from backend import metrics
from backend.logs import request_id_var
from backend.migrate import current_revision


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    database: str
    schema_revision: str | None
    expected_revision: str


@get("/health", exclude_from_auth=True, tags=["operations"], summary="The process is up")
async def health() -> Health:
    return Health(status="ok")


@get(
    "/ready",
    exclude_from_auth=True,
    tags=["operations"],
    summary="Database reachable, schema at head",
    responses={503: ResponseSpec(Readiness, description="Not ready: no database, or its schema is not at head")},
)
async def ready(state: State) -> Response[Readiness]:
    expected = state.head_revision
    try:
        async with asyncio.timeout(2):
            async with state.pool.acquire() as conn:
                revision = await current_revision(conn)
    except (OSError, TimeoutError, Exception):
        return Response(Readiness("unavailable", "unreachable", None, expected), status_code=503)
    ok = revision == expected
    body = Readiness("ok" if ok else "unavailable", "ok", revision, expected)
    return Response(body, status_code=200 if ok else 503)


def observe(app: ASGIApp) -> ASGIApp:
    """Request id, access log and metrics by route template; the raw path is never recorded."""

    log = logging.getLogger("canbao.access")

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = (
            incoming if 8 <= len(incoming) <= 64 and incoming.isascii() and incoming.isprintable() else uuid.uuid4().hex
        )
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = str(scope.get("method", ""))
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.LATENCY.labels(method, route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                },
            )
            request_id_var.reset(token)

    return middleware
