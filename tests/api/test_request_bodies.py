"""Request bodies are read strictly: integers are JSON integers, a body comes in the media type its
route accepts, and every validation message names the field and the rule in plain words.

The walks go through the OpenAPI schema, so a new route or a new integer field joins them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers
from tests.factories import ID_NUMBERS, create_household, member

Client = AsyncTestClient[Litestar]
# Words a message for people must not carry: regular expressions, msgspec's paths and type
# names, Python reprs of internal keys.
NOT_PLAIN = re.compile(r"regex|`|\$\.|'data'|Expected|\\x00|\^\(|\bstr\b|\bint\b")


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def integer_fields(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(path, body maker) of every integer in a body schema: `amount_fen`, `members[0].birth_year`,
    … The maker puts a value at the path, with the tags of tagged unions on the way."""
    schema = _resolve(schema, components)
    if depth > 6:
        return
    if schema.get("type") == "integer":
        yield "", lambda value: value
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        yield from integer_fields(option, components, depth + 1)
    properties = {name: _resolve(sub, components) for name, sub in schema.get("properties", {}).items()}
    tags = {name: sub["const"] for name, sub in properties.items() if "const" in sub}
    for name, sub in properties.items():
        for path, inner in integer_fields(sub, components, depth + 1):
            yield (f"{name}.{path}" if path else name).replace(".[", "["), _in_object(tags, name, inner)
    if "items" in schema:
        for path, inner in integer_fields(schema["items"], components, depth + 1):
            yield f"[0].{path}" if path else "[0]", _in_list(inner)


def _in_object(tags: dict[str, Any], name: str, inner: Any) -> Any:
    return lambda value: {**tags, name: inner(value)}


def _in_list(inner: Any) -> Any:
    return lambda value: [inner(value)]


def json_operations(app: Litestar) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with sample path parameters, body schema) of every JSON body in the schema."""
    schema = app.openapi_schema.to_schema()
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            if "application/json" not in content:
                continue
            if content.keys() & {"application/msgpack", "application/fhir+json"}:
                continue  # the sync envelope and FHIR resources: read by their routes, answered their way
            url = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    kind = parameter["schema"].get("type")
                    sample = "2026" if kind == "integer" else str(uuid.uuid4())
                    url = url.replace("{" + parameter["name"] + "}", sample)
            found.append((method.upper(), url, content["application/json"]["schema"]))
    return found


async def everyone(client: Client) -> list[dict[str, str]]:
    """A token of each staff role: each route is called as the first one its guard lets in."""
    return [await auth_headers(client, name) for name in ("admin", "staff_a", "reviewer_a", "civil")] + [{}]


async def as_someone_allowed(client: Client, tokens: list[dict[str, str]], method: str, url: str, **kw: Any) -> Any:
    """The answer to the first role the route's guard lets in (else the last answer)."""
    extra = kw.pop("headers", {})
    for headers in tokens:
        response = await client.request(method, url, headers={**headers, **extra}, **kw)
        if response.status_code not in (401, 403):
            break
    return response


async def test_a_string_or_a_float_for_an_integer_field_is_a_422_naming_it_on_every_route(
    client: Client, app: Litestar
) -> None:
    components = app.openapi_schema.to_schema()["components"]["schemas"]
    tokens = await everyone(client)
    checked = 0
    for method, url, schema in json_operations(app):
        for field, body_with in integer_fields(schema, components):
            for wrong in ("2026", 2026.0):
                response = await as_someone_allowed(client, tokens, method, url, json=body_with(wrong))
                assert response.status_code == 422, f"{method} {url} {field}={wrong!r}: {response.text}"
                assert response.json()["errors"][0]["field"] == field, f"{method} {url}: {response.text}"
                assert "must be an integer" in response.json()["errors"][0]["message"]
                checked += 1
    assert checked >= 40  # amounts, years, counts, receipt numbers, limits across the API


