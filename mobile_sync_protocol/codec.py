"""Bodies in JSON or MessagePack, optionally gzip-compressed: one encoder and decoder per type."""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Literal, TypeVar

import msgspec

from mobile_sync_protocol.messages import JSON, MSGPACK

Format = Literal["json", "msgpack"]
T = TypeVar("T")

MAX_BODY_BYTES = 16 * 1024 * 1024  # after decompression: a gzip bomb stops here

# Sets (a policy's exempt groups) and dicts go out sorted: the same message is the same bytes in
# every process, whatever its string hashing.
_json_encoder = msgspec.json.Encoder(order="deterministic")
_msgpack_encoder = msgspec.msgpack.Encoder(order="deterministic")


class BodyError(ValueError):
    """The body cannot be read: unsupported media type or encoding, bad gzip, or too large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def format_of(content_type: str | None) -> Format:
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack"):
        return "msgpack"
    if media == JSON or media.endswith("+json"):
        return "json"
    raise BodyError("unsupported_media_type", f"send {JSON} or {MSGPACK}, not {media}")


def media_type(fmt: Format) -> str:
    return MSGPACK if fmt == "msgpack" else JSON


def unwrap(body: bytes, content_encoding: str | None, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > max_bytes:
            raise BodyError("body_too_large", f"the body exceeds {max_bytes} bytes")
        return body
    if encoding != "gzip":
        raise BodyError("unsupported_content_encoding", f"send gzip or identity, not {encoding}")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError("bad_gzip", "the gzip body cannot be decompressed") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyError("body_too_large", f"the body exceeds {max_bytes} bytes once decompressed")
    return out


def decode(data: bytes, type_: type[T], fmt: Format) -> T:
    if fmt == "msgpack":
        return msgspec.msgpack.decode(data, type=type_)
    return msgspec.json.decode(data, type=type_)


def encode(obj: Any, fmt: Format) -> bytes:
    return _msgpack_encoder.encode(obj) if fmt == "msgpack" else _json_encoder.encode(obj)


def gzip_body(data: bytes, level: int = 9) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (`gzip` or `*`, without q=0)."""
    for part in (accept_encoding or "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            return not (params.strip().startswith("q=") and _zero(q))
    return False


def _zero(q: str) -> bool:
    try:
        return float(q) == 0
    except ValueError:
        return False
