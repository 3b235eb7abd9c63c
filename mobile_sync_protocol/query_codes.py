"""Query codes (PROTOCOL.md "Query codes"): the pure functions, the same on a tablet and the server.

A tablet makes a random code (`new_query_code`) and sends only its keyed hash (`query_code_hash`,
under the tablet's own key). The server derives its own codes from its key (`derive_query_code`), so
a receipt can print them again, and keeps their hash under the same formula. What the server does
with keys and stored hashes is in backend/sync/query_codes.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from uuid import UUID

# Query codes avoid characters easily confused when read aloud or off a slip (0/O, 1/I/L); the
# server's own codes use the same alphabet and length.
QUERY_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
QUERY_CODE_LENGTH = 8


def new_query_code() -> str:
    """A fresh random query code (8 characters of QUERY_CODE_ALPHABET, about 39.6 bits)."""
    return "".join(secrets.choice(QUERY_CODE_ALPHABET) for _ in range(QUERY_CODE_LENGTH))


def query_code_hash(key: bytes, household_id: UUID, coverage_year: int, code: str) -> bytes:
    """HMAC-SHA256 under `key` of `"<household_id>:<coverage_year>:<CODE>"` (UUID in lower-case
    hyphenated form, code upper-cased): what `enrollment.create` carries, never the code itself."""
    return hmac.new(key, f"{household_id}:{coverage_year}:{code.upper()}".encode(), hashlib.sha256).digest()


def derive_query_code(key: bytes, household_id: UUID, year: int, generation: int = 1) -> str:
    """The server's query code for a household and year: derived from the server key, so a receipt
    can print it again while the database holds only its keyed hash. A new generation replaces a
    leaked code."""
    digest = hmac.new(key, f"query-code:{household_id}:{year}:{generation}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:12], "big")
    letters = []
    for _ in range(QUERY_CODE_LENGTH):
        number, index = divmod(number, len(QUERY_CODE_ALPHABET))
        letters.append(QUERY_CODE_ALPHABET[index])
    return "".join(letters)


def normal_query_code(code: str) -> str:
    """A code as typed (full-width characters, spaces, hyphens, lower case) in its printed form."""
    return "".join(unicodedata.normalize("NFKC", code).split()).replace("-", "").upper()
