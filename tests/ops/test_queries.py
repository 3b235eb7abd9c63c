"""Every named query of every package prepares against the migrated schema."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

import backend
from backend.db import load_queries

PACKAGES = sorted(
    "backend." + str(p.parent.relative_to(Path(backend.__file__).parent)).replace("/", ".")
    for p in Path(backend.__file__).parent.rglob("queries.sql")
)


def test_queries_files_are_found() -> None:
    assert "backend.auth" in PACKAGES


@pytest.mark.parametrize("package", PACKAGES)
async def test_every_query_prepares(conn: asyncpg.Connection, package: str) -> None:  # type: ignore[type-arg]
    queries = load_queries(package)
    assert queries
    for name, sql in queries.items():
        try:
            await conn.prepare(sql)
        except asyncpg.PostgresError as exc:
            pytest.fail(f"{package}:{name}: {exc}")
