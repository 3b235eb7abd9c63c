"""The fast path's attempts (`backend.sync.push._apply_chunk`) for any pattern of failures: every
mutation is answered once, in order; a mutation that fails alone is answered one by one (under its
own savepoint), and no other is until more than `RESUMES` have failed; and the attempts end.

The database is not what is tested here, the loop is: `_apply_all` is replaced by a model that
applies a chunk's slice as the real one does — runs of mutations written together as sets (only
past the first `plain` of the slice, as the real one forms them), each other mutation alone — and
fails the attempt at a failing unit, reporting its place and length in `reached` as the real one
does. Which failing unit an attempt reports is drawn (a held set is written at its flush, so it can
fail after singles placed behind it). The tests in test_push_sets*.py hold the real sets to the
same answers as one at a time; this one holds the loop that finds the failing mutation to its
promises under patterns nobody wrote by hand. (Dropping the step that goes on after the mutations
before a failed set are kept fails it; how much an attempt undoes is pinned by
test_push_sets.py::test_a_set_that_fails_keeps_what_came_before_it_in_its_sets.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.errors import Conflict
from backend.sync import push as push_module
from backend.sync.context import Context


class _Ledger:
    def mark(self) -> int:
        return 0

    def undo(self, mark: int) -> None:
        pass


class _Conn:
    def transaction(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


class _Model:
    """`_apply_all` over mutations numbered 0…n−1 (the chunk), with `sets` (start, length) written
    together where the slice holds two or more of them, `bad` failing alone and in any set, and
    `bad_sets` failing as sets only (each of their mutations applies alone)."""

    def __init__(self, sets: list[tuple[int, int]], bad: set[int], bad_sets: set[int], data: st.DataObject) -> None:
        self.sets, self.bad, self.bad_sets, self.data = sets, bad, bad_sets, data
        self.attempts = 0
        self.single_failures = 0  # attempts failed by one mutation alone: what RESUMES counts

    async def __call__(
        self,
        conn: Any,
        actor: Any,
        chunk: list[int],
        fmt: Any,
        ctx: Any,
        last_seq: int,
        ledger: Any,
        *,
        savepoint: bool,
        reached: list[int] | None = None,
        plain: int = 0,
    ) -> tuple[list[tuple[str, int]], int]:
        self.attempts += 1
        assert self.attempts <= 200, "the attempts do not end"
        if savepoint:  # one by one: each answered under its own savepoint, failing or not
            return [("alone", x) for x in chunk], last_seq + len(chunk)
        assert reached is not None
        start = chunk[0] if chunk else 0
        units: list[tuple[int, int]] = []
        in_sets: set[int] = set()
        for first, length in self.sets:
            low, high = max(first, start + max(plain, 0)), min(first + length, start + len(chunk))
            if high - low > 1:
                units.append((low, high - low))
                in_sets.update(range(low, high))
        units += [(x, 1) for x in chunk if x not in in_sets]
        failing = [
            (first, length)
            for first, length in units
            if any(x in self.bad for x in range(first, first + length)) or (length > 1 and first in self.bad_sets)
        ]
        if failing:
            first, length = self.data.draw(st.sampled_from(sorted(failing)))
            reached[:] = [first - start, length]
            self.single_failures += length == 1
            raise Conflict("refused")
        return [("fast", x) for x in chunk], last_seq + len(chunk)


@st.composite
def _patterns(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], set[int], set[int]]:
    n = draw(st.integers(1, 16))
    sets: list[tuple[int, int]] = []
    at = 0
    while at < n:
        length = draw(st.integers(1, min(5, n - at)))
        if length > 1:
            sets.append((at, length))
        at += length
    bad = draw(st.sets(st.integers(0, n - 1), max_size=5))
    bad_sets = draw(st.sets(st.sampled_from([first for first, _length in sets]), max_size=2)) if sets else set()
    return n, sets, bad, bad_sets


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_patterns(), data=st.data())
def test_every_mutation_is_answered_once_in_order_and_only_failures_one_by_one(
    pattern: tuple[int, list[tuple[int, int]], set[int], set[int]], data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, sets, bad, bad_sets = pattern
    model = _Model(sets, bad, bad_sets, data)
    monkeypatch.setattr(push_module, "_apply_all", model)
    ctx = Context(timezone="Asia/Shanghai", code_key=b"k" * 32, now=push_module.datetime(2026, 12, 2))
    chunk: Any = list(range(n))
    answers, last_seq = asyncio.run(push_module._apply_chunk(_Conn(), None, chunk, "json", ctx, 0, _Ledger()))  # type: ignore[arg-type]
    assert [x for _how, x in answers] == list(range(n)) and last_seq == n
    alone = {x for how, x in answers if how == "alone"}
    assert bad <= alone  # a failing mutation is never answered on the fast path
    # Only the failing ones go one by one, until more than RESUMES attempts have failed on one
    # mutation alone (a set's failure counts for none); then the rest of the chunk does. (A mutation
    # can fail two attempts: one behind a held set is reported before the set's flush fails.)
    if model.single_failures <= push_module.RESUMES:
        assert alone == bad
