"""The OpenAPI document tells the truth about errors: each operation lists every status it can
answer, with the body it answers it with (RFC 9457 problem+json, `code` one of the stable codes the
operation can give).

Litestar documents a handler's success and, for any handler with parameters, a generic 400. The
errors come from elsewhere, so they are derived here, in one place, from what the app runs for the
operation — nothing is declared twice:

- the authentication middleware (unless the route is public), the route's guards, the dependencies
  its handler takes, the body reader (`bodies.read_body`, when the handler takes `data`) and the
  handler itself: every `DomainError` these can raise, followed through the functions they call
  (`raise X(...)`, `X(...)`, and `X.status` for a problem answered rather than raised);
- what Litestar refuses before the handler runs: a path parameter that does not parse (404), a
  parameter or form field that breaks its rule (422), a body too large (413), a form it cannot
  parse (400);
- the app's last-resort handler: a database conflict or outage is a 503 `try_again`, for every
  operation.

The body of each error is what the operation's exception handlers make of it: problem+json here, a
FHIR OperationOutcome under /fhir. A handler's own `responses=` for a status win over all this.
Public operations (the middleware skips them) say so with an empty `security`.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from types import ModuleType
from typing import Any, ClassVar, cast

import msgspec
from litestar import Litestar, Request
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute

from backend import bodies, reports
from backend.errors import PROBLEM_JSON, DomainError, problem, unwrapped_type

PROBLEM = "Problem"
# A resident identity number (公民身份号码): its check character is a rule no pattern states, so the
# document names the standard as the field's format (msgspec.Meta(extra_json_schema=…) on the field).
RESIDENT_ID_FORMAT = "gb11643"
RESIDENT_ID_SCHEMA: dict[str, Any] = {
    "description": "a resident identity number (GB 11643): 18 characters, the last a check digit or X "
    "(full-width digits, spaces and a 15-digit number are accepted and normalised)",
    "extra": {"format": RESIDENT_ID_FORMAT},
}
# A handler that reads its body itself (no `data`) documents it as `opt={REQUEST_BODY: {media type:
# JSON schema}}`: what it accepts, as strictly as it reads it.
RAISES = "raises"  # a route's opt: DomainError classes it can answer that its calls hide from the scanner
REQUEST_BODY = "request_body"
OPERATION_OUTCOME = "OperationOutcome"
FHIR_JSON = "application/fhir+json"
OWN_CODE = ("backend.", "mobile_sync_protocol.")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# What each status means here, for the response's description.
MEANINGS: dict[int, str] = {
    400: "The body cannot be read: not well-formed JSON, or not in the encoding it claims",
    401: "No valid credentials: the token is missing, expired, revoked or of another kind (or, when "
    "logging in, the credentials are wrong)",
    403: "The caller's role, or kind of token, may not use this operation",
    404: "No such record, or not within the caller's divisions",
    409: "The request conflicts with the current state of the record",
    412: "The record changed since it was read (If-Match is not its current ETag)",
    413: "The body is larger than this operation accepts",
    415: "The body's media type (or encoding) is not one this operation accepts",
    422: "A parameter or a field of the body breaks a rule; `errors` names each field and the rule in words",
    426: "The client's protocol version is no longer supported",
    428: "A precondition header this operation needs is missing (If-Match or Idempotency-Key)",
    429: "Too many attempts or requests; try again after `Retry-After` seconds",
    503: "The database is unavailable, or a concurrent request got in the way; nothing was kept: try "
    "again after `Retry-After` seconds",
}


def document(app: Litestar) -> None:
    """Makes `app`'s OpenAPI document list every operation's errors (see the module's docstring).
    The document is still built lazily, on its first use."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = _TruthfulOpenAPIPlugin


class _TruthfulOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's OpenAPI plugin, its document completed by `add_error_responses` once built."""

    __slots__ = ()

    def provide_openapi(self) -> OpenAPI:
        openapi = super().provide_openapi()
        schemas = openapi.components.schemas if openapi.components else None
        if schemas is None or PROBLEM not in schemas:
            add_error_responses(openapi, self.included_routes.values())
        return openapi


def add_error_responses(openapi: OpenAPI, routes: Iterable[HTTPRoute]) -> None:
    scanner = Scanner()
    assert openapi.components is not None
    schemas = openapi.components.schemas = dict(openapi.components.schemas or {})
    schemas[PROBLEM] = problem_schema()
    schemas[OPERATION_OUTCOME] = operation_outcome_schema()
    for route in routes:
        path_item = (openapi.paths or {}).get(route.path_format or "/")
        if path_item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(path_item, method.lower(), None)
            if not isinstance(operation, Operation) or not handler.resolve_include_in_schema():
                continue
            errors = errors_of(handler, route, method, operation, scanner)
            if errors.public:
                operation.security = []
            if REQUEST_BODY in handler.opt:
                operation.request_body = RequestBody(
                    content={
                        media: OpenAPIMediaType(schema=cast("Schema", schema))
                        for media, schema in handler.opt[REQUEST_BODY].items()
                    },
                    required=True,
                )
            _tighten_body(handler, schemas)
            _no_null_parameters(operation)
            _report_formats(operation)
            responses = operation.responses = dict(operation.responses or {})
            declared = {str(status) for status in handler.responses or {}}
            for documented in list(responses):
                if documented.startswith(("4", "5")) and documented not in declared:
                    del responses[documented]  # Litestar's generic 400, which this app never answers so
            for status, codes in sorted(errors.codes.items()):
                if str(status) not in declared:
                    responses[str(status)] = error_response(status, codes, errors.media_type, errors.public)


@dataclass
class OperationErrors:
    public: bool
    media_type: str
    codes: dict[int, set[str]] = field(default_factory=dict)

    def add(self, status: int, code: str) -> None:
        self.codes.setdefault(status, set()).add(code)


def errors_of(
    handler: HTTPRouteHandler, route: HTTPRoute, method: str, operation: Operation, scanner: Scanner
) -> OperationErrors:
    """The statuses and codes one operation can answer, and the media type of its error bodies."""
    handlers: dict[Any, Any] = dict(handler.resolve_exception_handlers())
    authentication = _authentication(handler, route.path_format or "/", method)
    errors = OperationErrors(public=authentication is None, media_type=_error_media_type(handlers))
    reader = bodies.reader_for(handler)
    parameters = handler.parsed_fn_signature.parameters
    roots: list[Any] = [handler.fn, *handler.resolve_guards()]
    if authentication is not None:
        roots.append(authentication)
    dependencies = handler.resolve_dependencies()
    roots += [dependencies[name].dependency for name in parameters if name in dependencies]
    # Plain ASGI middleware (the time limit, upload slots) answers errors of its own.
    middleware = [m for m in handler.resolve_middleware() if callable(m) and not isinstance(m, DefineMiddleware)]
    roots += middleware
    for status, code in scanner.literal_problems(middleware):
        errors.add(status, code)
    # Errors raised where the scanner cannot follow (through objects), named by the route.
    for error in handler.opt.get(RAISES, ()):
        errors.add(error.status, error.code)
    before_request = handler.resolve_before_request()
    if reader is not None and before_request is not None:
        roots.append(before_request)  # the body reader: its media type and rules
    for error in scanner.domain_errors(roots):
        errors.add(error.status, error.code)

    # What Litestar refuses before the handler runs, answered by the app's handlers.
    if route.path_parameters:
        errors.add(*_http_code(handlers, 404))
    if operation.parameters or (reader is not None and reader.decoder is None):
        errors.add(*_validation_code(handlers))
    if reader is not None and reader.decoder is None:
        errors.add(*_http_code(handlers, 400))  # a form or multipart body Litestar cannot parse
    if reader is not None or ("request" in parameters and method in BODY_METHODS):
        errors.add(*_http_code(handlers, 413))
    # The last resort: a database gone or a transaction given up is a 503 for any operation.
    for function in handlers.values():
        for status, code in scanner.literal_problems([function]):
            if status >= 503:
                errors.add(status, code)
    return errors


def _authentication(handler: HTTPRouteHandler, path: str, method: str) -> Callable[..., Any] | None:
    """The authentication middleware's `authenticate_request` when it runs for this operation."""
    for middleware in handler.resolve_middleware():
        if not isinstance(middleware, DefineMiddleware):
            continue
        authenticate = getattr(middleware.middleware, "authenticate_request", None)
        if authenticate is None:
            continue
        key = middleware.kwargs.get("exclude_from_auth_key", "exclude_from_auth")
        if handler.opt.get(key):
            return None
        if method in middleware.kwargs.get("exclude_http_methods", ("OPTIONS",)):
            return None
        excluded = middleware.kwargs.get("exclude") or []
        if any(re.search(pattern, path) for pattern in ([excluded] if isinstance(excluded, str) else excluded)):
            return None
        return cast("Callable[..., Any]", authenticate)
    return None


def _probe(handlers: dict[Any, Any], exc: Exception) -> Any:
    """What the operation's exception handlers answer `exc` with (they read nothing of the request)."""
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind](cast("Request[Any, Any, Any]", None), exc)
    return None


