"""The load generator's HTTP client: one keep-alive HTTP/1.1 connection per simulated user, requests
written as bytes and answers read by Content-Length (or chunks), nothing more.

httpx, which the benchmarks used before, spent 1.0–2.4 ms of CPU a request in the client, more than
the server it measured: on 2 cores the load generator took a third of the machine from the servers
and queued their answers behind its own work, so latencies measured the client as much as the
servers. This one spends about a tenth of that. It speaks only what the benchmarks send: GET and POST
with a body of bytes or JSON, no redirects, no cookies, no TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec


class Headers(dict[str, str]):
    """An answer's headers, names in lower case; looked up in any case."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class Reply:
    """An answer: as much of httpx.Response as the benchmarks read."""

    __slots__ = ("content", "headers", "method", "path", "status_code")

    def __init__(self, method: str, path: str, status_code: int, headers: Headers, content: bytes) -> None:
        self.method, self.path, self.status_code, self.headers, self.content = (
            method,
            path,
            status_code,
            headers,
            content,
        )

    def json(self) -> Any:
        return msgspec.json.decode(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Client:
    """One connection to `base_url`, opened on first use and again after the server closes it.
    Requests on it go one at a time, as a user's do."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"the load client speaks plain http only: {base_url}")
        self._host, self._port = url.hostname, url.port or 80
        self._authority = url.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, *, json: Any = None, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        if json is not None:
            content = msgspec.json.encode(json)
            headers = {"Content-Type": "application/json", **(headers or {})}
        return await self.request("POST", path, content=content or b"", headers=headers)

    async def request(
        self, method: str, path: str, *, content: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Reply:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._authority}", f"Content-Length: {len(content)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + content)
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        found = Headers()
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                found[name.strip().lower()] = value.strip()
        if "content-length" in found:
            body = await self._reader.readexactly(int(found["content-length"]))
        elif found.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunks()
        else:
            body = await self._reader.read()  # the server closes to end it
            found["connection"] = "close"
        if found.get("connection", "").lower() == "close":
            await self.close()
        return Reply(method, path, status, found, body)

    async def _chunks(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._trailer()
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def _trailer(self) -> None:
        assert self._reader is not None
        while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
            pass

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None
