"""Baseline of sync_offline_month.py. /push: the tablet's same pages (MessagePack), each change written with plain
SQL (baseline_sync_offline_month.sql) into schema `bare`, the benchmark's copy of the tables as the month left
them (no triggers, foreign keys, ledger, rules, conflicts or audit); a run of one kind by executemany, one
transaction a page; numbers and phones sealed and indexed as ours stores them. /pull: a page of the township's
rows changed since the tablet went offline, by keyset on sync_changes, as JSON. Env: DATABASE_URL, CANBAO_KEY_FILE."""

import itertools
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, post
from litestar.datastructures import State

from backend.crypto import BIRTH_CERT, ID_NUMBER, PHONE, read_key_file
from mobile_sync_protocol import messages as m

KEYS, DECODE = read_key_file(Path(os.environ["CANBAO_KEY_FILE"])), msgspec.msgpack.Decoder(m.AnyMutation)
SQL = (Path(__file__).parent / "baseline_sync_offline_month.sql").read_text()
_parts = re.split(r"^-- name: (\w+)\n", SQL, flags=re.M)
Q = dict(zip(_parts[1::2], (s.strip() for s in _parts[2::2]), strict=True))


def sealed(kind: str, v: str | None) -> tuple[bytes | None, bytes | None]:
    return (KEYS.index(kind, v), KEYS.seal(kind, v)) if v else (None, None)


def person(x: m.NewMember) -> tuple[Any, ...]:
    n = x.id_number or "0" * 18
    sex = x.sex or ("male" if int(n[16]) % 2 else "female")
    born = x.birth_date or date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
    return (x.person_id, *sealed(ID_NUMBER, x.id_number), *sealed(BIRTH_CERT, x.birth_cert_no), x.name, sex, born,
            *sealed(PHONE, x.phone))  # fmt: skip


# A mutation's kind → the statements it runs, each with its argument rows: f(mutation, (block, collector, device)).
STEPS: dict[str, list[tuple[str, Any]]] = {
    "household.create": [
        ("household", lambda u, b: [(u.household_id, u.village_code, u.household_no, u.address,
                                     *sealed(PHONE, u.phone), u.members[0].person_id)]),
        ("person", lambda u, b: [person(x) for x in u.members]),
        ("join", lambda u, b: [(x.person_id, u.household_id, x.relation) for x in u.members]),
    ],
    "member.create": [("person", lambda u, b: [person(u.member)]),
                      ("join", lambda u, b: [(u.member.person_id, u.household_id, u.member.relation)])],
    "household.update": [("household_update", lambda u, b: [(u.household_id, u.household_no, u.address,
                                                             *sealed(PHONE, u.phone))])],
    "member.update": [
        ("person_update", lambda u, b: [(u.person_id, u.name, *sealed(PHONE, u.phone))]),
        ("relation", lambda u, b: [(u.person_id, u.household_id, u.relation, u.former_head_relation or "other")]
                                  * bool(u.relation)),
    ],
    "member.move": [("move", lambda u, b: [(u.person_id, u.to_household_id, u.relation)])],
    "member.remove": [("leave", lambda u, b: [(u.person_id, u.reason)])],
    "household.dissolve": [("dissolve", lambda u, b: [(u.household_id,)]),
                           ("dissolve_members", lambda u, b: [(u.household_id,)])],
    "enrollment.create": [("enrol", lambda u, b: [(p, u.household_id, u.coverage_year) for p in u.person_ids])],
    "enrollment.cancel": [("cancel", lambda u, b: [(u.person_id, u.coverage_year, u.reason)])],
    "payment.record": [
        ("payment", lambda u, b: [(u.payment_id, u.household_id, u.coverage_year, u.person_ids, u.amount_fen,
                                   u.method, u.kind, u.receipt_no, *b, u.collected_at)]),
        ("paid", lambda u, b: [(u.person_ids, u.coverage_year)]),
    ],
    "payment.void": [("void", lambda u, b: [(u.payment_id,)])],
}  # fmt: skip


@post("/push", status_code=200)
async def push(request: Request[Any, Any, Any], state: State) -> dict[str, int]:
    env = msgspec.msgpack.decode(await request.body(), type=m.PushRequest)
    async with state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT id, collector_id FROM receipt_blocks WHERE device_id = $1", env.device_id)
        block = (*row, env.device_id)
        for tag, run in itertools.groupby((DECODE.decode(r) for r in env.mutations), lambda u: u.__struct_config__.tag):
            batch = list(run)
            for name, rows in STEPS[tag]:
                if args := [a for u in batch for a in rows(u, block)]:
                    await conn.executemany(Q[name], args)
    return {"mutations": len(env.mutations)}


@post("/pull", status_code=200)
async def pull(data: dict[str, Any], state: State) -> Response[bytes]:
    rows = await state.pool.fetch(Q["pull"], data["township"], data["after"], data["limit"])
    last = rows[-1]["id"] if rows else data["after"]
    body = b'{"after":%d,"rows":[%s]}' % (last, b",".join(r["row"].encode() for r in rows if r["row"] is not None))
    return Response(body, media_type="application/json")


async def start(app: Litestar) -> None:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size)


app = Litestar([push, pull], on_startup=[start], request_max_body_size=64 * 1024 * 1024)