def _error_media_type(handlers: dict[Any, Any]) -> str:
    answer = _probe(handlers, DomainError())
    return str(getattr(answer, "media_type", None) or PROBLEM_JSON)


def _http_code(handlers: dict[Any, Any], status: int) -> tuple[int, str]:
    return status, _code_of(_probe(handlers, HTTPException(status_code=status)), f"http_{status}")


def _validation_code(handlers: dict[Any, Any]) -> tuple[int, str]:
    answer = _probe(handlers, ValidationException())
    return int(getattr(answer, "status_code", 422) or 422), _code_of(answer, "validation_error")


def _code_of(answer: Any, default: str) -> str:
    content = getattr(answer, "content", None)
    if isinstance(content, dict) and isinstance(content.get("code"), str):
        return str(content["code"])
    if isinstance(content, dict) and content.get("resourceType") == "OperationOutcome":
        for issue in content.get("issue") or []:
            for coding in (issue.get("details") or {}).get("coding") or []:
                if isinstance(coding.get("code"), str):
                    return str(coding["code"])
    return default


class Scanner:
    """Follows functions through the calls in their source, and collects the errors they give.

    A `DomainError` subclass counts when a reachable function raises it, constructs it (to raise
    it later), or reads its `status` (a problem answered, not raised). Calls are followed when
    their target is a name the function's module or closure can resolve to one of this project's
    functions — also through a module (`service.login`), a class (`Actor.resident`), or a table
    of functions (`HANDLERS[kind](…)`). Calls through `self` or a parameter are not followed.
    """

    # What each function's own source says, read once per process: functions do not change.
    _facts: ClassVar[dict[Any, tuple[set[type[DomainError]], list[tuple[int, str]], list[Any]]]] = {}

    def domain_errors(self, roots: Iterable[Any]) -> set[type[DomainError]]:
        return {error for facts in self._reachable(roots) for error in facts[0]}

    def literal_problems(self, roots: Iterable[Any]) -> set[tuple[int, str]]:
        """`problem(503, "try_again", …)`: the statuses and codes answered without a DomainError."""
        return {answer for facts in self._reachable(roots) for answer in facts[1]}

    def _reachable(
        self, roots: Iterable[Any]
    ) -> Iterator[tuple[set[type[DomainError]], list[tuple[int, str]], list[Any]]]:
        seen: set[Any] = set()
        stack = [_function(root) for root in roots]
        while stack:
            function = stack.pop()
            if function is None or function in seen:
                continue
            seen.add(function)
            facts = self._facts_of(function)
            yield facts
            stack += facts[2]

    def _facts_of(self, function: Any) -> tuple[set[type[DomainError]], list[tuple[int, str]], list[Any]]:
        if function not in self._facts:
            self._facts[function] = _read(function)
        return self._facts[function]


