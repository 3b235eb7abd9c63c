"""A time limit on every request: one that has not begun its answer within its route's limit is
stopped (its transaction rolled back, its queries cancelled) and answered 503 `request_timeout`
with `Retry-After`, so a slow request cannot hold a worker and a pool connection for ever.

The limit is `CANBAO_REQUEST_TIMEOUT_S`; a route that receives big uploads sets a longer one in
its `opt` (`TIMEOUT_OPT`). Work longer than a request belongs in a job (`backend/jobs/`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import problem
from backend.i18n import _

TIMEOUT_OPT = "timeout_s"
log = logging.getLogger("canbao.timeouts")


def request_timeout(default_s: float) -> Any:
    """Litestar middleware factory (it runs after routing, so the route's `opt` is known)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            handler = scope.get("route_handler")
            limit = float(handler.opt.get(TIMEOUT_OPT, default_s)) if handler is not None else default_s
            started = False

            async def watched(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            try:
                async with asyncio.timeout(limit):
                    await app(scope, receive, watched)
            except TimeoutError:
                if started:  # the answer is under way: it cannot be replaced
                    raise
                log.warning("request timed out", extra={"route": scope.get("path_template"), "limit_s": limit})
                request: Request[Any, Any, Any] = Request(scope, receive)
                response = problem(
                    503,
                    "request_timeout",
                    _("The request took too long and was stopped"),
                    _(
                        "requests here may take at most {limit} s and what it had begun was rolled back; "
                        "try again, or later if the service is busy",
                        limit=format(limit, "g"),
                    ),
                    request,
                    retry_after_s=5,
                )
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)

        return limited

    return middleware
