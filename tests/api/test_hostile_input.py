"""No 500 from input (issue 15, point 4): a NUL or a number beyond bigint in a parameter is a 422
naming it, a body nested 100,000 levels deep a 400 naming the body — on every route, checked before
anything decodes it — and a database that is gone or restarting a 503 `try_again` with Retry-After.
No answer echoes the NUL or the huge value. Sync pushes: tests/sync/test_push_hostile.py."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import bodies
from backend.app import create_app
from backend.db import create_pool
from backend.errors import internal_error_handler
from tests.api.test_problems import assert_problem
from tests.api.test_request_bodies import as_someone_allowed, everyone
from tests.conftest import PgServer, auth_headers, make_settings
from tests.factories import ID_NUMBERS, member
from tests.fhir.test_fhir import ELIGIBILITY, FHIR_JSON, partner_headers, register_partner

Client = AsyncTestClient[Litestar]
DEEP = 100_000
BIGINT_MAX = 2**63 - 1


def deep_json(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_msgpack(levels: int = DEEP) -> bytes:
    return b"\x91" * levels + b"\x90"  # arrays of one array, the innermost empty


def echoes_nothing(response: httpx.Response, *values: str) -> None:
    """The answer carries neither a NUL (raw or escaped) nor any of `values`."""
    text = response.text
    assert "\x00" not in text and "\\u0000" not in text.lower(), text
    for value in values:
        assert value not in text, text


# The scanners ------------------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _random_value(rng: random.Random, levels: int) -> Any:
    if levels == 0 or rng.random() < 0.25:
        # Text full of what a scanner could mistake for structure: quotes, escapes, brackets,
        # MessagePack container headers (as bytes and as UTF-8 continuation bytes).
        return rng.choice([0, -7, 2**40, 1.5, None, True, '"[{\\', "\\", '\\"]', "北山[村", b"\x91\xdc\x9f", "x" * 40])
    if rng.random() < 0.5:
        return [_random_value(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}{{": _random_value(rng, levels - 1) for i in range(rng.randint(0, 3))}


def test_the_scanners_measure_the_depth_of_json_and_msgpack_exactly() -> None:
    rng = random.Random(15)  # noqa: S311 (test data, not secrets)
    for _ in range(1500):
        value = _random_value(rng, rng.randint(0, 9))
        depth = _depth(value)
        as_json, as_msgpack = msgspec.json.encode(value), msgspec.msgpack.encode(value)
        for limit in (0, 1, 2, 4, 8):
            assert bodies.json_too_deep(as_json, limit) == (depth > limit), (as_json, limit)
            assert bodies.msgpack_too_deep(as_msgpack, limit) == (depth > limit), (as_msgpack, limit)
            for cut in (len(as_msgpack) // 3, len(as_msgpack) // 2):  # truncated: no error, no hang
                bodies.msgpack_too_deep(as_msgpack[:cut], limit)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=60),
    st.binary(max_size=60),  # bytes that look like container headers among them
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=60,
)


def _map_header(count: int) -> bytes:
    return bytes([0x80 | count]) if count < 16 else b"\xde" + count.to_bytes(2, "big")


@settings(max_examples=400, deadline=None)
@given(
    value=_values,
    twice=st.booleans(),
    cut=st.integers(min_value=0, max_value=400),
    tail=st.binary(max_size=3),
    limit=st.integers(min_value=0, max_value=8),
)
def test_the_msgpack_split_answers_as_the_walk(value: Any, twice: bool, cut: int, tail: bytes, limit: int) -> None:
    """`msgpack_too_deep` splits maps and arrays with msgspec where the walk reads every header: the
    same answer for any bytes — whole values, a map naming a key twice (msgspec keeps one of them),
    values cut short or followed by more bytes."""
    data = msgspec.msgpack.encode(value)
    if twice and isinstance(value, dict) and value:
        key, inner = next(iter(value.items()))  # the first key again, its value last
        pairs = b"".join(msgspec.msgpack.encode(k) + msgspec.msgpack.encode(v) for k, v in value.items())
        data = _map_header(len(value) + 1) + pairs + msgspec.msgpack.encode(key) + msgspec.msgpack.encode(0)
        assert bodies.msgpack_too_deep(data, limit) == (_depth({**value, key: inner}) > limit)
    for sample in (data, data[: max(1, cut)], data + tail):
        assert bodies.msgpack_too_deep(sample, limit) == bodies._msgpack_walk(sample, limit), (sample, limit)


def test_a_push_is_split_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync push of 200 mutations, Chinese names and binary ids included, is measured without walking
    its headers one by one (each mutation has too few bytes that look like headers); a push with one
    deep mutation among them is still found."""
    mutation = {
        "type": "household.create",
        "seq": 7,
        "mutation_id": uuid.uuid4().bytes,
        "household_id": uuid.uuid4().bytes,
        "village_code": "130102001001",
        "address": "北山村三组十二号",
        "members": [{"person_id": uuid.uuid4().bytes, "name": "张秀英", "relation": "head"}],
    }
    push = {"protocol_version": 1, "device_id": uuid.uuid4().bytes, "mutations": [mutation] * 200}
    walked: list[bytes] = []
    walk = bodies._msgpack_walk
    monkeypatch.setattr(bodies, "_msgpack_walk", lambda data, limit: walked.append(data) or walk(data, limit))
    assert not bodies.too_deep(msgspec.msgpack.encode(push), "msgpack")
    assert walked == []
    deep = {**mutation, "address": [[[[[[[["北山村"]]]]]]]]}  # the push, the list, the mutation and 8 more
    body = msgspec.msgpack.encode({**push, "mutations": [mutation] * 100 + [deep] + [mutation] * 99})
    assert bodies.msgpack_too_deep(body, 10)
    assert not bodies.msgpack_too_deep(body, 11)