def _function(target: Any) -> Any:
    """The plain function behind a target, when it is this project's own code; else None."""
    target = getattr(target, "__func__", target)  # a bound method
    target = getattr(target, "func", target) if not inspect.isfunction(target) else target  # AsyncCallable
    target = inspect.unwrap(target) if inspect.isfunction(target) else target
    if not inspect.isfunction(target):
        return None
    return target if (target.__module__ or "").startswith(OWN_CODE) else None


def _read(function: Any) -> tuple[set[type[DomainError]], list[tuple[int, str]], list[Any]]:
    errors: set[type[DomainError]] = set()
    literal: list[tuple[int, str]] = []
    callees: list[Any] = []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return errors, literal, callees
    namespace = {**function.__globals__, **inspect.getclosurevars(function).nonlocals}
    for node in ast.walk(tree):
        target: ast.expr | None = None
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        elif isinstance(node, ast.Attribute) and node.attr == "status":
            target = node.value
        elif isinstance(node, ast.Call):
            target = node.func
            resolved = _resolve(node.func, namespace)
            if resolved is problem and len(node.args) >= 2:
                status, code = (_literal(argument) for argument in node.args[:2])
                if isinstance(status, int) and isinstance(code, str):
                    literal.append((status, code))
            callees += _callables(resolved)
        if target is not None:
            resolved = _resolve(target, namespace)
            if inspect.isclass(resolved) and issubclass(resolved, DomainError) and resolved is not DomainError:
                errors.add(resolved)
    return errors, literal, [callee for callee in map(_function, callees) if callee is not None]


