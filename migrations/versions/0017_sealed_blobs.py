"""The other stored copies of personal numbers, sealed: what sync keeps of tablets' work, stored HTTP
answers, and jobs' files.

- sync_conflicts: the numbers in base/server/tablet values sealed in place
  (`{"phone": {"sealed": "<base64>"}}`); the held mutation sealed whole (`mutation_enc`).
- sync_quarantine: the body as the tablet sent it, sealed whole (`body_enc`).
- sync_mutations.body_hash and idempotency_keys.request_hash: keyed (the blind index of the plain
  SHA-256 kept before), since a plain hash of a body whose other fields are known gives the number
  away to a few thousand guesses. Dedup compares them only, so they convert without the bodies.
- idempotency_keys.response: sealed, bound to its actor and key.
- job_files.data, job_outputs.data: each piece sealed, bound to its job and place.

Existing rows are converted in batches with the keys `canbao migrate` was given (alembic attribute
`keyring`), user triggers off (the ledger is append-only; a conflict converted is no change to
send to tablets). The downgrade opens them again (run it on a copy: it writes numbers in clear)
but cannot unkey the digests: after it, a tablet's retry of a mutation pushed before is answered
`seq_reused` (its queue drops it by `last_seq` all the same) and a retried idempotent request
`idempotency_key_reused`.

The blob kinds and digest kinds here are those of backend/sync/sealed.py, backend/idempotency.py and
backend/jobs/service.py, written out so that this migration keeps meaning what it meant.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from migrations import execute, fetch, keyring, run_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BATCH = 2_000
FILE_BATCH = 8  # job file pieces are up to a megabyte each

# Numbers in a conflict's values, and the kind each is sealed as (backend/crypto.py).
SEALED_FIELDS = {"id_number": "id_number", "birth_cert_no": "birth_cert", "phone": "phone"}
HELD_MUTATION = "sync_held_mutation"
QUARANTINED_BODY = "sync_quarantined_body"
MUTATION_DIGEST = "sync_mutation_digest"
REQUEST_DIGEST = "idempotent_request"


def _answer_kind(actor_id: Any, key: str) -> str:
    return f"idempotent_answer:{actor_id}:{key}"


def _file_kind(table: str, job_id: Any, seq: int) -> str:
    return f"{'job_file' if table == 'job_files' else 'job_output'}:{job_id}:{seq}"


TABLES = ("sync_conflicts", "sync_quarantine", "sync_mutations", "idempotency_keys", "job_files", "job_outputs")


def _keyring() -> Any:
    return keyring("0017", "the sync, idempotency and job rows already stored")


def _has_rows() -> bool:
    return any(fetch(f"SELECT 1 FROM {table} LIMIT 1") for table in TABLES)


def _batches(table: str, key: tuple[str, ...], columns: str, size: int = BATCH) -> Any:
    """The rows of `table` in keyset order, `size` at a time."""
    last: tuple[Any, ...] | None = None
    names = ", ".join(key)
    while True:
        after = "" if last is None else f"WHERE ({names}) > ({', '.join(f'${i + 1}' for i in range(len(key)))})"
        batch = fetch(f"SELECT {names}, {columns} FROM {table} {after} ORDER BY {names} LIMIT {size}", *(last or ()))
        if not batch:
            return
        yield batch
        last = tuple(batch[-1][k] for k in key)


def _values(keyring: Any, seal: bool) -> Callable[[str], str]:
    """A conflict's values (jsonb as text) with the numbers sealed in place, or opened again."""

    def convert(text: str) -> str:
        values = json.loads(text)
        for name, value in values.items():
            kind = SEALED_FIELDS.get(name)
            if kind is None or value is None:
                continue
            if seal and not isinstance(value, dict):
                values[name] = {"sealed": base64.b64encode(keyring.seal(kind, str(value))).decode()}
            elif not seal and isinstance(value, dict) and "sealed" in value:
                values[name] = keyring.open(kind, base64.b64decode(value["sealed"]))
        return json.dumps(values, ensure_ascii=False)

    return convert


