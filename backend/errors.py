"""One error hierarchy, mapped in one place to RFC 9457 problem+json with a stable `code`.

A DomainError's docstring is its title; titles and details never carry personal data.
"""

from __future__ import annotations

import logging
import re
import socket
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from backend import fields
from backend.db import drop_connections
from backend.i18n import N_, _
from backend.logs import request_id_var

log = logging.getLogger("canbao.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """Request cannot be processed"""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "domain_error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title())
        self.detail = detail
        self.extra = extra

    @classmethod
    def title(cls) -> str:
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


class InvalidInput(DomainError):
    """Request body is not valid"""

    status, code = 422, "validation_error"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message}], **extra)


class NotAuthenticated(DomainError):
    """Authentication required"""

    status, code = 401, "not_authenticated"


class InvalidCredentials(DomainError):
    """Username or password is wrong"""

    status, code = 401, "invalid_credentials"


class InvalidToken(DomainError):
    """Token is invalid or expired"""

    status, code = 401, "invalid_token"


class TooManyAttempts(DomainError):
    """Too many failed attempts; try again later"""

    status, code = 429, "too_many_attempts"


class Forbidden(DomainError):
    """Your role may not do this"""

    status, code = 403, "forbidden"


class NotFound(DomainError):
    """Record not found"""

    status, code = 404, "not_found"


class Conflict(DomainError):
    """Request conflicts with the current state"""

    status, code = 409, "conflict"


class PreconditionFailed(DomainError):
    """Record has changed since you read it"""

    status, code = 412, "precondition_failed"


def problem(
    status: int, code: str, title: str, detail: str | None, request: Request[Any, Any, Any], **extra: Any
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"https://canbao.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        # The occurrence, not the path: paths are the caller's input and are not echoed back.
        "instance": f"urn:canbao:request:{request_id_var.get() or 'none'}",
        "request_id": request_id_var.get(),
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after_s" in extra:
        headers["Retry-After"] = str(extra["retry_after_s"])
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    return problem(exc.status, exc.code, _(exc.title()), exc.detail, request, **exc.extra)


_MISSING_PARAMETER = re.compile(r"Missing required (?P<source>query|header|cookie|path) parameter '(?P<name>[^']+)'")


def validation_error_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's own validation: query, path and header parameters, and form bodies."""
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = str(item.get("key") or "")
            path, message = plain_validation_message(str(item.get("message", "")))
            source = getattr(item.get("source"), "value", item.get("source"))  # ParamType.QUERY → "query"
            if key in ("", "data") and source in (None, "body"):
                key = path or "body"
            field = key if source in (None, "body") else f"{source}.{key}"
            errors.append({"field": field or "body", "message": message})
    if not errors and (missing := _MISSING_PARAMETER.match(exc.detail or "")):
        # Litestar says a required parameter is missing in its detail alone, with the path.
        errors.append({"field": f"{missing['source']}.{missing['name']}", "message": _("is required")})
    if not errors:
        errors.append({"field": "body", "message": plain_validation_message(_strip_prefix(exc.detail))[1]})
    detail = _("; ").join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "validation_error", _("Request is not valid"), detail, request, errors=errors)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, NotAuthorizedException):
        return problem(401, "not_authenticated", _("Authentication required"), _(exc.detail), request)
    code = {
        400: "bad_request",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        415: "unsupported_media_type",
        429: "too_many_requests",
    }.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 400:
        # Litestar's 400s are bodies it could not parse at all: name the body as the field.
        message = _(_strip_prefix(exc.detail))
        return problem(
            400, code, _("Request body is malformed"), message, request, errors=[{"field": "body", "message": message}]
        )
    title = _HTTP_TITLES.get(exc.status_code, _strip_prefix(exc.detail) or code)
    return problem(exc.status_code, code, _(title), None, request)


# Litestar's own answers, by status: its detail is English and may name the path.
_HTTP_TITLES = {
    403: N_("Your role may not do this"),
    404: N_("Not Found"),
    405: N_("Method Not Allowed"),
    413: N_("Request Entity Too Large"),
    415: N_("Unsupported Media Type"),
    429: N_("Too Many Requests"),
}