def _resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        if isinstance(owner, ModuleType) or inspect.isclass(owner):
            return getattr(owner, node.attr, None)
    if isinstance(node, ast.Subscript):
        return _resolve(node.value, namespace)  # HANDLERS[kind]: the table, followed whole
    return None


def _callables(resolved: Any) -> list[Any]:
    if isinstance(resolved, dict):
        return [value for value in resolved.values() if callable(value)]
    if isinstance(resolved, (list, tuple)):
        return [value for value in resolved if callable(value)]
    return [resolved] if callable(resolved) else []


def _literal(node: ast.expr) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _tighten_body(handler: HTTPRouteHandler, schemas: dict[str, Any]) -> None:
    """What Litestar's schema of a body Struct leaves out, and the body reader enforces: that it
    refuses unknown fields (`additionalProperties: false`), and the rules of a list's items
    (`list[Year]`: each item's minimum and maximum)."""
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return
    for struct in _structs(msgspec.inspect.type_info(field.annotation), set()):
        info = cast("msgspec.inspect.StructType", msgspec.inspect.type_info(struct))
        names = {f.encode_name for f in info.fields}
        for name, schema in schemas.items():
            if not (
                isinstance(schema, Schema)
                and (name == struct.__name__ or name.endswith("_" + struct.__name__))
                and set(schema.properties or {}) == names
            ):
                continue
            if info.forbid_unknown_fields:
                schema.additional_properties = False
            for struct_field in info.fields:
                _constrain_items(struct_field.type, (schema.properties or {}).get(struct_field.encode_name))
                _constrain_number(struct_field.type, (schema.properties or {}).get(struct_field.encode_name))


