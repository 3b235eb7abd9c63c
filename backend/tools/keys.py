"""`canbao keys rotate`: a new data key, and every sealed value re-sealed under it, in batches.

The key file gets a new current data key first (the old ones stay in it, so everything stays
readable throughout); then each sealed column is walked in batches of rows whose value is under
another key, each batch in a transaction of its own, so the service keeps running and an
interrupted rotation resumes where it stopped (`--resume` re-seals without adding a key; run it
once more after restarting the servers, which seal under the key they started with). The blind
index key does not change: rows stay findable during and after the rotation. Append-only tables
(list entries) are re-sealed with their guard trigger disabled inside the batch's transaction, so no
other session ever sees it off; that needs the owner role, as migrations do.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend import crypto
from backend.audit.service import record
from backend.crypto import BIRTH_CERT, ID_NUMBER, PHONE, Keyring
from backend.db import Connection
from backend.sync import sealed

BATCH = 2_000


@dataclass(frozen=True)
class SealedColumn:
    table: str
    key: str  # a unique column that orders the walk
    column: str
    kind: str
    base64_text: bool = False  # record_changes keeps sealed values as base64 text
    where: str = "true"  # rows of the table that hold such a value at all
    guard: str | None = None  # the append-only trigger to lift inside the batch


# Every column that holds a sealed value (migration 0015 and the blobs after it).
SEALED: tuple[SealedColumn, ...] = (
    SealedColumn("persons", "id", "id_number_enc", ID_NUMBER),
    SealedColumn("persons", "id", "birth_cert_enc", BIRTH_CERT),
    SealedColumn("persons", "id", "phone_enc", PHONE),
    SealedColumn("households", "id", "phone_enc", PHONE),
    SealedColumn("eligibility_claims", "id", "id_number_enc", ID_NUMBER),
    SealedColumn("enrollment_history", "ctid", "id_number_enc", ID_NUMBER),
    SealedColumn("list_entries", "ctid", "id_number_enc", ID_NUMBER, guard="list_entries_append_only"),
    SealedColumn("record_changes", "id", "old_value", ID_NUMBER, True, "field = 'id_number'"),
    SealedColumn("record_changes", "id", "new_value", ID_NUMBER, True, "field = 'id_number'"),
    SealedColumn("record_changes", "id", "old_value", BIRTH_CERT, True, "field = 'birth_cert_no'"),
    SealedColumn("record_changes", "id", "new_value", BIRTH_CERT, True, "field = 'birth_cert_no'"),
    SealedColumn("record_changes", "id", "old_value", PHONE, True, "field = 'phone'"),
    SealedColumn("record_changes", "id", "new_value", PHONE, True, "field = 'phone'"),
    SealedColumn("sync_quarantine", "id", "body_enc", sealed.QUARANTINED_BODY),
    SealedColumn("sync_conflicts", "id", "mutation_enc", sealed.HELD_MUTATION),
)
# Not re-sealed, and why the old data keys stay in the key file: numbers sealed inside a conflict's
# JSON values (kept until the conflict is settled), and what expires on its own — idempotent answers
# (CANBAO_IDEMPOTENCY_RETENTION_DAYS), job uploads and outputs (with their job).


@dataclass
class Rotated:
    key_id: int
    resealed: int


def _header(keyring: Keyring) -> bytes:
    return crypto.HEADER.pack(crypto.FORMAT, keyring.current)


async def reseal(conn: Connection, keyring: Keyring, progress: Callable[[str, int], None] | None = None) -> int:
    """Re-seals every value not under the current data key; returns how many were re-sealed."""
    header = _header(keyring)
    total = 0
    for spec in SEALED:
        value = f"decode({spec.column}, 'base64')" if spec.base64_text else spec.column
        stale = f"{spec.where} AND {spec.column} IS NOT NULL AND substring({value} FROM 1 FOR 3) <> $1"
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    f"SELECT {spec.key} AS k, {spec.column} AS v FROM {spec.table} WHERE {stale} LIMIT {BATCH}"
                    " FOR UPDATE",
                    header,
                )
                if not rows:
                    break
                resealed = [_reseal(keyring, spec, row["v"]) for row in rows]
                if spec.guard:
                    await conn.execute(f"ALTER TABLE {spec.table} DISABLE TRIGGER {spec.guard}")
                key_type = "tid" if spec.key == "ctid" else "bigint" if spec.table == "record_changes" else "uuid"
                value_type = "text" if spec.base64_text else "bytea"
                await conn.execute(
                    f"UPDATE {spec.table} t SET {spec.column} = v.value"
                    f" FROM unnest($1::{key_type}[], $2::{value_type}[]) AS v (k, value) WHERE t.{spec.key} = v.k",
                    [row["k"] for row in rows],
                    resealed,
                )
                if spec.guard:
                    await conn.execute(f"ALTER TABLE {spec.table} ENABLE TRIGGER {spec.guard}")
            total += len(rows)
            if progress is not None:
                progress(f"{spec.table}.{spec.column}", len(rows))
    return total


def _reseal(keyring: Keyring, spec: SealedColumn, value: Any) -> Any:
    if spec.base64_text:
        sealed = keyring.seal_bytes(spec.kind, keyring.open_bytes(spec.kind, base64.b64decode(value)))
        return base64.b64encode(sealed).decode()
    return keyring.seal_bytes(spec.kind, keyring.open_bytes(spec.kind, value))


async def rotate(conn: Connection, keyring: Keyring, progress: Callable[[str, int], None] | None = None) -> Rotated:
    """Re-seals under `keyring`'s current key (already written to the key file and registered),
    audited as one row with the count."""
    resealed = await reseal(conn, keyring, progress)
    await record(conn, None, "rotate", "data_key", str(keyring.current), summary={"resealed": resealed})
    return Rotated(key_id=keyring.current, resealed=resealed)
