"""Baseline of sync_offline_month.py: /push runs the same pages' changes as the plain SQL of the .sql beside, on
schema `bare` (no triggers, keys, ledger, rules, audit), a run of a kind by executemany; /pull: a page of changes."""

import itertools
import os
from datetime import date
from pathlib import Path

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, post

from backend.crypto import BIRTH_CERT, ID_NUMBER, PHONE, read_key_file
from mobile_sync_protocol import messages as m

KEYS, DECODE, POOL = read_key_file(Path(os.environ["CANBAO_KEY_FILE"])), msgspec.msgpack.Decoder(m.AnyMutation), []
Q = dict(s.split("\n", 1) for s in Path(__file__.replace("_app.py", ".sql")).read_text().split("-- name: ")[1:])
S = lambda kind, v: (KEYS.index(kind, v), KEYS.seal(kind, v)) if v else (None, None)  # noqa: E731
J = lambda u, x: (n := x.id_number or "0" * 18) and [("person", (x.person_id, *S(ID_NUMBER, x.id_number),  # noqa: E731
    *S(BIRTH_CERT, x.birth_cert_no), x.name, x.sex or ("male" if int(n[16]) % 2 else "female"), x.birth_date
    or date(int(n[6:10]), int(n[10:12]), int(n[12:14])), *S(PHONE, x.phone))), ("join", (x.person_id, u.household_id,
    x.relation))]  # a new member and membership  # fmt: skip
STEPS = {  # a mutation → its statements and arguments (b: the receipt block, collector, device)
    "household.create": lambda u, b: [("household", (u.household_id, u.village_code, u.household_no, u.address,
        *S(PHONE, u.phone), u.members[0].person_id)), *(s for x in u.members for s in J(u, x))],
    "member.create": lambda u, b: J(u, u.member),
    "household.update": lambda u, b: [("household_update", (u.household_id, u.household_no, u.address,
        *S(PHONE, u.phone)))],
    "member.update": lambda u, b: [("person_update", (u.person_id, u.name, *S(PHONE, u.phone))), *[("relation", (
        u.person_id, u.household_id, u.relation, u.former_head_relation or "other"))] * bool(u.relation)],
    "member.move": lambda u, b: [("move", (u.person_id, u.to_household_id, u.relation))],
    "member.remove": lambda u, b: [("leave", (u.person_id, u.reason))],
    "household.dissolve": lambda u, b: [("dissolve", (u.household_id,)), ("dissolve_members", (u.household_id,))],
    "enrollment.create": lambda u, b: [("enrol", (p, u.household_id, u.coverage_year)) for p in u.person_ids],
    "enrollment.cancel": lambda u, b: [("cancel", (u.person_id, u.coverage_year, u.reason))],
    "payment.record": lambda u, b: [("payment", (u.payment_id, u.household_id, u.coverage_year, u.person_ids,
        u.amount_fen, u.method, u.kind, u.receipt_no, *b, u.collected_at)), ("paid", (u.person_ids, u.coverage_year))],
    "payment.void": lambda u, b: [("void", (u.payment_id,))],
}  # fmt: skip


@post("/push", status_code=200)
async def push(request: Request) -> dict[str, int]:
    env = msgspec.msgpack.decode(await request.body(), type=m.PushRequest)
    async with POOL[0].acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT id, collector_id FROM receipt_blocks WHERE device_id = $1", env.device_id)
        for tag, run in itertools.groupby((DECODE.decode(r) for r in env.mutations), lambda u: u.__struct_config__.tag):
            steps = [s for u in run for s in STEPS[tag](u, (*row, env.device_id))]
            for name in dict.fromkeys(name for name, _args in steps):  # a kind's statements, in their order
                await conn.executemany(Q[name], [args for n, args in steps if n == name])
    return {"mutations": len(env.mutations)}


@post("/pull", status_code=200)
async def pull(data: dict) -> Response[bytes]:
    rows = await POOL[0].fetch(Q["pull"], data["township"], data["after"], data["limit"])
    page = b",".join(r["row"].encode() for r in rows if r["row"] is not None)
    return Response(b'{"after":%d,"rows":[%s]}' % (rows[-1]["id"] if rows else data["after"], page))


async def start() -> None:
    size = int(os.environ.get("CANBAO_POOL_MAX_SIZE", "10"))
    POOL.append(await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size, max_size=size))


app = Litestar([push, pull], on_startup=[start], request_max_body_size=64 * 1024 * 1024)