def _constrain_number(info: Any, schema: Any) -> None:
    """A number's bound of 0 (`ge=0`, `le=0`), which Litestar's schema leaves out as if it were no
    bound (seen on `AgeRange.below_age: Age | None`): the body reader refuses -1, so the document
    says so."""
    number = unwrapped_type(info)
    if not isinstance(schema, Schema) or not isinstance(number, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return
    if number.ge is not None and schema.minimum is None and schema.exclusive_minimum is None:
        schema.minimum = number.ge
    if number.le is not None and schema.maximum is None and schema.exclusive_maximum is None:
        schema.maximum = number.le


def _constrain_items(info: Any, schema: Any) -> None:
    """Copies the rules of a list's items onto the items' schema."""
    info = unwrapped_type(info)
    if not isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)):
        return
    arrays = [schema, *(getattr(schema, "one_of", None) or [])]
    for array in arrays:
        items = getattr(array, "items", None)
        if isinstance(items, Schema):
            item = unwrapped_type(info.item_type)
            for rule, key in _ITEM_RULES:
                value = getattr(item, rule, None)
                if value is not None and getattr(items, key) is None:
                    setattr(items, key, value)
            if isinstance(item, msgspec.inspect.IntType | msgspec.inspect.FloatType):
                if item.gt is not None and items.exclusive_minimum is None:
                    items.exclusive_minimum = item.gt
                if item.lt is not None and items.exclusive_maximum is None:
                    items.exclusive_maximum = item.lt


_ITEM_RULES = (
    ("ge", "minimum"),
    ("le", "maximum"),
    ("multiple_of", "multiple_of"),
    ("min_length", "min_length"),
    ("max_length", "max_length"),
    ("pattern", "pattern"),
)


def _no_null_parameters(operation: Operation) -> None:
    """A path, query or header parameter is absent or a string, never JSON null: Litestar's schema
    of an optional one (`X | None`) offers null, which no URL or header can carry."""
    for parameter in operation.parameters or []:
        schema = getattr(parameter, "schema", None)
        if isinstance(schema, Schema) and schema.one_of:
            options = [o for o in schema.one_of if not (isinstance(o, Schema) and o.type == OpenAPIType.NULL)]
            if len(options) == 1 and isinstance(options[0], Schema):
                schema.type, schema.one_of = options[0].type, None
                schema.format = schema.format or options[0].format
                schema.enum = schema.enum or options[0].enum
                schema.pattern = schema.pattern or options[0].pattern
            elif len(options) < len(schema.one_of):
                schema.one_of = options


def _report_formats(operation: Operation) -> None:
    """A report with a `format` query parameter (json, csv, xlsx) answers each in its media type."""
    formats: list[Any] = []
    for parameter in operation.parameters or []:
        schema = getattr(parameter, "schema", None)
        if getattr(parameter, "name", None) == "format" and isinstance(schema, Schema):
            formats = list(schema.enum or [])
    success = (operation.responses or {}).get("200")
    if not isinstance(success, OpenAPIResponse) or not success.content:
        return
    for name in formats:
        if name in reports.MEDIA_TYPES:
            media_type = reports.MEDIA_TYPES[name].split(";")[0]
            success.content.setdefault(
                media_type,
                OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, description=f"the report as {name}")),
            )