def test_the_scanners_find_100000_levels_whatever_the_shape() -> None:
    assert bodies.too_deep(deep_json(), "json")
    assert bodies.too_deep(b'{"a":' * DEEP + b"1" + b"}" * DEEP, "json")
    assert bodies.too_deep(b"[0," * DEEP, "json")  # unterminated: as deep as a decoder would go
    assert bodies.too_deep(b"[[]" * DEEP, "json")  # never two `[` in a row
    assert bodies.too_deep(deep_msgpack(), "msgpack")
    assert bodies.too_deep(b"\xdc\x00\x01" * DEEP + b"\xc0", "msgpack")  # array16
    assert bodies.too_deep(b"\x81\xa1k" * DEEP + b"\xc0", "msgpack")  # maps
    # Brackets inside strings, escaped quotes included, are text.
    assert not bodies.too_deep(b'["' + b"[" * DEEP + b'"]', "json")
    assert not bodies.too_deep(b'["\\"' + b"[" * DEEP + b'"]', "json")
    assert bodies.too_deep(b'["\\\\"' + b"[" * DEEP + b"]" * DEEP + b"]", "json")  # `\\"` ends the string
    assert not bodies.too_deep(b"\xda\xff\xff" + b"\x91" * 0xFFFF, "msgpack")  # a str16 of headers
    assert not bodies.too_deep(deep_json(bodies.MAX_DEPTH), "json")
    assert bodies.too_deep(deep_json(bodies.MAX_DEPTH + 1), "json")
    assert not bodies.too_deep(deep_msgpack(bodies.MAX_DEPTH - 1), "msgpack")  # + the empty innermost one
    assert bodies.too_deep(deep_msgpack(bodies.MAX_DEPTH), "msgpack")


# Deep bodies on REST routes --------------------------------------------------------------------------


def _policy_with_deep_unknown_field() -> bytes:
    # A subsidy category skips fields it does not know, and msgspec skips a value recursively: without
    # the check this one is a RecursionError.
    head = b'{"effective_from":"2025-09-01","premium_fen":40000,"window_start":"2025-09-01","window_end":"2025-12-31"'
    return head + b',"rules":{"categories":[{"skipped":' + deep_json() + b"}]}}"


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/policy-years/2026/versions", _policy_with_deep_unknown_field()),
        ("/api/v1/households", b'{"members":' + deep_json() + b"}"),
        ("/api/v1/eligibility/check", b'{"id_numbers":' + deep_json() + b"}"),
        ("/api/v1/households", deep_json()),
    ],
)
async def test_a_json_body_nested_100000_levels_is_a_400_naming_the_body(client: Client, url: str, body: bytes) -> None:
    tokens = await everyone(client)
    response = await as_someone_allowed(
        client, tokens, "POST", url, content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 400, "bad_request")
    assert problem["errors"] == [{"field": "body", "message": bodies.TOO_DEEP}]
    echoes_nothing(response, "[[[[")


