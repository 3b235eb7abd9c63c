"""Pure rules of 12-digit statistical division codes (统计用区划代码)."""

from __future__ import annotations

import re

CODE = re.compile(r"^[0-9]{12}$")


def level_of(code: str) -> str:
    """The level a code names, read from which of its digit groups are non-zero."""
    if code[9:] != "000":
        return "village"
    if code[6:9] != "000":
        return "township"
    if code[4:6] != "00":
        return "district"
    if code[2:4] != "00":
        return "city"
    return "province"


def parent_of(code: str) -> str | None:
    """The code of the division directly above, by the code's structure."""
    level = level_of(code)
    if level == "village":
        return code[:9] + "000"
    if level == "township":
        return code[:6] + "000000"
    if level == "district":
        return code[:4] + "00000000"
    if level == "city":
        return code[:2] + "0000000000"
    return None


def normalise(code: str) -> str:
    """Accepts the 6-digit GB/T 2260 form and the 9-digit township form, padded to 12."""
    code = code.strip()
    if re.fullmatch(r"[0-9]{6}|[0-9]{9}", code):
        code = code.ljust(12, "0")
    return code
