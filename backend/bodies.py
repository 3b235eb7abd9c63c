"""Request input is read strictly, before Litestar binds it: parameters that no column can hold are
refused by name, a body nested deeper than any legitimate one is refused before it is decoded, the
media type must be one the route accepts (else 415), and JSON is decoded by msgspec in strict mode
against the handler's type.

Parameters: a query, path or header value holding a NUL character (PostgreSQL text cannot), or an
integer parameter outside PostgreSQL's bigint range (−2^63 … 2^63−1), is a 422 naming the parameter
(`query.before`), on every route. The value itself is never echoed back.

Nesting: msgspec decodes arrays and objects recursively, so a body nested 100,000 levels deep ends
in a RecursionError (or worse) instead of an answer. `MAX_DEPTH` levels of arrays and objects (maps)
are allowed — legitimate bodies nest 5 (a sync push, a policy version) — and `too_deep` checks the
raw bytes, JSON or MessagePack, before anything decodes them: a 400 naming the body.

Fields: a NUL character (`\\u0000`) in any text of a JSON body, or an integer outside the bigint
range, is a 422 naming the field, for the fields whose own rules do not refuse it already.

Litestar converts bodies with `strict=False`, the mode meant for query strings and forms, where
`"42000"` and `42000.0` become the integer 42000. A JSON body has real integers, so money, years
and counts must arrive as integers; anything else is a 422 naming the field. The decoded value is
handed to Litestar as the request's parsed JSON, so the body is decoded once.
"""

from __future__ import annotations

import re
import types
import typing
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import msgspec
from litestar import Request
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType, RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg, ParameterKwarg
from litestar.utils.scope.state import ScopeState

from backend.errors import DomainError, InvalidInput, plain_validation_message
from backend.i18n import N_, _

JSON = RequestEncodingType.JSON.value

MAX_DEPTH = 64  # levels of arrays and objects a body may nest; legitimate ones nest 5
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1  # an integer parameter must fit a PostgreSQL bigint
_TOO_DEEP = N_("is nested more than {depth} levels deep")
TOO_DEEP = _TOO_DEEP.format(depth=MAX_DEPTH)  # in English; `too_deep_words()` in the request's language
NO_NUL = N_("must not contain NUL characters")  # translated where it is raised: _(NO_NUL)


def too_deep_words() -> str:
    """TOO_DEEP in the current language."""
    return _(_TOO_DEEP, depth=MAX_DEPTH)


class UnsupportedMediaType(DomainError):
    """This route does not accept a body of that media type"""

    status, code = 415, "unsupported_media_type"


class MalformedJson(DomainError):
    """Request body is malformed"""

    status, code = 400, "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(f"body: {message}", errors=[{"field": "body", "message": message}])


class InvalidParameter(InvalidInput):
    """Request is not valid"""


# Nesting ---------------------------------------------------------------------------------------------

# Every byte but the quote and the brackets, deleted by `bytes.translate`.
_NOT_JSON_MARKS = bytes(b for b in range(256) if b not in b'"[]{}')
_JSON_SQUARE = bytes.maketrans(b"{}", b"[]")
_JSON_STEP = [0] * 256
_JSON_STEP[ord("[")], _JSON_STEP[ord("]")] = 1, -1
_JSON_PASSES = 8


def json_too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text opens more than `limit` arrays and objects inside each other, at any point
    (outside strings). At C speed: escaped backslashes and quotes dropped, strings cut out by
    splitting on their quotes, then the brackets left are measured. Malformed text is counted as far
    as it goes (at least as deep as a decoder would get before refusing it).

    The measure: each pass that drops the innermost `[]` pairs lowers the depth by at most one, so
    after k passes the depth lies between the remainder's and the remainder's plus k; a remainder
    with few brackets, or a run of more than `limit` openings, decides. Only text that neither
    decides within a few passes is summed bracket by bracket."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # cannot nest deeper than it opens
        return False
    if b"\\" in raw:
        # In a run of backslashes each pair is one escaped backslash; what is left escapes one byte.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(None, _NOT_JSON_MARKS)
    brackets = b"".join(marks.split(b'"')[::2]).translate(_JSON_SQUARE)  # the even pieces lie outside strings
    rest, passes = brackets, 0
    while True:
        if rest.count(b"[") + passes <= limit:
            return False
        if b"[" * (limit + 1) in rest:
            return True
        shorter = rest.replace(b"[]", b"")
        if passes == _JSON_PASSES or len(shorter) == len(rest):
            break
        rest, passes = shorter, passes + 1
    return max(accumulate(map(_JSON_STEP.__getitem__, brackets))) > limit


