"""Staff authentication: login, bad access tokens, refresh rotation and reuse, logout, rate limits, devices.

Every test runs the app against its own clone of the migrated database with the demo district.
Tokens for the bad-token cases are built here with pyjwt, from the claims of a real login.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import jwt
import jwt.warnings
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend.app import create_app
from backend.auth import tokens
from backend.errors import InvalidToken
from tests.conftest import JWT_SECRET, PASSWORD, auth_headers, bearer, login, make_settings

Client = AsyncTestClient[Litestar]
Connection = asyncpg.Connection  # type: ignore[type-arg]

KEY = tokens.SigningKey.from_secret(JWT_SECRET.encode())
PROBE = "/api/v1/devices"  # any signed-in staff member may call it: 200 means the token was accepted
PROBLEM_KEYS = {"type", "title", "status", "code", "instance", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    return body


@asynccontextmanager
async def client_with(db_dsn: str, **overrides: Any) -> AsyncIterator[Client]:
    """The app with other settings, on the same (already seeded) database."""
    app = create_app(make_settings(db_dsn, **overrides), configure_logs=False)
    async with AsyncTestClient(app) as test_client:
        yield test_client


@asynccontextmanager
async def clients_by_address(db_dsn: str, **overrides: Any) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """The app with other settings, and a client per client address (the test client has only one).

    These clients drive the app in the test's own event loop, so `asyncio.gather` really interleaves
    requests; the AsyncTestClient runs each request to completion before it returns.
    """
    app = create_app(make_settings(db_dsn, **overrides), configure_logs=False)
    clients: dict[str, httpx.AsyncClient] = {}

    def at(host: str) -> httpx.AsyncClient:
        if host not in clients:
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            clients[host] = httpx.AsyncClient(transport=transport, base_url="http://canbao.test")
        return clients[host]

    async with app.lifespan():
        try:
            yield at
        finally:
            for opened in clients.values():
                await opened.aclose()


async def post_login(test_client: Client | httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await test_client.post("/api/v1/auth/login", json={"username": username, "password": password})


async def user_id(conn: Connection, username: str) -> uuid.UUID:
    value = await conn.fetchval("SELECT id FROM users WHERE username = $1", username)
    assert isinstance(value, uuid.UUID)
    return value


def claims_of(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(sign(signing_input.encode()))


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


# Login ------------------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token_pair_that_opens_the_api(client: Client, conn: Connection) -> None:
    response = await post_login(client, "staff_a", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = claims_of(body["access_token"])
    assert claims["sub"] == str(await user_id(conn, "staff_a"))
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(body["access_token"])["kid"] == KEY.kid
    assert (await client.get(PROBE, headers=bearer(body))).status_code == 200


async def test_username_is_case_insensitive_at_login(client: Client) -> None:
    assert (await post_login(client, "STAFF_A", PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("staff_a", "wrong-password-123"),
        ("nobody_here", "wrong-password-123"),
        ("nobody_here", PASSWORD),
        ("staff_a", PASSWORD.upper()),
    ],
)
async def test_wrong_password_or_unknown_user_is_401_invalid_credentials(
    client: Client, username: str, password: str
) -> None:
    response = await post_login(client, username, password)
    assert_problem(response, 401, "invalid_credentials")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "access_token" not in response.json()


async def test_unknown_user_and_wrong_password_answer_the_same_body(client: Client) -> None:
    wrong_password = (await post_login(client, "staff_a", "wrong-password-123")).json()
    unknown_user = (await post_login(client, "nobody_here", "wrong-password-123")).json()
    # Only what names the request may differ: nothing tells an attacker which usernames exist.
    for body in (wrong_password, unknown_user):
        body.pop("request_id")
        body.pop("instance")
    assert wrong_password == unknown_user
    assert wrong_password["code"] == "invalid_credentials"


async def test_disabled_user_cannot_log_in_even_with_the_right_password(client: Client, conn: Connection) -> None:
    await conn.execute("UPDATE users SET active = false, disabled_at = now() WHERE username = 'staff_a'")
    response = await post_login(client, "staff_a", PASSWORD)
    assert_problem(response, 401, "invalid_credentials")


async def test_failed_login_is_audited_without_the_password(client: Client, conn: Connection) -> None:
    await post_login(client, "staff_a", "wrong-password-123")
    rows = await conn.fetch("SELECT actor_id, entity, entity_id, summary FROM audit_log WHERE action = 'login_failed'")
    assert len(rows) == 1
    assert rows[0]["actor_id"] is None
    assert rows[0]["entity"] == "user"
    assert rows[0]["entity_id"] == str(await user_id(conn, "staff_a"))
    assert rows[0]["summary"] == {"reason": "credentials"}


async def test_successful_login_is_audited(client: Client, conn: Connection) -> None:
    await login(client, "reviewer_b")
    staff = await user_id(conn, "reviewer_b")
    rows = await conn.fetch("SELECT actor_id, entity, entity_id FROM audit_log WHERE action = 'login'")
    assert [(r["actor_id"], r["entity"], r["entity_id"]) for r in rows] == [(staff, "user", str(staff))]


# Bad access tokens ------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _alg_none(claims: dict[str, Any], valid: str) -> str:
    return hand_made({"alg": "none", "typ": "JWT", "kid": KEY.kid}, claims, lambda _: b"")


def _alg_none_uppercase(claims: dict[str, Any], valid: str) -> str:
    return hand_made({"alg": "None", "typ": "JWT", "kid": KEY.kid}, claims, lambda _: b"")


def _hs512_with_the_right_key(claims: dict[str, Any], valid: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, JWT_SECRET, algorithm="HS512", headers={"kid": KEY.kid})


def _rs256_label_over_an_hmac_signature(claims: dict[str, Any], valid: str) -> str:
    # The algorithm-confusion attack: an HMAC made with the shared secret, labelled as RSA.
    return hand_made({"alg": "RS256", "typ": "JWT", "kid": KEY.kid}, claims, hs256(JWT_SECRET.encode()))


def _rs256_signed_by_another_key(claims: dict[str, Any], valid: str) -> str:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": KEY.kid})


def _wrong_key(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256", headers={"kid": KEY.kid})


def _wrong_kid(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": "0123456789abcdef"})


def _no_kid(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _tampered_payload(claims: dict[str, Any], valid: str) -> str:
    header, _, signature = valid.split(".")
    forged = dict(claims, exp=claims["exp"] + 86_400)  # a longer life, under the original signature
    return f"{header}.{b64(json.dumps(forged).encode())}.{signature}"


def _tampered_signature(claims: dict[str, Any], valid: str) -> str:
    header, payload, signature = valid.split(".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    flipped[0] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(flipped))}"


def _expired(claims: dict[str, Any], valid: str) -> str:
    expired = dict(claims, iat=_now() - 1000, exp=_now() - 10)
    return jwt.encode(expired, JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _wrong_audience(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(dict(claims, aud="someone-else"), JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _wrong_issuer(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(dict(claims, iss="someone-else"), JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _without_exp(claims: dict[str, Any], valid: str) -> str:
    without = {k: v for k, v in claims.items() if k != "exp"}
    return jwt.encode(without, JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _sub_not_a_uuid(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(dict(claims, sub="staff_a"), JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _unknown_session(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(dict(claims, sid=str(uuid.uuid4())), JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _without_session(claims: dict[str, Any], valid: str) -> str:
    without = {k: v for k, v in claims.items() if k != "sid"}
    return jwt.encode(without, JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _partner_actor(claims: dict[str, Any], valid: str) -> str:
    return jwt.encode(dict(claims, act="partner"), JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})


def _not_a_jwt(claims: dict[str, Any], valid: str) -> str:
    return "not-a-token"


def _two_segments(claims: dict[str, Any], valid: str) -> str:
    return valid.rsplit(".", 1)[0]


def _bad_base64(claims: dict[str, Any], valid: str) -> str:
    return "!!!." + valid.split(".", 1)[1]


BAD_TOKENS = [
    _alg_none,
    _alg_none_uppercase,
    _hs512_with_the_right_key,
    _rs256_label_over_an_hmac_signature,
    _rs256_signed_by_another_key,
    _wrong_key,
    _wrong_kid,
    _no_kid,
    _tampered_payload,
    _tampered_signature,
    _expired,
    _wrong_audience,
    _wrong_issuer,
    _without_exp,
    _sub_not_a_uuid,
    _unknown_session,
    _without_session,
    _partner_actor,
    _not_a_jwt,
    _two_segments,
    _bad_base64,
]


async def test_a_token_built_here_with_the_right_key_is_accepted(client: Client) -> None:
    """The control for the table below: the builders make tokens the API accepts, but for the flaw."""
    valid = (await login(client, "staff_a"))["access_token"]
    claims = dict(claims_of(valid), iat=_now(), exp=_now() + 60)
    rebuilt = jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})
    assert rebuilt != valid
    assert (await client.get(PROBE, headers={"Authorization": f"Bearer {rebuilt}"})).status_code == 200
    hand_built = hand_made({"alg": "HS256", "typ": "JWT", "kid": KEY.kid}, claims, hs256(JWT_SECRET.encode()))
    assert (await client.get(PROBE, headers={"Authorization": f"Bearer {hand_built}"})).status_code == 200


def _access(key: tokens.SigningKey, life_s: int = 900) -> str:
    now = _now()
    claims = tokens.AccessClaims(sub=uuid.uuid4(), sid=uuid.uuid4(), jti=uuid.uuid4(), iat=now, exp=now + life_s)
    return tokens.encode_access(key, claims)


def test_a_verified_access_token_is_not_parsed_again_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _access(KEY, life_s=2)
    parsed: list[str] = []
    decode_complete = jwt.decode_complete

    def counted(*args: Any, **kwargs: Any) -> Any:
        parsed.append(args[0])
        return decode_complete(*args, **kwargs)

    monkeypatch.setattr(tokens.jwt, "decode_complete", counted)
    first = tokens.decode_access(KEY, token)
    assert tokens.decode_access(KEY, token) == first
    assert parsed == [token]  # the second time from the tokens verified lately
    time.sleep(max(0.0, first.exp - time.time()) + 0.05)
    with pytest.raises(InvalidToken):
        tokens.decode_access(KEY, token)  # expired: verified again, and refused
    assert parsed == [token, token]


def test_a_token_verified_under_one_key_is_verified_again_under_another() -> None:
    token = _access(KEY)
    tokens.decode_access(KEY, token)
    with pytest.raises(InvalidToken):
        tokens.decode_access(tokens.SigningKey.from_secret(b"another key of this length, 48 bytes long....."), token)


def test_the_tokens_verified_lately_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_verified", {})
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 3)
    made = [_access(KEY) for _ in range(5)]
    for token in made:
        tokens.decode_access(KEY, token)
    assert len(tokens._verified) == 3  # the oldest two gone
    assert tokens.decode_access(KEY, made[0]).sub == tokens.decode_access(KEY, made[0]).sub


@pytest.mark.parametrize("make_token", BAD_TOKENS, ids=lambda f: f.__name__.lstrip("_"))
async def test_bad_access_token_is_401(client: Client, make_token: Callable[[dict[str, Any], str], str]) -> None:
    valid = (await login(client, "staff_a"))["access_token"]
    bad = make_token(claims_of(valid), valid)
    assert bad != valid
    response = await client.get(PROBE, headers={"Authorization": f"Bearer {bad}"})
    assert_problem(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_signed_token_must_match_its_session(client: Client) -> None:
    """Even with the key, a token cannot borrow another user's session or claim a device its session lacks."""
    staff_a = claims_of((await login(client, "staff_a"))["access_token"])
    staff_b = claims_of((await login(client, "staff_b"))["access_token"])
    registered = await register_device(client, await auth_headers(client, "staff_a"))

    def signed(claims: dict[str, Any]) -> dict[str, str]:
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": KEY.kid})
        return {"Authorization": f"Bearer {token}"}

    assert (await client.get(PROBE, headers=signed(staff_a))).status_code == 200
    borrowed = await client.get(PROBE, headers=signed(dict(staff_a, sid=staff_b["sid"])))
    assert_problem(borrowed, 401, "invalid_token")
    device_claimed = await client.get(PROBE, headers=signed(dict(staff_a, dev=registered["device"]["id"])))
    assert_problem(device_claimed, 401, "invalid_token")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "}],
    ids=["no_header", "empty_header", "scheme_only", "blank_token"],
)
async def test_missing_access_token_is_401(client: Client, headers: dict[str, str]) -> None:
    assert_problem(await client.get(PROBE, headers=headers), 401, "not_authenticated")


