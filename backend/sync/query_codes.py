"""The server's side of query codes (SPEC §2, PROTOCOL.md "Query codes"): keys and stored hashes.

A tablet enrolling offline makes the code itself, but never holds the server's key (with it, every
household's server-derived code could be computed). Each tablet gets its own key, derived one-way
from the server key and its device id (`device_key`), and hashes its code with it
(`mobile_sync_protocol.query_codes.query_code_hash`). On receipt the server re-keys that hash with its
own key (`rekey`) and stores the result with the device id, so:

- a database leak alone gives nothing to brute-force offline (every stored hash needs the server key);
- a stolen tablet's key opens only hashes made under that key, and the stored ones are re-keyed;
- the server can check a code a resident types (`stored_hash`, `query_code_matches`) but never print a
  tablet's code again: receipts print the codes the server derived itself, the tablet prints its own.

The pure functions (alphabet, the server's derived code, the keyed hash, a typed code's normal form)
are in mobile_sync_protocol/query_codes.py, shared with the tablets.
"""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID

from backend.db import Connection, load_queries
from mobile_sync_protocol.query_codes import query_code_hash

Q = load_queries("backend.sync")


def device_key(server_key: bytes, device_id: UUID) -> bytes:
    """The tablet's query-code key: HMAC(server key, "canbao-query-code-device:" + the device id's 16 bytes)."""
    return hmac.new(server_key, b"canbao-query-code-device:" + device_id.bytes, hashlib.sha256).digest()


def rekey(server_key: bytes, tablet_hash: bytes) -> bytes:
    """What is stored for a tablet's code: its hash keyed again with the server key."""
    return hmac.new(server_key, b"canbao-query-code-rekey:" + tablet_hash, hashlib.sha256).digest()


_NO_DEVICE = UUID(int=0)


def stored_hash(server_key: bytes, household_id: UUID, year: int, code: str, device_id: UUID | None) -> bytes:
    """What the database holds for `code` if it is the household's code for the year: the hash of a
    code the server derived (`device_id` None), or a tablet's hash re-keyed. Both are computed every
    time, so a code's origin does not show in the time an answer takes."""
    server = query_code_hash(server_key, household_id, year, code)
    tablet_key = device_key(server_key, device_id or _NO_DEVICE)
    tablet = rekey(server_key, query_code_hash(tablet_key, household_id, year, code))
    return server if device_id is None else tablet


async def take_tablet_code(
    conn: Connection, server_key: bytes, household_id: UUID, year: int, device_id: UUID, tablet_hash: bytes
) -> bool:
    """Makes the tablet's code the household's code for the year. Called right after an enrolment
    that created the household's (server-derived, never shown) code in the same transaction;
    False when the household already had a code before."""
    stored = rekey(server_key, tablet_hash)
    done = await conn.execute(Q["take_tablet_query_code"], household_id, year, stored, device_id)
    return done == "UPDATE 1"


async def query_code_matches(conn: Connection, server_key: bytes, household_id: UUID, year: int, code: str) -> bool:
    """Whether `code` is the household's query code for the year, whoever made it (for resident log-in)."""
    row = await conn.fetchrow(Q["query_code_row"], household_id, year)
    if row is None:
        return False
    expected = stored_hash(server_key, household_id, year, code, row["device_id"])
    return hmac.compare_digest(bytes(row["code_hash"]), expected)
