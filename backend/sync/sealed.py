"""Personal numbers in what sync keeps and sends: sealed at rest (backend/crypto.py), opened only
where a value is sent to a tablet or shown to a reviewer.

Conflict values keep their field names, with identity, birth-certificate and phone numbers sealed in
place (`{"phone": {"sealed": "<base64>"}}`): a reviewer's SQL still sees which fields clashed. What
a tablet sent as it was (a held edit, a quarantined body) is sealed whole: its text is the tablet's
and may hold a number anywhere. The ledger's body hashes are keyed, since a plain hash of a mutation
whose other fields are known (ids, the person's birth date) gives its number away to a few thousand
guesses.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from backend import crypto

# Fields of records, conflicts and record_changes that hold a number, and the kind it is sealed as.
SEALED_FIELDS: dict[str, str] = {
    "id_number": crypto.ID_NUMBER,
    "birth_cert_no": crypto.BIRTH_CERT,
    "phone": crypto.PHONE,
}
# The sealed columns of persons and households, and the field each one is on the wire.
SEALED_COLUMNS: dict[str, tuple[str, str]] = {
    "id_number_enc": ("id_number", crypto.ID_NUMBER),
    "birth_cert_enc": ("birth_cert_no", crypto.BIRTH_CERT),
    "phone_enc": ("phone", crypto.PHONE),
}
# Blob kinds (the associated data of a sealed blob: one cannot stand in for another).
HELD_MUTATION = "sync_held_mutation"  # sync_conflicts.mutation_enc
QUARANTINED_BODY = "sync_quarantined_body"  # sync_quarantine.body_enc
# Keyed digests of a mutation's canonical bytes (sync_mutations.body_hash).
MUTATION_DIGEST = "sync_mutation_digest"

_json = msgspec.json.Encoder()


def seal_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A conflict's values with every number sealed in place (None stays None)."""
    keyring = crypto.keys()
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = SEALED_FIELDS.get(name)
        if kind is None or value is None:
            out[name] = value
        else:
            out[name] = {"sealed": base64.b64encode(keyring.seal_bytes(kind, str(value).encode())).decode()}
    return out


def open_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The clear values of `seal_values`."""
    keyring = crypto.keys()
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = SEALED_FIELDS.get(name)
        if kind is not None and isinstance(value, dict) and "sealed" in value:
            out[name] = keyring.open_bytes(kind, base64.b64decode(value["sealed"])).decode()
        else:
            out[name] = value
    return out


def seal_document(kind: str, value: Any) -> bytes:
    """A JSON document (as a jsonb column would have held it) sealed whole."""
    return crypto.keys().seal_bytes(kind, _json.encode(msgspec.to_builtins(value)))


def open_document(kind: str, sealed: bytes | None) -> Any:
    return None if sealed is None else msgspec.json.decode(crypto.keys().open_bytes(kind, sealed))


def open_change(field: str, text: str | None) -> str | None:
    """A value as record_changes keeps it: base64 of the sealed value for a number's field."""
    kind = SEALED_FIELDS.get(field)
    if kind is None or text is None:
        return text
    return crypto.keys().open(kind, base64.b64decode(text))


def mutation_digest(canonical: bytes) -> bytes:
    """The ledger's hash of a mutation: the blind index of its SHA-256 (so that a plain digest,
    kept before, converts without the body)."""
    return keyed_digest(hashlib.sha256(canonical).digest())


def keyed_digest(sha256: bytes) -> bytes:
    digest = crypto.keys().index(MUTATION_DIGEST, sha256.hex())
    assert digest is not None
    return digest


@functools.lru_cache(maxsize=64)
def _sealed_positions(columns: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((column, *SEALED_COLUMNS[column]) for column in columns if column in SEALED_COLUMNS)


def opened(columns: tuple[str, ...], values: Any) -> dict[str, Any]:
    """A row (asyncpg record, or values in `columns` order) as a dict, its sealed columns opened
    under their field names (`phone_enc` → `phone`)."""
    row = dict(zip(columns, values, strict=True))
    sealed = _sealed_positions(columns)
    if sealed:
        keyring = crypto.keys()
        for column, name, kind in sealed:
            value = row.pop(column)
            row[name] = None if value is None else keyring.open_bytes(kind, value).decode()
    return row


def opened_record(record: Any) -> dict[str, Any]:
    """`opened` for one asyncpg record."""
    return opened(tuple(record.keys()), record.values())
