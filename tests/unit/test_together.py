"""``Together``: what callers submit in one turn of the event loop goes out as one call."""

from __future__ import annotations

import asyncio

import pytest

from clarion.core.together import Together


class Recorder:
    """A call that answers each item with ``item * 10`` and records what it was given."""

    def __init__(self, fail_for: str | None = None) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.fail_for = fail_for
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    async def __call__(self, key: str, items: list[int]) -> list[int]:
        self.calls.append((key, list(items)))
        self.entered.set()
        await self.release.wait()
        if key == self.fail_for:
            raise RuntimeError(f"provider down for {key}")
        return [item * 10 for item in items]


async def test_callers_of_one_turn_share_one_call_per_key_and_get_their_own_answers() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    answers = await asyncio.gather(
        together.submit("app-a", [1, 2]),
        together.submit("app-b", [3]),
        together.submit("app-a", [4]),
    )
    assert answers == [[10, 20], [30], [40]]
    assert sorted(call.calls) == [("app-a", [1, 2, 4]), ("app-b", [3])]


async def test_a_caller_in_a_later_turn_gets_a_call_of_its_own() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    assert await together.submit("app", [1]) == [10]
    assert await together.submit("app", [2]) == [20]
    assert call.calls == [("app", [1]), ("app", [2])]


async def test_nothing_submitted_makes_no_call() -> None:
    call = Recorder()
    together: Together[str, int, int] = Together(call)
    assert await together.submit("app", []) == []
    assert call.calls == []


async def test_a_failed_call_raises_in_each_of_its_callers_only() -> None:
    call = Recorder(fail_for="app-a")
    together: Together[str, int, int] = Together(call)
    answers = await asyncio.gather(
        together.submit("app-a", [1]),
        together.submit("app-a", [2]),
        together.submit("app-b", [3]),
        return_exceptions=True,
    )
    assert [str(a) if isinstance(a, Exception) else a for a in answers] == [
        "provider down for app-a",
        "provider down for app-a",
        [30],
    ]


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    call = Recorder()
    call.release.clear()
    together: Together[str, int, int] = Together(call)
    first = asyncio.create_task(together.submit("app", [1]))
    second = asyncio.create_task(together.submit("app", [2]))
    await call.entered.wait()
    first.cancel()
    call.release.set()
    assert await second == [20]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert call.calls == [("app", [1, 2])]


async def test_drain_waits_for_the_call_under_way() -> None:
    call = Recorder()
    call.release.clear()
    together: Together[str, int, int] = Together(call)
    caller = asyncio.create_task(together.submit("app", [1]))
    await call.entered.wait()
    drained = asyncio.create_task(together.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    call.release.set()
    await drained
    assert caller.done() and caller.result() == [10]
