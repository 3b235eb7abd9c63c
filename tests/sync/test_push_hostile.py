"""No 500 from a tablet's input (issue 15, point 4): a push nested 100,000 levels deep is a 400
`malformed_body`, JSON or MessagePack, gzipped or not, before anything decodes it; a NUL in a
mutation's text is that mutation's answer, never the whole push's; a push whose database session
ends under it is a 503 `try_again` that kept nothing, and the retry applies it."""

from __future__ import annotations

import base64
import uuid

import asyncpg
import msgspec
import pytest

from backend import bodies
from backend.sync.pull import PageToken
from backend.sync.push import HOLDS_NUL
from mobile_sync_protocol import codec
from mobile_sync_protocol import messages as m
from tests.api.test_hostile_input import (
    assert_try_again,
    deep_json,
    deep_msgpack,
    killed_while_waiting,
    no_database,  # noqa: F401 (a fixture)
)
from tests.api.test_problems import assert_problem
from tests.conftest import PgServer
from tests.sync_world import Client, clear, enrol, envelope, household_create, payment, push, push_raw, world


async def ledger(conn: asyncpg.Connection) -> tuple[int, int, int]:  # type: ignore[type-arg]
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM sync_mutations) AS l, (SELECT count(*) FROM households) AS h, "
        "(SELECT coalesce(max(last_seq), 0) FROM sync_devices) AS s"
    )
    assert row is not None
    return row["l"], row["h"], row["s"]


def _deep_envelope(tablet_device: uuid.UUID, fmt: codec.Format) -> bytes:
    """A push whose one mutation hides 100,000 levels in a field (msgspec skips it recursively
    even where the envelope keeps mutations raw)."""
    mutation = (
        b'{"type":"household.create","seq":1,"x":' + deep_json() + b"}"
        if fmt == "json"
        else b"\x83\xa4type\xb0household.create\xa3seq\x01\xa1x" + deep_msgpack()
    )
    return codec.encode(
        m.PushRequest(protocol_version=m.PROTOCOL_VERSION, device_id=tablet_device, mutations=[msgspec.Raw(mutation)]),
        fmt,
    )


@pytest.mark.parametrize(("fmt", "gzip"), [("json", False), ("msgpack", False), ("msgpack", True)])
async def test_a_push_nested_100000_levels_is_a_400_and_applies_nothing(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    fmt: codec.Format,
    gzip: bool,
) -> None:
    tablet = await world(client)
    response = await push_raw(client, tablet, _deep_envelope(tablet.device_id, fmt), fmt, gzip=gzip)
    problem = assert_problem(response, 400, "malformed_body")
    assert problem["errors"] == [{"field": "body", "message": bodies.TOO_DEEP}]
    assert await ledger(conn) == (0, 0, 0)
    # The tablet's next push is read as ever.
    answer = await push(client, tablet, [household_create(tablet)], fmt)
    assert [a.status for a in answer.answers] == ["applied"]


async def test_a_pull_with_a_forged_deep_page_token_is_a_422_naming_it(client: Client) -> None:
    tablet = await world(client)
    # A token of ours with one more item: msgspec skips what follows the fields, recursively.
    forged = msgspec.json.encode(PageToken(mode="s", to_xid=1))[:-1] + b"," + deep_json() + b"]"
    request = m.PullRequest(
        protocol_version=m.PROTOCOL_VERSION,
        device_id=tablet.device_id,
        page_token=base64.urlsafe_b64encode(forged).decode().rstrip("="),
    )
    response = await client.post(
        "/api/v1/sync/pull", content=codec.encode(request, "json"), headers={**tablet.headers, "Content-Type": m.JSON}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["page_token"]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_a_nul_in_a_mutation_is_its_own_answer_and_a_payment_with_one_is_kept_for_review(
    client: Client,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
    fmt: codec.Format,
) -> None:
    """Text PostgreSQL cannot hold failed the whole push (a payment's quarantine copy, the
    ledger's type column): a 500, and the tablet's queue stuck behind it for good."""
    tablet = await world(client)
    created = household_create(tablet)
    await push(client, tablet, [created, enrol(tablet, created)], fmt)
    renamed = msgspec.structs.replace(household_create(tablet, household_no="0102"), address="北山\x00村")
    paid = payment(tablet, created, channel_ref="ref\x00x")
    unknown = {"type": "household.\x00", "seq": tablet.seq(), "mutation_id": str(uuid.uuid4())}
    after = household_create(tablet, numbers=(3,), household_no="0103")
    response = await push_raw(client, tablet, envelope(tablet, [renamed, paid, unknown, after], fmt), fmt)
    assert response.status_code == 200, response.text
    answers = codec.decode(response.content, m.PushResponse, fmt).answers
    assert b"\\u0000" not in msgspec.json.encode(answers)  # no NUL answered back
    assert [(a.seq, a.status, a.code) for a in answers] == [
        (3, "rejected", "malformed_mutation"),
        (4, "quarantined", "malformed_payment"),
        (5, "rejected", "unknown_mutation"),
        (6, "applied", None),
    ]
    assert answers[0].detail == answers[1].detail == HOLDS_NUL
    body = clear(await conn.fetchrow("SELECT body_enc FROM sync_quarantine WHERE seq = 4"))["body"]
    assert body["channel_ref"] == "ref\ufffdx"
    assert await conn.fetchval("SELECT kind FROM sync_mutations WHERE seq = 5") == "household.\ufffd"
    assert await conn.fetchval("SELECT count(*) FROM payments") == 0


async def test_a_push_whose_session_ends_under_it_is_a_503_that_kept_nothing(
    client: Client,
    pg_server: PgServer,
    db_dsn: str,
    conn: asyncpg.Connection,  # type: ignore[type-arg]
) -> None:
    tablet = await world(client)
    first = household_create(tablet)
    await push(client, tablet, [first])
    batch = [household_create(tablet, household_no="0102", numbers=(3,)), enrol(tablet, first)]
    body = envelope(tablet, batch)
    before = await ledger(conn)
    audit_rows = await conn.fetchval("SELECT count(*) FROM audit_log")

    response = await killed_while_waiting(
        pg_server, db_dsn, "LOCK TABLE households IN ACCESS EXCLUSIVE MODE", lambda: push_raw(client, tablet, body)
    )
    assert_try_again(response)
    assert await ledger(conn) == before == (1, 1, 1)
    assert await conn.fetchval("SELECT count(*) FROM enrollments") == 0
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == audit_rows

    # The protocol's answer to 503: send the same push again. It applies once.
    again = await push_raw(client, tablet, body)
    assert again.status_code == 200, again.text
    assert [a.status for a in msgspec.json.decode(again.content, type=m.PushResponse).answers] == ["applied"] * 2
    assert await ledger(conn) == (3, 2, 3)


async def test_a_push_to_a_database_that_is_gone_is_a_503_try_again(client: Client, no_database: Client) -> None:  # noqa: F811
    tablet = await world(client)
    response = await push_raw(no_database, tablet, envelope(tablet, [household_create(tablet)]))
    assert_try_again(response)
