"""Each request speaks the language its `Accept-Language` prefers among the catalogs (the setting
`CANBAO_LANGUAGE` when it names none), says which in `Content-Language`, and tells caches that
the answer varies with the header."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from backend.i18n import language_tag, pick_language, use_language


def negotiated(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"accept-language"), b"")
        with use_language(pick_language(header.decode("latin-1"))) as language:
            tag = language_tag(language).encode()

            async def send_with_language(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-language"]
                    headers += [(b"content-language", tag), (b"vary", b"Accept-Language")]
                    message["headers"] = headers
                await send(message)

            await app(scope, receive, send_with_language)

    return middleware
