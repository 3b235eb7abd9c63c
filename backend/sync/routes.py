"""`/api/v1/sync`: push and pull for tablets (JSON or MessagePack, gzip), a tablet's store key, the
quarantine queue, and a tablet's follow-up sheet."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, ClassVar, TypeVar
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from backend import bodies, fields
from backend.actor import Role
from backend.api_docs.openapi import REQUEST_BODY
from backend.db import Pool
from backend.deps import CurrentActor, Tx
from backend.errors import DomainError, plain_validation_message
from backend.guards import require_roles
from backend.i18n import N_, _
from backend.sync import context, query_codes, review, store_key
from backend.sync import pull as pull_service
from backend.sync import push as push_service
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m

DEVICE_USERS = require_roles(Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER)
REVIEWERS = require_roles(Role.TOWNSHIP_REVIEWER, Role.DISTRICT_ADMIN)
T = TypeVar("T")


class UnsupportedProtocolVersion(DomainError):
    """This protocol version is not supported; update the app"""

    status, code = 426, "unsupported_protocol_version"


class MalformedBody(DomainError):
    """The sync request body cannot be read"""

    status, code = 400, "malformed_body"


class BodyNotAccepted(DomainError):
    """The body's media type or encoding is not accepted"""

    status: ClassVar[int] = 415
    code: ClassVar[str] = "unsupported_media_type"


async def read_envelope(request: Request[Any, Any, Any], type_: type[T]) -> tuple[T, codec.Format]:
    """Decodes the body in steps, so each failure gets its own answer: media type and encoding,
    then the protocol version alone, then the envelope (mutations stay raw)."""
    try:
        fmt = codec.format_of(request.headers.get("content-type"))
        body = codec.unwrap(await request.body(), request.headers.get("content-encoding"))
    except codec.BodyError as exc:
        if exc.code == "body_too_large":
            raise MalformedBody(_body_error_words(exc, request), reason=exc.code) from exc
        raise BodyNotAccepted(_body_error_words(exc, request), reason=exc.code) from exc
    if bodies.too_deep(body, fmt):  # before anything decodes it: msgspec recurses once per level
        message = bodies.too_deep_words()
        raise MalformedBody(f"body: {message}", errors=[{"field": "body", "message": message}])
    try:
        probe = codec.decode(body, m.VersionProbe, fmt)
    except msgspec.DecodeError as exc:
        raise MalformedBody(_decode_failure(exc, m.VersionProbe, "protocol_version")) from exc
    if probe.protocol_version not in m.SUPPORTED_VERSIONS:
        raise UnsupportedProtocolVersion(
            _("protocol version {version} is not supported", version=probe.protocol_version),
            supported_versions=list(m.SUPPORTED_VERSIONS),
        )
    try:
        return codec.decode(body, type_, fmt), fmt
    except msgspec.DecodeError as exc:
        raise MalformedBody(_decode_failure(exc, type_)[:300]) from exc


# What mobile_sync_protocol.codec's BodyError says (in English, for tablets), by its code, in the
# request's language; an unknown code keeps the protocol's English.
_BODY_ERRORS = {
    "unsupported_media_type": N_("send {json} or {msgpack}, not {media}"),
    "unsupported_content_encoding": N_("send gzip or identity, not {encoding}"),
    "bad_gzip": N_("the gzip body cannot be decompressed"),
    "body_too_large": N_("the body exceeds {max_bytes} bytes"),
}


def _body_error_words(exc: codec.BodyError, request: Request[Any, Any, Any]) -> str:
    words = _BODY_ERRORS.get(exc.code)
    if words is None:
        return str(exc)
    media = (request.headers.get("content-type") or m.JSON).split(";", 1)[0].strip().lower()
    encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
    return _(words, json=m.JSON, msgpack=m.MSGPACK, media=media, encoding=encoding, max_bytes=codec.MAX_BODY_BYTES)


def _decode_failure(exc: msgspec.DecodeError, type_: Any, field: str | None = None) -> str:
    """A body msgspec cannot decode, in words naming the field (as the REST API's validation errors)."""
    if isinstance(exc, msgspec.ValidationError):
        path, words = plain_validation_message(str(exc), type_)
        path = path or field
        return f"{path}: {words}" if path else words
    words = _("is not valid JSON or MessagePack")
    return f"{field or 'body'}: {words}"


