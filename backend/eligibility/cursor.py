"""Page cursors over persons, as the pages order them: by the blind index of their numbers.

A cursor travels in URLs and so in access logs: it is the hash, base64url, never a number.
"""

from __future__ import annotations

import base64
import binascii

from backend.errors import InvalidInput
from backend.i18n import _

HASH_BYTES = 32  # HMAC-SHA256 and HMAC-SM3 alike
MAX_LENGTH = 43  # base64url of 32 bytes, unpadded: what a query parameter may hold


def encode(id_number_hash: bytes) -> str:
    return base64.urlsafe_b64encode(id_number_hash).rstrip(b"=").decode()


def decode(cursor: str, field: str = "after") -> bytes:
    """The hash a cursor of `encode` holds; InvalidInput for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != HASH_BYTES or encode(raw) != cursor:
        raise InvalidInput(field, _("is not a cursor of this list (use the page's next_cursor)"))
    return raw