async def test_a_msgpack_body_on_a_rest_route_is_refused_unread(client: Client) -> None:
    response = await client.post(
        "/api/v1/households",
        content=deep_msgpack(),
        headers={**await auth_headers(client, "staff_a"), "Content-Type": "application/msgpack"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_a_deep_fhir_request_is_a_400_outcome(client: Client) -> None:
    headers = {**await partner_headers(client, await register_partner(client)), **FHIR_JSON}
    body = b'{"resourceType":"CoverageEligibilityRequest","x":' + deep_json(30_000) + b"}"  # under 64 KiB
    response = await client.post(ELIGIBILITY, content=body, headers=headers)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert (issue["details"]["coding"][0]["code"], issue["expression"]) == ("bad_request", ["body"])


@pytest.mark.parametrize(
    ("username", "url", "body", "field"),
    [
        ("staff_a", "/api/v1/households/search", {"head_name": "张\x00三"}, "head_name"),
        ("admin", "/api/v1/auth/login", {"username": "ad\x00min", "password": "x"}, "username"),
        (
            "staff_a",
            "/api/v1/households",
            {
                "village_code": "330106001001",
                "household_no": "0101",
                "members": [member(ID_NUMBERS[1], "张三"), member(ID_NUMBERS[2] + "\x00", "李四", "spouse")],
            },
            "members[1].id_number",
        ),
    ],
)
async def test_a_nul_in_the_text_of_a_json_body_is_a_422_naming_the_field(
    client: Client, username: str, url: str, body: dict[str, Any], field: str
) -> None:
    """Text fields without a rule of their own (names searched, usernames, identity numbers read
    leniently) reached PostgreSQL, which refuses a NUL: a 500."""
    response = await client.post(url, json=body, headers=await auth_headers(client, username))
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"field": field, "message": "must not contain NUL characters"}]
    echoes_nothing(response)


@pytest.mark.parametrize("huge", [2**63, 10**30])
async def test_an_integer_of_a_json_body_beyond_bigint_is_a_422_naming_the_field(client: Client, huge: int) -> None:
    """A receipt block's numbers have no upper bound in their type: the field is named at the door,
    before any rule of the service or column of the database sees the number."""
    block = {
        "collector_id": str(uuid.uuid4()),
        "device_id": str(uuid.uuid4()),
        "prefix": "T",
        "first_no": huge,
        "last_no": huge + 10,
    }
    response = await client.post("/api/v1/receipt-blocks", json=block, headers=await auth_headers(client, "reviewer_a"))
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"field": "first_no", "message": f"must be at most {BIGINT_MAX}"}]
    echoes_nothing(response, str(huge))


# Parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["entity", "action", "entity_id"])
async def test_a_nul_in_an_audit_filter_is_a_422_naming_it(client: Client, name: str) -> None:
    admin = await auth_headers(client, "admin")
    response = await client.get("/api/v1/audit", params={name: "house\x00hold"}, headers=admin)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"field": f"query.{name}", "message": "must not contain NUL characters"}]
    echoes_nothing(response, "house")