async def test_token_under_another_scheme_is_401(client: Client) -> None:
    valid = (await login(client, "staff_a"))["access_token"]
    response = await client.get(PROBE, headers={"Authorization": f"Basic {valid}"})
    assert_problem(response, 401, "not_authenticated")


# Refresh rotation, grace window and reuse detection ----------------------------------------------


async def refresh(test_client: Client, token: str) -> httpx.Response:
    return await test_client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_to_a_new_pair_that_works(client: Client) -> None:
    first = await login(client, "staff_a")
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert set(second) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert second["token_type"] == "bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert claims_of(second["access_token"])["sid"] == claims_of(first["access_token"])["sid"]
    assert (await client.get(PROBE, headers=bearer(second))).status_code == 200
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert third.json()["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}


async def test_unknown_refresh_token_is_401(client: Client) -> None:
    assert_problem(await refresh(client, "no-such-refresh-token"), 401, "invalid_token")


async def test_expired_refresh_token_is_401(client: Client, conn: Connection) -> None:
    pair = await login(client, "staff_a")
    await conn.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")


async def test_same_refresh_token_within_grace_window_gets_byte_identical_answer(client: Client) -> None:
    pair = await login(client, "staff_a")
    first = await refresh(client, pair["refresh_token"])
    again = await refresh(client, pair["refresh_token"])
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.content == first.content
    # The retry did not count as reuse: the family lives on and its newest token still rotates.
    assert (await client.get(PROBE, headers=bearer(first.json()))).status_code == 200
    assert (await refresh(client, first.json()["refresh_token"])).status_code == 200


async def test_grace_ends_once_the_replacement_has_been_used(client: Client) -> None:
    pair = await login(client, "staff_a")
    second = (await refresh(client, pair["refresh_token"])).json()
    third = (await refresh(client, second["refresh_token"])).json()
    # The client clearly received `second`, so presenting its parent again is theft, not a retry.
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")
    assert_problem(await refresh(client, third["refresh_token"]), 401, "invalid_token")
    assert_problem(await client.get(PROBE, headers=bearer(third)), 401, "invalid_token")


async def test_reused_refresh_token_after_grace_revokes_the_whole_family(
    client: Client, db_dsn: str, conn: Connection
) -> None:
    async with client_with(db_dsn, refresh_grace_s=0) as no_grace:
        pair = await login(no_grace, "staff_a")
        newest = (await refresh(no_grace, pair["refresh_token"])).json()
        assert (await no_grace.get(PROBE, headers=bearer(newest))).status_code == 200

        reuse = await refresh(no_grace, pair["refresh_token"])
        assert_problem(reuse, 401, "invalid_token")
        # The thief's copy and the rightful holder's copy die together; so does the session's access.
        assert_problem(await refresh(no_grace, newest["refresh_token"]), 401, "invalid_token")
        assert_problem(await no_grace.get(PROBE, headers=bearer(newest)), 401, "invalid_token")
        assert_problem(await no_grace.get(PROBE, headers=bearer(pair)), 401, "invalid_token")
        # Other sessions of the same user are untouched.
        other = await login(no_grace, "staff_a")
        assert (await no_grace.get(PROBE, headers=bearer(other))).status_code == 200

    family = uuid.UUID(claims_of(pair["access_token"])["sid"])
    assert await conn.fetchval("SELECT revoke_reason FROM refresh_families WHERE id = $1", family) == (
        "refresh_token_reused"
    )
    audit = await conn.fetch("SELECT entity, entity_id FROM audit_log WHERE action = 'refresh_token_reused'")
    assert [(r["entity"], r["entity_id"]) for r in audit] == [("refresh_family", str(family))]


async def test_concurrent_presentations_of_one_refresh_token_get_one_answer(seeded: None, db_dsn: str) -> None:
    async with clients_by_address(db_dsn, pool_max_size=8) as at:
        pair = (await post_login(at("10.0.0.1"), "staff_a", PASSWORD)).json()
        responses = await asyncio.gather(
            *(
                at("10.0.0.1").post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                for _ in range(6)
            )
        )
        assert [r.status_code for r in responses] == [200] * 6
        assert len({r.content for r in responses}) == 1
        newest = responses[0].json()
        assert (await at("10.0.0.1").get(PROBE, headers=bearer(newest))).status_code == 200


async def test_reuse_is_detected_when_the_grace_window_has_passed(client: Client, conn: Connection) -> None:
    pair = await login(client, "staff_a")
    newest = (await refresh(client, pair["refresh_token"])).json()
    # As if the default 30 s had passed since the rotation.
    await conn.execute("UPDATE refresh_tokens SET used_at = used_at - interval '31 seconds' WHERE used_at IS NOT NULL")
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")
    assert_problem(await refresh(client, newest["refresh_token"]), 401, "invalid_token")
    assert_problem(await client.get(PROBE, headers=bearer(newest)), 401, "invalid_token")


async def test_refresh_of_a_disabled_user_is_401(client: Client, conn: Connection) -> None:
    pair = await login(client, "staff_a")
    await conn.execute("UPDATE users SET active = false, disabled_at = now() WHERE username = 'staff_a'")
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")
    assert_problem(await client.get(PROBE, headers=bearer(pair)), 401, "invalid_token")


# Logout -----------------------------------------------------------------------------------------


async def test_logout_ends_the_session_at_once(client: Client, conn: Connection) -> None:
    pair = await login(client, "staff_a")
    other = await login(client, "staff_a")
    response = await client.post("/api/v1/auth/logout", headers=bearer(pair))
    assert response.status_code == 204, response.text
    assert_problem(await client.get(PROBE, headers=bearer(pair)), 401, "invalid_token")
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")
    # Only this session: the same user's other login is still signed in.
    assert (await client.get(PROBE, headers=bearer(other))).status_code == 200
    staff = await user_id(conn, "staff_a")
    audit = await conn.fetch("SELECT actor_id, entity, entity_id FROM audit_log WHERE action = 'logout'")
    assert [(r["actor_id"], r["entity"], r["entity_id"]) for r in audit] == [(staff, "user", str(staff))]


async def test_logout_needs_a_token(client: Client) -> None:
    assert_problem(await client.post("/api/v1/auth/logout"), 401, "not_authenticated")


# Rate limits on failed logins -------------------------------------------------------------------


async def test_failed_logins_are_limited_per_username(seeded: None, db_dsn: str) -> None:
    async with client_with(
        db_dsn, login_max_failures_per_user=3, login_max_failures_per_address=100, login_failure_window_s=600
    ) as limited:
        for _ in range(3):
            assert_problem(await post_login(limited, "staff_a", "wrong-password-123"), 401, "invalid_credentials")
        refused = await post_login(limited, "staff_a", "wrong-password-123")
        body = assert_problem(refused, 429, "too_many_attempts")
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 600
        assert body["retry_after_s"] == retry_after
        # While limited, even the right password is refused — and the username's case does not help.
        assert_problem(await post_login(limited, "staff_a", PASSWORD), 429, "too_many_attempts")
        assert_problem(await post_login(limited, "Staff_A", PASSWORD), 429, "too_many_attempts")
        # Another user at the same address is not affected.
        assert (await post_login(limited, "staff_b", PASSWORD)).status_code == 200


async def test_username_limit_holds_across_client_addresses(seeded: None, db_dsn: str) -> None:
    async with clients_by_address(db_dsn, login_max_failures_per_user=3, login_max_failures_per_address=100) as at:
        for number in range(3):
            assert (await post_login(at(f"10.0.0.{number + 1}"), "staff_a", "wrong-password-123")).status_code == 401
        assert_problem(await post_login(at("10.0.0.99"), "staff_a", PASSWORD), 429, "too_many_attempts")


async def test_failed_logins_are_limited_per_client_address(seeded: None, db_dsn: str) -> None:
    async with clients_by_address(db_dsn, login_max_failures_per_user=100, login_max_failures_per_address=3) as at:
        for username in ("staff_a", "staff_b", "nobody_here"):
            assert (await post_login(at("10.0.0.1"), username, "wrong-password-123")).status_code == 401
        # A fourth username, right password, same address: refused; from another address: welcome.
        assert_problem(await post_login(at("10.0.0.1"), "reviewer_a", PASSWORD), 429, "too_many_attempts")
        assert (await post_login(at("10.0.0.2"), "reviewer_a", PASSWORD)).status_code == 200


async def test_a_successful_login_resets_the_username_count(seeded: None, db_dsn: str) -> None:
    async with client_with(db_dsn, login_max_failures_per_user=3, login_max_failures_per_address=100) as limited:
        for _ in range(2):
            assert (await post_login(limited, "staff_a", "wrong-password-123")).status_code == 401
        assert (await post_login(limited, "staff_a", PASSWORD)).status_code == 200
        for _ in range(3):
            assert (await post_login(limited, "staff_a", "wrong-password-123")).status_code == 401
        assert_problem(await post_login(limited, "staff_a", PASSWORD), 429, "too_many_attempts")


async def test_limit_lifts_when_the_window_has_passed(seeded: None, db_dsn: str, conn: Connection) -> None:
    async with client_with(
        db_dsn, login_max_failures_per_user=2, login_max_failures_per_address=100, login_failure_window_s=60
    ) as limited:
        for _ in range(2):
            assert (await post_login(limited, "staff_a", "wrong-password-123")).status_code == 401
        assert_problem(await post_login(limited, "staff_a", PASSWORD), 429, "too_many_attempts")
        await conn.execute("UPDATE login_failures SET window_start = window_start - interval '61 seconds'")
        assert (await post_login(limited, "staff_a", PASSWORD)).status_code == 200


async def test_concurrent_wrong_logins_never_exceed_the_limit(seeded: None, db_dsn: str) -> None:
    async with clients_by_address(
        db_dsn, login_max_failures_per_user=3, login_max_failures_per_address=100, pool_max_size=8
    ) as at:
        responses = await asyncio.gather(
            *(post_login(at(f"10.0.1.{n}"), "staff_a", f"wrong-{n}-password") for n in range(12))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [401] * 3 + [429] * 9
        assert_problem(await post_login(at("10.0.2.1"), "staff_a", PASSWORD), 429, "too_many_attempts")


async def test_concurrent_wrong_logins_from_one_address_never_exceed_its_limit(seeded: None, db_dsn: str) -> None:
    async with clients_by_address(
        db_dsn, login_max_failures_per_user=100, login_max_failures_per_address=4, pool_max_size=8
    ) as at:
        usernames = ["staff_a", "staff_b", "reviewer_a", "reviewer_b", "civil", "admin"] * 2
        responses = await asyncio.gather(*(post_login(at("10.0.0.1"), u, "wrong-password-123") for u in usernames))
        assert sorted(r.status_code for r in responses) == [401] * 4 + [429] * 8


async def test_limits_hold_across_two_app_instances(seeded: None, db_dsn: str) -> None:
    limits = {"login_max_failures_per_user": 4, "login_max_failures_per_address": 100}
    async with client_with(db_dsn, **limits) as worker_1, client_with(db_dsn, **limits) as worker_2:
        statuses = []
        for worker in (worker_1, worker_2, worker_1, worker_2, worker_1, worker_2):
            statuses.append((await post_login(worker, "staff_a", "wrong-password-123")).status_code)
        assert statuses == [401, 401, 401, 401, 429, 429]


# Device-bound sessions --------------------------------------------------------------------------


async def register_device(test_client: Client, headers: dict[str, str]) -> dict[str, Any]:
    response = await test_client.post(
        "/api/v1/devices", json={"model": "Galaxy Tab A8", "app_version": "1.4.0"}, headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def device_login(test_client: Client, username: str, device_id: str, secret: str) -> httpx.Response:
    return await test_client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": PASSWORD, "device_id": device_id, "device_secret": secret},
    )


async def test_login_with_a_device_credential_binds_the_token_to_the_device(client: Client) -> None:
    registered = await register_device(client, await auth_headers(client, "staff_a"))
    device_id = registered["device"]["id"]
    response = await device_login(client, "staff_a", device_id, registered["device_secret"])
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["dev"] == device_id
    assert (await client.get(PROBE, headers=bearer(response.json()))).status_code == 200


@pytest.mark.parametrize("case", ["wrong_secret", "no_secret", "unknown_device", "another_users_device"])
async def test_device_login_with_a_bad_device_credential_is_401(client: Client, case: str) -> None:
    registered = await register_device(client, await auth_headers(client, "staff_a"))
    device_id, secret, username = registered["device"]["id"], registered["device_secret"], "staff_a"
    if case == "wrong_secret":
        secret = "not-the-device-secret"
    elif case == "unknown_device":
        device_id = str(uuid.uuid4())
    elif case == "another_users_device":
        username = "staff_b"
    body: dict[str, Any] = {"username": username, "password": PASSWORD, "device_id": device_id}
    if case != "no_secret":
        body["device_secret"] = secret
    response = await client.post("/api/v1/auth/login", json=body)
    assert_problem(response, 401, "invalid_credentials")


@pytest.mark.parametrize("action", ["suspend", "revoke"])
async def test_suspending_or_revoking_a_device_stops_its_token_on_the_next_request(
    client: Client, conn: Connection, action: str
) -> None:
    staff_a = await auth_headers(client, "staff_a")
    registered = await register_device(client, staff_a)
    device_id = registered["device"]["id"]
    on_device = (await device_login(client, "staff_a", device_id, registered["device_secret"])).json()
    assert (await client.get(PROBE, headers=bearer(on_device))).status_code == 200

    admin = await auth_headers(client, "admin")
    if action == "suspend":
        changed = await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin)
    else:
        changed = await client.delete(f"/api/v1/devices/{device_id}", headers=admin)
    assert changed.status_code == 200, changed.text

    assert_problem(await client.get(PROBE, headers=bearer(on_device)), 401, "invalid_token")
    renewed = await refresh(client, on_device["refresh_token"])
    if action == "suspend":
        # A suspended tablet may renew its token to hand in work (sync push only, to quarantine).
        assert renewed.status_code == 200, renewed.text
        assert_problem(await client.get(PROBE, headers=bearer(renewed.json())), 401, "invalid_token")
    else:
        assert_problem(renewed, 401, "invalid_token")
    assert_problem(
        await device_login(client, "staff_a", device_id, registered["device_secret"]), 401, "invalid_credentials"
    )
    # The staff member's session without the device is not the device's: it still works.
    assert (await client.get(PROBE, headers=staff_a)).status_code == 200
    failed = await conn.fetch("SELECT summary FROM audit_log WHERE action = 'login_failed'")
    assert [r["summary"] for r in failed] == [{"reason": "device"}]


async def test_reactivated_device_logs_in_again(client: Client) -> None:
    registered = await register_device(client, await auth_headers(client, "staff_a"))
    device_id = registered["device"]["id"]
    admin = await auth_headers(client, "admin")
    assert (await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin)).status_code == 200
    assert (await device_login(client, "staff_a", device_id, registered["device_secret"])).status_code == 401
    assert (await client.post(f"/api/v1/devices/{device_id}/reactivate", headers=admin)).status_code == 200
    again = await device_login(client, "staff_a", device_id, registered["device_secret"])
    assert again.status_code == 200, again.text
    assert (await client.get(PROBE, headers=bearer(again.json()))).status_code == 200