def _convert(seal: bool) -> None:
    keyring = _keyring()
    values = _values(keyring, seal)

    # sync_conflicts
    source = "mutation::text AS mutation" if seal else "mutation_enc"
    as_text = (
        "base_values::text AS base_values, server_values::text AS server_values, tablet_values::text AS tablet_values"
    )
    for batch in _batches("sync_conflicts", ("id",), f"{as_text}, {source}"):
        if seal:
            held = [
                None if r["mutation"] is None else keyring.seal_bytes(HELD_MUTATION, r["mutation"].encode())
                for r in batch
            ]
        else:
            held = [
                None if r["mutation_enc"] is None else keyring.open_bytes(HELD_MUTATION, r["mutation_enc"]).decode()
                for r in batch
            ]
        target, cast = ("mutation_enc", "bytea") if seal else ("mutation", "text")
        execute(
            f"UPDATE sync_conflicts t SET base_values = v.b::jsonb, server_values = v.s::jsonb,"
            f" tablet_values = v.t::jsonb, {target} = v.m::{'bytea' if seal else 'jsonb'}"
            f" FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::{cast}[]) AS v (id, b, s, t, m)"
            " WHERE t.id = v.id",
            [r["id"] for r in batch],
            [values(r["base_values"]) for r in batch],
            [values(r["server_values"]) for r in batch],
            [values(r["tablet_values"]) for r in batch],
            held,
        )

    # sync_quarantine
    source = "body::text AS body" if seal else "body_enc"
    for batch in _batches("sync_quarantine", ("id",), source):
        if seal:
            bodies: list[Any] = [keyring.seal_bytes(QUARANTINED_BODY, r["body"].encode()) for r in batch]
            execute(
                "UPDATE sync_quarantine t SET body_enc = v.b FROM unnest($1::uuid[], $2::bytea[]) AS v (id, b)"
                " WHERE t.id = v.id",
                [r["id"] for r in batch],
                bodies,
            )
        else:
            bodies = [keyring.open_bytes(QUARANTINED_BODY, r["body_enc"]).decode() for r in batch]
            execute(
                "UPDATE sync_quarantine t SET body = v.b::jsonb FROM unnest($1::uuid[], $2::text[]) AS v (id, b)"
                " WHERE t.id = v.id",
                [r["id"] for r in batch],
                bodies,
            )

    # The digests are keyed once; a downgrade leaves them keyed (see the docstring).
    if seal:
        for batch in _batches("sync_mutations", ("device_id", "seq"), "body_hash"):
            execute(
                "UPDATE sync_mutations t SET body_hash = v.h"
                " FROM unnest($1::uuid[], $2::bigint[], $3::bytea[]) AS v (d, s, h)"
                " WHERE t.device_id = v.d AND t.seq = v.s",
                [r["device_id"] for r in batch],
                [r["seq"] for r in batch],
                [keyring.index(MUTATION_DIGEST, bytes(r["body_hash"]).hex()) for r in batch],
            )

    # idempotency_keys
    for batch in _batches("idempotency_keys", ("actor_id", "key"), "request_hash, response"):

        def answer(r: Any) -> bytes | None:
            if r["response"] is None:
                return None
            kind = _answer_kind(r["actor_id"], r["key"])
            return bytes(keyring.seal_bytes(kind, r["response"]) if seal else keyring.open_bytes(kind, r["response"]))

        hashes = [
            keyring.index(REQUEST_DIGEST, bytes(r["request_hash"]).hex()) if seal else r["request_hash"] for r in batch
        ]
        execute(
            "UPDATE idempotency_keys t SET request_hash = v.h, response = v.r"
            " FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[]) AS v (a, k, h, r)"
            " WHERE t.actor_id = v.a AND t.key = v.k",
            [r["actor_id"] for r in batch],
            [r["key"] for r in batch],
            hashes,
            [answer(r) for r in batch],
        )

    # job_files, job_outputs
    for table in ("job_files", "job_outputs"):
        for batch in _batches(table, ("job_id", "seq"), "data", FILE_BATCH):
            data = [
                keyring.seal_bytes(_file_kind(table, r["job_id"], r["seq"]), r["data"])
                if seal
                else keyring.open_bytes(_file_kind(table, r["job_id"], r["seq"]), r["data"])
                for r in batch
            ]
            execute(
                f"UPDATE {table} t SET data = v.d FROM unnest($1::uuid[], $2::integer[], $3::bytea[]) AS v (j, s, d)"
                " WHERE t.job_id = v.j AND t.seq = v.s",
                [r["job_id"] for r in batch],
                [r["seq"] for r in batch],
                data,
            )


def _triggers(enable: bool) -> None:
    verb = "ENABLE" if enable else "DISABLE"
    run_sql("".join(f"ALTER TABLE {table} {verb} TRIGGER USER;\n" for table in TABLES))


def upgrade() -> None:
    run_sql("""
    ALTER TABLE sync_conflicts ADD COLUMN mutation_enc bytea;  -- a held edit, as pushed, sealed whole
    ALTER TABLE sync_quarantine ADD COLUMN body_enc bytea;  -- the body as the tablet sent it, sealed whole
    """)
    if _has_rows():
        _triggers(enable=False)
        _convert(seal=True)
        _triggers(enable=True)
    run_sql("""
    ALTER TABLE sync_conflicts DROP COLUMN mutation;
    ALTER TABLE sync_quarantine DROP COLUMN body, ALTER COLUMN body_enc SET NOT NULL;
    """)


def downgrade() -> None:
    run_sql("""
    ALTER TABLE sync_conflicts ADD COLUMN mutation jsonb;
    ALTER TABLE sync_quarantine ADD COLUMN body jsonb;
    """)
    if _has_rows():
        _triggers(enable=False)
        _convert(seal=False)
        _triggers(enable=True)
    run_sql("""
    ALTER TABLE sync_conflicts DROP COLUMN mutation_enc;
    ALTER TABLE sync_quarantine DROP COLUMN body_enc, ALTER COLUMN body SET NOT NULL;
    """)