# PostgreSQL gave up one of two transactions that waited on each other (a deadlock, a serialization
# failure). Nothing of the request was kept: the caller retries, and exactly-once holds.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
# The database is gone or restarting: the server shut the session down (57P01 admin, 57P02 crash),
# refuses connections while it starts or stops (57P03), has no connection slot left (53300); and
# the connection exceptions (class 08). The request's transaction died with its connection: nothing
# of it was kept — unless the connection died as the server committed, which no client can tell
# apart; a sync push retried is then answered `duplicate`, a write with an Idempotency-Key replayed.
# A server that refuses writes (25006 read_only_sql_transaction) is a primary demoted to a standby
# under a connection opened before the switch (or a proxy pointing at a standby): the pool's
# connections are dropped (`backend.db.drop_connections`) and the next ones find the new primary
# (a DSN listing the cluster's hosts with target_session_attrs=read-write, README "high availability").
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "25006"})
RETRY_AFTER_UNAVAILABLE_S = 5
# Set in a request's scope when what failed was its read on a standby (backend.replicas): the
# primary's pool is kept, and the read is made again there.
REPLICA_FAILED = "canbao.replica_failed"
# A value PostgreSQL cannot hold: a NUL character in text (22021; 22P05 in jsonb), a number out of
# its column's range (22003). The input checks refuse these first; this is the net under them.
_UNSTORABLE_SQLSTATES = frozenset({"22021", "22P05", "22003"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now, rather than that a statement failed."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", None) or "")
        return sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed"; not the client's other complaints (an argument of the wrong type).
        return "closed" in str(exc)
    if isinstance(exc, asyncpg.InternalClientError):
        # A connection the server ended while it was idle in the pool: its protocol is left in an
        # error state ("cannot switch to state …; another operation (2) is in progress").
        return True
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or type(exc) is OSError:
        # Refused, reset, unreachable, no such host, the pool waited too long — when it comes from
        # asyncpg (connecting, acquiring), not from something else the handler did.
        return any("asyncpg" in frame.filename for frame in traceback.extract_tb(exc.__traceback__))
    return False