def _structs(info: Any, seen: set[Any]) -> Iterator[type[Any]]:
    """Every Struct a body's type holds, itself included."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        yield info.cls
        for struct_field in info.fields:
            yield from _structs(struct_field.type, seen)
    elif isinstance(info, msgspec.inspect.Metadata):
        yield from _structs(info.type, seen)
    elif isinstance(info, msgspec.inspect.UnionType):
        for option in info.types:
            yield from _structs(option, seen)
    elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)):
        yield from _structs(info.item_type, seen)
    elif isinstance(info, msgspec.inspect.DictType):
        yield from _structs(info.value_type, seen)


# The documents --------------------------------------------------------------------------------------


def error_response(status: int, codes: set[str], media_type: str, public: bool) -> OpenAPIResponse:
    description = MEANINGS.get(status) or HTTPStatus(status).phrase
    if status == 401 and public:
        description = "The credentials are wrong, or the token presented is invalid or expired"
    headers: dict[str, OpenAPIHeader | Reference] = {}
    if status == 401 and media_type == PROBLEM_JSON and not public:
        headers["WWW-Authenticate"] = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING), description="`Bearer`: send a bearer token"
        )
    if status in (429, 503):
        headers["Retry-After"] = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER, minimum=0), description="seconds to wait before trying again"
        )
    if media_type == PROBLEM_JSON:
        schema: Schema | Reference = Schema(
            all_of=[
                Reference(ref=f"#/components/schemas/{PROBLEM}"),
                Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        "status": Schema(type=OpenAPIType.INTEGER, const=status),
                        "code": Schema(type=OpenAPIType.STRING, enum=sorted(codes)),
                    },
                ),
            ]
        )
    else:
        schema = Reference(ref=f"#/components/schemas/{OPERATION_OUTCOME}")
    return OpenAPIResponse(
        description=description, headers=headers or None, content={media_type: OpenAPIMediaType(schema=schema)}
    )


def problem_schema() -> Schema:
    text = Schema(type=OpenAPIType.STRING)
    return Schema(
        title="Problem",
        description="An error, as RFC 9457 problem details: `code` is stable and says what went wrong; `detail` "
        "and `errors` say where, in words. Never personal data.",
        type=OpenAPIType.OBJECT,
        required=["type", "title", "status", "code", "instance", "request_id"],
        properties={
            "type": Schema(type=OpenAPIType.STRING, description="https://canbao.dev/problems/{code}"),
            "title": Schema(type=OpenAPIType.STRING, description="the kind of problem, in words"),
            "status": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599, description="the HTTP status"),
            "code": Schema(type=OpenAPIType.STRING, description="stable: what clients branch on"),
            "detail": Schema(type=OpenAPIType.STRING, description="this occurrence, in words"),
            "instance": Schema(type=OpenAPIType.STRING, description="urn:canbao:request:{request_id}"),
            "request_id": Schema(
                one_of=[text, Schema(type=OpenAPIType.NULL)], description="as in the X-Request-Id header"
            ),
            "errors": Schema(
                type=OpenAPIType.ARRAY,
                description="each field (or row of an uploaded file) at fault, and its rule in words",
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        "field": Schema(type=OpenAPIType.STRING, description="e.g. members[0].id_number"),
                        "message": text,
                        "row": Schema(type=OpenAPIType.INTEGER, description="a file's row"),
                        "column": Schema(one_of=[text, Schema(type=OpenAPIType.NULL)]),
                        "problem": text,
                    },
                    additional_properties=True,
                ),
            ),
            "retry_after_s": Schema(type=OpenAPIType.INTEGER, minimum=0, description="as in Retry-After"),
        },
        additional_properties=True,
    )


def operation_outcome_schema() -> Schema:
    coding = Schema(
        type=OpenAPIType.OBJECT,
        properties={"system": Schema(type=OpenAPIType.STRING), "code": Schema(type=OpenAPIType.STRING)},
    )
    return Schema(
        title="OperationOutcome",
        description="FHIR R4 OperationOutcome: the FHIR routes' errors; `issue[].details.coding[].code` is the "
        "stable code of the same problem+json error elsewhere.",
        type=OpenAPIType.OBJECT,
        required=["resourceType", "issue"],
        properties={
            "resourceType": Schema(type=OpenAPIType.STRING, const="OperationOutcome"),
            "issue": Schema(
                type=OpenAPIType.ARRAY,
                min_items=1,
                items=Schema(
                    type=OpenAPIType.OBJECT,
                    required=["severity", "code"],
                    properties={
                        "severity": Schema(type=OpenAPIType.STRING, enum=["fatal", "error", "warning", "information"]),
                        "code": Schema(type=OpenAPIType.STRING),
                        "details": Schema(
                            type=OpenAPIType.OBJECT,
                            properties={
                                "coding": Schema(type=OpenAPIType.ARRAY, items=coding),
                                "text": Schema(type=OpenAPIType.STRING),
                            },
                        ),
                        "diagnostics": Schema(type=OpenAPIType.STRING),
                        "expression": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)),
                    },
                ),
            ),
        },
    )
