"""The embedded server's log never holds a value a statement wrote: an error's DETAIL (`Key (…)=(…)`,
`Failing row contains (…)`) and the failing statement's text are left out."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from backend.embedded import EmbeddedPostgres
from tests.processes import data_dir

SECRET = "110105199003071234"  # shaped like an ID number: what must never reach the log
LITERAL = "13800138000"  # a phone number written into a statement's text


def test_errors_leave_no_written_value_in_the_embedded_server_log() -> None:
    with data_dir() as folder:
        pg = EmbeddedPostgres(folder)
        try:
            pg.start()
            db = pg.prepare()
            details = asyncio.run(_provoke_errors(db.app_dsn))
        finally:
            pg.release()
        log = (folder / "pgdata" / "log").read_text(errors="replace")
    # The client was told the value (the server knew it); the errors were logged, without it.
    assert any(SECRET in d for d in details), details
    assert "duplicate key value violates unique constraint" in log
    assert "violates check constraint" in log
    assert SECRET not in log
    assert LITERAL not in log
    assert "Failing row contains" not in log


async def _provoke_errors(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    details: list[str] = []
    try:
        await conn.execute("CREATE TEMP TABLE people (id_number text UNIQUE, phone text CHECK (length(phone) < 5))")
        await conn.execute("INSERT INTO people (id_number) VALUES ($1)", SECRET)
        for statement, args in [
            ("INSERT INTO people (id_number) VALUES ($1)", (SECRET,)),  # a bound parameter
            (f"INSERT INTO people (id_number) VALUES ('{SECRET}')", ()),  # the value in the statement's text
            (f"INSERT INTO people (id_number, phone) VALUES ('x', '{LITERAL}')", ()),
            ("INSERT INTO people (id_number, phone) VALUES ($1, $2)", ("y", LITERAL)),
        ]:
            with pytest.raises(asyncpg.IntegrityConstraintViolationError) as caught:
                await conn.execute(statement, *args)
            details.append(str(caught.value.as_dict().get("detail")))
    finally:
        await conn.close()
    return details