async def test_a_suspended_tablets_session_ends_for_good_on_reuse_revocation_or_a_new_password(
    client: Client, conn: Connection
) -> None:
    """Only suspension keeps a session able to renew: a reused refresh token (a thief's copy),
    revoking the tablet and setting the user's password end even that."""
    admin = await auth_headers(client, "admin")
    for case in ("reuse", "revoke", "password"):
        registered = await register_device(client, await auth_headers(client, "staff_a"))
        device_id = registered["device"]["id"]
        pair = (await device_login(client, "staff_a", device_id, registered["device_secret"])).json()
        assert (await client.post(f"/api/v1/devices/{device_id}/suspend", headers=admin)).status_code == 200
        renewed = await refresh(client, pair["refresh_token"])
        assert renewed.status_code == 200, (case, renewed.text)
        if case == "reuse":
            assert (await refresh(client, renewed.json()["refresh_token"])).status_code == 200
            # The first token again, after its replacement was used.
            assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_token")
        elif case == "revoke":
            assert (await client.delete(f"/api/v1/devices/{device_id}", headers=admin)).status_code == 200
        else:
            staff_id = await user_id(conn, "staff_a")
            changed = await client.post(
                f"/api/v1/users/{staff_id}/password", json={"password": PASSWORD}, headers=admin
            )
            assert changed.status_code == 204, changed.text
        assert_problem(await refresh(client, renewed.json()["refresh_token"]), 401, "invalid_token")
        reason = await conn.fetchval(
            "SELECT revoke_reason FROM refresh_families WHERE device_id = $1", uuid.UUID(device_id)
        )
        expected = {"reuse": "refresh_token_reused", "revoke": "device_revoked", "password": "password_changed"}
        assert reason == expected[case]
