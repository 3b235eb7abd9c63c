"""An httpx transport that breaks the network the way the field does: for the randomized fault suite
(tests/sync/test_faults.py) and `canbao simulate --faults`.

It wraps a real transport (`httpx.ASGITransport` for an app in-process, `httpx.AsyncHTTPTransport`
for a server elsewhere). A fault is armed for the next request (`arm`), or drawn at random
(`rate`). What each one does to a request, and what the tablet sees:

| fault | the server | the tablet |
|---|---|---|
| `drop_request` | nothing arrives | a connection error |
| `drop_answer` | runs it (a push commits) | a read error: the answer is lost |
| `duplicate` | gets it twice, one after the other | the second answer |
| `reorder` | gets it later, after the tablet's next request | a timeout now |
| `concurrent_push` | gets it twice at the same moment (two pushes of one tablet at once) | one of the two answers |
| `cut_request` | gets the body cut short | the server's answer (a 4xx) |
| `cut_answer` | runs it | the answer cut short: undecodable |

Every fault is counted in `counts` as `"<fault>"` and `"<fault>/<push|pull|other>"`.
"""

# ruff: noqa: S311 (simulation dice, not secrets)
from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Literal, get_args

import httpx

Fault = Literal["drop_request", "drop_answer", "duplicate", "reorder", "concurrent_push", "cut_request", "cut_answer"]
FAULTS: tuple[Fault, ...] = get_args(Fault)


class FaultInjected(httpx.TransportError):
    """Marks the errors this transport makes up (they are ordinary httpx transport errors)."""


class RequestDropped(FaultInjected, httpx.ConnectError):
    """The request never reached the server."""


class AnswerLost(FaultInjected, httpx.ReadError):
    """The server answered; the answer never reached the tablet."""


class RequestDelayed(FaultInjected, httpx.ReadTimeout):
    """The request is stuck in the network: it will reach the server later, after a newer one."""


def kind_of(request: httpx.Request) -> str:
    path = request.url.path
    return "push" if path.endswith("/sync/push") else "pull" if path.endswith("/sync/pull") else "other"


class FaultyTransport(httpx.AsyncBaseTransport):
    """Wraps `inner`; injects the armed faults first, then random ones at `rate` (from `kinds`)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        rng: random.Random | None = None,
        rate: float = 0.0,
        kinds: tuple[Fault, ...] = FAULTS,
        counts: Counter[str] | None = None,
    ) -> None:
        self.inner = inner
        self.rng = rng or random.Random()
        self.rate = rate
        self.kinds = kinds
        self.counts: Counter[str] = Counter() if counts is None else counts
        self.armed: dict[str, deque[Fault | None]] = {"push": deque(), "pull": deque(), "any": deque()}
        self.delayed: list[httpx.Request] = []  # reordered requests not yet delivered
        self.log: list[tuple[Fault, str]] = []
        # Sees every answer the server gave, also those a fault keeps from the tablet.
        self.on_response: Callable[[httpx.Request, httpx.Response], None] | None = None

    def arm(self, *faults: Fault | None, kind: Literal["push", "pull", "any"] = "any") -> None:
        """The next requests (of `kind`: pushes, pulls, or any) get these faults, in order (None:
        that request goes through)."""
        self.armed[kind].extend(faults)

    def disarm(self) -> None:
        for armed in self.armed.values():
            armed.clear()

    async def flush(self) -> None:
        """Delivers the delayed requests now (their answers are lost, as the tablet gave up on them)."""
        delayed, self.delayed = self.delayed, []
        for request in delayed:
            await self._deliver_ignoring(request)

    async def aclose(self) -> None:
        await self.flush()

    def _next_fault(self, request: httpx.Request) -> Fault | None:
        for armed in (self.armed.get(kind_of(request)), self.armed["any"]):
            if armed:
                return armed.popleft()
        if self.rate > 0 and self.rng.random() < self.rate:
            return self.rng.choice(self.kinds)
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        fault = self._next_fault(request)
        # Requests delayed earlier arrive after this one: out of order.
        earlier, self.delayed = self.delayed, []
        try:
            if fault is None:
                return await self._send(_copy(request, body))
            self.counts[fault] += 1
            self.counts[f"{fault}/{kind_of(request)}"] += 1
            self.log.append((fault, kind_of(request)))
            return await self._faulty(fault, request, body)
        finally:
            for late in earlier:
                await self._deliver_ignoring(late)

    async def _faulty(self, fault: Fault, request: httpx.Request, body: bytes) -> httpx.Response:
        if fault == "drop_request":
            raise RequestDropped("fault: the request was dropped", request=request)
        if fault == "drop_answer":
            await self._send(_copy(request, body))
            raise AnswerLost("fault: the answer was lost after the server ran the request", request=request)
        if fault == "duplicate":
            await self._send(_copy(request, body))
            return await self._send(_copy(request, body))
        if fault == "reorder":
            self.delayed.append(_copy(request, body))
            raise RequestDelayed("fault: the request is delayed; it arrives after the next one", request=request)
        if fault == "concurrent_push":
            first, second = await asyncio.gather(self._send(_copy(request, body)), self._send(_copy(request, body)))
            return self.rng.choice((first, second))
        if fault == "cut_request":
            return await self._send(_copy(request, body[: self._cut(len(body))]))
        assert fault == "cut_answer"
        response = await self._send(_copy(request, body))
        if not response.content:
            raise AnswerLost("fault: the (empty) answer was lost", request=request)
        return _response(response, response.content[: self._cut(len(response.content))])

    def _cut(self, length: int) -> int:
        return self.rng.randrange(0, max(length, 1))

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        # Read it whole: the server has finished (and committed) before anything is decided.
        content = await response.aread()
        await response.aclose()
        answered = _response(response, content)
        if self.on_response is not None:
            self.on_response(request, answered)
        return answered

    async def _deliver_ignoring(self, request: httpx.Request) -> None:
        with contextlib.suppress(httpx.TransportError):
            await self._send(request)


def _copy(request: httpx.Request, body: bytes) -> httpx.Request:
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx.Request(request.method, request.url, headers=headers, content=body, extensions=request.extensions)


def _response(response: httpx.Response, content: bytes) -> httpx.Response:
    headers = [
        (k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-length", "content-encoding")
    ]
    return httpx.Response(response.status_code, headers=headers, content=content, extensions=response.extensions)
