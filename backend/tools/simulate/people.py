"""Made-up residents for the simulated tablets and back office: names, phones and valid ID numbers
that no demo resident has, drawn from the world's dice so that a run repeats from its seed."""

from __future__ import annotations

import random
from datetime import date, timedelta
from uuid import UUID

from mobile_sync_protocol import messages as m
from mobile_sync_protocol.rules.identity import check_character

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
# Given names, one or two characters each (a separator keeps the list on two lines).
GIVEN = tuple(
    "伟|芳|娜|敏|静|丽|强|磊|军|洋|勇|艳|杰|娟|涛|明|超|秀英|桂英|建华|玉兰|"  # noqa: SIM905
    "志强|海燕|小红|国平|春梅|晓东|丽华|建国|秀兰".split("|")
)


class People:
    """Fresh, valid resident ID numbers (area codes 330190–330199, which the demo population does not
    use), never the same twice in one world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def name(self) -> str:
        return self.rng.choice(SURNAMES) + self.rng.choice(GIVEN)

    def uuid(self) -> UUID:
        """From the world's dice, so that a run is repeated exactly from its seed."""
        return UUID(int=self.rng.getrandbits(128), version=4)

    def birth_date(self, adult: bool) -> date:
        first, last = (date(1940, 1, 1), date(2004, 12, 31)) if adult else (date(2005, 1, 1), date(2024, 12, 31))
        return first + timedelta(days=self.rng.randrange((last - first).days))

    def id_number(self, born: date, sex: str) -> str:
        while True:
            order = self.rng.randrange(500) * 2 + (1 if sex == "male" else 0)  # odd: male
            first17 = f"33019{self.rng.randrange(10)}{born:%Y%m%d}{order:03d}"
            number = first17 + check_character(first17)
            if number not in self.used:
                self.used.add(number)
                return number

    def member(self, relation: m.Relation, *, adult: bool = True, sex: str | None = None) -> m.NewMember:
        sex = sex or self.rng.choice(("male", "female"))
        born = self.birth_date(adult)
        phone = self.phone() if adult and self.rng.random() < 0.6 else None
        return m.NewMember(
            person_id=self.uuid(), name=self.name(), relation=relation, id_number=self.id_number(born, sex), phone=phone
        )

    def phone(self) -> str:
        return "1" + self.rng.choice("3578") + "".join(self.rng.choice("0123456789") for _ in range(9))
