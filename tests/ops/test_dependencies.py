"""Dependencies resolved in turn, in the request's own task, and finished last-resolved first
(backend.deps.resolve_in_turn, installed by create_app's configure_process): what the locked Litestar does once it is in
place. Each test fails with Litestar's own resolution (concurrent, in an anyio task group)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from litestar import Litestar, get
from litestar.di import NamedDependency, Provide
from litestar.testing import AsyncTestClient

from backend import deps

deps.resolve_in_turn()  # as create_app (configure_process) does (idempotent)


async def test_independent_dependencies_are_resolved_in_the_requests_task() -> None:
    tasks: dict[str, asyncio.Task[object] | None] = {}

    async def first() -> int:
        tasks["first"] = asyncio.current_task()
        return 1

    def second() -> int:
        tasks["second"] = asyncio.current_task()
        return 2

    @get("/")
    async def handler(one: NamedDependency[int], two: NamedDependency[int]) -> dict[str, int]:
        tasks["handler"] = asyncio.current_task()
        return {"sum": one + two}

    app = Litestar([handler], dependencies={"one": Provide(first), "two": Provide(second, sync_to_thread=False)})
    async with AsyncTestClient(app) as client:
        answer = await client.get("/")
    assert answer.json() == {"sum": 3}
    assert tasks["first"] is tasks["handler"] and tasks["second"] is tasks["handler"]


async def test_generators_are_finished_last_resolved_first_all_of_them() -> None:
    finished: list[str] = []

    async def outer() -> AsyncGenerator[str, None]:
        yield "outer"
        await asyncio.sleep(0)  # Litestar's task group would cancel this one once `inner` failed
        finished.append("outer")

    async def inner(outer: NamedDependency[str]) -> AsyncGenerator[str, None]:
        yield f"inner of {outer}"
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # (concurrently, `outer` would finish first)
        finished.append("inner")
        raise RuntimeError("inner's cleanup failed")

    @get("/")
    async def handler(inner: NamedDependency[str]) -> str:
        return inner

    app = Litestar([handler], dependencies={"outer": Provide(outer), "inner": Provide(inner)})
    async with AsyncTestClient(app) as client:
        answer = await client.get("/")
    assert answer.status_code == 500  # the failure is raised, as a plain exception
    assert finished == ["inner", "outer"]


async def test_a_dependency_that_fails_ends_those_already_begun_before_the_answer() -> None:
    ended: list[str] = []

    async def begun() -> AsyncGenerator[str, None]:  # as `tx`: a transaction begun
        try:
            yield "begun"
        except RuntimeError as exc:
            ended.append(f"rolled back: {exc}")
            raise

    def failing() -> str:  # as `actor` or a replica's `reads` failing
        raise RuntimeError("the second failed")

    @get("/")
    async def handler(a: NamedDependency[str], b: NamedDependency[str]) -> str:
        return a + b

    app = Litestar(
        [handler], dependencies={"a": Provide(begun), "b": Provide(failing, sync_to_thread=False)}, debug=False
    )
    async with AsyncTestClient(app) as client:
        answer = await client.get("/")
        assert answer.status_code == 500
        assert ended == ["rolled back: the second failed"]  # before the answer, not when collected