# MessagePack: what each first byte starts (msgpack spec), as (kind, n).
_SKIP, _SIZED, _ARRAY, _MAP, _INVALID = range(5)  # n: bytes after the header | length field bytes
_MSGPACK: list[tuple[int, int]] = [(_INVALID, 0)] * 256
for _b in range(0x00, 0x80):
    _MSGPACK[_b] = (_SKIP, 0)  # positive fixint
for _b in range(0xE0, 0x100):
    _MSGPACK[_b] = (_SKIP, 0)  # negative fixint
for _b in range(0xA0, 0xC0):
    _MSGPACK[_b] = (_SKIP, _b & 0x1F)  # fixstr
for _b in range(0x80, 0x90):
    _MSGPACK[_b] = (_MAP, -(_b & 0x0F))  # fixmap: a count below 1 is the count itself, negated
for _b in range(0x90, 0xA0):
    _MSGPACK[_b] = (_ARRAY, -(_b & 0x0F))  # fixarray
_MSGPACK[0xC0] = _MSGPACK[0xC2] = _MSGPACK[0xC3] = (_SKIP, 0)  # nil, false, true
for _b, _n in {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}.items():
    _MSGPACK[_b] = (_SKIP, _n)  # floats and sized integers
for _b, _n in {0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}.items():
    _MSGPACK[_b] = (_SKIP, _n)  # fixext: type byte and data
for _b, _n in {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}.items():
    _MSGPACK[_b] = (_SIZED, _n)  # bin, str: length field, then the data
for _b, _n in {0xC7: 1, 0xC8: 2, 0xC9: 4}.items():
    _MSGPACK[_b] = (_SIZED, -_n)  # ext: length field, type byte, then the data
_MSGPACK[0xDC], _MSGPACK[0xDD], _MSGPACK[0xDE], _MSGPACK[0xDF] = (_ARRAY, 2), (_ARRAY, 4), (_MAP, 2), (_MAP, 4)
_NOT_MSGPACK_CONTAINERS = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))


_MSGPACK_MAP = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_MSGPACK_ARRAY = msgspec.msgpack.Decoder(list[msgspec.Raw])
_MSGPACK_ITEM_BYTES = 16  # items smaller than this on average are walked with their container
_MSGPACK_SPLIT_PASSES = 4  # the bytes split and read again, at most, in passes over the body


