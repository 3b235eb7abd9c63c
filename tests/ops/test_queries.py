"""Every named query of every package prepares against the migrated schema."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

import backend
from backend.db import load_queries

ROOT = Path(backend.__file__).parent
# Files whose queries need a table made at run time are prepared by their own tests.
PREPARED_ELSEWHERE = {"staging.sql", "history.sql", "demo.sql", "invariants.sql"}
FILES = sorted(
    (".".join(("backend", *p.parent.relative_to(ROOT).parts)), p.name)
    for p in ROOT.rglob("*.sql")
    if p.name not in PREPARED_ELSEWHERE
)


def test_queries_files_are_found() -> None:
    assert ("backend.auth", "queries.sql") in FILES
    assert ("backend", "idempotency.sql") in FILES


@pytest.mark.parametrize(("package", "filename"), FILES)
async def test_every_query_prepares(conn: asyncpg.Connection, package: str, filename: str) -> None:  # type: ignore[type-arg]
    queries = load_queries(package, filename)
    assert queries
    for name, sql in queries.items():
        try:
            await conn.prepare(sql)
        except asyncpg.PostgresError as exc:
            pytest.fail(f"{package}:{name}: {exc}")