async def test_an_audit_cursor_beyond_bigint_is_a_422_naming_it(client: Client) -> None:
    admin = await auth_headers(client, "admin")
    for huge in (2**63, 2**64, 10**40):
        response = await client.get("/api/v1/audit", params={"before": str(huge)}, headers=admin)
        problem = assert_problem(response, 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == ["query.before"]
        echoes_nothing(response, str(huge))
    largest = await client.get("/api/v1/audit", params={"before": str(BIGINT_MAX)}, headers=admin)
    assert largest.status_code == 200, largest.text


def _operations(app: Litestar) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(method, path template, parameters) of every operation of the API document."""
    found = []
    for path, item in app.openapi_schema.to_schema()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, operation.get("parameters", [])))
    return found


def _url(path: str, parameters: list[dict[str, Any]], **values: str) -> str:
    for parameter in parameters:
        if parameter["in"] == "path":
            name, schema = parameter["name"], parameter["schema"]
            sample = "2026" if schema.get("type") == "integer" else str(uuid.uuid4())
            if schema.get("type") == "string" and schema.get("format") != "uuid":
                sample = "330106000000"
            path = path.replace("{" + name + "}", values.get(name, sample))
    return path


def _bounded(schema: dict[str, Any], value: str) -> bool:
    """Whether an integer parameter declares a bound on the value's side (the API's bounds lie
    within a bigint)."""
    options = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    bound = "minimum" if value.startswith("-") else "maximum"
    return any(bound in option or "exclusiveM" + bound[1:] in option for option in options)


def _is_integer(schema: dict[str, Any]) -> bool:
    options = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    return any(
        option.get("type") == "integer" or option.get("items", {}).get("type") == "integer" for option in options
    )


async def test_every_parameter_refuses_a_nul_and_every_integer_one_a_number_beyond_bigint(
    client: Client, app: Litestar
) -> None:
    """The walk goes through the API document: a new route or parameter joins it."""
    tokens = await everyone(client)
    checked = 0
    for method, path, parameters in _operations(app):
        for parameter in parameters:
            where, name = parameter["in"], parameter["name"]
            if where not in ("query", "path"):
                continue
            wrong = ["a\x00b"] + ([str(2**63), str(-(2**63) - 1)] if _is_integer(parameter["schema"]) else [])
            for value in wrong:
                if where == "query":
                    url, params = _url(path, parameters), {name: value}
                else:
                    url, params = _url(path, parameters, **{name: value.replace("\x00", "%00")}), {}
                response = await as_someone_allowed(client, tokens, method, url, params=params)
                label = f"{method} {path} {where}.{name}={value!r}"
                assert response.status_code < 500, f"{label}: {response.text}"
                echoes_nothing(response, str(2**63), str(2**63 + 1))
                if response.status_code in (401, 403) or (where == "path" and response.status_code == 404):
                    continue  # a route for residents or partners; a path of another shape
                assert response.status_code == 422, f"{label}: {response.text}"
                if "\x00" in value or not _bounded(parameter["schema"], value):
                    # Refused before the body is read; a bound of the parameter's own is checked by
                    # Litestar, after the body (an empty one here).
                    assert response.json()["errors"][0]["field"] == f"{where}.{name}", f"{label}: {response.text}"
                checked += 1
    assert checked >= 120  # filters, cursors, limits, years and codes across the API (143 in May 2026)


async def test_a_nul_in_a_header_is_a_422_naming_it(client: Client) -> None:
    headers = {**await auth_headers(client, "admin"), "X-Client-Note": "a\x00b"}
    response = await client.get("/api/v1/users", headers=headers)
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["header.x-client-note"]


async def test_a_nul_in_a_parameter_name_is_refused_without_echoing_the_name(client: Client) -> None:
    response = await client.get("/api/v1/users", params={"qz\x00xw": "5"}, headers=await auth_headers(client, "admin"))
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["query"]
    echoes_nothing(response, "qz", "xw")


async def test_an_options_request_is_answered(client: Client) -> None:
    response = await client.options("/api/v1/households", headers=await auth_headers(client, "admin"))
    assert response.status_code == 204, response.text


# The safety net under the checks ---------------------------------------------------------------------


async def _refusal(conn: asyncpg.Connection, sql: str, value: Any) -> Exception:  # type: ignore[type-arg]
    try:
        await conn.fetchval(sql, value)
    except Exception as exc:  # the database's own exception is the point
        return exc
    raise AssertionError(f"{sql} took {value!r}")


@pytest.mark.parametrize(
    ("sql", "value", "message"),
    [
        ("SELECT $1::text", "a\x00b", "a value must not contain NUL characters"),
        ("SELECT $1::jsonb", {"note": "a\x00b"}, "a value must not contain NUL characters"),
        ("SELECT $1::bigint", 2**63, "a value is out of range"),
        ("SELECT $1::int * 100000", 2**30, "a value is out of range"),
    ],
)
async def test_a_value_the_database_cannot_hold_is_a_422_that_echoes_nothing(
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    sql: str,
    value: Any,
    message: str,
) -> None:
    exc = await _refusal(conn, sql, value)
    response = internal_error_handler(cast(Any, None), exc)
    assert response.status_code == 422
    body = cast(dict[str, Any], response.content)
    assert (body["code"], body["detail"]) == ("validation_error", message)
    assert "\x00" not in str(body) and "9223372036854775808" not in str(body)


# The database gone or restarting ---------------------------------------------------------------------


async def _raised(action: Callable[[], Awaitable[Any]]) -> Exception:
    try:
        await action()
    except Exception as exc:  # what asyncpg raises is the point
        return exc
    raise AssertionError("nothing was raised")


async def test_what_asyncpg_raises_when_the_database_is_out_of_reach_is_a_503(db_dsn: str) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire():  # the one connection is busy: the next waits, then gives up
            exhausted = await _raised(lambda: pool.acquire(timeout=0.05))
    finally:
        await pool.close()
    refused = await _raised(lambda: asyncpg.connect(f"postgresql://canbao@127.0.0.1:{closed_port()}/canbao"))
    # A connection the server ended while idle in the pool (seen with the test client).
    broken = asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
    for exc in (exhausted, refused, broken, asyncpg.CannotConnectNowError("the database system is starting up")):
        response = internal_error_handler(cast(Any, None), exc)
        assert (response.status_code, response.headers["Retry-After"]) == (503, "5"), exc
    for unrelated in (FileNotFoundError("x"), TimeoutError("not the database's"), asyncpg.InterfaceError("other")):
        assert internal_error_handler(cast(Any, None), unrelated).status_code == 500, unrelated


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def no_database() -> AsyncIterator[Client]:
    """The app over a database that is gone: nothing listens on its port."""
    settings = make_settings(
        f"postgresql://canbao@127.0.0.1:{closed_port()}/canbao", pool_min_size=0, maintenance_interval_s=0
    )
    async with AsyncTestClient(create_app(settings, configure_logs=False)) as dead:
        yield dead


def assert_try_again(response: httpx.Response) -> None:
    assert_problem(response, 503, "try_again")
    assert response.headers["retry-after"] == "5"
    assert response.json()["retry_after_s"] == 5


async def test_a_database_that_is_gone_is_a_503_try_again_on_every_kind_of_route(
    client: Client, no_database: Client
) -> None:
    admin, staff = await auth_headers(client, "admin"), await auth_headers(client, "staff_a")  # tokens still valid
    assert_try_again(await no_database.get("/api/v1/audit", headers=admin))
    assert_try_again(await no_database.post("/api/v1/households", json={}, headers=staff))
    assert_try_again(await no_database.post("/api/v1/auth/login", json={"username": "admin", "password": "x"}))


async def killed_while_waiting(
    pg_server: PgServer, db_dsn: str, lock: str, request: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """The answer to `request` when the database ends its session while it waits on `lock` (a
    table lock held by another session): PostgreSQL shut down or restarted under it."""
    locked, done = threading.Event(), threading.Event()

    async def holder() -> None:
        # In a thread of its own: the test client blocks this thread's event loop while it waits.
        other = await asyncpg.connect(db_dsn)
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            database = await other.fetchval("SELECT current_database()")
            async with other.transaction():
                await other.execute(lock)
                locked.set()
                for _ in range(1000):
                    pid = await admin.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'canbao' "
                        "AND wait_event_type = 'Lock' AND datname = $1",
                        database,
                    )
                    if pid is not None:
                        await admin.execute("SELECT pg_terminate_backend($1)", pid)
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the request never waited for the lock")
        finally:
            done.set()
            await other.close()
            await admin.close()

    side = asyncio.create_task(asyncio.to_thread(asyncio.run, holder()))
    assert await asyncio.to_thread(locked.wait, 30)
    response = await request()
    await side
    assert done.is_set()
    return response


async def test_a_session_ended_mid_request_is_a_503_and_keeps_nothing(
    client: Client,
    pg_server: PgServer,
    admin_db_dsn: str,  # the lock holder is the test's own session: the service may not lock audit_log
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    staff, admin = await auth_headers(client, "staff_a"), await auth_headers(client, "admin")
    body = {"village_code": "330106001001", "household_no": "0101", "members": [member(ID_NUMBERS[1], "张三")]}
    audit_rows = await conn.fetchval("SELECT count(*) FROM audit_log")

    created = await killed_while_waiting(
        pg_server,
        admin_db_dsn,
        "LOCK TABLE households IN ACCESS EXCLUSIVE MODE",
        lambda: client.post("/api/v1/households", json=body, headers=staff),
    )
    assert_try_again(created)
    assert await conn.fetchval("SELECT count(*) FROM households") == 0
    assert await conn.fetchval("SELECT count(*) FROM persons") == 0
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == audit_rows

    read = await killed_while_waiting(
        pg_server,
        admin_db_dsn,
        "LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE",
        lambda: client.get("/api/v1/audit", headers=admin),
    )
    assert_try_again(read)

    # The retry the answer asks for goes through on a new connection.
    again = await client.post("/api/v1/households", json=body, headers=staff)
    assert again.status_code == 201, again.text