def msgpack_too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether a MessagePack value opens more than `limit` arrays and maps inside each other; as
    `_msgpack_walk` answers it, for any bytes. A value with no more container headers than `limit`
    is not; a map or an array of sizeable items is split by msgspec (in C, its recursion bounded) and
    each item asked in turn, with one level less: in a sync push, each mutation apart, most of which
    have too few bytes that look like container headers to need a walk at all (walking every header
    of a push took 4% of its server time, issue 20). Anything else is walked, and so is what is left
    once the splits have read `_MSGPACK_SPLIT_PASSES` times the body's bytes (a body of containers
    each holding a large string and the next would otherwise be read again at every level)."""
    return _msgpack_too_deep(data, limit, [_MSGPACK_SPLIT_PASSES * len(data)])


def _msgpack_too_deep(data: bytes, limit: int, budget: list[int]) -> bool:
    budget[0] -= len(data)
    if len(data.translate(None, _NOT_MSGPACK_CONTAINERS)) <= limit:  # no more container headers than that
        return False
    items = _msgpack_items(data) if limit > 0 and budget[0] >= 0 else None
    if items is None:
        return _msgpack_walk(data, limit)
    return any(_msgpack_too_deep(bytes(item), limit - 1, budget) for item in items)


def _msgpack_items(data: bytes) -> list[msgspec.Raw] | None:
    """The values of a map with text keys, or the items of an array, when `data` is exactly that one
    value, its keys told apart (the header's count of them), and its items of
    `_MSGPACK_ITEM_BYTES` or more on average; else None."""
    first = data[0]
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        count = first & 0x0F if first <= 0x8F else int.from_bytes(data[1 : 3 if first == 0xDE else 5], "big")
        decoder: msgspec.msgpack.Decoder[Any] = _MSGPACK_MAP
    elif 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        count = first & 0x0F if first <= 0x9F else int.from_bytes(data[1 : 3 if first == 0xDC else 5], "big")
        decoder = _MSGPACK_ARRAY
    else:
        return None
    if count * _MSGPACK_ITEM_BYTES > len(data):
        return None
    try:
        decoded = decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None  # not exactly one such value, or nested past msgspec's bound: walked
    items = list(decoded.values()) if isinstance(decoded, dict) else decoded
    return items if len(items) == count else None  # a key given twice: walked


def _msgpack_walk(data: bytes, limit: int) -> bool:
    """`msgpack_too_deep` by walking the headers in a loop (no recursion), skipping strings and
    binary data whole; stops at the end of the first value, at a byte no value starts with, or where
    the data runs out."""
    table = _MSGPACK
    open_counts: list[int] = []  # the items left in each enclosing container
    left = 1  # the items left at this level: the one top-level value
    pos, end = 0, len(data)
    while pos < end:
        kind, n = table[data[pos]]
        pos += 1
        left -= 1
        if kind == _SKIP:
            pos += n
        elif kind == _SIZED:
            size = abs(n)
            pos += size + int.from_bytes(data[pos : pos + size], "big") + (n < 0)
        elif kind == _INVALID:
            return False  # the decoder refuses the body here
        else:
            if len(open_counts) >= limit:
                return True
            if n <= 0:
                count = -n
            else:
                count = int.from_bytes(data[pos : pos + n], "big")
                pos += n
            if kind == _MAP:
                count *= 2
            if count:
                open_counts.append(left)
                left = count
        while not left:
            if not open_counts:
                return False  # the value is complete
            left = open_counts.pop()
    return False


def too_deep(raw: bytes, fmt: Literal["json", "msgpack"] = "json", limit: int = MAX_DEPTH) -> bool:
    """Whether a body nests more than `limit` levels; check it before decoding (see the module)."""
    return msgpack_too_deep(raw, limit) if fmt == "msgpack" else json_too_deep(raw, limit)


# Per handler, built once ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyReader:
    accepts: str  # the one media type the route's body comes in
    decoder: msgspec.json.Decoder[Any] | None  # None: a form, which Litestar parses itself
    optional: bool


@dataclass(frozen=True, slots=True)
class IntegerParameter:
    """A parameter typed as an integer whose declared bounds do not keep it within a bigint."""

    source: ParamType
    field_name: str  # the handler's argument
    name: str  # as the request names it
    check_low: bool
    check_high: bool


@dataclass(frozen=True, slots=True)
class HandlerInput:
    body: BodyReader | None
    integers: tuple[IntegerParameter, ...]


_inputs: weakref.WeakKeyDictionary[HTTPRouteHandler, HandlerInput] = weakref.WeakKeyDictionary()


def input_for(handler: HTTPRouteHandler) -> HandlerInput:
    """What the handler takes: its body and its integer parameters. Built once per handler (the
    OPTIONS handlers Litestar makes take no weak reference, and no input: built each time)."""
    try:
        return _inputs[handler]
    except KeyError:
        found = _inputs[handler] = HandlerInput(_make_reader(handler), _integer_parameters(handler))
        return found
    except TypeError:
        return HandlerInput(_make_reader(handler), _integer_parameters(handler))


def reader_for(handler: HTTPRouteHandler) -> BodyReader | None:
    """How the handler's `data` arrives; None when it takes no body."""
    return input_for(handler).body


def _make_reader(handler: HTTPRouteHandler) -> BodyReader | None:
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return None
    body = field.kwarg_definition
    media_type = body.media_type if isinstance(body, BodyKwarg) else JSON
    accepts = media_type.value if isinstance(media_type, RequestEncodingType) else media_type
    decoder = msgspec.json.Decoder(field.annotation, strict=True) if accepts == JSON else None
    return BodyReader(accepts=accepts, decoder=decoder, optional=field.is_optional)


def _integer_parameters(handler: HTTPRouteHandler) -> tuple[IntegerParameter, ...]:
    dependencies = handler.resolve_dependencies()
    found = []
    for field_name, field in handler.parsed_fn_signature.parameters.items():
        if field_name in RESERVED_KWARGS or field_name in dependencies or field.is_di_field:
            continue
        if not _is_integer(field.annotation):
            continue
        kwarg = field.kwarg_definition if isinstance(field.kwarg_definition, ParameterKwarg) else None
        source, name = ParamType.QUERY, field_name
        if kwarg is not None:
            source, name = kwarg.param_type, kwarg.name or field_name
        low = _bound(kwarg, "ge", "gt", 1)
        high = _bound(kwarg, "le", "lt", -1)
        check_low = low is None or low < BIGINT_MIN
        check_high = high is None or high > BIGINT_MAX
        if check_low or check_high:
            found.append(IntegerParameter(source, field_name, name, check_low, check_high))
    return tuple(found)


def _bound(kwarg: ParameterKwarg | None, inclusive: str, exclusive: str, step: int) -> float | None:
    """The parameter's declared bound on one side, as an inclusive one; None when it has none."""
    if kwarg is None:
        return None
    if (value := getattr(kwarg, inclusive)) is not None:
        return value  # type: ignore[no-any-return]
    if (value := getattr(kwarg, exclusive)) is not None:
        return value + step  # type: ignore[no-any-return]
    return None


def _is_integer(annotation: Any) -> bool:
    """`int`, `int | None`, `list[int]`, an IntEnum …; not `bool`."""
    if isinstance(annotation, type):
        return issubclass(annotation, int) and not issubclass(annotation, bool)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_integer(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType) or origin in (list, tuple, set, frozenset):
        return any(_is_integer(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return False


# The hook ------------------------------------------------------------------------------------------


async def read_body(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request` hook: checks the parameters, then the body of a route that takes
    one and, for JSON, decodes it strictly. Returns None so the handler runs."""
    found = input_for(request.route_handler)
    check_parameters(request, found.integers)
    reader = found.body
    if reader is None:
        return
    media_type = request.content_type[0]
    if reader.decoder is None:
        if media_type != reader.accepts:
            raise UnsupportedMediaType(
                _("send the body as {media_type}", media_type=reader.accepts), accepted=[reader.accepts]
            )
        return
    raw = await request.body()
    if not raw:
        if reader.optional:
            return
        raise InvalidInput("body", _("is required: send a JSON object"))
    if media_type != reader.accepts:
        raise UnsupportedMediaType(
            _("send the body as {media_type}", media_type=reader.accepts), accepted=[reader.accepts]
        )
    if json_too_deep(raw):
        raise MalformedJson(too_deep_words())
    try:
        value = reader.decoder.decode(raw)
    except msgspec.ValidationError as exc:
        field, message = plain_validation_message(str(exc), reader.decoder.type)
        raise InvalidInput(field or "body", message) from exc
    except msgspec.DecodeError as exc:
        raise MalformedJson(_("is not valid JSON ({error})", error=exc)) from exc
    # Fields without a rule of their own: text with a NUL, an integer no bigint column holds.
    if b"\\u0000" in raw and (path := nul_at(msgspec.to_builtins(value))) is not None:
        raise InvalidInput(path or "body", _(NO_NUL))
    if _LONG_NUMBER.search(raw) and (beyond := beyond_bigint_at(msgspec.to_builtins(value))) is not None:
        path, number = beyond
        rule = N_("must be at least {bound}") if number < 0 else N_("must be at most {bound}")
        raise InvalidInput(path or "body", _(rule, bound=_nearest(number)))
    ScopeState.from_scope(request.scope).json = value


_LONG_NUMBER = re.compile(rb"[0-9]{19}")  # |2^63| has 19 digits: no shorter integer is beyond a bigint


def _nearest(number: int) -> int:
    return BIGINT_MIN if number < 0 else BIGINT_MAX


def beyond_bigint_at(value: Any, path: str = "") -> tuple[str, int] | None:
    """Where in a decoded body (builtins) an integer lies outside PostgreSQL's bigint, and which."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (path, value) if not BIGINT_MIN <= value <= BIGINT_MAX else None
    children: Any = ()
    if isinstance(value, dict):
        children = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    for child_path, item in children:
        if (found := beyond_bigint_at(item, child_path)) is not None:
            return found
    return None


def nul_at(value: Any, path: str = "") -> str | None:
    """Where in a decoded body (builtins) a text holds a NUL: `members[0].name`, "" for the body
    itself, the object for one of its keys (a key is not echoed back); None when nowhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path
            if (found := nul_at(item, f"{path}.{key}" if path else str(key))) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


def check_parameters(request: Request[Any, Any, Any], integers: tuple[IntegerParameter, ...] = ()) -> None:
    """422 naming the first parameter that holds a NUL character (any query, path or header value,
    declared or not) or, of `integers`, lies outside the bigint range."""
    scope = request.scope
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                raise InvalidParameter(_field(ParamType.QUERY, name), _(NO_NUL))
    if "\x00" in scope.get("path", ""):
        for name, value in request.path_params.items():
            if isinstance(value, str) and "\x00" in value:
                raise InvalidParameter(_field(ParamType.PATH, name), _(NO_NUL))
    for raw_name, raw_value in scope.get("headers", ()):
        if b"\x00" in raw_value or b"\x00" in raw_name:
            raise InvalidParameter(_field(ParamType.HEADER, raw_name.decode("latin-1")), _(NO_NUL))
    for parameter in integers:
        for value in _values(request, parameter):
            number = _as_integer(value)
            if number is None:
                continue  # not an integer at all: Litestar's own validation names it
            field = _field(parameter.source, parameter.name)
            if parameter.check_low and number < BIGINT_MIN:
                raise InvalidParameter(field, _("must be at least {bound}", bound=BIGINT_MIN))
            if parameter.check_high and number > BIGINT_MAX:
                raise InvalidParameter(field, _("must be at most {bound}", bound=BIGINT_MAX))


def _values(request: Request[Any, Any, Any], parameter: IntegerParameter) -> Iterator[Any]:
    if parameter.field_name in request.path_params:
        yield request.path_params[parameter.field_name]
    elif parameter.source == ParamType.HEADER:
        yield from request.headers.getall(parameter.name, [])
    elif parameter.source == ParamType.COOKIE:
        if parameter.name in request.cookies:
            yield request.cookies[parameter.name]
    else:
        yield from request.query_params.getall(parameter.name, [])


def _as_integer(value: Any) -> int | None:
    """The integer Litestar would make of a parameter's text (msgspec, not strict); None if none."""
    if isinstance(value, int):
        return value
    try:
        number: int = msgspec.convert(value, int, strict=False)
    except (msgspec.ValidationError, ValueError, TypeError):
        return None
    return number


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


def _field(source: ParamType, name: str) -> str:
    """`query.before`; a name that is not plain (a NUL in it, too long) is not echoed back."""
    return f"{source.value}.{name}" if _PLAIN_NAME.fullmatch(name) else source.value