def envelope_bodies(type_: type[Any]) -> dict[str, dict[str, Any]]:
    """The envelope as the API document shows it: what `read_envelope` accepts, in JSON or
    MessagePack (either may be gzipped), in a protocol version this server supports."""
    (_schema,), definitions = msgspec.json.schema_components([type_])
    schema: dict[str, Any] = definitions[type_.__name__]
    schema["properties"]["protocol_version"] = {"type": "integer", "enum": list(m.SUPPORTED_VERSIONS)}
    info = msgspec.inspect.type_info(type_)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:  # msgspec's schema leaves out their format
        kinds = getattr(field.type, "types", (field.type,))
        if any(isinstance(kind, msgspec.inspect.DateTimeType) for kind in kinds):
            when = {"type": "string", "format": "date-time"}
            none = [{"type": "null"}] if any(isinstance(kind, msgspec.inspect.NoneType) for kind in kinds) else []
            schema["properties"][field.encode_name] = {"anyOf": [when, *none]} if none else when
    return {m.JSON: schema, m.MSGPACK: schema}


GZIP_FROM_BYTES = 1024  # smaller answers are not worth the CPU


async def _answer(
    obj: Any, fmt: codec.Format, request: Request[Any, Any, Any], headers: dict[str, str] | None = None
) -> Response[bytes]:
    """The answer in the request's format; gzip (level 6, off the event loop) when the client
    accepts it and the body is worth it — a first pull is ~10× smaller so."""
    body = codec.encode(obj, fmt)
    headers = {**(headers or {}), "Vary": "Accept-Encoding"}
    if len(body) >= GZIP_FROM_BYTES and codec.accepts_gzip(request.headers.get("accept-encoding")):
        body = await asyncio.to_thread(codec.gzip_body, body, 6)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=codec.media_type(fmt), status_code=200, headers=headers)


class SyncController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]

    @post(
        "/push",
        status_code=200,
        guards=[DEVICE_USERS],
        summary="Push a batch of a tablet's mutations (see mobile_sync_protocol/PROTOCOL.md)",
        opt={REQUEST_BODY: envelope_bodies(m.PushRequest)},
    )
    async def push(self, request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, state: State) -> Response[bytes]:
        envelope, fmt = await read_envelope(request, m.PushRequest)
        ctx = context.Context(
            timezone=state.settings.timezone,
            code_key=state.key.secret,
            now=context.now_utc(),
            dedup=not state.settings.test_break_push_dedup,
        )
        return await _answer(await push_service.push(tx, actor, envelope, fmt, ctx), fmt, request)

    @post(
        "/pull",
        status_code=200,
        guards=[DEVICE_USERS],
        summary="Pull a snapshot page, or the changes since a cursor",
        opt={REQUEST_BODY: envelope_bodies(m.PullRequest)},
    )
    async def pull(self, request: Request[Any, Any, Any], actor: CurrentActor, state: State) -> Response[bytes]:
        envelope, fmt = await read_envelope(request, m.PullRequest)
        pool: Pool = state.pool
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            answer = await pull_service.pull(conn, actor, envelope, context.now_utc())
        assert actor.device_id is not None  # pull() refuses a token without a device
        key = query_codes.device_key(state.key.secret, actor.device_id)
        return await _answer(msgspec.structs.replace(answer, query_code_key=key), fmt, request)

    @post(
        "/store-key",
        status_code=200,
        guards=[DEVICE_USERS],
        summary="The key of this tablet's local store (its own active device only; see PROTOCOL.md §5)",
        opt={REQUEST_BODY: envelope_bodies(m.StoreKeyRequest)},
    )
    async def tablet_store_key(self, request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor) -> Response[bytes]:
        envelope, fmt = await read_envelope(request, m.StoreKeyRequest)
        # A key: no cache on the way keeps a copy.
        return await _answer(await store_key.issue(tx, actor, envelope), fmt, request, {"Cache-Control": "no-store"})

    @get("/quarantine", guards=[REVIEWERS], summary="Quarantined sync work in your scope (reviewers)")
    async def quarantine(
        self,
        tx: Tx,
        actor: CurrentActor,
        status: Annotated[str | None, QueryParameter(pattern=fields.one_of("open", "applied", "dismissed"))] = "open",
        after: FromQuery[UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> review.QuarantinePage:
        return await review.queue(tx, actor, status, after, limit)

    @post(
        "/quarantine/{quarantine_id:uuid}/settle",
        status_code=200,
        guards=[REVIEWERS],
        summary="Apply a quarantined payment, or dismiss an item with a note",
    )
    async def settle(
        self,
        quarantine_id: FromPath[UUID],
        data: JSONBody[review.Settlement],
        tx: Tx,
        actor: CurrentActor,
        state: State,
    ) -> review.QuarantineItem:
        return await review.settle(
            tx, actor, quarantine_id, data, timezone=state.settings.timezone, code_key=state.key.secret
        )

    @get("/devices/{device_id:uuid}", guards=[REVIEWERS], summary="A tablet's sync state and receipt numbers")
    async def device(self, device_id: FromPath[UUID], tx: Tx, actor: CurrentActor) -> review.DeviceFollowUp:
        return await review.follow_up(tx, actor, device_id)
