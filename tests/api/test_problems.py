"""Errors are RFC 9457 problem+json with a stable code, naming the field; never a 500."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import auth_headers

PROBLEM_KEYS = {"type", "title", "status", "code", "instance", "request_id"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_a_problem(client: AsyncTestClient[Litestar]) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")


async def test_missing_token_is_401_with_challenge(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/api/v1/users")
    assert_problem(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_method_is_405(client: AsyncTestClient[Litestar]) -> None:
    headers = await auth_headers(client, "admin")
    assert_problem(await client.put("/api/v1/users", headers=headers, json={}), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "x"}, "username"),
        ({"username": "a", "password": 5}, "password"),
        ({"username": "a", "password": "x", "extra": 1}, "extra"),
        ({"username": "", "password": "x"}, "username"),
    ],
)
async def test_bad_body_names_the_field(client: AsyncTestClient[Litestar], body: dict[str, Any], field: str) -> None:
    problem = assert_problem(await client.post("/api/v1/auth/login", json=body), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_body_that_is_not_json_is_a_400_naming_the_body(client: AsyncTestClient[Litestar]) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert assert_problem(response, 400, "bad_request")["errors"][0]["field"] == "body"


async def test_bad_query_parameter_names_it(client: AsyncTestClient[Litestar]) -> None:
    headers = await auth_headers(client, "admin")
    problem = assert_problem(
        await client.get("/api/v1/users", params={"limit": "many"}, headers=headers), 422, "validation_error"
    )
    assert problem["errors"][0]["field"].endswith("limit")


async def test_every_required_query_parameter_left_out_is_a_422_naming_it(client: AsyncTestClient[Litestar]) -> None:
    """Litestar reports a missing parameter in its message only; the answer names it as any other
    field (it said `body: is not valid`). Every operation of the API document with a required query
    parameter, called without its query, by a user who may call it."""
    headers = {role: await auth_headers(client, role) for role in ("admin", "civil", "staff_a")}  # whoever may
    seen = 0
    for path, item in client.app.openapi_schema.to_schema()["paths"].items():
        for method, operation in item.items():
            required = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p["required"]}
            if not required:
                continue
            url = re.sub(r"\{[^}]+\}", "0198fd6c-7401-7c3e-82dd-21250b729601", path)
            for caller in headers.values():
                response = await client.request(method.upper(), url, headers=caller)
                if response.status_code != 403:
                    break
            problem = assert_problem(response, 422, "validation_error")
            assert [e["field"] for e in problem["errors"]] in [[f"query.{name}"] for name in required], (method, path)
            assert problem["errors"][0]["message"] == "is required", (method, path)
            seen += 1
    assert seen >= 10  # the document's operations with required query parameters (12 when written)


async def test_bad_path_parameter_is_4xx(client: AsyncTestClient[Litestar]) -> None:
    headers = await auth_headers(client, "admin")
    response = await client.get("/api/v1/divisions/12345", headers=headers)
    assert response.status_code in (404, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_domain_error_failure_rolls_back_the_request(client: AsyncTestClient[Litestar]) -> None:
    """A user whose division is bad is refused whole: no half-made user, no audit row."""
    headers = await auth_headers(client, "admin")
    response = await client.post(
        "/api/v1/users",
        headers=headers,
        json={
            "username": "newbie",
            "password": "long-enough-pw",
            "role": "township_staff",
            "division_code": "330106000000",
        },
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"field": "division_code", "message": problem["errors"][0]["message"]}]
    listing = await client.get("/api/v1/users", headers=headers)
    assert "newbie" not in {u["username"] for u in listing.json()["items"]}


def test_csv_cells_that_look_like_formulas_are_neutralised() -> None:
    from backend.reports import to_csv

    body = to_csv(["name"], [['=HYPERLINK("http://x")'], ["+1"], ["张三"], [-5]]).decode("utf-8-sig")
    assert body.splitlines() == ["name", '"\'=HYPERLINK(""http://x"")"', "'+1", "张三", "-5"]