def cause(exc: BaseException, test: Callable[[BaseException], bool]) -> BaseException | None:
    """`exc`, or the exception it was raised from or while handling, or one inside an exception
    group, for which `test` holds (a rollback failing on a dead connection replaces the error that
    killed it; Litestar groups the errors of a dependency's clean-up, a task group those of its tasks)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if test(current):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if (following := current.__cause__ or current.__context__) is not None:
            pending.append(following)
    return None


def _unavailable_cause(exc: BaseException) -> BaseException | None:
    """What in `exc` says the database is unavailable (`cause`)."""
    return cause(exc, database_unavailable)


def after_failure(pool: Any, exc: BaseException) -> None:
    """For the loops outside requests (job workers, housekeeping, the audit sealer): a failure that
    says the database went away or refuses writes drops the pool's connections, as a request's does."""
    if _unavailable_cause(exc) is not None:
        drop_connections(pool)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        log.warning("transient database conflict", extra={"sqlstate": sqlstate})
        return problem(
            503,
            "try_again",
            _("A concurrent request got in the way; nothing was kept, try again"),
            None,
            request,
            retry_after_s=1,
        )
    if request is not None and request.scope.get(REPLICA_FAILED):
        # A standby's connection died or replay cancelled the read: the primary is well (its pool
        # is kept), and the request is run again there (backend.replicas.read_again_on_primary).
        # This answer is sent only when it cannot be (its body was too large to keep).
        log.warning("read failed on a standby", extra={"error": type(exc).__name__, "sqlstate": sqlstate})
        return problem(503, "try_again", _("The database is not available; try again"), None, request, retry_after_s=1)
    if (unavailable := _unavailable_cause(exc)) is not None:
        if request is not None:
            # Every pooled connection may point at the old primary: all are opened again.
            drop_connections(getattr(request.app.state, "pool", None))
        log.warning(
            "database unavailable",
            extra={"error": type(unavailable).__name__, "sqlstate": getattr(unavailable, "sqlstate", None)},
        )
        return problem(
            503,
            "try_again",
            _("The database is not available; try again"),
            None,
            request,
            retry_after_s=RETRY_AFTER_UNAVAILABLE_S,
        )
    # asyncpg refuses an argument too large for its column type itself (22000, from an OverflowError).
    if sqlstate in _UNSTORABLE_SQLSTATES or (
        isinstance(exc, asyncpg.DataError) and isinstance(exc.__cause__, OverflowError)
    ):
        # Neither the value nor the database's message, which quotes it: only what was wrong. Logged
        # as an error all the same: an input check is missing.
        log.error("value the database cannot store", extra={"error": type(exc).__name__, "sqlstate": sqlstate})
        message = (
            _("a value must not contain NUL characters")
            if sqlstate in ("22021", "22P05")
            else _("a value is out of range")
        )
        return problem(
            422,
            "validation_error",
            _("Request is not valid"),
            message,
            request,
            errors=[{"field": "request", "message": message}],
        )
    # Not the message nor a traceback with locals: a database error's text carries the failing
    # row ("DETAIL: Failing row contains (…)"), which may hold ID numbers, names and phones.
    frames = traceback.extract_tb(exc.__traceback__)
    log.error(
        "unhandled error",
        extra={
            "error": type(exc).__name__,
            "sqlstate": getattr(exc, "sqlstate", None),
            "constraint": getattr(exc, "constraint_name", None),
            "where": [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames[-6:]],
        },
    )
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", _("Internal server error"), None, request)


_TYPE_WORDS = {
    "int": N_("an integer"),
    "float": N_("a number"),
    "str": N_("text"),
    "bool": N_("true or false"),
    "array": N_("a list"),
    "object": N_("an object"),
    "null": N_("null"),
    "bytes": N_("base64 text"),
}
_INVALID_WORDS = {
    "Invalid UUID": N_("must be a UUID"),
    "Invalid RFC3339 encoded date": N_("must be a date written YYYY-MM-DD"),
    "Invalid RFC3339 encoded datetime": N_("must be a date and time with its UTC offset (RFC 3339)"),
    "Invalid RFC3339 encoded time": N_("must be a time written hh:mm:ss"),
    "Invalid base64 encoded string": N_("must be base64 text"),
}
_BOUND_RULES = {
    ">=": N_("must be at least {bound}"),
    "<=": N_("must be at most {bound}"),
    ">": N_("must be more than {bound}"),
    "<": N_("must be less than {bound}"),
}
_LENGTH_RULES = {
    ">=": N_("must have at least {bound} {unit}"),
    "<=": N_("must have at most {bound} {unit}"),
    ">": N_("must have more than {bound} {unit}"),
    "<": N_("must have less than {bound} {unit}"),
}


def _type_words(name: str) -> str:
    name = name.strip()
    return _(_TYPE_WORDS[name]) if name in _TYPE_WORDS else name


def plain_validation_message(message: str, root: Any = None) -> tuple[str | None, str]:
    """The field a msgspec validation message names (None: the body itself) and its rule in plain
    words: "Expected `int`, got `str` - at `$.members[0].birth_year`" → ("members[0].birth_year",
    "must be an integer, not text"). `root` is the body's type, to list an enum's values."""
    field = None
    if match := re.search(r" - at `\$\.?(.*)`$", message):
        field, message = match.group(1) or None, message[: match.start()]
    if match := re.fullmatch(r"Object missing required field `(.+)`", message):
        return _join(field, match.group(1)), _("is required")
    if match := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        return _join(field, match.group(1)), _("is not a known field")
    return field, _rule_in_words(message, root, field)


def _rule_in_words(message: str, root: Any, field: str | None) -> str:
    if match := re.fullmatch(r"Expected `([^`]+)`, got `([^`]+)`", message):
        wanted = _(" or ").join(_type_words(t) for t in match.group(1).split("|"))
        return _("must be {wanted}, not {got}", wanted=wanted, got=_type_words(match.group(2)))
    if match := re.fullmatch(r"Expected `str` matching regex (.+)", message):
        rules = {repr(pattern): words for pattern, words in fields.PATTERN_RULES.items()}
        words, params = rules.get(match.group(1), (N_("is not in the expected format"), {}))
        return _(words, **params)
    if match := re.fullmatch(r"Expected `(str|array|object|bytes)` of length (>=|<=|>|<) (\d+)", message):
        unit = _("characters") if match.group(1) == "str" else _("items")
        return _(_LENGTH_RULES[match.group(2)], bound=match.group(3), unit=unit)
    if match := re.fullmatch(r"Expected `(int|float)` (>=|<=|>|<) (-?[\d.]+)", message):
        return _(_BOUND_RULES[match.group(2)], bound=match.group(3))
    if match := re.fullmatch(r"Expected `(int|float)` that is a multiple of (.+)", message):
        return _("must be a multiple of {bound}", bound=match.group(2))
    if message.startswith("Invalid enum value"):
        allowed = _allowed_values(root, field)
        if allowed:
            return _("must be one of: {values}", values=", ".join(allowed))
        return _("is not one of the allowed values")
    if message in _INVALID_WORDS:
        return _(_INVALID_WORDS[message])
    if message.startswith(("Expected `datetime` with a timezone", "Expected `datetime` with timezone")):
        return _("must be a date and time with its UTC offset (RFC 3339)")
    return _("is not valid")


def _join(path: str | None, name: str) -> str:
    return f"{path}.{name}" if path else name


def _allowed_values(root: Any, path: str | None) -> list[str]:
    """The values an enum or literal field at `path` of `root` admits; [] when not found."""
    if root is None:
        return []
    info: Any = msgspec.inspect.type_info(root)
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path or ""):
        info = unwrapped_type(info)
        if part.startswith("["):
            info = getattr(info, "item_type", None)
        elif isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == part), None)
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return []
    info = unwrapped_type(info)
    if isinstance(info, msgspec.inspect.EnumType):
        return [str(member.value) for member in info.cls]
    if isinstance(info, msgspec.inspect.LiteralType):
        return [str(value) for value in info.values]
    return []


def unwrapped_type(info: Any) -> Any:
    """Through constraints and `X | None` to the one type that carries the rule."""
    while True:
        if isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        elif isinstance(info, msgspec.inspect.UnionType):
            options = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(options) != 1:
                return info
            info = options[0]
        else:
            return info


def _strip_prefix(detail: str) -> str:
    # Litestar prefixes some details with "Validation failed for POST /path:" — the path is noise.
    return detail.split(": ", 1)[-1] if detail.startswith("Validation failed") else detail


exception_handlers: dict[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
