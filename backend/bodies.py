"""Request bodies are read strictly, before Litestar binds them: the media type must be one the
route accepts (else 415), and JSON is decoded by msgspec in strict mode against the handler's type.

Litestar converts bodies with `strict=False`, the mode meant for query strings and forms, where
`"42000"` and `42000.0` become the integer 42000. A JSON body has real integers, so money, years
and counts must arrive as integers; anything else is a 422 naming the field. The decoded value is
handed to Litestar as the request's parsed JSON, so the body is decoded once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg
from litestar.utils.scope.state import ScopeState

from backend.errors import DomainError, InvalidInput, plain_validation_message

JSON = RequestEncodingType.JSON.value


class UnsupportedMediaType(DomainError):
    """This route does not accept a body of that media type"""

    status, code = 415, "unsupported_media_type"


class MalformedJson(DomainError):
    """Request body is malformed"""

    status, code = 400, "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(f"body: {message}", errors=[{"field": "body", "message": message}])


@dataclass(frozen=True, slots=True)
class BodyReader:
    accepts: str  # the one media type the route's body comes in
    decoder: msgspec.json.Decoder[Any] | None  # None: a form, which Litestar parses itself
    optional: bool


_readers: weakref.WeakKeyDictionary[HTTPRouteHandler, BodyReader | None] = weakref.WeakKeyDictionary()


def reader_for(handler: HTTPRouteHandler) -> BodyReader | None:
    """How the handler's `data` arrives; None when it takes no body. Built once per handler."""
    try:
        return _readers[handler]
    except KeyError:
        reader = _readers[handler] = _make_reader(handler)
        return reader


def _make_reader(handler: HTTPRouteHandler) -> BodyReader | None:
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return None
    body = field.kwarg_definition
    media_type = body.media_type if isinstance(body, BodyKwarg) else JSON
    accepts = media_type.value if isinstance(media_type, RequestEncodingType) else media_type
    decoder = msgspec.json.Decoder(field.annotation, strict=True) if accepts == JSON else None
    return BodyReader(accepts=accepts, decoder=decoder, optional=field.is_optional)


async def read_body(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request` hook: checks the body of a route that takes one and, for JSON,
    decodes it strictly. Returns None so the handler runs."""
    reader = reader_for(request.route_handler)
    if reader is None:
        return
    media_type = request.content_type[0]
    if reader.decoder is None:
        if media_type != reader.accepts:
            raise UnsupportedMediaType(f"send the body as {reader.accepts}", accepted=[reader.accepts])
        return
    raw = await request.body()
    if not raw:
        if reader.optional:
            return
        raise InvalidInput("body", "is required: send a JSON object")
    if media_type != reader.accepts:
        raise UnsupportedMediaType(f"send the body as {reader.accepts}", accepted=[reader.accepts])
    try:
        value = reader.decoder.decode(raw)
    except msgspec.ValidationError as exc:
        field, message = plain_validation_message(str(exc), reader.decoder.type)
        raise InvalidInput(field or "body", message) from exc
    except msgspec.DecodeError as exc:
        raise MalformedJson(f"is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise MalformedJson("is nested too deeply") from exc
    ScopeState.from_scope(request.scope).json = value