async def test_amount_fen_as_text_records_no_payment(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff_a = await auth_headers(client, "staff_a")
    body = {
        "id": str(uuid.uuid4()),
        "household_id": str(uuid.uuid4()),
        "coverage_year": 2026,
        "person_ids": [str(uuid.uuid4())],
        "amount_fen": "42000",
        "method": "cash",
        "receipt_no": "A00000001",
        "collected_at": "2025-10-08T09:00:00+08:00",
    }
    headers = {**staff_a, "Idempotency-Key": "strict-amount-1"}
    for amount in ("42000", 42000.0):
        response = await client.post("/api/v1/payments", json={**body, "amount_fen": amount}, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [
            {"field": "amount_fen", "message": response.json()["errors"][0]["message"]}
        ]
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0
    assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_enrol_year_as_text_registers_no_household(client: Client, conn: asyncpg.Connection) -> None:  # type: ignore[type-arg]
    staff_a = await auth_headers(client, "staff_a")
    body = {
        "village_code": "330106001001",
        "household_no": "0001",
        "members": [member(ID_NUMBERS[1], "张三")],
        "enrol_year": "2027",
    }
    response = await client.post("/api/v1/households", json=body, headers=staff_a)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0] == {"field": "enrol_year", "message": "must be an integer or null, not text"}
    assert await conn.fetchval("SELECT count(*) FROM households") == 0


async def test_a_json_body_sent_as_text_plain_is_415_and_creates_nothing(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    body = b'{"village_code": "330106001001", "household_no": "0001", "members": []}'
    response = await client.post("/api/v1/households", content=body, headers={**staff_a, "Content-Type": "text/plain"})
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unsupported_media_type"
    assert response.json()["accepted"] == ["application/json"]
    assert await conn.fetchval("SELECT count(*) FROM households") == 0


async def test_every_json_route_refuses_another_media_type(client: Client, app: Litestar) -> None:
    tokens = await everyone(client)
    for method, url, _ in json_operations(app):
        response = await as_someone_allowed(
            client, tokens, method, url, content=b"{}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 415, f"{method} {url}: {response.text}"
        assert response.json()["accepted"] == ["application/json"]


async def test_an_upload_route_refuses_json_naming_multipart(client: Client) -> None:
    civil = await auth_headers(client, "civil")
    response = await client.post("/api/v1/eligibility/lists", json={"type": "di_bao"}, headers=civil)
    assert response.status_code == 415, response.text
    assert response.json()["accepted"] == ["multipart/form-data"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (None, "body", "is required: send a JSON object"),
        ([], "body", "must be an object, not a list"),
        ({"username": "admin"}, "password", "is required"),
        ({"username": "admin", "password": "x", "extra": 1}, "extra", "is not a known field"),
        ({"username": "", "password": "x"}, "username", "must have at least 1 characters"),
        ({"username": "admin", "password": "x", "device_id": "tablet-7"}, "device_id", "must be a UUID"),
    ],
)
async def test_login_messages_say_what_is_wrong_in_words(client: Client, body: Any, field: str, message: str) -> None:
    response = await client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"field": field, "message": message}]
    assert response.json()["detail"] == f"{field}: {message}"


async def test_a_blank_name_is_named_in_words_not_by_its_regex(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    household = await create_household(client, staff_a, [member(ID_NUMBERS[1], "张三")])
    response = await client.patch(
        f"/api/v1/households/{household['id']}/members/{household['members'][0]['person_id']}",
        json={"name": "   "},
        headers={**staff_a, "If-Match": f'"{household["row_version"]}"'},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"field": "name", "message": "must not be blank or contain NUL characters"}]


async def test_an_enum_names_its_values_and_a_pattern_its_rule(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    body = {"village_code": "3301", "household_no": "0001", "members": [member(ID_NUMBERS[1], "张三")]}
    response = await client.post("/api/v1/households", json=body, headers=staff_a)
    assert response.json()["errors"] == [
        {"field": "village_code", "message": "must be a 12-digit division code (统计用区划代码)"}
    ]
    body = {"village_code": "330106001001", "household_no": "0001", "members": [member(ID_NUMBERS[1], "张三", "boss")]}
    response = await client.post("/api/v1/households", json=body, headers=staff_a)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "members[0].relation"
    assert error["message"] == "must be one of: " + ", ".join(
        ["child", "child_in_law", "grandchild", "grandparent", "head", "other", "parent", "sibling", "spouse"]
    )


async def test_a_short_idempotency_key_is_named_with_its_allowed_length_not_as_missing(client: Client) -> None:
    staff_a = await auth_headers(client, "staff_a")
    body = {"village_code": "330106001001", "household_no": "0001", "members": [member(ID_NUMBERS[1], "张三")]}
    response = await client.post("/api/v1/households", json=body, headers={**staff_a, "Idempotency-Key": "abcdef"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"field": "Idempotency-Key", "message": "must be 8 to 200 printable ASCII characters"}
    ]
    missing = await client.post("/api/v1/payments", json={}, headers=staff_a)
    assert missing.status_code in (422, 428), missing.text


async def test_no_validation_message_on_any_route_shows_a_regex_a_path_or_a_repr(client: Client, app: Litestar) -> None:
    """Every JSON route, sent an empty object, a wrong type at every integer and a string of NULs
    at every string field: each message is words."""
    components = app.openapi_schema.to_schema()["components"]["schemas"]
    tokens = await everyone(client)
    seen = 0
    for method, url, schema in json_operations(app):
        bodies: list[Any] = [{}, [], "x"]
        bodies += [body_with("2026") for _, body_with in integer_fields(schema, components)]
        resolved = _resolve(schema, components)
        bodies += [{name: "\x00"} for name in resolved.get("properties", {})]
        for body in bodies:
            response = await as_someone_allowed(client, tokens, method, url, json=body)
            if response.status_code not in (400, 422):
                continue
            problem = response.json()
            texts = [problem.get("detail") or ""] + [e["message"] for e in problem.get("errors", [])]
            assert not [t for t in texts if NOT_PLAIN.search(t)], f"{method} {url} {body!r}: {texts}"
            seen += 1
    assert seen >= 100
