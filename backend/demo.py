"""`canbao demo seed`: one district, two townships, villages, one user per role. Idempotent."""

from __future__ import annotations

import msgspec

from backend.admin import service as admin
from backend.auth.actor import Role
from backend.auth.passwords import Passwords
from backend.db import Connection
from backend.divisions import service as divisions
from backend.divisions.service import Division

DEMO_PASSWORD = "canbao-demo-2026"  # noqa: S105 (demo data only; printed by the command)

DISTRICT = "330106000000"
TOWNSHIP_A = "330106001000"
TOWNSHIP_B = "330106002000"

DIVISIONS = [
    ("330000000000", None, "province", "浙江省"),
    ("330100000000", "330000000000", "city", "杭州市"),
    (DISTRICT, "330100000000", "district", "西湖区"),
    (TOWNSHIP_A, DISTRICT, "township", "北山街道"),
    (TOWNSHIP_B, DISTRICT, "township", "双浦镇"),
    ("330106001001", TOWNSHIP_A, "village", "北山社区"),
    ("330106001002", TOWNSHIP_A, "village", "曙光社区"),
    ("330106001201", TOWNSHIP_A, "village", "玉泉村"),
    ("330106002201", TOWNSHIP_B, "village", "双浦村"),
    ("330106002202", TOWNSHIP_B, "village", "袁浦村"),
    ("330106002203", TOWNSHIP_B, "village", "周浦村"),
]

USERS = [
    ("admin", Role.DISTRICT_ADMIN, DISTRICT, "区医保局管理员"),
    ("civil", Role.CIVIL_AFFAIRS, DISTRICT, "区民政局"),
    ("staff_a", Role.TOWNSHIP_STAFF, TOWNSHIP_A, "北山街道经办员"),
    ("reviewer_a", Role.TOWNSHIP_REVIEWER, TOWNSHIP_A, "北山街道审核员"),
    ("staff_b", Role.TOWNSHIP_STAFF, TOWNSHIP_B, "双浦镇经办员"),
    ("reviewer_b", Role.TOWNSHIP_REVIEWER, TOWNSHIP_B, "双浦镇审核员"),
]


class SeededUser(msgspec.Struct, frozen=True):
    username: str
    role: str
    division_code: str
    created: bool


async def seed(conn: Connection, passwords: Passwords) -> list[SeededUser]:
    async with conn.transaction():
        await divisions.import_divisions(
            conn,
            None,
            [Division(code=c, parent_code=p, level=lvl, name=n) for c, p, lvl, n in DIVISIONS],  # type: ignore[arg-type]
        )
        seeded = []
        for username, role, division_code, full_name in USERS:
            exists = await conn.fetchval(admin.Q["get_user_by_username"], username)
            if not exists:
                await admin.create_user(
                    conn,
                    None,
                    passwords,
                    admin.UserCreate(
                        username=username,
                        password=DEMO_PASSWORD,
                        role=role,
                        division_code=division_code,
                        full_name=full_name,
                    ),
                )
            seeded.append(SeededUser(username, role.value, division_code, created=not exists))
        return seeded
