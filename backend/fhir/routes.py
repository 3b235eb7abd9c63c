"""`/fhir`: the partners' token, CoverageEligibilityRequest and Coverage/_search (FHIR R4, JSON).

Errors answer as OperationOutcome (with the problem's stable code) instead of problem+json.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException

from backend import bodies
from backend.api_docs.openapi import REQUEST_BODY, RESIDENT_ID_FORMAT
from backend.clock import local_today
from backend.deps import Autocommit, AutocommitReads, CurrentActor
from backend.errors import (
    DomainError,
    InvalidInput,
    domain_error_handler,
    http_error_handler,
    internal_error_handler,
    validation_error_handler,
)
from backend.fhir import resources, service
from backend.fhir.service import PartnerToken
from backend.guards import require_kind
from backend.i18n import _

PARTNERS = require_kind("partner")
MAX_BODY = 64 * 1024
FORM = "application/x-www-form-urlencoded"
_RESIDENT_ID = {"type": "string", "format": RESIDENT_ID_FORMAT, "description": "a resident ID number (GB 11643)"}
# The bodies these routes read themselves, for the API document: as strict as the reading.
TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type", "client_id", "client_secret"],
    "description": "client_id and client_secret may come as HTTP Basic instead",
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "minLength": 1, "maxLength": 100},
        "client_secret": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}
SEARCH_FORM = {
    "type": "object",
    "required": ["identifier"],
    "additionalProperties": False,
    "properties": {"identifier": {"type": "string", "description": f"[{resources.RESIDENT_ID_SYSTEM}|]ID number"}},
}
ELIGIBILITY_REQUEST = {
    "type": "object",
    "required": ["resourceType", "patient"],
    "properties": {
        "resourceType": {"const": "CoverageEligibilityRequest"},
        "purpose": {"type": "array", "items": {"type": "string"}, "contains": {"const": "validation"}},
        "patient": {
            "type": "object",
            "required": ["identifier"],
            "properties": {
                "identifier": {
                    "type": "object",
                    "required": ["value"],
                    "properties": {"system": {"const": resources.RESIDENT_ID_SYSTEM}, "value": _RESIDENT_ID},
                }
            },
        },
        "servicedDate": {"type": "string", "format": "date"},
    },
}


class UnsupportedMediaType(DomainError):
    """Send the body as the operation expects it"""

    status, code = 415, "unsupported_media_type"


def _as_outcome(handler: Callable[[Request[Any, Any, Any], Any], Response[dict[str, Any]]]) -> Any:
    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[dict[str, Any]]:
        problem = handler(request, exc)
        return Response(
            resources.operation_outcome(problem.status_code or 500, problem.content),
            status_code=problem.status_code,
            media_type=resources.FHIR_JSON,
            headers=dict(problem.headers.items()),
        )

    return handle


FHIR_ERRORS: dict[type[Exception] | int, Any] = {
    DomainError: _as_outcome(domain_error_handler),
    ValidationException: _as_outcome(validation_error_handler),
    HTTPException: _as_outcome(http_error_handler),
    Exception: _as_outcome(internal_error_handler),
}


async def _form(request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
    if request.content_type[0] != FORM:
        raise UnsupportedMediaType(_("the body must be {media_type}", media_type=FORM))
    raw = await request.body()
    try:
        return parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body", _("is not a valid form")) from None


def _no_query(request: Request[Any, Any, Any]) -> None:
    # Access logs keep URLs: search parameters and identifiers belong in the body.
    if request.scope.get("query_string"):
        raise InvalidInput("query", _("parameters go in the form body, never in the URL"))


class PartnerTokenController(Controller):
    path = "/fhir/token"
    tags = ["fhir"]

    @post(
        "/",
        exclude_from_auth=True,
        opt={REQUEST_BODY: {FORM: TOKEN_FORM}},
        status_code=200,
        request_max_body_size=MAX_BODY,
        summary="A partner's access token (OAuth 2.0 client credentials, form body or HTTP Basic)",
    )
    async def token(self, request: Request[Any, Any, Any], state: State) -> PartnerToken:
        _no_query(request)
        form = dict(await _form(request))
        if form.get("grant_type") != "client_credentials":
            raise InvalidInput("grant_type", _("must be {value}", value="client_credentials"))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _space, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _colon, client_secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidInput("authorization", _("is not valid HTTP Basic")) from None
        if not client_id or not client_secret or len(client_id) > 100 or len(client_secret) > 200:
            raise InvalidInput("client_secret" if client_id else "client_id", _("is required"))
        client = request.client.host if request.client else "unknown"
        return await service.partner_token(state.auth, client_id, client_secret, client)


class FhirController(Controller):
    path = "/fhir"
    tags = ["fhir"]
    guards = [PARTNERS]
    exception_handlers = FHIR_ERRORS

    @post(
        "/CoverageEligibilityRequest",
        opt={REQUEST_BODY: {resources.FHIR_JSON: ELIGIBILITY_REQUEST, "application/json": ELIGIBILITY_REQUEST}},
        status_code=200,
        request_max_body_size=MAX_BODY,
        summary="Is this person covered on this date? Answers a CoverageEligibilityResponse",
    )
    async def eligibility(
        self,
        request: Request[Any, Any, Any],
        autocommit: Autocommit,
        autocommit_reads: AutocommitReads,
        actor: CurrentActor,
        state: State,
    ) -> Response[dict[str, Any]]:
        _no_query(request)
        if request.content_type[0] not in ("application/fhir+json", "application/json"):
            raise UnsupportedMediaType(_("the body must be {media_type}", media_type=resources.FHIR_JSON))
        raw = await request.body()
        if bodies.json_too_deep(raw):  # before decoding: msgspec recurses once per level
            raise bodies.MalformedJson(bodies.TOO_DEEP)
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise InvalidInput("body", _("is not JSON")) from None
        # Reads, then the audit row, outside a transaction (`autocommit`): under READ COMMITTED each of
        # the reads had a snapshot of its own in one too, and the audit row is the only write.
        today = local_today(state.settings.timezone)
        answer = await service.eligibility(autocommit, actor, body, today, reads=autocommit_reads)
        return Response(answer, media_type=resources.FHIR_JSON)

    @post(
        "/Coverage/_search",
        opt={REQUEST_BODY: {FORM: SEARCH_FORM}},
        status_code=200,
        request_max_body_size=MAX_BODY,
        summary="A person's Coverage resources; `identifier` ([system|]value) in the form body",
    )
    async def search_coverage(
        self,
        request: Request[Any, Any, Any],
        autocommit: Autocommit,
        autocommit_reads: AutocommitReads,
        actor: CurrentActor,
        state: State,
    ) -> Response[dict[str, Any]]:
        _no_query(request)
        form = await _form(request)
        self_url = str(request.base_url).rstrip("/") + "/fhir/Coverage/_search"
        bundle = await service.search_coverage(
            autocommit, actor, form, local_today(state.settings.timezone), self_url, reads=autocommit_reads
        )
        return Response(bundle, media_type=resources.FHIR_JSON)
