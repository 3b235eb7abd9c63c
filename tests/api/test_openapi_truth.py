"""The OpenAPI document tells the truth about errors (backend/api_docs/openapi.py): every operation
lists the statuses it can answer, each with its problem+json body and the codes it can give; and
what the server answers when provoked is what the document lists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.api_docs import DOCS_PATH
from backend.app import create_app
from backend.config import Settings
from tests.conftest import JWT_SECRET, KEY_FILE, auth_headers

METHODS = ("get", "put", "post", "patch", "delete")
PROBLEM_REF = "#/components/schemas/Problem"
OUTCOME_REF = "#/components/schemas/OperationOutcome"
ERROR_MEDIA_TYPES = {"application/problem+json": PROBLEM_REF, "application/fhir+json": OUTCOME_REF}
Client = AsyncTestClient[Litestar]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as the app builds it; no database needed."""
    settings = Settings(database_url="postgresql://nobody@localhost/none", jwt_secret=JWT_SECRET, key_file=KEY_FILE)
    schema: dict[str, Any] = create_app(settings, configure_logs=False).openapi_schema.to_schema()
    return schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def error_schema(response: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The media type and schema of an error response (there is one)."""
    ((media_type, content),) = response["content"].items()
    return media_type, content["schema"]


def codes(response: dict[str, Any]) -> set[str]:
    _, schema = error_schema(response)
    narrowing = [part for part in schema.get("allOf", []) if "properties" in part]
    return set(narrowing[0]["properties"]["code"]["enum"]) if narrowing else set()


def test_the_document_has_all_the_operations(document: dict[str, Any]) -> None:
    assert len(operations(document)) >= 90


def test_every_operation_documents_its_errors(document: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        public = operation.get("security") == []
        takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
        # A sync envelope that does not decode is a 400 (malformed_body): the tablet store key's
        # envelope has nothing else to refuse, so it may answer 400 alone.
        bad_input = {"422"} if "400" not in statuses or path != "/api/v1/sync/store-key" else {"400"}
        expected = {"503"} | (set() if public else {"401", "403"}) | (bad_input if takes_input else set())
        if not expected <= statuses:
            missing.append(f"{method} {path}: {sorted(expected - statuses)}")
    assert missing == []


def test_every_error_carries_its_problem_schema(document: dict[str, Any]) -> None:
    wrong = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")) or (path == "/ready" and status == "503"):
                continue
            media_type, schema = error_schema(response)
            refs = [part.get("$ref") for part in schema.get("allOf", [schema])]
            if ERROR_MEDIA_TYPES.get(media_type) not in refs:
                wrong.append(f"{method} {path} {status}: {media_type} {schema}")
            elif media_type == "application/problem+json":
                narrowing = next(part for part in schema["allOf"] if "properties" in part)
                assert narrowing["properties"]["status"]["const"] == int(status)
                assert narrowing["properties"]["code"]["enum"], f"{method} {path} {status}"
    assert wrong == []


def test_the_problem_schema_is_rfc_9457_with_a_stable_code(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail", "instance", "errors"} <= set(problem["properties"])
    assert {"type", "title", "status", "code"} <= set(problem["required"])
    assert problem["additionalProperties"] is True
    assert set(problem["properties"]["errors"]["items"]["properties"]) >= {"field", "message"}


def test_public_operations_say_they_need_no_token(document: dict[str, Any]) -> None:
    public = {f"{method} {path}" for method, path, operation in operations(document) if operation.get("security") == []}
    assert {"POST /api/v1/auth/login", "POST /api/v1/resident/login", "POST /fhir/token", "GET /health"} <= public
    assert "GET /api/v1/users" not in public
    assert "401" not in document["paths"]["/health"]["get"]["responses"]


def test_the_codes_of_an_operation_are_its_own(document: dict[str, Any]) -> None:
    """The enum comes from what each operation runs: a payment's 428 is about the key, an edit's
    about If-Match; login's 401 is wrong credentials, a staff route's a missing token."""
    paths = document["paths"]
    assert codes(paths["/api/v1/payments"]["post"]["responses"]["428"]) == {"idempotency_key_required"}
    assert codes(paths["/api/v1/households/{household_id}"]["patch"]["responses"]["428"]) == {"precondition_required"}
    assert codes(paths["/api/v1/households/{household_id}"]["patch"]["responses"]["412"]) == {"precondition_failed"}
    assert codes(paths["/api/v1/auth/login"]["post"]["responses"]["401"]) == {"invalid_credentials"}
    assert "too_many_attempts" in codes(paths["/api/v1/auth/login"]["post"]["responses"]["429"])
    assert codes(paths["/api/v1/users"]["get"]["responses"]["401"]) >= {"not_authenticated", "invalid_token"}
    assert "username_taken" in codes(paths["/api/v1/users"]["post"]["responses"]["409"])
    assert codes(paths["/api/v1/users"]["get"]["responses"]["503"]) >= {"try_again"}
    assert "409" not in paths["/api/v1/users"]["get"]["responses"]
    assert "400" not in paths["/api/v1/users"]["get"]["responses"]  # no body to be malformed


def test_what_the_server_refuses_the_document_refuses_too(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["LoginRequest"]["additionalProperties"] is False  # forbid_unknown_fields
    payment = document["paths"]["/api/v1/payments"]["post"]
    key = next(p for p in payment["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True and key["schema"]["minLength"] == 8
    assert schemas["PaymentIn"]["properties"]["back_years"]["items"]["minimum"] == 2000
    assert schemas["ResidentLogin"]["properties"]["id_number"]["format"] == "gb11643"
    push = document["paths"]["/api/v1/sync/push"]["post"]["requestBody"]["content"]
    assert set(push) == {"application/json", "application/msgpack"}
    assert push["application/json"]["schema"]["properties"]["protocol_version"]["enum"] == [1]


async def test_the_served_document_is_the_truthful_one(client: Client, document: dict[str, Any]) -> None:
    served = (await client.get(f"{DOCS_PATH}/openapi.json")).json()
    assert served["paths"]["/api/v1/users"]["get"]["responses"].keys() == (
        document["paths"]["/api/v1/users"]["get"]["responses"].keys()
    )
    assert "Problem" in served["components"]["schemas"]


def assert_documented(document: dict[str, Any], method: str, path: str, response: Any, status: int, code: str) -> None:
    """The answer is the one provoked, and the operation's document lists its status, media type
    and code."""
    assert response.status_code == status, response.text
    documented = document["paths"][path][method.lower()]["responses"]
    assert str(status) in documented, f"{method} {path} does not list {status}"
    media_type, _ = error_schema(documented[str(status)])
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.json()["code"] == code
    assert code in codes(documented[str(status)]), f"{method} {path} {status} does not list {code}"


async def test_provoked_errors_are_documented(client: Client, document: dict[str, Any]) -> None:
    admin = await auth_headers(client, "admin")
    staff = await auth_headers(client, "staff_a")

    missing = await client.get(f"/api/v1/households/{uuid.uuid4()}", headers=staff)
    assert_documented(document, "GET", "/api/v1/households/{household_id}", missing, 404, "not_found")

    taken = await client.post(
        "/api/v1/users",
        json={
            "username": "staff_a",
            "password": "a-long-password",
            "role": "township_staff",
            "division_code": "330106001000",
            "full_name": "x",
        },
        headers=admin,
    )
    assert_documented(document, "POST", "/api/v1/users", taken, 409, "username_taken")

    as_text = await client.post(
        "/api/v1/auth/login", content=b'{"username": "a", "password": "b"}', headers={"content-type": "text/plain"}
    )
    assert_documented(document, "POST", "/api/v1/auth/login", as_text, 415, "unsupported_media_type")

    no_token = await client.get("/api/v1/users")
    assert_documented(document, "GET", "/api/v1/users", no_token, 401, "not_authenticated")

    wrong_role = await client.get("/api/v1/users", headers=staff)
    assert_documented(document, "GET", "/api/v1/users", wrong_role, 403, "forbidden")

    bad_query = await client.get("/api/v1/users", params={"limit": "many"}, headers=admin)
    assert_documented(document, "GET", "/api/v1/users", bad_query, 422, "validation_error")

    no_key = await client.post("/api/v1/payments", json={}, headers=staff)
    assert no_key.status_code in (422, 428)  # the body is read before the key is asked for
    if no_key.status_code == 428:
        assert_documented(document, "POST", "/api/v1/payments", no_key, 428, "idempotency_key_required")

    not_json = await client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_documented(document, "POST", "/api/v1/auth/login", not_json, 400, "bad_request")


def test_uploads_document_their_jobs_and_their_limits(document: dict[str, Any]) -> None:
    """What middleware and file readers answer is on the page too: the job (202), a file over a
    limit (413/422), too many uploads or jobs (429), the time limit (503)."""
    for path in ("/api/v1/eligibility/lists", "/api/v1/reconciliations"):
        responses = document["paths"][path]["post"]["responses"]
        assert "202" in responses, path
        assert {"body_too_large", "file_too_large"} <= codes(responses["413"]), path
        assert "row_too_large" in codes(responses["422"]), path
        assert {"too_many_jobs", "too_many_uploads"} <= codes(responses["429"]), path
        assert {"request_timeout", "try_again"} <= codes(responses["503"]), path
