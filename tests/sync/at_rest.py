"""Where a number rests in clear: every table of the database searched for it, as text, as the hex
PostgreSQL shows bytes in, and as base64 (whatever bytes surround it)."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import asyncpg


def base64_cores(needle: bytes) -> list[str]:
    """The base64 characters that any bytes holding `needle` encode to, for its three alignments:
    the characters made of the needle's bits alone."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + needle).decode()
        first = -(-8 * offset // 6)  # the first character that starts inside the needle
        last = (8 * (offset + len(needle))) // 6  # one past the last that ends inside it
        cores.append(encoded[first:last])
    return cores


def forms(number: str) -> list[str]:
    """How a number could show in a row's text: as it is, as hex bytes, or inside base64."""
    raw = number.encode()
    return [number, raw.hex(), *base64_cores(raw)]


async def clear_copies(conn: asyncpg.Connection, numbers: Iterable[str]) -> list[str]:  # type: ignore[type-arg]
    """`table: number (form)` for every table of the schema whose rows show one of `numbers`."""
    tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    found = []
    for table in sorted(tables):
        for number in numbers:
            for form in forms(number):
                # Hex and base64 are compared as PostgreSQL writes them: hex in lower case.
                hit = await conn.fetchval(f"SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0", form)
                if hit:
                    found.append(f"{table}: {number} ({'clear' if form == number else form})")
    return found
