"""Alembic migrations of Canbao's schema, written as raw SQL."""

from __future__ import annotations

from typing import Any

from alembic import context, op
from sqlalchemy.util import await_only


def run_sql(sql: str) -> None:
    """Runs a script of several statements through asyncpg's simple-query protocol.

    SQLAlchemy's asyncpg dialect prepares each statement, and a prepared statement holds one
    command; migrations are whole scripts (functions with `$$` bodies included).
    """
    await_only(_driver().execute(sql))


def edit_function(signature: str, pairs: list[tuple[str, str]]) -> None:
    """Defines function `signature` (e.g. 'coverage_refresh(uuid[])') again as the database holds it,
    with each (found, wanted) of `pairs` replaced: a migration that changes a few lines of a long
    function says only those, and fails unless each `found` is there exactly once (the function is
    not as the migration that wrote it left it)."""
    text = "def"
    for found, wanted in pairs:
        text = f"replace({text}, {_literal(found)}, {_literal(wanted)})"
    # Each part found exactly once (`replace` would change every occurrence).
    missing = " OR ".join(
        f"(length(def) - length(replace(def, {_literal(found)}, ''))) <> length({_literal(found)})"
        for found, _ in pairs
    )
    run_sql(f"""
    DO $edit$
    DECLARE
        def text := pg_get_functiondef({_literal(signature)}::regprocedure);
    BEGIN
        IF {missing} THEN
            RAISE EXCEPTION '% is not as expected: a part to edit is missing or found twice', {_literal(signature)};
        END IF;
        EXECUTE {text};
    END
    $edit$;
    """)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _driver() -> Any:
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None
    return driver_connection


def fetch(sql: str, *args: Any) -> list[Any]:
    """Rows of one statement with parameters, on the migration's asyncpg connection."""
    rows: list[Any] = await_only(_driver().fetch(sql, *args))
    return rows


def execute(sql: str, *args: Any) -> None:
    """One statement with parameters (a batch of a data migration)."""
    await_only(_driver().execute(sql, *args))


def keyring(revision: str, what: str) -> Any:
    """The keys `canbao migrate` was given, for a migration that seals rows stored in clear."""
    keys = context.config.attributes.get("keyring")
    if keys is None:
        raise SystemExit(
            f"migration {revision} seals {what} and needs the keys: "
            "run it with `canbao migrate` (which reads CANBAO_KEY_FILE or the data folder's keys.json)"
        )
    return keys
