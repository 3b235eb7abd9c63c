"""The amount of money a payment, a refund or a remittance may name."""

from __future__ import annotations

from typing import Annotated

import msgspec

Fen = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
